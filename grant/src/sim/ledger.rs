//! The pin ledger: what lets the host release the grant pins of a process that died, as
//! Linux's gntdev does when the last reference to `/dev/xen/gntdev` goes away.
//!
//! Mappers pin grants themselves, in shared memory ([`super::gnttab::pin`]), so the host
//! never sees the pins a process holds. At hello the host therefore gives every control
//! connection a **ledger**: a sealed memfd of [`LEDGER_SLOTS`] 8-byte slots that the host
//! maps too. The process notes each pin in a slot (granting domid, gref, read-only or
//! writable, and where it is in the pin/unpin protocol); when the connection ends the host
//! walks the slots and settles every grant still recorded ([`HostLedger::release`]).
//!
//! # Why the slots change state under the grant's entry lock
//!
//! A process killed with `kill -9` can stop anywhere, including inside the critical section
//! of a pin or unpin, holding the active entry's lock with the pin count not yet written
//! and the grant's `GTF_reading`/`GTF_writing` half updated. So the lock word of every
//! active entry names its holder by the holder's **owner id** (ledger token and slot, see
//! [`owner_id`]), taken in the same atomic operation as the lock, and a slot moves through
//! these states (all with single atomic stores or one compare-exchange):
//!
//! * pin: `Empty` → `Pinning` (before locking) → `Pinned` (under the lock, just before the
//!   count is written) → unlock; on refusal back to `Empty` after unlocking;
//! * unpin: `Pinned` → `Unpinning` (compare-exchange, before locking) → `Unpinned` (under
//!   the lock, count decremented) → unlock → `Empty`;
//! * host: `Released` once it dropped the pin itself (the owner then drops nothing).
//!
//! The count is committed only by the unlock, so whatever the instant of death, the host
//! knows whether the recorded pin is counted: if the dead owner holds the entry's lock
//! (interrupted), the operation it was in did not take effect; otherwise the state says it
//! ([`Slot::settle`] has the table). The host takes such a lock over, drops the pin if it
//! is counted, puts the grant's flags back in line with the count and unlocks. There is no
//! window in which a death leaks a pin or unpins twice; this is stronger than recording the
//! pin after it succeeded, which would leak one pin for a death in between.
//!
//! # Differences from gntdev that remain
//!
//! * The host walks a ledger once, when the connection ends. If the host ended it itself
//!   (the process's domain was destroyed, the host stops, or the client stopped reading
//!   its replies), the process may still run: the host then drops only the pins recorded
//!   as held, never breaks a lock (a running holder releases it), and pins the process
//!   takes afterwards are its own to release.
//! * A still-running process keeps its pages mapped after the host released their pins
//!   (Xen would tear the mappings down); it only matters for a destroyed domain's process.
//! * The connection is the "file": a child forked without exec shares it, and the release
//!   waits for both. A process keeps its connection open while any slot is in use.
//! * The ledger is writable by its process, which could forge records. The host checks
//!   every record against the active entry (gref in the table, pinned by the process's
//!   domain, count not zero), so a forger can drop at most pins of its own domain.
//!
//! # Limits
//!
//! A process holds at most [`MAX_MAPPED_GRANTS`] map pins at once (Xen's maptrack limit
//! plays this part on real Xen: `GNTST_no_space`); a copy batch holds two slots while it
//! runs (a segment's two ends), out of [`COPY_SLOTS`] more kept for copies, so maps can
//! never starve copies. A full ledger refuses the map with `GNTST_no_space` (the copy batch
//! with `ENOSPC`) before anything is pinned. Sizing: the netback daemon maps at most two
//! ring pages per vif plus one TX drain's pages (at most a ring's 256 slots) per vif, so
//! 64 vifs need 16 512 map pins; the limit leaves twice that. The ledger is 33 792 slots,
//! 264 KiB of sparse memfd per connection, of which only the pages touched cost memory.
//!
//! Until the host repairs an entry a dead process held locked (as soon as the connection
//! closes), other processes spin on it as on any lock, giving up after the lock timeout.
//!
//! Per pin the cost is a slot from a process-local free list (one per map, map batch or
//! copy batch) and two atomic stores; per unpin one compare-exchange and two stores.

use super::gnttab::{DomainTables, settle};
use super::memory::{map_shared, sealed_memfd};
use crate::{DomId, GrantRef, PAGE_SIZE};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use vm_memory::{MmapRegion, VolatileMemory};

/// Map pins one process may hold at once (each page of a `map_many` counts).
pub const MAX_MAPPED_GRANTS: u32 = 32768;
/// Slots kept for copies beyond [`MAX_MAPPED_GRANTS`]: two per copy batch in flight.
pub const COPY_SLOTS: u32 = 1024;
/// Slots of the ledger the host gives each connection.
pub(crate) const LEDGER_SLOTS: u32 = MAX_MAPPED_GRANTS + COPY_SLOTS;
/// Bytes of one slot.
const SLOT_SIZE: usize = 8;
/// Owner ids carry the slot in 16 bits.
const MAX_SLOTS: u32 = 1 << 16;
const _: () = assert!(LEDGER_SLOTS <= MAX_SLOTS);

/// Largest token the host hands out; tokens start at 1 so no owner id is 0 (unlocked).
pub(crate) const MAX_TOKEN: u16 = 0xFFFE;
/// The owner id of the host's own locks (token `0xFFFF`, never handed out).
pub(crate) const HOST_OWNER: NonZeroU32 = NonZeroU32::new(0xFFFF << 16).expect("not zero");

/// The id a process puts in a lock word while it holds an active entry for `slot`.
pub(crate) fn owner_id(token: u16, slot: u16) -> NonZeroU32 {
    debug_assert!((1..=MAX_TOKEN).contains(&token));
    NonZeroU32::new(u32::from(token) << 16 | u32::from(slot)).unwrap_or(HOST_OWNER)
}

/// Bytes of a ledger of `slots` slots, in whole pages.
pub(crate) fn ledger_len(slots: u32) -> usize {
    (slots as usize * SLOT_SIZE).next_multiple_of(PAGE_SIZE)
}

/// A grant as a slot records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// The granting domain.
    pub domid: DomId,
    pub gref: GrantRef,
    pub readonly: bool,
}

/// Where a slot's pin is in the protocol (module docs). An empty slot is the all-zero word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pinning = 1,
    Pinned = 2,
    Unpinning = 3,
    Unpinned = 4,
    Released = 5,
}

// Slot word: gref in bits 0..32, domid in 32..48, read-only in bit 48, state in 56..59.
const STATE_SHIFT: u32 = 56;

fn encode(state: State, rec: Record) -> u64 {
    (state as u64) << STATE_SHIFT | u64::from(rec.readonly) << 48 | u64::from(rec.domid) << 32 | u64::from(rec.gref)
}

/// The state and record of a slot word; `None` for an empty or garbled one.
fn decode(word: u64) -> Option<(State, Record)> {
    let state = match word >> STATE_SHIFT {
        1 => State::Pinning,
        2 => State::Pinned,
        3 => State::Unpinning,
        4 => State::Unpinned,
        5 => State::Released,
        _ => return None,
    };
    let rec = Record { gref: word as u32, domid: (word >> 32) as u16, readonly: (word >> 48) & 0xFF == 1 };
    (encode(state, rec) == word).then_some((state, rec))
}

/// One slot, as the pinning code sees it: its word and the owner id of its holder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot<'a> {
    word: &'a AtomicU64,
    owner: NonZeroU32,
}

impl<'a> Slot<'a> {
    /// A slot over `word` (tests build their own).
    #[cfg(test)]
    pub(crate) fn new(word: &'a AtomicU64, owner: NonZeroU32) -> Self {
        Self { word, owner }
    }

    /// What the holder puts in an active entry's lock word.
    pub(crate) fn owner(&self) -> NonZeroU32 {
        self.owner
    }

    /// Pin, before taking the entry lock: from here the host looks at `rec`'s entry.
    pub(crate) fn pinning(&self, rec: Record) {
        debug_assert_eq!(self.word.load(Ordering::Relaxed), 0, "pinning into a slot in use");
        self.word.store(encode(State::Pinning, rec), Ordering::Release);
    }

    /// Pin, under the entry lock, just before the count that includes it is written.
    pub(crate) fn pinned(&self, rec: Record) {
        self.word.store(encode(State::Pinned, rec), Ordering::Release);
    }

    /// Unpin, before taking the entry lock. `false` if the pin is not ours to drop any
    /// more (the host released it); then the caller only clears the slot.
    pub(crate) fn begin_unpin(&self, rec: Record) -> bool {
        let (pinned, unpinning) = (encode(State::Pinned, rec), encode(State::Unpinning, rec));
        self.word.compare_exchange(pinned, unpinning, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Unpin, under the entry lock: `true` if the caller must drop the pin now (the host
    /// did not, while the lock was free between [`Slot::begin_unpin`] and here).
    pub(crate) fn commit_unpin(&self, rec: Record) -> bool {
        let unpinning = encode(State::Unpinning, rec);
        if self.word.load(Ordering::Acquire) != unpinning {
            return false;
        }
        self.word.store(encode(State::Unpinned, rec), Ordering::Release);
        true
    }

    /// After unlocking (or after a refused pin): the slot is free.
    pub(crate) fn clear(&self) {
        self.word.store(0, Ordering::Release);
    }

    /// Host, under the entry lock, for a connection that ended: whether the host must drop
    /// the pin `rec` (then, or if `interrupted`, the slot becomes `Released`).
    /// `interrupted` means the lock was taken over from this slot's dead owner, so the
    /// operation it was in never reached the count:
    ///
    /// | state       | not interrupted            | interrupted               |
    /// |-------------|----------------------------|---------------------------|
    /// | `Pinning`   | not counted (before lock)  | not counted               |
    /// | `Pinned`    | counted: drop it           | not counted (pin undone)  |
    /// | `Unpinning` | counted: drop it           | counted: drop it          |
    /// | `Unpinned`  | already dropped            | counted: drop it (finish) |
    /// | `Released`  | already dropped by the host | same                     |
    pub(crate) fn settle(&self, rec: Record, interrupted: bool) -> bool {
        let Some((state, now)) = decode(self.word.load(Ordering::Acquire)) else { return false };
        if now != rec {
            // A running owner reused the slot after we read it: its new pin is its own.
            return false;
        }
        let counted = match state {
            State::Pinned => !interrupted,
            State::Unpinning => true,
            State::Unpinned => interrupted,
            State::Pinning | State::Released => false,
        };
        if counted || interrupted {
            self.word.store(encode(State::Released, rec), Ordering::Release);
        }
        counted
    }
}

/// What a reservation of slots is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Pins that live as long as a mapping; at most [`MAX_MAPPED_GRANTS`] at once.
    Map,
    /// The two pins of one copy segment at a time, for one batch.
    Copy,
}

struct Free {
    /// Slots not reserved; popped from the end.
    slots: Vec<u16>,
    /// Slots reserved for maps.
    mapped: u32,
}

/// A process's side of its connection's ledger.
pub(crate) struct Ledger {
    region: MmapRegion,
    token: u16,
    map_limit: u32,
    free: Mutex<Free>,
    /// Keeps the control connection open while any slot is reserved, so that the host
    /// walks the ledger only once no pin of a running process is left in it.
    _connection: Option<Arc<dyn Send + Sync>>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("token", &self.token).finish_non_exhaustive()
    }
}

impl Ledger {
    /// The ledger of `slots` slots in `region` (mapped read-write), for the connection the
    /// host gave `token`. `connection` stays alive as long as any slot is reserved.
    pub(crate) fn new(
        region: MmapRegion,
        slots: u32,
        token: u16,
        connection: Option<Arc<dyn Send + Sync>>,
    ) -> io::Result<Self> {
        if slots > MAX_SLOTS || region.len() < slots as usize * SLOT_SIZE || !(1..=MAX_TOKEN).contains(&token) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad pin ledger ({slots} slots)")));
        }
        let map_limit = slots.saturating_sub(COPY_SLOTS).min(MAX_MAPPED_GRANTS);
        // Reverse order so that `pop` hands out the lowest slots first.
        let free = (0..slots).rev().map(|s| u16::try_from(s).expect("below MAX_SLOTS")).collect();
        Ok(Self {
            region,
            token,
            map_limit,
            free: Mutex::new(Free { slots: free, mapped: 0 }),
            _connection: connection,
        })
    }

    fn word(&self, slot: u16) -> &AtomicU64 {
        self.region.get_atomic_ref::<AtomicU64>(usize::from(slot) * SLOT_SIZE).expect("slots lie inside the ledger")
    }

    /// `n` free slots, or `None` if the ledger (or the map limit, for [`Use::Map`]) is full.
    pub(crate) fn reserve(self: &Arc<Self>, n: usize, purpose: Use) -> Option<Slots> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let maps = if purpose == Use::Map { u32::try_from(n).ok()? } else { 0 };
        if free.slots.len() < n || free.mapped.checked_add(maps)? > self.map_limit {
            return None;
        }
        free.mapped += maps;
        let at = free.slots.len() - n;
        let mut index = free.slots.split_off(at);
        index.reverse();
        Some(Slots { ledger: self.clone(), index, purpose })
    }
}

/// Slots reserved by one map, map batch or copy batch; returned on drop.
#[derive(Debug)]
pub(crate) struct Slots {
    ledger: Arc<Ledger>,
    index: Vec<u16>,
    purpose: Use,
}

impl Slots {
    /// The `i`th reserved slot.
    pub(crate) fn get(&self, i: usize) -> Slot<'_> {
        let slot = self.index[i];
        Slot { word: self.ledger.word(slot), owner: owner_id(self.ledger.token, slot) }
    }
}

impl Drop for Slots {
    /// Frees the slots. One still recording a pin (its unpin could not take the entry lock)
    /// stays reserved, so the host drops that pin when the connection ends.
    fn drop(&mut self) {
        let mut free = self.ledger.free.lock().unwrap_or_else(PoisonError::into_inner);
        let mut returned = 0;
        // Highest first, so that the lowest are handed out first again.
        for &slot in self.index.iter().rev() {
            if self.ledger.word(slot).load(Ordering::Acquire) == 0 {
                free.slots.push(slot);
                returned += 1;
            } else {
                tracing::warn!(slot, "a pin outlived its mapping; the host releases it at disconnect");
            }
        }
        if self.purpose == Use::Map {
            free.mapped -= returned;
        }
    }
}

/// The host's side of one connection's ledger.
pub(crate) struct HostLedger {
    token: u16,
    fd: OwnedFd,
    region: MmapRegion,
}

impl fmt::Debug for HostLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostLedger").field("token", &self.token).finish_non_exhaustive()
    }
}

/// What [`HostLedger::release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// Pins dropped on behalf of the process.
    pub pins: u64,
    /// Entries whose lock the dead process held, put back in order.
    pub repaired: u64,
    /// Records left alone: their entry stayed locked by someone else, or they did not
    /// match the entry (forged).
    pub skipped: u64,
}

impl HostLedger {
    /// A fresh, empty ledger of [`LEDGER_SLOTS`] slots for the connection given `token`.
    pub(crate) fn create(token: u16) -> io::Result<Self> {
        let len = ledger_len(LEDGER_SLOTS);
        let fd = sealed_memfd(&format!("sim-ledger-{token}"), len)?;
        let file = Arc::new(File::from(fd.try_clone()?));
        let region = map_shared(&file, 0, len, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Self { token, fd, region })
    }

    pub(crate) fn token(&self) -> u16 {
        self.token
    }

    /// The memfd, to pass to the process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn records(&self) -> impl Iterator<Item = (u16, &AtomicU64, Record)> {
        (0..LEDGER_SLOTS).filter_map(|s| {
            let slot = u16::try_from(s).expect("below MAX_SLOTS");
            let word = self.region.get_atomic_ref::<AtomicU64>(s as usize * SLOT_SIZE).ok()?;
            let (_, rec) = decode(word.load(Ordering::Acquire))?;
            Some((slot, word, rec))
        })
    }

    /// The domains whose grants the ledger names.
    pub(crate) fn domids(&self) -> BTreeSet<DomId> {
        self.records().map(|(_, _, rec)| rec.domid).collect()
    }

    /// Settles every recorded grant of the connection's process, of domain `ldom`, once
    /// the connection ended. `tables` holds the live granting domains (a dead domain's
    /// grants need nothing). `gone`: the process closed the connection, so it is dead
    /// (a running process keeps it open while it holds a slot) and a lock it holds is
    /// taken over at once; otherwise such a lock is waited for like any other.
    ///
    /// First every entry locked by its own slot's owner is repaired, then the others are
    /// settled, so no entry waits for a lock that only this walk would release.
    pub(crate) fn release(&self, ldom: DomId, tables: &BTreeMap<DomId, Arc<DomainTables>>, gone: bool) -> Released {
        let mut done = Released::default();
        let mut rest = Vec::new();
        for (slot, word, rec) in self.records() {
            let Some(dom) = tables.get(&rec.domid) else { continue };
            let me = owner_id(self.token, slot);
            if gone && dom.holder(rec.gref) == Some(me) {
                self.settle_one(dom, ldom, rec, Slot { word, owner: me }, gone, &mut done);
            } else {
                rest.push((dom, rec, Slot { word, owner: me }));
            }
        }
        for (dom, rec, slot) in rest {
            self.settle_one(dom, ldom, rec, slot, gone, &mut done);
        }
        done
    }

    fn settle_one(
        &self,
        dom: &DomainTables,
        ldom: DomId,
        rec: Record,
        slot: Slot<'_>,
        gone: bool,
        done: &mut Released,
    ) {
        match settle(dom, ldom, rec, slot, gone) {
            Some(s) => {
                done.pins += u64::from(s.released);
                done.repaired += u64::from(s.repaired);
                done.skipped += u64::from(s.refused);
            }
            None => done.skipped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(domid: DomId, gref: GrantRef, readonly: bool) -> Record {
        Record { domid, gref, readonly }
    }

    #[test]
    fn slot_words_roundtrip_and_reject_garbage() {
        for r in [rec(0, 0, false), rec(0x7FEF, u32::MAX, true), rec(3, 8, false)] {
            for state in [State::Pinning, State::Pinned, State::Unpinning, State::Unpinned, State::Released] {
                assert_eq!(decode(encode(state, r)), Some((state, r)));
            }
        }
        assert_eq!(decode(0), None);
        assert_eq!(decode(6 << STATE_SHIFT), None, "unknown state");
        assert_eq!(decode(encode(State::Pinned, rec(1, 2, false)) | 1 << 50), None, "stray bits");
        assert_eq!(decode(encode(State::Pinned, rec(1, 2, false)) | 1 << 49), None, "read-only is one bit");
    }

    #[test]
    fn owner_ids_never_collide_with_unlocked_or_the_host() {
        assert_eq!(owner_id(1, 0).get(), 1 << 16);
        assert_eq!(owner_id(MAX_TOKEN, u16::MAX).get(), 0xFFFE_FFFF);
        assert!(owner_id(MAX_TOKEN, u16::MAX) < HOST_OWNER);
    }

    fn ledger(slots: u32) -> Arc<Ledger> {
        Arc::new(Ledger::new(MmapRegion::new(ledger_len(slots)).unwrap(), slots, 7, None).unwrap())
    }

    #[test]
    fn reservations_respect_the_map_limit_and_come_back() {
        let l = ledger(LEDGER_SLOTS);
        let maps = l.reserve(MAX_MAPPED_GRANTS as usize, Use::Map).unwrap();
        assert!(l.reserve(1, Use::Map).is_none(), "map limit");
        let copies: Vec<Slots> = (0..COPY_SLOTS / 2).map(|_| l.reserve(2, Use::Copy).unwrap()).collect();
        assert!(l.reserve(1, Use::Copy).is_none(), "ledger full");
        drop(copies);
        assert!(l.reserve(1, Use::Map).is_none(), "copy slots do not raise the map limit");
        drop(maps);
        let again = l.reserve(MAX_MAPPED_GRANTS as usize, Use::Map).unwrap();
        assert_eq!(again.get(0).owner(), owner_id(7, 0), "lowest slots first");
    }

    #[test]
    fn a_slot_still_recording_a_pin_is_not_reused() {
        let l = ledger(4);
        let s = l.reserve(4, Use::Copy).unwrap();
        s.get(1).pinning(rec(1, 9, true));
        s.get(1).pinned(rec(1, 9, true));
        drop(s);
        assert!(l.reserve(4, Use::Copy).is_none());
        let three = l.reserve(3, Use::Copy).unwrap();
        assert!((0..3).all(|i| three.get(i).owner() != owner_id(7, 1)));
    }

    #[test]
    fn unpin_after_the_host_released_drops_nothing() {
        let word = AtomicU64::new(0);
        let slot = Slot::new(&word, owner_id(1, 0));
        let r = rec(2, 10, false);
        slot.pinning(r);
        slot.pinned(r);
        assert!(slot.settle(r, false), "the host drops a counted pin");
        assert!(!slot.begin_unpin(r), "and the owner then does not");
        assert!(!slot.settle(r, false), "nor the host twice");
    }

    #[test]
    fn settle_follows_the_table() {
        let r = rec(2, 10, true);
        let cases = [
            (State::Pinning, false, false),
            (State::Pinning, true, false),
            (State::Pinned, false, true),
            (State::Pinned, true, false),
            (State::Unpinning, false, true),
            (State::Unpinning, true, true),
            (State::Unpinned, false, false),
            (State::Unpinned, true, true),
            (State::Released, false, false),
            (State::Released, true, false),
        ];
        for (state, interrupted, counted) in cases {
            let word = AtomicU64::new(encode(state, r));
            let slot = Slot::new(&word, owner_id(1, 0));
            assert_eq!(slot.settle(r, interrupted), counted, "{state:?} interrupted={interrupted}");
            let marked = counted || interrupted;
            let expect = if marked { encode(State::Released, r) } else { encode(state, r) };
            assert_eq!(word.load(Ordering::Relaxed), expect, "{state:?} interrupted={interrupted}");
            assert!(!slot.settle(rec(2, 11, true), true), "another record is not ours");
        }
    }
}
