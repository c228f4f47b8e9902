//! The netback daemon: watches `backend/vif` in xenstore, runs one [`crate::xenbus`] state
//! machine per vif, plugs each connected vif's worker into the embedded switch, and serves
//! the control socket ([`crate::control`]).
//!
//! One thread runs the xenstore side (watch events, state changes, teardown); each
//! connected vif has its own worker thread (see [`crate::vif`]).

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use grant::{DomId, EventChannels, GrantOps};
use xenstore::Client;

use crate::switch::SwitchConfig;
use crate::vif::DatapathConfig;

/// Settings of the daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Our own domain id (the backend domain, 0 for Dom0).
    pub backend_domid: DomId,
    /// Embedded switch tunables.
    pub switch: SwitchConfig,
    /// Data-path tunables given to every vif.
    pub datapath: DatapathConfig,
    /// Where to serve the control socket; `None` serves none.
    pub control_socket: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            backend_domid: 0,
            switch: SwitchConfig::default(),
            datapath: DatapathConfig::default(),
            control_socket: None,
        }
    }
}

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
    /// Waiting for events.
    #[error("polling the daemon's event sources")]
    Poll(#[source] std::io::Error),
}

/// Runs the daemon until `stop` becomes readable (an eventfd written by a signal handler
/// thread, or a signalfd), then stops every worker, tells each connected frontend
/// `Closing`, and returns.
pub fn run<G>(grants: G, xs: Client, config: DaemonConfig, stop: BorrowedFd<'_>) -> Result<(), DaemonError>
where
    G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
{
    let _ = (grants, xs, config, stop);
    todo!()
}
