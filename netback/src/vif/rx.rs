//! RX: uplink → guest. Each frame fills one posted RX buffer (one slot, no `more_data`),
//! with one grant-copy batch per `rx_batch` frames.
//!
//! A frame is popped from the uplink only while the RX ring has an unconsumed request, so a
//! guest that posts no buffers leaves its frames in the (bounded) uplink queue.

use grant::{CopyPtr, CopySegment, DomId, GrantOps, PAGE_SIZE};
use netif::abi::{NETIF_RSP_ERROR, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};
use netif::{BackRing, RingMemory, RxRequest, RxResponse, RxRing};
use vm_memory::VolatileSlice;

use super::{DatapathError, VifCounters};
use crate::frame::{Frame, Offload};
use crate::port::Uplink;

/// What a delivery needs besides the ring.
#[derive(Debug)]
pub(super) struct RxContext<'a, G, U> {
    pub grants: &'a G,
    pub domid: DomId,
    pub uplink: &'a U,
    pub counters: &'a VifCounters,
    pub batch: usize,
}

/// The `NETRXF_*` flags of a frame (Linux `xenvif_rx_data_slot`).
fn rx_flags(offload: &Offload) -> u16 {
    if offload.csum_blank {
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    } else if offload.data_validated {
        NETRXF_DATA_VALIDATED
    } else {
        0
    }
}

/// RX scratch space kept between deliveries.
///
/// Invariant: `batch[i]` was popped from the uplink and `slots[i]` consumed from the ring for
/// it; both are emptied (every slot answered) before `deliver` returns.
#[derive(Debug, Default)]
pub(super) struct RxPath {
    frames: Vec<Frame>,
    slots: Vec<RxRequest>,
}

impl RxPath {
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
        let mut popped = 0;
        while popped < ctx.batch && ring.unconsumed_requests() > 0 {
            let Some(frame) = ctx.uplink.pop() else { break };
            popped += 1;
            if frame.len() > PAGE_SIZE {
                tracing::debug!(len = frame.len(), "RX frame larger than one buffer dropped");
                VifCounters::add(&ctx.counters.rx_dropped_too_big, 1);
                continue;
            }
            // unconsumed_requests() > 0, so only a req_prod moving back can make this None.
            let Some(req) = ring.next_request().map_err(ring_err)? else {
                return Err(DatapathError::RxProtocol("req_prod moved backwards".into()));
            };
            self.frames.push(frame);
            self.slots.push(req);
        }
        if !self.frames.is_empty() {
            self.copy_and_answer(ring, ctx)?;
        }
        Ok(popped == ctx.batch)
    }

    fn copy_and_answer<G: GrantOps, U: Uplink, M: RingMemory>(
        &mut self,
        ring: &mut BackRing<RxRing, M>,
        ctx: &RxContext<'_, G, U>,
    ) -> Result<(), DatapathError> {
        let copied: Vec<bool> = {
            let mut segs: Vec<CopySegment<'_>> = self
                .frames
                .iter_mut()
                .zip(&self.slots)
                .map(|(frame, req)| {
                    // len <= PAGE_SIZE was checked when the frame was popped.
                    let len = frame.len() as u16;
                    let dst = CopyPtr::Grant { domid: ctx.domid, gref: req.gref, offset: 0 };
                    CopySegment::new(CopyPtr::Local(VolatileSlice::from(&mut frame.data_mut()[..])), dst, len)
                })
                .collect();
            ctx.grants.copy(&mut segs).map_err(DatapathError::GrantCopy)?;
            VifCounters::add(&ctx.counters.copy_batches, 1);
            VifCounters::add(&ctx.counters.copy_segments, segs.len() as u64);
            segs.iter().map(|s| s.status.is_ok()).collect()
        };
        tracing::debug!(frames = self.frames.len(), "RX batch copied");
        // Responses in consumption order, so each lands in its request's slot.
        for ((frame, req), ok) in self.frames.drain(..).zip(self.slots.drain(..)).zip(copied) {
            let rsp = if ok {
                VifCounters::add(&ctx.counters.rx_packets, 1);
                VifCounters::add(&ctx.counters.rx_bytes, frame.len() as u64);
                RxResponse { id: req.id, offset: 0, flags: rx_flags(frame.offload()), status: frame.len() as i16 }
            } else {
                tracing::debug!(gref = req.gref, id = req.id, "RX grant copy failed");
                VifCounters::add(&ctx.counters.rx_dropped_copy_failed, 1);
                RxResponse { id: req.id, offset: 0, flags: 0, status: NETIF_RSP_ERROR }
            };
            ring.push_response(rsp).map_err(|source| DatapathError::Ring { ring: "RX", source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_linux() {
        let off = |csum_blank, data_validated| Offload { csum_blank, data_validated, gso: None };
        assert_eq!(rx_flags(&off(true, false)), NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(true, true)), NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(false, true)), NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(false, false)), 0);
    }
}
