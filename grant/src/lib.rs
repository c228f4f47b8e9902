//! Hypervisor interfaces a netif backend and frontend need: grant copy, grant map,
//! grant allocation (sharing pages with another domain) and event channels.
//!
//! Each interface is a trait with a simulated implementation ([`sim`]) and a real one over
//! Linux's `/dev/xen` devices ([`xen`]), both always compiled. The data path of
//! the daemon is generic over these traits, so the same code runs on both.
//!
//! Every byte of another domain's memory is reached through a [`GrantMapping`] (one page, or
//! several mapped in one call; unmapped on drop) or a [`GrantOps::copy`] batch; callers
//! never see raw pointers.

pub mod sim;
pub mod xen;

mod error;
mod mapping;
mod status;

pub use error::{EvtchnError, GrantError};
pub use mapping::{GrantMapping, SharedPages, Unmap};
pub use status::GrantStatus;

use std::os::fd::AsFd;
use vm_memory::VolatileSlice;

/// A Xen domain id (`domid_t`).
pub type DomId = u16;
/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;
/// An event-channel port (`evtchn_port_t`).
pub type EvtchnPort = u32;

/// Size of a grant (and of a ring page): Xen's `XEN_PAGE_SIZE`.
pub const PAGE_SIZE: usize = 4096;
/// `DOMID_SELF`: names the caller in grant-copy segments.
pub const DOMID_SELF: DomId = 0x7FF0;

/// Whether a mapping or a grant lets the peer write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `GNTMAP_readonly` / `GTF_readonly`.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// One end of a grant-copy segment.
#[derive(Debug)]
pub enum CopyPtr<'a> {
    /// A page granted to us by `domid`, at `offset` within it (`GNTCOPY_{source,dest}_gref`).
    Grant {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Byte offset within the granted page.
        offset: u16,
    },
    /// Memory of the calling process. Its length must be at least the segment's `len`.
    Local(VolatileSlice<'a>),
}

/// One segment of a grant-copy batch (`struct gntdev_grant_copy_segment`).
///
/// Invariant kept by implementations: after [`GrantOps::copy`] returns `Ok`, `status` holds
/// the outcome of this segment alone; a failed segment never stops the others.
#[derive(Debug)]
pub struct CopySegment<'a> {
    /// Where the bytes come from.
    pub source: CopyPtr<'a>,
    /// Where the bytes go.
    pub dest: CopyPtr<'a>,
    /// Bytes to copy; `offset + len` must stay within one page on both grant ends.
    pub len: u16,
    /// Written by the copy: `GNTST_okay` or the reason the segment failed.
    pub status: GrantStatus,
}

impl<'a> CopySegment<'a> {
    /// A segment whose status is not yet known.
    pub fn new(source: CopyPtr<'a>, dest: CopyPtr<'a>, len: u16) -> Self {
        Self { source, dest, len, status: GrantStatus::GeneralError }
    }
}

/// Access to pages other domains granted to us: the backend's view (`/dev/xen/gntdev`).
pub trait GrantOps: Send + Sync {
    /// Maps one page that `domid` granted to the caller. `Access::ReadWrite` fails with
    /// `GNTST_general_error` when the grant is read-only. The mapping is released on drop.
    fn map(&self, domid: DomId, gref: GrantRef, access: Access) -> Result<GrantMapping, GrantError>;

    /// Maps the pages `domid` granted as `grefs` (not empty; a gref may repeat) into one
    /// contiguous region, page `i` being `grefs[i]`, in one operation (one map ioctl and one
    /// `mmap` on Xen). All or nothing: if any grant is refused (not granted to the caller,
    /// read-only grant asked `ReadWrite`, bad gref or domain) nothing stays mapped and the
    /// error names the refused grant (on Xen, which reports no per-grant status for maps,
    /// the first). The whole region is unmapped on drop.
    fn map_many(&self, domid: DomId, grefs: &[GrantRef], access: Access) -> Result<GrantMapping, GrantError>;

    /// Runs a batch of copies (one hypercall on Xen). Each segment gets its own status; `Err`
    /// means the batch as a whole could not be submitted, and then no status is meaningful.
    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError>;
}

/// Sharing our own pages with another domain: the frontend's view (`/dev/xen/gntalloc`).
pub trait GrantAlloc: Send + Sync {
    /// Allocates `pages` zeroed pages of our memory, grants each to `domid` with `access`,
    /// and maps them into the caller. Dropping the result revokes the grants.
    fn share(&self, domid: DomId, pages: usize, access: Access) -> Result<SharedPages, GrantError>;
}

/// One bound event channel with its own pollable descriptor.
///
/// The descriptor becomes readable when the peer notifies; [`EventChannel::take_pending`]
/// consumes the pending event, and [`EventChannel::unmask`] re-enables delivery, as reading
/// and writing `/dev/xen/evtchn` do. Unbinds on drop.
pub trait EventChannel: AsFd + Send + Sync + std::fmt::Debug {
    /// Our local port number.
    fn port(&self) -> EvtchnPort;
    /// Signals the remote end (`EVTCHNOP_send`).
    fn notify(&self) -> Result<(), EvtchnError>;
    /// Consumes a pending event without blocking; `true` if there was one.
    fn take_pending(&self) -> Result<bool, EvtchnError>;
    /// Re-enables delivery after [`EventChannel::take_pending`] returned `true`.
    fn unmask(&self) -> Result<(), EvtchnError>;
}

/// Creating event channels (`/dev/xen/evtchn`).
pub trait EventChannels: Send + Sync {
    /// The channel type this implementation hands out.
    type Channel: EventChannel + 'static;
    /// Allocates a port that `remote` may bind to (the frontend side).
    fn alloc_unbound(&self, remote: DomId) -> Result<Self::Channel, EvtchnError>;
    /// Binds to `remote_port`, which `remote` allocated for us (the backend side).
    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<Self::Channel, EvtchnError>;
}
