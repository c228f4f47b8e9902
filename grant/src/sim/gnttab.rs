//! The v1 grant table shared between a guest and every mapper, and the checks Xen's
//! `grant_table.c` applies when a grant is pinned for a map or a copy.
//!
//! Two shared tables per domain:
//! * the **grant table** (written by the guest, flags `GTF_reading`/`GTF_writing` by
//!   mappers), exactly Xen's `grant_entry_v1` array;
//! * the **active table** (Xen's `active_grant_entry`): per gref a lock word (pin counts
//!   and the lock's holder), the pinned frame and the pinning domain, shared by every
//!   process that maps the domain, so that nested and concurrent pins from several
//!   processes of one domain count correctly.
//!
//! Every pin is recorded in the pinning process's ledger ([`super::ledger`]), so that the
//! host can drop the pins of a process that died, and repair an entry whose lock it held.
//!
//! All accesses to the first word of an entry (`flags` + `domid`) are 32-bit atomics (Xen's
//! `union grant_combo`); the guest revokes with a 32-bit compare-exchange too.

use super::ledger::{HOST_OWNER, Record, Slot};
use crate::{DomId, GrantRef, GrantStatus, PAGE_SIZE};
use std::mem::{offset_of, size_of};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vm_memory::{MmapRegion, VolatileMemory};

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: `domid` may map and copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer` (not supported by the sim).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive` (v2 only; never valid in a v1 table).
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: the grantee may only read. Written by the guest.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: the grant is pinned (mapped or being copied). Written by the hypervisor.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: the grant is pinned writable. Written by the hypervisor.
pub const GTF_WRITING: u16 = 1 << 4;
/// `GTF_PWT` (x86 cache attribute; ignored).
pub const GTF_PWT: u16 = 1 << 5;
/// `GTF_PCD` (x86 cache attribute; ignored).
pub const GTF_PCD: u16 = 1 << 6;
/// `GTF_sub_page`: a v2 sub-page grant; a v1 entry with it set cannot be mapped.
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `GNTTAB_NR_RESERVED_ENTRIES`: grefs below this are the toolstack's; never allocated.
pub const GNTTAB_NR_RESERVED_ENTRIES: GrantRef = 8;

/// Xen's `struct grant_entry_v1`, as laid out in the shared table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and flags.
    pub flags: u16,
    /// The domain being granted access.
    pub domid: DomId,
    /// The granted frame of the granting domain's memory.
    pub frame: u32,
}

const _: () = assert!(size_of::<GrantEntryV1>() == 8);
const _: () = assert!(offset_of!(GrantEntryV1, flags) == 0);
const _: () = assert!(offset_of!(GrantEntryV1, domid) == 2);
const _: () = assert!(offset_of!(GrantEntryV1, frame) == 4);

/// Entries per grant-table frame.
pub(crate) const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / size_of::<GrantEntryV1>()) as u32;

/// `flags` and `domid` as one native-endian word, like Xen's `union grant_combo`.
pub(crate) fn combo(flags: u16, domid: DomId) -> u32 {
    let (f, d) = (flags.to_ne_bytes(), domid.to_ne_bytes());
    u32::from_ne_bytes([f[0], f[1], d[0], d[1]])
}

/// Splits a combo word into `(flags, domid)`.
pub(crate) fn split(raw: u32) -> (u16, DomId) {
    let b = raw.to_ne_bytes();
    (u16::from_ne_bytes([b[0], b[1]]), u16::from_ne_bytes([b[2], b[3]]))
}

/// The mask that clears `flags` bits of a combo word.
fn clear_mask(flags: u16) -> u32 {
    !combo(flags, 0)
}

/// A mapped v1 grant table.
pub(crate) struct GrantTable {
    region: MmapRegion,
    entries: u32,
}

impl GrantTable {
    pub(crate) fn new(region: MmapRegion, entries: u32) -> Self {
        debug_assert!(region.len() >= entries as usize * size_of::<GrantEntryV1>());
        Self { region, entries }
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    fn word(&self, gref: GrantRef, offset: usize) -> &AtomicU32 {
        assert!(gref < self.entries, "gref {gref} checked against the table size by every caller");
        self.region
            .get_atomic_ref::<AtomicU32>(gref as usize * size_of::<GrantEntryV1>() + offset)
            .expect("entries lie inside the mapped table and are 4-byte aligned")
    }

    /// `flags` + `domid` of `gref`.
    pub(crate) fn combo(&self, gref: GrantRef) -> &AtomicU32 {
        self.word(gref, offset_of!(GrantEntryV1, flags))
    }

    /// `frame` of `gref`.
    pub(crate) fn frame(&self, gref: GrantRef) -> &AtomicU32 {
        self.word(gref, offset_of!(GrantEntryV1, frame))
    }

    /// A snapshot of `gref`, or `None` beyond the table.
    pub(crate) fn read(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        (gref < self.entries).then(|| {
            let (flags, domid) = split(self.combo(gref).load(Ordering::Acquire));
            GrantEntryV1 { flags, domid, frame: self.frame(gref).load(Ordering::Acquire) }
        })
    }

    /// Guest side: introduces an entry (grant_table.h: frame first, then `flags` and
    /// `domid` with release ordering, so a mapper that sees the flags sees the frame).
    pub(crate) fn publish(&self, gref: GrantRef, entry: GrantEntryV1) {
        self.frame(gref).store(entry.frame, Ordering::Release);
        self.combo(gref).store(combo(entry.flags, entry.domid), Ordering::Release);
    }

    /// Guest side: ends foreign access to an unused entry. Fails (`false`) while the entry
    /// is pinned (`GTF_reading`/`GTF_writing`); then the caller must retry later.
    pub(crate) fn try_revoke(&self, gref: GrantRef) -> bool {
        let word = self.combo(gref);
        let mut cur = word.load(Ordering::Acquire);
        loop {
            let (flags, domid) = split(cur);
            if flags & (GTF_READING | GTF_WRITING) != 0 {
                return false;
            }
            match word.compare_exchange(cur, combo(0, domid), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Size of one active entry: the lock word (8 bytes), frame, pinning domid.
pub(crate) const ACTIVE_ENTRY_SIZE: usize = 16;

// Lock word (64 bits at offset 0): pins in the low half (read pins in bits 0..14, write pins
// in bits 14..28); in the high half the owner id of the process holding the entry's lock
// (0: unlocked), which guards the whole active entry and the flag updates of its grant
// (Xen's act->lock). Taking the lock writes the holder in the same compare-exchange, so the
// host can always tell a lock left behind by a dead process (see `super::ledger`). The pin
// count is written only by the unlock.
const READ_PIN: u32 = 1;
const WRITE_PIN: u32 = 1 << 14;
const PIN_MASK: u32 = 0x3FFF;
/// Index (in 32-bit words) of the pinned frame and of the pinning domain in an entry.
const FRAME_WORD: usize = 2;
const DOMID_WORD: usize = 3;
/// More pins than this of one kind fail, as Xen refuses to risk counter overflow.
const PIN_LIMIT: u32 = 0x2000;
/// A lock held longer than this belongs to a process that died inside the critical
/// section (until the host repairs the entry, which it does as soon as the process's
/// connection ends); the grant is then refused (general error) rather than the caller hung.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

fn readers(pin: u32) -> u32 {
    pin & PIN_MASK
}

fn writers(pin: u32) -> u32 {
    (pin >> 14) & PIN_MASK
}

/// The pins of one grant, as the active table holds them (sim inspection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GrantPins {
    /// Read-only pins (maps and copy sources).
    pub readers: u32,
    /// Writable pins (maps and copy destinations).
    pub writers: u32,
    /// Whether some process holds the entry's lock right now.
    pub locked: bool,
}

/// A mapped active table: the hypervisor's private state, shared by every mapper.
pub(crate) struct ActiveTable {
    region: MmapRegion,
}

impl ActiveTable {
    pub(crate) fn new(region: MmapRegion, entries: u32) -> Self {
        debug_assert!(region.len() >= entries as usize * ACTIVE_ENTRY_SIZE);
        Self { region }
    }

    fn lock_word(&self, gref: GrantRef) -> &AtomicU64 {
        self.region
            .get_atomic_ref::<AtomicU64>(gref as usize * ACTIVE_ENTRY_SIZE)
            .expect("active entries lie inside the mapped table and are aligned")
    }

    fn word(&self, gref: GrantRef, index: usize) -> &AtomicU32 {
        self.region
            .get_atomic_ref::<AtomicU32>(gref as usize * ACTIVE_ENTRY_SIZE + index * 4)
            .expect("active entries lie inside the mapped table and are aligned")
    }

    /// A snapshot of the pins of `gref` (checked against the table size by the caller).
    pub(crate) fn pins(&self, gref: GrantRef) -> GrantPins {
        let word = self.lock_word(gref).load(Ordering::Acquire);
        let pins = word as u32;
        GrantPins { readers: readers(pins), writers: writers(pins), locked: word >> 32 != 0 }
    }

    /// Spins until `owner` holds the entry of `gref`; returns the pin count, and the holder
    /// the lock was taken over from if `orphaned(holder)` said that holder is dead.
    /// `None` after [`LOCK_TIMEOUT`] of waiting.
    fn acquire(&self, gref: GrantRef, owner: NonZeroU32, orphaned: impl Fn(u32) -> bool) -> Option<(u32, Option<u32>)> {
        let word = self.lock_word(gref);
        let mut start = None;
        for spins in 0u32.. {
            let cur = word.load(Ordering::Relaxed);
            let holder = (cur >> 32) as u32;
            if holder == 0 || orphaned(holder) {
                let locked = u64::from(owner.get()) << 32 | (cur & u64::from(u32::MAX));
                if word.compare_exchange_weak(cur, locked, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Some((cur as u32, (holder != 0).then_some(holder)));
                }
                continue;
            }
            if spins < 64 {
                std::hint::spin_loop();
            } else if start.get_or_insert_with(Instant::now).elapsed() > LOCK_TIMEOUT {
                tracing::warn!(gref, holder, "active grant entry stayed locked; a mapper died holding it");
                return None;
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    fn lock(&self, gref: GrantRef, owner: NonZeroU32) -> Option<u32> {
        self.acquire(gref, owner, |_| false).map(|(pins, _)| pins)
    }

    /// Releases the lock, committing `pins`.
    fn unlock(&self, gref: GrantRef, pins: u32) {
        self.lock_word(gref).store(u64::from(pins), Ordering::Release);
    }
}

/// A domain's grant table and active table, as the host maps them to settle the pins of
/// processes whose connection ended.
pub(crate) struct DomainTables {
    pub(crate) table: GrantTable,
    pub(crate) active: ActiveTable,
}

impl DomainTables {
    /// The owner id holding `gref`'s entry lock, if any (`None` too beyond the table).
    pub(crate) fn holder(&self, gref: GrantRef) -> Option<NonZeroU32> {
        if gref >= self.table.entries() {
            return None;
        }
        NonZeroU32::new((self.active.lock_word(gref).load(Ordering::Acquire) >> 32) as u32)
    }
}

impl std::fmt::Debug for DomainTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainTables").field("entries", &self.table.entries()).finish_non_exhaustive()
    }
}

/// Xen's `_set_status_v1`: validates the entry (when `check`, i.e. not yet pinned) and sets
/// `GTF_reading` (and `GTF_writing` unless `readonly`) with a bounded compare-exchange loop.
fn set_status(table: &GrantTable, gref: GrantRef, ldom: DomId, readonly: bool, map: bool, check: bool) -> GrantStatus {
    let mask = if map { GTF_TYPE_MASK | GTF_SUB_PAGE } else { GTF_TYPE_MASK };
    let word = table.combo(gref);
    let mut cur = word.load(Ordering::Acquire);
    // The guest may legitimately race us (e.g. setting GTF_readonly): allow a few retries,
    // then give up, as Xen does to avoid a livelock.
    for _ in 0..5 {
        let (flags, domid) = split(cur);
        if check && (flags & mask != GTF_PERMIT_ACCESS || domid != ldom) {
            return GrantStatus::GeneralError;
        }
        let mut new = flags | GTF_READING;
        if !readonly {
            if flags & GTF_READONLY != 0 {
                return GrantStatus::GeneralError;
            }
            new |= GTF_WRITING;
        }
        match word.compare_exchange(cur, combo(new, domid), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return GrantStatus::Okay,
            Err(actual) => cur = actual,
        }
    }
    GrantStatus::GeneralError
}

/// Pins `rec.gref` of the domain owning `table`/`active` for `ldom` (Xen's
/// `acquire_grant_for_copy` and the pinning half of `map_grant_ref`), returning the frame,
/// and records the pin in `slot` (see [`super::ledger`] for the order of the steps).
///
/// Order of checks and codes as in Xen: gref beyond the table → `bad_gntref`; pinned by
/// another domain or counter overflow → `general_error`; entry not `GTF_permit_access`
/// for `ldom`, or a write pin of a `GTF_readonly` grant → `general_error`; frame beyond
/// the domain's memory → `bad_page`. On success the caller must [`unpin`] exactly once
/// with the same `rec` and `slot`; on failure `slot` is left empty.
pub(crate) fn pin(
    table: &GrantTable,
    active: &ActiveTable,
    mem_pages: u32,
    rec: Record,
    ldom: DomId,
    map: bool,
    slot: Slot<'_>,
) -> Result<u32, GrantStatus> {
    let (gref, readonly) = (rec.gref, rec.readonly);
    if gref >= table.entries() {
        return Err(GrantStatus::BadGntref);
    }
    slot.pinning(rec);
    let Some(old) = active.lock(gref, slot.owner()) else {
        slot.clear();
        return Err(GrantStatus::GeneralError);
    };
    let (frame_word, domid_word) = (active.word(gref, FRAME_WORD), active.word(gref, DOMID_WORD));
    let result = (|| {
        if old != 0
            && (domid_word.load(Ordering::Relaxed) != u32::from(ldom)
                || readers(old) >= PIN_LIMIT
                || writers(old) >= PIN_LIMIT)
        {
            return Err(GrantStatus::GeneralError);
        }
        if old == 0 || (!readonly && writers(old) == 0) {
            let rc = set_status(table, gref, ldom, readonly, map, old == 0);
            if rc != GrantStatus::Okay {
                return Err(rc);
            }
            if old == 0 {
                // The frame is read once, after the flags; later pins use this copy, so a
                // guest rewriting the entry while pinned changes nothing (Xen's act->mfn).
                let frame = table.frame(gref).load(Ordering::Acquire);
                if frame >= mem_pages {
                    clear_flags(table, gref, GTF_READING | if readonly { 0 } else { GTF_WRITING });
                    return Err(GrantStatus::BadPage);
                }
                frame_word.store(frame, Ordering::Relaxed);
                domid_word.store(u32::from(ldom), Ordering::Relaxed);
            }
        }
        Ok(frame_word.load(Ordering::Relaxed))
    })();
    let new = if result.is_ok() {
        slot.pinned(rec);
        old + if readonly { READ_PIN } else { WRITE_PIN }
    } else {
        old
    };
    active.unlock(gref, new);
    if result.is_err() {
        slot.clear();
    }
    result
}

/// Drops the pin [`pin`] recorded in `slot` (unless the host already did); clears
/// `GTF_writing` with the last write pin and `GTF_reading` with the last pin (Xen's
/// `release_grant_for_copy`). If the entry stays locked by a dead process, the pin stays
/// recorded and the host drops it when our connection ends.
pub(crate) fn unpin(table: &GrantTable, active: &ActiveTable, rec: Record, slot: Slot<'_>) {
    if !slot.begin_unpin(rec) {
        slot.clear();
        return;
    }
    let Some(old) = active.lock(rec.gref, slot.owner()) else { return };
    let new = if slot.commit_unpin(rec) {
        let new = without_one(old, rec.readonly);
        debug_assert!(new.is_some(), "unpin without a matching pin");
        new.unwrap_or(old)
    } else {
        old
    };
    settle_flags(table, rec.gref, new);
    active.unlock(rec.gref, new);
    slot.clear();
}

/// The pin count with one pin of the kind removed; `None` if there is none.
fn without_one(pins: u32, readonly: bool) -> Option<u32> {
    if readonly { (readers(pins) > 0).then(|| pins - READ_PIN) } else { (writers(pins) > 0).then(|| pins - WRITE_PIN) }
}

/// Puts the grant's flags in line with `pins`: no `GTF_writing` without a write pin, no
/// `GTF_reading` without any pin. Only ever clears: a pin sets the flags it needs.
fn settle_flags(table: &GrantTable, gref: GrantRef, pins: u32) {
    let mut clear = 0;
    if writers(pins) == 0 {
        clear |= GTF_WRITING;
    }
    if pins == 0 {
        clear |= GTF_READING;
    }
    clear_flags(table, gref, clear);
}

/// What [`settle`] did with one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// A pin was dropped.
    pub released: bool,
    /// The entry was locked by the dead owner and put back in order.
    pub repaired: bool,
    /// The record asked for a pin the entry does not have (forged, or not ours).
    pub refused: bool,
}

/// Host side: settles the grant `rec` recorded in `slot` of a process of `ldom` whose
/// connection ended: drops the pin if it is still counted and, if the process died holding
/// the entry's lock (`gone` only: a running process will release it), finishes or undoes
/// the operation it was in. The record is checked, never trusted: a gref beyond the table,
/// or a pin the entry does not have for `ldom`, is refused. `None` if the entry stayed
/// locked by another process for [`LOCK_TIMEOUT`].
pub(crate) fn settle(dom: &DomainTables, ldom: DomId, rec: Record, slot: Slot<'_>, gone: bool) -> Option<Settled> {
    let (table, active, gref) = (&dom.table, &dom.active, rec.gref);
    if gref >= table.entries() {
        return Some(Settled { refused: true, ..Settled::default() });
    }
    let me = slot.owner().get();
    let (old, taken) = active.acquire(gref, HOST_OWNER, |holder| gone && holder == me)?;
    let repaired = taken == Some(me);
    let mut settled = Settled { repaired, ..Settled::default() };
    let mut new = old;
    if slot.settle(rec, repaired) {
        let ours = old != 0 && active.word(gref, DOMID_WORD).load(Ordering::Relaxed) == u32::from(ldom);
        match without_one(old, rec.readonly).filter(|_| ours) {
            Some(fewer) => (new, settled.released) = (fewer, true),
            None => settled.refused = true,
        }
    }
    if settled.released || repaired {
        settle_flags(table, gref, new);
    }
    active.unlock(gref, new);
    Some(settled)
}

/// Xen's `gnttab_clear_flags`: atomically clears `flags` in the shared entry.
fn clear_flags(table: &GrantTable, gref: GrantRef, flags: u16) {
    if flags != 0 {
        table.combo(gref).fetch_and(clear_mask(flags), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::owner_id;
    use super::*;

    /// One domain's tables and a ledger's worth of slots, slot `i` used by pin number `i`.
    struct Fix {
        dom: DomainTables,
        words: Vec<AtomicU64>,
    }

    fn rec(gref: GrantRef, readonly: bool) -> Record {
        Record { domid: 5, gref, readonly }
    }

    impl Fix {
        fn new(entries: u32) -> Self {
            let t = MmapRegion::new(entries as usize * 8).unwrap();
            let a = MmapRegion::new(entries as usize * ACTIVE_ENTRY_SIZE).unwrap();
            let dom = DomainTables { table: GrantTable::new(t, entries), active: ActiveTable::new(a, entries) };
            Self { dom, words: (0..16).map(|_| AtomicU64::new(0)).collect() }
        }
        fn slot(&self, i: usize) -> Slot<'_> {
            Slot::new(&self.words[i], owner_id(1, i as u16))
        }
        fn pin(&self, i: usize, gref: GrantRef, ldom: DomId, readonly: bool, map: bool) -> Result<u32, GrantStatus> {
            pin(&self.dom.table, &self.dom.active, 4, rec(gref, readonly), ldom, map, self.slot(i))
        }
        fn unpin(&self, i: usize, gref: GrantRef, readonly: bool) {
            unpin(&self.dom.table, &self.dom.active, rec(gref, readonly), self.slot(i));
        }
        fn flags(&self, gref: GrantRef) -> u16 {
            self.dom.table.read(gref).unwrap().flags
        }
        fn pins(&self, gref: GrantRef) -> GrantPins {
            self.dom.active.pins(gref)
        }
    }

    fn pins(readers: u32, writers: u32) -> GrantPins {
        GrantPins { readers, writers, locked: false }
    }

    #[test]
    fn combo_roundtrip() {
        assert_eq!(split(combo(0x1234, 0xBEEF)), (0x1234, 0xBEEF));
        assert_eq!(split(clear_mask(GTF_READING)).0, !GTF_READING);
    }

    #[test]
    fn pin_checks_and_flags() {
        let f = Fix::new(16);
        let t = &f.dom.table;
        assert_eq!(f.pin(0, 16, 0, true, true), Err(GrantStatus::BadGntref));
        assert_eq!(f.pin(0, 9, 0, true, true), Err(GrantStatus::GeneralError));
        t.publish(9, GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: 0, frame: 2 });
        assert_eq!(f.pin(0, 9, 1, true, true), Err(GrantStatus::GeneralError));
        assert_eq!(f.pin(0, 9, 0, false, true), Err(GrantStatus::GeneralError));
        assert_eq!(f.words[0].load(Ordering::Relaxed), 0, "a refused pin leaves its slot empty");
        assert_eq!(f.flags(9), GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(f.pin(0, 9, 0, true, true), Ok(2));
        assert_eq!(f.pin(1, 9, 0, true, false), Ok(2));
        assert_eq!(f.pins(9), pins(2, 0));
        assert!(!t.try_revoke(9));
        f.unpin(0, 9, true);
        assert_eq!(f.flags(9) & GTF_READING, GTF_READING);
        f.unpin(1, 9, true);
        assert_eq!(f.words[1].load(Ordering::Relaxed), 0, "an unpin empties its slot");
        assert_eq!(f.flags(9), GTF_PERMIT_ACCESS | GTF_READONLY);
        assert!(t.try_revoke(9));
        assert_eq!(f.flags(9), GTF_INVALID);

        t.publish(10, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 0, frame: 4 });
        assert_eq!(f.pin(0, 10, 0, false, true), Err(GrantStatus::BadPage));
        assert_eq!(f.flags(10), GTF_PERMIT_ACCESS);
        t.publish(11, GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE, domid: 0, frame: 1 });
        assert_eq!(f.pin(0, 11, 0, true, true), Err(GrantStatus::GeneralError));
        assert_eq!(f.pin(0, 11, 0, true, false), Ok(1));
    }

    #[test]
    fn write_pin_upgrade_and_other_domain() {
        let f = Fix::new(16);
        f.dom.table.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        assert_eq!(f.pin(0, 8, 3, true, true), Ok(0));
        assert_eq!(f.pin(1, 8, 3, false, true), Ok(0));
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
        // Already pinned by domain 3: another domain is refused even if the entry changed.
        assert_eq!(f.pin(2, 8, 4, true, true), Err(GrantStatus::GeneralError));
        f.unpin(1, 8, false);
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS | GTF_READING);
        f.unpin(0, 8, true);
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS);
    }

    #[test]
    fn host_drops_a_dead_owners_pin_once() {
        let f = Fix::new(16);
        f.dom.table.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        assert_eq!(f.pin(0, 8, 3, false, true), Ok(0));
        assert_eq!(f.pin(1, 8, 3, true, true), Ok(0));
        let done = settle(&f.dom, 3, rec(8, false), f.slot(0), true).unwrap();
        assert_eq!(done, Settled { released: true, ..Settled::default() });
        assert_eq!(f.pins(8), pins(1, 0));
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS | GTF_READING, "the read pin of slot 1 stays");
        // The owner was in fact still running: its own unpin now drops nothing.
        f.unpin(0, 8, false);
        assert_eq!(f.pins(8), pins(1, 0));
        assert_eq!(settle(&f.dom, 3, rec(8, false), f.slot(0), true).unwrap(), Settled::default());
        f.unpin(1, 8, true);
        assert_eq!((f.pins(8), f.flags(8)), (pins(0, 0), GTF_PERMIT_ACCESS));
    }

    #[test]
    fn host_refuses_records_the_entry_does_not_back() {
        let f = Fix::new(16);
        f.dom.table.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        let forge = |i: usize, gref| {
            f.words[i].store(0, Ordering::Relaxed);
            f.slot(i).pinning(rec(gref, true));
            f.slot(i).pinned(rec(gref, true));
        };
        forge(2, 8);
        let refused = Settled { refused: true, ..Settled::default() };
        assert_eq!(settle(&f.dom, 3, rec(8, true), f.slot(2), true), Some(refused), "no pin at all");
        assert_eq!(f.pin(0, 8, 3, true, true), Ok(0));
        forge(2, 8);
        assert_eq!(settle(&f.dom, 4, rec(8, true), f.slot(2), true), Some(refused), "pinned by another domain");
        forge(2, 99);
        assert_eq!(settle(&f.dom, 3, rec(99, true), f.slot(2), true), Some(refused), "beyond the table");
        assert_eq!((f.pins(8), f.flags(8)), (pins(1, 0), GTF_PERMIT_ACCESS | GTF_READING));
    }

    #[test]
    fn host_undoes_a_pin_its_owner_died_in() {
        let f = Fix::new(16);
        f.dom.table.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        assert_eq!(f.pin(0, 8, 3, true, true), Ok(0));
        // Slot 1's owner dies inside a write pin: flags upgraded, slot marked, not unlocked.
        let (r, s) = (rec(8, false), f.slot(1));
        s.pinning(r);
        f.dom.active.lock(8, s.owner()).unwrap();
        assert_eq!(set_status(&f.dom.table, 8, 3, false, true, false), GrantStatus::Okay);
        s.pinned(r);
        assert_eq!(f.dom.holder(8), Some(s.owner()));
        assert!(f.pins(8).locked);
        let done = settle(&f.dom, 3, r, s, true).unwrap();
        assert_eq!(done, Settled { repaired: true, ..Settled::default() });
        assert_eq!(f.pins(8), pins(1, 0), "unlocked, the uncommitted pin not counted");
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS | GTF_READING, "no GTF_writing without a write pin");
        f.unpin(0, 8, true);
        assert!(f.dom.table.try_revoke(8));
    }

    #[test]
    fn host_finishes_an_unpin_its_owner_died_in() {
        let f = Fix::new(16);
        f.dom.table.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        assert_eq!(f.pin(0, 8, 3, false, true), Ok(0));
        // The owner dies inside the unpin, after clearing the flags, before the count.
        let (r, s) = (rec(8, false), f.slot(0));
        assert!(s.begin_unpin(r));
        let old = f.dom.active.lock(8, s.owner()).unwrap();
        assert!(s.commit_unpin(r));
        settle_flags(&f.dom.table, 8, without_one(old, false).unwrap());
        assert_eq!(f.flags(8), GTF_PERMIT_ACCESS);
        let done = settle(&f.dom, 3, r, s, true).unwrap();
        assert_eq!(done, Settled { released: true, repaired: true, refused: false });
        assert_eq!((f.pins(8), f.flags(8)), (pins(0, 0), GTF_PERMIT_ACCESS));
        assert!(f.dom.table.try_revoke(8));
    }
}
