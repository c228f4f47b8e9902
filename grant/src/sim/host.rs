//! The host service: a listening socket, one thread per connected domain process.
//!
//! When a connection ends, its thread settles the process's pin ledger
//! ([`super::ledger`]) before reporting the domain events, so a guest's grants are free to
//! revoke by the time anyone hears that their mapper is gone.

use super::ledger::HostLedger;
use super::memory::raise_nofile_limit;
use super::protocol::{self, MAX_MSG, Reply, Request};
use super::registry::{Conn, Outcome, Registry};
use super::{DomainConfig, DomainEvent, SimError, SimToken};
use crate::DomId;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen, socket};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

type EventHook = Arc<dyn Fn(DomainEvent) + Send + Sync>;
type XenstoreHook = Arc<dyn Fn(DomId) -> io::Result<UnixStream> + Send + Sync>;

struct Shared {
    registry: Mutex<Registry>,
    on_event: RwLock<Option<EventHook>>,
    xenstore: RwLock<Option<XenstoreHook>>,
    next_conn: AtomicU64,
    releases: ReleaseCounters,
}

/// Totals behind [`PinReleases`].
#[derive(Default)]
struct ReleaseCounters {
    ledgers: AtomicU64,
    pins: AtomicU64,
    repaired: AtomicU64,
    skipped: AtomicU64,
}

/// What the host did with the pin ledgers of ended connections, since it started
/// ([`Hypervisor::pin_releases`]): gntdev's release of a closed device, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PinReleases {
    /// Connections whose ledger was settled (every connection that completed a hello).
    pub ledgers: u64,
    /// Pins dropped on behalf of processes that ended holding them.
    pub pins: u64,
    /// Grant entries a process died holding the lock of, put back in order.
    pub repaired: u64,
    /// Records left alone: the entry stayed locked by a live process, or the record did not
    /// match the entry's pins (a forged ledger).
    pub skipped: u64,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry operations leave it consistent at every step, so a panic elsewhere while
        // holding the lock does not invalidate it.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `events` to the hook; never called with the registry locked.
    fn fire(&self, events: Vec<DomainEvent>) {
        let hook = self.on_event.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            for event in events {
                if catch_unwind(AssertUnwindSafe(|| hook(event))).is_err() {
                    tracing::error!(?event, "domain event hook panicked");
                }
            }
        }
    }
}

/// The simulated hypervisor: a registry of domains and their event channels.
///
/// Cheap to clone; all clones share one registry. Dom0 (domid 0) exists from the start;
/// guests are created with [`Hypervisor::create_domain`] and live until destroyed or until
/// the process that connected as them closes its connection.
#[derive(Clone)]
pub struct Hypervisor {
    shared: Arc<Shared>,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor").finish_non_exhaustive()
    }
}

impl Hypervisor {
    /// A hypervisor whose dom0 has the default [`DomainConfig`].
    pub fn new() -> Result<Self, SimError> {
        Self::with_dom0_config(DomainConfig::default())
    }

    /// A hypervisor whose dom0 has `dom0` memory and grant table sizes.
    pub fn with_dom0_config(dom0: DomainConfig) -> Result<Self, SimError> {
        super::memory::check_page_size().map_err(|e| SimError::io("checking the page size", e))?;
        raise_nofile_limit();
        Ok(Self {
            shared: Arc::new(Shared {
                registry: Mutex::new(Registry::new(dom0)?),
                on_event: RwLock::new(None),
                xenstore: RwLock::new(None),
                next_conn: AtomicU64::new(1),
                releases: ReleaseCounters::default(),
            }),
        })
    }

    /// Calls `hook` with [`DomainEvent::Introduced`] when a guest's process first connects
    /// and [`DomainEvent::Released`] when an introduced guest dies or is destroyed. Runs on
    /// host threads, never with host locks held; replaces any previous hook.
    pub fn set_domain_event_hook(&self, hook: impl Fn(DomainEvent) + Send + Sync + 'static) {
        *self.shared.on_event.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Calls `connect(domid)` for every connecting domain process (dom0's too) and passes
    /// the returned stream to it ([`super::SimDomain::take_xenstore_stream`]). A failure
    /// refuses that connection. Replaces any previous connector.
    pub fn set_xenstore_connector(&self, connect: impl Fn(DomId) -> io::Result<UnixStream> + Send + Sync + 'static) {
        *self.shared.xenstore.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(connect));
    }

    /// Creates a guest domain; one process may then connect as it with the token.
    pub fn create_domain(&self, config: DomainConfig) -> Result<(DomId, SimToken), SimError> {
        self.shared.registry().create_domain(config)
    }

    /// Destroys a guest domain: every later map or copy naming it fails with
    /// `GNTST_bad_domain`, its event channels close and its process is disconnected.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), SimError> {
        let events = self.shared.registry().destroy_domain(domid)?;
        self.shared.fire(events);
        Ok(())
    }

    /// Totals of the pins released on behalf of processes whose connection ended.
    pub fn pin_releases(&self) -> PinReleases {
        let r = &self.shared.releases;
        PinReleases {
            ledgers: r.ledgers.load(Ordering::Acquire),
            pins: r.pins.load(Ordering::Relaxed),
            repaired: r.repaired.load(Ordering::Relaxed),
            skipped: r.skipped.load(Ordering::Relaxed),
        }
    }

    /// Serves the control protocol on a unix socket at `path` (replacing a stale socket
    /// file) from background threads, until the handle is dropped or shut down.
    pub fn serve(&self, path: impl AsRef<Path>) -> Result<HypervisorHandle, SimError> {
        let path = path.as_ref().to_path_buf();
        let ctx = |what: &str| format!("{what} {}", path.display());
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(&path).map_err(|e| SimError::io(ctx("removing stale socket"), e))?;
        }
        let listener = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| SimError::io("creating the host socket", e))?;
        let addr = UnixAddr::new(&path).map_err(|e| SimError::io(ctx("socket address"), e))?;
        bind(listener.as_raw_fd(), &addr).map_err(|e| SimError::io(ctx("binding"), e))?;
        listen(&listener, Backlog::new(128).expect("valid backlog")).map_err(|e| SimError::io(ctx("listening"), e))?;
        let stop = Arc::new(OwnedFd::from(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| SimError::io("creating the stop eventfd", e))?,
        ));
        let shared = self.shared.clone();
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new()
            .name("sim-host-accept".into())
            .spawn(move || accept_loop(&shared, &listener, &stop2))
            .map_err(|e| SimError::io("spawning the accept thread", e))?;
        Ok(HypervisorHandle { path, stop, accept: Some(accept), hypervisor: self.clone() })
    }
}

/// A running [`Hypervisor::serve`]. Dropping it stops the service: every connection is
/// closed (so every connected guest dies) and the socket file is removed.
pub struct HypervisorHandle {
    path: PathBuf,
    stop: Arc<OwnedFd>,
    accept: Option<JoinHandle<()>>,
    hypervisor: Hypervisor,
}

impl fmt::Debug for HypervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypervisorHandle").field("path", &self.path).finish_non_exhaustive()
    }
}

impl HypervisorHandle {
    /// The socket domains connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hypervisor being served.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    /// Stops serving and waits for the service threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = nix::unistd::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for HypervisorHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Waits until `fd` is readable (or hung up). `false` once `stop` fired.
fn wait_readable(fd: BorrowedFd<'_>, stop: &OwnedFd) -> bool {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return !fds[1].any().unwrap_or(false),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "sim host poll failed");
                return false;
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &OwnedFd, stop: &Arc<OwnedFd>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while wait_readable(listener.as_fd(), stop) {
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this new descriptor; nothing else owns it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EAGAIN) => continue,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on a pending connection.
                tracing::warn!(error = %e, "sim host accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        conns.retain(|c| !c.is_finished());
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let (shared, stop) = (shared.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("sim-host-conn-{id}"))
            .spawn(move || serve_conn(&shared, Conn { id, domid: None, sock: Arc::new(fd), ledger: None }, &stop));
        match spawned {
            Ok(handle) => conns.push(handle),
            Err(e) => tracing::warn!(error = %e, "could not spawn a sim host connection thread"),
        }
    }
    for conn in conns {
        let _ = conn.join();
    }
}

/// Serves one connection until it closes, misbehaves or the host stops; then the registry
/// forgets it (a guest dies with its connection) and its pins are settled.
fn serve_conn(shared: &Shared, mut conn: Conn, stop: &OwnedFd) {
    let sock = conn.sock.clone();
    // Whether the process closed the connection (rather than the host ending it).
    let mut peer_closed = false;
    while wait_readable(sock.as_fd(), stop) {
        let datagram = match protocol::recv(sock.as_fd()) {
            Ok(Some(d)) => d,
            Ok(None) => {
                peer_closed = true;
                break;
            }
            Err(e) => {
                tracing::debug!(conn = conn.id, error = %e, "sim host receive failed");
                peer_closed = e.raw_os_error() == Some(libc::ECONNRESET);
                break;
            }
        };
        // Descriptors sent to the host are never wanted: they close here.
        drop(datagram.fds);
        let request = if datagram.bytes.len() > MAX_MSG {
            Err(protocol::DecodeError("oversized message"))
        } else {
            Request::decode(&datagram.bytes)
        };
        let (outcome, close_after) = match (conn.domid, request) {
            (None, Ok(Request::Hello(creds))) => {
                let outcome = hello(shared, &mut conn, &creds);
                let refused = matches!(outcome.reply, Reply::Error(_));
                (outcome, refused)
            }
            // Before a successful hello, anything else ends the connection.
            (None, _) => break,
            (Some(_), Err(e)) => {
                tracing::debug!(conn = conn.id, error = %e, "garbage on the sim host socket");
                (Outcome { reply: Reply::Error(Errno::EBADMSG as i32), fds: Vec::new(), events: Vec::new() }, false)
            }
            (Some(domid), Ok(req)) => (shared.registry().handle(&conn, domid, &req), false),
        };
        shared.fire(outcome.events);
        let fds: Vec<BorrowedFd<'_>> = outcome.fds.iter().map(AsFd::as_fd).collect();
        // Never block on a client that does not read its replies: drop it instead.
        if let Err(e) = protocol::send(sock.as_fd(), &outcome.reply.encode(), &fds, true) {
            tracing::debug!(conn = conn.id, error = %e, "sim host reply failed");
            peer_closed = matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET));
            break;
        }
        if close_after {
            break;
        }
    }
    let ended = shared.registry().disconnect(&conn);
    if let (Some(ledger), Some(ldom)) = (conn.ledger.take(), conn.domid) {
        release_pins(shared, conn.id, ldom, &ledger, peer_closed && !ended.shut_by_host);
    }
    shared.fire(ended.events);
}

/// Settles the pins recorded in an ended connection's ledger (see
/// [`HostLedger::release`]; `gone`: the process closed the connection itself, so it is
/// dead), then frees its token. Runs without the registry locked: an entry lock may take a
/// while.
fn release_pins(shared: &Shared, conn: u64, ldom: DomId, ledger: &HostLedger, gone: bool) {
    let domids = ledger.domids();
    let done = if domids.is_empty() {
        Default::default()
    } else {
        let tables = shared.registry().tables(&domids);
        ledger.release(ldom, &tables, gone)
    };
    shared.registry().free_token(ledger.token());
    if done.pins + done.repaired + done.skipped > 0 {
        tracing::info!(
            conn,
            ldom,
            gone,
            pins = done.pins,
            repaired = done.repaired,
            skipped = done.skipped,
            "released the grant pins of an ended connection"
        );
    }
    let r = &shared.releases;
    r.pins.fetch_add(done.pins, Ordering::Relaxed);
    r.repaired.fetch_add(done.repaired, Ordering::Relaxed);
    r.skipped.fetch_add(done.skipped, Ordering::Relaxed);
    // Last, with release ordering: whoever sees the ledger counted sees its totals.
    r.ledgers.fetch_add(1, Ordering::Release);
}

fn hello(shared: &Shared, conn: &mut Conn, creds: &super::Credentials) -> Outcome {
    let error = |errno: Errno| Outcome { reply: Reply::Error(errno as i32), fds: Vec::new(), events: Vec::new() };
    let domid = match shared.registry().check_hello(creds) {
        Ok(domid) => domid,
        Err(errno) => return error(errno),
    };
    // The connector may be slow (it talks to xenstored): call it without the registry lock.
    let connector = shared.xenstore.read().unwrap_or_else(PoisonError::into_inner).clone();
    let xenstore = match connector.map(|connect| catch_unwind(AssertUnwindSafe(|| connect(domid)))) {
        None => None,
        Some(Ok(Ok(stream))) => Some(OwnedFd::from(stream)),
        Some(Ok(Err(e))) => {
            tracing::warn!(domid, error = %e, "xenstore connector failed; refusing the domain");
            return error(Errno::EIO);
        }
        Some(Err(_)) => {
            tracing::error!(domid, "xenstore connector panicked; refusing the domain");
            return error(Errno::EIO);
        }
    };
    shared.registry().hello(conn, creds, xenstore)
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The host is going away: every domain it kept alive dies with it.
        let events = self.registry.get_mut().unwrap_or_else(PoisonError::into_inner).kill_all();
        self.fire(events);
    }
}
