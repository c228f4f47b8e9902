//! Fuzz entry points into the private TX parser, TX path and RX preparation (feature
//! `fuzzing`, off by default; used by the `fuzz/` crate only).
//!
//! Thin wrappers: each calls the real code and hands back its result in public types. The
//! TX path runs against [`FuzzGrants`], a guest whose granted pages live in this process,
//! and [`FuzzUplink`], which records what it is given.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use grant::{
    Access, CopyPtr, CopySegment, DomId, GrantError, GrantMapping, GrantOps, GrantRef, GrantStatus, PAGE_SIZE, Unmap,
};
use netif::{BackRing, Extra, RingMemory, TxRequest, TxRing};
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use super::rx_prepare;
use super::tx::{TxContext, TxPath};
use super::tx_parse::{self, Parsed};
use super::{DatapathError, FrontendFeatures, VifCounters};
use crate::frame::{Frame, Gso, Offload};
use crate::port::{PortStats, TransmitOutcome, Uplink};

/// Follow-on slots beyond which a packet is fatal (`tx_parse::FATAL_SKB_SLOTS`).
pub const FATAL_SKB_SLOTS: usize = tx_parse::FATAL_SKB_SLOTS;
/// Follow-on slots a served packet may have (`tx_parse::LEGACY_SLOTS_MAX`).
pub const LEGACY_SLOTS_MAX: usize = tx_parse::LEGACY_SLOTS_MAX;

/// What `tx_parse::parse` found at `req_cons`, in public types.
#[derive(Debug)]
pub enum TxParsed {
    /// No request.
    Empty,
    /// A whole packet (not consumed). A packet `req_prod` cuts short is a `TxProtocol`
    /// error, as in Linux.
    Packet {
        /// The first request.
        first: TxRequest,
        /// Its extra-info slots.
        extras: Vec<Extra>,
        /// The follow-on requests.
        frags: Vec<TxRequest>,
        /// Bytes in the first slot (`None`: the follow-ons claim more than the total).
        first_len: Option<u16>,
        /// Ring slots the packet occupies.
        slots: u32,
    },
}

/// Runs the TX request parser on `ring` (nothing is consumed).
///
/// # Errors
/// As the parser: a fatal protocol violation or a ring index error.
pub fn parse_tx<M: RingMemory>(ring: &BackRing<TxRing, M>) -> Result<TxParsed, DatapathError> {
    Ok(match tx_parse::parse(ring)? {
        Parsed::Empty => TxParsed::Empty,
        Parsed::Packet(p) => {
            let slots = p.slots();
            TxParsed::Packet { first: p.first, extras: p.extras, frags: p.frags, first_len: p.first_len, slots }
        }
    })
}

/// A guest's granted pages, held in this process: grant `g` is page `g` of `pages` (when
/// `g < pages.len()`); any other reference is refused as a bad grant. Maps are refused
/// when `refuse_maps` says so, per grant reference (bit `g % 64`).
#[derive(Debug)]
pub struct FuzzGrants {
    /// The page contents, one entry per grant reference.
    pub pages: Vec<[u8; PAGE_SIZE]>,
    /// Grant references (bit `g % 64`) whose maps are refused.
    pub refuse_maps: u64,
    /// Grant references (bit `g % 64`) whose copies fail.
    pub refuse_copies: u64,
}

#[derive(Debug)]
struct NoUnmap;

impl Unmap for NoUnmap {
    fn unmap(&mut self) {}
}

impl FuzzGrants {
    fn page(&self, gref: GrantRef) -> Option<&[u8; PAGE_SIZE]> {
        self.pages.get(gref as usize)
    }

    fn refused(mask: u64, gref: GrantRef) -> bool {
        mask & (1 << (gref % 64)) != 0
    }
}

impl GrantOps for FuzzGrants {
    fn map(&self, domid: DomId, gref: GrantRef, access: Access) -> Result<GrantMapping, GrantError> {
        self.map_many(domid, &[gref], access)
    }

    fn map_many(&self, domid: DomId, grefs: &[GrantRef], access: Access) -> Result<GrantMapping, GrantError> {
        let refuse = |gref, status| GrantError::Map { domid, gref, status };
        let Some(&first) = grefs.first() else { return Err(refuse(0, GrantStatus::GeneralError)) };
        let region = MmapRegion::new(grefs.len() * PAGE_SIZE).map_err(|_| refuse(first, GrantStatus::NoSpace))?;
        for (i, &gref) in grefs.iter().enumerate() {
            let page = self.page(gref).ok_or(refuse(gref, GrantStatus::BadGntref))?;
            if Self::refused(self.refuse_maps, gref) {
                return Err(refuse(gref, GrantStatus::PermissionDenied));
            }
            region
                .as_volatile_slice()
                .write_slice(page, i * PAGE_SIZE)
                .map_err(|_| refuse(gref, GrantStatus::GeneralError))?;
        }
        Ok(GrantMapping::new_many(region, domid, grefs.to_vec(), access, Box::new(NoUnmap)))
    }

    /// Copies from the guest's pages into local buffers only (the TX direction), with Xen's
    /// checks: a segment crossing its page fails with `GNTST_bad_copy_arg`.
    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
        for seg in segments {
            let len = usize::from(seg.len);
            seg.status = match (&seg.source, &seg.dest) {
                (CopyPtr::Grant { gref, offset, .. }, CopyPtr::Local(dst)) => {
                    let at = usize::from(*offset);
                    match self.page(*gref) {
                        _ if at + len > PAGE_SIZE => GrantStatus::BadCopyArg,
                        _ if Self::refused(self.refuse_copies, *gref) => GrantStatus::PermissionDenied,
                        None => GrantStatus::BadGntref,
                        // A local buffer shorter than the segment is a bug of the caller.
                        Some(page) => match dst.subslice(0, len) {
                            Ok(dst) => {
                                dst.copy_from(&page[at..at + len]);
                                GrantStatus::Okay
                            }
                            Err(_) => panic!("grant copy of {len} bytes into a {}-byte buffer", dst.len()),
                        },
                    }
                }
                _ => GrantStatus::GeneralError,
            };
        }
        Ok(())
    }
}

/// An uplink that keeps every frame it is given; `gathers` decides whether the TX path
/// may map frames for it.
#[derive(Debug)]
pub struct FuzzUplink {
    /// Frames transmitted, in order.
    pub frames: Mutex<Vec<Frame>>,
    /// Whether [`Uplink::gathers`] says yes.
    pub gathers: bool,
    /// What [`Uplink::ready_fd`] returns (never readable for the TX path's purposes).
    ready: std::fs::File,
}

impl FuzzUplink {
    /// An uplink that has received nothing yet.
    ///
    /// # Errors
    /// Opening `/dev/null` (its ready descriptor) failed.
    pub fn new(gathers: bool) -> std::io::Result<Self> {
        Ok(Self { frames: Mutex::default(), gathers, ready: std::fs::File::open("/dev/null")? })
    }
}

impl Uplink for FuzzUplink {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).push(frame);
        TransmitOutcome::Sent
    }

    fn gathers(&self) -> bool {
        self.gathers
    }

    /// Never polled by the TX path.
    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    fn pop(&self) -> Option<Frame> {
        None
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

/// One TX drain of the real TX path ([`TxPath::take`] then [`TxPath::send`]) over `ring`,
/// with frames of at least `map_min` bytes mapped (0: never) when the uplink gathers.
/// Returns whether more work may be ready.
///
/// # Errors
/// As the TX path: fatal frontend errors and ring errors.
pub fn tx_drain<M: RingMemory>(
    ring: &mut BackRing<TxRing, M>,
    grants: &FuzzGrants,
    uplink: &FuzzUplink,
    counters: &VifCounters,
    batch: usize,
    map_min: usize,
) -> Result<bool, DatapathError> {
    let ctx = TxContext { grants, domid: 1, uplink, counters, batch, map_min, journal: None };
    let mut path = TxPath::default();
    let more = path.take(ring, &ctx)?;
    path.send(ring, &ctx)?;
    // Whether the frontend must be woken or not, the check itself must not fail.
    let _ = path.final_check(ring);
    Ok(more)
}

/// One frame as RX preparation left it for the guest.
#[derive(Debug)]
pub struct RxReady {
    /// The bytes.
    pub data: Vec<u8>,
    /// `NETRXF_*` flags of its first response.
    pub flags: u16,
    /// The GSO extra sent with it.
    pub gso: Option<Gso>,
    /// RX buffers its data takes.
    pub data_slots: u32,
    /// RX requests it consumes (data slots plus the GSO extra).
    pub slots: u32,
}

/// Runs RX preparation (`rx_prepare::prepare`) on one frame for a guest with `features`.
pub fn rx_prepare(
    data: Vec<u8>,
    offload: Offload,
    features: &FrontendFeatures,
    counters: &VifCounters,
) -> Vec<RxReady> {
    let mut out = VecDeque::new();
    rx_prepare::prepare(Frame::with_offload(data, offload), features, counters, &mut out);
    out.into_iter()
        .map(|r| {
            let (data_slots, slots) = (r.data_slots(), r.slots());
            RxReady { data: r.data, flags: r.flags, gso: r.gso, data_slots, slots }
        })
        .collect()
}
