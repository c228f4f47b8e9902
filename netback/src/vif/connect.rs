//! Connecting a vif's data path: mapping the frontend's ring pages and binding its event
//! channels. Every failure here is caused by what the frontend published, so each is
//! reported with the key and value that caused it.

use grant::{Access, EventChannels, EvtchnError, EvtchnPort, GrantError, GrantMapping, GrantOps, GrantRef};
use netif::{BackRing, RingError, RxRing, TxRing};

use super::worker::FatalCallback;
use super::{DatapathConfig, EventChannelSpec, RingParams, VifCounters, VifId, WorkerHandle};
use crate::port::Uplink;
use std::sync::Arc;

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
        let tx_page = grants
            .map(id.domid, tx_ref, Access::ReadWrite)
            .map_err(|source| ConnectError::MapTxRing { gref: tx_ref, source })?;
        let rx_page = grants
            .map(id.domid, rx_ref, Access::ReadWrite)
            .map_err(|source| ConnectError::MapRxRing { gref: rx_ref, source })?;
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
        Ok(Self { id, grants, tx, rx, tx_channel, rx_channel, config })
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
