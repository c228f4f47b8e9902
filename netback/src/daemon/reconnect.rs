//! Reaching xenstored again after the daemon's connection was lost (xenstored restarted,
//! its socket closed): the seam that opens a new connection, and the backoff between
//! attempts. What the daemon does with the new connection is in `events`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use xenstore::{Client, XsError};

/// How the daemon opens a new xenstore connection after losing one. The connection must
/// speak for the backend domain, as the one the daemon was started with.
///
/// Any `FnMut() -> Result<Client, XsError>` is one (tests count or fail attempts with it).
pub trait Reconnect: Send {
    /// One attempt; the daemon retries with a backoff while this fails.
    fn reconnect(&mut self) -> Result<Client, XsError>;
}

impl<F> Reconnect for F
where
    F: FnMut() -> Result<Client, XsError> + Send,
{
    fn reconnect(&mut self) -> Result<Client, XsError> {
        self()
    }
}

/// A real Xen host: [`Client::open_default`] again (`$XENSTORED_PATH`, xenstored's socket,
/// then `/dev/xen/xenbus`), as at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconnectDefault;

impl Reconnect for ReconnectDefault {
    fn reconnect(&mut self) -> Result<Client, XsError> {
        Client::open_default()
    }
}

/// A simulated host: xenstored's privileged unix socket in the host's directory
/// ([`simhost::connect_dom0_xenstore`]), which speaks as dom0.
#[derive(Debug, Clone)]
pub struct ReconnectSim {
    dir: PathBuf,
}

impl ReconnectSim {
    /// Reconnects to the simulated host in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl Reconnect for ReconnectSim {
    fn reconnect(&mut self) -> Result<Client, XsError> {
        simhost::connect_dom0_xenstore(&self.dir)
    }
}

/// The first wait after the connection was lost; it doubles after each failed attempt.
pub(super) const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest wait between attempts: the daemon keeps trying for ever at this pace.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(1);

/// When to try reconnecting next.
///
/// Invariant: `delay` is [`FIRST_DELAY`] doubled once per failed attempt, capped at
/// [`MAX_DELAY`], and `next` is the last failure (or the loss) plus `delay`.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    delay: Duration,
    next: Instant,
    /// Failed attempts so far.
    pub failures: u32,
}

impl Backoff {
    /// The connection was lost at `now`: the first attempt is due [`FIRST_DELAY`] later.
    pub fn new(now: Instant) -> Self {
        Self { delay: FIRST_DELAY, next: now + FIRST_DELAY, failures: 0 }
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// How long to wait for events before the next attempt, in whole milliseconds
    /// (rounded up, so that the wait never ends before the attempt is due).
    pub fn timeout_ms(&self, now: Instant) -> u16 {
        let left = self.next.saturating_duration_since(now);
        u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX)
    }

    /// An attempt failed at `now`: wait twice as long (at most [`MAX_DELAY`]).
    pub fn failed(&mut self, now: Instant) {
        self.failures += 1;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.next = now + self.delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_10_ms_to_at_most_1_s() {
        let start = Instant::now();
        let mut backoff = Backoff::new(start);
        assert!(!backoff.due(start));
        assert_eq!(backoff.timeout_ms(start), 10);
        assert!(backoff.due(start + FIRST_DELAY));
        let mut delays = Vec::new();
        let mut now = start + FIRST_DELAY;
        for _ in 0..10 {
            backoff.failed(now);
            delays.push(backoff.timeout_ms(now));
            now += Duration::from_millis(u64::from(backoff.timeout_ms(now)));
            assert!(backoff.due(now));
        }
        assert_eq!(delays, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        assert_eq!(backoff.failures, 10);
    }

    #[test]
    fn the_wait_rounds_up_and_never_goes_negative() {
        let start = Instant::now();
        let backoff = Backoff::new(start);
        assert_eq!(backoff.timeout_ms(start + Duration::from_micros(9_500)), 1);
        assert_eq!(backoff.timeout_ms(start + Duration::from_secs(5)), 0);
    }

    #[test]
    fn closures_are_reconnectors() {
        let mut calls = 0;
        let mut refuse = || {
            calls += 1;
            Err(XsError::Disconnected)
        };
        assert!(Reconnect::reconnect(&mut refuse).is_err_and(|e| e.is_disconnected()));
        assert_eq!(calls, 1);
    }
}
