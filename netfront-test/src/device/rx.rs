//! The receive path: consuming RX responses, re-posting buffers, dropping multi-slot
//! frames (scatter-gather and extra-info are not negotiated, so a backend sending them is
//! tolerated, not trusted).

use super::{DeviceError, Netfront};
use grant::{EventChannel, PAGE_SIZE};
use netif::abi::{NETRXF_EXTRA_INFO, NETRXF_MORE_DATA};
use netif::{NetifExtraInfo, RingError, RingKind, RxRequest, RxResponse, RxRing};
use vm_memory::Bytes;

/// Where we are within a multi-slot frame being dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chain {
    /// At a frame boundary.
    Idle,
    /// Extra-info slots follow; `then_more` if data slots follow them.
    Extras { then_more: bool },
    /// Further data slots of the frame follow.
    More,
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

    /// The next received frame, or `None` if there is none right now. Frees completed TX
    /// buffers too. Error responses and multi-slot frames are counted and skipped; every
    /// consumed slot's buffer is re-posted. Returning `None` arms the RX `rsp_event` (the
    /// ring's final check), so a following [`Netfront::wait`] cannot miss a frame.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, DeviceError> {
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
    fn recv_one(&mut self) -> Result<Option<Vec<u8>>, DeviceError> {
        loop {
            if let Chain::Extras { then_more } = self.rx_chain {
                let buf = self.take_slot_buffer();
                let Some(extra) = self.rx.next_response_as::<NetifExtraInfo>().map_err(rx_ring_err)? else {
                    self.put_back(buf);
                    return Ok(None);
                };
                self.repost(buf)?;
                if !extra.more() {
                    self.rx_chain = if then_more { Chain::More } else { Chain::Idle };
                }
                continue;
            }
            let buf = self.take_slot_buffer();
            let Some(rsp) = self.rx.next_response().map_err(rx_ring_err)? else {
                self.put_back(buf);
                return Ok(None);
            };
            let frame = self.handle_data(&rsp, buf);
            self.repost(buf)?;
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
    }

    /// Restores a slot's buffer when no response was there after all.
    fn put_back(&mut self, buf: Option<u16>) {
        let slot = (self.rx.rsp_cons() & (RxRing::SIZE - 1)) as usize;
        self.rx_slot_buf[slot] = buf;
    }

    /// Interprets one data response whose slot held `buf`; `Some` for a good single-slot frame.
    fn handle_data(&mut self, rsp: &RxResponse, buf: Option<u16>) -> Option<Vec<u8>> {
        let more = rsp.flags & NETRXF_MORE_DATA != 0;
        let extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
        match self.rx_chain {
            Chain::More => {
                // A follow-on slot of a frame being dropped.
                if !more {
                    self.rx_chain = Chain::Idle;
                }
                return None;
            }
            Chain::Extras { .. } => unreachable!("extras are consumed by recv_one"),
            Chain::Idle => {}
        }
        if extra || more {
            // Extras come right after the first data slot, then the other data slots.
            self.rx_chain = if extra { Chain::Extras { then_more: more } } else { Chain::More };
            self.stats.rx_dropped_chains += 1;
            return None;
        }
        let (offset, len) = (usize::from(rsp.offset), rsp.status);
        if len <= 0 || offset + len as usize > PAGE_SIZE {
            self.stats.rx_errors += 1;
            return None;
        }
        let index = usize::from(buf?);
        let mut frame = vec![0u8; len as usize];
        let page = self.rx_pages.page(index)?;
        if page.read_slice(&mut frame, offset).is_err() {
            self.stats.rx_errors += 1;
            return None;
        }
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        Some(frame)
    }
}
