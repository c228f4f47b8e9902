//! The `mtu` knob: an [`Uplink`] in front of the real one that refuses frames from the
//! guest longer than `mtu + 14` bytes unless they carry GSO (the TX path then counts them
//! as refused by the uplink; `tx_dropped_mtu` says why).

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::VifCounters;
use crate::frame::Frame;
use crate::port::{DropReason, PortStats, TransmitOutcome, Uplink};

/// Wraps the worker's uplink; `max_len` is refreshed by the worker at every pass.
#[derive(Debug)]
pub(super) struct MtuGate<U> {
    inner: U,
    max_len: AtomicUsize,
    counters: Arc<VifCounters>,
}

impl<U: Uplink> MtuGate<U> {
    pub fn new(inner: U, max_len: usize, counters: Arc<VifCounters>) -> Self {
        Self { inner, max_len: AtomicUsize::new(max_len), counters }
    }

    /// The largest frame accepted without GSO from now on.
    pub fn set_max_len(&self, max_len: usize) {
        self.max_len.store(max_len, Ordering::Relaxed);
    }
}

impl<U: Uplink> Uplink for MtuGate<U> {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        if frame.len() > self.max_len.load(Ordering::Relaxed) && frame.offload().gso.is_none() {
            tracing::debug!(len = frame.len(), "TX frame beyond the MTU dropped");
            VifCounters::add(&self.counters.batching.tx_dropped_mtu, 1);
            // The closest reason the uplink has: the frame cannot be queued anywhere.
            return TransmitOutcome::Dropped(DropReason::QueueFull);
        }
        self.inner.transmit(frame)
    }

    fn pop(&self) -> Option<Frame> {
        self.inner.pop()
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.inner.ready_fd()
    }

    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
}
