//! The learned MAC → port table.
//!
//! Aging is lazy: an entry older than the aging time is ignored by lookups
//! and removed when a lookup hits it, when its MAC is learned again, or when
//! the table is full and needs room. When the table is full of live entries,
//! the least recently seen one is evicted to make room for the new MAC (a
//! switch that refused to learn would flood that MAC's traffic forever).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::debug;

use super::PortId;

/// Nanoseconds since the switch's epoch.
pub(super) type Nanos = u64;

/// Converts a duration to [`Nanos`], saturating.
pub(super) fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Entry {
    port: PortId,
    /// Last time a frame from this MAC entered on `port`. Atomic so that
    /// refreshing a known MAC needs only the table's read lock.
    last_seen: AtomicU64,
}

/// What [`MacTable::lookup`] found for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// A live entry.
    Port(PortId),
    /// No entry.
    Unknown,
    /// An entry older than the aging time (to be removed by the caller
    /// under the write lock); treat as unknown.
    Expired,
}

/// Bounded MAC table. Invariant: `entries.len() <= capacity`.
#[derive(Debug)]
pub(super) struct MacTable {
    entries: HashMap<[u8; 6], Entry>,
    capacity: usize,
    aging: Nanos,
}

impl MacTable {
    pub(super) fn new(capacity: usize, aging: Duration) -> MacTable {
        MacTable { entries: HashMap::new(), capacity, aging: nanos(aging) }
    }

    fn live(&self, e: &Entry, now: Nanos) -> bool {
        now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) <= self.aging
    }

    /// Refreshes `mac`'s timestamp if it is already learned on `port`
    /// (read-lock fast path). Returns false if [`MacTable::learn`] is needed.
    pub(super) fn refresh(&self, mac: &[u8; 6], port: PortId, now: Nanos) -> bool {
        match self.entries.get(mac) {
            Some(e) if e.port == port && self.live(e, now) => {
                e.last_seen.fetch_max(now, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Learns (or moves) `mac` to `port`.
    pub(super) fn learn(&mut self, mac: [u8; 6], port: PortId, now: Nanos) {
        if let Some(e) = self.entries.get_mut(&mac) {
            let old = e.port;
            e.port = port;
            e.last_seen.store(now, Ordering::Relaxed);
            if old != port {
                debug!(mac = %fmt_mac(&mac), from = %old, to = %port, "switch: MAC moved");
            }
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(mac, Entry { port, last_seen: AtomicU64::new(now) });
        debug!(mac = %fmt_mac(&mac), %port, "switch: MAC learned");
    }

    /// Frees at least one slot: drops every expired entry, or else the least
    /// recently seen one. O(capacity), only when the table is full.
    fn make_room(&mut self, now: Nanos) {
        let before = self.entries.len();
        let aging = self.aging;
        self.entries.retain(|_, e| now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) <= aging);
        if self.entries.len() < before {
            debug!(expired = before - self.entries.len(), "switch: MAC entries aged out");
            return;
        }
        let oldest = self.entries.iter().min_by_key(|(_, e)| e.last_seen.load(Ordering::Relaxed)).map(|(m, _)| *m);
        if let Some(mac) = oldest {
            self.entries.remove(&mac);
            debug!(mac = %fmt_mac(&mac), "switch: MAC table full, evicted least recently seen");
        }
    }

    /// Where frames for `mac` go.
    pub(super) fn lookup(&self, mac: &[u8; 6], now: Nanos) -> Lookup {
        match self.entries.get(mac) {
            Some(e) if self.live(e, now) => Lookup::Port(e.port),
            Some(_) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// Removes `mac` if it is (still) expired.
    pub(super) fn remove_expired(&mut self, mac: &[u8; 6], now: Nanos) {
        if self.entries.get(mac).is_some_and(|e| !self.live(e, now)) {
            self.entries.remove(mac);
            debug!(mac = %fmt_mac(mac), "switch: MAC aged out");
        }
    }

    /// Forgets every MAC learned on `port`.
    pub(super) fn forget_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// Live entries as (MAC, port, time since last seen), sorted by MAC.
    pub(super) fn live_entries(&self, now: Nanos) -> Vec<([u8; 6], PortId, Duration)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| self.live(e, now))
            .map(|(m, e)| (*m, e.port, Duration::from_nanos(now.saturating_sub(e.last_seen.load(Ordering::Relaxed)))))
            .collect();
        v.sort_unstable_by_key(|(m, _, _)| *m);
        v
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub(super) fn fmt_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn learn_refresh_age_move() {
        let mut t = MacTable::new(8, Duration::from_secs(10));
        t.learn(A, PortId(1), 0);
        assert_eq!(t.lookup(&A, 5 * SEC), Lookup::Port(PortId(1)));
        assert!(t.refresh(&A, PortId(1), 5 * SEC));
        assert!(!t.refresh(&A, PortId(2), 5 * SEC), "another port needs learn()");
        assert_eq!(t.lookup(&A, 15 * SEC), Lookup::Port(PortId(1)), "refreshed at 5 s");
        assert_eq!(t.lookup(&A, 16 * SEC), Lookup::Expired);
        t.remove_expired(&A, 16 * SEC);
        assert_eq!(t.lookup(&A, 16 * SEC), Lookup::Unknown);
        t.learn(A, PortId(1), 20 * SEC);
        t.learn(A, PortId(2), 21 * SEC);
        assert_eq!(t.lookup(&A, 21 * SEC), Lookup::Port(PortId(2)));
        t.forget_port(PortId(2));
        assert_eq!(t.lookup(&A, 21 * SEC), Lookup::Unknown);
    }

    #[test]
    fn full_table_evicts_expired_then_oldest() {
        let mut t = MacTable::new(2, Duration::from_secs(10));
        t.learn(A, PortId(1), 0);
        t.learn(B, PortId(1), SEC);
        t.learn(C, PortId(1), 2 * SEC);
        assert_eq!(t.lookup(&A, 2 * SEC), Lookup::Unknown, "oldest evicted");
        assert_eq!(t.live_entries(2 * SEC).len(), 2);
        // B expired at 11 s, C is live: learning A drops only B.
        t.learn(A, PortId(2), 12 * SEC);
        assert_eq!(t.lookup(&B, 12 * SEC), Lookup::Unknown);
        assert_eq!(t.lookup(&C, 12 * SEC), Lookup::Port(PortId(1)));
        assert_eq!(t.lookup(&A, 12 * SEC), Lookup::Port(PortId(2)));
    }

    #[test]
    fn zero_capacity_never_learns() {
        let mut t = MacTable::new(0, Duration::from_secs(10));
        t.learn(A, PortId(1), 0);
        assert_eq!(t.lookup(&A, 0), Lookup::Unknown);
    }
}
