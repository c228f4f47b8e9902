//! One pass of the worker: a TX drain of at most `tx_drain_max` requests and an RX drain of
//! at most `rx_drain_max` frames, each split into grant-copy calls of at most `copy_batch`
//! frames (the TX/RX paths' `batch`), measured into the batching histograms.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollTimeout};

use grant::{EventChannel, EventChannels, GrantOps};

use super::event_loop::Worker;
use super::knobs::KnobValues;
use super::rx::RxContext;
use super::tx::TxContext;
use super::{DatapathError, VifCounters};
use crate::port::Uplink;

/// What a pass did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pass {
    /// More work may be ready right away (a drain stopped at its limit).
    pub more: bool,
    /// Something was consumed or delivered.
    pub progress: bool,
    /// TX requests were consumed.
    pub tx_consumed: bool,
    /// RX requests were consumed: the guest took frames.
    pub rx_consumed: bool,
}

/// Segments copied so far (both directions).
fn segments(counters: &VifCounters) -> u64 {
    counters.copy_segments.load(Ordering::Relaxed)
}

/// Frames leaving the RX side so far: delivered, or dropped while delivering.
fn rx_handled(counters: &VifCounters) -> u64 {
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    c(&counters.rx_packets) + c(&counters.rx_dropped_too_big) + c(&counters.rx_dropped_copy_failed)
}

impl<G: GrantOps + EventChannels, U: Uplink> Worker<G, U> {
    /// Drains TX, then RX, as `knobs` say.
    pub(super) fn pass(&mut self, knobs: &KnobValues) -> Result<Pass, DatapathError> {
        let copy = knobs.copy_batch.max(1);
        let (tx_more, tx_done) = self.drain_tx(knobs.tx_drain_max.max(1), copy, knobs.tx_map_min as usize)?;
        let rx_cons = self.rx.req_cons();
        let (rx_more, rx_done) = self.drain_rx(u64::from(knobs.rx_drain_max.max(1)), copy)?;
        let batching = &self.counters.batching;
        batching.tx_drain.record(u64::from(tx_done));
        batching.rx_deliver.record(rx_done);
        Ok(Pass {
            more: tx_more || rx_more,
            progress: tx_done > 0 || rx_done > 0,
            tx_consumed: tx_done > 0,
            rx_consumed: self.rx.req_cons() != rx_cons,
        })
    }

    /// Up to `max` TX requests (a packet's chain may overshoot), `copy` frames per call,
    /// frames of at least `map_min` bytes mapped (0: none). Returns (more, requests consumed).
    fn drain_tx(&mut self, max: u32, copy: u32, map_min: usize) -> Result<(bool, u32), DatapathError> {
        let start = self.tx.req_cons();
        loop {
            let done = self.tx.req_cons().wrapping_sub(start);
            let left = max.saturating_sub(done);
            if left == 0 {
                return Ok((true, done));
            }
            let before = (self.tx.req_cons(), segments(&self.counters));
            let ctx = TxContext {
                grants: &self.grants,
                domid: self.id.domid,
                uplink: &self.uplink,
                counters: &self.counters,
                batch: copy.min(left) as usize,
                map_min,
                journal: self.journal.as_deref(),
            };
            let more = self.tx_path.take(&mut self.tx, &ctx)?;
            // The last call of the pass publishes the TX answers (written by `take` unless
            // pages are mapped) before the frames go up: the guest frees its buffers while
            // the host's stack still works on the frames. A busy worker (`more`) leaves them
            // to the coalescer.
            if !more && self.tx.rsp_prod_pushed() != self.tx.rsp_prod_pvt() {
                VifCounters::add(&self.counters.batching.pushes, 1);
                if self.tx.push_responses_and_check_notify() {
                    self.tx_channel.notify().map_err(DatapathError::EventChannel)?;
                    VifCounters::add(&self.counters.notifications_out, 1);
                }
            }
            self.tx_path.send(&mut self.tx, &ctx)?;
            self.counters.batching.copy_batch.record(segments(&self.counters) - before.1);
            if !more || self.tx.req_cons() == before.0 {
                return Ok((more, self.tx.req_cons().wrapping_sub(start)));
            }
        }
    }

    /// Up to `max` frames into posted RX buffers, `copy` per call. Returns (more, frames).
    fn drain_rx(&mut self, max: u64, copy: u32) -> Result<(bool, u64), DatapathError> {
        let start = rx_handled(&self.counters);
        loop {
            let done = rx_handled(&self.counters) - start;
            let left = max.saturating_sub(done);
            if left == 0 {
                return Ok((true, done));
            }
            let before = (done, segments(&self.counters));
            let ctx = RxContext {
                grants: &self.grants,
                domid: self.id.domid,
                uplink: &self.uplink,
                counters: &self.counters,
                batch: left.min(u64::from(copy)) as usize,
                features: self.config.features,
                journal: self.journal.as_deref(),
            };
            let more = self.rx_path.deliver(&mut self.rx, &ctx)?;
            self.counters.batching.copy_batch.record(segments(&self.counters) - before.1);
            let done = rx_handled(&self.counters) - start;
            if !more || done == before.0 {
                return Ok((more, done));
            }
        }
    }

    /// Out of work: polls the rings and the event sources for `busy_poll_usecs`. True if
    /// work showed up.
    pub(super) fn busy_poll(&mut self, knobs: &KnobValues, events: &mut [EpollEvent]) -> Result<bool, DatapathError> {
        if knobs.busy_poll_usecs == 0 {
            return Ok(false);
        }
        VifCounters::add(&self.counters.batching.busy_polls, 1);
        let deadline = Instant::now() + Duration::from_micros(knobs.busy_poll_usecs.into());
        while Instant::now() < deadline {
            let ring_work = self.tx.unconsumed_requests() > 0;
            // Level-triggered sources (channels, armed uplink, kill) stay readable for the
            // next wait.
            let ready = match self.epoll.wait(events, EpollTimeout::ZERO) {
                Ok(n) => n > 0,
                Err(Errno::EINTR) => false,
                Err(e) => return Err(DatapathError::Poll(e.into())),
            };
            if ring_work || ready {
                VifCounters::add(&self.counters.batching.busy_poll_hits, 1);
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        Ok(false)
    }
}
