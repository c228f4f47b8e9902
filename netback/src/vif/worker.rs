//! The per-vif worker thread: one epoll loop over typed event tokens (TX event, RX event,
//! uplink queue, kill), serving the TX and RX rings.

use netif::RingError;
use nix::sys::epoll::{Epoll, EpollCreateFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use grant::{EventChannels, GrantOps};

use super::event_loop::Worker;
use super::knobs::{KnobValues, Knobs};
use super::{ConnectError, Datapath, VifCounters, VifId};
use crate::port::Uplink;

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

/// Whether a stop was requested, shared by the handle and the worker.
///
/// Invariant: the worker calls `on_fatal` while holding this lock and only if no stop was
/// requested, and [`WorkerHandle::stop`] sets the flag under the same lock before waking the
/// worker; so `on_fatal` either ran completely before the stop request or never runs.
pub(super) type StopFlag = Arc<Mutex<bool>>;

/// A running worker. Dropping it stops the worker too (as [`WorkerHandle::stop`]).
#[derive(Debug)]
pub struct WorkerHandle {
    pub(super) id: VifId,
    pub(super) thread: Option<JoinHandle<Option<DatapathError>>>,
    /// Written to wake the worker for a stop; the worker's epoll set watches it.
    kill: EventFd,
    stop_requested: StopFlag,
}

/// Starts `dp`'s worker thread (see [`Datapath::spawn`]) with knobs of its own, initialised
/// from its configuration (`tx_batch`, `rx_batch`; the larger is the copy batch).
pub(super) fn spawn<G, U>(
    dp: Datapath<G>,
    uplink: U,
    counters: Arc<VifCounters>,
    on_fatal: FatalCallback,
) -> Result<WorkerHandle, ConnectError>
where
    G: GrantOps + EventChannels + Send + 'static,
    U: Uplink + 'static,
{
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).clamp(1, super::knobs::RING_SIZE);
    let (tx, rx) = (clamp(dp.config.tx_batch), clamp(dp.config.rx_batch));
    let values = KnobValues { tx_drain_max: tx, rx_drain_max: rx, copy_batch: tx.max(rx), ..KnobValues::default() };
    spawn_with_knobs(dp, uplink, counters, Arc::new(Knobs::new(values)), on_fatal)
}

impl<G: GrantOps + EventChannels + Send + 'static> Datapath<G> {
    /// As [`Datapath::spawn`], with live `knobs` shared with the caller: the worker re-reads
    /// them at every pass, so changes apply while traffic runs.
    pub fn spawn_with_knobs<U: Uplink + 'static>(
        self,
        uplink: U,
        counters: Arc<VifCounters>,
        knobs: Arc<Knobs>,
        on_fatal: FatalCallback,
    ) -> Result<WorkerHandle, ConnectError> {
        spawn_with_knobs(self, uplink, counters, knobs, on_fatal)
    }
}

fn spawn_with_knobs<G, U>(
    dp: Datapath<G>,
    uplink: U,
    counters: Arc<VifCounters>,
    knobs: Arc<Knobs>,
    on_fatal: FatalCallback,
) -> Result<WorkerHandle, ConnectError>
where
    G: GrantOps + EventChannels + Send + 'static,
    U: Uplink + 'static,
{
    let setup = |e: nix::Error| ConnectError::PollSetup(e.into());
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup)?;
    let kill = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(setup)?;
    let id = dp.id;
    let worker = Worker::new(dp, uplink, counters, knobs, epoll, &kill).map_err(setup)?;
    let stop_requested = StopFlag::default();
    let stop = stop_requested.clone();
    let thread = std::thread::Builder::new()
        .name(id.to_string())
        .spawn(move || worker.run(on_fatal, &stop))
        .map_err(ConnectError::SpawnWorker)?;
    tracing::debug!(vif = %id, "worker started");
    Ok(WorkerHandle { id, thread: Some(thread), kill, stop_requested })
}

impl WorkerHandle {
    /// The vif this worker serves.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// Tells the worker to stop, and waits for it. When this returns the rings are unmapped
    /// and the event channels unbound.
    pub fn stop(mut self) -> WorkerExit {
        self.shutdown()
    }

    /// Whether the worker thread has ended (on its own, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl WorkerHandle {
    /// Requests the stop (unless the worker already ended), wakes the worker and joins it.
    fn shutdown(&mut self) -> WorkerExit {
        let Some(thread) = self.thread.take() else { return WorkerExit::Stopped };
        *self.stop_requested.lock().unwrap_or_else(PoisonError::into_inner) = true;
        if let Err(e) = self.kill.write(1) {
            // Cannot happen with a counter of 1 per stop; joining would then hang.
            tracing::error!(vif = %self.id, error = %e, "waking the worker for a stop");
        }
        match thread.join() {
            Ok(None) => WorkerExit::Stopped,
            Ok(Some(e)) => WorkerExit::Fatal(e),
            Err(_) => WorkerExit::Panicked,
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
