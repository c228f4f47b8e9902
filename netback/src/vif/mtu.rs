//! The `mtu` knob: an [`Uplink`] in front of the real one that refuses frames from the
//! guest longer than `mtu + 14` bytes unless they carry GSO (the TX path then counts them
//! as refused by the uplink; `tx_dropped_mtu` says why).

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vm_memory::VolatileSlice;

use super::VifCounters;
use crate::frame::Frame;
use crate::port::{Backlog, DropReason, PortStats, TransmitOutcome, Uplink};

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

impl<U: Uplink> MtuGate<U> {
    /// Whether a frame of `len` bytes with `frame`'s offload passes; counts it if not.
    fn admits(&self, frame: &Frame, len: usize) -> bool {
        if len > self.max_len.load(Ordering::Relaxed) && frame.offload().gso.is_none() {
            tracing::debug!(len, "TX frame beyond the MTU dropped");
            VifCounters::add(&self.counters.batching.tx_dropped_mtu, 1);
            return false;
        }
        true
    }
}

impl<U: Uplink> Uplink for MtuGate<U> {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        if !self.admits(&frame, frame.len()) {
            // The closest reason the uplink has: the frame cannot be queued anywhere.
            return TransmitOutcome::Dropped(DropReason::QueueFull);
        }
        self.inner.transmit(frame)
    }

    fn gathers(&self) -> bool {
        self.inner.gathers()
    }

    fn transmit_gather(&self, head: Frame, rest: &[VolatileSlice<'_>]) -> TransmitOutcome {
        let len = head.len() + rest.iter().map(|s| s.len()).sum::<usize>();
        if !self.admits(&head, len) {
            return TransmitOutcome::Dropped(DropReason::QueueFull);
        }
        self.inner.transmit_gather(head, rest)
    }

    fn transmit_batch(&self, frames: &mut Vec<Frame>) -> usize {
        let max_len = self.max_len.load(Ordering::Relaxed);
        let before = frames.len();
        frames.retain(|f| f.len() <= max_len || f.offload().gso.is_some());
        let refused = before - frames.len();
        if refused > 0 {
            tracing::debug!(refused, "TX frames beyond the MTU dropped");
            VifCounters::add(&self.counters.batching.tx_dropped_mtu, refused as u64);
        }
        refused + self.inner.transmit_batch(frames)
    }

    fn pop(&self) -> Option<Frame> {
        self.inner.pop()
    }

    fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        self.inner.pop_batch(max, out);
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.inner.ready_fd()
    }

    fn stats(&self) -> PortStats {
        self.inner.stats()
    }

    fn expire(&self, max_age: Option<Duration>) -> Backlog {
        self.inner.expire(max_age)
    }

    fn set_carrier(&self, on: bool) {
        self.inner.set_carrier(on);
    }
}
