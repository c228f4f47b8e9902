//! `GNTTABOP_map_grant_ref` and `GNTTABOP_copy`, run in the caller's process against the
//! granting domain's shared tables. Every pin is recorded in the caller's ledger
//! ([`super::ledger`]): slots are reserved before anything is pinned, one per mapped page
//! and two per copy batch (the two ends of the segment being copied).

use super::gnttab;
use super::ledger::{Ledger, Record, Slot, Slots, Use};
use super::memory::{DomainMemory, FixedPages, map_shared};
use crate::{Access, CopyPtr, CopySegment, DomId, GrantError, GrantMapping, GrantRef, GrantStatus, PAGE_SIZE, Unmap};
use nix::sys::mman::ProtFlags;
use std::sync::Arc;
use vm_memory::{VolatileMemory, VolatileSlice};

/// Why a domain could not be resolved for an operation.
#[derive(Debug)]
pub(crate) enum Resolve {
    /// Unknown or dead: `GNTST_bad_domain`.
    BadDomain,
    /// The host could not be asked: the whole operation fails.
    Io(std::io::Error),
}

/// Pins a grant of `dom` for `ldom` (recorded in `slot`), then releases it on drop.
struct Pin<'a> {
    dom: &'a DomainMemory,
    rec: Record,
    slot: Slot<'a>,
    frame: u32,
}

impl<'a> Pin<'a> {
    fn new(
        dom: &'a DomainMemory,
        gref: GrantRef,
        ldom: DomId,
        readonly: bool,
        slot: Slot<'a>,
    ) -> Result<Self, GrantStatus> {
        let rec = Record { domid: dom.domid(), gref, readonly };
        let frame = gnttab::pin(&dom.table, &dom.active, dom.mem_pages(), rec, ldom, false, slot)?;
        Ok(Self { dom, rec, slot, frame })
    }

    /// The pinned page, `offset..offset + len` (checked by the caller to stay in the page).
    fn slice(&self, offset: u16, len: u16) -> VolatileSlice<'a> {
        self.dom
            .memory()
            .get_slice(self.frame as usize * PAGE_SIZE + usize::from(offset), usize::from(len))
            .expect("pinned frames lie inside the domain's memory")
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        gnttab::unpin(&self.dom.table, &self.dom.active, self.rec, self.slot);
    }
}

/// Slots for `n` map pins, or `GNTST_no_space` naming `gref` (Xen's maptrack is full).
fn reserve_maps(ledger: &Arc<Ledger>, n: usize, domid: DomId, gref: GrantRef) -> Result<Slots, GrantError> {
    ledger.reserve(n, Use::Map).ok_or_else(|| {
        tracing::debug!(domid, gref, pages = n, "pin ledger full: map refused");
        GrantError::Map { domid, gref, status: GrantStatus::NoSpace }
    })
}

/// Releases the pin of a [`GrantMapping`] after its page was unmapped.
#[derive(Debug)]
struct MapRelease {
    dom: Arc<DomainMemory>,
    rec: Record,
    slots: Slots,
}

impl Unmap for MapRelease {
    fn unmap(&mut self) {
        gnttab::unpin(&self.dom.table, &self.dom.active, self.rec, self.slots.get(0));
    }
}

/// Maps `gref` of `dom` for `ldom`: Xen's `map_grant_ref` checks, then a one-page shared
/// mapping of the frame (through a read-only description for `Access::ReadOnly`).
pub(crate) fn map(
    dom: &Arc<DomainMemory>,
    ledger: &Arc<Ledger>,
    ldom: DomId,
    gref: GrantRef,
    access: Access,
) -> Result<GrantMapping, GrantError> {
    let domid = dom.domid();
    let refused = |status| GrantError::Map { domid, gref, status };
    if !dom.alive() {
        return Err(refused(GrantStatus::BadDomain));
    }
    let slots = reserve_maps(ledger, 1, domid, gref)?;
    let rec = Record { domid, gref, readonly: access == Access::ReadOnly };
    let frame =
        gnttab::pin(&dom.table, &dom.active, dom.mem_pages(), rec, ldom, true, slots.get(0)).map_err(refused)?;
    let release = MapRelease { dom: dom.clone(), rec, slots };
    let region = match access {
        Access::ReadOnly => dom
            .mem_file_read_only()
            .and_then(|file| map_shared(&file, frame as usize * PAGE_SIZE, PAGE_SIZE, libc::PROT_READ)),
        Access::ReadWrite => {
            map_shared(dom.mem_file(), frame as usize * PAGE_SIZE, PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE)
        }
    };
    match region {
        Ok(region) => Ok(GrantMapping::new(region, domid, gref, access, Box::new(release))),
        Err(source) => {
            let mut release = release;
            release.unmap();
            Err(GrantError::Mmap { domid, gref, source })
        }
    }
}

/// Unmaps the pages of a [`map_many`] mapping, then releases the pin of each grant.
#[derive(Debug)]
struct ManyRelease {
    pages: Option<FixedPages>,
    dom: Arc<DomainMemory>,
    /// The grants pinned so far; `grefs[i]` recorded in slot `i`.
    grefs: Vec<GrantRef>,
    readonly: bool,
    slots: Slots,
}

impl Unmap for ManyRelease {
    fn unmap(&mut self) {
        drop(self.pages.take());
        let domid = self.dom.domid();
        for (i, &gref) in self.grefs.iter().enumerate() {
            let rec = Record { domid, gref, readonly: self.readonly };
            gnttab::unpin(&self.dom.table, &self.dom.active, rec, self.slots.get(i));
        }
        self.grefs.clear();
    }
}

impl Drop for ManyRelease {
    /// Unpins what is still pinned if the mapping never got built.
    fn drop(&mut self) {
        self.unmap();
    }
}

/// Maps `grefs` of `dom` for `ldom` side by side: every grant pinned with Xen's
/// `map_grant_ref` checks, in order (the first refusal unpins the others and is the
/// error), then one reservation of `grefs.len()` pages with each frame mapped into its
/// place (through a read-only description for `Access::ReadOnly`).
pub(crate) fn map_many(
    dom: &Arc<DomainMemory>,
    ledger: &Arc<Ledger>,
    ldom: DomId,
    grefs: &[GrantRef],
    access: Access,
) -> Result<GrantMapping, GrantError> {
    let domid = dom.domid();
    let Some(&first) = grefs.first() else {
        return Err(GrantError::Hypervisor {
            context: format!("mapping no grants of domain {domid}"),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    };
    if !dom.alive() {
        return Err(GrantError::Map { domid, gref: first, status: GrantStatus::BadDomain });
    }
    let readonly = access == Access::ReadOnly;
    let slots = reserve_maps(ledger, grefs.len(), domid, first)?;
    let mut release =
        ManyRelease { pages: None, dom: dom.clone(), grefs: Vec::with_capacity(grefs.len()), readonly, slots };
    let mut frames = Vec::with_capacity(grefs.len());
    for (i, &gref) in grefs.iter().enumerate() {
        // On a refusal, dropping `release` unpins the grants pinned so far.
        let rec = Record { domid, gref, readonly };
        let frame = gnttab::pin(&dom.table, &dom.active, dom.mem_pages(), rec, ldom, true, release.slots.get(i))
            .map_err(|status| GrantError::Map { domid, gref, status })?;
        release.grefs.push(gref);
        frames.push(frame);
    }
    let (prot, raw) = match access {
        Access::ReadOnly => (ProtFlags::PROT_READ, libc::PROT_READ),
        Access::ReadWrite => (ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, libc::PROT_READ | libc::PROT_WRITE),
    };
    let mapped = match access {
        Access::ReadOnly => dom.mem_file_read_only().and_then(|file| FixedPages::map(&file, &frames, prot)),
        Access::ReadWrite => FixedPages::map(dom.mem_file(), &frames, prot),
    };
    let region = mapped.and_then(|pages| {
        let region = pages.region(raw);
        release.pages = Some(pages);
        region
    });
    match region {
        Ok(region) => Ok(GrantMapping::new_many(region, domid, grefs.to_vec(), access, Box::new(release))),
        Err(source) => Err(GrantError::Mmap { domid, gref: first, source }),
    }
}

/// One end of a segment after its domain was looked up.
enum End<'s, 'a> {
    Local(&'s VolatileSlice<'a>),
    Grant { dom: Arc<DomainMemory>, gref: GrantRef, offset: u16 },
}

/// Runs a copy batch for `ldom` (Xen's `gnttab_copy`). `resolve` finds a domain's
/// mapped tables (asking the host on a cache miss).
///
/// Every local buffer is checked first: a short one fails the whole batch with
/// [`GrantError::LocalBufferTooShort`] before any byte moves (gntdev's `-EFAULT`).
/// Otherwise each segment gets its own status, in Xen's order of checks: either end's
/// domain unknown or dead → `bad_domain`; source grant, then destination grant, refused as
/// [`gnttab::pin`] describes; `offset + len` beyond the page on a grant end →
/// `bad_copy_arg`. Two grant ends copy directly from one domain's page to the other's.
/// The batch fails with `ENOSPC` if the ledger has no two slots left for it.
pub(crate) fn copy(
    ledger: &Arc<Ledger>,
    ldom: DomId,
    segments: &mut [CopySegment<'_>],
    mut resolve: impl FnMut(DomId) -> Result<Arc<DomainMemory>, Resolve>,
) -> Result<(), GrantError> {
    for seg in segments.iter() {
        for end in [&seg.source, &seg.dest] {
            if let CopyPtr::Local(buf) = end
                && buf.len() < usize::from(seg.len)
            {
                return Err(GrantError::LocalBufferTooShort { have: buf.len(), len: seg.len });
            }
        }
    }
    let count = segments.len();
    let Some(slots) = ledger.reserve(2, Use::Copy) else {
        let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
        return Err(GrantError::CopyBatch { segments: count, source });
    };
    let mut lookup = |ptr: &CopyPtr<'_>| -> Result<Option<Resolved>, Failed> {
        match ptr {
            CopyPtr::Local(_) => Ok(None),
            CopyPtr::Grant { domid, gref, offset } => match resolve(*domid) {
                Ok(dom) if dom.alive() => Ok(Some(Resolved { dom, gref: *gref, offset: *offset })),
                Ok(_) | Err(Resolve::BadDomain) => Err(Failed::BadDomain),
                Err(Resolve::Io(source)) => Err(Failed::Batch(GrantError::CopyBatch { segments: count, source })),
            },
        }
    };
    for seg in segments.iter_mut() {
        let ends = lookup(&seg.source).and_then(|s| Ok((s, lookup(&seg.dest)?)));
        seg.status = match ends {
            Err(Failed::Batch(e)) => return Err(e),
            Err(Failed::BadDomain) => GrantStatus::BadDomain,
            Ok((src, dst)) => copy_one(ldom, end(&seg.source, src), end(&seg.dest, dst), seg.len, &slots),
        };
    }
    Ok(())
}

/// A grant end whose domain was found alive.
struct Resolved {
    dom: Arc<DomainMemory>,
    gref: GrantRef,
    offset: u16,
}

/// Why a grant end's domain lookup failed.
enum Failed {
    /// This segment fails with `bad_domain`.
    BadDomain,
    /// The whole batch fails.
    Batch(GrantError),
}

fn end<'s, 'a>(ptr: &'s CopyPtr<'a>, grant: Option<Resolved>) -> End<'s, 'a> {
    match (ptr, grant) {
        (_, Some(Resolved { dom, gref, offset })) => End::Grant { dom, gref, offset },
        (CopyPtr::Local(buf), None) => End::Local(buf),
        (CopyPtr::Grant { .. }, None) => unreachable!("grant ends always resolve to a domain"),
    }
}

/// One segment; its pins are recorded in `slots` 0 (source) and 1 (destination).
fn copy_one(ldom: DomId, src: End<'_, '_>, dst: End<'_, '_>, len: u16, slots: &Slots) -> GrantStatus {
    let src_pin = match &src {
        End::Grant { dom, gref, .. } => match Pin::new(dom, *gref, ldom, true, slots.get(0)) {
            Ok(pin) => Some(pin),
            Err(status) => return status,
        },
        End::Local(_) => None,
    };
    let dst_pin = match &dst {
        End::Grant { dom, gref, .. } => match Pin::new(dom, *gref, ldom, false, slots.get(1)) {
            Ok(pin) => Some(pin),
            Err(status) => return status,
        },
        End::Local(_) => None,
    };
    let in_page = |end: &End<'_, '_>| match end {
        End::Grant { offset, .. } => usize::from(*offset) + usize::from(len) <= PAGE_SIZE,
        End::Local(_) => true,
    };
    if !in_page(&src) || !in_page(&dst) {
        return GrantStatus::BadCopyArg;
    }
    match (slice(&src, src_pin.as_ref(), len), slice(&dst, dst_pin.as_ref(), len)) {
        (Ok(from), Ok(to)) => {
            from.copy_to_volatile_slice(to);
            GrantStatus::Okay
        }
        // Local lengths were checked before the batch started.
        _ => GrantStatus::GeneralError,
    }
}

/// The bytes of one end: the pinned page range or the local buffer.
fn slice<'a>(
    end: &End<'_, 'a>,
    pin: Option<&Pin<'a>>,
    len: u16,
) -> Result<VolatileSlice<'a>, vm_memory::VolatileMemoryError> {
    match (end, pin) {
        (End::Grant { offset, .. }, Some(pin)) => Ok(pin.slice(*offset, len)),
        (End::Local(buf), _) => buf.subslice(0, usize::from(len)),
        (End::Grant { .. }, None) => unreachable!("grant ends are pinned before slicing"),
    }
}
