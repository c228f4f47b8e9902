//! The daemon's control socket: a unix stream socket carrying one JSON request per line
//! and one JSON response per line. `nbctl list`/`stats` and `nbctl sim` read per-vif state
//! and counters through it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::port::PortStats;
use crate::vif::{KnobValues, PartialKnobs, VifId, VifStats};

/// How long [`call`] waits for the answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// File name of the control socket inside a simulated host's directory.
pub const SIM_SOCKET_NAME: &str = "netback.sock";

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Every vif the daemon knows, with its state, counters and knobs.
    List,
    /// As [`Request::List`] (answered [`Response::Vifs`]); what `nbctl stats` samples.
    Stats,
    /// Changes knobs while traffic runs; answered [`Response::Knobs`] with the new values,
    /// or [`Response::Error`] (nothing changed) if a value is invalid or the vif unknown.
    Set {
        /// One vif; `None` changes every vif and the defaults of vifs probed later.
        #[serde(default)]
        vif: Option<VifId>,
        /// The knobs to change.
        knobs: PartialKnobs,
    },
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
    /// Answer to [`Request::Set`]: the knobs now in force.
    Knobs {
        /// The defaults of vifs probed from now on.
        defaults: KnobValues,
        /// Every vif changed, with all its knobs.
        vifs: Vec<VifKnobs>,
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
    /// The vif's knobs now.
    #[serde(default)]
    pub knobs: KnobValues,
}

/// One vif's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VifKnobs {
    /// The vif.
    pub id: VifId,
    /// All its knobs.
    pub knobs: KnobValues,
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
    /// The daemon answered with another kind of response than the request calls for.
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
}

/// Sends one request to the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let stream =
        UnixStream::connect(path).map_err(|source| ControlError::Connect { path: path.to_path_buf(), source })?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(ControlError::Io)?;
    let mut line = serde_json::to_string(request).map_err(ControlError::Decode)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(ControlError::Io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(ControlError::Io)?;
    if answer.is_empty() {
        return Err(ControlError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the socket")));
    }
    serde_json::from_str(&answer).map_err(ControlError::Decode)
}

/// [`Request::List`]: every vif, sorted by id.
pub fn list(path: &Path) -> Result<Vec<VifReport>, ControlError> {
    match call(path, &Request::List)? {
        Response::Vifs { vifs } => Ok(vifs),
        Response::Error { message } => Err(ControlError::Refused(message)),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// [`Request::Set`]: the defaults and the changed vifs' knobs.
pub fn set(path: &Path, vif: Option<VifId>, knobs: PartialKnobs) -> Result<(KnobValues, Vec<VifKnobs>), ControlError> {
    match call(path, &Request::Set { vif, knobs })? {
        Response::Knobs { defaults, vifs } => Ok((defaults, vifs)),
        Response::Error { message } => Err(ControlError::Refused(message)),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Answers one decoded request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The serving side: a thread accepting connections on a unix socket, and one thread per
/// connection answering its lines. Dropping it stops the threads and removes the socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<EventFd>,
    conns: Arc<Mutex<HashMap<u64, UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file; failing with `AddrInUse` if another
    /// daemon answers on it) and starts serving requests with `handler`.
    pub fn bind(path: &Path, handler: Handler) -> io::Result<ControlServer> {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "another daemon answers on this socket"));
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?);
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let (s, c) = (stop.clone(), conns.clone());
        let thread = std::thread::Builder::new()
            .name("netback-control".into())
            .spawn(move || accept_loop(&listener, &s, &c, &handler))?;
        Ok(ControlServer { path: path.to_path_buf(), stop, conns, thread: Some(thread) })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for stream in lock(&self.conns).values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Conns = Arc<Mutex<HashMap<u64, UnixStream>>>;

fn accept_loop(listener: &UnixListener, stop: &EventFd, conns: &Conns, handler: &Handler) {
    let mut next_id = 0u64;
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return tracing::warn!(error = %e, "control socket: poll failed"),
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    break;
                }
            };
            next_id += 1;
            let id = next_id;
            let Ok(clone) = stream.set_nonblocking(false).and_then(|()| stream.try_clone()) else { continue };
            lock(conns).insert(id, clone);
            let (conns, handler) = (conns.clone(), handler.clone());
            let spawned = std::thread::Builder::new().name("netback-control-conn".into()).spawn(move || {
                serve_connection(stream, &handler);
                lock(&conns).remove(&id);
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "control socket: cannot start a connection thread");
            }
        }
    }
}

/// Answers every line of one connection until it closes; a malformed line gets an error
/// answer and the connection stays usable.
fn serve_connection(stream: UnixStream, handler: &Handler) {
    let mut writer = &stream;
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handler(&request),
            Err(e) => Response::Error { message: format!("malformed request: {e}") },
        };
        let Ok(mut out) = serde_json::to_string(&response) else { return };
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
