//! Per-vif counters: bumped by the worker (relaxed atomics, one writer), read by anyone;
//! and one state flag beside them, `rx_stalled`, which is not a count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use super::histogram::{BatchCounters, BatchStats};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one vif, shared between its worker (the only writer) and readers.
        #[derive(Debug, Default)]
        pub struct VifCounters {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// Batching measurements (see [`BatchCounters`]).
            pub batching: BatchCounters,
            /// The guest's RX is stalled now (`rx_stall.rs`): its uplink's carrier is off.
            /// Set and cleared by the worker; false while no worker runs.
            pub rx_stalled: AtomicBool,
        }

        /// A copy of [`VifCounters`] at one moment. Directions are the guest's: `tx` is what
        /// the guest sent (its TX ring), `rx` what it received (its RX ring).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct VifStats {
            $($(#[$doc])* #[serde(default)] pub $name: u64,)*
            /// Batching measurements.
            #[serde(default)]
            pub batching: BatchStats,
            /// The guest's RX was stalled when read (a state, not a count: [`VifStats::since`]
            /// keeps the later value).
            #[serde(default)]
            pub rx_stalled: bool,
        }

        impl VifCounters {
            /// Reads every counter (each atomically; the set is not one snapshot).
            pub fn snapshot(&self) -> VifStats {
                VifStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    batching: self.batching.snapshot(),
                    rx_stalled: self.rx_stalled.load(Ordering::Relaxed),
                }
            }
        }

        impl VifStats {
            /// What was counted since `earlier` (a previous snapshot of the same vif).
            pub fn since(&self, earlier: &VifStats) -> VifStats {
                VifStats {
                    $($name: self.$name.saturating_sub(earlier.$name),)*
                    batching: self.batching.since(&earlier.batching),
                    rx_stalled: self.rx_stalled,
                }
            }
        }
    };
}

counters! {
    /// Frames taken from the TX ring, copied in and handed to the uplink.
    tx_packets,
    /// Bytes of those frames.
    tx_bytes,
    /// TX frames answered `NETIF_RSP_ERROR` because the request was invalid (offset + size
    /// beyond the page, a first slot shorter than an Ethernet header, a chain of 20 or 21 slots, a
    /// follow-on slot larger than the rest of the packet, an unsupported extra).
    tx_dropped_bad_request,
    /// TX frames whose grant copy failed (the frontend's grant was bad).
    tx_dropped_copy_failed,
    /// TX frames the uplink refused (runt, group source MAC, hairpin, destination queue full).
    tx_dropped_uplink,
    /// Frames written into the guest's RX buffers.
    rx_packets,
    /// Bytes of those frames.
    rx_bytes,
    /// Frames for the guest dropped because they need several RX buffers and the guest has
    /// no `feature-sg`, or are longer than 64 KiB.
    rx_dropped_too_big,
    /// Frames for the guest whose grant copy into its RX buffer failed.
    rx_dropped_copy_failed,
    /// Frames for the guest dropped because a software offload (checksum fill-in or
    /// segmentation) could not parse their headers.
    rx_dropped_offload,
    /// TX frames accepted from a `more_data` chain of two or more slots.
    tx_sg_frames,
    /// TX frames accepted with a GSO extra (super-frames).
    tx_gso_frames,
    /// Frames written into two or more of the guest's RX buffers.
    rx_sg_frames,
    /// Frames delivered to the guest with a GSO extra.
    rx_gso_frames,
    /// Checksums filled in software for a guest that cannot take a blank one.
    sw_checksums,
    /// GSO super-frames segmented in software for a guest that cannot take them.
    sw_segmentations,
    /// Events received from the frontend (taken from the event channel(s)).
    notifications_in,
    /// Events after which a pass found nothing to do.
    events_spurious,
    /// Times the event channels were muted after spurious events in a row (a storm).
    event_mutes,
    /// Events sent to the frontend.
    notifications_out,
    /// Grant-copy batches submitted (one hypercall each on Xen).
    copy_batches,
    /// Grant-copy segments in those batches.
    copy_segments,
    /// TX frames sent from a copied head and the guest's mapped pages (`tx-map-min`).
    tx_mapped_frames,
    /// Bytes of those frames that were mapped rather than copied.
    tx_mapped_bytes,
    /// `map_many` calls of the TX path (one per drain, plus one per frame after a refusal).
    map_calls,
    /// Pages mapped by those calls.
    map_pages,
    /// TX frames that were to be mapped but were copied instead because mapping their pages
    /// failed (a bad grant then fails its copy too, and counts in `tx_dropped_copy_failed`).
    tx_map_fallbacks,
    /// Frames for the guest dropped because they waited longer than `rx-drain-timeout-ms`
    /// while it lacked the RX requests to take them (in the switch port's queue, or
    /// prepared and waiting for enough requests).
    rx_dropped_expired,
    /// Frames for the guest dropped when its RX was declared stalled: those prepared and
    /// waiting for RX requests, and those read out of a TAP's kernel queue (a switch port
    /// counts what it held in `dropped_carrier_off`).
    rx_dropped_stalled,
    /// Times the guest's RX was declared stalled ("Guest Rx stalled": carrier off).
    rx_stalls,
    /// TX slots a dead daemon process had consumed and not answered, answered with their
    /// fallback (ERROR, or NULL for an extra) when this one took the vif over
    /// (`docs/restart.md`): their frames may not have reached the uplink.
    tx_dropped_restart,
    /// RX slots a dead daemon process had consumed and not answered, answered ERROR when this
    /// one took the vif over: the frames meant for them are lost.
    rx_dropped_restart,
}

impl VifCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl VifStats {
    /// Every drop, summed over reasons and directions.
    pub fn dropped(&self) -> u64 {
        self.tx_dropped_bad_request
            + self.tx_dropped_copy_failed
            + self.tx_dropped_uplink
            + self.rx_dropped_too_big
            + self.rx_dropped_copy_failed
            + self.rx_dropped_offload
            + self.rx_dropped_expired
            + self.rx_dropped_stalled
            + self.tx_dropped_restart
            + self.rx_dropped_restart
    }
}
