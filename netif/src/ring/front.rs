//! The frontend half of a shared ring (C: `*_front_ring`, `FRONT_RING_*`).

use core::fmt;
use core::marker::PhantomData;

use super::shared::{self, event_in_batch, load_idx, mb, read_entry, store_idx, write_entry};
use super::{
    PVT_OFFSET, REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET, RingError, RingKind, RingMemory,
    SRING_HEADER_SIZE,
};
use crate::abi::RingEntry;

/// The frontend end of a ring: produces requests, consumes responses.
///
/// Invariants (all wrapping `u32`):
/// * `req_prod_pvt - rsp_cons <= SIZE` (requests awaiting a response fit);
/// * `req_prod_pushed` lies in `[rsp_cons, req_prod_pvt]`: the backend can
///   only have seen, and so answered, requests up to it.
pub struct FrontRing<K: RingKind, M: RingMemory> {
    mem: M,
    /// Requests written to slots (published or not).
    req_prod_pvt: u32,
    /// Responses consumed.
    rsp_cons: u32,
    /// Last value stored in the shared `req_prod`.
    req_prod_pushed: u32,
    _kind: PhantomData<fn() -> K>,
}

impl<K: RingKind, M: RingMemory> fmt::Debug for FrontRing<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &K::SIZE)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("req_prod_pushed", &self.req_prod_pushed)
            .field("rsp_cons", &self.rsp_cons)
            .finish_non_exhaustive()
    }
}

impl<K: RingKind, M: RingMemory> FrontRing<K, M> {
    /// Number of slots.
    pub const SIZE: u32 = K::SIZE;

    /// Initialises the shared page and attaches to it (C: `SHARED_RING_INIT`
    /// then `FRONT_RING_INIT`): producer indices 0, event indices 1, `pvt`
    /// and padding zeroed. Only the frontend initialises a ring, before it grants
    /// the page to the backend.
    ///
    /// # Errors
    /// [`RingError::PageTooSmall`] / [`RingError::Memory`] if `mem` breaks
    /// the [`RingMemory`] contract.
    pub fn init(mem: M) -> Result<Self, RingError> {
        Self::init_at(mem, 0)
    }

    /// As [`init`](Self::init) but with every index starting at `start`
    /// (events at `start + 1`), e.g. near `u32::MAX` to exercise wrap-around.
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn init_at(mem: M, start: u32) -> Result<Self, RingError> {
        {
            let page = mem.ring_page();
            shared::check_page(&page)?;
            shared::zero(&page, PVT_OFFSET, SRING_HEADER_SIZE - PVT_OFFSET)?;
            store_idx(&page, REQ_EVENT_OFFSET, start.wrapping_add(1))?;
            store_idx(&page, RSP_EVENT_OFFSET, start.wrapping_add(1))?;
            store_idx(&page, RSP_PROD_OFFSET, start)?;
            store_idx(&page, REQ_PROD_OFFSET, start)?;
        }
        Ok(Self { mem, req_prod_pvt: start, rsp_cons: start, req_prod_pushed: start, _kind: PhantomData })
    }

    /// Attaches to an already initialised page, resuming from the shared
    /// indices (C: `FRONT_RING_ATTACH`): `req_prod_pvt = req_prod`,
    /// `rsp_cons = rsp_prod`; requests in between are still outstanding.
    ///
    /// # Errors
    /// [`RingError::AttachOverflow`] if `req_prod - rsp_prod > SIZE`; memory
    /// errors as [`init`](Self::init).
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let (req_prod, rsp_prod) = {
            let page = mem.ring_page();
            shared::check_page(&page)?;
            (load_idx(&page, REQ_PROD_OFFSET)?, load_idx(&page, RSP_PROD_OFFSET)?)
        };
        if req_prod.wrapping_sub(rsp_prod) > K::SIZE {
            return Err(RingError::AttachOverflow { req_prod, rsp_prod });
        }
        Ok(Self { mem, req_prod_pvt: req_prod, rsp_cons: rsp_prod, req_prod_pushed: req_prod, _kind: PhantomData })
    }

    /// Number of requests that can still be queued (C: `RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        K::SIZE - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// True if no request can be queued (C: `RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests queued or published that have no consumed response yet.
    pub fn outstanding_requests(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next slot. It is not visible to the backend
    /// until [`push_requests_and_check_notify`](Self::push_requests_and_check_notify).
    ///
    /// # Errors
    /// [`RingError::Full`] if every slot awaits a response.
    pub fn push_request(&mut self, req: K::Req) -> Result<(), RingError> {
        self.push_request_as(req)
    }

    /// As [`push_request`](Self::push_request) for another entry type sharing
    /// the slot, e.g. a [`NetifExtraInfo`](crate::abi::NetifExtraInfo) in a TX
    /// slot. Only the first `E::SIZE` bytes of the slot are written.
    ///
    /// # Errors
    /// As [`push_request`](Self::push_request).
    pub fn push_request_as<E: RingEntry>(&mut self, entry: E) -> Result<(), RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        write_entry::<K, E>(&self.mem.ring_page(), self.req_prod_pvt, &entry)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes queued requests and says whether the backend must be
    /// notified (C: `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): true iff the
    /// backend's `req_event` lies in `(old req_prod, new req_prod]`.
    ///
    /// Returns true (notify, harmless) if `mem` broke its contract.
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        let page = self.mem.ring_page();
        if store_idx(&page, REQ_PROD_OFFSET, new).is_err() {
            return true;
        }
        self.req_prod_pushed = new;
        // The backend must see the new req_prod before we read req_event.
        mb();
        match load_idx(&page, REQ_EVENT_OFFSET) {
            Ok(event) => event_in_batch(event, old, new),
            Err(_) => true,
        }
    }

    /// Loads the shared `rsp_prod` and checks it against what we published.
    fn checked_rsp_prod(&self) -> Result<u32, RingError> {
        let rsp_prod = load_idx(&self.mem.ring_page(), RSP_PROD_OFFSET)?;
        // Responses can only answer published requests: a value outside
        // [rsp_cons, req_prod_pushed] (incl. one moving backwards) is a lie.
        let published = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if rsp_prod.wrapping_sub(self.rsp_cons) > published {
            return Err(RingError::ResponseOverflow {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pushed,
            });
        }
        Ok(rsp_prod)
    }

    /// Number of responses ready (C: `RING_HAS_UNCONSUMED_RESPONSES`),
    /// clamped to the requests published so a lying backend cannot inflate
    /// it; [`next_response`](Self::next_response) reports the lie.
    ///
    /// If `mem` broke its contract, returns the number of published requests
    /// without a response (so the caller calls `next_response`, which
    /// reports the error).
    pub fn unconsumed_responses(&self) -> u32 {
        let published = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        match load_idx(&self.mem.ring_page(), RSP_PROD_OFFSET) {
            Ok(rsp_prod) => rsp_prod.wrapping_sub(self.rsp_cons).min(published),
            Err(_) => published,
        }
    }

    /// True if the shared `rsp_prod` is impossible (C:
    /// `RING_RESPONSE_PROD_OVERFLOW`, tightened to the published requests).
    pub fn response_overflow(&self) -> bool {
        self.checked_rsp_prod().is_err()
    }

    /// Consumes the next response, copied once out of its slot; `Ok(None)`
    /// if there is none.
    ///
    /// # Errors
    /// [`RingError::ResponseOverflow`] if the backend's `rsp_prod` is
    /// impossible (hostile backend); nothing is consumed then.
    pub fn next_response(&mut self) -> Result<Option<K::Rsp>, RingError> {
        self.next_response_as()
    }

    /// As [`next_response`](Self::next_response), decoding the slot as `E`
    /// (e.g. an RX extra-info slot as [`NetifExtraInfo`](crate::abi::NetifExtraInfo)).
    ///
    /// # Errors
    /// As [`next_response`](Self::next_response).
    pub fn next_response_as<E: RingEntry>(&mut self) -> Result<Option<E>, RingError> {
        let rsp_prod = self.checked_rsp_prod()?;
        if rsp_prod == self.rsp_cons {
            return Ok(None);
        }
        let rsp = read_entry::<K, E>(&self.mem.ring_page(), self.rsp_cons)?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Before sleeping (C: `RING_FINAL_CHECK_FOR_RESPONSES`): true if
    /// responses are pending; otherwise sets `rsp_event = rsp_cons + 1` so the
    /// next response notifies us, and re-checks to close the race.
    pub fn final_check_for_responses(&mut self) -> bool {
        if self.unconsumed_responses() > 0 {
            return true;
        }
        self.set_rsp_event(self.rsp_cons.wrapping_add(1));
        self.unconsumed_responses() > 0
    }

    /// Sets `rsp_event` to `idx` (batching: notify only once `rsp_prod`
    /// reaches `idx`), followed by a full barrier so that a re-check of the
    /// responses after this call cannot miss a notification.
    pub fn set_rsp_event(&mut self, idx: u32) {
        // A failed store leaves the old event; unconsumed_responses then
        // reports outstanding work (contract breach only).
        let _ = store_idx(&self.mem.ring_page(), RSP_EVENT_OFFSET, idx);
        mb();
    }

    /// Private request producer (requests written, published or not).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Last `req_prod` published to the backend.
    pub fn req_prod_pushed(&self) -> u32 {
        self.req_prod_pushed
    }

    /// Private response consumer.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// The shared `rsp_prod` as currently written by the backend (diagnostics).
    ///
    /// # Errors
    /// [`RingError::Memory`] if `mem` broke its contract.
    pub fn rsp_prod(&self) -> Result<u32, RingError> {
        load_idx(&self.mem.ring_page(), RSP_PROD_OFFSET)
    }

    /// The ring memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Detaches, returning the ring memory.
    pub fn into_memory(self) -> M {
        self.mem
    }
}
