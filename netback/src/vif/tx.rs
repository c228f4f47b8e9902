//! TX: guest → uplink, following Linux netback's policy (`netif.md` §1.6).
//!
//! One drain takes at most `tx_batch` packets off the ring, copies every accepted packet into
//! a local buffer with ONE grant-copy batch (one segment per slot, each slot's bytes at its
//! place in one contiguous frame), answers every consumed slot in ring order, and hands the
//! good frames to the uplink whole: a GSO super-frame stays one frame, and is segmented (or
//! its checksum filled) only on delivery to a guest that needs it.

use grant::{CopyPtr, CopySegment, DomId, GrantOps};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED};
use netif::abi::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};
use netif::{BackRing, ExtraInfo, RingMemory, TxResponse, TxRing};
use vm_memory::VolatileSlice;

use super::tx_parse::{LEGACY_SLOTS_MAX, Parsed, TxPacket, parse};
use super::{DatapathError, VifCounters};
use crate::frame::{ETH_HLEN, Frame, Gso, GsoKind, Offload};
use crate::port::Uplink;

/// The response a consumed slot gets, planned in ring order.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A status known without copying.
    Status(u16, i16),
    /// OKAY or ERROR depending on copy segment `index` of the batch (Linux answers each
    /// slot by its own copy's status, even when another slot of the packet failed).
    Copy(u16, usize),
}

/// One slot's share of a frame: `len` bytes at `offset` of `gref`, copied to the frame's
/// next `len` bytes (the slots of a frame are contiguous, in ring order).
#[derive(Debug, Clone, Copy)]
struct SlotCopy {
    gref: u32,
    offset: u16,
    len: u16,
}

/// A frame whose bytes are being copied in.
#[derive(Debug)]
struct Pending {
    id: u16,
    /// This frame's slots: `TxPath::slots[first_slot..first_slot + nslots]`.
    first_slot: usize,
    nslots: usize,
    buf: Vec<u8>,
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
}

/// TX state kept between drains.
///
/// Invariant: after a drain, every slot consumed from the ring has a response written (not
/// necessarily pushed), so `unanswered_requests() == 0` between drains.
#[derive(Debug, Default)]
pub(super) struct TxPath {
    /// Non-zero while the packet at `req_cons` is incomplete: the unconsumed requests present
    /// when we looked. The worker sleeps until the frontend produces more than that.
    stalled: u32,
    answers: Vec<Answer>,
    frames: Vec<Pending>,
    /// The data slots of every planned frame, in order; its length is the number of copy
    /// segments planned for `frames` (one per data slot).
    slots: Vec<SlotCopy>,
    /// Good frames of the batch on their way to the uplink (kept to reuse its allocation).
    outgoing: Vec<Frame>,
}

impl TxPath {
    /// Serves up to `ctx.batch` packets. Returns true if more work may be ready right away.
    ///
    /// # Errors
    /// Fatal frontend errors (see [`parse`]) and a copy batch that could not be submitted.
    pub fn drain<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        ctx: &TxContext<'_, G, U>,
    ) -> Result<bool, DatapathError> {
        self.stalled = 0;
        self.answers.clear();
        self.frames.clear();
        self.slots.clear();
        let mut packets = 0;
        let mut more = false;
        while packets < ctx.batch {
            match parse(ring)? {
                Parsed::Empty => break,
                Parsed::Incomplete { have } => {
                    tracing::debug!(have, "TX packet incomplete, waiting for the frontend");
                    self.stalled = have;
                    break;
                }
                Parsed::Blocked => {
                    more = true;
                    break;
                }
                Parsed::Packet(packet) => {
                    ring.skip_requests(packet.slots()).map_err(|source| DatapathError::Ring { ring: "TX", source })?;
                    ctx.counters.record_slots(packet.slots());
                    packets += 1;
                    self.plan(packet, ctx.counters);
                }
            }
        }
        if packets == ctx.batch {
            more = true;
        }
        if packets > 0 {
            self.copy_and_answer(ring, ctx)?;
        }
        Ok(more)
    }

    /// Before sleeping: true if TX work is ready; otherwise the TX event is armed so the
    /// frontend's next request notifies us.
    pub fn final_check<M: RingMemory>(&self, ring: &mut BackRing<TxRing, M>) -> bool {
        if self.stalled == 0 {
            return ring.final_check_for_requests();
        }
        // Waiting for the rest of a packet: wake when req_prod passes what we saw.
        if ring.unconsumed_requests() > self.stalled {
            return true;
        }
        ring.set_req_event(ring.req_cons().wrapping_add(self.stalled + 1));
        ring.unconsumed_requests() > self.stalled
    }

    /// Plans the answers of one consumed packet, and its copy if it is acceptable.
    fn plan(&mut self, p: TxPacket, counters: &VifCounters) {
        let gso = p.extras.iter().rev().find_map(|e| match e.info {
            ExtraInfo::Gso { size, gso_type, .. } => Some(Gso { kind: gso_kind(gso_type), size }),
            _ => None,
        });
        let chain = 1 + p.frags.len();
        let reason = if p.extras.iter().any(|e| !matches!(e.info, ExtraInfo::Gso { .. })) {
            Some("extra info other than GSO (no multicast control or hash negotiated)")
        } else if chain >= LEGACY_SLOTS_MAX {
            Some("more_data chain of 18 or 19 slots")
        } else if p.first_len.is_none() {
            Some("follow-on slots larger than the packet")
        } else if usize::from(p.first.size) < ETH_HLEN {
            Some("shorter than an Ethernet header")
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
        let first = SlotCopy { gref: p.first.gref, offset: p.first.offset, len: first_len };
        let rest = p.frags.iter().map(|f| SlotCopy { gref: f.gref, offset: f.offset, len: f.size });
        let first_slot = self.slots.len();
        self.slots.extend(std::iter::once(first).chain(rest));
        self.answers.push(Answer::Copy(p.first.id, first_slot));
        self.answers.extend(p.extras.iter().map(|_| Answer::Status(p.first.id, NETIF_RSP_NULL)));
        self.answers.extend(p.frags.iter().enumerate().map(|(i, f)| Answer::Copy(f.id, first_slot + 1 + i)));
        let buf = vec![0; usize::from(p.first.size)];
        self.frames.push(Pending { id: p.first.id, first_slot, nslots: 1 + p.frags.len(), buf, offload });
    }

    /// One grant-copy batch for the planned frames, then one response per consumed slot in
    /// ring order, then the good frames to the uplink in order.
    fn copy_and_answer<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        ctx: &TxContext<'_, G, U>,
    ) -> Result<(), DatapathError> {
        let mut copied = Vec::with_capacity(self.slots.len());
        if !self.frames.is_empty() {
            let mut segs: Vec<CopySegment<'_>> = Vec::with_capacity(self.slots.len());
            for frame in &mut self.frames {
                let mut rest = &mut frame.buf[..];
                for slot in &self.slots[frame.first_slot..frame.first_slot + frame.nslots] {
                    let (dst, tail) = rest.split_at_mut(usize::from(slot.len));
                    rest = tail;
                    let src = CopyPtr::Grant { domid: ctx.domid, gref: slot.gref, offset: slot.offset };
                    segs.push(CopySegment::new(src, CopyPtr::Local(VolatileSlice::from(dst)), slot.len));
                }
            }
            ctx.grants.copy(&mut segs).map_err(DatapathError::GrantCopy)?;
            VifCounters::add(&ctx.counters.copy_batches, 1);
            VifCounters::add(&ctx.counters.copy_segments, segs.len() as u64);
            copied.extend(segs.iter().map(|s| s.status.is_ok()));
        }
        tracing::debug!(slots = self.answers.len(), frames = self.frames.len(), "TX batch copied");

        for answer in &self.answers {
            let (id, status) = match *answer {
                Answer::Status(id, status) => (id, status),
                Answer::Copy(id, i) if copied[i] => (id, NETIF_RSP_OKAY),
                Answer::Copy(id, _) => (id, NETIF_RSP_ERROR),
            };
            ring.push_response(TxResponse { id, status })
                .map_err(|source| DatapathError::Ring { ring: "TX", source })?;
        }

        let mut segments = copied.into_iter();
        for pending in self.frames.drain(..) {
            // Every slot's segment must have succeeded (consume them all either way).
            let ok = segments.by_ref().take(pending.nslots).filter(|ok| !ok).count() == 0;
            if !ok {
                tracing::debug!(id = pending.id, slots = pending.nslots, "TX grant copy failed");
                VifCounters::add(&ctx.counters.tx_dropped_copy_failed, 1);
                continue;
            }
            let len = pending.buf.len() as u64;
            VifCounters::add(&ctx.counters.tx_packets, 1);
            VifCounters::add(&ctx.counters.tx_bytes, len);
            if pending.nslots > 1 {
                VifCounters::add(&ctx.counters.tx_sg_frames, 1);
            }
            if pending.offload.gso.is_some() {
                VifCounters::add(&ctx.counters.tx_gso_frames, 1);
            }
            self.outgoing.push(Frame::with_offload(pending.buf, pending.offload));
        }
        let refused = ctx.uplink.transmit_batch(&mut self.outgoing);
        if refused > 0 {
            tracing::debug!(refused, "uplink dropped TX frames");
            VifCounters::add(&ctx.counters.tx_dropped_uplink, refused as u64);
        }
        self.answers.clear();
        Ok(())
    }
}
