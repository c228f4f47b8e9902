//! One vif's data path: the shared TX/RX rings of a connected frontend, its event
//! channel(s), and the worker thread that moves frames between them and an [`Uplink`].
//!
//! [`Datapath::connect`] maps the two ring pages and binds the event channels (the part of
//! Linux's `connect_data_rings` that can fail because of what the frontend wrote);
//! [`Datapath::spawn`] starts the worker. The worker ends when told to
//! ([`WorkerHandle::stop`]) or on a protocol violation of the frontend, which it reports
//! through the `on_fatal` callback so the xenbus side can disable the vif.
//!
//! [`Uplink`]: crate::port::Uplink

mod connect;
mod counters;
mod event_loop;
mod rx;
mod tx;
mod tx_parse;
mod worker;

use std::fmt;

use grant::{DomId, EvtchnPort, GrantRef};

pub use self::connect::{ConnectError, Datapath};
pub use self::counters::{VifCounters, VifStats};
pub use self::worker::{DatapathError, FatalCallback, WorkerExit, WorkerHandle};

/// Names a vif: the guest's domain and the device handle (`backend/vif/<domid>/<handle>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct VifId {
    /// The frontend's domain.
    pub domid: DomId,
    /// The device handle.
    pub handle: u32,
}

impl fmt::Display for VifId {
    /// The kernel's interface name for this vif: `vif<domid>.<handle>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vif{}.{}", self.domid, self.handle)
    }
}

/// How the frontend's event channels are laid out (`event-channel`, or the split
/// `event-channel-tx` / `event-channel-rx` pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventChannelSpec {
    /// One port for both directions.
    Shared(EvtchnPort),
    /// `feature-split-event-channels`: one port per direction.
    Split {
        /// Port notified for TX requests and TX responses.
        tx: EvtchnPort,
        /// Port notified for RX requests and RX responses.
        rx: EvtchnPort,
    },
}

/// What the frontend published for one queue: its two ring grants and its event channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingParams {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// The event channel(s).
    pub event_channels: EventChannelSpec,
}

/// Tunables of one vif's data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Most TX requests taken from the ring before their copies are submitted as one batch.
    pub tx_batch: usize,
    /// Most frames delivered into posted RX buffers per grant-copy batch.
    pub rx_batch: usize,
}

impl Default for DatapathConfig {
    /// Batches of 64, as Linux netback's grant-copy batches.
    fn default() -> Self {
        Self { tx_batch: 64, rx_batch: 64 }
    }
}
