//! Software offloads against an independent reference: frames are built by etherparse's
//! `PacketBuilder` (which computes correct checksums) and segments are checked by parsing
//! them back with etherparse and recomputing its checksums.

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions,
    NetHeaders, PacketBuilder, PacketHeaders, TcpHeader, TransportHeader, VlanId,
};
use netback::frame::GsoKind;
use netback::offload::{
    OffloadError, fill_checksum, l4_checksum_is_valid, locate_l4, locate_l4_in_head, segment_tcp, set_partial_checksum,
    set_partial_checksum_in_head,
};
use proptest::prelude::*;

const SRC_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 1, 2, 3];
const DST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 4, 5, 6];

/// One test frame: which headers, and what the TCP header holds.
#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    vlan: Option<u16>,
    /// IPv4 options (a multiple of 4 bytes, 0..=40).
    v4_opts: Vec<u8>,
    /// IPv6: hop-by-hop header payload, and whether routing + destination options follow.
    hbh: Option<Vec<u8>>,
    routing: bool,
    addrs: [u8; 32],
    ip_id: u16,
    tcp: TcpHeader,
}

/// An IPv6 extension header with `payload` (8n + 6 bytes); the builder sets next headers.
fn raw_ext(payload: &[u8]) -> Ipv6RawExtHeader {
    Ipv6RawExtHeader::new_raw(IpNumber(59), payload).unwrap()
}

fn ext(len8: usize, fill: u8) -> Ipv6RawExtHeader {
    raw_ext(&vec![fill; len8 * 8 + 6])
}

/// Builds the frame; `udp` replaces the TCP header by a UDP one on the same ports.
fn build(s: &Spec, udp: bool, payload: &[u8]) -> Vec<u8> {
    let ip = if s.v6 {
        let mut src = [0; 16];
        src.copy_from_slice(&s.addrs[..16]);
        let mut dst = [0; 16];
        dst.copy_from_slice(&s.addrs[16..]);
        let exts = Ipv6Extensions {
            hop_by_hop_options: s.hbh.as_ref().map(|p| raw_ext(p)),
            routing: s.routing.then(|| Ipv6RoutingExtensions {
                routing: ext(1, 0x2b),
                final_destination_options: Some(ext(0, 0x3c)),
            }),
            ..Default::default()
        };
        let hdr = Ipv6Header { hop_limit: 64, source: src, destination: dst, ..Default::default() };
        IpHeaders::Ipv6(hdr, exts)
    } else {
        let a = &s.addrs;
        let (src, dst) = ([a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]]);
        let mut hdr = Ipv4Header::new(0, 64, IpNumber::TCP, src, dst).unwrap();
        hdr.identification = s.ip_id;
        hdr.options = Ipv4Options::try_from(&s.v4_opts[..]).unwrap();
        IpHeaders::Ipv4(hdr, Default::default())
    };
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let step = match s.vlan {
        Some(v) => eth.single_vlan(VlanId::try_from(v).unwrap()).ip(ip),
        None => eth.ip(ip),
    };
    let mut out = Vec::new();
    if udp {
        let (sp, dp) = (s.tcp.source_port, s.tcp.destination_port);
        step.udp(sp, dp).write(&mut out, payload).unwrap();
    } else {
        step.tcp_header(s.tcp.clone()).write(&mut out, payload).unwrap();
    }
    out
}

fn spec(allow_v6: bool, allow_v4: bool) -> impl Strategy<Value = Spec> {
    let opts = (0usize..=10).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 4));
    let hbh = prop::option::of((0usize..4).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 8 + 6)));
    let tcp_opts = (0usize..=10).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 4));
    let tcp = (any::<[u16; 2]>(), any::<[u32; 2]>(), any::<u16>(), any::<u8>(), any::<u16>(), tcp_opts).prop_map(
        |(ports, [seq, ack], win, flags, urgent, opts)| {
            let mut t = TcpHeader::new(ports[0], ports[1], seq, win);
            let bit = |b: u8| flags & b != 0;
            (t.fin, t.syn, t.rst, t.psh, t.ack, t.urg, t.ece, t.cwr) =
                (bit(1), bit(2), bit(4), bit(8), bit(16), bit(32), bit(64), bit(128));
            t.acknowledgment_number = ack;
            t.urgent_pointer = urgent;
            t.set_options_raw(&opts).unwrap();
            t
        },
    );
    let v6 = match (allow_v4, allow_v6) {
        (true, true) => any::<bool>().boxed(),
        (v4, _) => Just(!v4).boxed(),
    };
    (v6, prop::option::of(0u16..4095), opts, hbh, any::<bool>(), any::<[u8; 32]>(), any::<u16>(), tcp).prop_map(
        |(v6, vlan, v4_opts, hbh, routing, addrs, ip_id, tcp)| Spec {
            v6,
            vlan,
            v4_opts,
            hbh,
            routing,
            addrs,
            ip_id,
            tcp,
        },
    )
}

/// Offset of the L4 header, read back with etherparse.
fn l4_offset(frame: &[u8]) -> usize {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let t = match h.transport.unwrap() {
        TransportHeader::Tcp(t) => t.header_len(),
        TransportHeader::Udp(_) => 8,
        _ => unreachable!(),
    };
    let ip_end = frame.len() - h.payload.slice().len();
    ip_end - t
}

proptest! {
    /// Blanked (or garbage) checksums are filled byte for byte as etherparse computes them,
    /// ignoring Ethernet padding after the IP datagram.
    #[test]
    fn fill_matches_etherparse(s in spec(true, true), udp: bool,
                               payload in prop::collection::vec(any::<u8>(), 0..9000),
                               garbage: u16, pad in prop::collection::vec(any::<u8>(), 0..12)) {
        let reference = build(&s, udp, &payload);
        let csum_at = l4_offset(&reference) + if udp { 6 } else { 16 };
        let mut frame = reference.clone();
        frame[csum_at..csum_at + 2].copy_from_slice(&garbage.to_be_bytes());
        frame.extend_from_slice(&pad);
        let r = u16::from_be_bytes([reference[csum_at], reference[csum_at + 1]]);
        // Valid: the right value or its other one's-complement form; UDP zero is "none",
        // allowed over IPv4 only.
        let valid = if udp && garbage == 0 { !s.v6 } else { garbage == r || garbage | r == 0xffff && garbage & r == 0 && (garbage == 0 || r == 0) };
        prop_assert_eq!(l4_checksum_is_valid(&frame), Ok(valid));
        fill_checksum(&mut frame).unwrap();
        prop_assert_eq!(&frame[..reference.len()], &reference[..]);
        prop_assert_eq!(&frame[reference.len()..], &pad[..]);
        prop_assert_eq!(l4_checksum_is_valid(&frame), Ok(true));
        // Any single-byte change of the segment is detected.
        let last = frame.len() - pad.len() - 1;
        frame[last] ^= 0x5a;
        prop_assert_eq!(l4_checksum_is_valid(&frame), Ok(false));
    }

    /// Segments parse, carry valid checksums, and reassemble the original payload.
    #[test]
    fn segments_are_valid_tso(s in spec(true, true),
                              payload in prop::collection::vec(any::<u8>(), 1..65000),
                              mss in prop_oneof![1u16..9000, Just(536), Just(1448), Just(1460)]) {
        check_segments(&s, &payload, mss)?;
    }

    /// With only a head of the frame at hand, the L4 header is found (and the partial
    /// checksum written, into the head only) exactly as from the whole frame whenever the
    /// head holds every header, and refused otherwise; edited frames never panic.
    #[test]
    fn head_only_matches_the_whole_frame(s in spec(true, true), udp: bool,
                                         payload in prop::collection::vec(any::<u8>(), 0..3000),
                                         cut: usize, edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..3)) {
        let mut frame = build(&s, udp, &payload);
        for (at, b) in edits {
            let n = frame.len();
            frame[at % n] = b;
        }
        let h = cut % (frame.len() + 1);
        let whole = locate_l4(&frame);
        let head = locate_l4_in_head(&frame[..h], frame.len());
        match (&whole, &head) {
            (Ok(w), Ok(got)) => prop_assert_eq!(w, got),
            (Ok(w), Err(_)) => prop_assert!(h < w.start + w.len, "refused although the head holds the headers"),
            (Err(_), Ok(got)) => prop_assert!(false, "found {got:?} in the head of a frame that has none"),
            (Err(_), Err(_)) => {}
        }
        if head.is_ok() {
            let mut full = frame.clone();
            set_partial_checksum(&mut full).unwrap();
            let mut part = frame[..h].to_vec();
            set_partial_checksum_in_head(&mut part, frame.len()).unwrap();
            prop_assert_eq!(&part[..], &full[..h]);
        }
        prop_assert!(locate_l4_in_head(&frame, frame.len().saturating_sub(1)).is_err() || frame.is_empty(),
            "a head longer than the frame");
    }

    /// Arbitrary bytes, and valid frames with bytes overwritten or cut, never panic.
    #[test]
    fn never_panics(s in spec(true, true), udp: bool, cut: usize, mss: u16,
                    payload in prop::collection::vec(any::<u8>(), 0..300),
                    edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                    raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut frame = build(&s, udp, &payload);
        for (at, b) in edits {
            let n = frame.len();
            frame[at % n] = b;
        }
        frame.truncate(cut % (frame.len() + 1));
        for mut f in [frame, raw] {
            let _ = l4_checksum_is_valid(&f);
            let _ = segment_tcp(&f, GsoKind::TcpV4, mss);
            let _ = segment_tcp(&f, GsoKind::TcpV6, mss);
            let _ = fill_checksum(&mut f);
        }
    }
}

fn check_segments(s: &Spec, payload: &[u8], mss: u16) -> Result<(), TestCaseError> {
    let frame = build(s, false, payload);
    let kind = if s.v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
    let segs = segment_tcp(&frame, kind, mss).unwrap();
    prop_assert_eq!(segs.len(), payload.len().div_ceil(usize::from(mss)).max(1));
    let orig = PacketHeaders::from_ethernet_slice(&frame).unwrap();
    let mut joined = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let (first, last) = (i == 0, i + 1 == segs.len());
        let h = PacketHeaders::from_ethernet_slice(seg).unwrap();
        let data = h.payload.slice();
        prop_assert!(data.len() <= usize::from(mss) && (!data.is_empty() || payload.is_empty()));
        prop_assert_eq!(&h.link, &orig.link);
        prop_assert_eq!(&h.link_exts, &orig.link_exts);
        let Some(TransportHeader::Tcp(t)) = h.transport.clone() else { panic!("not TCP") };
        let expect_sum = match (h.net.as_ref().unwrap(), orig.net.as_ref().unwrap()) {
            (NetHeaders::Ipv4(ip, _), NetHeaders::Ipv4(o, _)) => {
                prop_assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                prop_assert_eq!(ip.identification, o.identification.wrapping_add(i as u16));
                prop_assert_eq!(usize::from(ip.total_len), ip.header_len() + t.header_len() + data.len());
                prop_assert_eq!(&ip.options, &o.options);
                t.calc_checksum_ipv4(ip, data).unwrap()
            }
            (NetHeaders::Ipv6(ip, exts), NetHeaders::Ipv6(_, o)) => {
                prop_assert_eq!(exts, o);
                prop_assert_eq!(usize::from(ip.payload_length), exts.header_len() + t.header_len() + data.len());
                t.calc_checksum_ipv6(ip, data).unwrap()
            }
            _ => panic!("IP version changed"),
        };
        prop_assert_eq!(t.checksum, expect_sum);
        prop_assert_eq!(l4_checksum_is_valid(seg), Ok(true));
        let o = &s.tcp;
        prop_assert_eq!(t.sequence_number, o.sequence_number.wrapping_add(joined.len() as u32));
        prop_assert_eq!((t.fin, t.psh), (o.fin && last, o.psh && last));
        prop_assert_eq!((t.cwr, t.urg), (o.cwr && first, o.urg && first));
        prop_assert_eq!(t.urgent_pointer, if first { o.urgent_pointer } else { 0 });
        prop_assert_eq!((t.syn, t.rst, t.ack, t.ece), (o.syn, o.rst, o.ack, o.ece));
        prop_assert_eq!((t.acknowledgment_number, t.window_size), (o.acknowledgment_number, o.window_size));
        prop_assert_eq!(&t.options, &o.options);
        joined.extend_from_slice(data);
    }
    prop_assert_eq!(&joined[..], payload);
    Ok(())
}

fn base(v6: bool) -> Spec {
    let tcp = TcpHeader::new(1000, 80, 0xffff_fff0, 512);
    Spec { v6, vlan: None, v4_opts: vec![], hbh: None, routing: false, addrs: [7; 32], ip_id: 0xfffe, tcp }
}

#[test]
fn one_segment_and_wrapping() {
    for v6 in [false, true] {
        let mut s = base(v6);
        s.tcp.fin = true;
        // Fits one segment: one finished frame, FIN kept.
        check_segments(&s, &[1; 100], 1448).unwrap();
        check_segments(&s, &[1; 1448], 1448).unwrap();
        // Sequence numbers and IPv4 IDs wrap.
        check_segments(&s, &[2; 5000], 1000).unwrap();
    }
}

#[test]
fn rejected_frames() {
    let seg = |f: &[u8], k, m| segment_tcp(f, k, m).unwrap_err();
    let v4 = build(&base(false), false, &[0; 10]);
    let v6 = build(&base(true), false, &[0; 10]);
    assert!(matches!(seg(&v4, GsoKind::TcpV4, 0), OffloadError::Segment(_)));
    assert!(matches!(seg(&v4, GsoKind::TcpV6, 100), OffloadError::Segment(_)));
    assert!(matches!(seg(&v6, GsoKind::TcpV4, 100), OffloadError::Segment(_)));
    let udp = build(&base(false), true, &[0; 10]);
    assert!(matches!(seg(&udp, GsoKind::TcpV4, 100), OffloadError::Segment(_)));

    // IPv4 fragment (more-fragments flag), ICMP, and a length beyond the frame.
    let mut frag = v4.clone();
    frag[20] |= 0x20;
    assert!(matches!(fill_checksum(&mut frag), Err(OffloadError::Parse(_))));
    let mut icmp = v4.clone();
    icmp[23] = 1;
    assert_eq!(fill_checksum(&mut icmp), Err(OffloadError::UnsupportedProtocol(1)));
    let mut long = v4.clone();
    long[16..18].copy_from_slice(&((v4.len() - 13) as u16).to_be_bytes());
    assert!(matches!(fill_checksum(&mut long), Err(OffloadError::Parse(_))));
    // IPv6 fragment header as the first next header; two VLAN tags.
    let mut frag6 = v6.clone();
    frag6[20] = 44;
    assert!(matches!(fill_checksum(&mut frag6), Err(OffloadError::Parse(_))));
    let mut qq = v4[..12].to_vec();
    qq.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 0, 0, 2]);
    qq.extend_from_slice(&v4[12..]);
    assert!(matches!(fill_checksum(&mut qq), Err(OffloadError::Parse(_))));
}

#[test]
fn udp_zero_sum_is_written_as_ffff() {
    for v6 in [false, true] {
        let s = base(v6);
        // With a last payload word equal to the checksum computed without it, the sum
        // folds to 0xffff and the checksum computes to zero.
        let mut payload = vec![9u8; 36];
        payload[34..].fill(0);
        let f = build(&s, true, &payload);
        let at = l4_offset(&f) + 6;
        let c = u16::from_be_bytes([f[at], f[at + 1]]);
        payload[34..].copy_from_slice(&c.to_be_bytes());
        let reference = build(&s, true, &payload);
        assert_eq!(reference[at..at + 2], [0xff, 0xff]);
        let mut frame = reference.clone();
        frame[at..at + 2].fill(0);
        fill_checksum(&mut frame).unwrap();
        assert_eq!(frame, reference);
    }
}
