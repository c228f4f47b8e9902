//! Crash points for the restart tests (`docs/restart.md`, "restart at each point of the
//! write order"): with `NETBACK_CRASH_AT=<point>:<n>` in the environment, the process
//! aborts (as `kill -9` would leave it: no destructor runs, the state file keeps what was
//! stored) the `n`-th time a worker reaches `<point>`. Unset, a crash point costs one
//! atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the crash point.
pub const ENV_CRASH_AT: &str = "NETBACK_CRASH_AT";

/// A place in the answering order of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashPoint {
    /// A drain's TX requests consumed and journaled, none answered.
    TxConsumed,
    /// TX responses written, the journal's `rsp_prod_pvt` not yet stored.
    TxWritten,
    /// The journal's TX `rsp_prod_pvt` stored, the responses not pushed.
    TxRecorded,
    /// RX requests consumed and journaled, no response written.
    RxConsumed,
    /// One frame of an RX batch answered, the frames after it not.
    RxHalfWritten,
    /// RX responses written, the journal's `rsp_prod_pvt` not yet stored.
    RxWritten,
    /// The journal's RX `rsp_prod_pvt` stored, the responses not pushed.
    RxRecorded,
}

impl CrashPoint {
    const ALL: [(CrashPoint, &'static str); 7] = [
        (CrashPoint::TxConsumed, "tx-consumed"),
        (CrashPoint::TxWritten, "tx-written"),
        (CrashPoint::TxRecorded, "tx-recorded"),
        (CrashPoint::RxConsumed, "rx-consumed"),
        (CrashPoint::RxHalfWritten, "rx-half-written"),
        (CrashPoint::RxWritten, "rx-written"),
        (CrashPoint::RxRecorded, "rx-recorded"),
    ];
}

/// The armed point and how many more times it may be passed.
struct Armed {
    point: CrashPoint,
    left: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(ENV_CRASH_AT).ok()?;
            let parsed = value.split_once(':').and_then(|(name, n)| {
                let point = CrashPoint::ALL.iter().find(|(_, s)| *s == name)?.0;
                Some(Armed { point, left: AtomicU64::new(n.parse().ok()?) })
            });
            if parsed.is_none() {
                tracing::error!("{ENV_CRASH_AT}={value:?} is not <point>:<count>; no crash point armed");
            }
            parsed
        })
        .as_ref()
}

/// Aborts the process if `point` is the armed one and its count runs out here.
pub(super) fn reached(point: CrashPoint) {
    let Some(armed) = armed() else { return };
    if armed.point == point && armed.left.fetch_sub(1, Ordering::Relaxed) == 1 {
        eprintln!("netback: crash point {point:?} reached ({ENV_CRASH_AT}); aborting");
        std::process::abort();
    }
}
