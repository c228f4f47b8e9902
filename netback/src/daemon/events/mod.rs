//! The xenstore thread's loop: one epoll set over the backend-root watch, the
//! `@releaseDomain` watch, one watch per vif frontend `state`, the workers' failure queue
//! and the stop fd. Each event re-evaluates the vifs it concerns from xenstore.
//!
//! When the xenstore connection is lost, every watch fails and its fd turns readable: the
//! loop drops them all, leaves the workers running, and reconnects with a backoff
//! ([`Backoff`]) while still serving the stop fd and the workers' failures. Then it sets
//! its watches again, and each watch's first event re-evaluates what it covers, exactly as
//! at start; that covers whatever changed (and every event missed) meanwhile.

mod connection;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use grant::{DomId, EventChannels, GrantOps};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use xenstore::{Client, Watch};

use self::connection::RootWatches;
use super::knobs::KnobRegistry;
use super::reconnect::{Backoff, Reconnect};
use super::scope::{Scope, drain, scope_of};
use super::status::{FatalQueue, StatusMap, lock};
use super::vif::{Ctx, Vif};
use super::{DaemonConfig, DaemonError};
use crate::switch::Switch;
use crate::vif::VifId;
use crate::xenbus::keys::read_optional;
use crate::xenbus::{self, XenbusError, XenbusState};

const STOP: u64 = 0;
const ROOT: u64 = 1;
const RELEASE: u64 = 2;
const FATAL: u64 = 3;
/// Tokens of frontend watches start here.
const FIRST_VIF: u64 = 16;

pub(super) struct Daemon<G> {
    pub xs: Client,
    /// Opens the next connection when `xs` is lost.
    reconnect: Box<dyn Reconnect>,
    /// The backend-root and `@releaseDomain` watches of `xs`; `None` while it is lost.
    roots: Option<RootWatches>,
    /// Set while the connection is lost: when to try reconnecting.
    backoff: Option<Backoff>,
    pub grants: G,
    pub config: DaemonConfig,
    pub switch: Arc<Switch>,
    pub status: StatusMap,
    knobs: KnobRegistry,
    root: String,
    epoll: Epoll,
    fatal: Arc<FatalQueue>,
    vifs: BTreeMap<VifId, Vif>,
    /// Frontend watches by epoll token, and each vif's token. Invariant: every watch in
    /// here (and in `roots`) belongs to `xs` and is in the epoll set.
    watches: HashMap<u64, (VifId, Watch)>,
    tokens: HashMap<VifId, u64>,
    next_token: u64,
    /// Vifs whose probe failed (their TAP could not be created): disabled with an error
    /// node until the toolstack removes the backend directory, and not probed again, or
    /// our own error write would trigger the next attempt.
    failed_probes: BTreeSet<VifId>,
}

/// The borrowed context of [`Vif`] steps, from the daemon's fields (a macro, so the
/// borrow stays per field while `self.vifs` is borrowed mutably).
macro_rules! ctx {
    ($d:expr) => {
        Ctx {
            xs: &$d.xs,
            grants: &$d.grants,
            switch: &$d.switch,
            config: &$d.config,
            fatal: &$d.fatal,
            knobs: &$d.knobs,
        }
    };
}

fn poll_err(e: nix::Error) -> DaemonError {
    DaemonError::Poll(e.into())
}

impl<G> Daemon<G>
where
    G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
{
    pub fn new(
        xs: Client,
        reconnect: Box<dyn Reconnect>,
        grants: G,
        config: DaemonConfig,
        switch: Arc<Switch>,
        status: StatusMap,
        knobs: KnobRegistry,
    ) -> Result<Self, DaemonError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(poll_err)?;
        let fatal = Arc::new(FatalQueue::new().map_err(DaemonError::Poll)?);
        let root = crate::xenbus::backend_root(config.backend_domid);
        Ok(Self {
            xs,
            reconnect,
            roots: None,
            backoff: None,
            grants,
            config,
            switch,
            status,
            knobs,
            root,
            epoll,
            fatal,
            vifs: BTreeMap::new(),
            watches: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_VIF,
            failed_probes: BTreeSet::new(),
        })
    }

    fn ctx(&self) -> Ctx<'_, G> {
        ctx!(self)
    }

    /// Serves until `stop` is readable; then stops every vif.
    pub fn run(mut self, stop: BorrowedFd<'_>) -> Result<(), DaemonError> {
        let add = |fd: BorrowedFd<'_>, token| self.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token));
        add(stop, STOP).map_err(poll_err)?;
        add(self.fatal.as_fd(), FATAL).map_err(poll_err)?;
        // Without these at start there is nothing to serve: the daemon fails.
        let roots = RootWatches::set(&self.xs, &self.root)?;
        self.add_roots(roots)?;
        tracing::info!(root = %self.root, "netback daemon watching");
        let mut events = [EpollEvent::empty(); 32];
        'wait: loop {
            let timeout = match &self.backoff {
                Some(backoff) => EpollTimeout::from(backoff.timeout_ms(Instant::now())),
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => r.map_err(poll_err)?,
            };
            for event in &events[..n] {
                match event.data() {
                    STOP => break 'wait,
                    ROOT => self.on_root()?,
                    RELEASE => self.on_release_watch(),
                    FATAL => self.on_worker_fatal(),
                    token => self.on_frontend(token),
                }
            }
            self.check_connection()?;
            self.publish();
        }
        tracing::info!("netback daemon stopping");
        let ctx = ctx!(self);
        for vif in self.vifs.values_mut() {
            if ctx.config.keep_vifs_on_exit {
                vif.leave_for_next_process(&ctx);
            } else {
                vif.shutdown(&ctx);
            }
        }
        self.publish();
        Ok(())
    }

    fn on_root(&mut self) -> Result<(), DaemonError> {
        let Some(roots) = &self.roots else { return Ok(()) };
        let mut scopes = BTreeSet::new();
        loop {
            match roots.root.try_recv() {
                Ok(Some(event)) => scopes.extend(scope_of(&self.root, &event.path)),
                Ok(None) => break,
                // The connection is gone: `check_connection` takes over.
                Err(_) => return Ok(()),
            }
        }
        if scopes.contains(&Scope::All) {
            return self.scan_all();
        }
        for scope in scopes {
            match scope {
                Scope::Domain(domid) => self.scan_domain(domid),
                Scope::Vif(id) => self.refresh(id),
                Scope::All => {}
            }
        }
        Ok(())
    }

    fn list(&self, path: &str) -> Result<Vec<String>, xenstore::XsError> {
        match self.xs.directory(path) {
            Err(e) if e.is_enoent() => Ok(Vec::new()),
            other => other,
        }
    }

    fn scan_all(&mut self) -> Result<(), DaemonError> {
        let listed = match self.list(&self.root) {
            Ok(listed) => listed,
            // Lost meanwhile: the reconnect scans again.
            Err(e) if e.is_disconnected() => return Ok(()),
            Err(source) => return Err(DaemonError::ReadBackendTree { path: self.root.clone(), source }),
        };
        let mut domids: BTreeSet<DomId> = listed.iter().filter_map(|d| d.parse().ok()).collect();
        domids.extend(self.vifs.keys().map(|id| id.domid));
        for domid in domids {
            self.scan_domain(domid);
        }
        Ok(())
    }

    fn scan_domain(&mut self, domid: DomId) {
        let path = format!("{}/{domid}", self.root);
        let handles = self.list(&path).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing {path}");
            Vec::new()
        });
        let mut ids: BTreeSet<VifId> =
            handles.iter().filter_map(|h| h.parse().ok()).map(|handle| VifId { domid, handle }).collect();
        ids.extend(self.vifs.keys().filter(|id| id.domid == domid));
        for id in ids {
            self.refresh(id);
        }
    }

    /// Probes a new vif, forgets a removed one, re-evaluates a known one.
    fn refresh(&mut self, id: VifId) {
        let backend = format!("{}/{}/{}", self.root, id.domid, id.handle);
        let exists = self.xs.exists(&backend).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "{id}: reading {backend}");
            true
        });
        if !exists {
            self.failed_probes.remove(&id);
            return self.forget(id);
        }
        if self.failed_probes.contains(&id) {
            return;
        }
        if let Some(mut vif) = self.vifs.remove(&id) {
            vif.evaluate(&self.ctx());
            self.settle(vif);
            return;
        }
        let read = |key: &str| read_optional(&self.xs, &format!("{backend}/{key}"));
        let (frontend, frontend_id) = match (read("frontend"), read("frontend-id")) {
            (Ok(Some(f)), Ok(Some(i))) => (f, i),
            (Ok(_), Ok(_)) => return, // not complete yet: a later write will tell us
            (Err(e), _) | (_, Err(e)) => return tracing::warn!("{id}: cannot probe: {e}"),
        };
        let watch = match self.xs.watch(&format!("{frontend}/state"), None) {
            Ok(w) => w,
            Err(e) => return tracing::warn!(error = %e, "{id}: cannot watch the frontend {frontend}"),
        };
        let mut vif = match Vif::adopt(&self.ctx(), id, &backend, &frontend) {
            Ok(Some(adopted)) => adopted,
            // Lost meanwhile: its state file is kept, and it is taken over after the
            // reconnect.
            Err(e) if e.is_connection_lost() => return,
            takeover => {
                let mut vif = match Vif::probe(&self.ctx(), id, backend, frontend) {
                    Ok(Some(v)) => v,
                    Ok(None) => return,
                    // Lost meanwhile: probed again after the reconnect.
                    Err(e) if e.is_connection_lost() => return,
                    Err(e) => return self.probe_failed(id, &e),
                };
                if let Err(e) = takeover {
                    vif.takeover_failed(&self.ctx(), e);
                }
                vif
            }
        };
        self.add_frontend_watch(id, watch);
        if frontend_id.trim() != id.domid.to_string() {
            vif.mismatched_frontend_id(&self.ctx(), &frontend_id);
        }
        vif.evaluate(&self.ctx());
        self.settle(vif);
    }

    fn add_frontend_watch(&mut self, id: VifId, watch: Watch) {
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self.epoll.add(watch.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            tracing::warn!(error = %e, "{id}: cannot poll the frontend watch");
        }
        self.watches.insert(token, (id, watch));
        self.tokens.insert(id, token);
    }

    /// Linux's `xenbus_dev_fatal` for a probe: error nodes and Closing, and no retry.
    fn probe_failed(&mut self, id: VifId, error: &XenbusError) {
        let (value, backend) = (error.node_value(), format!("{}/{}/{}", self.root, id.domid, id.handle));
        tracing::warn!("{id}: probe failed: {value}");
        self.failed_probes.insert(id);
        if let Err(e) = xenbus::write_error(&self.xs, self.config.backend_domid, id, &backend, &value) {
            tracing::warn!(error = %e, "{id}: writing the error node");
        }
        if let Err(e) = xenbus::write_state(&self.xs, &backend, XenbusState::Closing) {
            tracing::warn!(error = %e, "{id}: writing state Closing");
        }
    }

    /// Puts `vif` back, dropping its frontend watch once it is detached.
    fn settle(&mut self, vif: Vif) {
        if vif.detached {
            self.unwatch(vif.id);
        }
        self.vifs.insert(vif.id, vif);
    }

    fn unwatch(&mut self, id: VifId) {
        if let Some((_, watch)) = self.tokens.remove(&id).and_then(|t| self.watches.remove(&t)) {
            let _ = self.epoll.delete(&watch);
        }
    }

    /// The backend directory is gone: stop and drop the vif.
    fn forget(&mut self, id: VifId) {
        self.unwatch(id);
        self.knobs.forget(id);
        if let Some(mut vif) = self.vifs.remove(&id) {
            vif.stop_worker();
            tracing::info!("{id}: backend directory removed, forgotten");
        }
    }

    fn on_frontend(&mut self, token: u64) {
        let Some((id, watch)) = self.watches.get(&token) else { return };
        let id = *id;
        // A watch fails only with its connection: `check_connection` takes over.
        if drain(watch).is_ok() {
            self.refresh(id);
        }
    }

    fn on_release_watch(&mut self) {
        let Some(roots) = &self.roots else { return };
        // Nothing drained (or the connection is gone): nothing to look at.
        if drain(&roots.release).is_ok_and(|n| n > 0) {
            self.on_release();
        }
    }

    fn on_release(&mut self) {
        let ctx = ctx!(self);
        for vif in self.vifs.values_mut() {
            match ctx.xs.is_domain_introduced(vif.id.domid) {
                Ok(false) => vif.domain_gone(&ctx),
                Ok(true) => {}
                Err(e) => tracing::warn!(error = %e, "{}: asking whether domain {} lives", vif.id, vif.id.domid),
            }
        }
    }

    fn on_worker_fatal(&mut self) {
        let ctx = ctx!(self);
        for (id, generation, message) in self.fatal.drain() {
            if let Some(vif) = self.vifs.get_mut(&id) {
                vif.worker_failed(&ctx, generation, message);
            }
        }
    }

    /// Copies every vif's view for the control socket.
    fn publish(&self) {
        let mut status = lock(&self.status);
        status.clear();
        status.extend(self.vifs.values().map(|v| (v.id, v.status())));
    }
}
