//! A thread-safe xenstore client.
//!
//! One background thread reads the connection and routes replies by
//! `req_id` to the waiting caller and watch events by token to unbounded
//! per-watch queues. A caller can therefore issue requests while holding
//! any number of unread events without deadlocking.
//!
//! **Losing the connection** (xenstored closed it or restarted): the reader
//! thread sees end-of-file, fails every waiting call and closes every watch
//! queue, whose fd becomes (and stays) readable so an epoll loop wakes at once.
//! From then on every call, every new watch and every drained watch fails with
//! [`XsError::Disconnected`] ([`XsError::is_disconnected`],
//! [`Client::is_connected`]). A client never reconnects by itself: watches
//! and transactions do not survive a xenstored restart, so only the caller
//! knows what to set up again on a new [`Client`].

mod error;
mod ops;
mod shared;
mod transaction;
mod transport;
mod watch;

use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

pub use error::XsError;
pub use transaction::{MAX_TRANSACTION_ATTEMPTS, Transaction};
pub use transport::Transport;
pub use watch::{Watch, WatchEvent};

use crate::wire::{Message, MsgType, XsErrno};
use shared::{Reply, Shared};

/// Unix socket paths tried by [`Client::open_default`] after `$XENSTORED_PATH`.
pub const DEFAULT_SOCKET_PATHS: [&str; 2] = ["/run/xenstored/socket", "/var/run/xenstored/socket"];
/// The xenbus character device, the last resort of [`Client::open_default`].
pub const XENBUS_DEVICE_PATH: &str = "/dev/xen/xenbus";

/// A connection to xenstored. Cloning is cheap (an `Arc`); all clones share
/// the connection, and it closes when the last clone, [`Watch`] and
/// [`Transaction`] are gone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// The write half; the lock keeps each message contiguous on the wire.
    writer: Mutex<Transport>,
    reader: Mutex<Option<JoinHandle<()>>>,
    next_token: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop();
        self.writer.get_mut().unwrap_or_else(|p| p.into_inner()).shutdown();
        if let Some(h) = self.reader.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// Why a single request failed, before it is named after its operation.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The daemon answered `XS_ERROR`.
    Errno(XsErrno),
    /// Anything else (already a complete error).
    Fatal(XsError),
}

impl CallError {
    /// Names a daemon error after the operation; passes others through.
    pub(crate) fn into_xs(self, name: impl FnOnce(XsErrno) -> XsError) -> XsError {
        match self {
            CallError::Errno(errno) => name(errno),
            CallError::Fatal(e) => e,
        }
    }
}

impl Client {
    /// Connects to a xenstored unix socket.
    pub fn connect(path: &Path) -> Result<Client, XsError> {
        Client::from_stream(UnixStream::connect(path)?)
    }

    /// Uses an already connected stream (e.g. one end of a socketpair).
    pub fn from_stream(stream: UnixStream) -> Result<Client, XsError> {
        Client::from_transport(Transport::Socket(stream))
    }

    /// Uses any transport, e.g. an opened xenbus device.
    pub fn from_transport(transport: Transport) -> Result<Client, XsError> {
        let shared = Arc::new(Shared::new()?);
        let reader = shared::spawn_reader(shared.clone(), transport.try_clone()?)?;
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(transport),
                reader: Mutex::new(Some(reader)),
                next_token: AtomicU64::new(0),
            }),
        })
    }

    /// Connects the way the C library does: `$XENSTORED_PATH`, then
    /// [`DEFAULT_SOCKET_PATHS`], then the [`XENBUS_DEVICE_PATH`] device.
    pub fn open_default() -> Result<Client, XsError> {
        let env = std::env::var_os("XENSTORED_PATH");
        let sockets = env.iter().map(Path::new).chain(DEFAULT_SOCKET_PATHS.iter().map(Path::new));
        for path in sockets {
            match UnixStream::connect(path) {
                Ok(s) => return Client::from_stream(s),
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "xenstored socket unavailable"),
            }
        }
        let dev = File::options().read(true).write(true).open(XENBUS_DEVICE_PATH)?;
        Client::from_transport(Transport::Device(dev))
    }

    /// Whether the connection still stands. `false` once it is lost: nothing this
    /// client does will reach xenstored again (see the module documentation).
    pub fn is_connected(&self) -> bool {
        !self.inner.shared.lock().disconnected
    }

    /// Sends one request and waits for its reply; `XS_ERROR` becomes
    /// [`CallError::Errno`], a reply of another type a protocol error.
    pub(crate) fn call(&self, ty: MsgType, tx_id: u32, payload: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let (tx, rx) = mpsc::channel();
        let req_id = self.register(tx).map_err(CallError::Fatal)?;
        self.send(ty, req_id, tx_id, payload).map_err(CallError::Fatal)?;
        let Reply { msg_type, payload } = rx.recv().map_err(|_| CallError::Fatal(XsError::Disconnected))?;
        if msg_type == MsgType::Error.as_u32() {
            Err(CallError::Errno(XsErrno::from_payload(&payload)))
        } else if msg_type != ty.as_u32() {
            Err(CallError::Fatal(XsError::Protocol(format!("reply of type {msg_type} to a {ty:?} request"))))
        } else {
            Ok(payload)
        }
    }

    /// Sends a request whose reply nobody waits for (used from `Drop`).
    pub(crate) fn send_detached(&self, ty: MsgType, tx_id: u32, payload: Vec<u8>) {
        let (tx, _rx) = mpsc::channel();
        if let Ok(req_id) = self.register(tx) {
            let _ = self.send(ty, req_id, tx_id, payload);
        }
    }

    fn register(&self, tx: mpsc::Sender<Reply>) -> Result<u32, XsError> {
        let mut st = self.inner.shared.lock();
        if st.disconnected {
            return Err(XsError::Disconnected);
        }
        let id = st.alloc_req_id();
        st.pending.insert(id, tx);
        Ok(id)
    }

    fn send(&self, ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Result<(), XsError> {
        let fail = |e: XsError| {
            self.inner.shared.lock().pending.remove(&req_id);
            e
        };
        let bytes = Message::new(ty, req_id, tx_id, payload).encode().map_err(|e| fail(XsError::InvalidRequest(e)))?;
        tracing::trace!(?ty, req_id, tx_id, "xenstore request");
        let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_message(&bytes).map_err(|e| fail(io_error(e)))
    }

    /// Registers an event queue for `token` before the `XS_WATCH` is sent,
    /// so the registration event can never be missed.
    pub(crate) fn add_watch_queue(&self, token: &str, q: Arc<watch::WatchQueue>) -> bool {
        let mut st = self.inner.shared.lock();
        if st.watches.contains_key(token) {
            return false;
        }
        if st.disconnected {
            q.close();
        }
        st.watches.insert(token.to_owned(), q);
        true
    }

    /// Stops routing events for `token`.
    pub(crate) fn forget_watch(&self, token: &str) {
        self.inner.shared.lock().watches.remove(token);
    }

    /// A token not used by any watch of this client.
    pub(crate) fn fresh_token(&self) -> String {
        loop {
            let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
            let token = format!("xs-{}-{n}", std::process::id());
            if !self.inner.shared.lock().watches.contains_key(&token) {
                return token;
            }
        }
    }
}

/// Broken pipe / reset on write means the daemon went away.
fn io_error(e: io::Error) -> XsError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected => {
            XsError::Disconnected
        }
        _ => XsError::Io(e),
    }
}
