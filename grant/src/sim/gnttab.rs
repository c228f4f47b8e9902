//! The v1 grant table shared between a guest and every mapper, and the checks Xen's
//! `grant_table.c` applies when a grant is pinned for a map or a copy.
//!
//! Two shared tables per domain:
//! * the **grant table** (written by the guest, flags `GTF_reading`/`GTF_writing` by
//!   mappers), exactly Xen's `grant_entry_v1` array;
//! * the **active table** (Xen's `active_grant_entry`): per gref a pin word, the pinned
//!   frame and the pinning domain, shared by every process that maps the domain, so that
//!   nested and concurrent pins from several processes of one domain count correctly.
//!
//! All accesses to the first word of an entry (`flags` + `domid`) are 32-bit atomics (Xen's
//! `union grant_combo`); the guest revokes with a 32-bit compare-exchange too.

use crate::{DomId, GrantRef, GrantStatus, PAGE_SIZE};
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// Size of one active entry: pin word, frame, pinning domid, padding.
pub(crate) const ACTIVE_ENTRY_SIZE: usize = 16;

// Pin word layout: read pins in bits 0..14, write pins in bits 14..28, bit 31 a lock that
// guards the whole active entry and the flag updates of its grant (Xen's act->lock).
const READ_PIN: u32 = 1;
const WRITE_PIN: u32 = 1 << 14;
const PIN_MASK: u32 = 0x3FFF;
const LOCK: u32 = 1 << 31;
/// More pins than this of one kind fail, as Xen refuses to risk counter overflow.
const PIN_LIMIT: u32 = 0x2000;
/// A lock held longer than this belongs to a process that died inside the critical
/// section; the grant is then unusable (general error) rather than the caller hung.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

fn readers(pin: u32) -> u32 {
    pin & PIN_MASK
}

fn writers(pin: u32) -> u32 {
    (pin >> 14) & PIN_MASK
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

    fn word(&self, gref: GrantRef, index: usize) -> &AtomicU32 {
        self.region
            .get_atomic_ref::<AtomicU32>(gref as usize * ACTIVE_ENTRY_SIZE + index * 4)
            .expect("active entries lie inside the mapped table and are aligned")
    }

    /// Spins until this process owns the entry of `gref`; returns the pin count.
    fn lock(&self, gref: GrantRef) -> Option<u32> {
        let pin = self.word(gref, 0);
        let mut start = None;
        for spins in 0u32.. {
            let cur = pin.load(Ordering::Relaxed);
            if cur & LOCK == 0
                && pin.compare_exchange_weak(cur, cur | LOCK, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return Some(cur);
            }
            if spins < 64 {
                std::hint::spin_loop();
            } else if start.get_or_insert_with(Instant::now).elapsed() > LOCK_TIMEOUT {
                tracing::warn!(gref, "active grant entry stayed locked; a mapper died holding it");
                return None;
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    fn unlock(&self, gref: GrantRef, pins: u32) {
        debug_assert_eq!(pins & LOCK, 0);
        self.word(gref, 0).store(pins, Ordering::Release);
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

/// Pins `gref` of the domain owning `table`/`active` for `ldom` (Xen's
/// `acquire_grant_for_copy` and the pinning half of `map_grant_ref`), returning the frame.
///
/// Order of checks and codes as in Xen: gref beyond the table → `bad_gntref`; pinned by
/// another domain or counter overflow → `general_error`; entry not `GTF_permit_access`
/// for `ldom`, or a write pin of a `GTF_readonly` grant → `general_error`; frame beyond
/// the domain's memory → `bad_page`. On success the caller must [`unpin`] exactly once.
pub(crate) fn pin(
    table: &GrantTable,
    active: &ActiveTable,
    mem_pages: u32,
    gref: GrantRef,
    ldom: DomId,
    readonly: bool,
    map: bool,
) -> Result<u32, GrantStatus> {
    if gref >= table.entries() {
        return Err(GrantStatus::BadGntref);
    }
    let old = active.lock(gref).ok_or(GrantStatus::GeneralError)?;
    let (frame_word, domid_word) = (active.word(gref, 1), active.word(gref, 2));
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
    let new = if result.is_ok() { old + if readonly { READ_PIN } else { WRITE_PIN } } else { old };
    active.unlock(gref, new);
    result
}

/// Drops one pin taken by [`pin`] with the same `readonly`; clears `GTF_writing` with the
/// last write pin and `GTF_reading` with the last pin (Xen's `release_grant_for_copy`).
pub(crate) fn unpin(table: &GrantTable, active: &ActiveTable, gref: GrantRef, readonly: bool) {
    let Some(old) = active.lock(gref) else { return };
    let dec = if readonly { READ_PIN } else { WRITE_PIN };
    let new = if (if readonly { readers(old) } else { writers(old) }) == 0 {
        debug_assert!(false, "unpin without a matching pin");
        old
    } else {
        old - dec
    };
    let mut clear = 0;
    if !readonly && writers(new) == 0 {
        clear |= GTF_WRITING;
    }
    if new == 0 {
        clear |= GTF_READING;
    }
    clear_flags(table, gref, clear);
    active.unlock(gref, new);
}

/// Xen's `gnttab_clear_flags`: atomically clears `flags` in the shared entry.
fn clear_flags(table: &GrantTable, gref: GrantRef, flags: u16) {
    if flags != 0 {
        table.combo(gref).fetch_and(clear_mask(flags), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(entries: u32) -> (GrantTable, ActiveTable) {
        let t = MmapRegion::new(entries as usize * 8).unwrap();
        let a = MmapRegion::new(entries as usize * ACTIVE_ENTRY_SIZE).unwrap();
        (GrantTable::new(t, entries), ActiveTable::new(a, entries))
    }

    #[test]
    fn combo_roundtrip() {
        assert_eq!(split(combo(0x1234, 0xBEEF)), (0x1234, 0xBEEF));
        assert_eq!(split(clear_mask(GTF_READING)).0, !GTF_READING);
    }

    #[test]
    fn pin_checks_and_flags() {
        let (t, a) = tables(16);
        assert_eq!(pin(&t, &a, 4, 16, 0, true, true), Err(GrantStatus::BadGntref));
        assert_eq!(pin(&t, &a, 4, 9, 0, true, true), Err(GrantStatus::GeneralError));
        t.publish(9, GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: 0, frame: 2 });
        assert_eq!(pin(&t, &a, 4, 9, 1, true, true), Err(GrantStatus::GeneralError));
        assert_eq!(pin(&t, &a, 4, 9, 0, false, true), Err(GrantStatus::GeneralError));
        assert_eq!(t.read(9).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(pin(&t, &a, 4, 9, 0, true, true), Ok(2));
        assert_eq!(pin(&t, &a, 4, 9, 0, true, false), Ok(2));
        assert!(!t.try_revoke(9));
        unpin(&t, &a, 9, true);
        assert_eq!(t.read(9).unwrap().flags & GTF_READING, GTF_READING);
        unpin(&t, &a, 9, true);
        assert_eq!(t.read(9).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert!(t.try_revoke(9));
        assert_eq!(t.read(9).unwrap().flags, GTF_INVALID);

        t.publish(10, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 0, frame: 4 });
        assert_eq!(pin(&t, &a, 4, 10, 0, false, true), Err(GrantStatus::BadPage));
        assert_eq!(t.read(10).unwrap().flags, GTF_PERMIT_ACCESS);
        t.publish(11, GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_SUB_PAGE, domid: 0, frame: 1 });
        assert_eq!(pin(&t, &a, 4, 11, 0, true, true), Err(GrantStatus::GeneralError));
        assert_eq!(pin(&t, &a, 4, 11, 0, true, false), Ok(1));
    }

    #[test]
    fn write_pin_upgrade_and_other_domain() {
        let (t, a) = tables(16);
        t.publish(8, GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 3, frame: 0 });
        assert_eq!(pin(&t, &a, 1, 8, 3, true, true), Ok(0));
        assert_eq!(pin(&t, &a, 1, 8, 3, false, true), Ok(0));
        assert_eq!(t.read(8).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
        // Already pinned by domain 3: another domain is refused even if the entry changed.
        assert_eq!(pin(&t, &a, 1, 8, 4, true, true), Err(GrantStatus::GeneralError));
        unpin(&t, &a, 8, false);
        assert_eq!(t.read(8).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING);
        unpin(&t, &a, 8, true);
        assert_eq!(t.read(8).unwrap().flags, GTF_PERMIT_ACCESS);
    }
}
