//! Hitless restart of the daemon (`docs/restart.md`): killed with SIGKILL (or aborting at a
//! crash point of the answering order) while a pair of guests exchange sequence-checked
//! traffic, and started again, it takes both vifs over from their state files and the
//! shared rings. Neither guest sees a xenbus state change; frames in flight may be lost,
//! none arrives corrupt, reordered or twice, and no guest sees a response it cannot match.

mod common;

use anyhow::{Context, ensure};
use common::guest::{ENV_SETTLE_MS, PeerReport};
use common::{Lab, wait_node};
use grant::DomId;
use netback::daemon::DaemonConfig;
use netback::vif::crash::ENV_CRASH_AT;
use netback::xenbus::XenbusState;
use std::time::{Duration, Instant};
use xenstore::Watch;

child_roles!();

#[test]
#[ignore = "child process: a daemon that leaves its vifs to the next process on exit"]
fn child_keeping_daemon() {
    if netback_e2e::is_child() {
        common::run_daemon_with(DaemonConfig { keep_vifs_on_exit: true, ..DaemonConfig::default() }).expect("daemon");
    }
}

/// Frames one restart may lose: those the dead process had consumed or queued (a TX drain,
/// the switch ports' queues, an RX batch). At 1500 frames/s with the worker keeping up the
/// queues are nearly empty; a ring's worth is the bound `docs/restart.md` promises.
const LOSS_PER_RESTART: u64 = 256;

fn backend(domid: DomId) -> String {
    format!("/local/domain/0/backend/vif/{domid}/0/state")
}

fn frontend(domid: DomId) -> String {
    format!("/local/domain/{domid}/device/vif/0/state")
}

/// Watches the state nodes of both ends of both vifs; the first event of each (the one a
/// new watch always fires) is consumed.
fn watch_states(lab: &Lab, guests: [DomId; 2]) -> anyhow::Result<Vec<(String, Watch)>> {
    let mut watches = Vec::new();
    for path in guests.into_iter().flat_map(|d| [backend(d), frontend(d)]) {
        let watch = lab.xs().watch(&path, None)?;
        watch.recv_timeout(Duration::from_secs(5)).with_context(|| format!("first event of {path}"))?;
        watches.push((path, watch));
    }
    Ok(watches)
}

/// No state node was written since [`watch_states`], and every one says Connected.
fn no_state_changed(lab: &Lab, watches: &[(String, Watch)]) -> anyhow::Result<()> {
    for (path, watch) in watches {
        ensure!(watch.try_recv()?.is_none(), "{path} was written during the restart");
        let value = lab.xs().read_string(path)?;
        ensure!(XenbusState::parse(&value) == Some(XenbusState::Connected), "{path} = {value:?}");
    }
    Ok(())
}

/// Waits until the (new) daemon has moved `n` more frames into each guest.
fn wait_traffic(lab: &Lab, guests: [DomId; 2], n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for domid in guests {
        loop {
            let rx = lab.report(domid)?.map_or(0, |r| r.stats.rx_packets);
            if rx >= n {
                break;
            }
            ensure!(Instant::now() < deadline, "vif {domid}/0 moved only {rx} frames into its guest");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Waits until the new daemon lists both vifs (taken over); returns the slots it answered by
/// fallback, summed over both: (TX, RX).
fn taken_over_fallbacks(lab: &Lab, guests: [DomId; 2]) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sum = (0, 0);
    for domid in guests {
        let stats = loop {
            if let Some(report) = lab.report(domid)?.filter(|r| r.port.is_some()) {
                break report.stats;
            }
            ensure!(Instant::now() < deadline, "vif {domid}/0 was not taken over");
            std::thread::sleep(Duration::from_millis(10));
        };
        sum.0 += stats.tx_dropped_restart;
        sum.1 += stats.rx_dropped_restart;
    }
    Ok(sum)
}

/// After a restart: the pair (guest processes 0 and 1) moves frames through the new daemon,
/// no `state` node was written, and [`finish`] finds at most `max_lost` lost each way; both
/// guests then exit cleanly. Returns the losses.
fn pair_carried_on(
    lab: &mut Lab,
    guests: [DomId; 2],
    watches: &[(String, Watch)],
    max_lost: u64,
) -> anyhow::Result<[u64; 2]> {
    wait_traffic(lab, guests, 300)?;
    std::thread::sleep(Duration::from_millis(500));
    no_state_changed(lab, watches)?;
    let lost = finish(lab, guests, max_lost)?;
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    Ok(lost)
}

/// Stops the pair and checks what each received: nothing corrupt, reordered or duplicated,
/// at most `max_lost` lost, and no response a guest could not match. Returns the losses.
fn finish(lab: &Lab, guests: [DomId; 2], max_lost: u64) -> anyhow::Result<[u64; 2]> {
    let [a, b] = guests;
    lab.tell(a, "stop", "1")?;
    lab.tell(b, "stop", "1")?;
    let sent_a: u64 = lab.hear(a, "sent")?.parse()?;
    let sent_b: u64 = lab.hear(b, "sent")?.parse()?;
    lab.tell(a, "expect", &sent_b.to_string())?;
    lab.tell(b, "expect", &sent_a.to_string())?;
    let mut lost = [0; 2];
    for (i, (me, peer_sent)) in [(a, sent_b), (b, sent_a)].into_iter().enumerate() {
        let report = PeerReport::parse(&lab.hear(me, "report")?)?;
        let errors: Vec<u64> = lab.hear(me, "errors")?.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        eprintln!("guest {me}: {report:?} of {peer_sent}; tx_errors, rx_errors, protocol_errors = {errors:?}");
        ensure!(report.corrupt == 0 && report.reordered == 0 && report.duplicated == 0, "guest {me}: {report:?}");
        ensure!(report.received + report.lost == peer_sent, "guest {me}: {report:?} of {peer_sent}");
        ensure!(report.lost <= max_lost, "guest {me} lost {} frames (at most {max_lost})", report.lost);
        ensure!(errors.get(2) == Some(&0), "guest {me} saw responses it could not match: {errors:?}");
        lost[i] = report.lost;
    }
    ensure!(sent_a > 1000 && sent_b > 1000, "the pair sent too little ({sent_a}, {sent_b})");
    Ok(lost)
}

#[test]
fn kill_9_during_traffic_is_survived_without_a_reconnect() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair_with(&[(ENV_SETTLE_MS, "3000".into())])?;
    let guests = [a, b];
    wait_traffic(&lab, guests, 300)?;
    let watches = watch_states(&lab, guests)?;
    let released = lab.host.hypervisor().pin_releases().pins;
    let status = lab.kill_daemon()?;
    ensure!(!status.success(), "the daemon survived SIGKILL: {status}");
    // As gntdev's release on a real host: the dead process's mappings (at least both ring
    // pages of both vifs) are unpinned, so the guests could still revoke those grants.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.host.hypervisor().pin_releases().pins < released + 4 {
        ensure!(
            Instant::now() < deadline,
            "the host released {:?} after the kill",
            lab.host.hypervisor().pin_releases()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for domid in guests {
        let file = lab.state_dir().join(format!("{domid}.0"));
        ensure!(file.exists(), "no state file {} after the kill", file.display());
    }
    let down = Instant::now();
    lab.restart_daemon(&[])?;
    wait_traffic(&lab, guests, 300)?;
    eprintln!("traffic resumed {:?} after the kill", down.elapsed());
    let lost = pair_carried_on(&mut lab, guests, &watches, LOSS_PER_RESTART)?;
    eprintln!("lost across the restart: {lost:?}");
    lab.stop()
}

#[test]
fn a_crash_at_every_point_of_the_answering_order_is_survived() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    const POINTS: [&str; 7] =
        ["tx-consumed", "tx-written", "tx-recorded", "rx-consumed", "rx-half-written", "rx-written", "rx-recorded"];
    // Each daemon aborts the 200th time a worker passes its point: well into the traffic.
    let arm = |point: &str| vec![(ENV_CRASH_AT, format!("{point}:200"))];
    let mut lab = Lab::start_with_env("child_daemon", &arm(POINTS[0]))?;
    let (a, b) = lab.start_pair_with(&[(ENV_SETTLE_MS, "3000".into())])?;
    let guests = [a, b];
    wait_traffic(&lab, guests, 1)?;
    let watches = watch_states(&lab, guests)?;
    for (i, point) in POINTS.iter().enumerate() {
        let status = lab.wait_daemon_exit(Duration::from_secs(30)).with_context(|| format!("crash at {point}"))?;
        ensure!(!status.success(), "the daemon armed at {point} exited cleanly: {status}");
        let next = POINTS.get(i + 1).map_or_else(Vec::new, |p| arm(p));
        lab.restart_daemon(&next)?;
        // A crash after consuming and before recording the answers leaves slots to answer
        // by fallback (the file does not count the written ones), and the new process
        // counts them. (The other vif's worker may have been anywhere: no upper bound.)
        let fallbacks = taken_over_fallbacks(&lab, guests)?;
        eprintln!("survived a crash at {point}; fallbacks (tx, rx) {fallbacks:?}");
        match *point {
            "tx-consumed" | "tx-written" => ensure!(fallbacks.0 > 0, "no TX fallback after a crash at {point}"),
            "rx-consumed" | "rx-written" => ensure!(fallbacks.1 > 0, "no RX fallback after a crash at {point}"),
            _ => {}
        }
    }
    let lost = pair_carried_on(&mut lab, guests, &watches, LOSS_PER_RESTART * POINTS.len() as u64)?;
    eprintln!("lost across {} crashes: {lost:?}", POINTS.len());
    lab.stop()
}

#[test]
fn a_state_file_that_does_not_fit_the_ring_disables_only_its_vif() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair_with(&[(ENV_SETTLE_MS, "3000".into())])?;
    let guests = [a, b];
    wait_traffic(&lab, guests, 100)?;
    lab.kill_daemon()?;
    // The TX req_cons of a's file (bytes 64..68) jumps far past anything the frontend
    // produced, as if the frontend had moved its indices while the daemon was down.
    let file = lab.state_dir().join(format!("{a}.0"));
    let mut bytes = std::fs::read(&file)?;
    let req_cons = u32::from_ne_bytes(bytes[64..68].try_into()?);
    bytes[64..68].copy_from_slice(&req_cons.wrapping_add(5000).to_ne_bytes());
    std::fs::write(&file, bytes)?;
    lab.restart_daemon(&[])?;
    let error = format!("/local/domain/0/backend/vif/{a}/0/error");
    wait_node(lab.xs(), &error, |v| v.is_some_and(|v| v.contains("taking the vif over")))?;
    wait_node(lab.xs(), &backend(a), |v| v == Some("5"))?;
    eprintln!("{a}'s vif: {}", lab.xs().read_string(&error)?);
    ensure!(!file.exists(), "the bad state file was kept");
    // b was taken over and still moves frames.
    let before = lab.report(b)?.map_or(0, |r| r.stats.rx_packets);
    ensure!(lab.xs().read_string(&backend(b))? == "4");
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.report(b)?.map_or(0, |r| r.stats.tx_packets) < 100 {
        ensure!(Instant::now() < deadline, "b's vif moves nothing after the restart (rx before: {before})");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn a_clean_exit_with_keep_vifs_on_exit_hands_the_vifs_over() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start_with("child_keeping_daemon")?;
    let (a, b) = lab.start_pair_with(&[(ENV_SETTLE_MS, "3000".into())])?;
    let guests = [a, b];
    wait_traffic(&lab, guests, 300)?;
    let watches = watch_states(&lab, guests)?;
    // End-of-file on its stdin: the daemon's stop, as SIGTERM in the binary.
    let status = lab.stop_daemon()?;
    ensure!(status.success(), "the daemon's exit: {status}");
    lab.restart_daemon(&[])?;
    let lost = pair_carried_on(&mut lab, guests, &watches, LOSS_PER_RESTART)?;
    eprintln!("lost across the handover: {lost:?}");
    lab.stop()
}

#[test]
fn a_frontend_moving_its_indices_while_the_daemon_is_down_disables_only_its_vif() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair_with(&[(ENV_SETTLE_MS, "3000".into())])?;
    let guests = [a, b];
    let (liar, liar_vif) = lab.domain("liar")?;
    lab.spawn_guest(&liar, "jumper", &[])?;
    lab.hear(liar.domid, "connected")?;
    lab.wait_state(&liar_vif.backend, XenbusState::Connected)?;
    wait_traffic(&lab, guests, 100)?;
    let watches = watch_states(&lab, guests)?;
    lab.kill_daemon()?;
    lab.tell(liar.domid, "jump", "1")?;
    lab.hear(liar.domid, "jumped")?;
    lab.restart_daemon(&[])?;
    let error = format!("{}/error", liar_vif.backend);
    wait_node(lab.xs(), &error, |v| v.is_some_and(|v| v.contains("taking the vif over")))?;
    wait_node(lab.xs(), &backend(liar.domid), |v| v == Some("5"))?;
    eprintln!("the liar's vif: {}", lab.xs().read_string(&error)?);
    // The pair was taken over, untouched.
    let lost = pair_carried_on(&mut lab, guests, &watches, LOSS_PER_RESTART)?;
    eprintln!("the pair lost {lost:?}");
    Ok(())
}
