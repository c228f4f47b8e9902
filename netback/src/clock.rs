//! The one clock the data path reads for coarse timing (forwarding-cache lifetimes, RX
//! queue expiry, RX stall detection): `CLOCK_MONOTONIC_COARSE` in nanoseconds.
//!
//! On a Xen PV dom0 the kernel has no vDSO clock source, so `CLOCK_MONOTONIC` (and
//! `Instant::now`) is a real system call; the coarse clock is read from the vDSO data page
//! whatever the clock source, at jiffy resolution ([`RESOLUTION`] at worst), which is
//! plenty for intervals of milliseconds and more. Callers still read it once per batch or
//! per pass, never per frame.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of `CLOCK_MONOTONIC_COARSE`.
pub(crate) type Nanos = u64;

/// The coarse clock's worst resolution (one jiffy at `HZ=100`): a deadline computed from it
/// may look this much early.
pub(crate) const RESOLUTION: Duration = Duration::from_millis(10);

/// `CLOCK_MONOTONIC_COARSE` now, in nanoseconds (0 if it cannot be read).
pub(crate) fn coarse_now() -> Nanos {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
}

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
