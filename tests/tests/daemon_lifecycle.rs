//! Lifecycle of vifs under a running daemon, while a pair of other guests keeps exchanging
//! frames that must all arrive: detach and re-attach, a frontend that reconnects, and a
//! guest process that dies in the middle of a transfer.

mod common;

use anyhow::{Context, ensure};
use common::guest::{ENV_RATE, ENV_ROUNDS, ENV_TARGET, ip_of};
use common::{Lab, WAIT, fd_targets, mac_of};
use dom0_tools::layout::{self, DetachOutcome, VifSpec};
use netback::xenbus::XenbusState;
use netfront_test::mac::format_mac;
use std::time::{Duration, Instant};

child_roles!();

#[test]
fn detach_and_reattach_while_others_keep_sending() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let (c, vif_c) = lab.domain("roamer")?;
    let guest_c = lab.spawn_guest(&c, "idle", &[(ENV_TARGET, ip_of(a).to_string())])?;
    lab.hear(c.domid, "connected")?;
    lab.wait_state(&vif_c.backend, XenbusState::Connected)?;

    // Detach as `xl network-detach`: the guest sees Closing and closes; the dirs go.
    let outcome = layout::detach(lab.xs(), 0, c.domid, 0, WAIT)?;
    ensure!(outcome == DetachOutcome::Clean, "detach was {outcome:?}");
    ensure!(!lab.xs().exists(&vif_c.backend)?, "backend dir survived the detach");
    let deadline = Instant::now() + WAIT;
    while lab.report(c.domid)?.is_some() {
        ensure!(Instant::now() < deadline, "the daemon still lists the detached vif");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Re-attach the same handle; the same guest connects again and proves the data path
    // with ARP + ping to a member of the pair.
    let spec = VifSpec { handle: Some(0), mac: Some(mac_of(c.domid)), ..VifSpec::new(c.domid) };
    let vif_c = layout::attach(lab.xs(), &spec)?;
    lab.tell(c.domid, "reattached", "1")?;
    lab.wait_guest(guest_c)?;
    ensure!(lab.xs().read_string(&format!("/local/domain/{}/data/round0", c.domid))? == "ok");
    lab.wait_state(&vif_c.backend, XenbusState::Closed)?;

    lab.finish_pair(a, b)?;
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}

#[test]
fn a_frontend_reconnects_after_closing() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let (c, vif_c) = lab.domain("reconnector")?;
    let env = [(ENV_TARGET, ip_of(b).to_string()), (ENV_ROUNDS, "3".to_string())];
    let pinger = lab.spawn_guest(&c, "pinger", &env)?;
    lab.wait_guest(pinger)?;
    for round in 0..3 {
        let done = lab.xs().read_string(&format!("/local/domain/{}/data/round{round}", c.domid))?;
        ensure!(done == "ok", "round {round}: {done}");
    }
    lab.wait_state(&vif_c.backend, XenbusState::Closed)?;
    let report = lab.report(c.domid)?.context("the closed vif is still listed")?;
    ensure!(report.stats.rx_packets >= 6 && report.stats.tx_packets >= 6, "three rounds: {:?}", report.stats);
    lab.finish_pair(a, b)?;
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}

#[test]
fn a_guest_that_dies_mid_transfer_is_torn_down_and_leaks_nothing() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = fd_targets(lab.daemon_pid())?;

    // The doomed guest sends as fast as it can to its own MAC (the switch drops those as
    // hairpins, so the pair's queues are not touched), then is killed mid-transfer.
    let (c, vif_c) = lab.domain("doomed")?;
    let doomed = lab.spawn_guest(&c, "peer", &[(ENV_RATE, "20000".into())])?;
    lab.wait_state(&vif_c.backend, XenbusState::Connected)?;
    lab.tell(c.domid, "start", &format_mac(&mac_of(c.domid)))?;
    let deadline = Instant::now() + WAIT;
    while lab.report(c.domid)?.is_none_or(|r| r.stats.tx_packets < 500) {
        ensure!(Instant::now() < deadline, "the doomed guest never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(fd_targets(lab.daemon_pid())?.len() > fds_before.len(), "a connected vif holds descriptors");
    lab.guest_process(doomed).kill()?;
    lab.guest_process(doomed).wait()?;

    // @releaseDomain: the daemon tears the vif down (Closed); the toolstack then removes
    // the dead domain's devices, and every descriptor the vif held is gone.
    lab.wait_state(&vif_c.backend, XenbusState::Closed)?;
    let outcome = layout::detach(lab.xs(), 0, c.domid, 0, WAIT)?;
    ensure!(outcome == DetachOutcome::Clean, "detach of the dead guest's vif: {outcome:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let fds = fd_targets(lab.daemon_pid())?;
        if fds.len() <= fds_before.len() {
            break;
        }
        ensure!(Instant::now() < deadline, "daemon fds before: {fds_before:?}\nafter the teardown: {fds:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.finish_pair(a, b)?;
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}
