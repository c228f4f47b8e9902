//! The daemon's control socket: a unix stream socket carrying one JSON request per line
//! and one JSON response per line. `nbctl list`/`stats` and `nbctl sim` read per-vif state
//! and counters through it.

use std::path::Path;

use crate::port::PortStats;
use crate::vif::{VifId, VifStats};

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Every vif the daemon knows, with its state and counters.
    List,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to [`Request::List`], sorted by vif id.
    Vifs {
        /// One entry per vif.
        vifs: Vec<VifReport>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// One vif as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VifReport {
    /// Domain and handle.
    pub id: VifId,
    /// Its interface / switch port name (`vif<domid>.<handle>`).
    pub name: String,
    /// Our (backend) xenbus state, as a number (`XenbusState as u32`).
    pub state: u32,
    /// The frontend's last seen state, as a number; `None` if unreadable.
    pub frontend_state: Option<u32>,
    /// The MAC from the backend directory, `None` if missing or unparsable.
    pub mac: Option<String>,
    /// The message written to the `error` node when the vif was disabled.
    pub error: Option<String>,
    /// Data-path counters (cumulative over reconnects).
    pub stats: VifStats,
    /// The switch port's counters while connected.
    pub port: Option<PortStats>,
}

/// Failures of the control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting to the socket.
    #[error("connecting to the netback control socket {path}")]
    Connect {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request or reading the answer.
    #[error("talking to the netback daemon")]
    Io(#[source] std::io::Error),
    /// The answer was not valid JSON of the protocol.
    #[error("decoding the daemon's answer")]
    Decode(#[source] serde_json::Error),
    /// The daemon answered with an error.
    #[error("the daemon refused: {0}")]
    Refused(String),
}

/// Sends one request to the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let _ = (path, request);
    todo!()
}

/// [`Request::List`]: every vif, sorted by id.
pub fn list(path: &Path) -> Result<Vec<VifReport>, ControlError> {
    match call(path, &Request::List)? {
        Response::Vifs { vifs } => Ok(vifs),
        Response::Error { message } => Err(ControlError::Refused(message)),
    }
}
