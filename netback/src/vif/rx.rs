//! RX: uplink → guest. A frame fills as many posted RX buffers as it has started pages
//! (`NETRXF_more_data` on all but the last), with its GSO extra right after the first data
//! slot; each response goes in the ring slot of the request it answers. One grant-copy batch
//! per `rx_batch` frames (a multi-slot frame contributes one segment per slot).
//!
//! How a frame is delivered (as is, segmented, checksum filled, dropped) is decided from the
//! receiver's features by [`prepare`]. A frame is taken only once the ring holds all the
//! requests it needs, never partially; until then it waits here and the RX event is armed
//! for that many requests ([`RxPath::final_check`]). Frames are popped from the uplink only
//! while nothing waits here, in one batch of at most one frame per unconsumed RX request, so
//! a guest that posts no buffers leaves its frames in the (bounded) uplink queue.

use grant::{CopyPtr, CopySegment, DomId, GrantOps, PAGE_SIZE};
use netif::abi::{NETIF_RSP_ERROR, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA};
use netif::abi::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};
use netif::{BackRing, Extra, ExtraInfo, RingMemory, RxRequest, RxResponse, RxRing};
use std::collections::VecDeque;
use vm_memory::VolatileSlice;

use super::crash::{CrashPoint, reached};
use super::journal::{Side, VifJournal};
use super::rx_prepare::{Ready, prepare};
use super::{DatapathError, FrontendFeatures, VifCounters};
use crate::frame::{Gso, GsoKind};
use crate::port::Uplink;

/// What a delivery needs besides the ring.
#[derive(Debug)]
pub(super) struct RxContext<'a, G, U> {
    pub grants: &'a G,
    pub domid: DomId,
    pub uplink: &'a U,
    pub counters: &'a VifCounters,
    pub batch: usize,
    /// The receiving frontend's features.
    pub features: FrontendFeatures,
    /// The vif's state file, kept for a hitless restart (none: not kept).
    pub journal: Option<&'a VifJournal>,
}

/// The response image of a GSO extra.
fn gso_extra(gso: Gso) -> RxResponse {
    let gso_type = match gso.kind {
        GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
        GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
    };
    Extra { info: ExtraInfo::Gso { size: gso.size, gso_type, features: 0 }, more: false }.to_rx_response()
}

/// RX state kept between deliveries.
///
/// Invariants: `waiting` holds frames popped from the uplink and prepared, not yet taken;
/// `taken[i]` consumed `taken[i].slots()` requests, in order, into `reqs`. `taken` and `reqs`
/// are emptied (every consumed request answered) before `deliver` returns.
#[derive(Debug, Default)]
pub(super) struct RxPath {
    waiting: VecDeque<Ready>,
    taken: Vec<Ready>,
    reqs: Vec<RxRequest>,
    /// Frames just popped from the uplink, before `prepare` (kept to reuse its allocation).
    popped: Vec<crate::frame::Frame>,
    /// Requests the ring must hold before the next frame counts as deliverable, whatever it
    /// needs: while the guest's RX is stalled, what the frame that stalled it needed
    /// (`rx_stall.rs`); 0 otherwise.
    floor: u32,
}

impl RxPath {
    /// Requests the next frame needs before it can be taken (1 if none waits: one request
    /// is enough to pop a frame and look at it).
    pub fn needed(&self) -> u32 {
        self.waiting.front().map_or(1, Ready::slots).max(self.floor)
    }

    /// True if the ring holds enough unconsumed requests for the next frame.
    pub fn can_deliver<M: RingMemory>(&self, ring: &BackRing<RxRing, M>) -> bool {
        ring.unconsumed_requests() >= self.needed()
    }

    /// Before sleeping: true if the next frame can be taken now; otherwise sets `req_event`
    /// so the frontend notifies once it has posted enough requests for it (as Linux's
    /// `xenvif_rx_ring_slots_available`), and checks again.
    pub fn final_check<M: RingMemory>(&self, ring: &mut BackRing<RxRing, M>) -> bool {
        if self.can_deliver(ring) {
            return true;
        }
        ring.set_req_event(ring.req_cons().wrapping_add(self.needed()));
        self.can_deliver(ring)
    }

    /// Sets the floor under [`RxPath::needed`] (0: none).
    pub fn set_floor(&mut self, floor: u32) {
        self.floor = floor;
    }

    /// Whether prepared frames wait for requests.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Drops every prepared frame waiting for requests; returns how many.
    pub fn drop_waiting(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        n
    }

    /// Delivers up to `ctx.batch` frames into posted buffers. Returns true if more work may
    /// be ready right away (the batch was full).
    ///
    /// # Errors
    /// Ring errors, a `req_prod` moving backwards, a copy batch that could not be submitted.
    pub fn deliver<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<RxRing, M>,
        ctx: &RxContext<'_, G, U>,
    ) -> Result<bool, DatapathError> {
        let ring_err = |source| DatapathError::Ring { ring: "RX", source };
        let (mut popped, mut taken) = (0, 0);
        // False once the uplink gave fewer frames than asked: it is empty, or (a TAP) its
        // read budget ran out and its descriptor brings the worker back.
        let mut uplink_may_have_more = true;
        while taken < ctx.batch && popped < ctx.batch {
            let Some(next) = self.waiting.front() else {
                // At most one frame per posted request and per batch place left: a frame
                // needs at least one request, so none is popped for nothing.
                let room = (ring.unconsumed_requests() as usize).min(ctx.batch - popped);
                if room == 0 || !uplink_may_have_more {
                    break;
                }
                ctx.uplink.pop_batch(room, &mut self.popped);
                uplink_may_have_more = self.popped.len() == room;
                if self.popped.is_empty() {
                    break;
                }
                popped += self.popped.len();
                for frame in self.popped.drain(..) {
                    prepare(frame, &ctx.features, ctx.counters, &mut self.waiting);
                }
                continue;
            };
            let need = next.slots();
            if ring.unconsumed_requests() < need {
                tracing::debug!(need, have = ring.unconsumed_requests(), "RX frame waits for buffers");
                break;
            }
            for _ in 0..need {
                // unconsumed_requests() >= need, so only a req_prod moving back can fail.
                let Some(req) = ring.next_request().map_err(ring_err)? else {
                    return Err(DatapathError::RxProtocol("req_prod moved backwards".into()));
                };
                self.reqs.push(req);
            }
            self.taken.extend(self.waiting.pop_front());
            taken += 1;
        }
        if !self.taken.is_empty() {
            if let Some(journal) = ctx.journal {
                // `reqs` are the requests consumed by this call, ending at req_cons.
                let first = ring.req_cons().wrapping_sub(self.reqs.len() as u32);
                for (i, req) in self.reqs.iter().enumerate() {
                    journal.record(Side::Rx, first.wrapping_add(i as u32), req.id, NETIF_RSP_ERROR);
                }
                journal.consumed_to(Side::Rx, ring.req_cons());
                reached(CrashPoint::RxConsumed);
            }
            self.copy_and_answer(ring, ctx)?;
            if let Some(journal) = ctx.journal {
                reached(CrashPoint::RxWritten);
                journal.answered_to(Side::Rx, ring.rsp_prod_pvt());
                reached(CrashPoint::RxRecorded);
            }
        }
        Ok(taken == ctx.batch || popped == ctx.batch)
    }

    fn copy_and_answer<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<RxRing, M>,
        ctx: &RxContext<'_, G, U>,
    ) -> Result<(), DatapathError> {
        let copied: Vec<bool> = {
            let mut segs: Vec<CopySegment<'_>> = Vec::with_capacity(self.reqs.len());
            let mut reqs = self.reqs.iter();
            for frame in &mut self.taken {
                let extra = frame.gso.is_some();
                let single = frame.data_slots() == 1;
                for (i, chunk) in frame.data.chunks_mut(PAGE_SIZE).enumerate() {
                    // The GSO extra takes the request after the first data slot's.
                    let req = if i == 1 && extra { reqs.nth(1) } else { reqs.next() };
                    let Some(req) = req else { break };
                    let len = chunk.len() as u16;
                    let dst = CopyPtr::Grant { domid: ctx.domid, gref: req.gref, offset: 0 };
                    segs.push(CopySegment::new(CopyPtr::Local(VolatileSlice::from(chunk)), dst, len));
                }
                if extra && single {
                    reqs.next();
                }
            }
            ctx.grants.copy(&mut segs).map_err(DatapathError::GrantCopy)?;
            VifCounters::add(&ctx.counters.copy_batches, 1);
            VifCounters::add(&ctx.counters.copy_segments, segs.len() as u64);
            segs.iter().map(|s| s.status.is_ok()).collect()
        };
        tracing::debug!(frames = self.taken.len(), slots = self.reqs.len(), "RX batch copied");
        let mut copied = copied.into_iter();
        let mut reqs = self.reqs.drain(..);
        // Responses in consumption order, so each lands in its request's slot.
        for frame in self.taken.drain(..) {
            let slots = frame.data_slots() as usize;
            let mut ok = true;
            for (i, chunk) in frame.data.chunks(PAGE_SIZE).enumerate() {
                let Some(req) = reqs.next() else { break };
                let mut flags = if i + 1 < slots { NETRXF_MORE_DATA } else { 0 };
                if i == 0 {
                    flags |= frame.flags | if frame.gso.is_some() { NETRXF_EXTRA_INFO } else { 0 };
                }
                let status = if copied.next().unwrap_or(false) {
                    chunk.len() as i16
                } else {
                    tracing::debug!(gref = req.gref, id = req.id, "RX grant copy failed");
                    ok = false;
                    NETIF_RSP_ERROR
                };
                ring.push_response(RxResponse { id: req.id, offset: 0, flags, status })
                    .map_err(|source| DatapathError::Ring { ring: "RX", source })?;
                if let (0, Some(gso)) = (i, frame.gso) {
                    reqs.next();
                    ring.push_response(gso_extra(gso)).map_err(|source| DatapathError::Ring { ring: "RX", source })?;
                }
            }
            if ctx.journal.is_some() {
                reached(CrashPoint::RxHalfWritten);
            }
            if !ok {
                VifCounters::add(&ctx.counters.rx_dropped_copy_failed, 1);
                continue;
            }
            VifCounters::add(&ctx.counters.rx_packets, 1);
            VifCounters::add(&ctx.counters.rx_bytes, frame.data.len() as u64);
            if slots > 1 {
                VifCounters::add(&ctx.counters.rx_sg_frames, 1);
            }
            if frame.gso.is_some() {
                VifCounters::add(&ctx.counters.rx_gso_frames, 1);
            }
        }
        Ok(())
    }
}
