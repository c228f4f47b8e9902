//! Protocol violations on purpose, for the hostile-frontend modes (`crate::hostile`): a
//! well-behaved [`Netfront`] never calls these.

use super::{DeviceError, Netfront, tx_ring_err};
use grant::{EventChannel, GrantRef};
use netif::ring::REQ_PROD_OFFSET;
use netif::{RingError, RingMemory, TxRequest};
use std::sync::atomic::Ordering;
use vm_memory::Bytes;

impl<C: EventChannel> Netfront<C> {
    /// Stores `req_prod` into the TX ring's shared header as is, bypassing the ring's own
    /// bookkeeping, and notifies the backend. The ring is unusable afterwards.
    pub fn publish_tx_req_prod(&mut self, req_prod: u32) -> Result<(), DeviceError> {
        self.tx
            .memory()
            .ring_page()
            .store(req_prod, REQ_PROD_OFFSET, Ordering::Release)
            .map_err(|e| tx_ring_err(RingError::Memory(e)))?;
        self.notify()
    }

    /// The backend's TX `rsp_prod` as it stands in the shared page.
    pub fn tx_rsp_prod(&self) -> Result<u32, DeviceError> {
        self.tx.rsp_prod().map_err(tx_ring_err)
    }

    /// Posts one single-slot TX request of `len` bytes that names `gref` (meant to be a
    /// grant we never made) instead of its buffer's grant, and notifies the backend if it
    /// asked to be. The buffer comes back with the response, as for any frame; wait for it
    /// with [`Netfront::wait_tx_idle`].
    pub fn send_with_gref(&mut self, len: u16, gref: GrantRef) -> Result<(), DeviceError> {
        self.wait_tx_room(1, 1)?;
        let id = self.tx_free.pop().expect("wait_tx_room left a free buffer");
        self.tx_busy[usize::from(id)] = true;
        self.tx.push_request(TxRequest { gref, offset: 0, flags: 0, id, size: len }).map_err(tx_ring_err)?;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += u64::from(len);
        if self.tx.push_requests_and_check_notify() {
            self.notify()?;
        }
        Ok(())
    }
}
