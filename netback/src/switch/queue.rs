//! One switch port's bounded receive queue, its readiness eventfd and its
//! counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::PortId;
use crate::frame::Frame;
use crate::port::PortStats;

/// Frames waiting for a port, with their total size.
///
/// Invariants (under the mutex): `bytes` is the sum of `frames`' lengths,
/// `frames.len() <= max_frames` and `bytes <= max_bytes`.
#[derive(Debug, Default)]
struct Waiting {
    frames: VecDeque<Frame>,
    bytes: usize,
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

    /// Queues `frame` for this port, or drops it (counting `queue_full`)
    /// when that would exceed the frame or byte bound. Returns whether the
    /// frame was queued.
    pub(super) fn push(&self, frame: Frame) -> bool {
        let len = frame.len();
        let mut w = self.lock();
        let fits = w.frames.len() < self.max_frames && w.bytes.saturating_add(len) <= self.max_bytes;
        if !fits {
            drop(w);
            bump(&self.counters.dropped_queue_full);
            return false;
        }
        if w.frames.is_empty() {
            // Empty -> non-empty: make the fd readable (see invariant). A
            // write only fails on counter overflow, impossible at 0.
            let _ = self.ready.write(1);
        }
        w.frames.push_back(frame);
        w.bytes += len;
        true
    }

    /// Queues the frames of `run` in order, draining it, under one lock; those past the
    /// frame or byte bound are dropped (counting `queue_full`). Returns how many were dropped.
    pub(super) fn push_run(&self, run: &mut Vec<Frame>) -> usize {
        if run.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        let mut w = self.lock();
        let was_empty = w.frames.is_empty();
        for frame in run.drain(..) {
            let len = frame.len();
            if w.frames.len() < self.max_frames && w.bytes.saturating_add(len) <= self.max_bytes {
                w.frames.push_back(frame);
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
            let Some(frame) = w.frames.pop_front() else { break };
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
        let frame = w.frames.pop_front()?;
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

    /// Frames and bytes currently waiting.
    pub(super) fn depth(&self) -> (usize, usize) {
        let w = self.lock();
        (w.frames.len(), w.bytes)
    }

    pub(super) fn ready(&self) -> &EventFd {
        &self.ready
    }
}
