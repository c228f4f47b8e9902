//! An embedded xenstored: the daemon half of the protocol, for the
//! simulated Xen host and for tests.
//!
//! Unix-socket connections ([`Xenstored::serve_unix`]) are privileged dom0,
//! as with a real xenstored; [`Xenstored::add_connection`] serves a stream
//! as a given domain (a guest's "ring"). Each connection has a reader and a
//! writer thread; the database is one `Mutex`-protected [`State`].

mod conn;
mod dispatch;
mod engine;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod perms;
mod store;
mod transaction;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::client::{Client, XsError};
use crate::wire::{RawMessage, XENSTORE_PAYLOAD_MAX};
use conn::OutQueue;
use engine::Event;
use perms::Caller;
use store::Store;
use transaction::Tx;
use watch::{ConnId, WatchTable};

pub use handle::ServerHandle;

/// One connection, as [`Xenstored::connections`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The daemon's id of the connection (for [`Xenstored::drop_connection`]).
    pub id: u64,
    /// The domain it speaks for.
    pub domid: u16,
    /// The paths it watches, in registration order.
    pub watches: Vec<String>,
}

/// Resource limits (C xenstored's default quotas). Quotas apply to
/// unprivileged domains only, except `max_transactions_per_connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Nodes a guest may own (`ENOSPC` beyond).
    pub max_nodes_per_domain: usize,
    /// Watches a guest may hold over all its connections (`E2BIG` beyond).
    pub max_watches_per_domain: usize,
    /// Open transactions per connection (`ENOSPC` beyond).
    pub max_transactions_per_connection: usize,
    /// Largest accepted request payload; a larger header closes the
    /// connection. Never more than `XENSTORE_PAYLOAD_MAX`.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_nodes_per_domain: 1000,
            max_watches_per_domain: 128,
            max_transactions_per_connection: 10,
            max_payload: XENSTORE_PAYLOAD_MAX,
        }
    }
}

/// One live connection.
#[derive(Debug)]
struct ConnEntry {
    domid: u16,
    out: Arc<OutQueue>,
    /// A handle to cut the connection (unblocks both threads).
    sock: UnixStream,
    txs: HashMap<u32, Tx>,
}

/// Everything behind the daemon lock.
#[derive(Debug)]
struct State {
    store: Store,
    watches: WatchTable,
    conns: HashMap<ConnId, ConnEntry>,
    introduced: BTreeSet<u16>,
    /// `SET_TARGET`: domain -> domain whose rights it borrows.
    targets: HashMap<u16, u16>,
    next_conn: ConnId,
    next_tx: u32,
}

impl State {
    fn caller(&self, domid: u16) -> Caller {
        Caller { domid, target: self.targets.get(&domid).copied() }
    }

    /// Delivers watch events for `events`, in order.
    fn fire(&mut self, events: Vec<Event>) {
        for ev in events {
            let deliveries = self.watches.deliveries(&ev, &self.store, |d| self.caller(d));
            for (conn, path, token) in deliveries {
                if let Some(c) = self.conns.get(&conn) {
                    c.out.push_event(&path, &token);
                }
            }
        }
    }

    /// Forgets a connection: its watches and transactions go and its
    /// writer stops. With `cut`, the socket is shut down at once (waking
    /// both connection threads); otherwise the writer flushes first.
    /// Idempotent.
    fn close_conn(&mut self, conn: ConnId, cut: bool) {
        if let Some(c) = self.conns.remove(&conn) {
            self.watches.remove_conn(conn);
            c.out.close();
            if cut {
                let _ = c.sock.shutdown(std::net::Shutdown::Both);
            }
            tracing::debug!(conn, domid = c.domid, "xenstored connection closed");
        }
    }

    fn introduce(&mut self, domid: u16) -> bool {
        let new = self.introduced.insert(domid);
        if new {
            self.fire(vec![Event::Special { path: store::INTRODUCE_DOMAIN }]);
        }
        new
    }

    fn release(&mut self, domid: u16) -> bool {
        let was = self.introduced.remove(&domid);
        let conns: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.domid == domid).map(|(id, _)| *id).collect();
        for c in conns {
            self.close_conn(c, true);
        }
        self.targets.remove(&domid);
        self.fire(vec![Event::Special { path: store::RELEASE_DOMAIN }]);
        was
    }
}

/// The daemon. Create with [`Xenstored::new`], then serve connections.
#[derive(Debug)]
pub struct Xenstored {
    state: Mutex<State>,
    limits: Limits,
}

impl Xenstored {
    /// A daemon with the initial tree (`/`, `/local`, `/local/domain`,
    /// `/tool`, owned by dom0, `n0`) and default [`Limits`].
    pub fn new() -> Arc<Xenstored> {
        Xenstored::with_limits(Limits::default())
    }

    /// A daemon with custom limits (`max_payload` is capped at 4096).
    pub fn with_limits(mut limits: Limits) -> Arc<Xenstored> {
        limits.max_payload = limits.max_payload.min(XENSTORE_PAYLOAD_MAX);
        let state = State {
            store: Store::new(),
            watches: WatchTable::default(),
            conns: HashMap::new(),
            introduced: BTreeSet::new(),
            targets: HashMap::new(),
            next_conn: 1,
            next_tx: 1,
        };
        Arc::new(Xenstored { state: Mutex::new(state), limits })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens on a unix socket; every accepted connection is dom0. A stale
    /// socket file (nobody listening) is replaced.
    pub fn serve_unix(self: &Arc<Self>, path: &Path) -> io::Result<ServerHandle> {
        ServerHandle::start(self.clone(), path)
    }

    /// Serves `stream` as domain `domid` (0 = privileged, else a guest with
    /// relative paths under `/local/domain/<domid>`).
    pub fn add_connection(self: &Arc<Self>, stream: UnixStream, domid: u16) -> io::Result<()> {
        conn::spawn(self.clone(), stream, domid)
    }

    /// A [`Client`] connected over a socketpair as domain `domid`.
    pub fn connect(self: &Arc<Self>, domid: u16) -> Result<Client, XsError> {
        let (ours, theirs) = UnixStream::pair()?;
        self.add_connection(theirs, domid)?;
        Client::from_stream(ours)
    }

    /// Marks a domain introduced; fires `@introduceDomain` if it was not.
    pub fn introduce_domain(&self, domid: u16) -> bool {
        self.lock().introduce(domid)
    }

    /// Drops the domain's connections (and so its watches and
    /// transactions) and fires `@releaseDomain`. Returns whether it was
    /// introduced.
    pub fn release_domain(&self, domid: u16) -> bool {
        self.lock().release(domid)
    }

    /// Whether `domid` is introduced (dom0 always is).
    pub fn is_domain_introduced(&self, domid: u16) -> bool {
        domid == 0 || self.lock().introduced.contains(&domid)
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Number of registered watches (all connections).
    pub fn watch_count(&self) -> usize {
        self.lock().watches.len()
    }

    /// Number of nodes in the store (including special nodes).
    pub fn node_count(&self) -> usize {
        self.lock().store.len()
    }

    /// Every live connection: its id, domain and watched paths (as `xenstore-control`'s
    /// debug output tells an operator which connection is whose).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let st = self.lock();
        let mut out: Vec<ConnectionInfo> = st
            .conns
            .iter()
            .map(|(&id, c)| ConnectionInfo { id, domid: c.domid, watches: st.watches.paths_of(id) })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Cuts connection `id` as a xenstored crash or restart would: its watches and
    /// transactions are forgotten and its client reads end-of-file. Unlike
    /// [`Xenstored::release_domain`] the domain stays introduced and nothing fires.
    /// Returns whether the connection existed.
    pub fn drop_connection(&self, id: u64) -> bool {
        let mut st = self.lock();
        let existed = st.conns.contains_key(&id);
        st.close_conn(id, true);
        existed
    }

    /// Closes every connection.
    pub fn close_all_connections(&self) {
        let mut st = self.lock();
        let ids: Vec<ConnId> = st.conns.keys().copied().collect();
        for id in ids {
            st.close_conn(id, true);
        }
    }

    fn register_conn(&self, domid: u16, out: Arc<OutQueue>, sock: UnixStream) -> ConnId {
        let mut st = self.lock();
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(id, ConnEntry { domid, out, sock, txs: HashMap::new() });
        tracing::debug!(conn = id, domid, "xenstored connection opened");
        id
    }

    fn close_conn(&self, conn: ConnId) {
        self.lock().close_conn(conn, true);
    }

    fn close_conn_graceful(&self, conn: ConnId) {
        self.lock().close_conn(conn, false);
    }

    fn push_raw(&self, conn: ConnId, bytes: Vec<u8>) {
        if let Some(c) = self.lock().conns.get(&conn) {
            c.out.push(bytes);
        }
    }

    fn handle(&self, conn: ConnId, raw: RawMessage) {
        self.lock().handle(&self.limits, conn, &raw);
    }
}
