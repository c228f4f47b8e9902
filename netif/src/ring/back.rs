//! The backend half of a shared ring (C: `*_back_ring`, `BACK_RING_*`).

use core::fmt;
use core::marker::PhantomData;

use super::shared::{self, event_in_batch, load_idx, mb, read_entry, store_idx, write_entry};
use super::{REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_PROD_OFFSET, RingError, RingKind, RingMemory};
use crate::abi::RingEntry;

/// The backend end of a ring: consumes requests, produces responses.
///
/// Invariants (all wrapping `u32`):
/// * `req_cons - rsp_prod_pvt <= SIZE`: consumed requests awaiting our
///   response; responses go in order at `rsp_prod_pvt`, one per consumed
///   request, so each lands in the slot of the request it answers (required
///   for RX, see [`RxRing`](super::RxRing));
/// * `rsp_prod_pushed` lies in `[.., rsp_prod_pvt]`: last published value.
///
/// The frontend is untrusted: the shared `req_prod` is re-validated on every
/// read and a slot is copied once before decoding.
pub struct BackRing<K: RingKind, M: RingMemory> {
    mem: M,
    /// Requests consumed.
    req_cons: u32,
    /// Responses written to slots (published or not).
    rsp_prod_pvt: u32,
    /// Last value stored in the shared `rsp_prod`.
    rsp_prod_pushed: u32,
    _kind: PhantomData<fn() -> K>,
}

impl<K: RingKind, M: RingMemory> fmt::Debug for BackRing<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &K::SIZE)
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("rsp_prod_pushed", &self.rsp_prod_pushed)
            .finish_non_exhaustive()
    }
}

impl<K: RingKind, M: RingMemory> BackRing<K, M> {
    /// Number of slots.
    pub const SIZE: u32 = K::SIZE;

    /// Attaches to a ring the frontend initialised (C: `BACK_RING_ATTACH`
    /// from the shared `rsp_prod`, as Linux `xenvif_map_frontend_data_rings`).
    ///
    /// # Errors
    /// [`RingError::AttachOverflow`] if `req_prod - rsp_prod > SIZE`;
    /// [`RingError::PageTooSmall`] / [`RingError::Memory`] if `mem` breaks the
    /// [`RingMemory`] contract.
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let rsp_prod = {
            let page = mem.ring_page();
            shared::check_page(&page)?;
            load_idx(&page, RSP_PROD_OFFSET)?
        };
        let ring =
            Self { mem, req_cons: rsp_prod, rsp_prod_pvt: rsp_prod, rsp_prod_pushed: rsp_prod, _kind: PhantomData };
        match ring.checked_req_prod() {
            Ok(_) => Ok(ring),
            Err(RingError::RequestOverflow { req_prod, .. }) => Err(RingError::AttachOverflow { req_prod, rsp_prod }),
            Err(e) => Err(e),
        }
    }

    /// Re-attaches with saved private indices (hitless restart of the
    /// backend process): responses written but not yet published stay in
    /// their slots and are published by the next push.
    ///
    /// # Errors
    /// [`RingError::AttachIndices`] unless `req_cons - rsp_prod_pvt <= SIZE`
    /// and `rsp_prod_pvt - rsp_prod <= SIZE` (shared `rsp_prod`);
    /// [`RingError::AttachOverflow`] if the shared `req_prod` is impossible.
    pub fn attach_at(mem: M, req_cons: u32, rsp_prod_pvt: u32) -> Result<Self, RingError> {
        let rsp_prod = {
            let page = mem.ring_page();
            shared::check_page(&page)?;
            load_idx(&page, RSP_PROD_OFFSET)?
        };
        if req_cons.wrapping_sub(rsp_prod_pvt) > K::SIZE || rsp_prod_pvt.wrapping_sub(rsp_prod) > K::SIZE {
            return Err(RingError::AttachIndices { req_cons, rsp_prod_pvt, rsp_prod });
        }
        let ring = Self { mem, req_cons, rsp_prod_pvt, rsp_prod_pushed: rsp_prod, _kind: PhantomData };
        match ring.checked_req_prod() {
            Ok(_) => Ok(ring),
            Err(RingError::RequestOverflow { req_prod, .. }) => {
                Err(RingError::AttachOverflow { req_prod, rsp_prod: rsp_prod_pvt })
            }
            Err(e) => Err(e),
        }
    }

    /// Requests we may still consume before responding: `SIZE` minus those
    /// consumed and unanswered.
    fn space(&self) -> u32 {
        K::SIZE - self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Loads the shared `req_prod` (once, `Acquire`) and validates it.
    fn checked_req_prod(&self) -> Result<u32, RingError> {
        let req_prod = load_idx(&self.mem.ring_page(), REQ_PROD_OFFSET)?;
        // More requests than free slots, or req_prod behind req_cons (which
        // wraps to a huge count), can only come from a hostile frontend. This
        // implies C's RING_REQUEST_PROD_OVERFLOW (req_prod - rsp_prod_pvt > SIZE).
        if req_prod.wrapping_sub(self.req_cons) > self.space() {
            return Err(RingError::RequestOverflow {
                req_prod,
                req_cons: self.req_cons,
                rsp_prod_pvt: self.rsp_prod_pvt,
            });
        }
        Ok(req_prod)
    }

    /// Number of requests ready (C: `RING_HAS_UNCONSUMED_REQUESTS`):
    /// `min(req_prod - req_cons, SIZE - (req_cons - rsp_prod_pvt))`. The clamp
    /// keeps a lying `req_prod` harmless for counting; [`next_request`](Self::next_request)
    /// reports the lie.
    ///
    /// If `mem` broke its contract, returns the clamp value (so the caller
    /// calls `next_request`, which reports the error).
    pub fn unconsumed_requests(&self) -> u32 {
        match load_idx(&self.mem.ring_page(), REQ_PROD_OFFSET) {
            Ok(req_prod) => req_prod.wrapping_sub(self.req_cons).min(self.space()),
            Err(_) => self.space(),
        }
    }

    /// True if the shared `req_prod` is impossible: the frontend is
    /// ill-behaved (C: `RING_REQUEST_PROD_OVERFLOW`, i.e.
    /// `req_prod - rsp_prod_pvt > SIZE`, plus `req_prod` moving behind
    /// `req_cons`). Also true if `mem` broke its contract.
    pub fn request_overflow(&self) -> bool {
        self.checked_req_prod().is_err()
    }

    /// Consumes the next request, copied once out of its slot; `Ok(None)` if
    /// there is none.
    ///
    /// # Errors
    /// [`RingError::RequestOverflow`] if the frontend's `req_prod` is
    /// impossible (hostile frontend: disable the interface); nothing is
    /// consumed then.
    pub fn next_request(&mut self) -> Result<Option<K::Req>, RingError> {
        self.next_request_as()
    }

    /// As [`next_request`](Self::next_request), decoding the slot as `E`
    /// (e.g. a TX extra-info slot as [`NetifExtraInfo`](crate::abi::NetifExtraInfo)).
    ///
    /// # Errors
    /// As [`next_request`](Self::next_request).
    pub fn next_request_as<E: RingEntry>(&mut self) -> Result<Option<E>, RingError> {
        let req_prod = self.checked_req_prod()?;
        if req_prod == self.req_cons {
            return Ok(None);
        }
        let req = read_entry::<K, E>(&self.mem.ring_page(), self.req_cons)?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Copies the request `ahead` slots after `req_cons` without consuming
    /// it (C: `RING_COPY_REQUEST(r, req_cons + ahead)`); `Ok(None)` if not yet
    /// produced. A later read of the same slot may differ (hostile peer):
    /// use the peeked copies and [`skip_requests`](Self::skip_requests), or
    /// validate again what `next_request` returns.
    ///
    /// # Errors
    /// [`RingError::RequestOverflow`] as [`next_request`](Self::next_request).
    pub fn peek_request(&self, ahead: u32) -> Result<Option<K::Req>, RingError> {
        self.peek_request_as(ahead)
    }

    /// As [`peek_request`](Self::peek_request), decoding the slot as `E`.
    ///
    /// # Errors
    /// As [`peek_request`](Self::peek_request).
    pub fn peek_request_as<E: RingEntry>(&self, ahead: u32) -> Result<Option<E>, RingError> {
        let req_prod = self.checked_req_prod()?;
        if ahead >= req_prod.wrapping_sub(self.req_cons) {
            return Ok(None);
        }
        read_entry::<K, E>(&self.mem.ring_page(), self.req_cons.wrapping_add(ahead)).map(Some)
    }

    /// Consumes `n` requests without reading them (after peeking them).
    ///
    /// # Errors
    /// [`RingError::SkipRequests`] if fewer than `n` are available (nothing
    /// is consumed); [`RingError::RequestOverflow`] as `next_request`.
    pub fn skip_requests(&mut self, n: u32) -> Result<(), RingError> {
        let available = self.checked_req_prod()?.wrapping_sub(self.req_cons);
        if n > available {
            return Err(RingError::SkipRequests { n, available });
        }
        self.req_cons = self.req_cons.wrapping_add(n);
        Ok(())
    }

    /// Consumed requests that have no response yet.
    pub fn unanswered_requests(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Writes `rsp` into the slot at `rsp_prod_pvt` (the slot of the oldest
    /// unanswered request). Not visible to the frontend until
    /// [`push_responses_and_check_notify`](Self::push_responses_and_check_notify).
    ///
    /// # Errors
    /// [`RingError::UnmatchedResponse`] if every consumed request already
    /// has a response.
    pub fn push_response(&mut self, rsp: K::Rsp) -> Result<(), RingError> {
        self.push_response_as(rsp)
    }

    /// As [`push_response`](Self::push_response) for another entry type
    /// sharing the slot, e.g. a [`NetifExtraInfo`](crate::abi::NetifExtraInfo)
    /// in an RX slot. Only the first `E::SIZE` bytes of the slot are written.
    ///
    /// # Errors
    /// As [`push_response`](Self::push_response).
    pub fn push_response_as<E: RingEntry>(&mut self, entry: E) -> Result<(), RingError> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::UnmatchedResponse { rsp_prod_pvt: self.rsp_prod_pvt, req_cons: self.req_cons });
        }
        write_entry::<K, E>(&self.mem.ring_page(), self.rsp_prod_pvt, &entry)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes written responses and says whether the frontend must be
    /// notified (C: `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`): true iff the
    /// frontend's `rsp_event` lies in `(old rsp_prod, new rsp_prod]`.
    ///
    /// Returns true (notify, harmless) if `mem` broke its contract.
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        let page = self.mem.ring_page();
        if store_idx(&page, RSP_PROD_OFFSET, new).is_err() {
            return true;
        }
        self.rsp_prod_pushed = new;
        // The frontend must see the new rsp_prod before we read rsp_event.
        mb();
        match load_idx(&page, super::RSP_EVENT_OFFSET) {
            Ok(event) => event_in_batch(event, old, new),
            Err(_) => true,
        }
    }

    /// Before sleeping (C: `RING_FINAL_CHECK_FOR_REQUESTS`): true if requests
    /// are pending; otherwise sets `req_event = req_cons + 1` and re-checks.
    pub fn final_check_for_requests(&mut self) -> bool {
        self.final_check_for_requests_with_event(1)
    }

    /// As [`final_check_for_requests`](Self::final_check_for_requests) with
    /// `req_event = req_cons + ahead` to batch work ("customised FINAL_CHECK"
    /// of ring.h): the frontend notifies only once `ahead` new requests are
    /// published. `ahead` is clamped to `1..=SIZE - (req_cons - rsp_prod_pushed)`,
    /// the furthest `req_prod` the frontend can reach with the responses
    /// already published (beyond it the ring would stall). Batching can still
    /// delay a lone request indefinitely: pair it with a timer.
    pub fn final_check_for_requests_with_event(&mut self, ahead: u32) -> bool {
        if self.unconsumed_requests() > 0 {
            return true;
        }
        let reachable = K::SIZE.saturating_sub(self.req_cons.wrapping_sub(self.rsp_prod_pushed));
        let ahead = ahead.clamp(1, reachable.max(1));
        self.set_req_event(self.req_cons.wrapping_add(ahead));
        self.unconsumed_requests() > 0
    }

    /// Sets `req_event` to `idx` (notify when `req_prod` reaches `idx`; Linux
    /// RX uses `req_prod + needed` while waiting for slots), followed by a
    /// full barrier so that a re-check after this call cannot miss a
    /// notification.
    pub fn set_req_event(&mut self, idx: u32) {
        // A failed store leaves the old event; unconsumed_requests then
        // reports work (contract breach only).
        let _ = store_idx(&self.mem.ring_page(), REQ_EVENT_OFFSET, idx);
        mb();
    }

    /// Private request consumer.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Private response producer (responses written, published or not).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Last `rsp_prod` published to the frontend.
    pub fn rsp_prod_pushed(&self) -> u32 {
        self.rsp_prod_pushed
    }

    /// The shared `req_prod` as currently written by the frontend
    /// (diagnostics only: unvalidated).
    ///
    /// # Errors
    /// [`RingError::Memory`] if `mem` broke its contract.
    pub fn req_prod(&self) -> Result<u32, RingError> {
        load_idx(&self.mem.ring_page(), REQ_PROD_OFFSET)
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
