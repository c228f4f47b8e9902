//! TX: guest → uplink, following Linux netback's policy (`netif.md` §1.6).
//!
//! One drain takes at most `tx_batch` packets off the ring, copies every accepted packet into
//! a local buffer with ONE grant-copy batch, answers every consumed slot in ring order, and
//! hands the good frames to the uplink. Scatter-gather and GSO are not negotiated yet:
//! chains and extras are consumed and answered `NETIF_RSP_ERROR` (the packet is dropped),
//! but the parsing keeps their slots apart so multi-slot frames can be added.

use grant::{CopyPtr, CopySegment, DomId, GrantOps};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED};
use netif::{BackRing, RingMemory, TxRequest, TxResponse, TxRing};
use vm_memory::VolatileSlice;

use super::tx_parse::{Parsed, TxPacket, parse};
use super::{DatapathError, VifCounters};
use crate::frame::{ETH_HLEN, Frame, Offload};
use crate::port::{TransmitOutcome, Uplink};

/// The response a consumed slot gets, planned in ring order.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A status known without copying.
    Status(u16, i16),
    /// OKAY or ERROR depending on the copy of `frames[index]`.
    Frame(u16, usize),
}

/// A frame whose bytes are being copied in.
#[derive(Debug)]
struct Pending {
    req: TxRequest,
    buf: Vec<u8>,
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
        let reason = if !p.extras.is_empty() {
            Some("extra info (no GSO, multicast control or hash negotiated)")
        } else if p.first_len.is_none() {
            Some("follow-on slots larger than the packet")
        } else if !p.frags.is_empty() {
            Some("more_data chain (scatter-gather not negotiated)")
        } else if usize::from(p.first.size) < ETH_HLEN {
            Some("shorter than an Ethernet header")
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::debug!(id = p.first.id, size = p.first.size, slots = p.slots(), reason, "TX packet dropped");
            VifCounters::add(&counters.tx_dropped_bad_request, 1);
            // Linux xenvif_tx_err: ERROR for the first slot, NULL for its extras, ERROR for
            // every follow-on slot.
            self.answers.push(Answer::Status(p.first.id, NETIF_RSP_ERROR));
        } else {
            self.answers.push(Answer::Frame(p.first.id, self.frames.len()));
            self.frames.push(Pending { req: p.first, buf: vec![0; usize::from(p.first.size)] });
        }
        let extras = p.extras.iter().map(|_| Answer::Status(p.first.id, NETIF_RSP_NULL));
        let frags = p.frags.iter().map(|f| Answer::Status(f.id, NETIF_RSP_ERROR));
        self.answers.extend(extras.chain(frags));
    }

    /// One grant-copy batch for the planned frames, then one response per consumed slot in
    /// ring order, then the good frames to the uplink in order.
    fn copy_and_answer<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<TxRing, M>,
        ctx: &TxContext<'_, G, U>,
    ) -> Result<(), DatapathError> {
        let mut copied = Vec::with_capacity(self.frames.len());
        if !self.frames.is_empty() {
            let mut segs: Vec<CopySegment<'_>> = self
                .frames
                .iter_mut()
                .map(|f| {
                    let src = CopyPtr::Grant { domid: ctx.domid, gref: f.req.gref, offset: f.req.offset };
                    CopySegment::new(src, CopyPtr::Local(VolatileSlice::from(&mut f.buf[..])), f.req.size)
                })
                .collect();
            ctx.grants.copy(&mut segs).map_err(DatapathError::GrantCopy)?;
            VifCounters::add(&ctx.counters.copy_batches, 1);
            VifCounters::add(&ctx.counters.copy_segments, segs.len() as u64);
            copied.extend(segs.iter().map(|s| s.status.is_ok()));
        }
        tracing::debug!(slots = self.answers.len(), frames = self.frames.len(), "TX batch copied");

        for answer in &self.answers {
            let (id, status) = match *answer {
                Answer::Status(id, status) => (id, status),
                Answer::Frame(id, i) if copied[i] => (id, NETIF_RSP_OKAY),
                Answer::Frame(id, _) => (id, NETIF_RSP_ERROR),
            };
            ring.push_response(TxResponse { id, status })
                .map_err(|source| DatapathError::Ring { ring: "TX", source })?;
        }

        for (pending, ok) in self.frames.drain(..).zip(copied) {
            if !ok {
                tracing::debug!(gref = pending.req.gref, id = pending.req.id, "TX grant copy failed");
                VifCounters::add(&ctx.counters.tx_dropped_copy_failed, 1);
                continue;
            }
            let flags = pending.req.flags;
            let offload = Offload {
                csum_blank: flags & NETTXF_CSUM_BLANK != 0,
                data_validated: flags & NETTXF_DATA_VALIDATED != 0,
                gso: None,
            };
            let len = pending.buf.len() as u64;
            VifCounters::add(&ctx.counters.tx_packets, 1);
            VifCounters::add(&ctx.counters.tx_bytes, len);
            if let TransmitOutcome::Dropped(reason) = ctx.uplink.transmit(Frame::with_offload(pending.buf, offload)) {
                tracing::debug!(?reason, len, "uplink dropped a TX frame");
                VifCounters::add(&ctx.counters.tx_dropped_uplink, 1);
            }
        }
        self.answers.clear();
        Ok(())
    }
}
