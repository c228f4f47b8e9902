//! The daemon lab shared by the end-to-end tests: a simulated host in the test process,
//! the netback daemon in a child process, guests in child processes running netfront-test.
//!
//! Each test binary that uses it declares the child roles with [`child_roles!`]. The guest
//! roles are driven by environment variables and talk to the test through their own
//! xenstore `data/` directory (the test is dom0 and may read and write it):
//! * `data/start` (written by the test): begin; its value is the peer's MAC (or `ff:…`);
//! * `data/stop` (test): stop sending; the guest answers with `data/sent` = frames sent;
//! * `data/expect` (test): how many frames of the peer's flow to wait for;
//! * `data/report` (guest): `received lost reordered duplicated corrupt` of the peer's flow.
#![allow(dead_code)]

pub mod guest;

use anyhow::{Context, bail, ensure};
use dom0_tools::layout::{self, VifPaths, VifSpec};
use grant::DomId;
use grant::sim::DomainConfig;
use netback::control::VifReport;
use netback::daemon::DaemonConfig;
use netback::xenbus::XenbusState;
use netback_e2e::{spawn_child, spawn_child_with_stdin, wait_child};
use netfront_test::mac::format_mac;
use simhost::{ENV_SIM_DIR, GuestSpec, SimHost};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use xenstore::Client;

/// How long any step may take.
pub const WAIT: Duration = Duration::from_secs(30);
/// The control socket's file name in the host directory.
pub const CONTROL: &str = "netback.sock";

/// Declares the `#[ignore]`d child tests the lab starts: `child_daemon` and `child_guest`,
/// which runs [`guest::run`] or the guest role given (`child_roles!(my_guest)`).
#[macro_export]
macro_rules! child_roles {
    () => {
        child_roles!(common::guest::run);
    };
    ($guest:path) => {
        #[test]
        #[ignore = "child process: the netback daemon of a lab"]
        fn child_daemon() {
            if netback_e2e::is_child() {
                common::run_daemon().expect("daemon");
            }
        }

        #[test]
        #[ignore = "child process: a guest of a lab"]
        fn child_guest() {
            if netback_e2e::is_child() {
                $guest().expect("guest");
            }
        }
    };
}

/// The daemon role: joins the host as dom0 and runs until stdin reaches end-of-file.
pub fn run_daemon() -> anyhow::Result<()> {
    run_daemon_with(DaemonConfig::default())
}

/// [`run_daemon`] with another configuration (its control socket is the lab's; it keeps
/// state files in the lab's directory, as the daemon binary does, unless told otherwise).
pub fn run_daemon_with(config: DaemonConfig) -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var_os(ENV_SIM_DIR).context("NETBACK_SIM_DIR")?);
    let _ = tracing_subscriber_init();
    let state_dir = config.state_dir.clone().or_else(|| Some(dir.join(netback::daemon::SIM_STATE_DIR)));
    let config = DaemonConfig { control_socket: Some(dir.join(CONTROL)), state_dir, ..config };
    let stdin = std::io::stdin();
    netback::daemon::run_sim(&dir, config, stdin.as_fd())?;
    Ok(())
}

fn tracing_subscriber_init() -> Option<()> {
    let filter = std::env::var("RUST_LOG").ok()?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init().ok()
}

/// A running lab: host, daemon, and the guests started so far.
#[derive(Debug)]
pub struct Lab {
    pub host: SimHost,
    daemon: Child,
    /// The `#[ignore]`d child test the daemon runs as.
    daemon_role: String,
    guests: Vec<Child>,
}

impl Lab {
    /// Starts the host and the daemon, and waits until the daemon answers on its socket.
    pub fn start() -> anyhow::Result<Lab> {
        Lab::start_with("child_daemon")
    }

    /// [`Lab::start`] with the daemon run by another `#[ignore]`d child test.
    pub fn start_with(daemon_role: &str) -> anyhow::Result<Lab> {
        Lab::start_with_env(daemon_role, &[])
    }

    /// [`Lab::start_with`], with extra environment variables for the daemon.
    pub fn start_with_env(daemon_role: &str, env: &[(&'static str, String)]) -> anyhow::Result<Lab> {
        let host = SimHost::start_temp()?;
        let daemon = spawn_daemon(&host, daemon_role, env)?;
        let lab = Lab { host, daemon, daemon_role: daemon_role.to_owned(), guests: Vec::new() };
        lab.wait_daemon_answers()?;
        Ok(lab)
    }

    fn wait_daemon_answers(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while netback::control::list(&self.control()).is_err() {
            ensure!(Instant::now() < deadline, "the daemon never answered on {}", self.control().display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the daemon as [`Lab::stop`] does (end-of-file on its stdin) and waits for it,
    /// leaving the guests running.
    pub fn stop_daemon(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.daemon.stdin.take());
        Ok(wait_child(&mut self.daemon, WAIT)?)
    }

    /// Kills the daemon with SIGKILL (it cleans nothing up) and waits for it.
    pub fn kill_daemon(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.daemon.kill()?;
        Ok(self.daemon.wait()?)
    }

    /// Waits up to `limit` for the daemon to end on its own (e.g. at a crash point).
    pub fn wait_daemon_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.daemon.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "the daemon still runs after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the daemon again after it died, with extra environment variables, and waits
    /// until it answers.
    pub fn restart_daemon(&mut self, env: &[(&'static str, String)]) -> anyhow::Result<()> {
        ensure!(self.daemon.try_wait()?.is_some(), "the daemon still runs");
        self.daemon = spawn_daemon(&self.host, &self.daemon_role, env)?;
        self.wait_daemon_answers()
    }

    /// The daemon's state directory (as [`run_daemon_with`] sets it).
    pub fn state_dir(&self) -> PathBuf {
        self.host.dir().join(netback::daemon::SIM_STATE_DIR)
    }

    pub fn xs(&self) -> &Client {
        self.host.toolstack()
    }

    pub fn control(&self) -> PathBuf {
        self.host.dir().join(CONTROL)
    }

    /// The daemon's pid, to look at its file descriptors.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.id()
    }

    /// Creates a domain and attaches vif `<domid>/0` with MAC `00:16:3e:00:00:<domid>`.
    pub fn domain(&self, name: &str) -> anyhow::Result<(GuestSpec, VifPaths)> {
        let spec = self.host.create_domain(name, DomainConfig::default())?;
        let vif = VifSpec { handle: Some(0), mac: Some(mac_of(spec.domid)), ..VifSpec::new(spec.domid) };
        let paths = layout::attach(self.xs(), &vif)?;
        Ok((spec, paths))
    }

    /// Starts a guest process for `spec` in `mode` (see [`guest`]), with extra variables.
    pub fn spawn_guest(
        &mut self,
        spec: &GuestSpec,
        mode: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<usize> {
        let mut env: Vec<(&str, String)> = spec.env().into_iter().collect();
        env.push((guest::ENV_MODE, mode.to_string()));
        env.extend(extra.iter().cloned());
        self.guests.push(spawn_child("child_guest", env)?);
        Ok(self.guests.len() - 1)
    }

    /// Starts a guest process for `spec` running the `#[ignore]`d test `role`.
    pub fn spawn_role(
        &mut self,
        spec: &GuestSpec,
        role: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<usize> {
        let mut env: Vec<(&str, String)> = spec.env().into_iter().collect();
        env.extend(extra.iter().cloned());
        self.guests.push(spawn_child(role, env)?);
        Ok(self.guests.len() - 1)
    }

    /// The guest process started as number `index`.
    pub fn guest_process(&mut self, index: usize) -> &mut Child {
        &mut self.guests[index]
    }

    /// Waits for guest process `index` and requires a zero exit.
    pub fn wait_guest(&mut self, index: usize) -> anyhow::Result<()> {
        let status = wait_child(&mut self.guests[index], WAIT)?;
        ensure!(status.success(), "guest process {index} failed: {status}");
        Ok(())
    }

    /// Waits until `<dir>/state` is `want`.
    pub fn wait_state(&self, dir: &str, want: XenbusState) -> anyhow::Result<()> {
        wait_node(self.xs(), &format!("{dir}/state"), |v| v.and_then(XenbusState::parse) == Some(want))
            .with_context(|| format!("{dir} never reached {want}"))
    }

    /// The daemon's report of vif `<domid>/0`.
    pub fn report(&self, domid: DomId) -> anyhow::Result<Option<VifReport>> {
        let vifs = netback::control::list(&self.control())?;
        Ok(vifs.into_iter().find(|v| v.id.domid == domid && v.id.handle == 0))
    }

    /// Writes `data/<key>` of a guest.
    pub fn tell(&self, domid: DomId, key: &str, value: &str) -> anyhow::Result<()> {
        Ok(self.xs().write(&format!("/local/domain/{domid}/data/{key}"), value)?)
    }

    /// Waits for `data/<key>` of a guest and returns it.
    pub fn hear(&self, domid: DomId, key: &str) -> anyhow::Result<String> {
        let path = format!("/local/domain/{domid}/data/{key}");
        wait_node(self.xs(), &path, |v| v.is_some()).with_context(|| format!("guest {domid} never wrote {key}"))?;
        Ok(self.xs().read_string(&path)?)
    }

    /// Starts a pair of `peer` guests sending to each other at 1500 frames/s (they are
    /// guest processes 0 and 1 when started first); returns their domids.
    pub fn start_pair(&mut self) -> anyhow::Result<(DomId, DomId)> {
        self.start_pair_with(&[])
    }

    /// [`Lab::start_pair`] with extra environment variables for both guests.
    pub fn start_pair_with(&mut self, extra: &[(&'static str, String)]) -> anyhow::Result<(DomId, DomId)> {
        let (a, vif_a) = self.domain("pair-a")?;
        let (b, vif_b) = self.domain("pair-b")?;
        let mut env = vec![(guest::ENV_RATE, "1500".to_string())];
        env.extend(extra.iter().cloned());
        self.spawn_guest(&a, "peer", &env)?;
        self.spawn_guest(&b, "peer", &env)?;
        self.wait_state(&vif_a.backend, XenbusState::Connected)?;
        self.wait_state(&vif_b.backend, XenbusState::Connected)?;
        self.tell(a.domid, "start", &format_mac(&mac_of(b.domid)))?;
        self.tell(b.domid, "start", &format_mac(&mac_of(a.domid)))?;
        Ok((a.domid, b.domid))
    }

    /// Stops a `peer`-mode pair and checks that each received everything the other sent,
    /// intact and in order. Returns the frames each sent.
    pub fn finish_pair(&self, a: DomId, b: DomId) -> anyhow::Result<(u64, u64)> {
        self.tell(a, "stop", "1")?;
        self.tell(b, "stop", "1")?;
        let sent_a: u64 = self.hear(a, "sent")?.parse()?;
        let sent_b: u64 = self.hear(b, "sent")?.parse()?;
        self.tell(a, "expect", &sent_b.to_string())?;
        self.tell(b, "expect", &sent_a.to_string())?;
        for (me, peer_sent) in [(a, sent_b), (b, sent_a)] {
            let report = guest::PeerReport::parse(&self.hear(me, "report")?)?;
            ensure!(
                report.is_perfect(peer_sent),
                "guest {me} received {report:?} of the {peer_sent} frames its peer sent"
            );
        }
        ensure!(sent_a > 0 && sent_b > 0, "a pair sent nothing ({sent_a}, {sent_b})");
        Ok((sent_a, sent_b))
    }

    /// Ends the daemon (end-of-file on its stdin) and requires a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        drop(self.daemon.stdin.take());
        let status = wait_child(&mut self.daemon, WAIT)?;
        ensure!(status.success(), "daemon exit: {status}");
        for (i, guest) in self.guests.iter_mut().enumerate() {
            if guest.try_wait()?.is_none() {
                let _ = guest.kill();
                bail!("guest process {i} was still running at the end of the test");
            }
        }
        Ok(())
    }
}

fn spawn_daemon(host: &SimHost, role: &str, env: &[(&'static str, String)]) -> std::io::Result<Child> {
    let mut all = vec![(ENV_SIM_DIR, host.dir().display().to_string())];
    all.extend(env.iter().cloned());
    spawn_child_with_stdin(role, all)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.guests.iter_mut().chain([&mut self.daemon]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The MAC the lab gives domain `domid`.
pub fn mac_of(domid: DomId) -> [u8; 6] {
    let [hi, lo] = domid.to_be_bytes();
    [0x00, 0x16, 0x3e, 0x00, hi, lo]
}

/// Waits (watch + deadline) until `accept` takes the value of `path` (`None`: missing).
pub fn wait_node(xs: &Client, path: &str, accept: impl Fn(Option<&str>) -> bool) -> anyhow::Result<()> {
    let watch = xs.watch(path, None)?;
    let deadline = Instant::now() + WAIT;
    loop {
        let value = match xs.read_string(path) {
            Ok(v) => Some(v),
            Err(e) if e.is_enoent() => None,
            Err(e) => return Err(e.into()),
        };
        if accept(value.as_deref()) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "timed out waiting on {path} (last value {value:?})");
        watch.recv_timeout(left)?;
    }
}

/// What the open file descriptors of process `pid` point at (`readlink`), sorted.
pub fn fd_targets(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed while we look is simply gone.
        if let Ok(target) = std::fs::read_link(entry?.path()) {
            targets.push(target.display().to_string());
        }
    }
    targets.sort();
    Ok(targets)
}
