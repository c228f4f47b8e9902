//! Real TCP frames for offload tests: Ethernet + IPv4 or IPv6 + a 20-byte TCP header +
//! payload, with a correct TCP checksum, or with the blank checksum a Linux guest hands
//! its netfront under `CHECKSUM_PARTIAL`; and an independent parser that verifies them.
//!
//! Fixed addressing: IPv4 `10.0.0.1 → 10.0.0.2`, IPv6 `fd00::1 → fd00::2`, TCP port
//! [`SRC_PORT`] → [`DST_PORT`], ACK|PSH, window 65535, ack 0; IPv4 with DF, TTL 64, a
//! correct header checksum; IPv6 hop limit 64. Frames are not padded to 60 bytes (the IP
//! length says where the segment ends, so padding added on the way is ignored).
//!
//! **Blank checksum** ([`build_tcp_frame_blank_checksum`]): the TCP checksum field holds
//! the folded 16-bit one's-complement sum of the pseudo-header (addresses, protocol 6,
//! TCP length), *not* complemented — exactly what Linux leaves with `CHECKSUM_PARTIAL`
//! (`th->check = ~tcp_v4_check(len, saddr, daddr, 0)`, `csum_start` = the TCP header,
//! `csum_offset` = 16). Whoever completes it sums from the TCP header to the end of the
//! frame (the field included) and stores the complement in the field. The IPv4 header
//! checksum is always correct.

use crate::mac::Mac;

/// TCP source port of built frames.
pub const SRC_PORT: u16 = 40000;
/// TCP destination port of built frames.
pub const DST_PORT: u16 = 5001;
/// Offset of the TCP checksum within the TCP header (Linux's `csum_offset`).
pub const TCP_CSUM_OFFSET: usize = 16;
/// Ethernet + IPv4 + TCP header bytes.
pub const V4_HEADERS: usize = 14 + 20 + 20;
/// Ethernet + IPv6 + TCP header bytes.
pub const V6_HEADERS: usize = 14 + 40 + 20;

const ETH_HLEN: usize = 14;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const V4_SRC: [u8; 4] = [10, 0, 0, 1];
const V4_DST: [u8; 4] = [10, 0, 0, 2];
const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The largest payload of a frame of at most 65535 bytes (netif's frame limit).
pub fn max_payload(v6: bool) -> usize {
    usize::from(u16::MAX) - if v6 { V6_HEADERS } else { V4_HEADERS }
}

/// The 32-bit one's-complement accumulation of `data` as big-endian 16-bit words (an odd
/// last byte is padded with zero), added to `sum`; fold with [`fold`].
fn sum_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds a one's-complement accumulation to 16 bits (not complemented).
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum (RFC 793 / RFC 8200 §8.1) for a TCP segment of `tcp_len` bytes.
fn pseudo_sum(src: &[u8], dst: &[u8], tcp_len: usize) -> u64 {
    let sum = sum_words(sum_words(0, src), dst);
    sum + u64::from(IPPROTO_TCP) + (tcp_len as u64 & 0xffff) + (tcp_len as u64 >> 16)
}

/// A TCP frame with a correct checksum.
///
/// # Panics
/// If `payload` is longer than [`max_payload`]`(v6)`.
pub fn build_tcp_frame(src_mac: Mac, dst_mac: Mac, v6: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    build(src_mac, dst_mac, v6, seq, payload, false)
}

/// A TCP frame with a blank (partial) checksum: the field holds the pseudo-header sum, as
/// Linux's `CHECKSUM_PARTIAL` leaves it (see the module docs). Send it with
/// `TxMeta { csum_blank: true, .. }`.
///
/// # Panics
/// As [`build_tcp_frame`].
pub fn build_tcp_frame_blank_checksum(src_mac: Mac, dst_mac: Mac, v6: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    build(src_mac, dst_mac, v6, seq, payload, true)
}

fn build(src_mac: Mac, dst_mac: Mac, v6: bool, seq: u32, payload: &[u8], blank: bool) -> Vec<u8> {
    assert!(payload.len() <= max_payload(v6), "TCP payload of {} bytes exceeds a 65535-byte frame", payload.len());
    let tcp_len = TCP_HLEN + payload.len();
    let mut f = Vec::with_capacity(if v6 { V6_HEADERS } else { V4_HEADERS } + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    let (src, dst): (&[u8], &[u8]) = if v6 {
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_TCP, 64]);
        f.extend_from_slice(&V6_SRC);
        f.extend_from_slice(&V6_DST);
        (&V6_SRC, &V6_DST)
    } else {
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        f.extend_from_slice(&V4_SRC);
        f.extend_from_slice(&V4_DST);
        let check = !fold(sum_words(0, &f[ip_start..]));
        f[ip_start + 10..ip_start + 12].copy_from_slice(&check.to_be_bytes());
        (&V4_SRC, &V4_DST)
    };
    let tcp_start = f.len();
    f.extend_from_slice(&SRC_PORT.to_be_bytes());
    f.extend_from_slice(&DST_PORT.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, (TCP_HLEN as u8 / 4) << 4, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    let pseudo = pseudo_sum(src, dst, tcp_len);
    let check = if blank { fold(pseudo) } else { !fold(sum_words(pseudo, &f[tcp_start..])) };
    let at = tcp_start + TCP_CSUM_OFFSET;
    f[at..at + 2].copy_from_slice(&check.to_be_bytes());
    f
}

/// A TCP frame as [`parse_tcp_frame`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSegment {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// TCP sequence number.
    pub seq: u32,
    /// The TCP payload.
    pub payload: Vec<u8>,
    /// The TCP checksum verifies (pseudo-header + segment sums to `0xffff`).
    pub checksum_ok: bool,
    /// The TCP checksum field holds exactly the pseudo-header sum: a blank checksum as
    /// [`build_tcp_frame_blank_checksum`] (and Linux's `CHECKSUM_PARTIAL`) leaves it.
    pub checksum_partial: bool,
}

/// Parses an Ethernet + IPv4/IPv6 + TCP frame, verifying the TCP checksum itself (and for
/// IPv4 the header checksum, a bad one gives `None`). `None` if the frame is not TCP or its
/// lengths are inconsistent. Bytes after the IP length (Ethernet padding) are ignored.
pub fn parse_tcp_frame(frame: &[u8]) -> Option<TcpSegment> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = &frame[ETH_HLEN..];
    let (v6, src, dst, segment) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let ok = ip[0] >> 4 == 4 && ihl >= 20 && total >= ihl && total <= ip.len() && ip[9] == IPPROTO_TCP;
            if !ok || fold(sum_words(0, &ip[..ihl])) != 0xffff {
                return None;
            }
            (false, &ip[12..16], &ip[16..20], &ip[ihl..total])
        }
        ETHERTYPE_IPV6 => {
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if ip.len() < 40 || ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP || 40 + len > ip.len() {
                return None;
            }
            (true, &ip[8..24], &ip[24..40], &ip[40..40 + len])
        }
        _ => return None,
    };
    let data_offset = usize::from(*segment.get(12)? >> 4) * 4;
    if data_offset < TCP_HLEN || data_offset > segment.len() {
        return None;
    }
    let pseudo = pseudo_sum(src, dst, segment.len());
    let field = u16::from_be_bytes([segment[TCP_CSUM_OFFSET], segment[TCP_CSUM_OFFSET + 1]]);
    Some(TcpSegment {
        v6,
        seq: u32::from_be_bytes(segment[4..8].try_into().ok()?),
        payload: segment[data_offset..].to_vec(),
        checksum_ok: fold(sum_words(pseudo, segment)) == 0xffff,
        checksum_partial: field == fold(pseudo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4Header, Ipv6Header, TcpHeader};

    const A: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// etherparse's checksum of our frame's TCP header + payload.
    fn etherparse_checksum(frame: &[u8], v6: bool) -> u16 {
        if v6 {
            let (ip, rest) = Ipv6Header::from_slice(&frame[14..]).unwrap();
            let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
            tcp.calc_checksum_ipv6(&ip, data).unwrap()
        } else {
            let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
            let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
            tcp.calc_checksum_ipv4(&ip, data).unwrap()
        }
    }

    #[test]
    fn built_frames_verify_here_and_in_etherparse() {
        for v6 in [false, true] {
            for len in [0, 1, 2, 3, 1000, 1460, 9000, max_payload(v6)] {
                let data = payload(len);
                let f = build_tcp_frame(A, B, v6, 0xdead_beef, &data);
                assert!(f.len() <= 65535);
                let at = if v6 { 14 + 40 } else { 14 + 20 } + TCP_CSUM_OFFSET;
                assert_eq!(u16::from_be_bytes([f[at], f[at + 1]]), etherparse_checksum(&f, v6), "v6 {v6} len {len}");
                let seg = parse_tcp_frame(&f).unwrap();
                assert_eq!((seg.v6, seg.seq, seg.checksum_ok), (v6, 0xdead_beef, true));
                assert_eq!(seg.payload, data);
                // Ethernet padding is ignored.
                let mut padded = f.clone();
                padded.resize(f.len().max(60) + 4, 0);
                assert_eq!(parse_tcp_frame(&padded).unwrap(), seg);
            }
        }
    }

    #[test]
    fn blank_checksum_is_the_pseudo_header_sum_and_completes_to_the_real_one() {
        for v6 in [false, true] {
            let data = payload(5001);
            let full = build_tcp_frame(A, B, v6, 7, &data);
            let mut blank = build_tcp_frame_blank_checksum(A, B, v6, 7, &data);
            let seg = parse_tcp_frame(&blank).unwrap();
            assert!(seg.checksum_partial && !seg.checksum_ok);
            assert!(!parse_tcp_frame(&full).unwrap().checksum_partial);
            // Complete it as a backend would: sum from csum_start, store the complement.
            let start = if v6 { 14 + 40 } else { 14 + 20 };
            let check = !fold(sum_words(0, &blank[start..]));
            blank[start + TCP_CSUM_OFFSET..start + TCP_CSUM_OFFSET + 2].copy_from_slice(&check.to_be_bytes());
            assert_eq!(blank, full);
        }
    }

    #[test]
    fn corruption_is_detected_and_garbage_is_not_tcp() {
        let mut f = build_tcp_frame(A, B, false, 1, &payload(100));
        let last = f.len() - 1;
        f[last] ^= 0x40;
        assert!(!parse_tcp_frame(&f).unwrap().checksum_ok);
        f[14 + 8] ^= 1; // the IPv4 TTL: header checksum breaks
        assert_eq!(parse_tcp_frame(&f), None);
        for bad in
            [&[][..], &[0u8; 13], &[0u8; 60], &crate::stack::arp_request(A, [1, 2, 3, 4].into(), [1, 2, 3, 5].into())]
        {
            assert_eq!(parse_tcp_frame(bad), None);
        }
        let v6 = build_tcp_frame(A, B, true, 1, &payload(10));
        assert_eq!(parse_tcp_frame(&v6[..v6.len() - 1]), None, "truncated");
    }
}
