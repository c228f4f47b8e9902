//! Accessors for the shared page, common to both ends.
//!
//! Every access goes through `VolatileSlice`/`Bytes`: indices with atomic
//! loads/stores, slots with one `read_slice`/`write_slice` each.

use core::sync::atomic::Ordering;

use vm_memory::{Bytes, VolatileSlice};

use super::{RingError, RingKind, SRING_HEADER_SIZE};
use crate::abi::{RingEntry, XEN_PAGE_SIZE};

/// Checks the [`RingMemory`](super::RingMemory) contract once: a full page,
/// aligned for atomic `u32` access (the load fails if misaligned).
pub(crate) fn check_page(page: &VolatileSlice<'_>) -> Result<(), RingError> {
    if page.len() < XEN_PAGE_SIZE {
        return Err(RingError::PageTooSmall { len: page.len() });
    }
    page.load::<u32>(0, Ordering::Relaxed).map(drop).map_err(RingError::Memory)
}

/// Loads a header index written by the peer (`Acquire`: slot contents
/// published before the index are visible after it).
pub(crate) fn load_idx(page: &VolatileSlice<'_>, off: usize) -> Result<u32, RingError> {
    page.load::<u32>(off, Ordering::Acquire).map_err(RingError::Memory)
}

/// Stores a header index (`Release`: our slot writes become visible no later
/// than the index, which is ring.h's `wmb()` before the producer update).
pub(crate) fn store_idx(page: &VolatileSlice<'_>, off: usize, val: u32) -> Result<(), RingError> {
    page.store(val, off, Ordering::Release).map_err(RingError::Memory)
}

/// Zeroes `len` bytes at `off`.
pub(crate) fn zero(page: &VolatileSlice<'_>, off: usize, len: usize) -> Result<(), RingError> {
    let zeros = [0u8; SRING_HEADER_SIZE];
    let buf = zeros.get(..len).ok_or(RingError::PageTooSmall { len })?;
    page.write_slice(buf, off).map_err(RingError::Memory)
}

/// Byte offset of the slot holding free-running index `idx`.
fn slot_offset<K: RingKind>(idx: u32) -> usize {
    SRING_HEADER_SIZE + (idx & (K::SIZE - 1)) as usize * K::ENTRY_SIZE
}

/// Copies the slot of `idx` **once** into a local array and decodes the copy.
pub(crate) fn read_entry<K: RingKind, E: RingEntry>(page: &VolatileSlice<'_>, idx: u32) -> Result<E, RingError> {
    const { assert!(E::SIZE <= K::ENTRY_SIZE, "entry larger than a ring slot") };
    let mut raw = E::Raw::default();
    page.read_slice(raw.as_mut(), slot_offset::<K>(idx)).map_err(RingError::Memory)?;
    Ok(E::decode(&raw))
}

/// Writes `entry` into the slot of `idx` (the first `E::SIZE` bytes).
pub(crate) fn write_entry<K: RingKind, E: RingEntry>(
    page: &VolatileSlice<'_>,
    idx: u32,
    entry: &E,
) -> Result<(), RingError> {
    const { assert!(E::SIZE <= K::ENTRY_SIZE, "entry larger than a ring slot") };
    page.write_slice(entry.encode().as_ref(), slot_offset::<K>(idx)).map_err(RingError::Memory)
}

/// The notification decision of `RING_PUSH_*_AND_CHECK_NOTIFY`: notify iff
/// the peer's `event` index lies in `(old, new]` modulo 2^32.
pub(crate) fn event_in_batch(event: u32, old: u32, new: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Full barrier (ring.h `xen_mb()`): orders our preceding index store before
/// the following load of the peer's index.
pub(crate) fn mb() {
    core::sync::atomic::fence(Ordering::SeqCst);
}
