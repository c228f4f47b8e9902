//! `netfront-test --hostile <mode>` (the binary) against the netback daemon on the simulated
//! host: every mode must see the backend react as Linux netback does (error node and Closing,
//! or `NETIF_RSP_ERROR` and a vif that still pings), and the daemon must stay up and stop
//! cleanly afterwards.

use anyhow::{Context, ensure};
use dom0_tools::layout::{self, VifPaths, VifSpec};
use grant::sim::DomainConfig;
use netback::daemon::DaemonConfig;
use netback_e2e::{is_child, spawn_child_with_stdin, wait_child};
use netfront_test::XenbusState;
use netfront_test::hostile::Mode;
use simhost::{ENV_SIM_DIR, GuestSpec, SimHost};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netfront-test");
const WAIT: Duration = Duration::from_secs(30);
const CONTROL: &str = "netback.sock";
/// The address of the guest that answers the ping after `bad-tx-gref`.
const PEER_IP: &str = "10.0.0.9";

#[test]
#[ignore = "child process: the netback daemon"]
fn child_daemon() {
    if is_child() {
        run_daemon().expect("daemon");
    }
}

/// Joins the host named by the environment as dom0; runs until stdin reaches end-of-file.
fn run_daemon() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var_os(ENV_SIM_DIR).context(ENV_SIM_DIR)?);
    let config = DaemonConfig { control_socket: Some(dir.join(CONTROL)), ..DaemonConfig::default() };
    netback::daemon::run_sim(&dir, config, std::io::stdin().as_fd())?;
    Ok(())
}

/// Child processes killed when the test ends, whatever happened.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn domain(host: &SimHost, name: &str, mac_last: u8) -> anyhow::Result<(GuestSpec, VifPaths)> {
    let spec = host.create_domain(name, DomainConfig::default())?;
    let vif =
        VifSpec { handle: Some(0), mac: Some([0x00, 0x16, 0x3e, 0x00, 0x00, mac_last]), ..VifSpec::new(spec.domid) };
    let paths = layout::attach(host.toolstack(), &vif)?;
    Ok((spec, paths))
}

fn wait_connected(host: &SimHost, backend: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while netfront_test::xenbus::read_state(host.toolstack(), backend)? != Some(XenbusState::Connected) {
        ensure!(Instant::now() < deadline, "{backend} never Connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn hostile_modes_against_the_daemon() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let host = SimHost::start_temp()?;
    let mut daemon = spawn_child_with_stdin("child_daemon", [(ENV_SIM_DIR, host.dir().display().to_string())])?;
    let control = host.dir().join(CONTROL);
    let deadline = Instant::now() + WAIT;
    while netback::control::list(&control).is_err() {
        ensure!(Instant::now() < deadline, "the daemon never answered on {}", control.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut children = Children::default();

    // A well-behaved guest that answers ARP and ping.
    let (peer, peer_vif) = domain(&host, "peer", 9)?;
    children.0.push(
        Command::new(BIN)
            .envs(peer.env())
            .args(["--sim", "--ip", PEER_IP, "--receive", "60"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_connected(&host, &peer_vif.backend)?;

    for (i, mode) in (1u8..).zip(Mode::ALL) {
        let (spec, vif) = domain(&host, mode.name(), i)?;
        let mut args = vec!["--sim", "--ip", "10.0.0.8", "--timeout", "10", "--hostile", mode.name()];
        if !mode.expects_disabled() {
            args.extend(["--ping", PEER_IP, "--count", "2"]);
        }
        let out = Command::new(BIN).envs(spec.env()).args(&args).output()?;
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("{mode}: {}", stdout.lines().find(|l| l.starts_with("hostile ")).unwrap_or("no hostile line"));
        ensure!(out.status.success(), "{mode}: {}\n{stdout}\n{stderr}", out.status);
        ensure!(stdout.contains(&format!("hostile {mode}: ")), "{mode}: no report line in\n{stdout}");
        if mode.expects_disabled() {
            ensure!(stdout.contains(", error \""), "{mode}: no error node reported\n{stdout}");
        } else {
            ensure!(stdout.contains("2 sent, 2 answered"), "{mode}: the vif stopped working\n{stdout}");
        }
        ensure!(daemon.try_wait()?.is_none(), "the daemon exited after {mode}");
        // The domain ended with its process; remove its directories as `xl destroy` does.
        // The daemon must let go of the vif and keep running.
        host.toolstack().rm(&vif.backend)?;
        host.toolstack().rm(&format!("/local/domain/{}", spec.domid))?;
        std::thread::sleep(Duration::from_millis(100));
        ensure!(daemon.try_wait()?.is_none(), "the daemon exited when the vif of {mode} was removed");
    }

    drop(children);
    drop(daemon.stdin.take());
    let status = wait_child(&mut daemon, WAIT)?;
    ensure!(status.success(), "daemon exit: {status}");
    Ok(())
}
