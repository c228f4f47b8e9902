//! Soak: a guest's vif attached, connected, disconnected and detached again and again (1000
//! times, or `NETBACK_SOAK_CYCLES`) while a pair of other guests exchanges sequence-checked
//! frames. Afterwards the daemon holds as many descriptors and memory mappings as before
//! and its RSS has not grown beyond a small allowance, and the pair lost nothing.

mod common;

use anyhow::{Context, ensure};
use common::{Lab, WAIT, fd_targets, mac_of};
use dom0_tools::layout::{self, DetachOutcome, VifSpec};
use grant::DomId;
use grant::sim::{Credentials, DomainConfig};
use netback::xenbus::XenbusState;
use netfront_test::{Netfront, NetfrontConfig};
use simhost::Session;
use std::time::{Duration, Instant};

child_roles!();

/// Cycles of the soak; the environment may ask for fewer (a quick local run) or more.
const ENV_CYCLES: &str = "NETBACK_SOAK_CYCLES";
/// Cycles run before the baseline is taken: the first ones grow pools that are then reused
/// (allocator arenas, thread stacks, the switch's port slots).
const WARMUP: usize = 20;
/// RSS growth tolerated over the whole soak (allocator high-water marks move a little).
const RSS_SLACK_KB: u64 = 8 * 1024;
/// Memory mappings tolerated beyond the baseline (allocator segments come and go).
const MAPS_SLACK: usize = 16;

/// What the daemon holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    maps: usize,
    rss_kb: u64,
}

impl Usage {
    fn of(pid: u32) -> anyhow::Result<Usage> {
        let fds = fd_targets(pid)?.len();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?.lines().count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(Usage { fds, maps, rss_kb })
    }
}

/// One cycle: attach (as `xl network-attach`), connect as the guest, send `frames` frames
/// to ourselves (the switch counts them and drops the hairpin), disconnect as Linux netfront
/// does, detach (as `xl network-detach`), and wait until the daemon no longer lists the vif.
fn cycle(lab: &Lab, guest: &Session, domid: DomId, frames: usize) -> anyhow::Result<()> {
    let spec = VifSpec { handle: Some(0), mac: Some(mac_of(domid)), ..VifSpec::new(domid) };
    let paths = layout::attach(lab.xs(), &spec)?;
    let mut nf = Netfront::connect(&guest.domain, guest.xenstore.clone(), 0, NetfrontConfig::default())?;
    lab.wait_state(&paths.backend, XenbusState::Connected)?;
    if frames > 0 {
        let mac = mac_of(domid);
        let mut frame = vec![0u8; 60];
        frame[..6].copy_from_slice(&mac);
        frame[6..12].copy_from_slice(&mac);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        for _ in 0..frames {
            nf.send(&frame)?;
        }
        let deadline = Instant::now() + WAIT;
        while lab.report(domid)?.is_none_or(|r| r.stats.tx_packets < frames as u64) {
            ensure!(Instant::now() < deadline, "the daemon never took the guest's {frames} frames");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    nf.disconnect()?;
    let outcome = layout::detach(lab.xs(), 0, domid, 0, WAIT)?;
    ensure!(outcome == DetachOutcome::Clean, "detach was {outcome:?}");
    let deadline = Instant::now() + WAIT;
    while lab.report(domid)?.is_some() {
        ensure!(Instant::now() < deadline, "the daemon still lists the detached vif");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[test]
fn attach_detach_cycles_leak_nothing_and_others_lose_nothing() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let cycles: usize = match std::env::var(ENV_CYCLES) {
        Ok(v) => v.parse().with_context(|| format!("{ENV_CYCLES}={v:?}"))?,
        Err(_) => 1000,
    };
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let spec = lab.host.create_domain("soak", DomainConfig::default())?;
    let guest = simhost::join(lab.host.dir(), Credentials::Guest { token: spec.token })?;
    let pid = lab.daemon_pid();

    for _ in 0..WARMUP {
        cycle(&lab, &guest, spec.domid, 1)?;
    }
    let before = Usage::of(pid)?;
    let start = Instant::now();
    for i in 0..cycles {
        // Every tenth cycle also proves the data path.
        let frames = if i % 10 == 0 { 8 } else { 0 };
        cycle(&lab, &guest, spec.domid, frames).with_context(|| format!("cycle {i}"))?;
    }
    let took = start.elapsed();
    // Descriptors of the last vif may close a moment after it leaves the list.
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let now = Usage::of(pid)?;
        if now.fds <= before.fds || Instant::now() >= deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "soak: {cycles} cycles in {:.1} s ({:.1} ms each); daemon before {before:?}, after {after:?}",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / cycles.max(1) as f64
    );
    ensure!(after.fds <= before.fds, "descriptors: {before:?} before, {after:?} after {cycles} cycles");
    ensure!(after.maps <= before.maps + MAPS_SLACK, "mappings: {before:?} before, {after:?} after");
    ensure!(after.rss_kb <= before.rss_kb + RSS_SLACK_KB, "RSS: {before:?} before, {after:?} after");

    let (sent_a, sent_b) = lab.finish_pair(a, b)?;
    eprintln!("soak: the pair sent {sent_a} and {sent_b} frames meanwhile, all received in order");
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}
