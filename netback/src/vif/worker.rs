//! The per-vif worker thread: one epoll loop over typed event tokens (TX event, RX event,
//! uplink queue, kill), serving the TX and RX rings.

use netif::RingError;
use std::thread::JoinHandle;

use super::VifId;

/// Called once, on the worker thread, when the worker stops because of the frontend.
pub type FatalCallback = Box<dyn FnOnce(VifId, &DatapathError) + Send>;

/// Why a worker stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The frontend broke the TX ring protocol (indices overflowing the ring, an endless
    /// chain, a bad extra-info slot).
    #[error("TX ring protocol violation: {0}")]
    TxProtocol(String),
    /// The frontend broke the RX ring protocol.
    #[error("RX ring protocol violation: {0}")]
    RxProtocol(String),
    /// A ring operation failed.
    #[error("{ring} ring")]
    Ring {
        /// "TX" or "RX".
        ring: &'static str,
        /// What failed.
        #[source]
        source: RingError,
    },
    /// The event channel failed (the domain is gone).
    #[error("event channel")]
    EventChannel(#[source] grant::EvtchnError),
    /// A grant-copy batch could not be submitted at all (the domain is gone).
    #[error("grant copy")]
    GrantCopy(#[source] grant::GrantError),
    /// Waiting for events.
    #[error("epoll")]
    Poll(#[source] std::io::Error),
}

/// How a worker ended.
#[derive(Debug)]
pub enum WorkerExit {
    /// Stopped by [`WorkerHandle::stop`].
    Stopped,
    /// Stopped on its own (already reported through the fatal callback).
    Fatal(DatapathError),
    /// The worker thread panicked.
    Panicked,
}

/// A running worker. Dropping it stops the worker too (as [`WorkerHandle::stop`]).
#[derive(Debug)]
pub struct WorkerHandle {
    pub(super) id: VifId,
    pub(super) thread: Option<JoinHandle<Option<DatapathError>>>,
}

impl WorkerHandle {
    /// The vif this worker serves.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// Tells the worker to stop, and waits for it. When this returns the rings are unmapped
    /// and the event channels unbound.
    pub fn stop(self) -> WorkerExit {
        todo!()
    }

    /// Whether the worker thread has ended (on its own, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}
