//! Shared by the scatter-gather tests: the toolstack's vif layout, a guest child process
//! told its scenario by `NF_MODE`, and a minimal backend in the test process driven by a
//! `serve` step (see `sg_backend` for the loop-back one).
#![allow(dead_code)]

pub mod sg_backend;

use anyhow::{Context, ensure};
use dom0_tools::layout::{self, VifSpec};
use grant::sim::{Credentials, DomainConfig, SimEventChannel};
use grant::{Access, DomId, EventChannel, EventChannels, GrantMapping, GrantOps};
use netback_e2e::{spawn_child, wait_child};
use netfront_test::XenbusState;
use netif::{BackRing, RxRing, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::{Session, SimHost};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use xenstore::Client;

pub const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56];
pub const WAIT: Duration = Duration::from_secs(60);
/// The environment variable naming the guest's scenario.
pub const MODE: &str = "NF_MODE";

/// The connected backend end: both rings mapped, the event channel bound.
#[derive(Debug)]
pub struct Backend {
    pub dom0: Session,
    pub guest: DomId,
    pub tx: BackRing<TxRing, GrantMapping>,
    pub rx: BackRing<RxRing, GrantMapping>,
    pub channel: SimEventChannel,
    /// The frontend's keys, as published with Connected.
    pub frontend_keys: Vec<(String, String)>,
}

impl Backend {
    /// One of the frontend's keys.
    pub fn key(&self, key: &str) -> Option<&str> {
        self.frontend_keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The toolstack's layout for vif `<domid>/0`, as `nbctl attach` writes it (netif.md §1.1):
/// guest-owned frontend dir, dom0-owned backend dir readable by the guest.
pub fn write_vif_layout(xs: &Client, domid: DomId) -> anyhow::Result<(String, String)> {
    let spec = VifSpec { handle: Some(0), mac: Some(GUEST_MAC), ..VifSpec::new(domid) };
    let paths = layout::attach(xs, &spec)?;
    Ok((paths.frontend, paths.backend))
}

pub fn state_of(xs: &Client, dir: &str) -> anyhow::Result<Option<XenbusState>> {
    Ok(netfront_test::xenbus::read_state(xs, dir)?)
}

pub fn wait_state(xs: &Client, dir: &str, want: XenbusState) -> anyhow::Result<()> {
    wait_state_within(xs, dir, want, WAIT)
}

/// Waits until `<dir>/state` is `want`, each wait for a change at most `limit`.
pub fn wait_state_within(xs: &Client, dir: &str, want: XenbusState, limit: Duration) -> anyhow::Result<()> {
    let watch = xs.watch(&format!("{dir}/state"), None)?;
    while state_of(xs, dir)? != Some(want) {
        watch.recv_timeout(limit)?.with_context(|| format!("{dir} never reached {want}"))?;
    }
    Ok(())
}

/// Runs the guest test `child` (scenario `mode`) against a backend advertising
/// `feature-rx-copy` plus `features` (e.g. `feature-sg`), calling `serve` until the
/// frontend says Closing. `serve` returns whether it moved anything; when it did not, the
/// loop arms both rings' request events and sleeps on the event channel. `check` sees the
/// backend once connected (e.g. to check the frontend's keys). Returns the backend.
pub fn run(
    child: &str,
    mode: &str,
    features: &[&str],
    check: impl FnOnce(&Backend) -> anyhow::Result<()>,
    mut serve: impl FnMut(&mut Backend) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let host = SimHost::start_temp()?;
    let guest = host.create_domain("netfront", DomainConfig::default())?;
    let (fe, be) = write_vif_layout(host.toolstack(), guest.domid)?;
    let env = guest.env().into_iter().chain([(MODE, mode.to_owned())]);
    let mut child = spawn_child(child, env)?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let xs = dom0.xenstore.clone();
    for key in ["feature-rx-copy"].iter().chain(features) {
        xs.write(&format!("{be}/{key}"), "1")?;
    }
    xs.write(&format!("{be}/state"), XenbusState::InitWait.value())?;
    wait_state(&xs, &fe, XenbusState::Connected)?;
    let mut frontend_keys = Vec::new();
    for key in xs.directory(&fe)? {
        let value = xs.read_string(&format!("{fe}/{key}"))?;
        frontend_keys.push((key, value));
    }
    let read = |key: &str| -> anyhow::Result<u32> { Ok(xs.read_string(&format!("{fe}/{key}"))?.trim().parse()?) };
    let tx = BackRing::attach(dom0.domain.map(guest.domid, read("tx-ring-ref")?, Access::ReadWrite)?)?;
    let rx = BackRing::attach(dom0.domain.map(guest.domid, read("rx-ring-ref")?, Access::ReadWrite)?)?;
    let channel = dom0.domain.bind_interdomain(guest.domid, read("event-channel")?)?;
    let mut backend = Backend { dom0, guest: guest.domid, tx, rx, channel, frontend_keys };
    check(&backend)?;
    let fe_watch = xs.watch(&format!("{fe}/state"), None)?;
    xs.write(&format!("{be}/state"), XenbusState::Connected.value())?;

    let deadline = Instant::now() + WAIT;
    loop {
        ensure!(Instant::now() < deadline, "backend timed out");
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("guest process exited early: {status}");
        }
        let moved = serve(&mut backend)?;
        // Push both rings (no short-circuit), notify once if either asks.
        let (notify_tx, notify_rx) =
            (backend.tx.push_responses_and_check_notify(), backend.rx.push_responses_and_check_notify());
        if notify_tx || notify_rx {
            backend.channel.notify()?;
        }
        if moved {
            continue;
        }
        let (more_tx, more_rx) = (backend.tx.final_check_for_requests(), backend.rx.final_check_for_requests());
        if fe_watch.try_recv()?.is_some() && state_of(&xs, &fe)? == Some(XenbusState::Closing) {
            break;
        }
        if more_tx && more_rx {
            continue;
        }
        let mut fds =
            [PollFd::new(backend.channel.as_fd(), PollFlags::POLLIN), PollFd::new(fe_watch.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(20u16))? > 0 {
            backend.channel.take_pending()?;
            backend.channel.unmask()?;
        }
    }
    drop(backend);
    xs.write(&format!("{be}/state"), XenbusState::Closing.value())?;
    wait_state(&xs, &fe, XenbusState::Closed)?;
    xs.write(&format!("{be}/state"), XenbusState::Closed.value())?;
    let status = wait_child(&mut child, WAIT)?;
    ensure!(status.success(), "guest process failed: {status}");
    Ok(())
}
