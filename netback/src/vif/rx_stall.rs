//! RX queue expiry and stall detection: what Linux's `xenvif_rx_queue_drop_expired` and
//! `xenvif_rx_queue_stalled`/`_ready` do (L-RX), without reading the clock per frame.
//!
//! Frames for a guest wait in its uplink (a switch port's queue, or the kernel's TAP
//! queue) until the guest has posted a request, and, once popped and prepared, in
//! `RxPath::waiting` until the ring holds all the requests the next one needs. The worker
//! *looks* after every pass whose end finds the ring short of that need, and only then: one
//! coarse clock read, one `Uplink::expire` (a lock), per such pass.
//!
//! - **Expiry** (`rx-drain-timeout-ms`, Linux's `rx_drain_timeout_msecs`). A switch port
//!   stamps each frame with the time it was queued (its sender's clock reading of the
//!   batch), and a look drops the frames queued at least the timeout ago: Linux's per-skb
//!   expiry. A TAP's frames wait in the kernel, bounded by its `txqueuelen`: not ours. The
//!   frames in `waiting` (at most one drain's worth, popped together) have no stamp: they
//!   expire once they have been unable to go for the timeout, measured from the first look
//!   that found them waiting. A frame can thus be held for up to twice the timeout (once in
//!   the queue, once waiting), and a look may come up to an eighth of the timeout late
//!   (frames that keep arriving expire in batches, not with a wake-up each), but never
//!   longer: what a stuck guest holds is bounded in time as well as by the queue's frame and
//!   byte bounds. Expired frames count in `rx_dropped_expired`.
//! - **Stall** (`rx-stall-timeout-ms`, Linux's `rx_stall_timeout_msecs`; only with
//!   `feature-rx-notify`). The clock starts at the first look, since the guest last took a
//!   frame, that finds a frame waiting (Linux's `last_rx_time`, which Linux sets at every
//!   delivery: we read the clock only when short, and a delivery clears it). It is measured
//!   against the *next frame's* need, not one slot, so a guest that keeps one request fewer
//!   than that (XSA-392) is caught; expiring frames does not restart it, so letting frames
//!   expire does not help either. When it runs out while the ring is still short: "Guest Rx
//!   stalled", `rx_stalls`, the `rx_stalled` flag, the uplink's carrier off (a switch port
//!   drops what it holds and every frame for it; a TAP's kernel stops queueing) and what
//!   waits dropped as Linux purges (`rx_dropped_stalled`: the prepared frames and a TAP's
//!   kernel queue). The guest is ready again once
//!   its ring holds what the frame that stalled it needed (kept as `RxPath`'s floor, so
//!   dropping that frame does not lower the bar): "Guest Rx ready", carrier on, and the clock
//!   starts afresh.
//!
//! While short, the worker sleeps: the uplink's descriptor stays in the epoll set only
//! while nothing waits there (to learn of the first frame), and a timerfd wakes it for the
//! next expiry or the stall deadline.

use std::sync::atomic::Ordering;
use std::time::Duration;

use grant::{EventChannels, GrantOps};

use super::event_loop::Worker;
use super::knobs::KnobValues;
use super::{DatapathError, VifCounters};
use crate::clock::{self, Nanos};
use crate::port::{Backlog, Uplink};

/// Most frames read out of the uplink when a stall is declared (four times a TAP's default
/// `txqueuelen`).
const MAX_PURGE: usize = 4096;

/// The timeouts of one look; `None` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Frames waiting this long are dropped.
    pub drain: Option<Duration>,
    /// A guest short this long without taking a frame is stalled (`None` also without
    /// `feature-rx-notify`).
    pub stall: Option<Duration>,
}

/// What one look decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Look {
    /// The prepared frames waiting for requests expired: drop them.
    pub drop_waiting: bool,
    /// Declare the guest's RX stalled now.
    pub stall: bool,
    /// Look again after this long, even if nothing wakes the worker; `None`: nothing to
    /// time.
    pub again_in: Option<Duration>,
}

/// The RX watch of one worker.
///
/// Invariants: `short_since` is `None` after a pass that delivered a frame and after
/// "ready"; `waiting_since` is `None` while nothing waits in `RxPath::waiting` or after a
/// delivery; `stalled` is `Some(bar)` exactly while the guest's RX is declared stalled, and
/// then `RxPath`'s floor is `bar` (at least 1).
#[derive(Debug)]
pub(super) struct RxWatch {
    /// First look that found a frame waiting since the guest last took one.
    short_since: Option<Nanos>,
    /// First look that found the current prepared frames waiting.
    waiting_since: Option<Nanos>,
    /// While stalled: the requests the ring must hold to be ready again.
    stalled: Option<u32>,
    /// The last look found nothing waiting in the uplink (so its descriptor may stay armed
    /// while the ring is short without waking the worker in a loop).
    uplink_empty: bool,
    /// When the watch timer is set to fire (coarse time); `None` while it is not set.
    due: Option<Nanos>,
}

impl Default for RxWatch {
    fn default() -> Self {
        // Until a look says otherwise the uplink fd stays armed, as before any look.
        Self { short_since: None, waiting_since: None, stalled: None, uplink_empty: true, due: None }
    }
}

/// Time from `since` to `now` (0 if the clock seems to go back).
fn elapsed(now: Nanos, since: Nanos) -> Duration {
    Duration::from_nanos(now.saturating_sub(since))
}

impl RxWatch {
    /// After every pass: whether it delivered a frame, and whether prepared frames wait.
    pub fn after_pass(&mut self, delivered: bool, waiting: bool) {
        if delivered {
            self.short_since = None;
        }
        if delivered || !waiting {
            self.waiting_since = None;
        }
    }

    /// The bar to clear while stalled.
    pub fn stalled(&self) -> Option<u32> {
        self.stalled
    }

    /// Whether the uplink's descriptor may stay armed while the ring is short.
    pub fn uplink_empty(&self) -> bool {
        self.uplink_empty
    }

    /// Whether the timer must be set to fire at `due`: not if it is already set to fire no
    /// later (a look that comes early only sets it again), so a worker short for many passes
    /// does not set it at every one.
    pub fn set_due(&mut self, due: Nanos) -> bool {
        if self.due.is_some_and(|d| d <= due) {
            return false;
        }
        self.due = Some(due);
        true
    }

    /// The timer fired or was disarmed.
    pub fn clear_due(&mut self) {
        self.due = None;
    }

    /// The stall was declared with the ring needing `bar` requests.
    pub fn stall(&mut self, bar: u32) {
        self.stalled = Some(bar.max(1));
        self.waiting_since = None;
    }

    /// The guest is ready again: the stall clock starts afresh (Linux resets `last_rx_time`).
    pub fn ready(&mut self) {
        self.stalled = None;
        self.short_since = None;
    }

    /// A look, at coarse time `now`, while the ring lacks the requests for the next frame:
    /// `waiting` says whether prepared frames wait, `uplink` what the uplink's own expiry
    /// left there.
    pub fn look(&mut self, now: Nanos, waiting: bool, uplink: &Backlog, limits: &Limits) -> Look {
        let mut look = Look::default();
        let mut next: Option<Duration> = uplink.next_expiry;
        let mut soonest = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        if waiting {
            let since = *self.waiting_since.get_or_insert(now);
            if let Some(drain) = limits.drain {
                let left = drain.saturating_sub(elapsed(now, since));
                if left.is_zero() {
                    look.drop_waiting = true;
                    self.waiting_since = None;
                } else {
                    soonest(left);
                }
            }
        }
        if waiting || uplink.waiting {
            self.short_since.get_or_insert(now);
        }
        if let (Some(stall), None, Some(since)) = (limits.stall, self.stalled, self.short_since) {
            let left = stall.saturating_sub(elapsed(now, since));
            if left.is_zero() {
                look.stall = true;
            } else {
                soonest(left);
            }
        }
        self.uplink_empty = !uplink.waiting;
        // Never sooner than an eighth of the drain timeout (frames that keep arriving expire
        // in batches), plus the coarse clock's resolution (a deadline read from it may look
        // that much early).
        let least = limits.drain.map_or(Duration::ZERO, |d| d / 8);
        look.again_in = next.map(|d| d.max(least) + clock::RESOLUTION);
        look
    }
}

impl<G: GrantOps + EventChannels, U: Uplink> Worker<G, U> {
    /// After every pass (`delivered`: it delivered a frame): "ready" if the guest is stalled
    /// and its ring holds enough again; a look if the ring is short (see the module docs);
    /// the watch timer armed for the next look, or disarmed.
    pub(super) fn watch_rx(&mut self, knobs: &KnobValues, delivered: bool) -> Result<(), DatapathError> {
        self.rx_watch.after_pass(delivered, self.rx_path.is_waiting());
        let limits = Limits {
            drain: knobs.rx_drain_timeout(),
            stall: if self.config.features.rx_notify { knobs.rx_stall_timeout() } else { None },
        };
        let timer = |e: nix::Error| DatapathError::Poll(e.into());
        // The floor makes "can deliver" mean "holds what the stalling frame needed".
        if self.rx_watch.stalled().is_some() && (limits.stall.is_none() || self.rx_path.can_deliver(&self.rx)) {
            self.rx_ready();
        }
        if self.rx_path.can_deliver(&self.rx) {
            // Frames can go: nothing to time (disarming an unarmed timer is free).
            self.rx_watch.clear_due();
            return self.rx_timer.disarm().map_err(timer);
        }
        let now = clock::coarse_now();
        let backlog = self.uplink.expire(limits.drain);
        if backlog.expired > 0 {
            tracing::debug!(vif = %self.id, frames = backlog.expired, "RX frames expired in the uplink");
            VifCounters::add(&self.counters.rx_dropped_expired, backlog.expired as u64);
        }
        let need = self.rx_path.needed();
        let look = self.rx_watch.look(now, self.rx_path.is_waiting(), &backlog, &limits);
        if look.drop_waiting {
            let frames = self.rx_path.drop_waiting();
            tracing::debug!(vif = %self.id, frames, need, "RX frames expired waiting for requests");
            VifCounters::add(&self.counters.rx_dropped_expired, frames as u64);
        }
        if look.stall {
            self.rx_stall(need);
        }
        match look.again_in {
            Some(after) if self.rx_watch.set_due(now.saturating_add(clock::nanos(after))) => self.rx_timer.arm(after),
            Some(_) => Ok(()),
            None => {
                self.rx_watch.clear_due();
                self.rx_timer.disarm()
            }
        }
        .map_err(timer)
    }

    /// "Guest Rx stalled": the ring held fewer than `need` requests for the stall timeout.
    fn rx_stall(&mut self, need: u32) {
        let have = self.rx.unconsumed_requests();
        tracing::warn!(vif = %self.id, need, have, "Guest Rx stalled");
        self.uplink.set_carrier(false);
        self.rx_watch.stall(need);
        self.rx_path.set_floor(need.max(1));
        // What waits is dropped, as Linux purges on carrier off: the prepared frames, and
        // whatever the uplink still holds (a switch port dropped its queue with the carrier; a
        // TAP's kernel queue is read out, at most `MAX_PURGE` frames in case it refills).
        let mut dropped = self.rx_path.drop_waiting();
        let mut popped = Vec::new();
        while dropped < MAX_PURGE {
            self.uplink.pop_batch(64, &mut popped);
            if popped.is_empty() {
                break;
            }
            dropped += popped.len();
            popped.clear();
        }
        VifCounters::add(&self.counters.rx_dropped_stalled, dropped as u64);
        VifCounters::add(&self.counters.rx_stalls, 1);
        self.counters.rx_stalled.store(true, Ordering::Relaxed);
    }

    /// "Guest Rx ready": the ring holds enough again (or stall detection was turned off).
    fn rx_ready(&mut self) {
        tracing::info!(vif = %self.id, have = self.rx.unconsumed_requests(), "Guest Rx ready");
        self.uplink.set_carrier(true);
        self.rx_watch.ready();
        self.rx_path.set_floor(0);
        self.counters.rx_stalled.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::nanos;

    const MS: Duration = Duration::from_millis(1);

    fn limits(drain: u64, stall: Option<u64>) -> Limits {
        Limits { drain: Some(MS * drain as u32), stall: stall.map(|s| MS * s as u32) }
    }

    fn at(ms: u64) -> Nanos {
        nanos(MS * ms as u32)
    }

    const EMPTY: Backlog = Backlog { expired: 0, waiting: false, next_expiry: None };
    const QUEUED: Backlog = Backlog { expired: 0, waiting: true, next_expiry: None };

    #[test]
    fn waiting_frames_expire_after_the_drain_timeout_of_being_stuck() {
        let mut w = RxWatch::default();
        let l = limits(200, None);
        let first = w.look(at(1000), true, &EMPTY, &l);
        assert!(!first.drop_waiting);
        assert_eq!(first.again_in, Some(MS * 200 + clock::RESOLUTION));
        assert!(!w.look(at(1199), true, &EMPTY, &l).drop_waiting);
        assert!(w.look(at(1200), true, &EMPTY, &l).drop_waiting);
        // The next prepared frames get a fresh clock.
        assert!(!w.look(at(1201), true, &EMPTY, &l).drop_waiting);
        w.after_pass(true, true);
        assert!(!w.look(at(1500), true, &EMPTY, &l).drop_waiting, "a delivery restarts it");
    }

    #[test]
    fn looks_wait_at_least_an_eighth_of_the_drain_timeout() {
        let mut w = RxWatch::default();
        let trickle = Backlog { expired: 3, waiting: true, next_expiry: Some(MS) };
        let look = w.look(at(0), false, &trickle, &limits(800, None));
        assert_eq!(look.again_in, Some(MS * 100 + clock::RESOLUTION));
        assert!(!w.uplink_empty());
        assert_eq!(w.look(at(5), false, &EMPTY, &limits(800, None)).again_in, None, "nothing to time");
        assert!(w.uplink_empty());
    }

    #[test]
    fn stall_runs_from_the_first_short_look_and_survives_expiry() {
        let mut w = RxWatch::default();
        let l = limits(200, Some(300));
        // Short with nothing waiting anywhere: the clock does not start.
        assert_eq!(w.look(at(0), false, &EMPTY, &l), Look::default());
        let first = w.look(at(100), false, &QUEUED, &l);
        assert_eq!(first.again_in, Some(MS * 300 + clock::RESOLUTION));
        // Everything expired (nothing waits any more), then new frames: still the same clock.
        assert!(!w.look(at(300), false, &EMPTY, &l).stall);
        w.after_pass(false, false);
        assert!(!w.look(at(350), true, &EMPTY, &l).stall);
        assert!(w.look(at(400), true, &EMPTY, &l).stall);
        w.stall(17);
        assert_eq!(w.stalled(), Some(17));
        assert!(!w.look(at(9000), true, &QUEUED, &l).stall, "declared once");
        w.ready();
        assert!(!w.look(at(9100), false, &QUEUED, &l).stall, "ready restarts the clock");
        assert!(w.look(at(9400), false, &QUEUED, &l).stall);
    }

    #[test]
    fn a_delivery_restarts_the_stall_clock_and_off_means_off() {
        let mut w = RxWatch::default();
        let l = limits(200, Some(300));
        w.look(at(0), false, &QUEUED, &l);
        w.after_pass(true, false);
        assert!(!w.look(at(299), false, &QUEUED, &l).stall);
        assert!(!w.look(at(598), false, &QUEUED, &l).stall);
        assert!(w.look(at(599), false, &QUEUED, &l).stall);
        let mut off = RxWatch::default();
        let l = Limits { drain: None, stall: None };
        assert_eq!(off.look(at(0), true, &QUEUED, &l), Look::default());
        assert_eq!(off.look(at(1 << 40), true, &QUEUED, &l), Look::default());
    }
}
