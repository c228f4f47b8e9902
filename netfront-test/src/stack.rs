//! A tiny host stack for one MAC and one IPv4 address: answers ARP requests and ICMP echo
//! requests, and builds/parses the frames a ping needs. Every parser validates lengths and
//! checksums before trusting a field; nothing panics on hostile input.

use crate::mac::{BROADCAST, Mac};
use std::net::Ipv4Addr;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Minimum Ethernet frame without FCS; shorter frames are zero-padded to it.
pub const ETH_MIN_LEN: usize = 60;
const ETH_HLEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV4_HLEN: usize = 20;
const ICMP_HLEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// The Internet checksum (RFC 1071) of `data`: one's-complement of the one's-complement sum.
/// A buffer that includes its correct checksum sums to 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    b[at..at + 6].try_into().expect("six bytes")
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN_LEN);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < ETH_MIN_LEN {
        f.resize(ETH_MIN_LEN, 0);
    }
    f
}

/// An ARP packet (Ethernet/IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

fn arp_frame(dst: Mac, arp: &Arp) -> Vec<u8> {
    let mut f = ethernet(dst, arp.sender_mac, ETHERTYPE_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&arp.op.to_be_bytes());
    f.extend_from_slice(&arp.sender_mac);
    f.extend_from_slice(&arp.sender_ip.octets());
    f.extend_from_slice(&arp.target_mac);
    f.extend_from_slice(&arp.target_ip.octets());
    pad(f)
}

/// A broadcast ARP request "who has `target_ip`? tell `src_ip`".
pub fn arp_request(src_mac: Mac, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(BROADCAST, &Arp { op: 1, sender_mac: src_mac, sender_ip: src_ip, target_mac: [0; 6], target_ip })
}

/// Parses an Ethernet/IPv4 ARP packet.
pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    if frame.len() < ETH_HLEN + ARP_LEN || be16(frame, 12) != ETHERTYPE_ARP {
        return None;
    }
    let a = &frame[ETH_HLEN..];
    if a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    Some(Arp {
        op: be16(a, 6),
        sender_mac: mac_at(a, 8),
        sender_ip: ip(a, 14),
        target_mac: mac_at(a, 18),
        target_ip: ip(a, 24),
    })
}

/// An ICMP echo request or reply in IPv4 in Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// Ethernet source.
    pub src_mac: Mac,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// `true` for an echo request (type 8), `false` for a reply (type 0).
    pub request: bool,
    /// ICMP identifier.
    pub ident: u16,
    /// ICMP sequence number.
    pub seq: u16,
    /// Echo data.
    pub payload: Vec<u8>,
}

/// Builds `echo` as a frame, with correct IPv4 and ICMP checksums (DF set, TTL 64).
pub fn build_echo(echo: &Echo) -> Vec<u8> {
    let mut f = ethernet(echo.dst_mac, echo.src_mac, ETHERTYPE_IPV4);
    let total = u16::try_from(IPV4_HLEN + ICMP_HLEN + echo.payload.len()).unwrap_or(u16::MAX);
    let mut iph = [0u8; IPV4_HLEN];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph[4..6].copy_from_slice(&echo.seq.to_be_bytes());
    iph[6] = 0x40;
    iph[8] = 64;
    iph[9] = IPPROTO_ICMP;
    iph[12..16].copy_from_slice(&echo.src_ip.octets());
    iph[16..20].copy_from_slice(&echo.dst_ip.octets());
    let csum = internet_checksum(&iph);
    iph[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&iph);
    let mut icmp = vec![if echo.request { ICMP_ECHO_REQUEST } else { ICMP_ECHO_REPLY }, 0, 0, 0];
    icmp.extend_from_slice(&echo.ident.to_be_bytes());
    icmp.extend_from_slice(&echo.seq.to_be_bytes());
    icmp.extend_from_slice(&echo.payload);
    let csum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&icmp);
    pad(f)
}

/// An echo request from (`src_mac`, `src_ip`) to (`dst_mac`, `dst_ip`).
pub fn echo_request(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    build_echo(&Echo { dst_mac, src_mac, src_ip, dst_ip, request: true, ident, seq, payload: payload.to_vec() })
}

/// Parses an ICMP echo request or reply, checking the IPv4 header checksum, the ICMP
/// checksum and all lengths (Ethernet padding after the IPv4 total length is ignored).
/// Fragments and other ICMP types give `None`.
pub fn parse_echo(frame: &[u8]) -> Option<Echo> {
    if frame.len() < ETH_HLEN + IPV4_HLEN || be16(frame, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let p = &frame[ETH_HLEN..];
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(be16(p, 2));
    let fragmented = be16(p, 6) & 0x3fff != 0;
    if p[0] >> 4 != 4 || ihl < IPV4_HLEN || total < ihl + ICMP_HLEN || total > p.len() || fragmented {
        return None;
    }
    if p[9] != IPPROTO_ICMP || internet_checksum(&p[..ihl]) != 0 {
        return None;
    }
    let icmp = &p[ihl..total];
    if internet_checksum(icmp) != 0 || icmp[1] != 0 {
        return None;
    }
    let request = match icmp[0] {
        ICMP_ECHO_REQUEST => true,
        ICMP_ECHO_REPLY => false,
        _ => return None,
    };
    Some(Echo {
        dst_mac: mac_at(frame, 0),
        src_mac: mac_at(frame, 6),
        src_ip: ip(p, 12),
        dst_ip: ip(p, 16),
        request,
        ident: be16(icmp, 4),
        seq: be16(icmp, 6),
        payload: icmp[ICMP_HLEN..].to_vec(),
    })
}

/// Answers ARP requests for `ip` and ICMP echo requests sent to (`mac`, `ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responder {
    /// Our MAC address.
    pub mac: Mac,
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
}

impl Responder {
    /// A responder for `mac` and `ip`.
    pub fn new(mac: Mac, ip: Ipv4Addr) -> Self {
        Self { mac, ip }
    }

    /// The reply to `frame`, if it is an ARP request for our IP or an echo request to us.
    pub fn respond(&self, frame: &[u8]) -> Option<Vec<u8>> {
        if let Some(arp) = parse_arp(frame) {
            if arp.op != 1 || arp.target_ip != self.ip {
                return None;
            }
            let reply = Arp {
                op: 2,
                sender_mac: self.mac,
                sender_ip: self.ip,
                target_mac: arp.sender_mac,
                target_ip: arp.sender_ip,
            };
            return Some(arp_frame(arp.sender_mac, &reply));
        }
        let echo = parse_echo(frame)?;
        let for_us = echo.dst_mac == self.mac || echo.dst_mac == BROADCAST;
        if !echo.request || !for_us || echo.dst_ip != self.ip {
            return None;
        }
        Some(build_echo(&Echo {
            dst_mac: echo.src_mac,
            src_mac: self.mac,
            src_ip: self.ip,
            dst_ip: echo.src_ip,
            request: false,
            ..echo
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example: the sum of these words is ddf2, the checksum its complement.
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn answers_arp_for_its_ip_only() {
        let r = Responder::new(B, IP_B);
        let reply = r.respond(&arp_request(A, IP_A, IP_B)).expect("reply");
        assert_eq!(reply.len(), ETH_MIN_LEN);
        assert_eq!(&reply[..6], &A);
        let arp = parse_arp(&reply).unwrap();
        assert_eq!(arp, Arp { op: 2, sender_mac: B, sender_ip: IP_B, target_mac: A, target_ip: IP_A });
        assert_eq!(r.respond(&arp_request(A, IP_A, Ipv4Addr::new(10, 0, 0, 9))), None);
        assert_eq!(r.respond(&reply), None, "replies are not answered");
    }

    #[test]
    fn answers_echo_with_valid_checksums() {
        let r = Responder::new(B, IP_B);
        let req = echo_request(A, B, IP_A, IP_B, 0x1234, 7, b"hello ping");
        let reply = r.respond(&req).expect("reply");
        let echo = parse_echo(&reply).expect("valid reply");
        assert!(!echo.request);
        assert_eq!((echo.src_mac, echo.dst_mac, echo.src_ip, echo.dst_ip), (B, A, IP_B, IP_A));
        assert_eq!((echo.ident, echo.seq, echo.payload.as_slice()), (0x1234, 7, &b"hello ping"[..]));
        assert_eq!(r.respond(&reply), None);
        assert_eq!(r.respond(&echo_request(A, B, IP_A, IP_A, 1, 1, b"")), None, "not our IP");
    }

    #[test]
    fn rejects_corrupted_echo() {
        let req = echo_request(A, B, IP_A, IP_B, 1, 2, &[0xab; 40]);
        for i in ETH_HLEN..ETH_HLEN + IPV4_HLEN + ICMP_HLEN + 40 {
            let mut bad = req.clone();
            bad[i] ^= 0x01;
            // The Internet checksum catches every single-bit error.
            assert_eq!(parse_echo(&bad), None, "flip at {i}");
        }
        assert_eq!(parse_echo(&req[..30]), None);
    }
}
