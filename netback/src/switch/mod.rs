//! The embedded learning Ethernet switch that vifs plug into.
//!
//! Each vif worker owns a [`SwitchPort`] (an [`Uplink`](crate::port::Uplink)).
//! A frame transmitted into a port teaches the switch its source MAC, then
//! goes to the port that MAC was learned on, or to every other port if the
//! destination is broadcast, multicast or unknown. It is never sent back out
//! of the port it came in on. Each port's queue is bounded in frames and in
//! bytes; what doesn't fit is dropped and counted, so memory stays bounded. A port's
//! owner may drop the frames that waited too long ([`SwitchPort`]'s `Uplink::expire`) and
//! turn the port's carrier off, which drops what it holds and every frame for it until it
//! is on again (`Uplink::set_carrier`).
//!
//! Locking: the MAC table sits behind a `RwLock` (transmitting from a known
//! MAC takes only its read lock), the set of ports behind another `RwLock`
//! (read for every delivery, written only to add or remove a port), and each
//! port's queue behind its own `Mutex`. No two of the first two are held at
//! once; a queue lock is only taken under the ports read lock.

mod forward;
mod mac_table;
mod port;
mod queue;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tracing::debug;

use self::mac_table::{Lookup, MacTable, Nanos, nanos};
use self::queue::{PortQueue, add, bump};
use crate::frame::{Frame, is_multicast_mac};
use crate::port::{DropReason, PortStats, TransmitOutcome};

pub use self::port::SwitchPort;

/// Identifies a port for the lifetime of its switch; never reused, so a
/// stale MAC entry can never point at a newer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u64);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// Switch tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// A MAC not seen for this long is forgotten (its frames flood again).
    pub mac_aging: Duration,
    /// Most frames waiting for one port.
    pub port_queue_frames: usize,
    /// Most bytes waiting for one port.
    pub port_queue_bytes: usize,
    /// Most learned MACs; when full the least recently seen is evicted.
    pub mac_table_capacity: usize,
    /// Most ports at once.
    pub max_ports: usize,
}

impl Default for SwitchConfig {
    fn default() -> SwitchConfig {
        SwitchConfig {
            mac_aging: Duration::from_secs(300),
            port_queue_frames: 1024,
            port_queue_bytes: 4 << 20,
            mac_table_capacity: 4096,
            max_ports: 256,
        }
    }
}

/// Errors of the switch.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Adding a port was refused.
    #[error("cannot add switch port {name:?}: {reason}")]
    AddPort {
        /// Requested port name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Creating a port's readiness eventfd failed.
    #[error("cannot create the readiness eventfd of switch port {name:?}")]
    CreateEventFd {
        /// Requested port name.
        name: String,
        /// The `eventfd(2)` error.
        #[source]
        source: nix::Error,
    },
}

/// A port as seen by [`Switch::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSnapshot {
    /// The port's id.
    pub id: PortId,
    /// The name given to [`Switch::add_port`].
    pub name: String,
    /// Its counters.
    pub stats: PortStats,
    /// Frames waiting in its queue.
    pub queued_frames: usize,
    /// Bytes waiting in its queue.
    pub queued_bytes: usize,
}

/// A live entry of the MAC table, as seen by [`Switch::mac_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacEntry {
    /// The learned address.
    pub mac: [u8; 6],
    /// The port it was last seen on.
    pub port: PortId,
    /// Time since a frame from it was last seen.
    pub age: Duration,
}

/// The switch. Shared (`Arc`) by all its ports.
#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    /// Time zero of the MAC table's timestamps.
    epoch: Instant,
    macs: RwLock<MacTable>,
    /// Invariant: holds exactly the ports whose `SwitchPort` is alive;
    /// `ports.len() <= config.max_ports`.
    ports: RwLock<BTreeMap<PortId, Arc<PortQueue>>>,
    next_id: AtomicU64,
    /// Bumped after every change of `macs` or `ports` that can move a MAC's destination;
    /// a port's forwarding cache is valid only for the generation it was filled in.
    generation: AtomicU64,
}

/// Lock helpers: a poisoned lock only means another thread panicked between
/// complete updates (no update here can panic halfway), so carry on.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Switch {
    /// A switch with no ports.
    pub fn new(config: SwitchConfig) -> Arc<Switch> {
        let macs = RwLock::new(MacTable::new(config.mac_table_capacity, config.mac_aging));
        Arc::new(Switch {
            config,
            epoch: Instant::now(),
            macs,
            ports: RwLock::default(),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
        })
    }

    /// The configuration the switch was created with.
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// Plugs in a new port. Names must be unique among live ports. The port
    /// is unplugged, and the MACs learned on it forgotten, when the returned
    /// [`SwitchPort`] is dropped.
    pub fn add_port(self: &Arc<Self>, name: &str) -> Result<SwitchPort, SwitchError> {
        let refuse = |reason| SwitchError::AddPort { name: name.to_owned(), reason };
        let id = PortId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let queue = PortQueue::new(id, name, self.config.port_queue_frames, self.config.port_queue_bytes)
            .map_err(|source| SwitchError::CreateEventFd { name: name.to_owned(), source })?;
        let queue = Arc::new(queue);
        {
            let mut ports = write(&self.ports);
            if ports.len() >= self.config.max_ports {
                return Err(refuse("the switch has max_ports ports"));
            }
            if ports.values().any(|p| p.name == name) {
                return Err(refuse("a port with this name exists"));
            }
            ports.insert(id, Arc::clone(&queue));
        }
        self.changed();
        debug!(%id, name, "switch: port added");
        Ok(SwitchPort::new(Arc::clone(self), queue))
    }

    /// Unplugs a port (called by `SwitchPort::drop`).
    fn remove_port(&self, id: PortId) {
        // After this, no delivery can reach the port: deliveries look it up
        // under the ports read lock. Then forget its MACs; a transmit that
        // looked one up in between finds no port and floods instead.
        write(&self.ports).remove(&id);
        write(&self.macs).forget_port(id);
        self.changed();
        debug!(%id, "switch: port removed, its MACs forgotten");
    }

    /// Counters and queue depths of every port, by id.
    pub fn snapshot(&self) -> Vec<PortSnapshot> {
        read(&self.ports)
            .values()
            .map(|q| {
                let (queued_frames, queued_bytes) = q.depth();
                PortSnapshot {
                    id: q.id,
                    name: q.name.clone(),
                    stats: q.counters.snapshot(),
                    queued_frames,
                    queued_bytes,
                }
            })
            .collect()
    }

    /// The live (not aged-out) MAC table entries, sorted by MAC.
    pub fn mac_table(&self) -> Vec<MacEntry> {
        let now = self.now();
        read(&self.macs).live_entries(now).into_iter().map(|(mac, port, age)| MacEntry { mac, port, age }).collect()
    }

    fn now(&self) -> Nanos {
        nanos(self.epoch.elapsed())
    }

    /// Forwards a frame that entered on `ingress` (the slow path: MAC table and port map
    /// under their locks), queued with the coarse time `now`. Also returns the queue of the
    /// one known destination, if the frame had one, for the ingress port's forwarding cache.
    fn transmit(&self, ingress: &PortQueue, frame: Frame, now: u64) -> (TransmitOutcome, Option<Arc<PortQueue>>) {
        let c = &ingress.counters;
        bump(&c.tx_frames);
        add(&c.tx_bytes, frame.len());
        let (Some(src), Some(dst)) = (frame.src_mac(), frame.dst_mac()) else {
            bump(&c.dropped_runt);
            return (TransmitOutcome::Dropped(DropReason::Runt), None);
        };
        if is_multicast_mac(&src) {
            bump(&c.dropped_bad_source_mac);
            return (TransmitOutcome::Dropped(DropReason::BadSourceMac), None);
        }
        let dest = self.learn_and_lookup(ingress.id, src, dst);
        let ports = read(&self.ports);
        match dest.and_then(|id| ports.get(&id)) {
            Some(_) if dest == Some(ingress.id) => {
                bump(&c.dropped_hairpin);
                (TransmitOutcome::Dropped(DropReason::Hairpin), None)
            }
            Some(port) => {
                let outcome = match port.push(frame, now) {
                    None => TransmitOutcome::Sent,
                    Some(reason) => TransmitOutcome::Dropped(reason),
                };
                (outcome, Some(Arc::clone(port)))
            }
            None => {
                bump(&c.floods);
                let (mut queued, mut queue_full) = (0, 0);
                let mut others = ports.values().filter(|p| p.id != ingress.id).peekable();
                let mut frame = Some(frame);
                while let Some(port) = others.next() {
                    // Clone for all but the last destination, which gets the original.
                    let copy = if others.peek().is_some() { frame.clone() } else { frame.take() };
                    // A port whose carrier is off counts its copy itself; it is neither.
                    match copy.map(|f| port.push(f, now)) {
                        Some(None) => queued += 1,
                        Some(Some(DropReason::QueueFull)) => queue_full += 1,
                        Some(Some(_)) | None => {}
                    }
                }
                (TransmitOutcome::Flooded { queued, queue_full }, None)
            }
        }
    }

    /// Bumps the generation: every port's forwarding cache must look up again.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Learns `src` on `ingress`, then returns where `dst` lives (`None`:
    /// flood).
    fn learn_and_lookup(&self, ingress: PortId, src: [u8; 6], dst: [u8; 6]) -> Option<PortId> {
        let now = self.now();
        let found = {
            let macs = read(&self.macs);
            let known = macs.refresh(&src, ingress, now);
            let found = if is_multicast_mac(&dst) { Lookup::Unknown } else { macs.lookup(&dst, now) };
            known.then_some(found)
        };
        let found = found.unwrap_or_else(|| {
            let mut macs = write(&self.macs);
            macs.learn(src, ingress, now);
            self.changed();
            if is_multicast_mac(&dst) { Lookup::Unknown } else { macs.lookup(&dst, now) }
        });
        match found {
            Lookup::Port(id) => Some(id),
            Lookup::Unknown => None,
            Lookup::Expired => {
                write(&self.macs).remove_expired(&dst, now);
                self.changed();
                None
            }
        }
    }
}
