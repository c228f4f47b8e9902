//! Faults: the daemon's connection to xenstored is cut (as a xenstored restart cuts it),
//! while a pair of guests exchanges sequence-checked frames. The data paths never needed
//! xenstore: the pair loses nothing, the daemon keeps running and answering its control
//! socket, reconnects, and then catches up with what changed while it was away (a guest
//! detached meanwhile is torn down, one attached meanwhile connects) without touching the
//! vifs where nothing changed. Cut twenty times, it holds what it held before.

mod common;

use anyhow::{Context, ensure};
use common::{Lab, WAIT, fd_targets};
use dom0_tools::layout::{self, DetachOutcome};
use grant::DomId;
use netback::xenbus::XenbusState;
use std::time::{Duration, Instant};
use xenstore::{ConnectionInfo, Watch};

child_roles!();

/// The daemon's backend root: its xenstore connection is the dom0 one watching it.
const ROOT: &str = "/local/domain/0/backend/vif";
/// How long the tests listen for a write that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn backend(domid: DomId) -> String {
    format!("{ROOT}/{domid}/0")
}

/// The daemon's xenstore connection as xenstored sees it (exactly one, or none while the
/// daemon is disconnected).
fn daemon_connection(lab: &Lab) -> anyhow::Result<Option<ConnectionInfo>> {
    let mut ours: Vec<ConnectionInfo> = lab
        .host
        .xenstored()
        .connections()
        .into_iter()
        .filter(|c| c.domid == 0 && c.watches.iter().any(|w| w == ROOT))
        .collect();
    ensure!(ours.len() <= 1, "several connections watch {ROOT}: {ours:?}");
    Ok(ours.pop())
}

/// Cuts the daemon's xenstore connection; returns its id.
fn cut(lab: &Lab) -> anyhow::Result<u64> {
    let conn = daemon_connection(lab)?.context("the daemon has no xenstore connection")?;
    ensure!(lab.host.xenstored().drop_connection(conn.id), "connection {} vanished", conn.id);
    Ok(conn.id)
}

/// Waits until the daemon is connected again (not as `old`) with `watches` watches: the
/// root, `@releaseDomain` and one per live frontend.
fn wait_reconnected(lab: &Lab, old: u64, watches: usize) -> anyhow::Result<ConnectionInfo> {
    let deadline = Instant::now() + WAIT;
    loop {
        let conn = daemon_connection(lab)?;
        if let Some(conn) = conn.as_ref().filter(|c| c.id != old && c.watches.len() == watches) {
            return Ok(conn.clone());
        }
        ensure!(Instant::now() < deadline, "the daemon never reconnected with {watches} watches: {conn:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A watch on each vif's backend `state`, its first event (the registration) consumed.
fn watch_states(lab: &Lab, domids: &[DomId]) -> anyhow::Result<Vec<(String, Watch)>> {
    let mut watches = Vec::new();
    for domid in domids {
        let path = format!("{}/state", backend(*domid));
        let watch = lab.xs().watch(&path, None)?;
        watch.recv_timeout(WAIT)?.with_context(|| format!("first event of {path}"))?;
        watches.push((path, watch));
    }
    Ok(watches)
}

/// No state node was written since [`watch_states`] (allowing [`QUIET`] for a late one).
fn no_state_written(watches: &[(String, Watch)]) -> anyhow::Result<()> {
    std::thread::sleep(QUIET);
    for (path, watch) in watches {
        ensure!(watch.try_recv()?.is_none(), "{path} was written");
    }
    Ok(())
}

/// The frames a vif has sent so far, as the control socket reports.
fn tx_packets(lab: &Lab, domid: DomId) -> anyhow::Result<u64> {
    Ok(lab.report(domid)?.with_context(|| format!("vif {domid}/0 is not listed"))?.stats.tx_packets)
}

/// Waits until the pair's vifs have sent more than `than` frames each.
fn pair_sends_beyond(lab: &Lab, pair: [DomId; 2], than: [u64; 2]) -> anyhow::Result<[u64; 2]> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = [tx_packets(lab, pair[0])?, tx_packets(lab, pair[1])?];
        if now[0] > than[0] && now[1] > than[1] {
            return Ok(now);
        }
        ensure!(Instant::now() < deadline, "the pair's traffic stalled at {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_lost_xenstore_connection_costs_the_guests_nothing() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let (c, vif_c) = lab.domain("leaver")?;
    let leaver = lab.spawn_guest(&c, "idle", &[])?;
    lab.hear(c.domid, "connected")?;
    lab.wait_state(&vif_c.backend, XenbusState::Connected)?;
    let before = pair_sends_beyond(&lab, [a, b], [0, 0])?;
    let states = watch_states(&lab, &[a, b])?;

    // xenstored goes away for the daemon, and stays away for a while.
    lab.host.xenstored_listener().pause();
    let old = cut(&lab)?;
    ensure!(daemon_connection(&lab)?.is_none(), "the daemon is connected though xenstored is down");

    // Meanwhile the toolstack detaches one guest (it closes: the toolstack wrote Closing)
    // and attaches another, whose process starts at once.
    let toolstack = lab.xs().clone();
    let detach = std::thread::spawn(move || layout::detach(&toolstack, 0, c.domid, 0, WAIT));
    let (d, vif_d) = lab.domain("newcomer")?;
    let newcomer = lab.spawn_guest(&d, "idle", &[])?;
    lab.wait_guest(leaver)?;

    // The pair's frames still flow and the control socket answers; the daemon has not
    // acted on the toolstack's changes (it cannot read xenstore): the leaver is still
    // listed, the newcomer unknown.
    std::thread::sleep(QUIET);
    ensure!(daemon_connection(&lab)?.is_none(), "reconnected through a paused listener");
    let during = pair_sends_beyond(&lab, [a, b], before)?;
    ensure!(lab.report(c.domid)?.is_some(), "the leaver was forgotten without xenstore");
    ensure!(lab.report(d.domid)?.is_none(), "the newcomer was probed without xenstore");

    // xenstored is back: the daemon reconnects with the root, @releaseDomain and the
    // frontends of the pair and of the leaver it still serves, or of the newcomer.
    lab.host.xenstored_listener().resume()?;
    let deadline = Instant::now() + WAIT;
    while daemon_connection(&lab)?.is_none_or(|conn| conn.id == old) {
        ensure!(Instant::now() < deadline, "the daemon never reconnected");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The detach completes cleanly (the daemon wrote Closed) and the vif is forgotten.
    let outcome = detach.join().expect("detach thread")?;
    ensure!(outcome == DetachOutcome::Clean, "the detach while disconnected ended {outcome:?}");
    ensure!(!lab.xs().exists(&vif_c.backend)?, "the leaver's backend directory survived");
    let deadline = Instant::now() + WAIT;
    while lab.report(c.domid)?.is_some() {
        ensure!(Instant::now() < deadline, "the daemon still lists the detached vif");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The newcomer is probed and connects.
    lab.hear(d.domid, "connected")?;
    lab.wait_state(&vif_d.backend, XenbusState::Connected)?;
    let conn = wait_reconnected(&lab, old, 5)?;
    eprintln!("reconnected: {conn:?}");

    // The pair's vifs were left alone: no state write; and their traffic goes on.
    no_state_written(&states)?;
    let after = pair_sends_beyond(&lab, [a, b], during)?;
    eprintln!("pair frames sent: {before:?} before the cut, {during:?} while down, {after:?} after");

    // Nothing was lost, and the pair's frontend watches work again: each guest's close is
    // answered (its frontend's Closing reaches the daemon through such a watch).
    let (sent_a, sent_b) = lab.finish_pair(a, b)?;
    eprintln!("the pair sent {sent_a} and {sent_b} frames, all received in order");
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.wait_state(&backend(a), XenbusState::Closed)?;
    lab.wait_state(&backend(b), XenbusState::Closed)?;
    ensure!(layout::detach(lab.xs(), 0, d.domid, 0, WAIT)? == DetachOutcome::Clean, "detaching the newcomer");
    lab.wait_guest(newcomer)?;
    lab.stop()
}

/// The daemon's descriptors with socket inode numbers left out (a new connection is a new
/// socket), and its thread count.
fn holdings(pid: u32) -> anyhow::Result<(Vec<String>, usize)> {
    let fds = fd_targets(pid)?
        .into_iter()
        .map(|t| if t.starts_with("socket:") { "socket".to_string() } else { t })
        .collect::<Vec<_>>();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let mut fds = fds;
    fds.sort();
    Ok((fds, threads))
}

#[test]
fn twenty_lost_connections_leak_nothing_and_change_nothing() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    const CUTS: usize = 20;
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    // Root, @releaseDomain and the two frontends.
    let conn = wait_reconnected(&lab, u64::MAX, 4)?;
    let states = watch_states(&lab, &[a, b])?;
    let pid = lab.daemon_pid();
    let before = holdings(pid)?;
    let connections = lab.host.xenstored().connection_count();
    let mut sent = pair_sends_beyond(&lab, [a, b], [0, 0])?;

    let mut old = conn.id;
    for i in 0..CUTS {
        // Every fourth time xenstored stays away for a few failed attempts.
        let down = i % 4 == 3;
        if down {
            lab.host.xenstored_listener().pause();
        }
        cut(&lab).with_context(|| format!("cut {i}"))?;
        if down {
            std::thread::sleep(Duration::from_millis(50));
            lab.host.xenstored_listener().resume()?;
        }
        old = wait_reconnected(&lab, old, 4).with_context(|| format!("reconnect {i}"))?.id;
        sent = pair_sends_beyond(&lab, [a, b], sent).with_context(|| format!("traffic after cut {i}"))?;
    }

    // The daemon holds what it held (the last watches' fds may close a moment late), and
    // xenstored serves it one connection as before.
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let now = holdings(pid)?;
        if now == before || Instant::now() >= deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "after {CUTS} cuts: {} fds and {} threads (before: {} and {}); the pair sent {sent:?}",
        after.0.len(),
        after.1,
        before.0.len(),
        before.1
    );
    ensure!(after == before, "daemon fds and threads before {before:?}\nafter {CUTS} cuts: {after:?}");
    ensure!(lab.host.xenstored().connection_count() == connections, "xenstored holds stale connections");

    // No vif was touched, and nothing was lost.
    no_state_written(&states)?;
    for domid in [a, b] {
        let report = lab.report(domid)?.context("listed")?;
        ensure!(report.state == XenbusState::Connected as u32 && report.error.is_none(), "{report:?}");
    }
    let (sent_a, sent_b) = lab.finish_pair(a, b)?;
    eprintln!("the pair sent {sent_a} and {sent_b} frames, all received in order");
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}
