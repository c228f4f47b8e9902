//! Shared by the daemon tests: a simulated host with the daemon running in a thread of
//! the test (joined as Dom0, stopped through an eventfd), the toolstack's vif layout, and
//! waits on xenstore watches with deadlines.
#![allow(dead_code)]

use dom0_tools::layout::{self, VifSpec};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use grant::DomId;
use grant::sim::{Credentials, DomainConfig};
use netback::control::{self, VifReport};
use netback::daemon::{self, DaemonConfig, DaemonError};
use netback::xenbus::XenbusState;
use nix::sys::eventfd::{EfdFlags, EventFd};
use simhost::{Session, SimHost};
use xenstore::Client;

/// Limit of every wait.
pub const WAIT: Duration = Duration::from_secs(20);
/// The MAC the toolstack gives every test vif (the handle is the last byte).
pub const MAC: &str = "00:16:3e:00:00:0";

/// A host and a daemon serving it.
pub struct Harness {
    pub host: SimHost,
    pub sock: PathBuf,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<Result<(), DaemonError>>>,
}

impl Harness {
    pub fn start() -> anyhow::Result<Harness> {
        let host = SimHost::start_temp()?;
        let sock = host.dir().join("netback.sock");
        Self::start_on(host, sock)
    }

    /// Starts a daemon on `host` with its control socket at `sock`.
    pub fn start_on(host: SimHost, sock: PathBuf) -> anyhow::Result<Harness> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let stop = Arc::new(new_eventfd()?);
        let thread = Some(spawn_daemon(&host, &sock, &stop)?);
        Ok(Harness { host, sock, stop, thread })
    }

    /// The toolstack's client.
    pub fn xs(&self) -> &Client {
        self.host.toolstack()
    }

    /// Creates a guest and joins it (so it counts as introduced, as on Xen).
    pub fn guest(&self, name: &str) -> anyhow::Result<Session> {
        let spec = self.host.create_domain(name, DomainConfig::default())?;
        Ok(simhost::join(self.host.dir(), Credentials::Guest { token: spec.token })?)
    }

    /// Writes the stop fd and waits for `run` to return.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.write(1)?;
        let thread = self.thread.take().context("daemon already stopped")?;
        let result = thread.join().map_err(|_| anyhow::anyhow!("daemon thread panicked"))?;
        Ok(result?)
    }

    /// Whether the daemon thread is still running.
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

pub fn new_eventfd() -> std::io::Result<EventFd> {
    Ok(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?)
}

/// Runs `daemon::run` in a thread, joined as Dom0.
pub fn spawn_daemon(
    host: &SimHost,
    sock: &std::path::Path,
    stop: &Arc<EventFd>,
) -> anyhow::Result<JoinHandle<Result<(), DaemonError>>> {
    let session = simhost::join(host.dir(), Credentials::Dom0)?;
    let config = DaemonConfig { control_socket: Some(sock.to_path_buf()), ..DaemonConfig::default() };
    let (stop, reconnect) = (stop.clone(), daemon::ReconnectSim::new(host.dir()));
    Ok(std::thread::spawn(move || daemon::run(session.domain, session.xenstore, reconnect, config, stop.as_fd())))
}

/// A vif's two directories.
#[derive(Debug, Clone)]
pub struct VifDirs {
    pub domid: DomId,
    pub handle: u32,
    pub fe: String,
    pub be: String,
}

impl VifDirs {
    /// Linux's copy of the error node.
    pub fn linux_error(&self) -> String {
        format!("/local/domain/0/error/backend/vif/{}/{}/error", self.domid, self.handle)
    }
}

/// The toolstack's layout, as `nbctl attach` writes it (netif.md §1.1): guest-owned
/// frontend dir, dom0-owned backend dir readable by the guest; `script` adds the hotplug
/// gate. The MAC is [`MAC`] followed by the handle.
pub fn write_vif_layout(xs: &Client, domid: DomId, handle: u32, script: Option<&str>) -> anyhow::Result<VifDirs> {
    let mac = netback::xenbus::parse_mac(&format!("{MAC}{handle}")).context("the test MAC")?;
    let spec =
        VifSpec { handle: Some(handle), mac: Some(mac), script: script.map(str::to_owned), ..VifSpec::new(domid) };
    let paths = layout::attach(xs, &spec)?;
    Ok(VifDirs { domid, handle, fe: paths.frontend, be: paths.backend })
}

/// Reads `path`, `None` if missing.
pub fn read(xs: &Client, path: &str) -> anyhow::Result<Option<String>> {
    match xs.read_string(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_enoent() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits (watch on `path`, deadline [`WAIT`]) until `cond` holds.
pub fn wait_until(
    xs: &Client,
    path: &str,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let watch = xs.watch(path, None)?;
    let deadline = Instant::now() + WAIT;
    while !cond()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if watch.recv_timeout(left)?.is_none() {
            bail!("timed out waiting for {what}");
        }
    }
    Ok(())
}

/// Waits until `<dir>/state` is `want`.
pub fn wait_state(xs: &Client, dir: &str, want: XenbusState) -> anyhow::Result<()> {
    let path = format!("{dir}/state");
    let last = std::cell::RefCell::new(None);
    wait_until(xs, &path, &format!("{path} = {want}"), || {
        let got = read(xs, &path)?;
        let done = got.as_deref() == Some(want.value().as_str());
        *last.borrow_mut() = got;
        Ok(done)
    })
    .with_context(|| format!("last saw {:?}", last.borrow()))
}

/// Polls the control socket (deadline [`WAIT`]) until `cond` holds for the list.
pub fn wait_list(sock: &std::path::Path, mut cond: impl FnMut(&[VifReport]) -> bool) -> anyhow::Result<Vec<VifReport>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let vifs = control::list(sock)?;
        if cond(&vifs) {
            return Ok(vifs);
        }
        if Instant::now() > deadline {
            bail!("control list never matched: {vifs:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes frontend keys as the guest.
pub fn write_keys(xs: &Client, dir: &str, keys: &[(&str, &str)]) -> anyhow::Result<()> {
    xs.transaction(|tx| {
        for (k, v) in keys {
            tx.write(&format!("{dir}/{k}"), v)?;
        }
        Ok(())
    })?;
    Ok(())
}
