//! Scatter-gather, GSO and checksum offload on the per-vif data path, with hand-driven
//! frontends: multi-slot TX chains into the switch, multi-slot RX frames with their GSO
//! extra, the slot budget, and the software offloads for receivers that lack a feature.

#[allow(dead_code)]
mod datapath_support;
mod sg_support;

use anyhow::{Context, ensure};
use datapath_support::{HandFront, RX_BUFS, Vif, WAIT};
use grant::sim::Credentials;
use netback::frame::{Frame, Gso, GsoKind, Offload};
use netback::port::Uplink;
use netback::switch::{Switch, SwitchConfig, SwitchPort};
use netback::vif::{DatapathConfig, FrontendFeatures};
use netif::abi::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, NETTXF_EXTRA_INFO,
};
use netif::{Extra, ExtraInfo};
use sg_support::{chain, check_ipv4, ipv4, patterned, pop, tcp, udp};
use simhost::{Session, SimHost};
use std::sync::Arc;
use std::time::Duration;

const MAC_H: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x11];
const MAC_R: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x22];
const MAC_X: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x33];

/// A host, dom0, a switch with a "sink" port popped by the test, and one hand frontend.
fn setup(name: &str, features: FrontendFeatures) -> anyhow::Result<(SimHost, Session, SwitchPort, HandFront, Vif)> {
    let host = SimHost::start_temp()?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let switch: Arc<Switch> = Switch::new(SwitchConfig::default());
    let sink = switch.add_port("sink")?;
    let mut front = HandFront::new(&host, name, if name == "tx" { MAC_H } else { MAC_R })?;
    front.post_rx(0, RX_BUFS)?;
    let config = DatapathConfig { features, ..DatapathConfig::default() };
    let vif = Vif::start(&dom0, &switch, front.domid, &front.params(), config)?;
    Ok((host, dom0, sink, front, vif))
}

fn sg() -> FrontendFeatures {
    FrontendFeatures { sg: true, gso_tcpv4: true, gso_tcpv6: true, ..FrontendFeatures::default() }
}

#[test]
fn tx_chains_arrive_byte_exact() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut h, vif) = setup("tx", sg())?;
    // Up to 19 slots: Linux netfront sends 18 for a 64 KiB GSO frame, Linux netback takes 19.
    for n in 2..=19usize {
        // Odd offsets and sizes; the first slot holds what the others leave.
        let pieces: Vec<(u16, usize)> =
            (0..n).map(|i| if i == 0 { (7, 61 + n) } else { ((i * 37 % 501) as u16, 4096 - 501 - i * 3) }).collect();
        let len = pieces.iter().map(|p| p.1).sum();
        let f = patterned(MAC_X, MAC_H, len, n as u8);
        h.push_tx(&chain(&h, &f, &pieces, 0))?;
        let rsps = h.wait_tx(n)?;
        ensure!(rsps.iter().all(|r| r.status == NETIF_RSP_OKAY), "{n} slots: {rsps:?}");
        ensure!(rsps.iter().enumerate().all(|(i, r)| usize::from(r.id) == i), "responses in ring order");
        let got = pop(&sink, WAIT)?;
        ensure!(got.data() == &f[..], "{n}-slot frame of {len} bytes corrupted");
        ensure!(*got.offload() == Offload::default());
    }
    let stats = vif.counters.snapshot();
    ensure!(stats.tx_packets == 18 && stats.tx_sg_frames == 18 && stats.dropped() == 0, "{stats:?}");
    Ok(())
}

#[test]
fn bad_chains_get_errors_and_the_vif_lives() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut h, vif) = setup("tx", sg())?;
    for n in [20usize, 21] {
        let f = patterned(MAC_X, MAC_H, n * 100, 1);
        h.push_tx(&chain(&h, &f, &vec![(0, 100); n], 0))?;
        let rsps = h.wait_tx(n)?;
        ensure!(rsps.len() == n && rsps.iter().all(|r| r.status == NETIF_RSP_ERROR), "{n}: {rsps:?}");
    }
    // A follow-on slot larger than what the first slot's total leaves.
    let f = patterned(MAC_X, MAC_H, 300, 2);
    let mut reqs = chain(&h, &f, &[(0, 100), (0, 200)], 0);
    reqs[0].size = 150;
    h.push_tx(&reqs)?;
    let rsps = h.wait_tx(2)?;
    ensure!(rsps.iter().all(|r| r.status == NETIF_RSP_ERROR), "{rsps:?}");
    // A first slot whose total is shorter than an Ethernet header.
    let mut reqs = chain(&h, &f[..20], &[(0, 10), (0, 10)], 0);
    reqs[0].size = 13;
    reqs[1].size = 3;
    h.push_tx(&reqs)?;
    ensure!(h.wait_tx(2)?.iter().all(|r| r.status == NETIF_RSP_ERROR));
    ensure!(vif.counters.snapshot().tx_dropped_bad_request == 4);
    ensure!(sink.pop().is_none(), "a dropped chain reached the switch");

    // Alive: a 3-slot chain goes through.
    let f = patterned(MAC_X, MAC_H, 5000, 3);
    h.push_tx(&chain(&h, &f, &[(1, 1000), (0, 3000), (5, 1000)], 0))?;
    ensure!(h.wait_tx(3)?.iter().all(|r| r.status == NETIF_RSP_OKAY));
    ensure!(pop(&sink, WAIT)?.data() == &f[..]);
    ensure!(!vif.handle().is_finished() && vif.fatal.try_recv().is_err());
    Ok(())
}

#[test]
fn an_empty_slot_is_answered_okay_without_touching_its_grant() -> anyhow::Result<()> {
    // Linux ("xen-netback: don't produce zero-size SKB frags") answers an empty slot OKAY
    // at once and never maps or copies its grant, so a bad grant there costs nothing.
    let (_host, _dom0, sink, mut h, vif) = setup("tx", sg())?;
    let f = patterned(MAC_X, MAC_H, 1500, 4);
    let mut reqs = chain(&h, &f, &[(0, 1000), (0, 0), (0, 500)], 0);
    reqs[1].gref = 0x0bad_0bad;
    h.push_tx(&reqs)?;
    let rsps = h.wait_tx(3)?;
    ensure!(rsps.iter().all(|r| r.status == NETIF_RSP_OKAY), "{rsps:?}");
    ensure!(pop(&sink, WAIT)?.data() == &f[..], "the frame around the empty slot");
    let stats = vif.counters.snapshot();
    ensure!(stats.tx_packets == 1 && stats.dropped() == 0, "{stats:?}");
    Ok(())
}

#[test]
fn gso_extra_makes_a_super_frame_and_size_zero_is_fatal() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut h, vif) = setup("tx", sg())?;
    let gso = |size| Extra { info: ExtraInfo::Gso { size, gso_type: 1, features: 0 }, more: false };
    let f = patterned(MAC_X, MAC_H, 9000, 4);
    let mut reqs = chain(&h, &f, &[(0, 1000), (0, 4000), (0, 4000)], NETTXF_EXTRA_INFO);
    reqs.insert(1, gso(1448).to_tx_request());
    h.push_tx(&reqs)?;
    let rsps = h.wait_tx(4)?;
    let statuses: Vec<i16> = rsps.iter().map(|r| r.status).collect();
    ensure!(statuses == [NETIF_RSP_OKAY, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETIF_RSP_OKAY], "{rsps:?}");
    let got = pop(&sink, WAIT)?;
    ensure!(got.data() == &f[..]);
    // No csum_blank from the frontend: forced, as Linux's CHECKSUM_PARTIAL.
    let want = Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV4, size: 1448 }) };
    ensure!(*got.offload() == want, "{:?}", got.offload());
    ensure!(vif.counters.snapshot().tx_gso_frames == 1);

    let first = h.tx_request(0, 0, &f[..100], NETTXF_EXTRA_INFO);
    h.push_tx(&[first, gso(0).to_tx_request()])?;
    let (_, error, is_tx_protocol) = vif.fatal.recv_timeout(WAIT).context("on_fatal never called")?;
    ensure!(is_tx_protocol && error.contains("size 0"), "{error}");
    Ok(())
}

/// Injects `frame` through a port of the receiver's switch.
fn inject(sink: &SwitchPort, frame: Frame) {
    sink.transmit(frame);
}

#[test]
fn rx_64k_frame_spans_slots_in_place() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut r, vif) = setup("rx", sg())?;
    let f = patterned(MAC_R, MAC_X, 65535, 5);
    inject(&sink, Frame::new(f.clone()));
    let got = r.wait_rx(16)?;
    ensure!(got.iter().enumerate().all(|(i, (rsp, _))| usize::from(rsp.id) == i), "same-slot responses");
    ensure!(got[..15].iter().all(|(rsp, _)| rsp.has_flag(NETRXF_MORE_DATA) && rsp.status == 4096));
    ensure!(got[15].0.flags == 0 && got[15].0.status == 4095, "{:?}", got[15].0);
    ensure!(got.iter().flat_map(|(_, d)| d.iter().copied()).eq(f.iter().copied()), "bytes differ");

    // With GSO: the extra right after the first data slot.
    let off = Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV6, size: 1440 }) };
    inject(&sink, Frame::with_offload(f.clone(), off));
    r.post_rx(0, 16)?;
    let got = r.wait_rx(17)?;
    let first = got[0].0;
    ensure!(first.has_flag(NETRXF_EXTRA_INFO | NETRXF_MORE_DATA | NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED));
    let extra = Extra::from_rx_response(&got[1].0)?;
    ensure!(extra.info == ExtraInfo::Gso { size: 1440, gso_type: 2, features: 0 } && !extra.more, "{extra:?}");
    let data: Vec<_> = std::iter::once(&got[0]).chain(&got[2..]).collect();
    ensure!(data.iter().map(|(rsp, _)| i64::from(rsp.status)).sum::<i64>() == 65535);
    ensure!(data.iter().flat_map(|(_, d)| d.iter().copied()).eq(f.iter().copied()), "GSO bytes differ");
    let stats = vif.counters.snapshot();
    ensure!((stats.rx_packets, stats.rx_sg_frames, stats.rx_gso_frames) == (2, 2, 1), "{stats:?}");
    Ok(())
}

#[test]
fn rx_big_frame_without_sg_is_dropped() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut r, vif) = setup("rx", FrontendFeatures::default())?;
    inject(&sink, Frame::new(patterned(MAC_R, MAC_X, 4097, 6)));
    let small = patterned(MAC_R, MAC_X, 4096, 7);
    inject(&sink, Frame::new(small.clone()));
    let got = r.wait_rx(1)?;
    ensure!(got[0].1 == small && got[0].0.flags == 0);
    let stats = vif.counters.snapshot();
    ensure!(stats.rx_dropped_too_big == 1 && stats.rx_packets == 1, "{stats:?}");
    Ok(())
}

#[test]
fn rx_waits_for_enough_buffers_without_consuming() -> anyhow::Result<()> {
    let (host, dom0, sink, _unused, _v) = setup("rx", sg())?;
    // A receiver that posts 5 buffers first: the 16-slot frame must wait, untouched.
    let mut r = HandFront::new(&host, "few", [0x00, 0x16, 0x3e, 0, 0, 0x44])?;
    let config = DatapathConfig { features: sg(), ..DatapathConfig::default() };
    let vif = Vif::start(&dom0, sink.switch(), r.domid, &r.params(), config)?;
    r.post_rx(0, 5)?;
    let f = patterned(r.mac, MAC_X, 65535, 8);
    inject(&sink, Frame::new(f.clone()));
    std::thread::sleep(Duration::from_millis(300));
    ensure!(r.rx.next_response()?.is_none(), "a response before enough buffers were posted");
    ensure!(vif.counters.snapshot().rx_packets == 0);
    r.post_rx(5, 11)?;
    let got = r.wait_rx(16)?;
    ensure!(got.iter().flat_map(|(_, d)| d.iter().copied()).eq(f.iter().copied()), "bytes differ");
    ensure!(vif.counters.snapshot().rx_packets == 1);
    Ok(())
}

#[test]
fn rx_gso_to_a_receiver_without_gso_is_segmented() -> anyhow::Result<()> {
    let (_host, _dom0, sink, mut r, vif) = setup("rx", FrontendFeatures::default())?;
    let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let f = ipv4(MAC_R, MAC_X, 6, &tcp(1000, &payload));
    let off = Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV4, size: 1000 }) };
    inject(&sink, Frame::with_offload(f, off));
    let got = r.wait_rx(4)?;
    let mut joined = Vec::new();
    for (i, (rsp, data)) in got.iter().enumerate() {
        ensure!(rsp.flags == NETRXF_DATA_VALIDATED, "segment {i}: {rsp:?}");
        let l4 = check_ipv4(data)?;
        let seq = u32::from_be_bytes(l4[4..8].try_into()?);
        ensure!(seq == 1000 + 1000 * i as u32 && l4.len() == 1020, "segment {i}: seq {seq}, {} bytes", l4.len());
        joined.extend_from_slice(&l4[20..]);
    }
    ensure!(joined == payload);
    ensure!(vif.counters.snapshot().sw_segmentations == 1);
    Ok(())
}

#[test]
fn rx_blank_checksum_to_a_receiver_without_offload_is_filled() -> anyhow::Result<()> {
    let no_csum = FrontendFeatures { csum_offload: false, ..FrontendFeatures::default() };
    let (_host, _dom0, sink, mut r, vif) = setup("rx", no_csum)?;
    let f = ipv4(MAC_R, MAC_X, 17, &udp(b"blank checksum, filled by netback"));
    inject(&sink, Frame::with_offload(f, Offload { csum_blank: true, ..Offload::default() }));
    let got = r.wait_rx(1)?;
    ensure!(got[0].0.flags == NETRXF_DATA_VALIDATED, "{:?}", got[0].0);
    check_ipv4(&got[0].1)?;
    ensure!(vif.counters.snapshot().sw_checksums == 1);
    Ok(())
}
