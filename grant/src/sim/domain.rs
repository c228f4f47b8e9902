//! A domain process's handle on the sim host: [`SimDomain`].

use super::alloc::Allocator;
use super::evtchn::SimEventChannel;
use super::gnttab::{GrantEntryV1, GrantPins};
use super::ledger::{Ledger, ledger_len};
use super::memory::{DomainFds, DomainMemory, check_page_size, map_shared, raise_nofile_limit};
use super::ops::{self, Resolve};
use super::protocol::{self, DOMAIN_FDS, MAX_MSG, Reply, Request};
use super::{Credentials, DomainConfig, SimError, SimToken};
use crate::{
    Access, CopySegment, DOMID_SELF, DomId, EventChannels, EvtchnError, EvtchnPort, GrantAlloc, GrantError,
    GrantMapping, GrantOps, GrantRef, GrantStatus, SharedPages,
};
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The control connection: one request and its reply at a time.
pub(crate) struct Control {
    sock: Mutex<OwnedFd>,
}

impl Control {
    fn connect(path: &Path) -> Result<Self, SimError> {
        let ctx = || format!("connecting to the sim host at {}", path.display());
        let sock = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| SimError::io(ctx(), e))?;
        let addr = UnixAddr::new(path).map_err(|e| SimError::io(ctx(), e))?;
        connect(sock.as_raw_fd(), &addr).map_err(|e| SimError::io(ctx(), e))?;
        Ok(Self { sock: Mutex::new(sock) })
    }

    /// Sends `req` and waits for its reply; a refusal becomes [`SimError::Refused`].
    pub(crate) fn call(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>), SimError> {
        let op = req.name();
        let sock = self.sock.lock().unwrap_or_else(PoisonError::into_inner);
        protocol::send(sock.as_fd(), &req.encode(), &[], false)
            .map_err(|e| SimError::io(format!("sending {op}"), e))?;
        let datagram = protocol::recv(sock.as_fd())
            .map_err(|e| SimError::io(format!("receiving the reply to {op}"), e))?
            .ok_or_else(|| SimError::io(format!("{op}: the sim host closed the connection"), Errno::ECONNRESET))?;
        let protocol_error = |reason: String| SimError::Protocol { reason };
        if datagram.bytes.len() > MAX_MSG {
            return Err(protocol_error(format!("oversized reply to {op}")));
        }
        let reply = Reply::decode(&datagram.bytes).map_err(|e| protocol_error(format!("reply to {op}: {e}")))?;
        if let Reply::Error(errno) = reply {
            return Err(SimError::Refused { op, errno: Errno::from_raw(errno) });
        }
        if datagram.fds.len() != reply.fd_count() {
            return Err(protocol_error(format!(
                "{op}: {} descriptors, expected {}",
                datagram.fds.len(),
                reply.fd_count()
            )));
        }
        Ok((reply, datagram.fds))
    }
}

/// How many lookups pass between two sweeps of dead domains.
const SOME_RESOLVES: u64 = 64;

enum Cached {
    Mapped(Arc<DomainMemory>),
    Dead,
}

struct Inner {
    ctl: Arc<Control>,
    domid: DomId,
    own: Arc<DomainMemory>,
    alloc: Arc<Allocator>,
    /// Where every pin we take is recorded, for the host to release if we die.
    ledger: Arc<Ledger>,
    /// Domains we looked up, ours included. A domain found dead is unmapped here (live
    /// mappings keep their own reference) and remembered as dead: domids are never reused
    /// within a host, so it never needs asking about again.
    domains: RwLock<HashMap<DomId, Cached>>,
    /// Lookups so far, to pace [`SimDomain::sweep_dead`].
    resolves: AtomicU64,
    xenstore: Mutex<Option<UnixStream>>,
}

/// One process's connection to the sim host, as one domain.
///
/// Implements [`GrantOps`], [`GrantAlloc`] and [`EventChannels`]; cheap to clone and usable
/// from any number of threads. Grant checks run in this process against the shared tables.
#[derive(Clone)]
pub struct SimDomain {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDomain").field("domid", &self.inner.domid).finish_non_exhaustive()
    }
}

impl SimDomain {
    /// Connects to the host at `socket` as `who`.
    pub fn connect(socket: impl AsRef<Path>, who: Credentials) -> Result<Self, SimError> {
        check_page_size().map_err(|e| SimError::io("checking the page size", e))?;
        raise_nofile_limit();
        let ctl = Arc::new(Control::connect(socket.as_ref())?);
        let (reply, mut fds) = ctl.call(&Request::Hello(who))?;
        let Reply::Hello { domid, mem_pages, grant_frames, ledger_slots, ledger_token, xenstore } = reply else {
            return Err(SimError::Protocol { reason: format!("unexpected hello reply {reply:?}") });
        };
        let xenstore = xenstore.then(|| UnixStream::from(fds.pop().expect("fd count checked")));
        let ledger_file = Arc::new(File::from(fds.pop().expect("fd count checked")));
        let ledger = map_shared(&ledger_file, 0, ledger_len(ledger_slots), libc::PROT_READ | libc::PROT_WRITE)
            .and_then(|region| Ledger::new(region, ledger_slots, ledger_token, Some(ctl.clone())))
            .map_err(|e| SimError::io("mapping our pin ledger", e))?;
        let fds = DomainFds::from_vec(fds).expect("fd count checked");
        let own = Arc::new(
            DomainMemory::map(domid, mem_pages, grant_frames, fds)
                .map_err(|e| SimError::io("mapping our domain", e))?,
        );
        let claim_ctl = ctl.clone();
        let claim = Box::new(move || claim_ctl.call(&Request::ClaimAllocator).map(drop).map_err(SimError::into_io));
        Ok(Self {
            inner: Arc::new(Inner {
                alloc: Arc::new(Allocator::new(own.clone(), claim)),
                ledger: Arc::new(ledger),
                domains: RwLock::new(HashMap::from([(domid, Cached::Mapped(own.clone()))])),
                resolves: AtomicU64::new(0),
                ctl,
                domid,
                own,
                xenstore: Mutex::new(xenstore),
            }),
        })
    }

    /// Our domain id.
    pub fn domid(&self) -> DomId {
        self.inner.domid
    }

    /// The xenstore connection the host passed at connect time, once.
    pub fn take_xenstore_stream(&self) -> Option<UnixStream> {
        self.inner.xenstore.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Toolstack (dom0 only): creates a guest; a process connects as it with the token.
    pub fn create_domain(&self, config: DomainConfig) -> Result<(DomId, SimToken), SimError> {
        match self.inner.ctl.call(&Request::CreateDomain(config.mem_pages, config.grant_frames))?.0 {
            Reply::Created(domid, token) => Ok((domid, token)),
            other => Err(SimError::Protocol { reason: format!("unexpected create reply {other:?}") }),
        }
    }

    /// Toolstack (dom0 only): destroys a guest.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), SimError> {
        self.inner.ctl.call(&Request::DestroyDomain(domid)).map(drop)
    }

    /// Whether `domid` is alive (`false` if unknown).
    pub fn domain_alive(&self, domid: DomId) -> Result<bool, SimError> {
        match self.resolve(domid) {
            Ok(dom) => Ok(dom.alive()),
            Err(Resolve::BadDomain) => Ok(false),
            Err(Resolve::Io(e)) => Err(SimError::io("looking up a domain", e)),
        }
    }

    /// Inspection (sim only): entry `gref` of `domid`'s grant table as it is now.
    pub fn grant_entry(&self, domid: DomId, gref: GrantRef) -> Result<GrantEntryV1, GrantError> {
        let refused = |status| GrantError::Map { domid, gref, status };
        let dom = self.resolve(domid).map_err(|e| resolve_error(e, refused))?;
        dom.table.read(gref).ok_or(refused(GrantStatus::BadGntref))
    }

    /// Inspection (sim only): the pins `domid`'s grant `gref` has now, from every process of
    /// every domain (Xen's active grant entry).
    pub fn grant_pins(&self, domid: DomId, gref: GrantRef) -> Result<GrantPins, GrantError> {
        let refused = |status| GrantError::Map { domid, gref, status };
        let dom = self.resolve(domid).map_err(|e| resolve_error(e, refused))?;
        if gref >= dom.table.entries() {
            return Err(refused(GrantStatus::BadGntref));
        }
        Ok(dom.active.pins(gref))
    }

    /// Simulates a misbehaving guest (sim only): writes `entry` into our own grant table at
    /// `gref`, bypassing the allocator. Meant for tests of a backend's refusals.
    pub fn poke_grant_entry(&self, gref: GrantRef, entry: GrantEntryV1) -> Result<(), GrantError> {
        if gref >= self.inner.own.table.entries() {
            return Err(GrantError::Map { domid: self.inner.domid, gref, status: GrantStatus::BadGntref });
        }
        self.inner.own.table.publish(gref, entry);
        Ok(())
    }

    /// Retries revoking grants whose pages a peer still had pinned when they were dropped
    /// (this also happens on every `share` and drop); returns how many remain pending.
    pub fn retry_revocations(&self) -> usize {
        self.inner.alloc.retry()
    }

    /// Unmaps every cached domain that has died and closes its descriptors (live mappings
    /// keep their own reference). Runs on every [`SOME_RESOLVES`]th lookup and on every cache
    /// miss, so a dead domain's memory is released by the process's next grant operations
    /// even if nothing names that domain again.
    fn sweep_dead(&self) {
        let any_dead = self
            .inner
            .domains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|c| matches!(c, Cached::Mapped(dom) if !dom.alive()));
        if any_dead {
            for cached in self.inner.domains.write().unwrap_or_else(PoisonError::into_inner).values_mut() {
                if matches!(cached, Cached::Mapped(dom) if !dom.alive()) {
                    *cached = Cached::Dead;
                }
            }
        }
    }

    /// The mapped tables of `domid`, fetching its descriptors from the host on first use.
    fn resolve(&self, domid: DomId) -> Result<Arc<DomainMemory>, Resolve> {
        let domid = if domid == DOMID_SELF { self.inner.domid } else { domid };
        if self.inner.resolves.fetch_add(1, Ordering::Relaxed).is_multiple_of(SOME_RESOLVES) {
            self.sweep_dead();
        }
        let cached = match self.inner.domains.read().unwrap_or_else(PoisonError::into_inner).get(&domid) {
            Some(Cached::Mapped(dom)) if dom.alive() => return Ok(dom.clone()),
            Some(Cached::Dead) => return Err(Resolve::BadDomain),
            Some(Cached::Mapped(_)) => true,
            None => false,
        };
        if cached {
            self.inner.domains.write().unwrap_or_else(PoisonError::into_inner).insert(domid, Cached::Dead);
            return Err(Resolve::BadDomain);
        }
        self.sweep_dead();
        let (reply, fds) = match self.inner.ctl.call(&Request::GetDomain(domid)) {
            Ok(r) => r,
            Err(SimError::Refused { errno: Errno::ESRCH, .. }) => return Err(Resolve::BadDomain),
            Err(e) => return Err(Resolve::Io(e.into_io())),
        };
        let Reply::Domain { domid: got, mem_pages, grant_frames } = reply else {
            return Err(Resolve::Io(io::Error::other(format!("unexpected get-domain reply {reply:?}"))));
        };
        if got != domid || fds.len() != DOMAIN_FDS {
            return Err(Resolve::Io(io::Error::other("get-domain reply for the wrong domain")));
        }
        let fds = DomainFds::from_vec(fds).expect("count checked");
        let dom = Arc::new(DomainMemory::map(domid, mem_pages, grant_frames, fds).map_err(Resolve::Io)?);
        let mut domains = self.inner.domains.write().unwrap_or_else(PoisonError::into_inner);
        match domains.entry(domid).or_insert(Cached::Mapped(dom)) {
            Cached::Mapped(dom) => Ok(dom.clone()),
            Cached::Dead => Err(Resolve::BadDomain),
        }
    }

    /// Hypercalls of a destroyed domain fail as a whole.
    fn check_caller_alive(&self) -> Result<(), GrantError> {
        if self.inner.own.alive() {
            return Ok(());
        }
        Err(GrantError::Hypervisor {
            context: format!("domain {} was destroyed", self.inner.domid),
            source: io::Error::from(Errno::ESRCH),
        })
    }
}

fn resolve_error(e: Resolve, refused: impl Fn(GrantStatus) -> GrantError) -> GrantError {
    match e {
        Resolve::BadDomain => refused(GrantStatus::BadDomain),
        Resolve::Io(source) => GrantError::Hypervisor { context: "fetching a domain from the sim host".into(), source },
    }
}

impl GrantOps for SimDomain {
    fn map(&self, domid: DomId, gref: GrantRef, access: Access) -> Result<GrantMapping, GrantError> {
        self.check_caller_alive()?;
        let dom =
            self.resolve(domid).map_err(|e| resolve_error(e, |status| GrantError::Map { domid, gref, status }))?;
        ops::map(&dom, &self.inner.ledger, self.inner.domid, gref, access)
    }

    fn map_many(&self, domid: DomId, grefs: &[GrantRef], access: Access) -> Result<GrantMapping, GrantError> {
        self.check_caller_alive()?;
        let first = grefs.first().copied().unwrap_or_default();
        let dom = self
            .resolve(domid)
            .map_err(|e| resolve_error(e, |status| GrantError::Map { domid, gref: first, status }))?;
        ops::map_many(&dom, &self.inner.ledger, self.inner.domid, grefs, access)
    }

    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
        self.check_caller_alive()?;
        // Most batches name one or two domains: look each up once per batch.
        let mut last: Option<Arc<DomainMemory>> = None;
        ops::copy(&self.inner.ledger, self.inner.domid, segments, |domid| {
            let domid = if domid == DOMID_SELF { self.inner.domid } else { domid };
            if let Some(dom) = last.as_ref().filter(|d| d.domid() == domid) {
                return Ok(dom.clone());
            }
            let dom = self.resolve(domid)?;
            last = Some(dom.clone());
            Ok(dom)
        })
    }
}

impl GrantAlloc for SimDomain {
    fn share(&self, domid: DomId, pages: usize, access: Access) -> Result<SharedPages, GrantError> {
        self.inner.alloc.share(domid, pages, access)
    }
}

impl EventChannels for SimDomain {
    type Channel = SimEventChannel;

    fn alloc_unbound(&self, remote: DomId) -> Result<SimEventChannel, EvtchnError> {
        let remote = if remote == DOMID_SELF { self.inner.domid } else { remote };
        let (port, inbox, peer) = self
            .port_request(&Request::AllocUnbound(remote))
            .map_err(|e| EvtchnError::AllocUnbound { remote, errno: e.errno(), reason: e.to_string() })?;
        Ok(SimEventChannel::new(port, remote, inbox, peer, self.inner.ctl.clone()))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<SimEventChannel, EvtchnError> {
        let remote = if remote == DOMID_SELF { self.inner.domid } else { remote };
        let (port, inbox, peer) = self
            .port_request(&Request::BindInterdomain(remote, remote_port))
            .map_err(|e| EvtchnError::Bind { remote, remote_port, errno: e.errno(), reason: e.to_string() })?;
        Ok(SimEventChannel::new(port, remote, inbox, peer, self.inner.ctl.clone()))
    }
}

impl SimDomain {
    fn port_request(&self, req: &Request) -> Result<(EvtchnPort, OwnedFd, OwnedFd), SimError> {
        match self.inner.ctl.call(req)? {
            (Reply::Port(port), fds) => {
                let [inbox, peer]: [OwnedFd; 2] = fds.try_into().expect("fd count checked");
                Ok((port, inbox, peer))
            }
            (other, _) => Err(SimError::Protocol { reason: format!("unexpected port reply {other:?}") }),
        }
    }
}
