//! TX: guest → uplink, following Linux netback's policy (`netif.md` §1.6).
//!
//! One drain takes at most `tx_batch` packets off the ring, copies every accepted packet into
//! a local buffer with ONE grant-copy batch (one segment per slot, each slot's bytes at its
//! place in one contiguous frame), hands the good frames to the uplink whole (a GSO
//! super-frame stays one frame, and is segmented, or its checksum filled, only on delivery
//! to a guest that needs it), then answers every consumed slot in ring order.
//!
//! Mapped frames (`tx_map_min`, for an uplink that [gathers](Uplink::gathers)): a frame of
//! at least `tx_map_min` bytes has only its first [`TX_HEAD_LEN`] bytes (its headers)
//! copied, in the same batch; the pages holding the rest are mapped read-only, all mapped
//! frames of the drain in ONE [`GrantOps::map_many`], and the uplink gets the private head
//! plus slices of those pages ([`Uplink::transmit_gather`]). The pages are unmapped before
//! any response is written, so the guest never sees a slot answered while we can still
//! read it. If the mapping is refused, each mapped frame is mapped on its own, and a frame
//! whose pages still cannot be mapped is copied whole instead: a bad grant then fails its
//! copy and the frame is answered and counted exactly as on the copy path.

use std::ops::Range;

use grant::{Access, CopyPtr, CopySegment, DomId, GrantMapping, GrantOps, PAGE_SIZE};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED};
use netif::abi::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};
use netif::{BackRing, ExtraInfo, RingMemory, TxResponse, TxRing};
use vm_memory::{VolatileMemory, VolatileSlice};

use super::crash::{CrashPoint, reached};
use super::journal::{Side, VifJournal};
use super::tx_parse::{LEGACY_SLOTS_MAX, Parsed, TxPacket, parse};
use super::{DatapathError, VifCounters};
use crate::frame::{ETH_HLEN, Frame, Gso, GsoKind, Offload};
use crate::port::{TransmitOutcome, Uplink};

/// Bytes of a mapped frame copied into its private head, as Linux netback's
/// `XEN_NETBACK_TX_COPY_LEN`: enough for Ethernet (with a VLAN tag), IPv4 with options or
/// IPv6 with a few extension headers, and TCP with options. A frame whose headers reach
/// further is joined by the uplink before its offload is prepared.
pub(super) const TX_HEAD_LEN: usize = 128;

/// The response a consumed slot gets, planned in ring order.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A status known without copying.
    Status(u16, i16),
    /// OKAY or ERROR depending on data slot `index` (`TxPath::slots`): whether its copy (and
    /// map) succeeded. Linux answers each slot by its own copy's status, even when another
    /// slot of the packet failed.
    Slot(u16, usize),
}

impl Answer {
    /// The response the slot gets if the process dies before answering it: ERROR, or NULL
    /// for an extra-info slot (the frontend looks up no buffer for NULL).
    fn fallback(self) -> (u16, i16) {
        match self {
            Answer::Status(id, NETIF_RSP_NULL) => (id, NETIF_RSP_NULL),
            Answer::Status(id, _) | Answer::Slot(id, _) => (id, NETIF_RSP_ERROR),
        }
    }
}

/// One slot's share of a frame: `len` bytes at `offset` of `gref`, the frame's next `len`
/// bytes (the slots of a frame are contiguous, in ring order).
#[derive(Debug, Clone, Copy)]
struct SlotCopy {
    gref: u32,
    offset: u16,
    len: u16,
    /// Whether every copy segment of the slot succeeded (set by the copy).
    ok: bool,
}

/// The part of a slot beyond a mapped frame's head: `len` bytes at `offset` of `gref`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    gref: u32,
    offset: u16,
    len: u16,
}

/// Where a mapped frame's pieces are: `TxPath::pieces[pieces]`, piece `i` being page
/// `i - page_base` of `TxPath::mappings[mapping]`.
#[derive(Debug, Clone)]
struct MapPlan {
    pieces: Range<usize>,
    mapping: usize,
    page_base: usize,
}

/// A frame whose bytes are being copied in (and, mapped, its pages mapped).
#[derive(Debug)]
struct Pending {
    id: u16,
    /// This frame's slots: `TxPath::slots[first_slot..first_slot + nslots]`.
    first_slot: usize,
    nslots: usize,
    /// The frame's length.
    len: usize,
    /// Its first bytes, grant-copied: all of them, or the head of a mapped frame.
    buf: Vec<u8>,
    /// Set for a frame whose bytes beyond `buf` are mapped rather than copied.
    map: Option<MapPlan>,
    offload: Offload,
}

/// The GSO kind of a type `tx_parse` accepted (TCPv4 or TCPv6).
fn gso_kind(gso_type: u8) -> GsoKind {
    debug_assert!(gso_type == XEN_NETIF_GSO_TYPE_TCPV4 || gso_type == XEN_NETIF_GSO_TYPE_TCPV6);
    if gso_type == XEN_NETIF_GSO_TYPE_TCPV6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 }
}

/// What a drain needs besides the ring.
#[derive(Debug)]
pub(super) struct TxContext<'a, G, U> {
    pub grants: &'a G,
    pub domid: DomId,
    pub uplink: &'a U,
    pub counters: &'a VifCounters,
    pub batch: usize,
    /// Frames of at least this many bytes are mapped when the uplink gathers; 0 = never.
    pub map_min: usize,
    /// The vif's state file, kept for a hitless restart (none: not kept).
    pub journal: Option<&'a VifJournal>,
}

/// TX state kept between drains.
///
/// Invariant: after a drain, every slot consumed from the ring has a response written (not
/// necessarily pushed), so `unanswered_requests() == 0` between drains.
#[derive(Debug, Default)]
pub(super) struct TxPath {
    answers: Vec<Answer>,
    frames: Vec<Pending>,
    /// The data slots of every planned frame, in order.
    slots: Vec<SlotCopy>,
    /// The mapped parts of the slots of mapped frames, in order.
    pieces: Vec<Piece>,
    /// The mappings of this drain's pieces; dropped (unmapped) before the responses.
    mappings: Vec<GrantMapping>,
    /// Good frames of the batch on their way to the uplink (kept to reuse its allocation).
    outgoing: Vec<Frame>,
}

impl TxPath {
    /// The first half of a drain: consumes up to `ctx.batch` packets and copies (or maps)
    /// them. If no page of the drain is mapped, every consumed slot is answered here, so
    /// the caller may push the responses before [`TxPath::send`] hands the frames to the
    /// uplink (whose `writev` into a TAP runs the host's whole network stack): the guest
    /// gets its buffers back a stack traversal earlier, as Linux netback answers copied
    /// slots right after the copy. Returns true if more work may be ready right away.
    ///
    /// # Errors
    /// Fatal frontend errors (see [`parse`]) and a copy batch that could not be submitted.
    pub fn take<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        ctx: &TxContext<'_, G, U>,
    ) -> Result<bool, DatapathError> {
        self.answers.clear();
        self.frames.clear();
        self.slots.clear();
        self.pieces.clear();
        self.mappings.clear();
        let map_min = (ctx.map_min > 0 && ctx.uplink.gathers()).then_some(ctx.map_min);
        let mut packets = 0;
        let mut more = false;
        while packets < ctx.batch {
            match parse(ring)? {
                Parsed::Empty => break,
                Parsed::Packet(packet) => {
                    ring.skip_requests(packet.slots()).map_err(|source| DatapathError::Ring { ring: "TX", source })?;
                    ctx.counters.record_slots(packet.slots());
                    packets += 1;
                    self.plan(packet, ctx.counters, map_min);
                }
            }
        }
        if packets == ctx.batch {
            more = true;
        }
        if packets > 0 {
            if let Some(journal) = ctx.journal {
                // One answer per consumed slot, in ring order, ending at req_cons.
                let first = ring.req_cons().wrapping_sub(self.answers.len() as u32);
                for (i, answer) in self.answers.iter().enumerate() {
                    let (id, status) = answer.fallback();
                    journal.record(Side::Tx, first.wrapping_add(i as u32), id, status);
                }
                journal.consumed_to(Side::Tx, ring.req_cons());
                reached(CrashPoint::TxConsumed);
            }
            self.map(ctx);
            self.copy(ctx)?;
            self.account(ctx);
            if self.mappings.is_empty() {
                // Every frame is in our own buffers now.
                self.answer(ring, ctx.journal)?;
            }
        }
        Ok(more)
    }

    /// The second half of a drain: the frames [`TxPath::take`] consumed go to the uplink,
    /// then their pages are unmapped and the slots not answered yet are answered.
    ///
    /// # Errors
    /// A full response ring (the frontend broke the protocol).
    pub fn send<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        ctx: &TxContext<'_, G, U>,
    ) -> Result<(), DatapathError> {
        if self.frames.is_empty() && self.answers.is_empty() {
            return Ok(());
        }
        self.transmit(ctx);
        // Unmaps every page of the drain before any slot is answered.
        self.mappings.clear();
        self.answer(ring, ctx.journal)
    }

    /// Before sleeping: true if TX work is ready; otherwise the TX event is armed so the
    /// frontend's next request notifies us.
    pub fn final_check<M: RingMemory>(&self, ring: &mut BackRing<TxRing, M>) -> bool {
        ring.final_check_for_requests()
    }

    /// Plans the answers of one consumed packet, and its copy (or map, for a frame of at
    /// least `map_min` bytes) if it is acceptable.
    fn plan(&mut self, p: TxPacket, counters: &VifCounters, map_min: Option<usize>) {
        let gso = p.extras.iter().rev().find_map(|e| match e.info {
            ExtraInfo::Gso { size, gso_type, .. } => Some(Gso { kind: gso_kind(gso_type), size }),
            _ => None,
        });
        let reason = if p.extras.iter().any(|e| !matches!(e.info, ExtraInfo::Gso { .. })) {
            Some("extra info other than GSO (no multicast control or hash negotiated)")
        } else if p.frags.len() > LEGACY_SLOTS_MAX {
            Some("more_data chain of 20 or 21 slots")
        } else if p.first_len.is_none() {
            Some("follow-on slots larger than the packet")
        } else if p.first_len.is_some_and(|len| usize::from(len) < ETH_HLEN) {
            // Linux checks the first slot's own bytes (`txreq.size` after
            // `xenvif_count_requests` took the follow-on sizes off): the Ethernet header
            // must be in the first slot.
            Some("first slot shorter than an Ethernet header")
        } else {
            None
        };
        let first_len = match (reason, p.first_len) {
            (None, Some(len)) => len,
            _ => {
                tracing::debug!(id = p.first.id, size = p.first.size, slots = p.slots(), reason, "TX packet dropped");
                VifCounters::add(&counters.tx_dropped_bad_request, 1);
                // Linux xenvif_tx_err: ERROR for the first slot, NULL for its extras, ERROR
                // for every follow-on slot.
                self.answers.push(Answer::Status(p.first.id, NETIF_RSP_ERROR));
                let extras = p.extras.iter().map(|_| Answer::Status(p.first.id, NETIF_RSP_NULL));
                let frags = p.frags.iter().map(|f| Answer::Status(f.id, NETIF_RSP_ERROR));
                self.answers.extend(extras.chain(frags));
                return;
            }
        };
        let flags = p.first.flags;
        let offload = Offload {
            // A GSO frame's checksum is partial whatever the frontend said (Linux forces
            // CHECKSUM_PARTIAL and fixes the checksum up).
            csum_blank: flags & NETTXF_CSUM_BLANK != 0 || gso.is_some(),
            data_validated: flags & NETTXF_DATA_VALIDATED != 0,
            gso,
        };
        let first = SlotCopy { gref: p.first.gref, offset: p.first.offset, len: first_len, ok: true };
        let rest = p.frags.iter().map(|f| SlotCopy { gref: f.gref, offset: f.offset, len: f.size, ok: true });
        let first_slot = self.slots.len();
        self.slots.extend(std::iter::once(first).chain(rest));
        self.answers.push(Answer::Slot(p.first.id, first_slot));
        self.answers.extend(p.extras.iter().map(|_| Answer::Status(p.first.id, NETIF_RSP_NULL)));
        self.answers.extend(p.frags.iter().enumerate().map(|(i, f)| Answer::Slot(f.id, first_slot + 1 + i)));
        let nslots = 1 + p.frags.len();
        let len = usize::from(p.first.size);
        let map = match map_min {
            Some(min) if len >= min && len > TX_HEAD_LEN => Some(self.plan_pieces(first_slot..first_slot + nslots)),
            _ => None,
        };
        let copied = if map.is_some() { TX_HEAD_LEN } else { len };
        let buf = vec![0; copied];
        self.frames.push(Pending { id: p.first.id, first_slot, nslots, len, buf, map, offload });
    }

    /// The pieces of `slots` beyond the first [`TX_HEAD_LEN`] bytes, appended to `pieces`.
    fn plan_pieces(&mut self, slots: Range<usize>) -> MapPlan {
        let start = self.pieces.len();
        let mut at = 0;
        for slot in &self.slots[slots] {
            let (from, to) = (at, at + usize::from(slot.len));
            at = to;
            // An empty slot maps nothing (as it copies nothing, see `copy`).
            if to <= TX_HEAD_LEN || slot.len == 0 {
                continue;
            }
            // Both below 4096: parse checked `offset + len` against the page.
            let skip = TX_HEAD_LEN.saturating_sub(from) as u16;
            self.pieces.push(Piece { gref: slot.gref, offset: slot.offset + skip, len: slot.len - skip });
        }
        MapPlan { pieces: start..self.pieces.len(), mapping: 0, page_base: 0 }
    }

    /// Maps the pages of every mapped frame: all in one call; after a refusal each frame on
    /// its own, and a frame that still fails is turned into a copied one.
    fn map<G: GrantOps, U: Uplink>(&mut self, ctx: &TxContext<'_, G, U>) {
        // A mapped frame is longer than its head, so it has at least one piece.
        if self.pieces.is_empty() {
            return;
        }
        let grefs: Vec<u32> = self.pieces.iter().map(|p| p.gref).collect();
        let mapped = self.frames.iter().filter(|f| f.map.is_some()).count();
        VifCounters::add(&ctx.counters.map_calls, 1);
        match ctx.grants.map_many(ctx.domid, &grefs, Access::ReadOnly) {
            Ok(mapping) => {
                VifCounters::add(&ctx.counters.map_pages, grefs.len() as u64);
                self.mappings.push(mapping);
                return;
            }
            Err(error) => tracing::debug!(%error, frames = mapped, pages = grefs.len(), "TX map refused"),
        }
        for frame in &mut self.frames {
            let Some(plan) = frame.map.as_mut() else { continue };
            // A lone frame's own map is the call that just failed.
            let own = (mapped > 1).then(|| {
                VifCounters::add(&ctx.counters.map_calls, 1);
                ctx.grants.map_many(ctx.domid, &grefs[plan.pieces.clone()], Access::ReadOnly)
            });
            match own {
                Some(Ok(mapping)) => {
                    VifCounters::add(&ctx.counters.map_pages, plan.pieces.len() as u64);
                    plan.mapping = self.mappings.len();
                    plan.page_base = plan.pieces.start;
                    self.mappings.push(mapping);
                }
                Some(Err(_)) | None => {
                    tracing::debug!(id = frame.id, "TX frame copied: its pages cannot be mapped");
                    VifCounters::add(&ctx.counters.tx_map_fallbacks, 1);
                    frame.map = None;
                    frame.buf.resize(frame.len, 0);
                }
            }
        }
    }

    /// One grant-copy batch for the planned frames (each frame's `buf`: the whole frame, or
    /// a mapped frame's head); marks the slots whose copy failed.
    fn copy<G: GrantOps, U: Uplink>(&mut self, ctx: &TxContext<'_, G, U>) -> Result<(), DatapathError> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let mut segs: Vec<CopySegment<'_>> = Vec::with_capacity(self.slots.len());
        let mut seg_slot = Vec::with_capacity(self.slots.len());
        for frame in &mut self.frames {
            let mut rest = &mut frame.buf[..];
            let mapped = frame.map.is_some();
            for (i, slot) in self.slots[frame.first_slot..frame.first_slot + frame.nslots].iter().enumerate() {
                if mapped && rest.is_empty() && i > 0 {
                    // The head is full: the other slots are mapped.
                    break;
                }
                if slot.len == 0 {
                    // Linux answers an empty slot OKAY without touching its grant
                    // ("xen-netback: don't produce zero-size SKB frags"): a copy of nothing
                    // must not fail the frame because the slot names a bad grant.
                    continue;
                }
                let n = usize::from(slot.len).min(rest.len());
                let (dst, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                let src = CopyPtr::Grant { domid: ctx.domid, gref: slot.gref, offset: slot.offset };
                // n <= slot.len, a u16.
                segs.push(CopySegment::new(src, CopyPtr::Local(VolatileSlice::from(dst)), n as u16));
                seg_slot.push(frame.first_slot + i);
            }
        }
        ctx.grants.copy(&mut segs).map_err(DatapathError::GrantCopy)?;
        VifCounters::add(&ctx.counters.copy_batches, 1);
        VifCounters::add(&ctx.counters.copy_segments, segs.len() as u64);
        for (seg, &slot) in segs.iter().zip(&seg_slot) {
            if !seg.status.is_ok() {
                self.slots[slot].ok = false;
            }
        }
        tracing::debug!(slots = self.answers.len(), frames = self.frames.len(), "TX batch copied");
        Ok(())
    }

    /// The good frames to the uplink, in ring order: copied ones in batches, mapped ones one
    /// by one as a head and slices of their mapped pages.
    fn transmit<G: GrantOps, U: Uplink>(&mut self, ctx: &TxContext<'_, G, U>) {
        let mut refused = 0;
        for pending in self.frames.drain(..) {
            let head = Frame::with_offload(pending.buf, pending.offload);
            let Some(plan) = &pending.map else {
                self.outgoing.push(head);
                continue;
            };
            // `account` kept only frames whose pieces are inside their mappings.
            let Some(slices) = piece_slices(&self.mappings, &self.pieces, plan) else { continue };
            // Frames go out in ring order: the copied ones before this one first.
            refused += ctx.uplink.transmit_batch(&mut self.outgoing);
            if let TransmitOutcome::Dropped(_) = ctx.uplink.transmit_gather(head, &slices) {
                refused += 1;
            }
        }
        refused += ctx.uplink.transmit_batch(&mut self.outgoing);
        if refused > 0 {
            tracing::debug!(refused, "uplink dropped TX frames");
            VifCounters::add(&ctx.counters.tx_dropped_uplink, refused as u64);
        }
    }

    /// After the copy: drops (and counts) the frames a slot of which could not be copied or
    /// mapped, and counts the others as sent by the guest, before any of them is answered.
    fn account<G: GrantOps, U: Uplink>(&mut self, ctx: &TxContext<'_, G, U>) {
        let c = ctx.counters;
        let (slots, mappings, pieces) = (&self.slots, &self.mappings, &self.pieces);
        self.frames.retain(|pending| {
            // Every slot must have been copied (and mapped).
            if !slots[pending.first_slot..pending.first_slot + pending.nslots].iter().all(|s| s.ok) {
                tracing::debug!(id = pending.id, slots = pending.nslots, "TX grant copy failed");
                VifCounters::add(&c.tx_dropped_copy_failed, 1);
                return false;
            }
            if let Some(plan) = &pending.map {
                if piece_slices(mappings, pieces, plan).is_none() {
                    // Cannot happen: parse checked every slot against its page.
                    tracing::error!(id = pending.id, "TX piece outside its mapped page");
                    VifCounters::add(&c.tx_dropped_copy_failed, 1);
                    return false;
                }
                VifCounters::add(&c.tx_mapped_frames, 1);
                VifCounters::add(&c.tx_mapped_bytes, (pending.len - TX_HEAD_LEN) as u64);
            }
            VifCounters::add(&c.tx_packets, 1);
            VifCounters::add(&c.tx_bytes, pending.len as u64);
            if pending.nslots > 1 {
                VifCounters::add(&c.tx_sg_frames, 1);
            }
            if pending.offload.gso.is_some() {
                VifCounters::add(&c.tx_gso_frames, 1);
            }
            true
        });
    }

    /// One response per consumed slot, in ring order; then the state file learns they are
    /// written (before anything pushes them).
    fn answer<M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        journal: Option<&VifJournal>,
    ) -> Result<(), DatapathError> {
        if self.answers.is_empty() {
            return Ok(());
        }
        for answer in &self.answers {
            let (id, status) = match *answer {
                Answer::Status(id, status) => (id, status),
                Answer::Slot(id, i) if self.slots[i].ok => (id, NETIF_RSP_OKAY),
                Answer::Slot(id, _) => (id, NETIF_RSP_ERROR),
            };
            ring.push_response(TxResponse { id, status })
                .map_err(|source| DatapathError::Ring { ring: "TX", source })?;
        }
        self.answers.clear();
        if let Some(journal) = journal {
            reached(CrashPoint::TxWritten);
            journal.answered_to(Side::Tx, ring.rsp_prod_pvt());
            reached(CrashPoint::TxRecorded);
        }
        Ok(())
    }
}

/// The mapped pieces of a frame as slices of their pages; `None` if one is not inside its
/// mapping.
fn piece_slices<'m>(mappings: &'m [GrantMapping], pieces: &[Piece], plan: &MapPlan) -> Option<Vec<VolatileSlice<'m>>> {
    let mapping = mappings.get(plan.mapping)?;
    plan.pieces
        .clone()
        .map(|i| {
            let (piece, page) = (pieces[i], i - plan.page_base);
            (page < mapping.pages()).then_some(())?;
            mapping.get_slice(page * PAGE_SIZE + usize::from(piece.offset), usize::from(piece.len)).ok()
        })
        .collect()
}
