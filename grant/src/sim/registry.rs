//! The host's state: live domains with their descriptors, tokens and port tables, and the
//! handling of each control request. No I/O on sockets here; [`super::host`] does that.
//!
//! Invariants: a domain is in the registry iff it is alive (its status page says so);
//! domids are never reused within one host, so a dead domain's cached state can never be
//! mistaken for a new domain's; a ledger token is in use from the hello that handed it out
//! until the host settled that connection's ledger, so no two live ledgers share one.

use super::evtchn::{Link, PortTable};
use super::gnttab::DomainTables;
use super::ledger::{HostLedger, LEDGER_SLOTS, MAX_TOKEN};
use super::memory::{self, DomainFds, STATUS_ALIVE, STATUS_DEAD, map_shared, seal_future_writes, sealed_memfd};
use super::protocol::{Reply, Request};
use super::{Credentials, DomainConfig, DomainEvent, SimError, SimToken};
use crate::{DOMID_SELF, DomId, EvtchnPort, PAGE_SIZE};
use nix::errno::Errno;
use nix::sys::socket::{Shutdown, shutdown};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vm_memory::MmapRegion;

/// Identifies one control connection.
pub(crate) type ConnId = u64;

/// A control connection as the registry sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub id: ConnId,
    /// Set by a successful hello.
    pub domid: Option<DomId>,
    pub sock: Arc<OwnedFd>,
    /// The pin ledger handed out at hello.
    pub ledger: Option<HostLedger>,
}

/// One live domain.
#[derive(Debug)]
struct HostDomain {
    config: DomainConfig,
    fds: DomainFds,
    /// The host's writable mapping of the status page (everyone else maps it read-only).
    status: MmapRegion,
    /// The host's mapping of the grant and active tables, to settle dead processes' pins.
    tables: Arc<DomainTables>,
    /// A guest's one-time token, until its process connects.
    token: Option<SimToken>,
    introduced: bool,
    /// A guest's control connection, shut down when the domain is destroyed.
    conn: Option<(ConnId, Arc<OwnedFd>)>,
    ports: PortTable,
    /// Which connection owns each port (ports close with their process).
    owners: BTreeMap<EvtchnPort, ConnId>,
    /// The connection allowed to allocate frames and grefs.
    allocator: Option<ConnId>,
}

impl HostDomain {
    fn new(domid: DomId, config: DomainConfig, token: Option<SimToken>) -> std::io::Result<Self> {
        let name = |what: &str| format!("sim-d{domid}-{what}");
        let fds = DomainFds {
            mem: sealed_memfd(&name("mem"), config.mem_pages as usize * PAGE_SIZE)?,
            table: sealed_memfd(&name("gnttab"), config.grant_frames as usize * PAGE_SIZE)?,
            active: sealed_memfd(&name("active"), memory::active_table_len(config.grant_entries()))?,
            status: sealed_memfd(&name("status"), PAGE_SIZE)?,
        };
        let status_file = Arc::new(File::from(fds.status.try_clone()?));
        let status = map_shared(&status_file, 0, PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE)?;
        set_status(&status, STATUS_ALIVE);
        seal_future_writes(fds.status.as_fd())?;
        let tables = Arc::new(fds.map_tables(config.grant_frames)?);
        let ports = PortTable::default();
        Ok(Self {
            config,
            fds,
            status,
            tables,
            token,
            introduced: false,
            conn: None,
            ports,
            owners: BTreeMap::new(),
            allocator: None,
        })
    }

    fn dup_fds(&self) -> Result<Vec<OwnedFd>, Errno> {
        self.fds.borrow().iter().map(|fd| fd.try_clone_to_owned().map_err(io_errno)).collect()
    }
}

fn set_status(page: &MmapRegion, value: u32) {
    if let Some(word) = memory::status_word(page) {
        word.store(value, Ordering::Release);
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// What handling a request produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub reply: Reply,
    pub fds: Vec<OwnedFd>,
    /// To report to the host's hook once the registry is unlocked.
    pub events: Vec<DomainEvent>,
}

impl Outcome {
    fn reply(reply: Reply, fds: Vec<OwnedFd>) -> Self {
        Self { reply, fds, events: Vec::new() }
    }

    fn error(errno: Errno) -> Self {
        Self::reply(Reply::Error(errno as i32), Vec::new())
    }
}

/// How a control connection ended, for the release of its pins.
#[derive(Debug)]
pub(crate) struct Ended {
    /// To report to the host's hook.
    pub events: Vec<DomainEvent>,
    /// The host shut the connection down itself (its domain was destroyed), so the
    /// process may still be running.
    pub shut_by_host: bool,
}

/// Every live domain of one host.
#[derive(Debug)]
pub(crate) struct Registry {
    domains: BTreeMap<DomId, HostDomain>,
    /// The next guest domid; only grows.
    next_domid: u32,
    /// Ledger tokens in use, and where the search for a free one starts.
    tokens: BTreeSet<u16>,
    next_token: u16,
    /// Connections the host shut down whose end was not yet handled.
    shut: BTreeSet<ConnId>,
}

/// First domid Xen reserves (`DOMID_FIRST_RESERVED`).
const DOMID_FIRST_RESERVED: u32 = 0x7FF0;

impl Registry {
    /// A registry holding dom0.
    pub(crate) fn new(dom0: DomainConfig) -> Result<Self, SimError> {
        dom0.validate()?;
        let d0 = HostDomain::new(0, dom0, None).map_err(|e| SimError::io("creating dom0", e))?;
        Ok(Self {
            domains: BTreeMap::from([(0, d0)]),
            next_domid: 1,
            tokens: BTreeSet::new(),
            next_token: 1,
            shut: BTreeSet::new(),
        })
    }

    /// Creates a guest that one process may connect as, with the returned token.
    pub(crate) fn create_domain(&mut self, config: DomainConfig) -> Result<(DomId, SimToken), SimError> {
        config.validate()?;
        if self.next_domid >= DOMID_FIRST_RESERVED {
            return Err(SimError::Refused { op: "create-domain", errno: Errno::ENOSPC });
        }
        let domid = DomId::try_from(self.next_domid).expect("below DOMID_FIRST_RESERVED");
        let token = SimToken::random().map_err(|e| SimError::io("reading a random token", e))?;
        let dom = HostDomain::new(domid, config, Some(token)).map_err(|e| SimError::io("creating a domain", e))?;
        self.next_domid += 1;
        self.domains.insert(domid, dom);
        Ok((domid, token))
    }

    /// Destroys a guest: see [`Registry::kill`]. Dom0 cannot be destroyed.
    pub(crate) fn destroy_domain(&mut self, domid: DomId) -> Result<Vec<DomainEvent>, SimError> {
        if domid == 0 {
            return Err(SimError::Refused { op: "destroy-domain", errno: Errno::EPERM });
        }
        self.kill(domid).ok_or(SimError::NoSuchDomain(domid))
    }

    /// Marks `domid` dead and forgets it: its status page turns dead (every later map or
    /// copy naming it fails with `bad_domain`, even where its memory is cached), its ports
    /// close, its control connection is shut down. `None` if it was not alive.
    fn kill(&mut self, domid: DomId) -> Option<Vec<DomainEvent>> {
        let mut dom = self.domains.remove(&domid)?;
        set_status(&dom.status, STATUS_DEAD);
        for port in dom.ports.ports() {
            if let Some(p) = dom.ports.remove(port) {
                self.unlink(domid, p.link);
            }
        }
        if let Some((id, sock)) = dom.conn.take() {
            self.shut.insert(id);
            let _ = shutdown(sock.as_raw_fd(), Shutdown::Both);
        }
        Some(if dom.introduced { vec![DomainEvent::Released(domid)] } else { Vec::new() })
    }

    /// The peer of a closed port goes back to `Unbound` for the closer's domain.
    fn unlink(&mut self, closer: DomId, link: Link) {
        if let Link::Interdomain { remote, port } = link
            && let Some(peer) = self.domains.get_mut(&remote).and_then(|d| d.ports.get_mut(port))
        {
            peer.link = Link::Unbound { remote: closer };
        }
    }

    /// Which domain `creds` may connect as, without consuming a token.
    pub(crate) fn check_hello(&self, creds: &Credentials) -> Result<DomId, Errno> {
        match creds {
            Credentials::Dom0 => Ok(0),
            Credentials::Guest { token } => self
                .domains
                .iter()
                .find(|(_, d)| d.token.as_ref() == Some(token))
                .map(|(&domid, _)| domid)
                .ok_or(Errno::EACCES),
        }
    }

    /// Completes a hello checked by [`Registry::check_hello`]: consumes a guest's token and
    /// replies with our own domain's descriptors, the connection's fresh pin ledger (kept in
    /// `conn`) and `xenstore`, if any.
    pub(crate) fn hello(&mut self, conn: &mut Conn, creds: &Credentials, xenstore: Option<OwnedFd>) -> Outcome {
        let domid = match self.check_hello(creds) {
            Ok(domid) => domid,
            Err(errno) => return Outcome::error(errno),
        };
        let Some(token) = self.alloc_token() else { return Outcome::error(Errno::ENOSPC) };
        let ledger = match HostLedger::create(token) {
            Ok(ledger) => ledger,
            Err(e) => {
                self.tokens.remove(&token);
                return Outcome::error(io_errno(e));
            }
        };
        let dom = self.domains.get_mut(&domid).expect("check_hello found it");
        let mut fds = match dom.dup_fds() {
            Ok(fds) => fds,
            Err(errno) => {
                self.tokens.remove(&token);
                return Outcome::error(errno);
            }
        };
        match ledger.fd().try_clone_to_owned() {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                self.tokens.remove(&token);
                return Outcome::error(io_errno(e));
            }
        }
        let mut events = Vec::new();
        if domid != 0 {
            dom.token = None;
            dom.conn = Some((conn.id, conn.sock.clone()));
            dom.introduced = true;
            events.push(DomainEvent::Introduced(domid));
        }
        conn.domid = Some(domid);
        conn.ledger = Some(ledger);
        let reply = Reply::Hello {
            domid,
            mem_pages: dom.config.mem_pages,
            grant_frames: dom.config.grant_frames,
            ledger_slots: LEDGER_SLOTS,
            ledger_token: token,
            xenstore: xenstore.is_some(),
        };
        fds.extend(xenstore);
        Outcome { reply, fds, events }
    }

    /// Handles a request after the hello.
    pub(crate) fn handle(&mut self, conn: &Conn, ldom: DomId, req: &Request) -> Outcome {
        let own = |d: DomId| if d == DOMID_SELF { ldom } else { d };
        let result = match *req {
            Request::Hello(_) => Err(Errno::EISCONN),
            Request::GetDomain(d) => self.get_domain(own(d)),
            Request::AllocUnbound(remote) => self.alloc_unbound(conn.id, ldom, own(remote)),
            Request::BindInterdomain(rdom, rport) => self.bind(conn.id, ldom, own(rdom), rport),
            Request::Close(port) => self.close(conn.id, ldom, port).map(|()| Outcome::reply(Reply::Ok, Vec::new())),
            Request::ClaimAllocator => self.claim_allocator(conn.id, ldom),
            Request::CreateDomain(..) | Request::DestroyDomain(_) if ldom != 0 => Err(Errno::EPERM),
            Request::CreateDomain(mem_pages, grant_frames) => {
                match self.create_domain(DomainConfig { mem_pages, grant_frames }) {
                    Ok((domid, token)) => Ok(Outcome::reply(Reply::Created(domid, token), Vec::new())),
                    Err(e) => Err(e.errno()),
                }
            }
            Request::DestroyDomain(domid) => match self.destroy_domain(domid) {
                Ok(events) => Ok(Outcome { reply: Reply::Ok, fds: Vec::new(), events }),
                Err(e) => Err(e.errno()),
            },
        };
        result.unwrap_or_else(Outcome::error)
    }

    fn get_domain(&self, domid: DomId) -> Result<Outcome, Errno> {
        let dom = self.domains.get(&domid).ok_or(Errno::ESRCH)?;
        let reply = Reply::Domain { domid, mem_pages: dom.config.mem_pages, grant_frames: dom.config.grant_frames };
        Ok(Outcome::reply(reply, dom.dup_fds()?))
    }

    fn alloc_unbound(&mut self, conn: ConnId, ldom: DomId, remote: DomId) -> Result<Outcome, Errno> {
        let dom = self.domains.get_mut(&ldom).ok_or(Errno::ESRCH)?;
        let port = dom.ports.alloc_unbound(remote)?;
        dom.owners.insert(port, conn);
        let p = dom.ports.get(port).expect("just allocated");
        let fds = vec![p.inbox.try_clone().map_err(io_errno)?, p.peer.try_clone().map_err(io_errno)?];
        Ok(Outcome::reply(Reply::Port(port), fds))
    }

    /// `EVTCHNOP_bind_interdomain`, with event_channel.c's errors: unknown remote domain →
    /// `ESRCH`; remote port not allocated, not unbound, or allocated for another domain →
    /// `EINVAL` (an already bound port is simply not unbound).
    fn bind(&mut self, conn: ConnId, ldom: DomId, rdom: DomId, rport: EvtchnPort) -> Result<Outcome, Errno> {
        let rchn = self.domains.get(&rdom).ok_or(Errno::ESRCH)?.ports.get(rport).ok_or(Errno::EINVAL)?;
        if rchn.link != (Link::Unbound { remote: ldom }) {
            return Err(Errno::EINVAL);
        }
        let clone = |fd: &OwnedFd| fd.try_clone().map_err(io_errno);
        let (inbox, peer) = (clone(&rchn.peer)?, clone(&rchn.inbox)?);
        let fds = vec![clone(&inbox)?, clone(&peer)?];
        let dom = self.domains.get_mut(&ldom).ok_or(Errno::ESRCH)?;
        let link = Link::Interdomain { remote: rdom, port: rport };
        let lport = dom.ports.insert_bound(link, inbox, peer)?;
        dom.owners.insert(lport, conn);
        if let Some(r) = self.domains.get_mut(&rdom).and_then(|d| d.ports.get_mut(rport)) {
            r.link = Link::Interdomain { remote: ldom, port: lport };
        }
        // As Xen: notifications sent while the remote port was unbound may be lost, so the
        // new local port always starts pending.
        let _ = nix::unistd::write(&fds[0], &1u64.to_ne_bytes());
        Ok(Outcome::reply(Reply::Port(lport), fds))
    }

    fn close(&mut self, conn: ConnId, ldom: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let dom = self.domains.get_mut(&ldom).ok_or(Errno::ESRCH)?;
        if dom.owners.get(&port) != Some(&conn) {
            return Err(Errno::EINVAL);
        }
        dom.owners.remove(&port);
        let closed = dom.ports.remove(port).ok_or(Errno::EINVAL)?;
        self.unlink(ldom, closed.link);
        Ok(())
    }

    fn claim_allocator(&mut self, conn: ConnId, ldom: DomId) -> Result<Outcome, Errno> {
        let dom = self.domains.get_mut(&ldom).ok_or(Errno::ESRCH)?;
        match dom.allocator {
            Some(holder) if holder != conn => Err(Errno::EBUSY),
            _ => {
                dom.allocator = Some(conn);
                Ok(Outcome::reply(Reply::Ok, Vec::new()))
            }
        }
    }

    /// A control connection ended: a guest's domain dies with it; a dom0 process's ports
    /// close and its allocator claim lapses. (Its pins are settled by the caller, without
    /// the registry locked: see [`Registry::tables`].)
    pub(crate) fn disconnect(&mut self, conn: &Conn) -> Ended {
        let shut_by_host = self.shut.remove(&conn.id);
        let events = self.forget(conn);
        Ended { events, shut_by_host }
    }

    fn forget(&mut self, conn: &Conn) -> Vec<DomainEvent> {
        let Some(domid) = conn.domid else { return Vec::new() };
        let owns_domain = self.domains.get(&domid).and_then(|d| d.conn.as_ref()).is_some_and(|(id, _)| *id == conn.id);
        if owns_domain {
            return self.kill(domid).unwrap_or_default();
        }
        let Some(dom) = self.domains.get_mut(&domid) else { return Vec::new() };
        if dom.allocator == Some(conn.id) {
            dom.allocator = None;
        }
        let mine: Vec<EvtchnPort> = dom.owners.iter().filter(|(_, c)| **c == conn.id).map(|(p, _)| *p).collect();
        for port in mine {
            let _ = self.close(conn.id, domid, port);
        }
        Vec::new()
    }

    /// The tables of those of `domids` that are alive (a dead domain's pins need nothing).
    pub(crate) fn tables(&self, domids: &BTreeSet<DomId>) -> BTreeMap<DomId, Arc<DomainTables>> {
        domids.iter().filter_map(|d| Some((*d, self.domains.get(d)?.tables.clone()))).collect()
    }

    /// A free ledger token, searching round-robin so a token is reused as late as possible.
    fn alloc_token(&mut self) -> Option<u16> {
        for _ in 0..MAX_TOKEN {
            let token = self.next_token;
            self.next_token = if token >= MAX_TOKEN { 1 } else { token + 1 };
            if self.tokens.insert(token) {
                return Some(token);
            }
        }
        None
    }

    /// The ledger of `token` was settled: the token may be handed out again.
    pub(crate) fn free_token(&mut self, token: u16) {
        self.tokens.remove(&token);
    }

    /// Kills every guest (host shutdown).
    pub(crate) fn kill_all(&mut self) -> Vec<DomainEvent> {
        let guests: Vec<DomId> = self.domains.keys().copied().filter(|&d| d != 0).collect();
        guests.into_iter().filter_map(|d| self.kill(d)).flatten().collect()
    }
}
