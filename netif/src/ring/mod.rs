//! The generic shared ring of `xen/include/public/io/ring.h`.
//!
//! One 4 KiB page holds a 64-byte header and `SIZE` slots, each the size of
//! the request/response union:
//!
//! ```text
//! 0  req_prod   4  req_event   8  rsp_prod   12 rsp_event   16 pvt[4]   20 pad[44]
//! 64 slot[0] slot[1] ... slot[SIZE-1]
//! ```
//!
//! Indices are free-running `u32` (`RING_IDX`) and wrap at 2^32; every
//! comparison is a wrapping difference, and slot = `idx & (SIZE - 1)`.
//! The frontend produces requests and consumes responses ([`FrontRing`]); the
//! backend consumes requests and produces responses ([`BackRing`]).
//!
//! Memory ordering (ring.h → Rust): the peer's producer index is loaded with
//! `Acquire` before reading slots; our producer index is stored with `Release`
//! after writing slots (`wmb`); `mb()` is `fence(SeqCst)` between publishing
//! (or setting an event index) and re-reading the peer's index.
//!
//! Both ends treat the peer as hostile: shared indices are sanity-checked
//! before use, every slot is copied exactly once into a local array before it
//! is decoded (no double fetch, XSA-155), and nothing panics on ring contents.

mod back;
mod front;
mod shared;

pub use back::BackRing;
pub use front::FrontRing;

use core::mem::offset_of;
use core::ops::Deref;

use vm_memory::{MmapRegion, VolatileMemory, VolatileMemoryError, VolatileSlice};

use crate::abi::{CtrlRequest, CtrlResponse, RingEntry, RxRequest, RxResponse, TxRequest, TxResponse, XEN_PAGE_SIZE};

/// Byte offset of `req_prod` in the shared ring header.
pub const REQ_PROD_OFFSET: usize = offset_of!(SringHeader, req_prod);
/// Byte offset of `req_event` in the shared ring header.
pub const REQ_EVENT_OFFSET: usize = offset_of!(SringHeader, req_event);
/// Byte offset of `rsp_prod` in the shared ring header.
pub const RSP_PROD_OFFSET: usize = offset_of!(SringHeader, rsp_prod);
/// Byte offset of `rsp_event` in the shared ring header.
pub const RSP_EVENT_OFFSET: usize = offset_of!(SringHeader, rsp_event);
/// Byte offset of the `pvt` union (`netif.smartpoll_active`) in the header.
pub const PVT_OFFSET: usize = offset_of!(SringHeader, pvt);
/// Size of the shared ring header; slot 0 starts here
/// (C: `offsetof(struct *_sring, ring)`).
pub const SRING_HEADER_SIZE: usize = core::mem::size_of::<SringHeader>();

/// The header of a shared ring page (C: `struct *_sring` without `ring[]`).
///
/// Documentation of the layout only: the ring never reads this struct in
/// place, it accesses each field atomically at its offset.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SringHeader {
    /// Requests produced by the frontend.
    pub req_prod: u32,
    /// The backend wants a notification when `req_prod` passes this index.
    pub req_event: u32,
    /// Responses produced by the backend.
    pub rsp_prod: u32,
    /// The frontend wants a notification when `rsp_prod` passes this index.
    pub rsp_event: u32,
    /// Private union (`pvt.netif.smartpoll_active`, `pvt_pad[4]`).
    pub pvt: [u8; 4],
    /// Padding to 64 bytes (C: `__pad[44]`).
    pub pad: [u8; 44],
}

const _: () = assert!(SRING_HEADER_SIZE == 64);
const _: () = assert!(REQ_PROD_OFFSET == 0);
const _: () = assert!(REQ_EVENT_OFFSET == 4);
const _: () = assert!(RSP_PROD_OFFSET == 8);
const _: () = assert!(RSP_EVENT_OFFSET == 12);
const _: () = assert!(PVT_OFFSET == 16);
const _: () = assert!(offset_of!(SringHeader, pad) == 20);

/// Errors of ring operations. Index values are included so that a hostile
/// peer can be diagnosed from the log.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The ring memory is shorter than a Xen page.
    #[error("ring page is {len} bytes, need {XEN_PAGE_SIZE}")]
    PageTooSmall {
        /// Length of the slice returned by [`RingMemory::ring_page`].
        len: usize,
    },
    /// At attach, the shared `req_prod` is more than a ring ahead of the
    /// response producer: the frontend is ill-behaved (Linux rejects the ring).
    #[error("attach ring: req_prod {req_prod} is more than a ring ahead of rsp_prod {rsp_prod}")]
    AttachOverflow {
        /// Shared `req_prod`.
        req_prod: u32,
        /// Shared `rsp_prod` (or the saved `rsp_prod_pvt` for `attach_at`).
        rsp_prod: u32,
    },
    /// `attach_at` was given private indices inconsistent with each other or
    /// with the shared `rsp_prod`.
    #[error("attach ring at req_cons {req_cons}, rsp_prod_pvt {rsp_prod_pvt}: inconsistent with rsp_prod {rsp_prod}")]
    AttachIndices {
        /// Requested `req_cons`.
        req_cons: u32,
        /// Requested `rsp_prod_pvt`.
        rsp_prod_pvt: u32,
        /// Shared `rsp_prod`.
        rsp_prod: u32,
    },
    /// The frontend's `req_prod` claims more requests than can fit in the
    /// ring, or moved backwards (C: `RING_REQUEST_PROD_OVERFLOW`; Linux:
    /// "Impossible number of requests"). Treat the frontend as hostile.
    #[error("consume request: req_prod {req_prod} impossible with req_cons {req_cons}, rsp_prod_pvt {rsp_prod_pvt}")]
    RequestOverflow {
        /// Shared `req_prod` as read.
        req_prod: u32,
        /// Private `req_cons`.
        req_cons: u32,
        /// Private `rsp_prod_pvt`.
        rsp_prod_pvt: u32,
    },
    /// The backend's `rsp_prod` claims responses to requests never published
    /// (C: `RING_RESPONSE_PROD_OVERFLOW`). Treat the backend as hostile.
    #[error("consume response: rsp_prod {rsp_prod} impossible with rsp_cons {rsp_cons}, req_prod {req_prod}")]
    ResponseOverflow {
        /// Shared `rsp_prod` as read.
        rsp_prod: u32,
        /// Private `rsp_cons`.
        rsp_cons: u32,
        /// The `req_prod` this frontend published.
        req_prod: u32,
    },
    /// Push request: no free slot (all `SIZE` requests await responses).
    #[error("push request: ring full")]
    Full,
    /// Push response: every consumed request already has a response; one
    /// response per consumed request is the ring's invariant.
    #[error("push response: no consumed request to answer (rsp_prod_pvt {rsp_prod_pvt} == req_cons {req_cons})")]
    UnmatchedResponse {
        /// Private `rsp_prod_pvt`.
        rsp_prod_pvt: u32,
        /// Private `req_cons`.
        req_cons: u32,
    },
    /// Skip requests: fewer than `n` requests are available.
    #[error("skip {n} requests: only {available} available")]
    SkipRequests {
        /// Requested count.
        n: u32,
        /// Requests available.
        available: u32,
    },
    /// Access to the ring page failed (the [`RingMemory`] broke its contract).
    #[error("ring memory access")]
    Memory(#[source] VolatileMemoryError),
}

/// Memory holding a shared ring page.
///
/// Contract: `ring_page` returns the same memory, at least
/// [`XEN_PAGE_SIZE`] bytes long and 4-byte aligned, on every call. Rings check
/// length and alignment once at construction; after that, accesses at fixed
/// in-page offsets cannot fail.
pub trait RingMemory: Send {
    /// The ring page (the first 4096 bytes are used).
    fn ring_page(&self) -> VolatileSlice<'_>;
}

/// Any owner of (or reference to) an [`MmapRegion`]: `Box<MmapRegion>`,
/// `Arc<MmapRegion>`, `&MmapRegion`, and the `grant` crate's mappings.
impl<T> RingMemory for T
where
    T: Deref<Target = MmapRegion> + Send,
{
    fn ring_page(&self) -> VolatileSlice<'_> {
        let all = self.as_volatile_slice();
        let len = all.len().min(XEN_PAGE_SIZE);
        // A subslice (0, len <= all.len()) of a valid slice is always valid.
        all.subslice(0, len).unwrap_or(all)
    }
}

/// A kind of shared ring: its message types and geometry.
pub trait RingKind {
    /// Requests (frontend → backend).
    type Req: RingEntry;
    /// Responses (backend → frontend).
    type Rsp: RingEntry;
    /// Size of one slot: `sizeof(union { Req; Rsp; })`.
    const ENTRY_SIZE: usize;
    /// Number of slots (C: `__CONST_RING_SIZE(name, XEN_PAGE_SIZE)`): as many
    /// entries as fit after the header, rounded down to a power of two.
    const SIZE: u32 = const_ring_size(Self::ENTRY_SIZE);
}

/// `__CONST_RING_SIZE` for a 4 KiB page: `(4096 - 64) / entry_size` rounded
/// down to a power of two (0 if nothing fits).
pub const fn const_ring_size(entry_size: usize) -> u32 {
    if entry_size == 0 || entry_size > XEN_PAGE_SIZE - SRING_HEADER_SIZE {
        return 0;
    }
    let n = (XEN_PAGE_SIZE - SRING_HEADER_SIZE) / entry_size;
    // Round down to a power of two; n >= 1 here and n < 2^32.
    1u32 << (usize::BITS - 1 - n.leading_zeros())
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The netif TX ring (C: `netif_tx_sring`, `XEN_NETIF_TX_RING_SIZE` = 256).
#[derive(Debug, Clone, Copy)]
pub enum TxRing {}

impl RingKind for TxRing {
    type Req = TxRequest;
    type Rsp = TxResponse;
    const ENTRY_SIZE: usize = max(TxRequest::SIZE, TxResponse::SIZE);
}

/// The netif RX ring (C: `netif_rx_sring`, `XEN_NETIF_RX_RING_SIZE` = 256).
///
/// The backend must answer each RX request in **the same slot** it was read
/// from (Linux netfront ignores the response id). [`BackRing`] pushes
/// responses in order at `rsp_prod_pvt` and refuses a response without a
/// consumed request, so one response (or extra-info overlay) per consumed
/// request, in consumption order, keeps that invariant automatically.
#[derive(Debug, Clone, Copy)]
pub enum RxRing {}

impl RingKind for RxRing {
    type Req = RxRequest;
    type Rsp = RxResponse;
    const ENTRY_SIZE: usize = max(RxRequest::SIZE, RxResponse::SIZE);
}

/// The netif control ring (C: `xen_netif_ctrl_sring`, 128 slots).
#[derive(Debug, Clone, Copy)]
pub enum CtrlRing {}

impl RingKind for CtrlRing {
    type Req = CtrlRequest;
    type Rsp = CtrlResponse;
    const ENTRY_SIZE: usize = max(CtrlRequest::SIZE, CtrlResponse::SIZE);
}

const _: () = assert!(TxRing::ENTRY_SIZE == 12 && TxRing::SIZE == 256);
const _: () = assert!(RxRing::ENTRY_SIZE == 8 && RxRing::SIZE == 256);
const _: () = assert!(CtrlRing::ENTRY_SIZE == 16 && CtrlRing::SIZE == 128);
const _: () = assert!(SRING_HEADER_SIZE + TxRing::SIZE as usize * TxRing::ENTRY_SIZE <= XEN_PAGE_SIZE);
const _: () = assert!(SRING_HEADER_SIZE + RxRing::SIZE as usize * RxRing::ENTRY_SIZE <= XEN_PAGE_SIZE);
const _: () = assert!(SRING_HEADER_SIZE + CtrlRing::SIZE as usize * CtrlRing::ENTRY_SIZE <= XEN_PAGE_SIZE);

#[cfg(test)]
mod tests;
