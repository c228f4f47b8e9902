//! Batching measurements of one vif: power-of-two histograms of drain and grant-copy batch
//! sizes and of slots per packet, and the counters of the notification policy. Bumped by
//! the worker only (relaxed atomics), read by anyone.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of a [`Histogram`]: bucket `i` counts values in `[2^i, 2^(i+1))`, the last one
/// everything from `2^(BUCKETS-1)` up (1, 2-3, 4-7, …, 256-511, 512+).
pub const BUCKETS: usize = 10;

/// A histogram of positive values with power-of-two buckets, plus their count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

/// A copy of a [`Histogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistogramStats {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// Counts per bucket (see [`BUCKETS`]).
    pub buckets: [u64; BUCKETS],
}

/// The bucket of `n` (> 0).
pub fn bucket_of(n: u64) -> usize {
    (63 - n.max(1).leading_zeros() as usize).min(BUCKETS - 1)
}

/// The label of bucket `i`: `1`, `2-3`, …, `512+`.
pub fn bucket_label(i: usize) -> String {
    let lo = 1u64 << i;
    match i {
        0 => "1".into(),
        i if i + 1 == BUCKETS => format!("{lo}+"),
        _ => format!("{lo}-{}", (lo << 1) - 1),
    }
}

impl Histogram {
    /// Records `n`; zero is not recorded.
    pub fn record(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.buckets[bucket_of(n)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every bucket.
    pub fn snapshot(&self) -> HistogramStats {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        HistogramStats { count: buckets.iter().sum(), sum: self.sum.load(Ordering::Relaxed), buckets }
    }
}

impl HistogramStats {
    /// Mean value; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
    }

    /// What was recorded since `earlier`.
    pub fn since(&self, earlier: &HistogramStats) -> HistogramStats {
        HistogramStats {
            count: self.count.saturating_sub(earlier.count),
            sum: self.sum.saturating_sub(earlier.sum),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }
}

macro_rules! batch_counters {
    (hist { $($(#[$hdoc:meta])* $h:ident,)* } plain { $($(#[$doc:meta])* $name:ident,)* }) => {
        /// Live batching measurements of one vif.
        #[derive(Debug, Default)]
        pub struct BatchCounters {
            $($(#[$hdoc])* pub $h: Histogram,)*
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`BatchCounters`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct BatchStats {
            $($(#[$hdoc])* pub $h: HistogramStats,)*
            $($(#[$doc])* pub $name: u64,)*
        }

        impl BatchCounters {
            /// Reads everything (each value atomically; not one snapshot).
            pub fn snapshot(&self) -> BatchStats {
                BatchStats {
                    $($h: self.$h.snapshot(),)*
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }

        impl BatchStats {
            /// What happened since `earlier`.
            pub fn since(&self, earlier: &BatchStats) -> BatchStats {
                BatchStats {
                    $($h: self.$h.since(&earlier.$h),)*
                    $($name: self.$name.saturating_sub(earlier.$name),)*
                }
            }

            /// `(name, histogram)` of every histogram.
            pub fn histograms(&self) -> [(&'static str, &HistogramStats); 4] {
                [$((stringify!($h), &self.$h),)*]
            }
        }
    };
}

batch_counters! {
    hist {
        /// TX requests consumed per drain (passes that consumed none are not recorded).
        tx_drain,
        /// Frames delivered (or dropped) per RX drain.
        rx_deliver,
        /// Segments per grant-copy call, both directions.
        copy_batch,
        /// Ring slots per TX packet ([`super::VifCounters::record_slots`]).
        slots_per_packet,
    }
    plain {
        /// Response pushes (each may notify).
        pushes,
        /// Passes that left written responses unpushed because the ring was busy.
        pushes_deferred,
        /// TX events re-armed further than `req_cons + 1` (`req_event_ahead` > 1).
        events_armed_ahead,
        /// Wake-ups by the coalescing timer.
        timer_wakeups,
        /// Idle periods spent busy-polling before sleeping.
        busy_polls,
        /// Busy-polling periods that found work.
        busy_poll_hits,
        /// Passes that saw changed knob values.
        knob_changes,
        /// TX frames longer than `mtu + 14` without GSO, dropped (also in `tx_dropped_uplink`).
        tx_dropped_mtu,
    }
}

impl super::VifCounters {
    /// Records that one TX packet took `slots` ring slots (request, extras and fragments).
    pub fn record_slots(&self, slots: u32) {
        self.batching.slots_per_packet.record(u64::from(slots));
    }
}
