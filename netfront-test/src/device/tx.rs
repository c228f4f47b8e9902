//! The transmit path: TX buffers, multi-slot chains, the GSO extra, reaping responses.
//!
//! Wire layout of one frame of `len` bytes (netif.h; Linux netfront does the same):
//!
//! ```text
//! slot 0      data  gref buf a, offset 0, size = len (the TOTAL), holds bytes 0..4096
//!                   flags: csum_blank | data_validated | more_data (if more data slots)
//!                          | extra_info (if GSO)
//! [slot 1     extra XEN_NETIF_EXTRA_TYPE_GSO {size: mss, type: TCPV4/TCPV6, features: 0},
//!                   no FLAG_MORE]                                       (only with GSO)
//! next slots  data  gref buf b, c, ..., offset 0, size = 4096 (the last: the rest),
//!                   more_data on all but the last
//! ```
//!
//! Each data slot uses its own TX buffer page and carries the buffer index as its id; its
//! response frees the buffer. The extra slot's response is `NETIF_RSP_NULL` (its id is
//! meaningless, as Linux netback leaves it).

use super::{DeviceError, Netfront, TxMeta, meta, tx_ring_err};
use grant::{EventChannel, PAGE_SIZE};
use netif::abi::{
    NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
};
use netif::{Extra, ExtraInfo, TxRequest};
use std::time::Instant;
use vm_memory::Bytes;

/// TX buffers (data slots) a frame of `len` bytes takes: one per started page.
pub fn tx_buffers_needed(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE).max(1)
}

impl<C: EventChannel> Netfront<C> {
    /// Frees the TX buffers of every TX response; returns how many responses were reaped.
    pub fn reap_tx(&mut self) -> Result<usize, DeviceError> {
        let mut reaped = 0;
        while let Some(rsp) = self.tx.next_response().map_err(tx_ring_err)? {
            reaped += 1;
            match rsp.status {
                NETIF_RSP_OKAY => {}
                NETIF_RSP_ERROR => self.stats.tx_errors += 1,
                NETIF_RSP_DROPPED => self.stats.tx_dropped += 1,
                NETIF_RSP_NULL if self.tx_extras > 0 => {
                    // The answer to an extra-info slot: no buffer, and the id means nothing.
                    self.tx_extras -= 1;
                    continue;
                }
                _ => {
                    self.stats.protocol_errors += 1;
                    continue;
                }
            }
            match self.tx_busy.get_mut(usize::from(rsp.id)) {
                Some(busy) if *busy => {
                    *busy = false;
                    self.tx_free.push(rsp.id);
                }
                _ => self.stats.protocol_errors += 1,
            }
        }
        Ok(reaped)
    }

    /// Free TX buffers after reaping responses: a frame of `len` bytes goes out without
    /// waiting if this is at least [`tx_buffers_needed`]`(len)`.
    pub fn tx_available(&mut self) -> Result<usize, DeviceError> {
        self.reap_tx()?;
        Ok(self.tx_free.len())
    }

    /// [`Netfront::send_with`] without offloads.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), DeviceError> {
        self.send_with(frame, TxMeta::default())
    }

    /// Copies `frame` into free TX buffers and pushes its slots (see the module docs),
    /// notifying the backend if it asked to be. Waits (up to the configured timeout) for
    /// enough free buffers and ring slots.
    ///
    /// # Errors
    /// [`DeviceError::FrameSize`] for an empty frame or one above
    /// [`Netfront::max_frame_len`]; [`DeviceError::Gso`] if `meta.gso` asks for a GSO kind
    /// not in effect (or MSS 0); [`DeviceError::TooFewTxBuffers`] if the device can never
    /// hold the frame; [`DeviceError::TxTimeout`] if no room came back in time.
    pub fn send_with(&mut self, frame: &[u8], meta: TxMeta) -> Result<(), DeviceError> {
        let (len, max) = (frame.len(), self.max_frame_len());
        if len == 0 || len > max {
            return Err(DeviceError::FrameSize { len, max });
        }
        let extra = match meta.gso {
            Some((kind, mss)) if mss == 0 || !self.features.gso(kind) => {
                let (v4, v6) = (self.features.gso_tcpv4, self.features.gso_tcpv6);
                return Err(DeviceError::Gso { kind, mss, v4, v6 });
            }
            Some((kind, mss)) => {
                let info = ExtraInfo::Gso { size: mss, gso_type: meta::gso_type(kind), features: 0 };
                Some(Extra { info, more: false })
            }
            None => None,
        };
        let need = tx_buffers_needed(len);
        if need > self.tx_busy.len() {
            return Err(DeviceError::TooFewTxBuffers { len, need, have: self.tx_busy.len() });
        }
        self.wait_tx_room(need, need + usize::from(extra.is_some()))?;
        let ids: Vec<u16> = self.tx_free.split_off(self.tx_free.len() - need);
        for (&id, chunk) in ids.iter().zip(frame.chunks(PAGE_SIZE)) {
            let index = usize::from(id);
            let page = self.tx_pages.page(index).expect("tx ids index tx_pages");
            if let Err(source) = page.write_slice(chunk, 0) {
                self.tx_free.extend_from_slice(&ids);
                return Err(DeviceError::Buffer { index, source });
            }
        }
        // From here on the buffers belong to the ring (even if a push breaks: the ring is
        // then unusable anyway).
        for &id in &ids {
            self.tx_busy[usize::from(id)] = true;
        }
        let mut flags = 0;
        for (flag, on) in [
            (NETTXF_CSUM_BLANK, meta.csum_blank),
            (NETTXF_DATA_VALIDATED, meta.data_validated),
            (NETTXF_MORE_DATA, need > 1),
            (NETTXF_EXTRA_INFO, extra.is_some()),
        ] {
            if on {
                flags |= flag;
            }
        }
        let request = |id: u16, flags: u16, size: usize| TxRequest {
            gref: self.tx_pages.grefs()[usize::from(id)],
            offset: 0,
            flags,
            id,
            size: u16::try_from(size).expect("sizes are ≤ 65535"),
        };
        let first = request(ids[0], flags, len);
        let rest: Vec<TxRequest> = ids[1..]
            .iter()
            .zip(frame.chunks(PAGE_SIZE).skip(1))
            .enumerate()
            .map(|(i, (&id, chunk))| request(id, if i + 2 < need { NETTXF_MORE_DATA } else { 0 }, chunk.len()))
            .collect();
        self.tx.push_request(first).map_err(tx_ring_err)?;
        if let Some(extra) = extra {
            self.tx.push_request(extra.to_tx_request()).map_err(tx_ring_err)?;
            self.tx_extras += 1;
        }
        for req in rest {
            self.tx.push_request(req).map_err(tx_ring_err)?;
        }
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        if self.tx.push_requests_and_check_notify() {
            self.notify()?;
        }
        Ok(())
    }

    /// Waits (up to the configured timeout) until every TX buffer has come back.
    ///
    /// # Errors
    /// [`DeviceError::TxTimeout`] if some response did not come in time.
    pub fn wait_tx_idle(&mut self) -> Result<(), DeviceError> {
        self.wait_tx_room(self.tx_busy.len(), 0)
    }

    /// Waits for `buffers` free TX buffers and `slots` free TX ring slots, reaping
    /// responses, sleeping on the event channel while there are none.
    pub(super) fn wait_tx_room(&mut self, buffers: usize, slots: usize) -> Result<(), DeviceError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            if self.tx_free.len() >= buffers && self.tx.free_requests() as usize >= slots {
                return Ok(());
            }
            if self.reap_tx()? > 0 {
                continue;
            }
            // Arms rsp_event before sleeping, so the backend's next response wakes us.
            if self.tx.final_check_for_responses() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait(left)? {
                return Err(DeviceError::TxTimeout(self.config.timeout));
            }
        }
    }
}
