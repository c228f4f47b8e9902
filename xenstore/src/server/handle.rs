//! [`ServerHandle`]: the unix-socket listener of a [`Xenstored`], which can stop and
//! start listening again (a xenstored that is down, then back) and shuts down for good.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{Xenstored, conn};

/// A running unix-socket listener. Dropping it shuts it down.
#[derive(Debug)]
pub struct ServerHandle {
    daemon: Arc<Xenstored>,
    path: PathBuf,
    state: Mutex<ListenState>,
}

/// Invariant: `listener` is `Some` exactly while the socket file exists and is accepted
/// on; once `shut_down` is set it stays `None`.
#[derive(Debug)]
struct ListenState {
    listener: Option<Listener>,
    shut_down: bool,
}

/// The accepting thread and the eventfd that stops it.
#[derive(Debug)]
struct Listener {
    stop: Arc<EventFd>,
    thread: JoinHandle<()>,
}

impl Listener {
    fn start(daemon: &Arc<Xenstored>, path: &Path) -> io::Result<Listener> {
        let listener = match UnixListener::bind(path) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && UnixStream::connect(path).is_err() => {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            other => other?,
        };
        listener.set_nonblocking(true)?;
        let stop = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
        let (daemon, thread_stop) = (daemon.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("xenstored-listen".into())
            .spawn(move || conn::listen(daemon, listener, thread_stop))?;
        tracing::debug!(path = %path.display(), "xenstored listening");
        Ok(Listener { stop, thread })
    }

    /// Stops accepting and removes the socket file.
    fn stop(self, path: &Path) {
        let _ = self.stop.write(1);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(path);
    }
}

impl ServerHandle {
    pub(super) fn start(daemon: Arc<Xenstored>, path: &Path) -> io::Result<ServerHandle> {
        let listener = Listener::start(&daemon, path)?;
        let state = ListenState { listener: Some(listener), shut_down: false };
        Ok(ServerHandle { daemon, path: path.to_owned(), state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, ListenState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The daemon being served.
    pub fn daemon(&self) -> &Arc<Xenstored> {
        &self.daemon
    }

    /// Stops accepting and removes the socket file, as when xenstored is down: connecting
    /// fails until [`ServerHandle::resume`]. Live connections are kept (cut them with
    /// [`Xenstored::drop_connection`]). Idempotent.
    pub fn pause(&self) {
        if let Some(listener) = self.lock().listener.take() {
            listener.stop(&self.path);
        }
    }

    /// Listens on the socket again after [`ServerHandle::pause`] (nothing if listening).
    ///
    /// # Errors
    /// Binding the socket failed, or the handle was shut down.
    pub fn resume(&self) -> io::Result<()> {
        let mut st = self.lock();
        if st.shut_down {
            return Err(io::Error::other("the xenstored listener was shut down"));
        }
        if st.listener.is_none() {
            st.listener = Some(Listener::start(&self.daemon, &self.path)?);
        }
        Ok(())
    }

    /// Stops accepting, removes the socket file and closes every
    /// connection of the daemon. Idempotent.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        if st.shut_down {
            return;
        }
        st.shut_down = true;
        if let Some(listener) = st.listener.take() {
            listener.stop(&self.path);
        }
        drop(st);
        self.daemon.close_all_connections();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
