//! [`GrantAlloc`](crate::GrantAlloc) over `/dev/xen/gntalloc`: grant our own pages.

use super::abi;
use super::device::Device;
use crate::{Access, DomId, GrantError, GrantRef, GrantStatus, PAGE_SIZE, SharedPages, Unmap};
use nix::errno::Errno;
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// A gntalloc operation the kernel refused. Travels as the `source` of a [`GrantError`]
/// (inside an `io::Error` of the errno's kind; downcast to read it back).
#[derive(Debug, thiserror::Error)]
pub enum GntallocError {
    /// `IOCTL_GNTALLOC_ALLOC_GREF`.
    #[error("IOCTL_GNTALLOC_ALLOC_GREF of {pages} pages on {} failed: {errno}", path.display())]
    AllocGref {
        /// The gntalloc path.
        path: PathBuf,
        /// Pages asked for.
        pages: usize,
        /// What the kernel said.
        errno: Errno,
    },
    /// `mmap` of the allocated pages.
    #[error("mmap of {pages} pages of {} at offset {index:#x} failed: {errno}", path.display())]
    Mmap {
        /// The gntalloc path.
        path: PathBuf,
        /// Pages asked for.
        pages: usize,
        /// The mmap offset `IOCTL_GNTALLOC_ALLOC_GREF` returned.
        index: u64,
        /// What the kernel said.
        errno: Errno,
    },
}

impl GntallocError {
    /// The errno behind the failure.
    pub fn errno(&self) -> Errno {
        match self {
            Self::AllocGref { errno, .. } | Self::Mmap { errno, .. } => *errno,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::Error::from(self.errno()).kind(), self)
    }
}

/// `GrantAlloc::share`: `pages` zeroed pages granted to `domid`, mapped read-write here.
pub(super) fn share(dev: &Device, domid: DomId, pages: usize, access: Access) -> Result<SharedPages, GrantError> {
    let refused = |status| GrantError::Share { domid, pages, status };
    if pages == 0 {
        return Err(refused(GrantStatus::GeneralError));
    }
    let (Ok(count), Some(len)) = (u32::try_from(pages), pages.checked_mul(PAGE_SIZE)) else {
        return Err(refused(GrantStatus::NoSpace));
    };
    let flags = match access {
        Access::ReadOnly => 0,
        Access::ReadWrite => abi::GNTALLOC_FLAG_WRITABLE,
    };
    let mut req = AllocRequest::new(domid, flags, count);
    // SAFETY: `req` holds at least `max(size_of::<GntallocAllocGref>(), 16 + 4 * count)`
    // bytes, all the kernel reads or writes for `count` pages; the file is an open device.
    match unsafe { abi::gntalloc_alloc_gref(dev.file.as_raw_fd(), req.as_mut_ptr()) } {
        Ok(_) => {}
        // gntalloc's page limit for the whole system (module parameter `limit`, 1024).
        Err(Errno::ENOSPC) => {
            tracing::debug!(path = %dev.path(), pages, "gntalloc limit reached");
            return Err(refused(GrantStatus::NoSpace));
        }
        Err(errno) => {
            let source = GntallocError::AllocGref { path: dev.path.to_path_buf(), pages, errno }.into_io();
            return Err(GrantError::Hypervisor {
                context: format!("granting {pages} pages to domain {domid}"),
                source,
            });
        }
    }
    let index = req.index();
    let mut release = DeallocGref { dev: dev.clone(), index, count };
    // Our side is always writable; `access` only limits the peer.
    match dev.mmap(index, len, libc::PROT_READ | libc::PROT_WRITE) {
        Ok(region) => Ok(SharedPages::new(region, req.grefs(count), domid, access, Box::new(release))),
        Err(errno) => {
            release.unmap();
            let source = GntallocError::Mmap { path: dev.path.to_path_buf(), pages, index, errno }.into_io();
            Err(GrantError::Hypervisor { context: format!("mapping {pages} pages granted to domain {domid}"), source })
        }
    }
}

/// The variable-length `struct ioctl_gntalloc_alloc_gref`, built in 8-byte words so it is
/// aligned as the struct and needs no `unsafe` to fill or read: word 0 holds
/// `domid, flags, count`, word 1 `index`, then two `gref_ids` per word.
///
/// Invariant: at least `size_of::<GntallocAllocGref>()` bytes (the kernel copies the whole
/// declared struct back before the ids) and room for `count` ids.
struct AllocRequest(Vec<u64>);

impl AllocRequest {
    const HEADER_WORDS: usize = 2;

    fn new(domid: DomId, flags: u16, count: u32) -> Self {
        let ids = (count as usize).max(2);
        let mut words = vec![0u64; Self::HEADER_WORDS + ids.div_ceil(2)];
        let mut head = [0u8; 8];
        head[0..2].copy_from_slice(&domid.to_ne_bytes());
        head[2..4].copy_from_slice(&flags.to_ne_bytes());
        head[4..8].copy_from_slice(&count.to_ne_bytes());
        words[0] = u64::from_ne_bytes(head);
        debug_assert!(words.len() * 8 >= size_of::<abi::GntallocAllocGref>());
        Self(words)
    }

    fn as_mut_ptr(&mut self) -> *mut abi::GntallocAllocGref {
        self.0.as_mut_ptr().cast()
    }

    /// The mmap offset of the pages (out).
    fn index(&self) -> u64 {
        self.0[1]
    }

    /// The first `count` grant references (out).
    fn grefs(&self, count: u32) -> Vec<GrantRef> {
        self.0[Self::HEADER_WORDS..]
            .iter()
            .flat_map(|w| {
                let b = w.to_ne_bytes();
                [u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), u32::from_ne_bytes([b[4], b[5], b[6], b[7]])]
            })
            .take(count as usize)
            .collect()
    }
}

/// Drops our reference to the pages once they are unmapped here; gntalloc ends each grant
/// when the peer no longer maps it (at once, or at a later gntalloc call).
#[derive(Debug)]
struct DeallocGref {
    dev: Device,
    index: u64,
    count: u32,
}

impl Unmap for DeallocGref {
    fn unmap(&mut self) {
        let op = abi::GntallocDeallocGref { index: self.index, count: self.count, pad: 0 };
        // SAFETY: `op` is a valid dealloc request that the kernel only reads; the file is
        // open for as long as `self.dev` lives.
        if let Err(errno) = unsafe { abi::gntalloc_dealloc_gref(self.dev.file.as_raw_fd(), &op) } {
            tracing::warn!(
                path = %self.dev.path(), index = self.index, count = self.count, %errno,
                "IOCTL_GNTALLOC_DEALLOC_GREF failed: the pages stay granted until gntalloc is closed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The request's bytes, as the kernel sees them.
    fn bytes(req: &AllocRequest) -> Vec<u8> {
        req.0.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn alloc_request_matches_the_c_layout() {
        let req = AllocRequest::new(0x1234, abi::GNTALLOC_FLAG_WRITABLE, 5);
        let b = bytes(&req);
        let at = |off: usize, n: usize| b[off..off + n].to_vec();
        assert_eq!(at(offset_of!(abi::GntallocAllocGref, domid), 2), 0x1234u16.to_ne_bytes());
        assert_eq!(at(offset_of!(abi::GntallocAllocGref, flags), 2), 1u16.to_ne_bytes());
        assert_eq!(at(offset_of!(abi::GntallocAllocGref, count), 4), 5u32.to_ne_bytes());
        assert!(b.len() >= offset_of!(abi::GntallocAllocGref, gref_ids) + 5 * 4);
        // One page still needs the whole declared struct.
        assert!(bytes(&AllocRequest::new(1, 0, 1)).len() >= size_of::<abi::GntallocAllocGref>());
    }

    #[test]
    fn alloc_request_reads_what_the_kernel_wrote() {
        let mut req = AllocRequest::new(7, 0, 3);
        let mut b = bytes(&req);
        let ids = offset_of!(abi::GntallocAllocGref, gref_ids);
        b[offset_of!(abi::GntallocAllocGref, index)..][..8].copy_from_slice(&0x5000u64.to_ne_bytes());
        for (i, gref) in [8u32, 9, 4711].iter().enumerate() {
            b[ids + 4 * i..][..4].copy_from_slice(&gref.to_ne_bytes());
        }
        for (w, chunk) in req.0.iter_mut().zip(b.chunks_exact(8)) {
            *w = u64::from_ne_bytes(chunk.try_into().unwrap());
        }
        assert_eq!(req.index(), 0x5000);
        assert_eq!(req.grefs(3), vec![8, 9, 4711]);
    }
}
