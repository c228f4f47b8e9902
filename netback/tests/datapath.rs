//! The per-vif data path against frontends in this process: hand-driven rings for hostile
//! requests, and two `Netfront` guests exchanging traffic through the switch.

mod datapath_support;

use anyhow::{Context, ensure};
use datapath_support::{HandFront, RX_BUFS, Vif, WAIT, frame};
use grant::sim::Credentials;
use netback::switch::{Switch, SwitchConfig};
use netback::vif::{DatapathConfig, WorkerExit};
use netif::abi::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, XEN_NETIF_EXTRA_FLAG_MORE,
};
use netif::{Extra, ExtraInfo, NetifExtraInfo, TxRequest};
use simhost::SimHost;
use std::time::Instant;

const MAC_A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x0b];
const MAC_H: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x11];

fn setup() -> anyhow::Result<(SimHost, simhost::Session)> {
    let host = SimHost::start_temp()?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    Ok((host, dom0))
}

/// Sends one frame from `from` to `to` (both hand fronts with posted RX buffers) and checks
/// it arrives intact.
fn ping(from: &mut HandFront, to: &mut HandFront, fill: u8) -> anyhow::Result<()> {
    let f = frame(to.mac, from.mac, 100, fill);
    let req = from.tx_request(0, 0, &f, 0);
    from.push_tx(&[req])?;
    let rsp = from.wait_tx(1)?;
    ensure!(rsp[0].status == NETIF_RSP_OKAY, "TX response {rsp:?}");
    let got = to.wait_rx(1)?;
    ensure!(got[0].1 == f, "frame corrupted");
    to.post_rx(usize::from(got[0].0.id), 1)?;
    Ok(())
}

#[test]
fn malformed_tx_requests_get_errors_and_the_vif_lives() -> anyhow::Result<()> {
    let (host, dom0) = setup()?;
    let switch = Switch::new(SwitchConfig::default());
    let mut h = HandFront::new(&host, "hostile", MAC_H)?;
    let mut b = HandFront::new(&host, "peer", MAC_B)?;
    b.post_rx(0, RX_BUFS)?;
    let vif = Vif::start(&dom0, &switch, h.domid, &h.params(), DatapathConfig::default())?;
    let _vb = Vif::start(&dom0, &switch, b.domid, &b.params(), DatapathConfig::default())?;

    // Shorter than an Ethernet header.
    let runt = h.tx_request(0, 0, &[0xff; 13], 0);
    h.push_tx(&[runt])?;
    ensure!(h.wait_tx(1)?[0].status == NETIF_RSP_ERROR);
    ensure!(vif.counters.snapshot().tx_dropped_bad_request == 1);

    // A gref that was never granted.
    let bogus = TxRequest { gref: 5000, ..h.tx_request(1, 0, &frame(MAC_B, MAC_H, 60, 1), 0) };
    h.push_tx(&[bogus])?;
    ensure!(h.wait_tx(1)?[0].status == NETIF_RSP_ERROR);
    ensure!(vif.counters.snapshot().tx_dropped_copy_failed == 1);

    // A 21-slot chain (20 follow-ons, beyond Linux's 18): every slot ERROR, dropped, not fatal.
    let mut chain = vec![h.tx_request(0, 0, &frame(MAC_B, MAC_H, 21 * 20, 2), NETTXF_MORE_DATA)];
    chain.extend((1..21).map(|i| h.tx_request(i, 0, &[3; 20], if i < 20 { NETTXF_MORE_DATA } else { 0 })));
    h.push_tx(&chain)?;
    let rsps = h.wait_tx(21)?;
    ensure!(rsps.len() == 21 && rsps.iter().all(|r| r.status == NETIF_RSP_ERROR), "{rsps:?}");
    ensure!(vif.counters.snapshot().tx_dropped_bad_request == 2);

    // An unsupported extra (multicast add): ERROR for the packet, NULL for the extra.
    let mcast = Extra { info: ExtraInfo::McastAdd([1, 0, 0x5e, 0, 0, 1]), more: false };
    let first = h.tx_request(0, 0, &frame(MAC_B, MAC_H, 60, 4), NETTXF_EXTRA_INFO);
    h.push_tx(&[first, mcast.to_tx_request()])?;
    let rsps = h.wait_tx(2)?;
    ensure!(rsps[0].status == NETIF_RSP_ERROR && rsps[1].status == NETIF_RSP_NULL, "{rsps:?}");

    // Still alive: a good frame goes through to the peer.
    ping(&mut h, &mut b, 5)?;
    let stats = vif.counters.snapshot();
    ensure!(stats.tx_packets == 1 && stats.tx_dropped_bad_request == 3, "{stats:?}");
    ensure!(!vif.handle().is_finished() && vif.fatal.try_recv().is_err());
    Ok(())
}

/// Pushes `reqs` on a fresh hostile vif and checks it goes fatal with a TX protocol error,
/// while the pair `a`/`b` on the same switch keeps working.
fn expect_fatal(host: &SimHost, name: &str, reqs: impl Fn(&HandFront) -> Vec<TxRequest>) -> anyhow::Result<()> {
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let switch = Switch::new(SwitchConfig::default());
    let mut a = HandFront::new(host, &format!("{name}-a"), MAC_A)?;
    let mut b = HandFront::new(host, &format!("{name}-b"), MAC_B)?;
    let mut h = HandFront::new(host, name, MAC_H)?;
    a.post_rx(0, RX_BUFS)?;
    b.post_rx(0, RX_BUFS)?;
    let _va = Vif::start(&dom0, &switch, a.domid, &a.params(), DatapathConfig::default())?;
    let _vb = Vif::start(&dom0, &switch, b.domid, &b.params(), DatapathConfig::default())?;
    let mut vif = Vif::start(&dom0, &switch, h.domid, &h.params(), DatapathConfig::default())?;

    let reqs = reqs(&h);
    h.push_tx(&reqs)?;
    let (id, error, is_tx_protocol) = vif.fatal.recv_timeout(WAIT).context("on_fatal never called")?;
    ensure!(id.domid == h.domid && is_tx_protocol, "{name}: fatal {error}");
    vif.wait_finished()?;
    let exit = vif.handle.take().context("handle")?.stop();
    ensure!(matches!(exit, WorkerExit::Fatal(netback::vif::DatapathError::TxProtocol(_))), "{exit:?}");
    ensure!(vif.fatal.try_recv().is_err(), "on_fatal called twice");
    ping(&mut a, &mut b, 1)?;
    ping(&mut b, &mut a, 2)?;
    Ok(())
}

#[test]
fn cross_page_request_is_fatal_and_others_keep_working() -> anyhow::Result<()> {
    let (host, _dom0) = setup()?;
    expect_fatal(&host, "crosspage", |h| {
        let mut req = h.tx_request(0, 4000, &frame(MAC_A, MAC_H, 60, 1), 0);
        req.size = 97;
        vec![req]
    })
}

#[test]
fn twenty_two_slot_chain_is_fatal() -> anyhow::Result<()> {
    let (host, _dom0) = setup()?;
    // Linux: fatal once a 21st follow-on slot is announced.
    expect_fatal(&host, "chain22", |h| {
        (0..22).map(|i| h.tx_request(i, 0, &[7; 20], if i < 21 { NETTXF_MORE_DATA } else { 0 })).collect()
    })
}

#[test]
fn extra_of_type_zero_is_fatal() -> anyhow::Result<()> {
    let (host, _dom0) = setup()?;
    expect_fatal(&host, "extra0", |h| {
        let zero = NetifExtraInfo { ty: 0, flags: XEN_NETIF_EXTRA_FLAG_MORE, u: [0; 6] };
        vec![h.tx_request(0, 0, &frame(MAC_A, MAC_H, 60, 1), NETTXF_EXTRA_INFO), TxRequest::from(zero)]
    })
}

/// This process's threads named `name`, by tid.
fn threads_named(name: &str) -> anyhow::Result<Vec<String>> {
    let mut tids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        // Other tests' threads come and go while we look.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        if comm.trim_end() == name {
            tids.push(task.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(tids)
}

/// CPU ticks (user + system) of this process's thread `tid`.
fn thread_ticks(tid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

#[test]
fn guest_without_rx_buffers_does_not_spin_or_hurt_others() -> anyhow::Result<()> {
    let (host, dom0) = setup()?;
    let queue = 16;
    let switch = Switch::new(SwitchConfig { port_queue_frames: queue, ..SwitchConfig::default() });
    let mut a = HandFront::new(&host, "sender", MAC_A)?;
    let mut b = HandFront::new(&host, "other", MAC_B)?;
    let mut n = HandFront::new(&host, "nobufs", MAC_H)?;
    b.post_rx(0, RX_BUFS)?;
    let va = Vif::start(&dom0, &switch, a.domid, &a.params(), DatapathConfig::default())?;
    let _vb = Vif::start(&dom0, &switch, b.domid, &b.params(), DatapathConfig::default())?;
    let n_name = format!("vif{}.0", n.domid);
    // Tests in parallel run other hosts whose vifs may have the same name: ours is the new one.
    let others = threads_named(&n_name)?;
    let vn = Vif::start(&dom0, &switch, n.domid, &n.params(), DatapathConfig::default())?;
    // The thread names itself once it runs.
    let deadline = Instant::now() + WAIT;
    let mine = loop {
        let mut mine = threads_named(&n_name)?;
        mine.retain(|t| !others.contains(t));
        if mine.len() == 1 {
            break mine;
        }
        ensure!(Instant::now() < deadline && mine.is_empty(), "N's worker thread among {mine:?}");
        std::thread::yield_now();
    };
    let n_tid = &mine[0];

    // A's MAC is learned by a first ping (so N's hello is not flooded to B), N announces
    // its MAC, then A sends N more frames than N's queue holds.
    ping(&mut a, &mut b, 0)?;
    let hello = n.tx_request(0, 0, &frame(MAC_A, MAC_H, 60, 0), 0);
    n.push_tx(&[hello])?;
    n.wait_tx(1)?;
    // The hello is answered before its frame reaches the switch: wait until the switch has
    // it (queued for A, which posts no buffers), so N's MAC is learned before A sends, or
    // A's frames would be flooded rather than refused by N's full queue.
    let a_name = format!("vif{}.0", a.domid);
    let deadline = Instant::now() + WAIT;
    while switch.snapshot().iter().find(|p| p.name == a_name).map_or(0, |p| p.queued_frames) == 0 {
        ensure!(Instant::now() < deadline, "N's hello never reached A's queue");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let sent = 24;
    for round in 0..sent / 8 {
        let reqs: Vec<_> = (0..8).map(|i| a.tx_request(i, 0, &frame(MAC_H, MAC_A, 200, round as u8), 0)).collect();
        a.push_tx(&reqs)?;
        ensure!(a.wait_tx(8)?.iter().all(|r| r.status == NETIF_RSP_OKAY));
    }
    // The first ping flooded one frame into N's queue too (B was not learned yet). Copied
    // slots are answered before their frames reach the switch, so the last drops may be
    // counted just after the last answer.
    let want = (sent + 1 - queue) as u64;
    let deadline = Instant::now() + WAIT;
    let dropped = loop {
        let dropped = va.counters.snapshot().tx_dropped_uplink;
        if dropped >= want || Instant::now() >= deadline {
            break dropped;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    ensure!(dropped == want, "A's uplink drops {dropped}");
    let snap = switch.snapshot();
    let n_port = snap.iter().find(|p| p.name == n_name).context("N's port")?;
    ensure!(n_port.queued_frames == queue && n_port.stats.dropped_queue_full == dropped, "{n_port:?}");

    // Frames wait for N, and N's worker sleeps: no CPU time while B's traffic flows.
    let before = thread_ticks(n_tid)?;
    for i in 0..50 {
        ping(&mut a, &mut b, i)?;
    }
    let start = Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(300) {
        ping(&mut a, &mut b, 0xee)?;
    }
    let spent = thread_ticks(n_tid)? - before;
    ensure!(spent <= 2, "N's worker used {spent} ticks with no RX buffers");
    ensure!(vn.counters.snapshot().rx_packets == 0);

    // Posting buffers wakes it: the queued frames arrive.
    n.post_rx(0, RX_BUFS)?;
    let got = n.wait_rx(queue)?;
    ensure!(got[0].1.len() == 100 && got[1..].iter().all(|(r, d)| r.status == 200 && d.len() == 200));
    ensure!(vn.counters.snapshot().rx_packets == queue as u64);
    Ok(())
}

#[test]
fn stop_unmaps_and_reconnect_works() -> anyhow::Result<()> {
    let (host, dom0) = setup()?;
    let switch = Switch::new(SwitchConfig::default());
    let mut h = HandFront::new(&host, "reconnect", MAC_H)?;
    let mut b = HandFront::new(&host, "peer", MAC_B)?;
    b.post_rx(0, RX_BUFS)?;
    let _vb = Vif::start(&dom0, &switch, b.domid, &b.params(), DatapathConfig::default())?;
    for round in 0..2u8 {
        let mut vif = Vif::start(&dom0, &switch, h.domid, &h.params(), DatapathConfig::default())?;
        ping(&mut h, &mut b, round)?;
        let exit = vif.handle.take().context("handle")?.stop();
        ensure!(matches!(exit, WorkerExit::Stopped), "{exit:?}");
        ensure!(vif.fatal.try_recv().is_err(), "on_fatal after stop");
        ensure!(vif.counters.snapshot().tx_packets == 1);
    }
    // Nothing of the guest is mapped any more: its grants revoke at once.
    let HandFront { session, tx, rx, channel, bufs, .. } = h;
    drop((tx, rx, bufs, channel));
    ensure!(session.domain.retry_revocations() == 0, "a page is still pinned after stop");
    Ok(())
}
