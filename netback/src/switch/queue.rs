//! One switch port's bounded receive queue, its readiness eventfd, its carrier and its
//! counters.
//!
//! Every queued frame carries the coarse time it was queued at, taken from the clock
//! reading its sender makes once per batch anyway (the forwarding cache's), so queueing
//! reads no clock per frame. [`PortQueue::expire`] drops the frames older than a limit from
//! the head (the queue is FIFO, so the oldest are there; two stamps may be out of order by
//! less than the clock's resolution, which only delays an expiry by as much).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::PortId;
use crate::clock::{Nanos, coarse_now, nanos};
use crate::frame::Frame;
use crate::port::{Backlog, DropReason, PortStats};

/// A frame waiting for the port, with the coarse time it was queued at.
#[derive(Debug)]
struct Queued {
    frame: Frame,
    at: Nanos,
}

/// Frames waiting for a port, with their total size, and whether the port takes any.
///
/// Invariants (under the mutex): `bytes` is the sum of `frames`' lengths,
/// `frames.len() <= max_frames` and `bytes <= max_bytes`; `frames` is empty while
/// `carrier_off`.
#[derive(Debug, Default)]
struct Waiting {
    frames: VecDeque<Queued>,
    bytes: usize,
    /// The port's owner turned its carrier off: frames for it are dropped, not queued.
    carrier_off: bool,
}

/// Atomic counters behind [`PortStats`]; bumped without any lock held.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) tx_frames: AtomicU64,
    pub(super) tx_bytes: AtomicU64,
    pub(super) rx_frames: AtomicU64,
    pub(super) rx_bytes: AtomicU64,
    pub(super) floods: AtomicU64,
    pub(super) dropped_runt: AtomicU64,
    pub(super) dropped_bad_source_mac: AtomicU64,
    pub(super) dropped_hairpin: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    pub(super) dropped_carrier_off: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(super) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> PortStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortStats {
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            floods: get(&self.floods),
            dropped_runt: get(&self.dropped_runt),
            dropped_bad_source_mac: get(&self.dropped_bad_source_mac),
            dropped_hairpin: get(&self.dropped_hairpin),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_carrier_off: get(&self.dropped_carrier_off),
        }
    }
}

/// The state of one port shared between the switch (which enqueues) and the
/// port's owner (which pops).
///
/// Invariant (under `waiting`'s lock): the eventfd counter is non-zero iff
/// `frames` is non-empty, so `ready` polls readable exactly when `pop` would
/// return a frame.
#[derive(Debug)]
pub(super) struct PortQueue {
    pub(super) id: PortId,
    pub(super) name: String,
    pub(super) counters: Counters,
    waiting: Mutex<Waiting>,
    ready: EventFd,
    max_frames: usize,
    max_bytes: usize,
}

impl PortQueue {
    pub(super) fn new(id: PortId, name: &str, max_frames: usize, max_bytes: usize) -> nix::Result<PortQueue> {
        let ready = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(PortQueue {
            id,
            name: name.to_owned(),
            counters: Counters::default(),
            waiting: Mutex::default(),
            ready,
            max_frames,
            max_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock cannot break the invariants: every
        // mutation below completes before anything that can panic.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` for this port, stamped `now`, or drops it (counting why): when that
    /// would exceed the frame or byte bound, or while the carrier is off. `None` if queued.
    pub(super) fn push(&self, frame: Frame, now: Nanos) -> Option<DropReason> {
        let len = frame.len();
        let mut w = self.lock();
        if w.carrier_off {
            drop(w);
            bump(&self.counters.dropped_carrier_off);
            return Some(DropReason::CarrierOff);
        }
        let fits = w.frames.len() < self.max_frames && w.bytes.saturating_add(len) <= self.max_bytes;
        if !fits {
            drop(w);
            bump(&self.counters.dropped_queue_full);
            return Some(DropReason::QueueFull);
        }
        if w.frames.is_empty() {
            // Empty -> non-empty: make the fd readable (see invariant). A
            // write only fails on counter overflow, impossible at 0.
            let _ = self.ready.write(1);
        }
        w.frames.push_back(Queued { frame, at: now });
        w.bytes += len;
        None
    }

    /// Queues the frames of `run` in order, stamped `now`, draining it, under one lock;
    /// those past the frame or byte bound, or all of them while the carrier is off, are
    /// dropped (counted). Returns how many were dropped.
    pub(super) fn push_run(&self, run: &mut Vec<Frame>, now: Nanos) -> usize {
        if run.is_empty() {
            return 0;
        }
        let mut w = self.lock();
        if w.carrier_off {
            drop(w);
            let dropped = run.len();
            run.clear();
            add(&self.counters.dropped_carrier_off, dropped);
            return dropped;
        }
        let mut dropped = 0;
        let was_empty = w.frames.is_empty();
        for frame in run.drain(..) {
            let len = frame.len();
            if w.frames.len() < self.max_frames && w.bytes.saturating_add(len) <= self.max_bytes {
                w.frames.push_back(Queued { frame, at: now });
                w.bytes += len;
            } else {
                dropped += 1;
            }
        }
        if was_empty && !w.frames.is_empty() {
            // Empty -> non-empty: make the fd readable (see invariant).
            let _ = self.ready.write(1);
        }
        drop(w);
        add(&self.counters.dropped_queue_full, dropped);
        dropped
    }

    /// Moves up to `max` of the oldest waiting frames to `out`, under one lock.
    pub(super) fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        let (mut frames, mut bytes) = (0, 0);
        let mut w = self.lock();
        while frames < max {
            let Some(Queued { frame, .. }) = w.frames.pop_front() else { break };
            w.bytes -= frame.len();
            frames += 1;
            bytes += frame.len();
            out.push(frame);
        }
        if frames > 0 && w.frames.is_empty() {
            // Non-empty -> empty: drain the counter (see invariant).
            let _ = self.ready.read();
        }
        drop(w);
        add(&self.counters.rx_frames, frames);
        add(&self.counters.rx_bytes, bytes);
    }

    /// Takes the oldest waiting frame.
    pub(super) fn pop(&self) -> Option<Frame> {
        let mut w = self.lock();
        let Queued { frame, .. } = w.frames.pop_front()?;
        w.bytes -= frame.len();
        if w.frames.is_empty() {
            // Non-empty -> empty: drain the counter so the fd stops polling
            // readable (see invariant). It is non-zero here, so no EAGAIN.
            let _ = self.ready.read();
        }
        drop(w);
        bump(&self.counters.rx_frames);
        add(&self.counters.rx_bytes, frame.len());
        Some(frame)
    }

    /// Drops the frames queued at least `max_age` ago (none if `None`), oldest first.
    /// Reads the clock only if a frame waits.
    pub(super) fn expire(&self, max_age: Option<Duration>) -> Backlog {
        let mut w = self.lock();
        if w.frames.is_empty() {
            return Backlog::default();
        }
        let Some(max_age) = max_age.map(nanos) else { return Backlog { waiting: true, ..Backlog::default() } };
        let now = coarse_now();
        let mut expired = 0;
        while let Some(head) = w.frames.front() {
            if now.saturating_sub(head.at) < max_age {
                break;
            }
            let len = head.frame.len();
            w.frames.pop_front();
            w.bytes -= len;
            expired += 1;
        }
        let next_expiry =
            w.frames.front().map(|head| Duration::from_nanos(head.at.saturating_add(max_age).saturating_sub(now)));
        if expired > 0 && w.frames.is_empty() {
            // Non-empty -> empty: drain the counter (see invariant).
            let _ = self.ready.read();
        }
        Backlog { expired, waiting: next_expiry.is_some(), next_expiry }
    }

    /// Turns the carrier on or off. Turning it off drops (and counts) every frame waiting,
    /// and every frame pushed until it is on again.
    pub(super) fn set_carrier(&self, on: bool) {
        let mut w = self.lock();
        w.carrier_off = !on;
        if on || w.frames.is_empty() {
            return;
        }
        let purged = w.frames.len();
        w.frames.clear();
        w.bytes = 0;
        // Non-empty -> empty: drain the counter (see invariant).
        let _ = self.ready.read();
        drop(w);
        add(&self.counters.dropped_carrier_off, purged);
    }

    /// Frames and bytes currently waiting.
    pub(super) fn depth(&self) -> (usize, usize) {
        let w = self.lock();
        (w.frames.len(), w.bytes)
    }

    pub(super) fn ready(&self) -> &EventFd {
        &self.ready
    }
}
