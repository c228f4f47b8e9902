//! The receive path: consuming RX responses, assembling multi-slot frames, re-posting
//! buffers.
//!
//! Wire layout accepted (netif.h, as Linux netback produces it): the first data slot
//! carries the flags (`csum_blank`, `data_validated`, `more_data`, `extra_info`); with
//! `extra_info` the extras come right after it (chained by `XEN_NETIF_EXTRA_FLAG_MORE`);
//! then, while `more_data`, further data slots. Each response's status is the byte count
//! of its slot, the frame is their concatenation. Responses are matched to buffers by
//! ring slot, never by id.
//!
//! The backend is not trusted: without scatter-gather in effect a chain is dropped and
//! counted in `rx_dropped_chains`; with it, a slot beyond its page, a frame of more than
//! 65535 bytes or [`MAX_DATA_SLOTS`] slots, more than [`MAX_EXTRAS`] extras, an extra that
//! is not a GSO extra of a kind in effect, or an empty frame drops the frame and counts
//! one protocol error; a negative status counts one RX error. Dropped chains are still
//! consumed to their end (with bounded memory), so the next frame is read correctly.

use super::{DeviceError, Netfront, RxMeta, meta};
use grant::{EventChannel, PAGE_SIZE};
use netif::abi::{
    NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, XEN_NETIF_EXTRA_TYPE_MAX,
    XEN_NETIF_MAX_TX_SIZE, XEN_NETIF_NR_SLOTS_MIN,
};
use netif::{Extra, ExtraInfo, NetifExtraInfo, RingError, RingKind, RxRequest, RxResponse, RxRing};
use vm_memory::Bytes;

/// Most data slots of one received frame (netif.h's `XEN_NETIF_NR_SLOTS_MIN`).
pub const MAX_DATA_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN as usize;
/// Most extra-info slots of one received frame (one of each type at most).
pub const MAX_EXTRAS: usize = XEN_NETIF_EXTRA_TYPE_MAX as usize - 1;
const MAX_FRAME: usize = XEN_NETIF_MAX_TX_SIZE as usize;

/// Where we are within a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Chain {
    /// At a frame boundary.
    #[default]
    Idle,
    /// Extra-info slots follow; `then_more` if data slots follow them.
    Extras { then_more: bool },
    /// Further data slots of the frame follow.
    More,
}

/// The frame being assembled across responses (and across `recv` calls).
#[derive(Debug, Default)]
pub(super) struct Assembly {
    chain: Chain,
    data: Vec<u8>,
    meta: RxMeta,
    data_slots: usize,
    extras: usize,
    /// The frame is being dropped (already counted); its slots are only consumed.
    dropped: bool,
}

fn rx_ring_err(source: RingError) -> DeviceError {
    DeviceError::Ring { ring: "RX", source }
}

impl<C: EventChannel> Netfront<C> {
    /// Posts RX buffer `buf` in the next free slot (not yet published).
    pub(super) fn post_rx(&mut self, buf: u16) -> Result<(), RingError> {
        let slot = (self.rx.req_prod_pvt() & (RxRing::SIZE - 1)) as usize;
        let gref = self.rx_pages.grefs()[usize::from(buf)];
        self.rx.push_request(RxRequest { id: buf, pad: 0, gref })?;
        self.rx_slot_buf[slot] = Some(buf);
        Ok(())
    }

    /// Takes the buffer of the slot at `rsp_cons` (the response about to be consumed there;
    /// responses land in the slot of their request, whatever their id says).
    fn take_slot_buffer(&mut self) -> Option<u16> {
        let slot = (self.rx.rsp_cons() & (RxRing::SIZE - 1)) as usize;
        self.rx_slot_buf[slot].take()
    }

    /// Restores a slot's buffer when no response was there after all.
    fn put_back(&mut self, buf: Option<u16>) {
        let slot = (self.rx.rsp_cons() & (RxRing::SIZE - 1)) as usize;
        self.rx_slot_buf[slot] = buf;
    }

    /// Re-posts the buffer taken from a consumed slot.
    fn repost(&mut self, buf: Option<u16>) -> Result<(), DeviceError> {
        match buf {
            Some(buf) => self.post_rx(buf).map_err(rx_ring_err),
            // Only possible if the ring bookkeeping is broken; count it, do not panic.
            None => {
                self.stats.protocol_errors += 1;
                Ok(())
            }
        }
    }

    /// Publishes re-posted buffers, notifying the backend if it waits for them.
    fn publish_rx(&mut self) -> Result<(), DeviceError> {
        if self.rx.req_prod_pvt() != self.rx.req_prod_pushed() && self.rx.push_requests_and_check_notify() {
            self.notify()?;
        }
        Ok(())
    }

    /// [`Netfront::recv_with`] without the offload metadata.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, DeviceError> {
        Ok(self.recv_with()?.map(|(frame, _)| frame))
    }

    /// The next received frame with its offload metadata, or `None` if there is none right
    /// now. Frees completed TX buffers too. Bad frames are counted and skipped (see the
    /// module docs); every consumed slot's buffer is re-posted. Returning `None` arms the
    /// RX `rsp_event` (the ring's final check), so a following [`Netfront::wait`] cannot
    /// miss a frame.
    pub fn recv_with(&mut self) -> Result<Option<(Vec<u8>, RxMeta)>, DeviceError> {
        self.reap_tx()?;
        let frame = loop {
            if let Some(frame) = self.recv_one()? {
                break Some(frame);
            }
            if self.rx.unconsumed_responses() == 0 && !self.rx.final_check_for_responses() {
                break None;
            }
        };
        self.publish_rx()?;
        Ok(frame)
    }

    /// Consumes responses until a complete frame or an empty ring.
    fn recv_one(&mut self) -> Result<Option<(Vec<u8>, RxMeta)>, DeviceError> {
        loop {
            let buf = self.take_slot_buffer();
            let complete = if let Chain::Extras { then_more } = self.rx_frame.chain {
                let Some(extra) = self.rx.next_response_as::<NetifExtraInfo>().map_err(rx_ring_err)? else {
                    self.put_back(buf);
                    return Ok(None);
                };
                self.repost(buf)?;
                self.on_extra(&extra, then_more)
            } else {
                let Some(rsp) = self.rx.next_response().map_err(rx_ring_err)? else {
                    self.put_back(buf);
                    return Ok(None);
                };
                let complete = self.on_data(&rsp, buf);
                self.repost(buf)?;
                complete
            };
            if complete && let Some(frame) = self.finish() {
                return Ok(Some(frame));
            }
        }
    }

    /// Drops the frame being assembled, counting one protocol error (once per frame).
    fn drop_frame(&mut self) {
        if !self.rx_frame.dropped {
            self.rx_frame.dropped = true;
            self.rx_frame.data = Vec::new();
            self.stats.protocol_errors += 1;
        }
    }

    /// Handles one data response whose slot held `buf`; `true` if it ends the frame.
    fn on_data(&mut self, rsp: &RxResponse, buf: Option<u16>) -> bool {
        let more = rsp.flags & NETRXF_MORE_DATA != 0;
        let asm = &mut self.rx_frame;
        if asm.chain == Chain::Idle {
            let extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
            *asm = Assembly {
                chain: match (extra, more) {
                    (true, then_more) => Chain::Extras { then_more },
                    (false, true) => Chain::More,
                    (false, false) => Chain::Idle,
                },
                meta: RxMeta {
                    csum_blank: rsp.flags & NETRXF_CSUM_BLANK != 0,
                    data_validated: rsp.flags & NETRXF_DATA_VALIDATED != 0,
                    gso: None,
                },
                ..Assembly::default()
            };
            if (extra || more) && !self.features.sg {
                // Not negotiated: consume the chain, count it once, deliver nothing.
                self.rx_frame.dropped = true;
                self.stats.rx_dropped_chains += 1;
            }
        } else if !more {
            self.rx_frame.chain = Chain::Idle;
        }
        self.rx_frame.data_slots += 1;
        if !self.rx_frame.dropped {
            self.copy_slot(rsp, buf);
        }
        self.rx_frame.chain == Chain::Idle
    }

    /// Appends one data slot's bytes to the frame being assembled.
    fn copy_slot(&mut self, rsp: &RxResponse, buf: Option<u16>) {
        if rsp.status < 0 {
            self.stats.rx_errors += 1;
            self.rx_frame.dropped = true;
            self.rx_frame.data = Vec::new();
            return;
        }
        let (offset, len) = (usize::from(rsp.offset), rsp.status as usize);
        let asm = &self.rx_frame;
        if offset + len > PAGE_SIZE || asm.data.len() + len > MAX_FRAME || asm.data_slots > MAX_DATA_SLOTS {
            return self.drop_frame();
        }
        let Some(page) = buf.and_then(|b| self.rx_pages.page(usize::from(b))) else {
            return self.drop_frame();
        };
        let data = &mut self.rx_frame.data;
        let start = data.len();
        data.resize(start + len, 0);
        if page.read_slice(&mut data[start..], offset).is_err() {
            self.stats.rx_errors += 1;
            self.rx_frame.dropped = true;
            self.rx_frame.data = Vec::new();
        }
    }

    /// Handles one extra-info slot; `true` if it ends the frame.
    fn on_extra(&mut self, raw: &NetifExtraInfo, then_more: bool) -> bool {
        self.rx_frame.extras += 1;
        if !raw.more() {
            self.rx_frame.chain = if then_more { Chain::More } else { Chain::Idle };
        }
        if self.rx_frame.dropped {
            return self.rx_frame.chain == Chain::Idle;
        }
        let gso = match Extra::decode(raw) {
            Ok(Extra { info: ExtraInfo::Gso { size, gso_type, .. }, .. }) if size > 0 => {
                meta::gso_kind(gso_type).filter(|&kind| self.features.gso(kind)).map(|kind| (kind, size))
            }
            _ => None,
        };
        match gso {
            Some(gso) if self.rx_frame.meta.gso.is_none() && self.rx_frame.extras <= MAX_EXTRAS => {
                self.rx_frame.meta.gso = Some(gso);
            }
            _ => self.drop_frame(),
        }
        self.rx_frame.chain == Chain::Idle
    }

    /// Hands out the assembled frame unless it was dropped or is empty.
    fn finish(&mut self) -> Option<(Vec<u8>, RxMeta)> {
        let asm = std::mem::take(&mut self.rx_frame);
        if asm.dropped {
            return None;
        }
        if asm.data.is_empty() {
            self.stats.protocol_errors += 1;
            return None;
        }
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += asm.data.len() as u64;
        Some((asm.data, asm.meta))
    }
}
