//! Memfd-backed domain memory and tables, and their mappings in a domain process.

use super::gnttab::{ActiveTable, DomainTables, GrantTable};
use crate::{DomId, PAGE_SIZE};
use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag, fallocate, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, MmapRegion, VolatileMemory};

/// Status word value while the domain runs.
pub(crate) const STATUS_ALIVE: u32 = 1;
/// Status word value once the domain died or was destroyed; never changes back.
pub(crate) const STATUS_DEAD: u32 = 2;

/// Creates a sealed memfd of `size` bytes (sparse, zero-filled).
///
/// Invariant: its size can never change (`F_SEAL_SHRINK | F_SEAL_GROW`), so a mapping of
/// it can never fault with `SIGBUS`, whatever the other holders do.
pub(crate) fn sealed_memfd(name: &str, size: usize) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    nix::unistd::ftruncate(&fd, to_off(size)?)?;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW))?;
    Ok(fd)
}

/// Seals `fd` against every future write except through mappings that already exist:
/// afterwards only the host (which mapped it first) can change it.
pub(crate) fn seal_future_writes(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_FUTURE_WRITE | SealFlag::F_SEAL_SEAL))?;
    Ok(())
}

fn to_off(n: usize) -> io::Result<libc::off_t> {
    libc::off_t::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Maps `len` bytes of `file` at `offset` with `MAP_SHARED` and `prot`.
pub(crate) fn map_shared(file: &Arc<File>, offset: usize, len: usize, prot: i32) -> io::Result<MmapRegion> {
    MmapRegionBuilder::new(len)
        .with_file_offset(FileOffset::from_arc(file.clone(), offset as u64))
        .with_mmap_prot(prot)
        .with_mmap_flags(libc::MAP_SHARED)
        .build()
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Pages of a file mapped side by side at arbitrary page offsets: a `PROT_NONE`
/// reservation of the whole range, each page then replaced with `MAP_FIXED`. Unmapped on drop.
///
/// Invariant: `addr..addr + len` is a mapping this value alone owns; regions handed out by
/// [`FixedPages::region`] do not own it and must be dropped first.
#[derive(Debug)]
pub(crate) struct FixedPages {
    /// Start address (kept as a number so the value is `Send`).
    addr: usize,
    len: usize,
}

impl FixedPages {
    /// Maps page `frames[i]` of `file` as page `i`, with `prot` and `MAP_SHARED`.
    pub(crate) fn map(file: &File, frames: &[u32], prot: ProtFlags) -> io::Result<Self> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let len = frames.len().checked_mul(PAGE_SIZE).and_then(NonZeroUsize::new).ok_or_else(einval)?;
        let page = NonZeroUsize::new(PAGE_SIZE).ok_or_else(einval)?;
        // SAFETY: no address hint and no MAP_FIXED: the kernel picks a free range, so the
        // new mapping replaces nothing of this process.
        let base = unsafe {
            mmap_anonymous(None, len, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE)
        }?;
        // From here on, dropping `pages` unmaps whatever was mapped.
        let pages = Self { addr: base.as_ptr() as usize, len: len.get() };
        for (i, &frame) in frames.iter().enumerate() {
            let at = NonZeroUsize::new(pages.addr + i * PAGE_SIZE).ok_or_else(einval)?;
            let offset = to_off(frame as usize * PAGE_SIZE)?;
            // SAFETY: MAP_FIXED replaces page `i` of the reservation above, which this
            // function owns and nothing else uses; the file is a sealed memfd that can never
            // shrink, so the page cannot fault with SIGBUS later.
            unsafe { mmap(Some(at), page, prot, MapFlags::MAP_SHARED | MapFlags::MAP_FIXED, file, offset) }?;
        }
        Ok(pages)
    }

    /// A region over the pages that does not own them: it must be dropped before `self`.
    pub(crate) fn region(&self, prot: i32) -> io::Result<MmapRegion> {
        // SAFETY: `len` bytes at `addr` are mapped with `prot` until `self` is dropped, and
        // the caller drops the region first (`GrantMapping` drops its region before its
        // release hook, which owns `self`).
        unsafe { MmapRegion::build_raw(self.addr as *mut u8, self.len, prot, libc::MAP_SHARED) }
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl Drop for FixedPages {
    fn drop(&mut self) {
        let Some(addr) = std::ptr::NonNull::new(self.addr as *mut std::ffi::c_void) else { return };
        // SAFETY: the range is this value's own mapping (type invariant), and no region over
        // it is left.
        if let Err(errno) = unsafe { munmap(addr, self.len) } {
            tracing::warn!(%errno, len = self.len, "munmap of mapped grant pages failed");
        }
    }
}

/// Opens a second, read-only description of `fd` through `/proc/self/fd`, so that even
/// `mprotect` cannot make a mapping of it writable.
pub(crate) fn reopen_read_only(fd: BorrowedFd<'_>) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Releases `len` bytes at `offset` of a memfd: they read back as zeros afterwards.
pub(crate) fn punch_hole(file: &File, offset: usize, len: usize) -> io::Result<()> {
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        to_off(offset)?,
        to_off(len)?,
    )?;
    Ok(())
}

/// Fails unless the host page size is Xen's 4 KiB, which frame offsets assume.
pub(crate) fn check_page_size() -> io::Result<()> {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size == PAGE_SIZE as libc::c_long => Ok(()),
        _ => Err(io::Error::new(io::ErrorKind::Unsupported, "the grant sim needs 4 KiB host pages")),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every domain and port costs a few
/// descriptors. Best effort.
pub(crate) fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Bytes of the active table for `entries` grants, rounded up to whole pages.
pub(crate) fn active_table_len(entries: u32) -> usize {
    (entries as usize * super::gnttab::ACTIVE_ENTRY_SIZE).next_multiple_of(PAGE_SIZE)
}

/// The descriptors of one domain, in wire order.
#[derive(Debug)]
pub(crate) struct DomainFds {
    /// `mem_pages` pages of memory.
    pub mem: OwnedFd,
    /// `grant_frames` pages of v1 grant entries.
    pub table: OwnedFd,
    /// Pin counts shared by every process that maps or copies the domain's grants.
    pub active: OwnedFd,
    /// One page whose first word is [`STATUS_ALIVE`] or [`STATUS_DEAD`]; read-only to all
    /// but the host.
    pub status: OwnedFd,
}

impl DomainFds {
    pub(crate) fn from_vec(fds: Vec<OwnedFd>) -> Option<Self> {
        let [mem, table, active, status]: [OwnedFd; 4] = fds.try_into().ok()?;
        Some(Self { mem, table, active, status })
    }

    pub(crate) fn borrow(&self) -> [BorrowedFd<'_>; 4] {
        [self.mem.as_fd(), self.table.as_fd(), self.active.as_fd(), self.status.as_fd()]
    }

    /// Maps the grant table and the active table (the host's view, to settle pins).
    pub(crate) fn map_tables(&self, grant_frames: u32) -> io::Result<DomainTables> {
        let entries = grant_frames
            .checked_mul(super::gnttab::ENTRIES_PER_FRAME)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let file = |fd: &OwnedFd| fd.try_clone().map(|fd| Arc::new(File::from(fd)));
        let table = map_shared(&file(&self.table)?, 0, grant_frames as usize * PAGE_SIZE, rw)?;
        let active = map_shared(&file(&self.active)?, 0, active_table_len(entries), rw)?;
        Ok(DomainTables { table: GrantTable::new(table, entries), active: ActiveTable::new(active, entries) })
    }
}

/// One domain's memory and tables mapped into this process: our own domain, or a foreign
/// one whose grants we map and copy (cached per domid for the life of the connection).
pub(crate) struct DomainMemory {
    domid: DomId,
    mem_pages: u32,
    mem_file: Arc<File>,
    /// Read-only description of `mem_file`, opened on the first read-only map.
    mem_ro: Mutex<Option<Arc<File>>>,
    /// The whole memory, for copies. Private to `grant::sim`: callers only ever get
    /// one-page mappings or copy results.
    mem: MmapRegion,
    pub(crate) table: GrantTable,
    pub(crate) active: ActiveTable,
    status: MmapRegion,
}

impl DomainMemory {
    /// Maps the descriptors the host sent for `domid`.
    pub(crate) fn map(domid: DomId, mem_pages: u32, grant_frames: u32, fds: DomainFds) -> io::Result<Self> {
        let entries = grant_frames
            .checked_mul(super::gnttab::ENTRIES_PER_FRAME)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let mem_file = Arc::new(File::from(fds.mem));
        let mem = map_shared(&mem_file, 0, mem_pages as usize * PAGE_SIZE, rw)?;
        let table = map_shared(&Arc::new(File::from(fds.table)), 0, grant_frames as usize * PAGE_SIZE, rw)?;
        let active = map_shared(&Arc::new(File::from(fds.active)), 0, active_table_len(entries), rw)?;
        let status = map_shared(&Arc::new(File::from(fds.status)), 0, PAGE_SIZE, libc::PROT_READ)?;
        Ok(Self {
            domid,
            mem_pages,
            mem_file,
            mem_ro: Mutex::new(None),
            mem,
            table: GrantTable::new(table, entries),
            active: ActiveTable::new(active, entries),
            status,
        })
    }

    pub(crate) fn domid(&self) -> DomId {
        self.domid
    }

    pub(crate) fn mem_pages(&self) -> u32 {
        self.mem_pages
    }

    /// Whether the host still reports the domain alive. Once `false`, always `false`.
    pub(crate) fn alive(&self) -> bool {
        status_word(&self.status).is_some_and(|w| w.load(Ordering::Acquire) == STATUS_ALIVE)
    }

    /// The whole memory of the domain.
    pub(crate) fn memory(&self) -> &MmapRegion {
        &self.mem
    }

    /// The memfd, for mapping pages of it.
    pub(crate) fn mem_file(&self) -> &Arc<File> {
        &self.mem_file
    }

    /// A read-only description of the memfd.
    pub(crate) fn mem_file_read_only(&self) -> io::Result<Arc<File>> {
        let mut slot = self.mem_ro.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = slot.as_ref() {
            return Ok(file.clone());
        }
        let file = Arc::new(reopen_read_only(self.mem_file.as_fd())?);
        *slot = Some(file.clone());
        Ok(file)
    }
}

impl fmt::Debug for DomainMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainMemory")
            .field("domid", &self.domid)
            .field("mem_pages", &self.mem_pages)
            .field("entries", &self.table.entries())
            .field("alive", &self.alive())
            .finish()
    }
}

/// The status word of a mapped status page.
pub(crate) fn status_word(page: &MmapRegion) -> Option<&AtomicU32> {
    page.get_atomic_ref::<AtomicU32>(0).ok()
}
