//! The worker's notification policy and its timer: when written responses are pushed
//! (`notify_every`, `notify_usecs`, at once when idle), and a one-shot `timerfd` that bounds
//! the sleep while the TX event is armed ahead (`req_event_ahead`).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::knobs::KnobValues;

/// Shortest bound on a sleep with the TX event armed ahead.
const MIN_AHEAD_WAIT: Duration = Duration::from_micros(100);

/// Whether to push now, given the state of the last pass.
#[derive(Debug, Default)]
pub(super) struct Coalescer {
    /// When the oldest unpushed response was written (first seen).
    oldest: Option<Instant>,
}

impl Coalescer {
    /// True if the `pending` written responses may wait: unless the worker is about to go
    /// idle (`!busy`), made no progress (a blocked packet needs our answers), has
    /// `notify_every` of them, or the oldest is `notify_usecs` old.
    pub fn hold(&mut self, knobs: &KnobValues, pending: u32, busy: bool, progress: bool) -> bool {
        !self.flush_now(knobs, pending, busy, progress)
    }

    fn flush_now(&mut self, knobs: &KnobValues, pending: u32, busy: bool, progress: bool) -> bool {
        if pending == 0 {
            self.oldest = None;
            return true;
        }
        // Decided without the clock where possible: reading it is a system call on a Xen
        // PV dom0 (no vDSO clock), and this runs after every pass.
        if !busy || !progress || pending >= knobs.notify_every || knobs.notify_usecs == 0 {
            self.oldest = None;
            return true;
        }
        let now = Instant::now();
        let oldest = *self.oldest.get_or_insert(now);
        let flush = now.duration_since(oldest) >= Duration::from_micros(knobs.notify_usecs.into());
        if flush {
            self.oldest = None;
        }
        flush
    }
}

/// How long to sleep at most with the TX event armed `req_event_ahead` slots ahead.
pub(super) fn ahead_wait(knobs: &KnobValues) -> Duration {
    Duration::from_micros(knobs.notify_usecs.into()).max(MIN_AHEAD_WAIT)
}

/// A one-shot monotonic timer in the worker's epoll set.
#[derive(Debug)]
pub(super) struct Timer {
    fd: TimerFd,
    armed: bool,
}

impl Timer {
    pub fn new() -> nix::Result<Self> {
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        Ok(Self { fd, armed: false })
    }

    /// Fires once after `after`.
    pub fn arm(&mut self, after: Duration) -> nix::Result<()> {
        self.fd.set(Expiration::OneShot(TimeSpec::from_duration(after)), TimerSetTimeFlags::empty())?;
        self.armed = true;
        Ok(())
    }

    /// Stops it (if armed) and consumes an expiry already signalled.
    pub fn disarm(&mut self) -> nix::Result<()> {
        if self.armed {
            self.fd.unset()?;
            self.armed = false;
        }
        Ok(())
    }

    /// Consumes the expiry that made the fd readable. True if it had expired.
    pub fn take(&mut self) -> bool {
        self.armed = false;
        self.fd.wait().is_ok()
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(notify_every: u32, notify_usecs: u32) -> KnobValues {
        KnobValues { notify_every, notify_usecs, ..KnobValues::default() }
    }

    #[test]
    fn holds_while_busy_until_notify_every() {
        let k = knobs(4, 1_000_000);
        let mut c = Coalescer::default();
        assert!(c.hold(&k, 1, true, true));
        assert!(c.hold(&k, 3, true, true));
        assert!(!c.hold(&k, 4, true, true), "notify_every reached");
        assert!(c.oldest.is_none(), "a flush forgets the oldest response");
    }

    #[test]
    fn flushes_at_once_when_idle_blocked_or_unbatched() {
        let mut c = Coalescer::default();
        assert!(!c.hold(&knobs(64, 1_000_000), 1, false, true), "about to sleep");
        assert!(!c.hold(&knobs(64, 1_000_000), 1, true, false), "no progress");
        assert!(!c.hold(&knobs(64, 0), 1, true, true), "notify_usecs = 0");
        assert!(!c.hold(&knobs(64, 1_000_000), 0, true, true), "nothing pending");
    }

    #[test]
    fn flushes_once_the_oldest_is_notify_usecs_old() {
        let k = knobs(64, 2_000);
        let mut c = Coalescer::default();
        assert!(c.hold(&k, 1, true, true));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!c.hold(&k, 2, true, true));
    }
}
