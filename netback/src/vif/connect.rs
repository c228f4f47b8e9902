//! Connecting a vif's data path: mapping the frontend's ring pages and binding its event
//! channels. Every failure here is caused by what the frontend published, so each is
//! reported with the key and value that caused it.

use grant::{
    Access, EventChannel, EventChannels, EvtchnError, EvtchnPort, GrantError, GrantMapping, GrantOps, GrantRef,
};
use netif::abi::NETIF_RSP_NULL;
use netif::{BackRing, RingError, RingKind, RingMemory, RxResponse, RxRing, TxResponse, TxRing};

use super::journal::{JournalError, SavedIndices, Side, VifJournal};
use super::worker::FatalCallback;
use super::{DatapathConfig, EventChannelSpec, RingParams, VifCounters, VifId, WorkerHandle};
use crate::port::Uplink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resumed data path retries binding a channel the dead process may still hold
/// (the sim host closes a dead process's ports when it notices the closed socket).
const REBIND_PATIENCE: Duration = Duration::from_secs(2);

/// Failures of [`Datapath::connect`] and [`Datapath::spawn`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Mapping the page named by `tx-ring-ref`.
    #[error("mapping tx-ring-ref {gref}")]
    MapTxRing {
        /// The grant reference.
        gref: GrantRef,
        /// Why the map failed.
        #[source]
        source: GrantError,
    },
    /// Mapping the page named by `rx-ring-ref`.
    #[error("mapping rx-ring-ref {gref}")]
    MapRxRing {
        /// The grant reference.
        gref: GrantRef,
        /// Why the map failed.
        #[source]
        source: GrantError,
    },
    /// The mapped TX ring's indices are inconsistent.
    #[error("attaching the TX ring")]
    AttachTxRing(#[source] RingError),
    /// The mapped RX ring's indices are inconsistent.
    #[error("attaching the RX ring")]
    AttachRxRing(#[source] RingError),
    /// Binding the frontend's event channel `port`.
    #[error("binding event channel {port}")]
    BindEventChannel {
        /// The frontend's port.
        port: EvtchnPort,
        /// Why the bind failed.
        #[source]
        source: EvtchnError,
    },
    /// Creating the worker's epoll instance or kill eventfd.
    #[error("setting up the worker's poll set")]
    PollSetup(#[source] std::io::Error),
    /// Starting the worker thread.
    #[error("starting the worker thread")]
    SpawnWorker(#[source] std::io::Error),
    /// Creating the state file of a hitless restart.
    #[error("keeping the state file")]
    Journal(#[source] JournalError),
    /// The TX ring's indices do not fit those the state file saved.
    #[error("resuming the TX ring at the saved indices")]
    ResumeTxRing(#[source] RingError),
    /// The RX ring's indices do not fit those the state file saved.
    #[error("resuming the RX ring at the saved indices")]
    ResumeRxRing(#[source] RingError),
    /// Notifying the frontend after resuming.
    #[error("notifying the frontend after resuming")]
    NotifyResumed(#[source] EvtchnError),
}

/// What [`Datapath::resume`] found: consumed slots the dead process had not answered, now
/// answered with their fallback (ERROR, or NULL for a TX extra).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resumed {
    /// TX slots answered so.
    pub tx_fallbacks: u32,
    /// RX slots answered so.
    pub rx_fallbacks: u32,
}

/// A connected but not yet running data path: both rings mapped and attached, the event
/// channel(s) bound. Dropping it unmaps and unbinds everything.
pub struct Datapath<G: GrantOps + EventChannels> {
    pub(super) id: VifId,
    pub(super) grants: G,
    pub(super) tx: BackRing<TxRing, GrantMapping>,
    pub(super) rx: BackRing<RxRing, GrantMapping>,
    /// The TX channel, or the only one.
    pub(super) tx_channel: G::Channel,
    /// The RX channel when split.
    pub(super) rx_channel: Option<G::Channel>,
    pub(super) config: DatapathConfig,
    /// The state file kept for a hitless restart, if any.
    pub(super) journal: Option<Arc<VifJournal>>,
}

impl<G: GrantOps + EventChannels> std::fmt::Debug for Datapath<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").field("id", &self.id).field("config", &self.config).finish_non_exhaustive()
    }
}

impl<G: GrantOps + EventChannels + Send + 'static> Datapath<G> {
    /// Maps `params`' ring pages read-write from `id.domid`, attaches both back rings and
    /// binds the event channel(s).
    pub fn connect(grants: G, id: VifId, params: &RingParams, config: DatapathConfig) -> Result<Self, ConnectError> {
        let (tx_ref, rx_ref) = (params.tx_ring_ref, params.rx_ring_ref);
        let (tx_page, rx_page) = map_rings(&grants, id, params)?;
        let tx = BackRing::attach(tx_page).map_err(ConnectError::AttachTxRing)?;
        let rx = BackRing::attach(rx_page).map_err(ConnectError::AttachRxRing)?;
        let bind = |port| {
            grants.bind_interdomain(id.domid, port).map_err(|source| ConnectError::BindEventChannel { port, source })
        };
        let (tx_channel, rx_channel) = match params.event_channels {
            EventChannelSpec::Shared(port) => (bind(port)?, None),
            EventChannelSpec::Split { tx, rx } => (bind(tx)?, Some(bind(rx)?)),
        };
        tracing::debug!(vif = %id, tx_ref, rx_ref, channels = ?params.event_channels, "data path connected");
        Ok(Self { id, grants, tx, rx, tx_channel, rx_channel, config, journal: None })
    }

    /// Keeps the private ring indices in a state file in `dir`, so that a new daemon process
    /// can take the vif over ([`Datapath::resume`]).
    pub fn keep_journal(mut self, dir: &Path, params: &RingParams) -> Result<Self, ConnectError> {
        let (tx, rx) = (saved(&self.tx), saved(&self.rx));
        let journal = VifJournal::create(dir, self.id, params, tx, rx).map_err(ConnectError::Journal)?;
        self.journal = Some(Arc::new(journal));
        Ok(self)
    }

    /// Takes over the data path a dead daemon process served, without the frontend
    /// reconnecting (`docs/restart.md`): maps the rings again, attaches them at the indices
    /// `journal` saved (checked against the shared ones as for any frontend), answers every
    /// slot the dead process consumed but did not answer with its fallback, publishes,
    /// binds the channels again and notifies the frontend once. `params` are what the
    /// frontend publishes now; the caller checked they match the journal's.
    pub fn resume(
        grants: G,
        id: VifId,
        params: &RingParams,
        config: DatapathConfig,
        journal: VifJournal,
    ) -> Result<(Self, Resumed), ConnectError> {
        let (tx_page, rx_page) = map_rings(&grants, id, params)?;
        let at = |side| journal.saved(side);
        let (t, r) = (at(Side::Tx), at(Side::Rx));
        let mut tx = BackRing::attach_at(tx_page, t.req_cons, t.rsp_prod_pvt).map_err(ConnectError::ResumeTxRing)?;
        let mut rx = BackRing::attach_at(rx_page, r.req_cons, r.rsp_prod_pvt).map_err(ConnectError::ResumeRxRing)?;
        let tx_fallbacks = answer_fallbacks(&mut tx, &journal, Side::Tx, |id, status| TxResponse { id, status })
            .map_err(ConnectError::ResumeTxRing)?;
        let rx_fallbacks = answer_fallbacks(&mut rx, &journal, Side::Rx, |id, status| {
            // An RX fallback is always an error: no offset, no flags, no data.
            RxResponse { id, offset: 0, flags: 0, status }
        })
        .map_err(ConnectError::ResumeRxRing)?;
        // Published whatever rsp_event says: the frontend is notified below anyway.
        tx.push_responses_and_check_notify();
        rx.push_responses_and_check_notify();
        let bind = |port| bind_patiently(&grants, id, port);
        let (tx_channel, rx_channel) = match params.event_channels {
            EventChannelSpec::Shared(port) => (bind(port)?, None),
            EventChannelSpec::Split { tx, rx } => (bind(tx)?, Some(bind(rx)?)),
        };
        // Its notifications while nobody was bound were lost, and so were ours: make it
        // look at both rings again.
        tx_channel.notify().map_err(ConnectError::NotifyResumed)?;
        if let Some(channel) = &rx_channel {
            channel.notify().map_err(ConnectError::NotifyResumed)?;
        }
        let resumed = Resumed { tx_fallbacks, rx_fallbacks };
        tracing::info!(vif = %id, ?resumed, tx = ?tx, rx = ?rx, "data path resumed from the state file");
        let journal = Some(Arc::new(journal));
        Ok((Self { id, grants, tx, rx, tx_channel, rx_channel, config, journal }, resumed))
    }

    /// The state file, if kept.
    pub fn journal(&self) -> Option<&Arc<VifJournal>> {
        self.journal.as_ref()
    }

    /// Starts the worker thread, which serves the rings against `uplink` and counts into
    /// `counters`. `on_fatal` runs on the worker thread if it stops on its own because the
    /// frontend broke the protocol (never after [`WorkerHandle::stop`] was called).
    pub fn spawn<U: Uplink + 'static>(
        self,
        uplink: U,
        counters: Arc<VifCounters>,
        on_fatal: FatalCallback,
    ) -> Result<WorkerHandle, ConnectError> {
        super::worker::spawn(self, uplink, counters, on_fatal)
    }
}

/// Maps the frontend's two ring pages read-write.
fn map_rings<G: GrantOps>(
    grants: &G,
    id: VifId,
    params: &RingParams,
) -> Result<(GrantMapping, GrantMapping), ConnectError> {
    let (tx_ref, rx_ref) = (params.tx_ring_ref, params.rx_ring_ref);
    let tx = grants
        .map(id.domid, tx_ref, Access::ReadWrite)
        .map_err(|source| ConnectError::MapTxRing { gref: tx_ref, source })?;
    let rx = grants
        .map(id.domid, rx_ref, Access::ReadWrite)
        .map_err(|source| ConnectError::MapRxRing { gref: rx_ref, source })?;
    Ok((tx, rx))
}

fn saved<K: RingKind, M: RingMemory>(ring: &BackRing<K, M>) -> SavedIndices {
    SavedIndices { req_cons: ring.req_cons(), rsp_prod_pvt: ring.rsp_prod_pvt() }
}

/// Writes the journal's fallback into every consumed, unanswered slot of `ring`, then tells
/// the journal they are answered. Returns how many.
fn answer_fallbacks<K: RingKind, M: RingMemory>(
    ring: &mut BackRing<K, M>,
    journal: &VifJournal,
    side: Side,
    response: impl Fn(u16, i16) -> K::Rsp,
) -> Result<u32, RingError> {
    let pending = ring.unanswered_requests();
    for _ in 0..pending {
        let (id, status) = journal.fallback(side, ring.rsp_prod_pvt());
        tracing::debug!(?side, idx = ring.rsp_prod_pvt(), id, null = status == NETIF_RSP_NULL, "fallback response");
        ring.push_response(response(id, status))?;
    }
    journal.answered_to(side, ring.rsp_prod_pvt());
    Ok(pending)
}

/// Binds `port` of the frontend, retrying for [`REBIND_PATIENCE`] while the dead process's
/// end may still be bound.
fn bind_patiently<G: EventChannels>(grants: &G, id: VifId, port: EvtchnPort) -> Result<G::Channel, ConnectError> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match grants.bind_interdomain(id.domid, port) {
            Ok(channel) => return Ok(channel),
            Err(source) if Instant::now() >= deadline => return Err(ConnectError::BindEventChannel { port, source }),
            Err(e) => {
                tracing::debug!(vif = %id, port, error = %e, "rebinding: the old end is not closed yet");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
