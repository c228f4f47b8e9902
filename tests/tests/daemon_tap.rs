//! The TAP uplink end to end: the daemon, in a network namespace of its own, gives a vif
//! whose backend directory has a `script` node a TAP device named `vif<domid>.0` before it
//! goes InitWait; a stand-in for the hotplug script (as `vif-route` would) addresses it and
//! writes `hotplug-status=connected`; the guest's ARP and ping are answered by the kernel.

mod common;

use anyhow::{Context, bail, ensure};
use common::{Lab, WAIT, guest, mac_of};
use dom0_tools::layout::{self, VifPaths, VifSpec};
use grant::sim::DomainConfig;
use netback::daemon::{DaemonConfig, UplinkMode};
use nix::sched::CloneFlags;
use simhost::GuestSpec;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use xenstore::Client;

child_roles!();

/// The address the kernel answers on, in the guests' 10.0.0.0/24.
const KERNEL_IP: &str = "10.0.0.254/24";

#[test]
#[ignore = "child process: the daemon of a TAP lab, in its own network namespace"]
fn child_tap_daemon() {
    if netback_e2e::is_child() {
        run_tap_daemon().expect("TAP daemon");
    }
}

/// The named network namespace [`child_tap_daemon`] enters instead of a new one.
const ENV_NETNS: &str = "E2E_NETNS";

fn run_tap_daemon() -> anyhow::Result<()> {
    // Before any thread starts, so every thread (and every `ip` child) is in the namespace:
    // the named one, which outlives the daemon (a restart test), or a new one.
    match std::env::var(ENV_NETNS) {
        Ok(name) => {
            let ns = std::fs::File::open(format!("/run/netns/{name}")).context("opening the named netns")?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
        }
        Err(_) => nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?,
    }
    let dir = std::env::var(simhost::ENV_SIM_DIR).context("NETBACK_SIM_DIR")?;
    let xs = simhost::join(Path::new(&dir), grant::sim::Credentials::Dom0)?.xenstore;
    std::thread::spawn(move || hotplug(&xs));
    common::run_daemon_with(DaemonConfig { uplink: UplinkMode::Auto, ..DaemonConfig::default() })
}

/// A `vif-route`-like hotplug script for every vif with a `script` node: once its TAP
/// exists, address it, bring it up, and open the gate. Runs until the process ends.
fn hotplug(xs: &Client) {
    let root = "/local/domain/0/backend/vif";
    loop {
        for domid in xs.directory(root).unwrap_or_default() {
            for handle in xs.directory(&format!("{root}/{domid}")).unwrap_or_default() {
                let backend = format!("{root}/{domid}/{handle}");
                let node = |k: &str| xs.read_string(&format!("{backend}/{k}")).ok();
                let name = format!("vif{domid}.{handle}");
                // Not /sys/class/net: sysfs shows the namespace that mounted it.
                if node("script").is_none() || node("hotplug-status").is_some() || !ip(&["link", "show", "dev", &name])
                {
                    continue;
                }
                let ok = ip(&["addr", "add", KERNEL_IP, "dev", &name]) && ip(&["link", "set", &name, "up"]);
                let _ = xs.write(&format!("{backend}/hotplug-status"), if ok { "connected" } else { "error" });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip(args: &[&str]) -> bool {
    let quiet = || std::process::Stdio::null();
    Command::new("ip").args(args).stdout(quiet()).stderr(quiet()).status().is_ok_and(|s| s.success())
}

/// A domain `name` with vif 0 (a `script` node, so the daemon gives it a TAP) and a guest
/// process in `mode` (`pinger` or `held-pinger`) pinging the kernel twice.
fn pinger_on_a_tap(lab: &mut Lab, name: &str, mode: &str) -> anyhow::Result<(GuestSpec, VifPaths, usize)> {
    let spec = lab.host.create_domain(name, DomainConfig::default())?;
    let vif = VifSpec {
        handle: Some(0),
        mac: Some(mac_of(spec.domid)),
        script: Some("vif-route".into()),
        ..VifSpec::new(spec.domid)
    };
    let paths = layout::attach(lab.xs(), &vif)?;
    let extra = [(guest::ENV_TARGET, KERNEL_IP.trim_end_matches("/24").to_string()), (guest::ENV_ROUNDS, "2".into())];
    let pinger = lab.spawn_guest(&spec, mode, &extra)?;
    Ok((spec, paths, pinger))
}

#[test]
fn a_guest_on_a_tap_is_answered_by_the_kernel() -> anyhow::Result<()> {
    // As netback's own TAP tests: root (or NETBACK_TAP_TESTS set, to fail loudly without it).
    if !nix::unistd::geteuid().is_root() && std::env::var_os("NETBACK_TAP_TESTS").is_none() {
        eprintln!("SKIPPED: a network namespace and a TAP device need root");
        return Ok(());
    }
    let mut lab = Lab::start_with("child_tap_daemon")?;
    let (spec, paths, pinger) = pinger_on_a_tap(&mut lab, "tap-guest", "pinger")?;
    lab.wait_guest(pinger).context("the guest's ARP and ping through the TAP")?;
    for round in 0..2 {
        ensure!(lab.hear(spec.domid, &format!("round{round}"))? == "ok", "round {round}");
    }
    ensure!(
        lab.xs().read_string(&format!("{}/hotplug-status", paths.backend))? == "connected",
        "the stand-in script found the TAP vif{}.0 and addressed it",
        spec.domid
    );
    let report = lab.report(spec.domid)?.context("the vif is in the daemon's list")?;
    // Each round: an ARP request and an echo request out, their answers in.
    ensure!(report.stats.tx_packets >= 4 && report.stats.rx_packets >= 4, "{:?}", report.stats);
    let outcome = layout::detach(lab.xs(), 0, spec.domid, 0, WAIT)?;
    ensure!(outcome == layout::DetachOutcome::Clean, "{outcome:?}");
    let deadline = Instant::now() + WAIT;
    while lab.report(spec.domid)?.is_some() {
        ensure!(Instant::now() < deadline, "the vif was never forgotten");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.stop()
}

/// A named network namespace, deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn add() -> anyhow::Result<NamedNetns> {
        let name = format!("nbtap{}", std::process::id());
        ensure!(ip(&["netns", "add", &name]), "ip netns add {name}");
        Ok(NamedNetns(name))
    }

    /// Whether `dev` exists in it, and is up.
    fn link(&self, dev: &str) -> (bool, bool) {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "ip", "-o", "link", "show", "dev", dev]).output();
        match out {
            Ok(o) if o.status.success() => (true, String::from_utf8_lossy(&o.stdout).contains(",UP")),
            _ => (false, false),
        }
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

#[test]
fn a_killed_daemon_finds_its_tap_again_and_the_guest_keeps_its_connection() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() && std::env::var_os("NETBACK_TAP_TESTS").is_none() {
        eprintln!("SKIPPED: a network namespace and a TAP device need root");
        return Ok(());
    }
    let netns = NamedNetns::add()?;
    let mut lab = Lab::start_with_env("child_tap_daemon", &[(ENV_NETNS, netns.0.clone())])?;
    let (spec, paths, pinger) = pinger_on_a_tap(&mut lab, "tap-held", "held-pinger")?;
    ensure!(lab.hear(spec.domid, "round0")? == "ok", "round 0");
    let dev = format!("vif{}.0", spec.domid);
    let states = [format!("{}/state", paths.backend), format!("{}/state", paths.frontend)];
    let watches: Vec<_> = states.iter().map(|p| lab.xs().watch(p, None)).collect::<Result<_, _>>()?;
    for w in &watches {
        w.recv_timeout(Duration::from_secs(5))?;
    }
    lab.kill_daemon()?;
    ensure!(netns.link(&dev) == (true, true), "{dev} did not survive the daemon as it was (up)");
    lab.restart_daemon(&[(ENV_NETNS, netns.0.clone())])?;
    lab.tell(spec.domid, "go1", "1")?;
    ensure!(lab.hear(spec.domid, "round1")? == "ok", "round 1, through the TAP the new daemon re-opened");
    for (path, w) in states.iter().zip(&watches) {
        if let Some(event) = w.try_recv()? {
            bail!("{path} was written across the restart: {event:?}, now {:?}", lab.xs().read_string(path));
        }
    }
    lab.tell(spec.domid, "finish", "1")?;
    lab.wait_guest(pinger)?;
    let outcome = layout::detach(lab.xs(), 0, spec.domid, 0, WAIT)?;
    ensure!(outcome == layout::DetachOutcome::Clean, "{outcome:?}");
    let deadline = Instant::now() + WAIT;
    while netns.link(&dev).0 {
        ensure!(Instant::now() < deadline, "{dev} outlived its vif (TUNSETPERSIST not cleared)");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.stop()
}
