//! The ioctl ABI of Linux's Xen devices: `include/uapi/xen/{gntdev,gntalloc,evtchn}.h`
//! (installed by Xen 4.17 as `xen/sys/*.h`), with `const` checks of every size and offset
//! against the C headers as gcc lays them out on x86_64 and arm64.
//!
//! Every request is `_IOC(_IOC_NONE, type, nr, sizeof(arg))`, data passing or not, so the
//! numbers are built with `ioc!(NONE, ..)` and the `*_bad!` ioctl macros: nix's
//! `ioctl_read!`/`ioctl_write_ptr!` would encode a direction and give other numbers.

use nix::sys::ioctl::ioctl_num_type;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};

/// `_IOC(_IOC_NONE, ty, nr, size)`.
const fn ioc_none(ty: u8, nr: u8, size: usize) -> ioctl_num_type {
    nix::ioc!(nix::sys::ioctl::NONE, ty, nr, size)
}

// ---- gntdev ----------------------------------------------------------------------------

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with its variable array at the declared length of
/// one, which is all [`GrantOps::map`](crate::GrantOps::map) asks for. `index` is the mmap
/// offset of the new entry (out).
#[repr(C)]
#[derive(Debug)]
pub(super) struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_map_grant_ref` with `count` refs, for
/// [`GrantOps::map_many`](crate::GrantOps::map_many): the C struct's flexible array really
/// holds `count` entries after the 16-byte header. Kept in `u64` words so the buffer has the
/// struct's 8-byte alignment; filled and read with byte-exact native-endian writes at the
/// offsets asserted below, so no `unsafe` is needed to build it.
#[derive(Debug)]
pub(super) struct GntdevMapGrantRefs {
    words: Vec<u64>,
}

impl GntdevMapGrantRefs {
    /// Words before the first ref: `count`, `pad`, `index`.
    #[cfg(test)]
    const HEADER_WORDS: usize = offset_of!(GntdevMapGrantRef, refs) / size_of::<u64>();

    /// A request for `refs` (at least one, so the buffer is never shorter than the struct).
    pub fn new(domid: u32, refs: &[u32]) -> Self {
        debug_assert!(!refs.is_empty());
        let pair = |lo: u32, hi: u32| {
            let (lo, hi) = (lo.to_ne_bytes(), hi.to_ne_bytes());
            u64::from_ne_bytes([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]])
        };
        // `count` then `pad`; then `index` (written by the kernel); then `{domid, gref}` each.
        let count = u32::try_from(refs.len()).unwrap_or(u32::MAX);
        let mut words = vec![pair(count, 0), 0];
        words.extend(refs.iter().map(|&gref| pair(domid, gref)));
        Self { words }
    }

    /// The request as the ioctl takes it: 8-byte aligned, `16 + 8 * count` bytes.
    pub fn as_mut_ptr(&mut self) -> *mut GntdevMapGrantRef {
        self.words.as_mut_ptr().cast()
    }

    /// `index`, the mmap offset the kernel wrote.
    pub fn index(&self) -> u64 {
        self.words[offset_of!(GntdevMapGrantRef, index) / size_of::<u64>()]
    }

    /// Number of refs.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.words.len() - Self::HEADER_WORDS
    }

    /// The bytes handed to the kernel.
    #[cfg(test)]
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug)]
pub(super) struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// The `foreign` arm of a grant-copy end.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct GntdevCopyForeign {
    pub gref: u32,
    pub offset: u16,
    pub domid: u16,
}

/// The `source`/`dest` union of `struct gntdev_grant_copy_segment`: a pointer into our
/// address space, or a grant (which arm is meant is told by the segment's `flags`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) union GntdevCopyPtr {
    pub virt: *mut c_void,
    pub foreign: GntdevCopyForeign,
}

/// `struct gntdev_grant_copy_segment`; the kernel writes `status` (a `GNTST_*` code).
#[repr(C)]
pub(super) struct GntdevGrantCopySegment {
    pub source: GntdevCopyPtr,
    pub dest: GntdevCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Debug)]
pub(super) struct GntdevGrantCopy {
    pub count: u32,
    pub segments: *mut GntdevGrantCopySegment,
}

/// `GNTCOPY_source_gref` (`xen/include/public/grant_table.h`): the source is a grant.
pub(super) const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a grant.
pub(super) const GNTCOPY_DEST_GREF: u16 = 1 << 1;

pub(super) const IOCTL_GNTDEV_MAP_GRANT_REF: ioctl_num_type = ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
pub(super) const IOCTL_GNTDEV_UNMAP_GRANT_REF: ioctl_num_type = ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
pub(super) const IOCTL_GNTDEV_GRANT_COPY: ioctl_num_type = ioc_none(b'G', 8, size_of::<GntdevGrantCopy>());

nix::ioctl_readwrite_bad!(
    /// Adds a map entry for `count` grants and returns its mmap offset in `index`.
    ///
    /// # Safety
    /// `fd` is an open gntdev file and `data` points to a map request whose `refs` holds
    /// `count` entries (the kernel reads them past the struct when `count > 1`).
    gntdev_map_grant_ref,
    IOCTL_GNTDEV_MAP_GRANT_REF,
    GntdevMapGrantRef
);
nix::ioctl_write_ptr_bad!(
    /// Removes the map entry at `index`; its pages must be unmapped from our address space.
    ///
    /// # Safety
    /// `fd` is an open gntdev file and `data` points to a valid unmap request.
    gntdev_unmap_grant_ref,
    IOCTL_GNTDEV_UNMAP_GRANT_REF,
    GntdevUnmapGrantRef
);
nix::ioctl_write_ptr_bad!(
    /// Runs `count` copy segments, writing each segment's `status`.
    ///
    /// # Safety
    /// `fd` is an open gntdev file; `data.segments` points to `count` writable segments
    /// whose `virt` ends point to memory of at least `len` bytes that stays mapped (and,
    /// for destinations, writable) for the whole call.
    gntdev_grant_copy,
    IOCTL_GNTDEV_GRANT_COPY,
    GntdevGrantCopy
);

// ---- gntalloc --------------------------------------------------------------------------

/// `struct ioctl_gntalloc_alloc_gref` at its declared length: `gref_ids` really holds
/// `count` entries. Only its layout is used; see [`super::gntalloc`] for the buffer.
#[repr(C)]
#[derive(Debug)]
pub(super) struct GntallocAllocGref {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    pub index: u64,
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`. `pad` makes C's tail padding explicit, so no
/// byte handed to the kernel is uninitialised.
#[repr(C)]
#[derive(Debug)]
pub(super) struct GntallocDeallocGref {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// `GNTALLOC_FLAG_WRITABLE`: the peer may map the pages writable.
pub(super) const GNTALLOC_FLAG_WRITABLE: u16 = 1;

pub(super) const IOCTL_GNTALLOC_ALLOC_GREF: ioctl_num_type = ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
pub(super) const IOCTL_GNTALLOC_DEALLOC_GREF: ioctl_num_type = ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());

nix::ioctl_readwrite_bad!(
    /// Allocates `count` zeroed pages, grants them to `domid`, and returns their mmap
    /// offset in `index` and their grant references in `gref_ids`.
    ///
    /// # Safety
    /// `fd` is an open gntalloc file and `data` points to a buffer of at least
    /// `max(size_of::<GntallocAllocGref>(), 16 + 4 * count)` writable bytes.
    gntalloc_alloc_gref,
    IOCTL_GNTALLOC_ALLOC_GREF,
    GntallocAllocGref
);
nix::ioctl_write_ptr_bad!(
    /// Drops our reference to `count` pages at `index`; the grants end once neither we nor
    /// the peer map them.
    ///
    /// # Safety
    /// `fd` is an open gntalloc file and `data` points to a valid dealloc request.
    gntalloc_dealloc_gref,
    IOCTL_GNTALLOC_DEALLOC_GREF,
    GntallocDeallocGref
);

// ---- evtchn ----------------------------------------------------------------------------

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug)]
pub(super) struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug)]
pub(super) struct EvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`: both are one port.
#[repr(C)]
#[derive(Debug)]
pub(super) struct EvtchnPortArg {
    pub port: u32,
}

pub(super) const IOCTL_EVTCHN_BIND_INTERDOMAIN: ioctl_num_type = ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
pub(super) const IOCTL_EVTCHN_BIND_UNBOUND_PORT: ioctl_num_type = ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
pub(super) const IOCTL_EVTCHN_UNBIND: ioctl_num_type = ioc_none(b'E', 3, size_of::<EvtchnPortArg>());
pub(super) const IOCTL_EVTCHN_NOTIFY: ioctl_num_type = ioc_none(b'E', 4, size_of::<EvtchnPortArg>());
pub(super) const IOCTL_EVTCHN_RESET: ioctl_num_type = ioc_none(b'E', 5, 0);

nix::ioctl_write_ptr_bad!(
    /// `EVTCHNOP_bind_interdomain`; returns the new local port, bound to this file.
    ///
    /// # Safety
    /// `fd` is an open evtchn file and `data` points to a valid request.
    evtchn_bind_interdomain,
    IOCTL_EVTCHN_BIND_INTERDOMAIN,
    EvtchnBindInterdomain
);
nix::ioctl_write_ptr_bad!(
    /// `EVTCHNOP_alloc_unbound`; returns the new local port, bound to this file.
    ///
    /// # Safety
    /// `fd` is an open evtchn file and `data` points to a valid request.
    evtchn_bind_unbound_port,
    IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    EvtchnBindUnboundPort
);
nix::ioctl_write_ptr_bad!(
    /// Unbinds (and closes) a port bound to this file.
    ///
    /// # Safety
    /// `fd` is an open evtchn file and `data` points to a valid request.
    evtchn_unbind,
    IOCTL_EVTCHN_UNBIND,
    EvtchnPortArg
);
nix::ioctl_write_ptr_bad!(
    /// `EVTCHNOP_send` on a port bound to this file.
    ///
    /// # Safety
    /// `fd` is an open evtchn file and `data` points to a valid request.
    evtchn_notify,
    IOCTL_EVTCHN_NOTIFY,
    EvtchnPortArg
);
nix::ioctl_none_bad!(
    /// Empties this file's ring of pending ports and clears its overflow flag.
    ///
    /// # Safety
    /// `fd` is an open evtchn file.
    evtchn_reset,
    IOCTL_EVTCHN_RESET
);

// ---- layout checks (values from gcc on the Xen 4.17 headers) ---------------------------

const _: () = assert!(size_of::<GntdevGrantRef>() == 8);
const _: () = assert!(size_of::<GntdevMapGrantRef>() == 24);
const _: () = assert!(offset_of!(GntdevMapGrantRef, pad) == 4);
const _: () = assert!(offset_of!(GntdevMapGrantRef, index) == 8);
const _: () = assert!(offset_of!(GntdevMapGrantRef, refs) == 16);
const _: () = assert!(offset_of!(GntdevGrantRef, gref) == 4);
// `GntdevMapGrantRefs` packs the header in two words and each ref in one.
const _: () = assert!(offset_of!(GntdevMapGrantRef, refs) % 8 == 0 && size_of::<GntdevGrantRef>() == 8);
const _: () = assert!(std::mem::align_of::<GntdevMapGrantRef>() <= std::mem::align_of::<u64>());
const _: () = assert!(size_of::<GntdevUnmapGrantRef>() == 16);
const _: () = assert!(offset_of!(GntdevUnmapGrantRef, count) == 8);
const _: () = assert!(size_of::<GntdevCopyForeign>() == 8);
const _: () = assert!(offset_of!(GntdevCopyForeign, offset) == 4);
const _: () = assert!(offset_of!(GntdevCopyForeign, domid) == 6);
const _: () = assert!(size_of::<GntallocAllocGref>() == 24);
const _: () = assert!(offset_of!(GntallocAllocGref, flags) == 2);
const _: () = assert!(offset_of!(GntallocAllocGref, count) == 4);
const _: () = assert!(offset_of!(GntallocAllocGref, index) == 8);
const _: () = assert!(offset_of!(GntallocAllocGref, gref_ids) == 16);
const _: () = assert!(size_of::<GntallocDeallocGref>() == 16);
const _: () = assert!(offset_of!(GntallocDeallocGref, count) == 8);
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 8);
const _: () = assert!(offset_of!(EvtchnBindInterdomain, remote_port) == 4);
const _: () = assert!(size_of::<EvtchnBindUnboundPort>() == 4);
const _: () = assert!(size_of::<EvtchnPortArg>() == 4);

// The copy structs hold pointers: gcc's layout of them is the LP64 one (Xen's dom0 is
// x86_64 or arm64).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<GntdevCopyPtr>() == 8);
    assert!(size_of::<GntdevGrantCopySegment>() == 24);
    assert!(offset_of!(GntdevGrantCopySegment, dest) == 8);
    assert!(offset_of!(GntdevGrantCopySegment, len) == 16);
    assert!(offset_of!(GntdevGrantCopySegment, flags) == 18);
    assert!(offset_of!(GntdevGrantCopySegment, status) == 20);
    assert!(size_of::<GntdevGrantCopy>() == 16);
    assert!(offset_of!(GntdevGrantCopy, segments) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The variable-length map request: `count`, `pad`, `index` at 0, 4, 8; ref `i` at
    /// `16 + 8 * i`, its `domid` then its `gref` (as gcc lays out `struct
    /// ioctl_gntdev_map_grant_ref` followed by `count` `struct ioctl_gntdev_grant_ref`).
    #[test]
    fn map_many_request_layout() {
        let mut req = GntdevMapGrantRefs::new(7, &[0x11, 0x2233, 0x4455_6677]);
        assert_eq!(req.count(), 3);
        let bytes = req.bytes();
        assert_eq!(bytes.len(), 16 + 3 * 8);
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((u32_at(0), u32_at(4)), (3, 0), "count, pad");
        assert_eq!(u64::from_ne_bytes(bytes[8..16].try_into().unwrap()), 0, "index starts at zero");
        for (i, gref) in [0x11, 0x2233, 0x4455_6677].into_iter().enumerate() {
            assert_eq!((u32_at(16 + 8 * i), u32_at(20 + 8 * i)), (7, gref), "ref {i}");
        }
        let ptr = req.as_mut_ptr();
        assert!(ptr.is_aligned(), "the header's u64 index is aligned");
        // The kernel writes `index` at offset 8.
        req.words[1] = 0x1_0000;
        assert_eq!(req.index(), 0x1_0000);
        assert_eq!(GntdevMapGrantRefs::new(1, &[5]).bytes().len(), size_of::<GntdevMapGrantRef>());
    }

    /// The request numbers gcc computes from `/usr/include/xen/sys/*.h` (libxen-dev 4.17)
    /// on x86_64; arm64 uses the same generic `_IOC` encoding. Four of them are also
    /// recorded in `shared/notes/ecosystem.md`.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers_match_the_c_headers() {
        let expected: [(&str, ioctl_num_type, ioctl_num_type); 10] = [
            ("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF, 0x18_4700),
            ("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x10_4701),
            ("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY, 0x10_4708),
            ("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF, 0x18_4705),
            ("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF, 0x10_4706),
            ("IOCTL_EVTCHN_BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x8_4501),
            ("IOCTL_EVTCHN_BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x4_4502),
            ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND, 0x4_4503),
            ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY, 0x4_4504),
            ("IOCTL_EVTCHN_RESET", IOCTL_EVTCHN_RESET, 0x4505),
        ];
        for (name, got, want) in expected {
            assert_eq!(got, want, "{name}: {got:#x} != {want:#x}");
        }
    }
}
