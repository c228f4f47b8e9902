//! The TAP uplink end to end: the daemon, in a network namespace of its own, gives a vif
//! whose backend directory has a `script` node a TAP device named `vif<domid>.0` before it
//! goes InitWait; a stand-in for the hotplug script (as `vif-route` would) addresses it and
//! writes `hotplug-status=connected`; the guest's ARP and ping are answered by the kernel.

mod common;

use anyhow::{Context, ensure};
use common::{Lab, WAIT, guest, mac_of};
use dom0_tools::layout::{self, VifSpec};
use grant::sim::DomainConfig;
use netback::daemon::{DaemonConfig, UplinkMode};
use nix::sched::CloneFlags;
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

fn run_tap_daemon() -> anyhow::Result<()> {
    // Before any thread starts, so every thread (and every `ip` child) is in the namespace.
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
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

#[test]
fn a_guest_on_a_tap_is_answered_by_the_kernel() -> anyhow::Result<()> {
    // As netback's own TAP tests: root (or NETBACK_TAP_TESTS set, to fail loudly without it).
    if !nix::unistd::geteuid().is_root() && std::env::var_os("NETBACK_TAP_TESTS").is_none() {
        eprintln!("SKIPPED: a network namespace and a TAP device need root");
        return Ok(());
    }
    let mut lab = Lab::start_with("child_tap_daemon")?;
    let spec = lab.host.create_domain("tap-guest", DomainConfig::default())?;
    let vif = VifSpec {
        handle: Some(0),
        mac: Some(mac_of(spec.domid)),
        script: Some("vif-route".into()),
        ..VifSpec::new(spec.domid)
    };
    let paths = layout::attach(lab.xs(), &vif)?;
    let extra = [(guest::ENV_TARGET, KERNEL_IP.trim_end_matches("/24").to_string()), (guest::ENV_ROUNDS, "2".into())];
    let pinger = lab.spawn_guest(&spec, "pinger", &extra)?;
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
