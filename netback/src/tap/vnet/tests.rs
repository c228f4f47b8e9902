use etherparse::{PacketBuilder, VlanId};

use super::*;
use crate::offload::OffloadError;

const A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 1];
const B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// NOP, NOP, timestamps: 12 bytes of TCP options.
const TCP_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// A frame with a correct L4 checksum, built by etherparse (independent of our code).
/// `l4`: "tcp", "tcp-opts" or "udp"; `net`: "v4", "v6" or "vlan-v4".
fn frame(net: &str, l4: &str, len: usize) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(A, B);
    let ip = match net {
        "v4" => eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
        "v6" => eth.ipv6(V6_A, V6_B, 64),
        "vlan-v4" => eth.single_vlan(VlanId::try_new(42).unwrap()).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    let data = payload(len);
    match l4 {
        "tcp" => ip.tcp(40000, 5001, 7, 65535).ack(1).write(&mut out, &data),
        "tcp-opts" => ip.tcp(40000, 5001, 7, 65535).ack(1).options_raw(&TCP_OPTIONS).unwrap().write(&mut out, &data),
        "udp" => ip.udp(40000, 5001).write(&mut out, &data),
        _ => unreachable!(),
    }
    .unwrap();
    out
}

/// What a kernel (or NIC) does with `NEEDS_CSUM`, written from the virtio spec alone: the
/// one's-complement sum of everything from `csum_start` to the end, complemented, stored at
/// `csum_start + csum_offset`.
fn complete(hdr: &VnetHeader, frame: &mut [u8]) {
    let start = usize::from(hdr.csum_start);
    let mut sum: u64 =
        frame[start..].chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = start + usize::from(hdr.csum_offset);
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn blank() -> Offload {
    Offload { csum_blank: true, ..Offload::default() }
}

fn gso(kind: GsoKind, size: u16) -> Offload {
    Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind, size }) }
}

#[test]
fn header_bytes_are_little_endian_at_the_v1_offsets() {
    let hdr = VnetHeader {
        flags: 0x01,
        gso_type: 0x04,
        hdr_len: 0x0102,
        gso_size: 0x0304,
        csum_start: 0x0506,
        csum_offset: 0x0708,
        num_buffers: 0x090a,
    };
    let bytes = hdr.to_bytes();
    assert_eq!(bytes, [0x01, 0x04, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0a, 0x09]);
    assert_eq!(VnetHeader::from_bytes(&bytes), hdr);
    assert_eq!(VnetHeader::default().to_bytes(), [0; VNET_HDR_LEN]);
}

#[test]
fn no_offload_is_an_all_zero_header_and_validated_is_data_valid() {
    let f = frame("v4", "tcp", 100);
    assert_eq!(encode(&Offload::default(), &f), Ok(VnetHeader::default()));
    let validated = Offload { data_validated: true, ..Offload::default() };
    assert_eq!(encode(&validated, &f), Ok(VnetHeader { flags: F_DATA_VALID, ..VnetHeader::default() }));
    // Without offloads nothing is parsed: any frame goes, an ARP as much as a runt.
    assert_eq!(encode(&Offload::default(), &[0u8; 3]), Ok(VnetHeader::default()));
}

#[test]
fn blank_checksums_point_at_the_l4_checksum_field() {
    for (net, l4, start, offset, hdr_len) in [
        ("v4", "tcp", 34, 16, 54),
        ("v4", "tcp-opts", 34, 16, 66),
        ("v4", "udp", 34, 6, 42),
        ("v6", "tcp", 54, 16, 74),
        ("v6", "udp", 54, 6, 62),
        ("vlan-v4", "tcp", 38, 16, 58),
        ("vlan-v4", "udp", 38, 6, 46),
    ] {
        let full = frame(net, l4, 1000);
        let hdr = encode(&blank(), &full).unwrap();
        let want = VnetHeader {
            flags: F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            hdr_len,
            ..VnetHeader::default()
        };
        assert_eq!(hdr, want, "{net} {l4}");
    }
}

#[test]
fn a_partial_checksum_completed_at_csum_start_is_the_real_one() {
    // set_partial_checksum + (csum_start, csum_offset) must give back etherparse's
    // checksum when completed the generic way, for every header layout.
    for net in ["v4", "v6", "vlan-v4"] {
        for l4 in ["tcp", "tcp-opts", "udp"] {
            for len in [0, 1, 2, 999, 1448, 9000] {
                let full = frame(net, l4, len);
                let mut partial = full.clone();
                offload::set_partial_checksum(&mut partial).unwrap();
                let hdr = encode(&blank(), &partial).unwrap();
                assert_ne!(partial, full, "{net} {l4} {len}: the field must change");
                complete(&hdr, &mut partial);
                assert_eq!(partial, full, "{net} {l4} {len}");
            }
        }
    }
}

#[test]
fn tcp_gso_sets_type_size_all_headers_and_needs_csum() {
    for (net, kind, hdr_len) in [("v4", GsoKind::TcpV4, 66), ("v6", GsoKind::TcpV6, 86)] {
        let f = frame(net, "tcp-opts", 20_000);
        let want_type = if kind == GsoKind::TcpV4 { GSO_TCPV4 } else { GSO_TCPV6 };
        let hdr = encode(&gso(kind, 1448), &f).unwrap();
        assert_eq!((hdr.gso_type, hdr.gso_size, hdr.hdr_len), (want_type, 1448, hdr_len), "{net}");
        assert_eq!((hdr.flags, hdr.csum_offset), (F_NEEDS_CSUM, 16), "{net}");
        assert_eq!(usize::from(hdr.csum_start), hdr_len as usize - 32, "{net}");
        // Without csum_blank the port fixes the field first; the header is the same.
        let unmarked = Offload { csum_blank: false, ..gso(kind, 1448) };
        assert_eq!(encode(&unmarked, &f), Ok(hdr), "{net}");
    }
}

#[test]
fn encode_refuses_what_a_tap_cannot_express() {
    let v4 = frame("v4", "tcp", 100);
    let udp = frame("v4", "udp", 100);
    let mut arp = vec![0xffu8; 42];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut icmp = v4.clone();
    icmp[14 + 9] = 1; // the IPv4 protocol
    assert!(matches!(encode(&blank(), &arp), Err(VnetError::Headers(OffloadError::Parse(_)))));
    assert_eq!(encode(&blank(), &icmp), Err(VnetError::Headers(OffloadError::UnsupportedProtocol(1))));
    assert!(matches!(encode(&blank(), &v4[..40]), Err(VnetError::Headers(_))), "truncated");
    assert_eq!(encode(&gso(GsoKind::TcpV4, 1448), &udp), Err(VnetError::GsoMismatch { kind: GsoKind::TcpV4 }));
    assert_eq!(encode(&gso(GsoKind::TcpV6, 1448), &v4), Err(VnetError::GsoMismatch { kind: GsoKind::TcpV6 }));
    assert_eq!(encode(&gso(GsoKind::TcpV4, 0), &v4), Err(VnetError::GsoSizeZero));
}

#[test]
fn encode_then_decode_round_trips() {
    let validated = Offload { data_validated: true, ..Offload::default() };
    // NEEDS_CSUM comes back validated too (Linux netback marks RX so).
    let blank_back = Offload { csum_blank: true, data_validated: true, gso: None };
    let gso_back = |kind| Offload { data_validated: true, ..gso(kind, 1448) };
    for (net, l4, sent, back) in [
        ("v4", "tcp", Offload::default(), Offload::default()),
        ("v4", "udp", validated, validated),
        ("v4", "tcp", blank(), blank_back),
        ("v4", "udp", blank(), blank_back),
        ("v6", "tcp", blank(), blank_back),
        ("v6", "udp", blank(), blank_back),
        ("vlan-v4", "udp", blank(), blank_back),
        ("v4", "tcp-opts", gso(GsoKind::TcpV4, 1448), gso_back(GsoKind::TcpV4)),
        ("v6", "tcp", gso(GsoKind::TcpV6, 1448), gso_back(GsoKind::TcpV6)),
    ] {
        let f = frame(net, l4, 3000);
        let hdr = encode(&sent, &f).unwrap();
        let wire = VnetHeader::from_bytes(&hdr.to_bytes());
        assert_eq!(decode(&wire, &f), Ok(back), "{net} {l4} {sent:?}");
    }
}

#[test]
fn decode_tolerates_ecn_and_refuses_other_gso() {
    let v4 = frame("v4", "tcp", 3000);
    let hdr = encode(&gso(GsoKind::TcpV4, 1000), &v4).unwrap();
    let ecn = VnetHeader { gso_type: GSO_TCPV4 | GSO_ECN, ..hdr };
    assert_eq!(decode(&ecn, &v4).unwrap().gso, Some(Gso { kind: GsoKind::TcpV4, size: 1000 }));
    let udp = frame("v4", "udp", 3000);
    let udp_hdr = encode(&blank(), &udp).unwrap();
    for t in [GSO_UDP, GSO_UDP_L4] {
        assert_eq!(decode(&VnetHeader { gso_type: t, gso_size: 1000, ..udp_hdr }, &udp), Err(VnetError::UdpGso(t)));
    }
    for t in [2, 6, 0x7f, GSO_ECN | 2] {
        assert_eq!(decode(&VnetHeader { gso_type: t, ..hdr }, &v4), Err(VnetError::UnknownGso(t & !GSO_ECN)));
    }
    assert_eq!(decode(&VnetHeader { gso_size: 0, ..hdr }, &v4), Err(VnetError::GsoSizeZero));
    // The GSO kind must match the frame.
    let v6 = frame("v6", "tcp", 3000);
    let v6_hdr = encode(&gso(GsoKind::TcpV6, 1000), &v6).unwrap();
    assert_eq!(
        decode(&VnetHeader { gso_type: GSO_TCPV4, ..v6_hdr }, &v6),
        Err(VnetError::GsoMismatch { kind: GsoKind::TcpV4 })
    );
    assert_eq!(decode(&hdr, &udp), Err(VnetError::GsoMismatch { kind: GsoKind::TcpV4 }));
}

#[test]
fn decode_checks_where_the_checksum_goes() {
    let f = frame("v4", "udp", 100);
    let hdr = encode(&blank(), &f).unwrap();
    assert_eq!(decode(&hdr, &f).map(|o| o.csum_blank), Ok(true));
    for (start, offset) in [(hdr.csum_start + 8, 6), (hdr.csum_start, 16), (0, 0)] {
        let elsewhere = VnetHeader { csum_start: start, csum_offset: offset, ..hdr };
        assert_eq!(
            decode(&elsewhere, &f),
            Err(VnetError::ChecksumElsewhere { start, offset, want_start: 34, want_offset: 6 })
        );
    }
    // NEEDS_CSUM on something that has no TCP/UDP checksum.
    let mut icmp = frame("v4", "tcp", 100);
    icmp[14 + 9] = 1;
    assert_eq!(decode(&hdr, &icmp), Err(VnetError::Headers(OffloadError::UnsupportedProtocol(1))));
    // DATA_VALID alone, and nothing at all, need no parsing.
    let valid = VnetHeader { flags: F_DATA_VALID, ..VnetHeader::default() };
    assert_eq!(decode(&valid, &[0u8; 20]), Ok(Offload { data_validated: true, ..Offload::default() }));
    assert_eq!(decode(&VnetHeader::default(), &[0u8; 20]), Ok(Offload::default()));
}
