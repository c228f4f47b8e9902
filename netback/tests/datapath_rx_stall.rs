//! RX queue expiry and stall detection (Linux's `rx_drain_timeout_msecs` and
//! `rx_stall_timeout_msecs`, XSA-392) on the per-vif data path, with hand-driven frontends
//! and the knobs set short: a guest that posts no RX buffers has its frames expire and
//! holds a bounded amount; a guest that keeps one RX request fewer than the next GSO frame
//! needs is declared stalled (flag, counter, carrier off at its switch port) while a good
//! pair loses nothing, and recovers once it posts enough; without `feature-rx-notify` only
//! expiry applies.

#[allow(dead_code)]
mod datapath_support;
#[allow(dead_code)]
mod sg_support;

use anyhow::{Context, ensure};
use datapath_support::{HandFront, RX_BUFS, WAIT, frame};
use grant::sim::Credentials;
use netback::frame::{Frame, Gso, GsoKind, Offload};
use netback::port::{DropReason, PortStats, TransmitOutcome, Uplink};
use netback::switch::{Switch, SwitchConfig, SwitchPort};
use netback::vif::{
    Datapath, DatapathConfig, FrontendFeatures, KnobValues, Knobs, VifCounters, VifId, VifStats, WorkerHandle,
};
use netif::abi::{NETIF_RSP_OKAY, NETRXF_EXTRA_INFO};
use netif::{Extra, ExtraInfo};
use sg_support::{ipv4, tcp};
use simhost::{Session, SimHost};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MAC_A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 2, 0x0a];
const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 2, 0x0b];
const MAC_G: [u8; 6] = [0x00, 0x16, 0x3e, 0, 2, 0x11];
/// The address behind the test's own switch port ("sink").
const MAC_X: [u8; 6] = [0x00, 0x16, 0x3e, 0, 2, 0x33];
const DRAIN_MS: u32 = 200;
const STALL_MS: u32 = 300;

/// A running vif with short RX timeouts.
struct Vif {
    _handle: WorkerHandle,
    counters: Arc<VifCounters>,
}

impl Vif {
    fn stats(&self) -> VifStats {
        self.counters.snapshot()
    }
}

fn setup() -> anyhow::Result<(SimHost, Session, Arc<Switch>, SwitchPort)> {
    let host = SimHost::start_temp()?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let switch = Switch::new(SwitchConfig::default());
    let sink = switch.add_port("sink")?;
    // The switch learns MAC_X on the sink: the guests' hellos go there only.
    sink.transmit(Frame::new(frame([0xff; 6], MAC_X, 60, 0)));
    Ok((host, dom0, switch, sink))
}

/// Connects `front`'s vif on a new port of `switch`, with the drain and stall timeouts short.
fn start(dom0: &Session, switch: &Arc<Switch>, front: &HandFront, features: FrontendFeatures) -> anyhow::Result<Vif> {
    let id = VifId { domid: front.domid, handle: 0 };
    let config = DatapathConfig { features, ..DatapathConfig::default() };
    let dp = Datapath::connect(dom0.domain.clone(), id, &front.params(), config)?;
    let port = switch.add_port(&id.to_string())?;
    let knobs = KnobValues { rx_drain_timeout_ms: DRAIN_MS, rx_stall_timeout_ms: STALL_MS, ..KnobValues::default() };
    knobs.validate()?;
    let counters = Arc::new(VifCounters::default());
    let handle = dp.spawn_with_knobs(port, counters.clone(), Arc::new(Knobs::new(knobs)), Box::new(|_, _| {}))?;
    Ok(Vif { _handle: handle, counters })
}

/// `front` says hello to the sink, so the switch learns its MAC (nothing floods to others).
fn hello(front: &mut HandFront, sink: &SwitchPort) -> anyhow::Result<()> {
    let req = front.tx_request(0, 0, &frame(MAC_X, front.mac, 60, 0), 0);
    front.push_tx(&[req])?;
    ensure!(front.wait_tx(1)?[0].status == NETIF_RSP_OKAY);
    sg_support::pop(sink, WAIT)?;
    Ok(())
}

/// The counters of the switch port named after `front`'s vif.
fn port_of(switch: &Switch, front: &HandFront) -> anyhow::Result<(PortStats, usize, usize)> {
    let name = format!("vif{}.0", front.domid);
    let snap = switch.snapshot();
    let p = snap.iter().find(|p| p.name == name).context("no port")?;
    Ok((p.stats, p.queued_frames, p.queued_bytes))
}

/// Waits until `cond` holds (checked every 5 ms), up to [`WAIT`].
fn wait_for(what: &str, mut cond: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !cond()? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[test]
fn frames_for_a_guest_without_buffers_expire_and_memory_stays_bounded() -> anyhow::Result<()> {
    let (host, dom0, switch, sink) = setup()?;
    let mut a = HandFront::new(&host, "sender", MAC_A)?;
    let mut n = HandFront::new(&host, "nobufs", MAC_G)?;
    a.post_rx(0, RX_BUFS)?;
    let no_notify = FrontendFeatures::default();
    assert!(!no_notify.rx_notify);
    let _va = start(&dom0, &switch, &a, no_notify)?;
    let vn = start(&dom0, &switch, &n, no_notify)?;
    hello(&mut a, &sink)?;
    hello(&mut n, &sink)?;

    // A sends N 4 frames every 10 ms for 1.5 s (7.5 drain timeouts); N posts nothing. The
    // queue would take 1024 frames: expiry, not the bound, must keep it to about what
    // arrives in one drain timeout.
    let (mut sent, mut most_queued) = (0u64, 0);
    let start = Instant::now();
    let mut round = 0u8;
    while start.elapsed() < Duration::from_millis(1500) {
        let reqs: Vec<_> = (0..4).map(|i| a.tx_request(i, 0, &frame(MAC_G, MAC_A, 1000, round), 0)).collect();
        a.push_tx(&reqs)?;
        ensure!(a.wait_tx(4)?.iter().all(|r| r.status == NETIF_RSP_OKAY));
        sent += 4;
        round = round.wrapping_add(1);
        most_queued = most_queued.max(port_of(&switch, &n)?.1);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Everything sent expires: nothing is left queued, nothing was refused for room.
    wait_for("every frame for N to expire", || Ok(vn.stats().rx_dropped_expired == sent))?;
    let (port, frames, bytes) = port_of(&switch, &n)?;
    ensure!((frames, bytes) == (0, 0), "{frames} frames, {bytes} bytes still queued");
    ensure!(port.dropped_queue_full == 0 && port.dropped_carrier_off == 0, "{port:?}");
    ensure!(most_queued < 1024 && sent > most_queued as u64 * 2, "{most_queued} of {sent} frames queued at once");
    // No `feature-rx-notify`: short far longer than the stall timeout, yet no stall.
    let s = vn.stats();
    ensure!(s.rx_stalls == 0 && !s.rx_stalled && s.rx_packets == 0, "{s:?}");

    // The vif still works: buffers posted, a new frame arrives byte-exact.
    n.post_rx(0, RX_BUFS)?;
    let f = frame(MAC_G, MAC_A, 300, 0x5a);
    a.push_tx(&[a.tx_request(0, 0, &f, 0)])?;
    ensure!(a.wait_tx(1)?[0].status == NETIF_RSP_OKAY);
    ensure!(n.wait_rx(1)?[0].1 == f, "frame corrupted");
    ensure!(vn.stats().rx_dropped_expired == sent);
    Ok(())
}

/// A TCP GSO super-frame of three pages for `dst`: 3 data slots and the GSO extra.
fn gso_frame(dst: [u8; 6], seq: u32) -> Frame {
    let payload: Vec<u8> = (0..12_000u32).map(|i| (i.wrapping_mul(7) ^ seq) as u8).collect();
    let data = ipv4(dst, MAC_X, 6, &tcp(seq, &payload));
    let gso = Gso { kind: GsoKind::TcpV4, size: 1448 };
    Frame::with_offload(data, Offload { csum_blank: true, data_validated: false, gso: Some(gso) })
}
const GSO_SLOTS: usize = 4;

fn sg_gso(rx_notify: bool) -> FrontendFeatures {
    FrontendFeatures { sg: true, gso_tcpv4: true, gso_tcpv6: true, rx_notify, ..FrontendFeatures::default() }
}

/// `from` sends `to` 8 frames numbered from `seq`; `to` must get them in order, byte-exact.
fn round(from: &mut HandFront, to: &mut HandFront, dir: u8, seq: u32) -> anyhow::Result<()> {
    let frames: Vec<Vec<u8>> = (0..8u32)
        .map(|i| {
            let mut f = frame(to.mac, from.mac, 200, dir);
            f[14..18].copy_from_slice(&(seq + i).to_be_bytes());
            f
        })
        .collect();
    let reqs: Vec<_> = frames.iter().enumerate().map(|(i, f)| from.tx_request(i, 0, f, 0)).collect();
    from.push_tx(&reqs)?;
    ensure!(from.wait_tx(8)?.iter().all(|r| r.status == NETIF_RSP_OKAY), "TX refused");
    let rx = to.wait_rx(8).with_context(|| format!("direction {dir}, frames from {seq}: lost"))?;
    for (i, (rsp, data)) in rx.iter().enumerate() {
        ensure!(*data == frames[i], "direction {dir}, frame {}: corrupt or out of order", seq + i as u32);
        to.post_rx(usize::from(rsp.id), 1)?;
    }
    Ok(())
}

/// A and B send each other numbered frames in rounds of 8 until `stop`, each checking that
/// every frame arrives, in order, byte-exact. Returns the frames each received.
fn good_pair(mut a: HandFront, mut b: HandFront, stop: Arc<AtomicBool>) -> anyhow::Result<(u64, u64)> {
    let mut seq = 0u32;
    while !stop.load(Ordering::Relaxed) {
        round(&mut a, &mut b, 0, seq)?;
        round(&mut b, &mut a, 1, seq)?;
        seq += 8;
    }
    Ok((u64::from(seq), u64::from(seq)))
}

/// The XSA-392 trick: G (SG + GSO) keeps one RX request fewer than the next frame needs
/// while frames for it keep coming.
fn one_slot_trick(rx_notify: bool, with_pair: bool) -> anyhow::Result<()> {
    let (host, dom0, switch, sink) = setup()?;
    let mut g = HandFront::new(&host, "one-slot", MAC_G)?;
    let vg = start(&dom0, &switch, &g, sg_gso(rx_notify))?;
    hello(&mut g, &sink)?;
    let mut pair = None;
    if with_pair {
        let mut a = HandFront::new(&host, "good-a", MAC_A)?;
        let mut b = HandFront::new(&host, "good-b", MAC_B)?;
        let good = sg_gso(true);
        let vifs = [start(&dom0, &switch, &a, good)?, start(&dom0, &switch, &b, good)?];
        a.post_rx(0, RX_BUFS)?;
        b.post_rx(0, RX_BUFS)?;
        hello(&mut a, &sink)?;
        hello(&mut b, &sink)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        pair = Some((vifs, stop, std::thread::spawn(move || good_pair(a, b, flag))));
    }
    g.post_rx(0, GSO_SLOTS - 1)?;

    // Frames for G every 10 ms: with rx-notify until the stall is declared (and a bit
    // more), without it for 1.2 s.
    let start = Instant::now();
    let (mut seq, mut refused) = (0u32, 0);
    loop {
        match sink.transmit(gso_frame(MAC_G, seq)) {
            TransmitOutcome::Sent => {}
            TransmitOutcome::Dropped(DropReason::CarrierOff) => refused += 1,
            other => anyhow::bail!("frame {seq} for G: {other:?}"),
        }
        seq += 1;
        let s = vg.stats();
        let done = if rx_notify { s.rx_stalls == 1 && refused >= 5 } else { start.elapsed().as_millis() > 1200 };
        if done {
            break;
        }
        ensure!(start.elapsed() < WAIT, "never stalled: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = vg.stats();
    let (port, frames, bytes) = port_of(&switch, &g)?;
    ensure!(s.rx_packets == 0 && g.rx.next_response()?.is_none(), "G took a frame: {s:?}");
    // Frames expired waiting for the fourth request (or were dropped with the stall) before
    // the stall was declared: expiry did not restart the stall clock.
    ensure!(s.rx_dropped_expired + s.rx_dropped_stalled > 0, "{s:?}");
    if !rx_notify {
        ensure!(s.rx_stalls == 0 && !s.rx_stalled && refused == 0, "stalled without rx-notify: {s:?}");
        ensure!(port.dropped_carrier_off == 0 && frames < 1024, "{port:?}, {frames} queued");
        return Ok(());
    }
    // Stalled: flag, counter, carrier off (the switch drops frames for G at once).
    ensure!(s.rx_stalls == 1 && s.rx_stalled, "{s:?}");
    ensure!(port.dropped_carrier_off >= refused && (frames, bytes) == (0, 0), "{port:?}, {frames} queued");

    // Recovery: one more request and G can take the frame that stalled it: ready, carrier
    // on, and a new frame arrives byte-exact with its GSO extra.
    g.post_rx(GSO_SLOTS - 1, 1)?;
    wait_for("Guest Rx ready", || Ok(!vg.stats().rx_stalled))?;
    let f = gso_frame(MAC_G, 0xabcd);
    ensure!(sink.transmit(f.clone()) == TransmitOutcome::Sent, "carrier still off");
    let got = g.wait_rx(GSO_SLOTS)?;
    ensure!(got[0].0.flags & NETRXF_EXTRA_INFO != 0, "{:?}", got[0].0);
    let extra = Extra::from_rx_response(&got[1].0)?;
    ensure!(extra.info == ExtraInfo::Gso { size: 1448, gso_type: 1, features: 0 }, "{extra:?}");
    let data: Vec<u8> = std::iter::once(&got[0]).chain(&got[2..]).flat_map(|(_, d)| d.iter().copied()).collect();
    ensure!(data == f.data(), "the frame after recovery differs");
    let s = vg.stats();
    ensure!(s.rx_packets == 1 && s.rx_gso_frames == 1 && s.rx_stalls == 1 && !s.rx_stalled, "{s:?}");

    if let Some((vifs, stop, thread)) = pair {
        stop.store(true, Ordering::Relaxed);
        let (ab, ba) = thread.join().map_err(|_| anyhow::anyhow!("good pair panicked"))??;
        ensure!(ab > 0 && ba > 0, "the good pair exchanged {ab} + {ba} frames");
        for v in &vifs {
            let s = v.stats();
            ensure!(s.dropped() == 0 && s.rx_stalls == 0 && !s.rx_stalled, "a good guest: {s:?}");
        }
        ensure!(vifs[0].stats().rx_packets == ba && vifs[1].stats().rx_packets == ab);
    }
    Ok(())
}

#[test]
fn one_slot_too_few_is_stalled_carrier_off_then_ready_while_a_good_pair_loses_nothing() -> anyhow::Result<()> {
    one_slot_trick(true, true)
}

#[test]
fn without_rx_notify_one_slot_too_few_only_expires() -> anyhow::Result<()> {
    one_slot_trick(false, false)
}
