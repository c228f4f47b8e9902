//! One vif as the daemon tracks it: what we last wrote, its data path, its counters; and
//! the application of [`xenbus::decide`]'s steps to xenstore, the switch and the worker.

mod limits;
mod takeover;

use self::limits::{check_queues, check_rate};

use std::sync::Arc;

use grant::{EventChannels, GrantOps};
use xenstore::Client;

use super::DaemonConfig;
use super::knobs::{KnobRegistry, read_backend_knobs};
use super::status::{FatalQueue, VifStatus};
use super::uplink::VifUplink;
use crate::error_chain::Chain;
use crate::switch::Switch;
use crate::tap::Tap;
use crate::vif::journal::VifJournal;
use crate::vif::{Datapath, DatapathConfig, FrontendFeatures, Knobs, VifCounters, VifId, WorkerExit, WorkerHandle};
use crate::xenbus::{self, FrontendState, Hotplug, Inputs, Step, XenbusError, XenbusState, keys};

/// What applying steps needs, borrowed from the daemon.
pub(super) struct Ctx<'a, G> {
    pub xs: &'a Client,
    pub grants: &'a G,
    pub switch: &'a Arc<Switch>,
    pub config: &'a DaemonConfig,
    pub fatal: &'a Arc<FatalQueue>,
    pub knobs: &'a KnobRegistry,
}

/// A vif the daemon probed.
#[derive(Debug)]
pub(super) struct Vif {
    pub id: VifId,
    pub backend: String,
    pub frontend: String,
    ours: XenbusState,
    frontend_state: FrontendState,
    worker: Option<WorkerHandle>,
    /// Bumped at every connect, so a late failure report of an old worker is ignored.
    generation: u64,
    counters: Arc<VifCounters>,
    /// Live knobs, shared with the worker and the control socket (kept across reconnects).
    knobs: Arc<Knobs>,
    error: Option<String>,
    mac: Option<String>,
    /// The toolstack detached it: no more frontend watch, no reconnect.
    pub detached: bool,
    /// The guest's domain is gone (`@releaseDomain`): whatever its frontend directory still
    /// says, nobody is there, so the frontend counts as missing.
    domain_gone: bool,
    /// The vif's TAP device, if its uplink is one: created at probe (before InitWait, so
    /// the hotplug script finds it), kept across reconnects, removed with the vif.
    tap: Option<Arc<Tap>>,
    /// The running data path's state file (hitless restart), deleted when it stops.
    journal: Option<Arc<VifJournal>>,
    /// A state or error write of ours was lost with the xenstore connection: it is written
    /// again by the first evaluation (after the reconnect) that finds nothing else to do.
    lost_write: bool,
}

impl Vif {
    /// Linux's `netback_probe`: features and InitWait. The caller watches the frontend.
    /// `None` if the directory went away meanwhile.
    pub fn probe<G>(
        ctx: &Ctx<'_, G>,
        id: VifId,
        backend: String,
        frontend: String,
    ) -> Result<Option<Vif>, XenbusError> {
        let tap = create_tap(ctx, id, &backend)?;
        if !xenbus::write_probe(ctx.xs, &backend)? {
            return Ok(None);
        }
        tracing::info!("{id}: probed, Initialising -> InitWait");
        let mac = keys::read_mac(ctx.xs, &backend).ok().map(|m| xenbus::format_mac(&m));
        Ok(Some(Vif {
            id,
            backend,
            frontend,
            ours: XenbusState::InitWait,
            frontend_state: FrontendState::Missing,
            worker: None,
            generation: 0,
            counters: Arc::default(),
            knobs: ctx.knobs.vif(id),
            error: None,
            mac,
            detached: false,
            domain_gone: false,
            tap,
            journal: None,
            lost_write: false,
        }))
    }

    /// A copy for the control socket.
    pub fn status(&self) -> VifStatus {
        VifStatus {
            state: self.ours,
            frontend_state: self.frontend_state.number(),
            mac: self.mac.clone(),
            error: self.error.clone(),
            counters: self.counters.clone(),
            running: self.worker.is_some(),
        }
    }

    fn inputs(&self, xs: &Client) -> Result<Inputs, XenbusError> {
        let read = |path: String| keys::read_optional(xs, &path);
        let fe = read(format!("{}/state", self.frontend))?;
        let online = read(format!("{}/online", self.backend))?;
        let script = read(format!("{}/script", self.backend))?.is_some();
        let hotplug = read(format!("{}/hotplug-status", self.backend))?;
        let published = read(format!("{}/state", self.backend))?;
        Ok(Inputs {
            ours: self.ours,
            running: self.worker.is_some(),
            frontend: if self.domain_gone { FrontendState::Missing } else { FrontendState::parse(fe.as_deref()) },
            // Only an explicit `0` detaches (the toolstack writes `1` at attach).
            online: online.as_deref().map(str::trim) != Some("0"),
            hotplug: Hotplug::from_nodes(script, hotplug.as_deref()),
            published: published.as_deref().and_then(XenbusState::parse),
        })
    }

    /// Re-reads xenstore and takes the steps it calls for (a connect is followed by a
    /// second look, so an open hotplug gate goes Connected at once).
    pub fn evaluate<G>(&mut self, ctx: &Ctx<'_, G>)
    where
        G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    {
        if self.worker.as_ref().is_some_and(WorkerHandle::is_finished) {
            self.forget_journal();
            // Its own report may still wait in the fatal queue: take the reason from the
            // thread itself, so the error node names it whichever comes first.
            let message = match self.worker.take().map(WorkerHandle::stop) {
                Some(WorkerExit::Fatal(e)) => Chain(&e).to_string(),
                Some(WorkerExit::Panicked) => "the worker thread panicked".into(),
                _ => "the worker thread ended".into(),
            };
            self.fatal(ctx, XenbusError::Datapath(message));
        }
        for _ in 0..3 {
            let inputs = match self.inputs(ctx.xs) {
                Ok(i) => i,
                Err(e) => return self.fatal(ctx, e),
            };
            self.frontend_state = inputs.frontend;
            let step = xenbus::decide(inputs);
            tracing::debug!(?inputs, ?step, "{}: evaluated", self.id);
            match step {
                Step::Nothing => return self.republish(ctx),
                Step::Connect => {
                    if let Err(e) = self.connect(ctx) {
                        return self.fatal(ctx, e);
                    }
                }
                Step::GoConnected => return self.set_state(ctx, XenbusState::Connected),
                Step::Disconnect(state) => {
                    self.stop_worker();
                    return self.set_state(ctx, state);
                }
                Step::Detach => {
                    self.stop_worker();
                    self.detached = true;
                    return self.set_state(ctx, XenbusState::Closed);
                }
                Step::Fatal(message) => return self.fatal(ctx, XenbusError::Protocol(message)),
            }
        }
    }

    /// Linux's `connect`: read the keys, map and bind, plug into the switch, start the
    /// worker. Stays InitWait (the hotplug gate decides when to go Connected).
    fn connect<G>(&mut self, ctx: &Ctx<'_, G>) -> Result<(), XenbusError>
    where
        G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    {
        check_queues(ctx.xs, &self.frontend)?;
        let params = keys::read_connect_params(ctx.xs, &self.frontend, &self.backend)?;
        check_rate(ctx.xs, &self.backend, self.id);
        self.mac = Some(xenbus::format_mac(&params.mac));
        let config = self.datapath_config(ctx, params.features);
        let mut datapath = Datapath::connect(ctx.grants.clone(), self.id, &params.rings, config)
            .map_err(XenbusError::ConnectDatapath)?;
        if let Some(dir) = &ctx.config.state_dir {
            datapath = datapath.keep_journal(dir, &params.rings).map_err(XenbusError::ConnectDatapath)?;
        }
        self.start_worker(ctx, datapath)?;
        tracing::info!(rings = ?params.rings, features = ?params.features, "{}: data path running", self.id);
        let stale = self.error.take().is_some() || ctx.xs.exists(&format!("{}/error", self.backend)).unwrap_or(false);
        if let Err(e) =
            stale.then(|| xenbus::remove_error(ctx.xs, ctx.config.backend_domid, self.id, &self.backend)).transpose()
        {
            tracing::warn!(error = %e, "{}: removing the stale error node", self.id);
        }
        Ok(())
    }

    /// The data path's configuration: the backend's `netback-knobs/` applied to the live
    /// knobs, and what the frontend negotiated.
    fn datapath_config<G>(&self, ctx: &Ctx<'_, G>, features: FrontendFeatures) -> DatapathConfig {
        let change = read_backend_knobs(ctx.xs, &self.backend, self.id);
        if let Err(e) = self.knobs.apply(&change) {
            tracing::warn!("{}: ignoring the knobs of {}/{}: {e}", self.id, self.backend, super::KNOBS_DIR);
        }
        let values = self.knobs.get();
        let (tx_batch, rx_batch) = (values.tx_drain_max as usize, values.rx_drain_max as usize);
        DatapathConfig { tx_batch, rx_batch, features }
    }

    /// Plugs `datapath` into the vif's uplink and starts its worker.
    fn start_worker<G>(&mut self, ctx: &Ctx<'_, G>, datapath: Datapath<G>) -> Result<(), XenbusError>
    where
        G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    {
        self.journal = datapath.journal().cloned();
        let port = match &self.tap {
            Some(tap) => VifUplink::tap(tap),
            None => VifUplink::Switch(ctx.switch.add_port(&self.id.to_string()).map_err(XenbusError::AddSwitchPort)?),
        };
        self.generation += 1;
        let (queue, generation) = (ctx.fatal.clone(), self.generation);
        let on_fatal =
            Box::new(move |id, e: &crate::vif::DatapathError| queue.push(id, generation, Chain(e).to_string()));
        let worker = datapath
            .spawn_with_knobs(port, self.counters.clone(), self.knobs.clone(), on_fatal)
            .map_err(XenbusError::ConnectDatapath);
        match worker {
            Ok(worker) => self.worker = Some(worker),
            Err(e) => {
                self.forget_journal();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the state file: the data path it describes is gone.
    fn forget_journal(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.remove();
        }
    }

    /// A worker reported a protocol violation (ignored if it belongs to an older connection).
    pub fn worker_failed<G>(&mut self, ctx: &Ctx<'_, G>, generation: u64, message: String) {
        if generation == self.generation && self.worker.is_some() {
            self.fatal(ctx, XenbusError::Datapath(message));
        }
    }

    /// Linux's `xenbus_dev_fatal`: error nodes, stop, Closing.
    fn fatal<G>(&mut self, ctx: &Ctx<'_, G>, error: XenbusError) {
        if error.is_connection_lost() {
            // Not the vif's doing: it stays as it is until the daemon has reconnected and
            // evaluates it again.
            return tracing::debug!("{}: {}", self.id, Chain(&error));
        }
        let value = error.node_value();
        if self.error.as_ref() == Some(&value) && self.ours == XenbusState::Closing && self.worker.is_none() {
            // Already disabled for this reason: writing again would only fire our watch.
            return;
        }
        tracing::warn!("{}: disabled: {value}", self.id);
        if let Err(e) = xenbus::write_error(ctx.xs, ctx.config.backend_domid, self.id, &self.backend, &value) {
            self.lost_write |= e.is_connection_lost();
            tracing::warn!(error = %e, "{}: writing the error node", self.id);
        }
        self.error = Some(value);
        self.stop_worker();
        self.set_state(ctx, XenbusState::Closing);
    }

    /// The vif was served by the previous daemon process and cannot be taken over: disable
    /// it, so that the frontend reconnects.
    pub fn takeover_failed<G>(&mut self, ctx: &Ctx<'_, G>, error: XenbusError) {
        self.fatal(ctx, error);
    }

    /// `frontend-id` does not name the domain of the backend directory: disable the vif.
    pub fn mismatched_frontend_id<G>(&mut self, ctx: &Ctx<'_, G>, value: &str) {
        let path = format!("{}/frontend-id", self.backend);
        let expected = "the domain id in the backend path";
        self.fatal(ctx, XenbusError::ParseKey { path, value: value.to_owned(), expected });
    }

    /// `@releaseDomain` and the domain is gone: stop, Closed.
    pub fn domain_gone<G>(&mut self, ctx: &Ctx<'_, G>) {
        self.domain_gone = true;
        if self.worker.is_some() || self.ours != XenbusState::Closed {
            tracing::info!("{}: domain {} is gone", self.id, self.id.domid);
            self.stop_worker();
            self.set_state(ctx, XenbusState::Closed);
        }
    }

    /// The daemon stops: stop the worker and tell a connected frontend Closing.
    pub fn shutdown<G>(&mut self, ctx: &Ctx<'_, G>) {
        if self.worker.is_some() {
            self.stop_worker();
            self.set_state(ctx, XenbusState::Closing);
        }
    }

    /// Stops the worker, if any (the switch port goes with it), and deletes its state file.
    pub fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            match worker.stop() {
                WorkerExit::Panicked => tracing::warn!("{}: the worker thread panicked", self.id),
                exit => tracing::debug!(?exit, "{}: worker stopped", self.id),
            }
        }
        self.forget_journal();
    }

    fn set_state<G>(&mut self, ctx: &Ctx<'_, G>, state: XenbusState) {
        if state != self.ours {
            tracing::info!("{}: {:?} -> {:?}", self.id, self.ours, state);
            self.ours = state;
        }
        if let Err(e) = xenbus::write_state(ctx.xs, &self.backend, state) {
            self.lost_write |= e.is_connection_lost();
            tracing::warn!(error = %e, "{}: writing state {state}", self.id);
        }
    }

    /// Writes again what a lost xenstore connection swallowed: the error node, our state.
    fn republish<G>(&mut self, ctx: &Ctx<'_, G>) {
        if !std::mem::take(&mut self.lost_write) {
            return;
        }
        if let Some(value) = &self.error
            && let Err(e) = xenbus::write_error(ctx.xs, ctx.config.backend_domid, self.id, &self.backend, value)
        {
            self.lost_write |= e.is_connection_lost();
            tracing::warn!(error = %e, "{}: writing the error node", self.id);
        }
        self.set_state(ctx, self.ours);
    }
}

/// The vif's TAP device, if [`DaemonConfig::uplink`] gives it one: named by the backend's
/// `vifname` node, else `vif<domid>.<handle>` like the kernel's. It stays down; the hotplug
/// script brings it up and puts it on the bridge.
fn create_tap<G>(ctx: &Ctx<'_, G>, id: VifId, backend: &str) -> Result<Option<Arc<Tap>>, XenbusError> {
    let read = |key: &str| keys::read_optional(ctx.xs, &format!("{backend}/{key}"));
    let asked = read("script")?.is_some() || read("bridge")?.is_some();
    if !ctx.config.uplink.wants_tap(asked) {
        return Ok(None);
    }
    let name = read("vifname")?.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or(id.to_string());
    // Persistent when a restarted daemon may take the vif over: it must find the device
    // still on its bridge.
    let create = if ctx.config.state_dir.is_some() { Tap::create_persistent } else { Tap::create };
    let tap = create(&name).map_err(|source| XenbusError::CreateTap { name: name.clone(), source })?;
    tracing::info!("{id}: TAP device {name} created");
    Ok(Some(Arc::new(tap)))
}
