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
pub mod crash;
mod event_loop;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod histogram;
pub mod journal;
pub mod knobs;
mod mtu;
mod pacing;
mod pass;
mod rx;
mod rx_prepare;
mod rx_stall;
mod tx;
mod tx_parse;
mod worker;

use std::fmt;

use grant::{DomId, EvtchnPort, GrantRef};

pub use self::connect::{ConnectError, Datapath, Resumed};
pub use self::counters::{VifCounters, VifStats};
pub use self::histogram::{BUCKETS, BatchCounters, BatchStats, Histogram, HistogramStats, bucket_label};
pub use self::knobs::{KnobError, KnobValues, Knobs, PartialKnobs};
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

/// What the frontend said it can do (`feature-*` keys of its directory), which decides how
/// frames are delivered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrontendFeatures {
    /// `feature-sg`: takes multi-slot RX frames (and may send multi-slot TX frames).
    pub sg: bool,
    /// `feature-gso-tcpv4`: takes TCPv4 GSO frames with a GSO extra.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: takes TCPv6 GSO frames.
    pub gso_tcpv6: bool,
    /// Not `feature-no-csum-offload`: takes IPv4 frames with a blank checksum (on unless
    /// the frontend says otherwise, as netif.h specifies).
    pub csum_offload: bool,
    /// `feature-ipv6-csum-offload`: takes IPv6 frames with a blank checksum (off unless said).
    pub ipv6_csum_offload: bool,
    /// `feature-rx-notify`: the frontend notifies when it posts RX buffers.
    pub rx_notify: bool,
}

impl Default for FrontendFeatures {
    /// netif.h's defaults for keys that are absent: no SG, no GSO, IPv4 checksum offload on,
    /// IPv6 checksum offload off.
    fn default() -> Self {
        Self {
            sg: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
            csum_offload: true,
            ipv6_csum_offload: false,
            rx_notify: false,
        }
    }
}

/// Tunables of one vif's data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Most TX requests taken from the ring before their copies are submitted as one batch.
    pub tx_batch: usize,
    /// Most frames delivered into posted RX buffers per grant-copy batch.
    pub rx_batch: usize,
    /// What the frontend negotiated.
    pub features: FrontendFeatures,
}

impl Default for DatapathConfig {
    /// Batches of 64, as Linux netback's grant-copy batches; netif.h's default features.
    fn default() -> Self {
        Self { tx_batch: 64, rx_batch: 64, features: FrontendFeatures::default() }
    }
}
