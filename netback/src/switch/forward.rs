//! The fast path of forwarding: a per-port cache of the last (source, destination) pair and
//! the queue it went to, and batched transmit that pushes runs of frames for one queue
//! under one lock.
//!
//! A guest streaming to one peer sends the same MAC pair frame after frame; looking it up
//! under the MAC table's and port map's read locks each time costs two contended atomic
//! read-modify-writes per frame on cache lines both workers touch. The cache replaces that
//! with one load of the switch's generation.
//!
//! Invariants: a cache entry is used only while (a) the switch's generation equals the one
//! read *before* the slow-path lookup that filled it, so any learn, move, age-out or port
//! change since then forces a new lookup, and (b) the coarse clock is before `valid_until`,
//! at most [`refresh_interval`] after the fill, so the source MAC is refreshed in the table
//! (and an aged-out destination noticed) at least that often.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::queue::{PortQueue, add};
use super::{Switch, nanos};
use crate::clock::coarse_now;
use crate::frame::Frame;
use crate::port::TransmitOutcome;

/// The last unicast pair forwarded by one port (see the module invariants).
#[derive(Debug, Default)]
pub(super) struct ForwardCache {
    generation: u64,
    valid_until: u64,
    src: [u8; 6],
    dst: [u8; 6],
    dest: Option<Arc<PortQueue>>,
    /// A run of frames for one queue, pushed together (kept to reuse its allocation).
    run: Vec<Frame>,
}

/// How long a cache entry may stand in for the MAC table: a quarter of the aging time, at
/// most one second, so a MAC that keeps transmitting never ages out.
fn refresh_interval(aging: Duration) -> u64 {
    nanos((aging / 4).min(Duration::from_secs(1)))
}

impl ForwardCache {
    /// The cached destination of `frame`, if the entry is valid for it.
    fn hit(&self, frame: &Frame, generation: u64, now: u64) -> Option<&Arc<PortQueue>> {
        let data = frame.data();
        let valid = self.generation == generation
            && now < self.valid_until
            && data.len() >= 12
            && data[..6] == self.dst
            && data[6..12] == self.src;
        if valid { self.dest.as_ref() } else { None }
    }
}

impl Switch {
    /// Forwards `frames` in order (draining the vector) and returns how many were dropped
    /// as a whole ([`TransmitOutcome::Dropped`]).
    pub(super) fn transmit_batch(
        &self,
        ingress: &PortQueue,
        cache: &mut ForwardCache,
        frames: &mut Vec<Frame>,
    ) -> usize {
        let now = coarse_now();
        let mut dropped = 0;
        let mut run = std::mem::take(&mut cache.run);
        let mut run_dest: Option<Arc<PortQueue>> = None;
        let (mut hits, mut hit_bytes) = (0usize, 0usize);
        for frame in frames.drain(..) {
            let generation = self.generation.load(Ordering::Acquire);
            if let Some(dest) = cache.hit(&frame, generation, now) {
                hits += 1;
                hit_bytes += frame.len();
                if !run_dest.as_ref().is_some_and(|d| Arc::ptr_eq(d, dest)) {
                    dropped += flush(run_dest.take(), &mut run, now);
                    run_dest = Some(Arc::clone(dest));
                }
                run.push(frame);
                continue;
            }
            dropped += flush(run_dest.take(), &mut run, now);
            let (src, dst) = (frame.src_mac(), frame.dst_mac());
            let (outcome, dest) = self.transmit(ingress, frame, now);
            if matches!(outcome, TransmitOutcome::Dropped(_)) {
                dropped += 1;
            }
            if let (Some(src), Some(dst), Some(dest)) = (src, dst, dest) {
                let valid_until = now.saturating_add(refresh_interval(self.config.mac_aging));
                *cache = ForwardCache { generation, valid_until, src, dst, dest: Some(dest), run: Vec::new() };
            }
        }
        dropped += flush(run_dest, &mut run, now);
        cache.run = run;
        add(&ingress.counters.tx_frames, hits);
        add(&ingress.counters.tx_bytes, hit_bytes);
        dropped
    }
}

/// Pushes the run to its queue, stamped `now`; returns the frames the queue refused.
fn flush(dest: Option<Arc<PortQueue>>, run: &mut Vec<Frame>, now: u64) -> usize {
    match dest {
        Some(queue) => queue.push_run(run, now),
        None => 0,
    }
}
