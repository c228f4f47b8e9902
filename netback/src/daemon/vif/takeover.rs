//! Taking a vif over from a previous daemon process, and leaving it to the next one: the
//! daemon's half of the hitless restart (`docs/restart.md`; the data path's half is
//! [`Datapath::resume`] and [`crate::vif::journal`]).

use std::sync::Arc;

use grant::{EventChannels, GrantOps};

use super::limits::check_queues;
use super::{Ctx, Vif, create_tap};
use crate::error_chain::Chain;
use crate::vif::journal::VifJournal;
use crate::vif::{Datapath, VifCounters, VifId, WorkerExit};
use crate::xenbus::{self, FrontendState, XenbusError, XenbusState, keys};

impl Vif {
    /// Takes over a vif that a previous daemon process served (hitless restart,
    /// `docs/restart.md`): its backend says InitWait or Connected, its frontend Connected,
    /// and a state file for exactly the rings the frontend publishes exists. Nothing is
    /// written to xenstore. `Ok(None)`: nothing to take over, probe it.
    ///
    /// # Errors
    /// The vif was being served but cannot be taken over (no or a mismatched state file, or
    /// resuming failed): the caller probes it and disables it with this error, so the
    /// frontend reconnects. The state file is deleted then, except when the error is a lost
    /// xenstore connection (the vif is looked at again after the reconnect).
    pub fn adopt<G>(ctx: &Ctx<'_, G>, id: VifId, backend: &str, frontend: &str) -> Result<Option<Vif>, XenbusError>
    where
        G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    {
        let Some(dir) = ctx.config.state_dir.as_deref() else { return Ok(None) };
        let read = |path: String| keys::read_optional(ctx.xs, &path);
        let published = read(format!("{backend}/state"))?.as_deref().and_then(XenbusState::parse);
        let fe = FrontendState::parse(read(format!("{frontend}/state"))?.as_deref());
        let serving = matches!(published, Some(XenbusState::InitWait | XenbusState::Connected))
            && fe == FrontendState::Known(XenbusState::Connected);
        let journal = VifJournal::open(dir, id).unwrap_or_else(|e| {
            tracing::warn!("{id}: ignoring its state file: {}", Chain(&e));
            let _ = std::fs::remove_file(VifJournal::path_in(dir, id));
            None
        });
        let Some(journal) = journal else {
            if published == Some(XenbusState::Connected) && serving {
                // Serving it from the shared indices alone could take responses for
                // requests (docs/restart.md): make the frontend reconnect instead.
                return Err(XenbusError::Takeover("no state file of the previous daemon process".into()));
            }
            return Ok(None);
        };
        if !serving {
            journal.remove();
            return Ok(None);
        }
        let path = journal.path().to_owned();
        let adopted = Self::resume(ctx, id, backend, frontend, journal, published.unwrap_or(XenbusState::InitWait));
        match adopted {
            Ok(vif) => Ok(Some(vif)),
            // Nothing was decided: try again once xenstore is back.
            Err(e) if e.is_connection_lost() => Err(e),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(match e {
                    XenbusError::Takeover(_) => e,
                    other => XenbusError::Takeover(Chain(&other).to_string()),
                })
            }
        }
    }

    fn resume<G>(
        ctx: &Ctx<'_, G>,
        id: VifId,
        backend: &str,
        frontend: &str,
        journal: VifJournal,
        ours: XenbusState,
    ) -> Result<Vif, XenbusError>
    where
        G: GrantOps + EventChannels + Clone + Send + Sync + 'static,
    {
        check_queues(ctx.xs, frontend)?;
        let params = keys::read_connect_params(ctx.xs, frontend, backend)?;
        if params.rings != journal.rings() {
            return Err(XenbusError::Takeover(format!(
                "the frontend publishes {:?}, the state file was kept for {:?}",
                params.rings,
                journal.rings()
            )));
        }
        let tap = create_tap(ctx, id, backend)?;
        let mut vif = Vif {
            id,
            backend: backend.to_owned(),
            frontend: frontend.to_owned(),
            ours,
            frontend_state: FrontendState::Known(XenbusState::Connected),
            worker: None,
            generation: 0,
            counters: Arc::default(),
            knobs: ctx.knobs.vif(id),
            error: None,
            mac: Some(xenbus::format_mac(&params.mac)),
            detached: false,
            domain_gone: false,
            tap,
            journal: None,
            lost_write: false,
        };
        let config = vif.datapath_config(ctx, params.features);
        let (datapath, resumed) = Datapath::resume(ctx.grants.clone(), id, &params.rings, config, journal)
            .map_err(XenbusError::ConnectDatapath)?;
        VifCounters::add(&vif.counters.tx_dropped_restart, resumed.tx_fallbacks.into());
        VifCounters::add(&vif.counters.rx_dropped_restart, resumed.rx_fallbacks.into());
        vif.start_worker(ctx, datapath)?;
        tracing::info!(
            tx_fallbacks = resumed.tx_fallbacks,
            rx_fallbacks = resumed.rx_fallbacks,
            "{id}: taken over from the previous daemon process, {ours:?}"
        );
        Ok(vif)
    }

    /// The daemon stops and leaves the vif to the next process (`--keep-vifs-on-exit`): the
    /// worker stops between two passes (every consumed slot answered, the state file
    /// consistent), and the state file and a persistent TAP stay; xenstore is not touched.
    /// A vif without a state file is shut down as usual.
    pub fn leave_for_next_process<G>(&mut self, ctx: &Ctx<'_, G>) {
        if self.journal.is_none() {
            return self.shutdown(ctx);
        }
        if let Some(worker) = self.worker.take() {
            match worker.stop() {
                WorkerExit::Stopped => {
                    if let Some(tap) = &self.tap {
                        tap.keep_after_exit();
                    }
                    self.journal = None;
                    tracing::info!("{}: left to the next daemon process", self.id);
                }
                exit => {
                    tracing::warn!(?exit, "{}: the worker did not stop cleanly; closing the vif", self.id);
                    self.forget_journal();
                    self.set_state(ctx, XenbusState::Closing);
                }
            }
        }
    }
}
