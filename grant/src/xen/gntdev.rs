//! [`GrantOps`](crate::GrantOps) over `/dev/xen/gntdev`: map one grant or several at once,
//! batched grant copy.

use super::abi::{self, GntdevCopyForeign, GntdevCopyPtr, GntdevGrantCopy, GntdevGrantCopySegment, GntdevGrantRef};
use super::device::Device;
use crate::{Access, CopyPtr, CopySegment, DomId, GrantError, GrantMapping, GrantRef, GrantStatus, PAGE_SIZE, Unmap};
use nix::errno::Errno;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use vm_memory::VolatileSlice;
use vm_memory::volatile_memory::{PtrGuard, PtrGuardMut};

/// A gntdev operation the kernel refused. Travels as the `source` of a [`GrantError`]
/// (inside an `io::Error` of the errno's kind; downcast to read it back).
#[derive(Debug, thiserror::Error)]
pub enum GntdevError {
    /// `IOCTL_GNTDEV_MAP_GRANT_REF` (adding the map entry; nothing is mapped yet).
    #[error("IOCTL_GNTDEV_MAP_GRANT_REF on {} failed: {errno}", path.display())]
    MapGrantRef {
        /// The gntdev path.
        path: PathBuf,
        /// What the kernel said.
        errno: Errno,
    },
    /// `mmap` of the map entry: this is where Xen maps the grant, and gntdev reports every
    /// `GNTST_*` refusal (bad gref, read-only grant mapped writable, dead domain) as `EINVAL`.
    #[error("mmap of {} at offset {index:#x} failed: {errno}", path.display())]
    Mmap {
        /// The gntdev path.
        path: PathBuf,
        /// The mmap offset `IOCTL_GNTDEV_MAP_GRANT_REF` returned.
        index: u64,
        /// What the kernel said.
        errno: Errno,
    },
    /// `IOCTL_GNTDEV_GRANT_COPY` failed as a whole (`EINVAL`, `EFAULT`, `ENOMEM`).
    #[error("IOCTL_GNTDEV_GRANT_COPY of {segments} segments on {} failed: {errno}", path.display())]
    GrantCopy {
        /// The gntdev path.
        path: PathBuf,
        /// Segments in the ioctl.
        segments: usize,
        /// What the kernel said.
        errno: Errno,
    },
}

impl GntdevError {
    /// The errno behind the failure.
    pub fn errno(&self) -> Errno {
        match self {
            Self::MapGrantRef { errno, .. } | Self::Mmap { errno, .. } | Self::GrantCopy { errno, .. } => *errno,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::Error::from(self.errno()).kind(), self)
    }
}

/// `GrantOps::map`: a map entry for one grant, then a one-page mapping of it.
pub(super) fn map(dev: &Device, domid: DomId, gref: GrantRef, access: Access) -> Result<GrantMapping, GrantError> {
    let refs = [GntdevGrantRef { domid: domid.into(), gref }];
    let mut op = abi::GntdevMapGrantRef { count: 1, pad: 0, index: 0, refs };
    // SAFETY: `op` is a map request with `count == 1` and exactly one entry in `refs`, so
    // the kernel reads and writes only within it; the file is an open device.
    let added = unsafe { abi::gntdev_map_grant_ref(dev.file.as_raw_fd(), &mut op) };
    if let Err(errno) = added {
        let source = GntdevError::MapGrantRef { path: dev.path.to_path_buf(), errno }.into_io();
        return Err(GrantError::Hypervisor { context: format!("adding grant {gref} of domain {domid}"), source });
    }
    let index = op.index;
    let mut release = UnmapGrantRef { dev: dev.clone(), index, count: 1, domid, gref };
    let prot = match access {
        // gntdev maps with GNTMAP_readonly exactly when the VMA is not writable.
        Access::ReadOnly => libc::PROT_READ,
        Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    match dev.mmap(index, PAGE_SIZE, prot) {
        Ok(region) => Ok(GrantMapping::new(region, domid, gref, access, Box::new(release))),
        Err(errno) => {
            tracing::debug!(domid, gref, ?access, %errno, "grant map refused");
            // The entry stays on the file's list until removed, mapped or not.
            release.unmap();
            let source = GntdevError::Mmap { path: dev.path.to_path_buf(), index, errno }.into_io();
            Err(GrantError::Mmap { domid, gref, source })
        }
    }
}

/// `GrantOps::map_many`: one map entry for every grant (one ioctl), then one mapping of
/// all its pages. gntdev maps every grant of the entry at `mmap` time and fails the whole
/// `mmap` (`EINVAL`) if Xen refuses any of them; the error names the first gref.
pub(super) fn map_many(
    dev: &Device,
    domid: DomId,
    grefs: &[GrantRef],
    access: Access,
) -> Result<GrantMapping, GrantError> {
    let Some(&first) = grefs.first() else {
        // gntdev's own answer to `count == 0`.
        let source = GntdevError::MapGrantRef { path: dev.path.to_path_buf(), errno: Errno::EINVAL }.into_io();
        return Err(GrantError::Hypervisor { context: format!("mapping no grants of domain {domid}"), source });
    };
    let too_many = || {
        let source = GntdevError::MapGrantRef { path: dev.path.to_path_buf(), errno: Errno::E2BIG }.into_io();
        GrantError::Hypervisor { context: format!("mapping {} grants of domain {domid}", grefs.len()), source }
    };
    let count = u32::try_from(grefs.len()).map_err(|_| too_many())?;
    let len = grefs.len().checked_mul(PAGE_SIZE).ok_or_else(too_many)?;
    let mut op = abi::GntdevMapGrantRefs::new(domid.into(), grefs);
    // SAFETY: `op` is an 8-byte aligned map request whose header says `count` and which
    // holds exactly `count` refs after it, so the kernel reads and writes only within it;
    // the file is an open device.
    let added = unsafe { abi::gntdev_map_grant_ref(dev.file.as_raw_fd(), op.as_mut_ptr()) };
    if let Err(errno) = added {
        let source = GntdevError::MapGrantRef { path: dev.path.to_path_buf(), errno }.into_io();
        let context = format!("adding {count} grants of domain {domid} (first {first})");
        return Err(GrantError::Hypervisor { context, source });
    }
    let index = op.index();
    let mut release = UnmapGrantRef { dev: dev.clone(), index, count, domid, gref: first };
    let prot = match access {
        Access::ReadOnly => libc::PROT_READ,
        Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    match dev.mmap(index, len, prot) {
        Ok(region) => Ok(GrantMapping::new_many(region, domid, grefs.to_vec(), access, Box::new(release))),
        Err(errno) => {
            tracing::debug!(domid, first, count, ?access, %errno, "grant map of several pages refused");
            release.unmap();
            let source = GntdevError::Mmap { path: dev.path.to_path_buf(), index, errno }.into_io();
            Err(GrantError::Mmap { domid, gref: first, source })
        }
    }
}

/// Removes a map entry once its pages are unmapped (the order [`GrantMapping`] guarantees;
/// gntdev unmaps the grants when both the VMA and the entry are gone).
#[derive(Debug)]
struct UnmapGrantRef {
    dev: Device,
    index: u64,
    /// Grants in the entry.
    count: u32,
    domid: DomId,
    /// The (first) grant, for messages.
    gref: GrantRef,
}

impl Unmap for UnmapGrantRef {
    fn unmap(&mut self) {
        let op = abi::GntdevUnmapGrantRef { index: self.index, count: self.count, pad: 0 };
        // SAFETY: `op` is a valid unmap request that the kernel only reads; the file is open
        // for as long as `self.dev` lives.
        if let Err(errno) = unsafe { abi::gntdev_unmap_grant_ref(self.dev.file.as_raw_fd(), &op) } {
            tracing::warn!(
                path = %self.dev.path(), index = self.index, count = self.count, domid = self.domid,
                gref = self.gref, %errno,
                "IOCTL_GNTDEV_UNMAP_GRANT_REF failed: the grant stays mapped until gntdev is closed"
            );
        }
    }
}

/// How [`copy`] handles one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Goes to the kernel.
    Submit,
    /// Local to local: gntdev refuses these (`EINVAL` for the whole batch), so we copy.
    CopyHere,
    /// A grant end crosses its page: gntdev would fail the whole batch with `EINVAL`, Xen
    /// (and the sim) fail the segment alone with this status.
    Refuse(GrantStatus),
}

fn plan(seg: &CopySegment<'_>) -> Plan {
    let crosses = |end: &CopyPtr<'_>| match end {
        CopyPtr::Grant { offset, .. } => usize::from(*offset) + usize::from(seg.len) > PAGE_SIZE,
        CopyPtr::Local(_) => false,
    };
    if crosses(&seg.source) || crosses(&seg.dest) {
        return Plan::Refuse(GrantStatus::BadCopyArg);
    }
    match (&seg.source, &seg.dest) {
        (CopyPtr::Local(_), CopyPtr::Local(_)) => Plan::CopyHere,
        _ => Plan::Submit,
    }
}

/// `GrantOps::copy`, with the sim's semantics: a short local buffer fails the batch before
/// any byte moves; otherwise every segment gets its own status, in batch order (runs of
/// kernel segments are split around local-to-local ones so that order holds).
pub(super) fn copy(dev: &Device, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
    for seg in segments.iter() {
        for end in [&seg.source, &seg.dest] {
            if let CopyPtr::Local(buf) = end
                && buf.len() < usize::from(seg.len)
            {
                return Err(GrantError::LocalBufferTooShort { have: buf.len(), len: seg.len });
            }
        }
    }
    let mut run = Vec::with_capacity(segments.len());
    for i in 0..segments.len() {
        match plan(&segments[i]) {
            Plan::Submit => run.push(i),
            Plan::Refuse(status) => segments[i].status = status,
            Plan::CopyHere => {
                submit(dev, segments, &run)?;
                run.clear();
                copy_here(&mut segments[i]);
            }
        }
    }
    submit(dev, segments, &run)
}

/// Copies a local-to-local segment (lengths were checked by [`copy`]).
fn copy_here(seg: &mut CopySegment<'_>) {
    let len = usize::from(seg.len);
    let (CopyPtr::Local(from), CopyPtr::Local(to)) = (&seg.source, &seg.dest) else {
        unreachable!("planned as local to local")
    };
    seg.status = match (from.subslice(0, len), to.subslice(0, len)) {
        (Ok(from), Ok(to)) => {
            from.copy_to_volatile_slice(to);
            GrantStatus::Okay
        }
        _ => GrantStatus::GeneralError,
    };
}

/// Pointer guards of the local ends, alive until the ioctl returned.
#[derive(Default)]
struct Guards {
    reads: Vec<PtrGuard>,
    writes: Vec<PtrGuardMut>,
}

/// Runs `segments[i]` for every `i` in `run` as one `IOCTL_GNTDEV_GRANT_COPY`.
fn submit(dev: &Device, segments: &mut [CopySegment<'_>], run: &[usize]) -> Result<(), GrantError> {
    if run.is_empty() {
        return Ok(());
    }
    let failed = |errno| GrantError::CopyBatch {
        segments: run.len(),
        source: GntdevError::GrantCopy { path: dev.path.to_path_buf(), segments: run.len(), errno }.into_io(),
    };
    let mut guards = Guards::default();
    let mut ops: Vec<GntdevGrantCopySegment> = run.iter().map(|&i| to_abi(&segments[i], &mut guards)).collect();
    let count = u32::try_from(ops.len()).map_err(|_| failed(Errno::E2BIG))?;
    let op = GntdevGrantCopy { count, segments: ops.as_mut_ptr() };
    // SAFETY: `op.segments` points to `count` initialised segments that outlive the call
    // and that the kernel may write (`status`); every `virt` end comes from a
    // `VolatileSlice` of at least `len` bytes (checked by `copy`) borrowed for the whole
    // call, with its pointer guard alive in `guards`; the file is an open device.
    let result = unsafe { abi::gntdev_grant_copy(dev.file.as_raw_fd(), &op) };
    drop(guards);
    result.map_err(failed)?;
    for (op, &i) in ops.iter().zip(run) {
        segments[i].status = GrantStatus::from_code(op.status).unwrap_or_else(|| {
            tracing::debug!(status = op.status, "unknown GNTST code from grant copy");
            GrantStatus::GeneralError
        });
    }
    Ok(())
}

/// The kernel's form of a segment; its status starts as `general_error` so that a segment
/// the kernel never reached cannot read as done.
fn to_abi(seg: &CopySegment<'_>, guards: &mut Guards) -> GntdevGrantCopySegment {
    let (source, source_gref) = end_to_abi(&seg.source, false, guards);
    let (dest, dest_gref) = end_to_abi(&seg.dest, true, guards);
    let flags =
        if source_gref { abi::GNTCOPY_SOURCE_GREF } else { 0 } | if dest_gref { abi::GNTCOPY_DEST_GREF } else { 0 };
    GntdevGrantCopySegment { source, dest, len: seg.len, flags, status: GrantStatus::GeneralError.code() }
}

/// One end in the kernel's form, and whether it is a grant.
fn end_to_abi(end: &CopyPtr<'_>, written: bool, guards: &mut Guards) -> (GntdevCopyPtr, bool) {
    match end {
        CopyPtr::Grant { domid, gref, offset } => {
            (GntdevCopyPtr { foreign: GntdevCopyForeign { gref: *gref, offset: *offset, domid: *domid } }, true)
        }
        CopyPtr::Local(buf) => (GntdevCopyPtr { virt: local_ptr(buf, written, guards) }, false),
    }
}

fn local_ptr(buf: &VolatileSlice<'_>, written: bool, guards: &mut Guards) -> *mut std::ffi::c_void {
    if written {
        let guard = buf.ptr_guard_mut();
        let ptr = guard.as_ptr().cast();
        guards.writes.push(guard);
        ptr
    } else {
        let guard = buf.ptr_guard();
        // The kernel only reads a source; the field is `void *` for both directions.
        let ptr = guard.as_ptr().cast_mut().cast();
        guards.reads.push(guard);
        ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(buf: &mut [u8]) -> CopyPtr<'_> {
        CopyPtr::Local(VolatileSlice::from(buf))
    }

    fn grant(offset: u16) -> CopyPtr<'static> {
        CopyPtr::Grant { domid: 3, gref: 9, offset }
    }

    #[test]
    fn plan_refuses_page_crossings_and_keeps_local_copies_here() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        assert_eq!(plan(&CopySegment::new(grant(4064), local(&mut a[..]), 32)), Plan::Submit);
        assert_eq!(plan(&CopySegment::new(grant(4065), local(&mut a[..]), 32)), Plan::Refuse(GrantStatus::BadCopyArg));
        assert_eq!(plan(&CopySegment::new(local(&mut a[..]), grant(4095), 2)), Plan::Refuse(GrantStatus::BadCopyArg));
        assert_eq!(plan(&CopySegment::new(grant(0), grant(0), 4096)), Plan::Submit);
        assert_eq!(plan(&CopySegment::new(local(&mut a[..]), local(&mut b[..]), 64)), Plan::CopyHere);
    }

    #[test]
    fn segments_reach_the_kernel_in_its_layout() {
        let mut buf = [0u8; 16];
        let base = buf.as_mut_ptr();
        let seg = CopySegment::new(grant(100), CopyPtr::Local(VolatileSlice::from(&mut buf[4..])), 12);
        let mut guards = Guards::default();
        let op = to_abi(&seg, &mut guards);
        assert_eq!((op.len, op.flags, op.status), (12, abi::GNTCOPY_SOURCE_GREF, GrantStatus::GeneralError.code()));
        // SAFETY: `flags` says the source is the `foreign` arm and the dest the `virt` arm,
        // and `to_abi` wrote exactly those.
        let (foreign, virt) = unsafe { (op.source.foreign, op.dest.virt) };
        assert_eq!((foreign.gref, foreign.offset, foreign.domid), (9, 100, 3));
        assert_eq!(virt.cast::<u8>(), base.wrapping_add(4));
        assert_eq!(guards.writes.len(), 1);
        let back = CopySegment::new(CopyPtr::Local(VolatileSlice::from(&mut buf[..])), grant(0), 16);
        assert_eq!(to_abi(&back, &mut guards).flags, abi::GNTCOPY_DEST_GREF);
        assert_eq!(guards.reads.len(), 1);
    }
}
