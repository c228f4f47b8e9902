//! The netback daemon: watches `backend/vif` in xenstore, runs one [`crate::xenbus`] state
//! machine per vif, plugs each connected vif's worker into the embedded switch, and serves
//! the control socket ([`crate::control`]).
//!
//! One thread runs the xenstore side (watch events, state changes, teardown); each
//! connected vif has its own worker thread (see [`crate::vif`]). The workers need no
//! xenstore: when the connection to xenstored is lost, they keep running while the
//! xenstore thread reconnects ([`Reconnect`]) and re-evaluates every vif.

mod events;
mod knobs;
mod reconnect;
mod scope;
mod status;
mod uplink;
mod vif;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use grant::sim::Credentials;
use grant::{DomId, EventChannels, GrantOps};
use xenstore::Client;

use crate::control::ControlServer;
use crate::switch::{Switch, SwitchConfig};
use crate::vif::{DatapathConfig, KnobValues};

pub use self::knobs::KNOBS_DIR;
pub use self::reconnect::{Reconnect, ReconnectDefault, ReconnectSim};

/// Where the daemon serves its control socket on a real Xen host unless told otherwise.
pub const XEN_CONTROL_SOCKET: &str = "/run/netback/netback.sock";
pub use self::uplink::{UplinkMode, VifUplink};

/// Settings of the daemon. The default is Dom0's daemon with default tunables and no
/// control socket.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// Our own domain id (the backend domain, 0 for Dom0).
    pub backend_domid: DomId,
    /// Embedded switch tunables.
    pub switch: SwitchConfig,
    /// Data-path configuration given to every vif (its `tx_batch`/`rx_batch` are ignored:
    /// the knobs rule).
    pub datapath: DatapathConfig,
    /// The knobs every vif starts with (changed at run time by a control `Set` without a
    /// vif, and per vif by the backend's `netback-knobs/` nodes at connect).
    pub knobs: KnobValues,
    /// Where to serve the control socket; `None` serves none.
    pub control_socket: Option<PathBuf>,
    /// How each vif's uplink is chosen (the embedded switch by default).
    pub uplink: UplinkMode,
    /// Where each connected vif's state file lives, so that a restarted daemon takes the
    /// vif over without a reconnect (`docs/restart.md`); `None` keeps none. The daemon
    /// binary keeps them in [`XEN_STATE_DIR`] or `<sim dir>/`[`SIM_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    /// On stop, leave every connected vif that has a state file to the next daemon process
    /// (no Closing, the state files and persistent TAPs kept) instead of closing it.
    pub keep_vifs_on_exit: bool,
}

/// The state directory on a real Xen host unless told otherwise (a tmpfs).
pub const XEN_STATE_DIR: &str = "/run/netback/vifs";
/// The state directory inside a simulated host's directory.
pub const SIM_STATE_DIR: &str = "netback-vifs";

/// Failures that stop the daemon as a whole (a single vif's failure never does).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Setting a watch the daemon cannot run without.
    #[error("watching {path}")]
    Watch {
        /// The watched path.
        path: String,
        /// Why it failed.
        #[source]
        source: xenstore::XsError,
    },
    /// Reading the `backend/vif` tree.
    #[error("reading {path}")]
    ReadBackendTree {
        /// The path.
        path: String,
        /// Why it failed.
        #[source]
        source: xenstore::XsError,
    },
    /// Binding the control socket.
    #[error("serving the control socket {path}")]
    ControlSocket {
        /// The socket path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The initial knobs are invalid.
    #[error("invalid knobs")]
    Knobs(#[source] crate::vif::KnobError),
    /// Waiting for events.
    #[error("polling the daemon's event sources")]
    Poll(#[source] std::io::Error),
    /// Joining the simulated host as Dom0 ([`run_sim`]).
    #[error("joining the simulated host in {dir}")]
    JoinSimHost {
        /// The host directory.
        dir: PathBuf,
        /// Why it failed.
        #[source]
        source: simhost::SimHostError,
    },
}

/// Runs the daemon until `stop` becomes readable (an eventfd written by a signal handler
/// thread, or a signalfd), then stops every worker, tells each connected frontend
/// `Closing` (or, with [`DaemonConfig::keep_vifs_on_exit`], leaves it to the next process),
/// and returns.
///
/// `xs` is the daemon's xenstore connection; should it be lost, `reconnect` opens the next
/// one (retried with a backoff for as long as it fails) while every worker keeps running.
pub fn run<G, R>(
    grants: G,
    xs: Client,
    reconnect: R,
    config: DaemonConfig,
    stop: BorrowedFd<'_>,
) -> Result<(), DaemonError>
where
    G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    R: Reconnect + 'static,
{
    config.knobs.validate().map_err(DaemonError::Knobs)?;
    let switch = Switch::new(config.switch.clone());
    let status = status::StatusMap::default();
    let knobs = knobs::KnobRegistry::new(config.knobs);
    // Dropped (socket removed) when this function returns, after the vifs are stopped.
    let _control = match &config.control_socket {
        Some(path) => {
            let (status, switch, knobs) = (status.clone(), switch.clone(), knobs.clone());
            let handler =
                Arc::new(move |request: &crate::control::Request| status::answer(&status, &switch, &knobs, request));
            let server = ControlServer::bind(path, handler)
                .map_err(|source| DaemonError::ControlSocket { path: path.clone(), source })?;
            tracing::info!(path = %path.display(), "control socket listening");
            Some(server)
        }
        None => None,
    };
    events::Daemon::new(xs, Box::new(reconnect), grants, config, switch, status, knobs)?.run(stop)
}

/// Joins the simulated host in `dir` as Dom0 and runs the daemon there (see [`run`]); a
/// lost xenstore connection is replaced through the host's xenstored socket
/// ([`ReconnectSim`]).
pub fn run_sim(dir: &Path, config: DaemonConfig, stop: BorrowedFd<'_>) -> Result<(), DaemonError> {
    let session = simhost::join(dir, Credentials::Dom0)
        .map_err(|source| DaemonError::JoinSimHost { dir: dir.to_path_buf(), source })?;
    let config = DaemonConfig { backend_domid: session.domid(), ..config };
    run(session.domain, session.xenstore, ReconnectSim::new(dir), config, stop)
}
