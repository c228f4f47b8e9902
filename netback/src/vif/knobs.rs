//! Per-vif batching and notification knobs, tunable while traffic runs.
//!
//! [`Knobs`] is a set of atomics shared (`Arc`) by the daemon and the vif's worker; the
//! worker re-reads it at every pass of its loop, so a change applies to the next drain
//! without a reconnect and without losing a frame. [`KnobValues`] is the plain copy used by
//! the control protocol and the configuration; [`PartialKnobs`] names only the knobs a
//! request (or a command line) changes.
//!
//! Defaults (adaptive, as NAPI): drains of 64 requests/frames, grant-copy batches of 64;
//! the TX event re-armed at `req_cons + 1` (every new request may notify); while the ring
//! stays busy responses are pushed every 64 responses or 50 µs, whichever comes first, but
//! as soon as the worker runs out of work it pushes and notifies at once, so a lone ping
//! waits for nothing; no busy polling; an MTU of 65521, the most a netif frame can carry
//! (frames up to 65535 bytes, scatter-gather), so only the protocol limits a frame until a
//! study sets 1500 or 9000; every TX frame copied (`tx_map_min` 0) until measurements on
//! real Xen choose a threshold for mapping; Linux's RX drain (10 s) and stall (60 s)
//! timeouts (`rx_stall.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netif::RingKind;

/// Slots of a TX or RX ring: the most requests that can be outstanding.
pub const RING_SIZE: u32 = netif::TxRing::SIZE;

/// Largest MTU accepted (a frame must fit one 4 KiB page without GSO).
pub const MAX_MTU: u32 = 65535 - 14;

/// Longest frame a guest can send (netif sizes are 16-bit).
pub const MAX_FRAME_LEN: u32 = 65535;

/// Longest time knob in µs (one second).
pub const MAX_USECS: u32 = 1_000_000;

/// Longest RX timeout knob in ms (one hour).
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;

macro_rules! knobs {
    ($($(#[$doc:meta])* $name:ident = $default:expr;)*) => {
        /// A copy of every knob (the control protocol's and the configuration's form).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct KnobValues {
            $($(#[$doc])* pub $name: u32,)*
        }

        impl Default for KnobValues {
            fn default() -> Self {
                Self { $($name: $default,)* }
            }
        }

        /// Some knobs: what a `Set` request, a command line or the backend's
        /// `netback-knobs/` nodes change. `None` leaves a knob as it is.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
        #[serde(default)]
        pub struct PartialKnobs {
            $($(#[$doc])* #[arg(long)] #[serde(skip_serializing_if = "Option::is_none")]
            pub $name: Option<u32>,)*
        }

        /// The live knobs of one vif.
        #[derive(Debug)]
        pub struct Knobs {
            $($name: AtomicU32,)*
        }

        impl Knobs {
            /// Live knobs holding `values` (not validated: see [`KnobValues::validate`]).
            pub fn new(values: KnobValues) -> Self {
                Self { $($name: AtomicU32::new(values.$name),)* }
            }

            /// The current values (each read atomically).
            pub fn get(&self) -> KnobValues {
                KnobValues { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Stores every knob of `values` (each atomically).
            fn store(&self, values: &KnobValues) {
                $(self.$name.store(values.$name, Ordering::Relaxed);)*
            }
        }

        impl KnobValues {
            /// Every knob, as a change that names them all (for printing with
            /// [`PartialKnobs::named`]).
            pub fn all(&self) -> PartialKnobs {
                PartialKnobs { $($name: Some(self.$name),)* }
            }

            /// `self` with the knobs `change` names replaced.
            pub fn with(mut self, change: &PartialKnobs) -> Self {
                $(if let Some(v) = change.$name { self.$name = v; })*
                self
            }
        }

        impl PartialKnobs {
            /// The knob names, kebab-case (as command-line flags and xenstore nodes).
            pub const NAMES: &[&str] = &[$(kebab!($name),)*];

            /// Sets the knob named `name` (kebab- or snake-case) from text.
            ///
            /// # Errors
            /// An unknown name or a value that is not an unsigned 32-bit number.
            pub fn set_named(&mut self, name: &str, value: &str) -> Result<(), KnobError> {
                let parse = || value.trim().parse::<u32>().map_err(|_| KnobError::NotANumber {
                    knob: name.to_owned(),
                    value: value.to_owned(),
                });
                match name.replace('-', "_").as_str() {
                    $(stringify!($name) => self.$name = Some(parse()?),)*
                    _ => return Err(KnobError::Unknown(name.to_owned())),
                }
                Ok(())
            }

            /// `(kebab-name, value)` of every knob given.
            pub fn named(&self) -> Vec<(&'static str, u32)> {
                let mut out = Vec::new();
                $(if let Some(v) = self.$name { out.push((kebab!($name), v)); })*
                out
            }
        }
    };
}

/// The kebab-case name of a knob, at compile time.
macro_rules! kebab {
    (tx_drain_max) => {
        "tx-drain-max"
    };
    (rx_drain_max) => {
        "rx-drain-max"
    };
    (copy_batch) => {
        "copy-batch"
    };
    (req_event_ahead) => {
        "req-event-ahead"
    };
    (notify_every) => {
        "notify-every"
    };
    (notify_usecs) => {
        "notify-usecs"
    };
    (busy_poll_usecs) => {
        "busy-poll-usecs"
    };
    (mtu) => {
        "mtu"
    };
    (tx_map_min) => {
        "tx-map-min"
    };
    (rx_drain_timeout_ms) => {
        "rx-drain-timeout-ms"
    };
    (rx_stall_timeout_ms) => {
        "rx-stall-timeout-ms"
    };
}

knobs! {
    /// Most TX requests consumed per drain (one pass of the worker).
    tx_drain_max = 64;
    /// Most frames delivered into RX buffers per drain.
    rx_drain_max = 64;
    /// Most frames per grant-copy call (segments = frames while every frame is one slot).
    copy_batch = 64;
    /// When re-arming the TX event after a busy pass, `req_event = req_cons + k`: the
    /// frontend notifies once `k` new requests are published (1 = every request). A timer of
    /// `notify_usecs` (at least 100 µs) bounds the wait for fewer than `k`.
    req_event_ahead = 1;
    /// While busy, push responses (and notify if the frontend asks) once this many are waiting.
    notify_every = 64;
    /// While busy, push responses at the latest this many µs after the oldest was written.
    notify_usecs = 50;
    /// After running out of work, keep polling the rings this many µs before sleeping.
    busy_poll_usecs = 0;
    /// Largest IP packet accepted from the guest without GSO: frames longer than
    /// `mtu + 14` are dropped (counted as `tx_dropped_mtu`).
    mtu = 65521;
    /// TX frames of at least this many bytes are sent without copying their payload, when
    /// the uplink gathers (a TAP): the first bytes (headers) are grant-copied, the guest's
    /// other pages mapped read-only and written from there. 0 = always copy.
    tx_map_min = 0;
    /// Frames for the guest that have waited this many ms while it lacked the RX requests
    /// to take them are dropped (`rx_dropped_expired`; Linux's `rx_drain_timeout_msecs`).
    /// 0 = never.
    rx_drain_timeout_ms = 10_000;
    /// A guest that has lacked the RX requests for the next frame this many ms without
    /// taking any is declared stalled: its uplink's carrier goes off until it posts enough
    /// (Linux's `rx_stall_timeout_msecs`; only if the frontend has `feature-rx-notify`).
    /// 0 = never.
    rx_stall_timeout_ms = 60_000;
}

/// An invalid knob value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    /// A batch or drain size of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Larger than the ring.
    #[error("{knob} = {value} exceeds the ring size ({RING_SIZE})")]
    BeyondRing {
        /// The knob.
        knob: &'static str,
        /// Its value.
        value: u32,
    },
    /// A time beyond [`MAX_USECS`].
    #[error("{knob} = {value} µs exceeds {MAX_USECS} µs")]
    TooLong {
        /// The knob.
        knob: &'static str,
        /// Its value.
        value: u32,
    },
    /// A `tx-map-min` beyond the longest frame.
    #[error("tx-map-min = {0} exceeds the longest frame ({MAX_FRAME_LEN} bytes; 0 turns mapping off)")]
    MapMin(u32),
    /// An RX timeout beyond [`MAX_TIMEOUT_MS`].
    #[error("{knob} = {value} ms exceeds {MAX_TIMEOUT_MS} ms (0 turns it off)")]
    TimeoutTooLong {
        /// The knob.
        knob: &'static str,
        /// Its value.
        value: u32,
    },
    /// An MTU outside `68..=MAX_MTU`.
    #[error("mtu = {0} is outside 68..={MAX_MTU}")]
    Mtu(u32),
    /// No knob has that name.
    #[error("unknown knob {0:?} (known: {names})", names = PartialKnobs::NAMES.join(", "))]
    Unknown(String),
    /// A value that is not a number.
    #[error("{knob}: {value:?} is not an unsigned number")]
    NotANumber {
        /// The knob.
        knob: String,
        /// The text.
        value: String,
    },
}

impl KnobValues {
    /// Checks every knob.
    ///
    /// # Errors
    /// The first invalid knob.
    pub fn validate(&self) -> Result<(), KnobError> {
        let sizes = [
            ("tx-drain-max", self.tx_drain_max),
            ("rx-drain-max", self.rx_drain_max),
            ("copy-batch", self.copy_batch),
            ("req-event-ahead", self.req_event_ahead),
            ("notify-every", self.notify_every),
        ];
        for (knob, value) in sizes {
            if value == 0 {
                return Err(KnobError::Zero(knob));
            }
            if value > RING_SIZE {
                return Err(KnobError::BeyondRing { knob, value });
            }
        }
        for (knob, value) in [("notify-usecs", self.notify_usecs), ("busy-poll-usecs", self.busy_poll_usecs)] {
            if value > MAX_USECS {
                return Err(KnobError::TooLong { knob, value });
            }
        }
        let timeouts =
            [("rx-drain-timeout-ms", self.rx_drain_timeout_ms), ("rx-stall-timeout-ms", self.rx_stall_timeout_ms)];
        for (knob, value) in timeouts {
            if value > MAX_TIMEOUT_MS {
                return Err(KnobError::TimeoutTooLong { knob, value });
            }
        }
        if !(68..=MAX_MTU).contains(&self.mtu) {
            return Err(KnobError::Mtu(self.mtu));
        }
        if self.tx_map_min > MAX_FRAME_LEN {
            return Err(KnobError::MapMin(self.tx_map_min));
        }
        Ok(())
    }

    /// The largest frame accepted from the guest without GSO (`mtu` plus the Ethernet header).
    pub fn max_frame_len(&self) -> usize {
        self.mtu as usize + 14
    }

    /// `rx_drain_timeout_ms` as a duration; `None` when off.
    pub fn rx_drain_timeout(&self) -> Option<Duration> {
        (self.rx_drain_timeout_ms > 0).then(|| Duration::from_millis(self.rx_drain_timeout_ms.into()))
    }

    /// `rx_stall_timeout_ms` as a duration; `None` when off.
    pub fn rx_stall_timeout(&self) -> Option<Duration> {
        (self.rx_stall_timeout_ms > 0).then(|| Duration::from_millis(self.rx_stall_timeout_ms.into()))
    }
}

impl Knobs {
    /// Validates `current values + change` and stores them; returns the new values. Each
    /// knob changes atomically; the worker sees the new set from its next pass on.
    ///
    /// # Errors
    /// The change would make a knob invalid; nothing is stored then.
    pub fn apply(&self, change: &PartialKnobs) -> Result<KnobValues, KnobError> {
        let values = self.get().with(change);
        values.validate()?;
        self.store(&values);
        Ok(values)
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Self::new(KnobValues::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_timeouts_default_to_linux_and_zero_turns_them_off() {
        let d = KnobValues::default();
        assert_eq!(
            (d.rx_drain_timeout(), d.rx_stall_timeout()),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(60)))
        );
        let off =
            d.with(&PartialKnobs { rx_drain_timeout_ms: Some(0), rx_stall_timeout_ms: Some(0), ..Default::default() });
        assert_eq!(off.validate(), Ok(()));
        assert_eq!((off.rx_drain_timeout(), off.rx_stall_timeout()), (None, None));
        let mut named = PartialKnobs::default();
        named.set_named("rx-stall-timeout-ms", "300").unwrap();
        named.set_named("rx_drain_timeout_ms", " 200 ").unwrap();
        assert_eq!(named.named(), [("rx-drain-timeout-ms", 200), ("rx-stall-timeout-ms", 300)]);
        let long = d.with(&PartialKnobs { rx_drain_timeout_ms: Some(MAX_TIMEOUT_MS + 1), ..Default::default() });
        let e = long.validate().unwrap_err();
        assert!(e.to_string().contains("rx-drain-timeout-ms") && e.to_string().contains("0 turns it off"), "{e}");
    }
}
