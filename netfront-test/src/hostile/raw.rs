//! A frontend that writes its ring requests by hand, for the hostile modes of the
//! `netif.md` §4.2 catalogue: every request field, `req_prod` and notification is the
//! caller's, and responses are read back as they come (no buffer bookkeeping to keep
//! consistent, unlike [`crate::Netfront`]).
//!
//! Buffers: `tx_bufs` page `i` is granted read-only and is the buffer of TX request id `i`;
//! `rx_bufs` pages are granted read-write. Both rings are attached over borrowed pages, so
//! a second thread may scribble on the TX ring while the first pushes
//! ([`super::Mode::DoubleFetch`]).

use super::HostileError;
use crate::device::Features;
use crate::xenbus::{self, FrontendInfo, XenbusError, XenbusState};
use grant::{Access, EventChannel, EventChannels, GrantAlloc, GrantRef, SharedPages};
use netif::ring::REQ_PROD_OFFSET;
use netif::{FrontRing, RingError, RingKind, RingMemory, RxRequest, RxResponse, RxRing, TxRequest, TxResponse, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, MmapRegion};
use xenstore::Client;

/// TX buffer pages (a chain of 22 slots is the longest packet a mode builds).
pub const TX_BUFS: usize = 32;
/// RX buffer pages.
pub const RX_BUFS: usize = 32;

fn ring_err(ring: &'static str) -> impl Fn(RingError) -> HostileError {
    move |source| HostileError::Ring { ring, source }
}

/// Responses of `ring` (named `name` in errors) until `n` came or `within` passed, waiting on
/// `front`'s channel between looks (at most 100 ms at a time).
fn collect_responses<K: RingKind, M: RingMemory, C: EventChannel>(
    ring: &mut FrontRing<K, M>,
    name: &'static str,
    front: &RawFront<C>,
    n: usize,
    within: Duration,
) -> Result<Vec<K::Rsp>, HostileError> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        while let Some(rsp) = ring.next_response().map_err(ring_err(name))? {
            got.push(rsp);
        }
        if got.len() >= n || ring.final_check_for_responses() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        front.wait(left.min(Duration::from_millis(100)))?;
    }
    Ok(got)
}

/// A connected (or connecting) frontend with hand-written rings.
#[derive(Debug)]
pub struct RawFront<C: EventChannel> {
    pub xs: Client,
    pub info: FrontendInfo,
    tx_page: SharedPages,
    rx_page: SharedPages,
    pub tx_bufs: SharedPages,
    pub rx_bufs: SharedPages,
    pub channel: C,
    pub timeout: Duration,
}

impl<C: EventChannel> RawFront<C> {
    /// The handshake of Linux netfront with `features`: Initialising, the backend's
    /// InitWait, rings and buffers shared, the channel allocated, the keys published with
    /// Connected. With `tx_req_prod`, the TX ring's `req_prod` is set to it before the
    /// backend can attach. Waits for the backend's Connected only if `wait_connected`.
    pub fn connect<G>(
        domain: &G,
        xs: Client,
        handle: u32,
        features: &Features,
        timeout: Duration,
        tx_req_prod: Option<u32>,
        wait_connected: bool,
    ) -> Result<Self, HostileError>
    where
        G: GrantAlloc + EventChannels<Channel = C>,
    {
        let info = xenbus::read_frontend(&xs, handle)?;
        if xenbus::read_state(&xs, &info.dir).ok().flatten() != Some(XenbusState::Initialising) {
            xenbus::write_state(&xs, &info.dir, XenbusState::Initialising)?;
        }
        xenbus::wait_backend_state(&xs, &info.backend, XenbusState::InitWait, timeout, |s| {
            matches!(s, Some(XenbusState::InitWait | XenbusState::Initialised))
        })?;
        let dom = info.backend_id;
        let share = |pages, access| domain.share(dom, pages, access);
        let ring = |ring| move |source| XenbusError::ShareRing { ring, source };
        let tx_page = share(1, Access::ReadWrite).map_err(ring("TX"))?;
        let rx_page = share(1, Access::ReadWrite).map_err(ring("RX"))?;
        let bufs = |pool| move |source| XenbusError::ShareBuffers { pool, pages: TX_BUFS, source };
        let tx_bufs = share(TX_BUFS, Access::ReadOnly).map_err(bufs("TX"))?;
        let rx_bufs = share(RX_BUFS, Access::ReadWrite).map_err(bufs("RX"))?;
        FrontRing::<TxRing, _>::init(&*tx_page).map_err(ring_err("TX"))?;
        FrontRing::<RxRing, _>::init(&*rx_page).map_err(ring_err("RX"))?;
        if let Some(req_prod) = tx_req_prod {
            tx_page
                .page(0)
                .expect("one page")
                .store(req_prod, REQ_PROD_OFFSET, Ordering::Release)
                .map_err(|e| HostileError::Ring { ring: "TX", source: RingError::Memory(e) })?;
        }
        let channel =
            domain.alloc_unbound(dom).map_err(|source| XenbusError::AllocEventChannel { backend_id: dom, source })?;
        let (tx_ref, rx_ref) = (tx_page.grefs()[0], rx_page.grefs()[0]);
        xenbus::publish_rings_with(&xs, &info.dir, tx_ref, rx_ref, channel.port(), features)?;
        if wait_connected {
            xenbus::wait_backend_state(&xs, &info.backend, XenbusState::Connected, timeout, |s| {
                s == Some(XenbusState::Connected)
            })?;
        }
        Ok(Self { xs, info, tx_page, rx_page, tx_bufs, rx_bufs, channel, timeout })
    }

    /// Both rings, attached at their shared indices (call once, right after connecting).
    pub fn rings(&self) -> Result<Rings<'_, C>, HostileError> {
        let tx = FrontRing::attach(&*self.tx_page).map_err(ring_err("TX"))?;
        let rx = FrontRing::attach(&*self.rx_page).map_err(ring_err("RX"))?;
        Ok(Rings { front: self, tx, rx })
    }

    /// The TX ring page, for a thread that rewrites requests behind our back.
    pub fn tx_ring_page(&self) -> &MmapRegion {
        &self.tx_page
    }

    /// The grant of TX buffer `i`.
    pub fn tx_gref(&self, i: usize) -> GrantRef {
        self.tx_bufs.grefs()[i]
    }

    /// Writes `bytes` at `offset` of TX buffer `i`.
    pub fn write_tx_buf(&self, i: usize, offset: usize, bytes: &[u8]) -> Result<(), HostileError> {
        let page = self.tx_bufs.page(i).expect("buffer index below TX_BUFS");
        page.write_slice(bytes, offset).map_err(|source| HostileError::Buffer { index: i, source })
    }

    /// Notifies the backend.
    pub fn notify(&self) -> Result<(), HostileError> {
        self.channel.notify().map_err(|e| HostileError::Xenbus(XenbusError::Notify(e)))
    }

    /// Waits up to `timeout` for an event; true if one came (it is consumed).
    pub fn wait(&self, timeout: Duration) -> Result<bool, HostileError> {
        let mut fds = [PollFd::new(self.channel.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let ready = poll(&mut fds, ms).map_err(|e| HostileError::Wait(e.into()))?;
        if ready == 0 {
            return Ok(false);
        }
        self.channel.take_pending().map_err(|e| HostileError::Wait(std::io::Error::other(e)))?;
        self.channel.unmask().map_err(|e| HostileError::Wait(std::io::Error::other(e)))?;
        Ok(true)
    }

    /// Closes like Linux netfront (best effort).
    pub fn close(&self) {
        if let Err(e) = xenbus::close(&self.xs, &self.info.dir, &self.info.backend, self.timeout) {
            tracing::warn!(error = %e, "closing the hostile frontend");
        }
    }
}

/// The two rings of a [`RawFront`].
#[derive(Debug)]
pub struct Rings<'a, C: EventChannel> {
    pub front: &'a RawFront<C>,
    pub tx: FrontRing<TxRing, &'a MmapRegion>,
    pub rx: FrontRing<RxRing, &'a MmapRegion>,
}

impl<C: EventChannel> Rings<'_, C> {
    /// Pushes `reqs` as they are (one `req_prod` update) and notifies the backend.
    pub fn push_tx(&mut self, reqs: &[TxRequest]) -> Result<(), HostileError> {
        for r in reqs {
            self.tx.push_request(*r).map_err(ring_err("TX"))?;
        }
        self.tx.push_requests_and_check_notify();
        self.front.notify()
    }

    /// Posts one RX request per grant in `grefs` (ids 0, 1, …) and notifies the backend.
    pub fn post_rx(&mut self, grefs: &[GrantRef]) -> Result<(), HostileError> {
        for (id, &gref) in grefs.iter().enumerate() {
            self.rx.push_request(RxRequest { id: id as u16, pad: 0, gref }).map_err(ring_err("RX"))?;
        }
        self.rx.push_requests_and_check_notify();
        self.front.notify()
    }

    /// Collects TX responses until `n` came or `within` passed.
    pub fn tx_responses(&mut self, n: usize, within: Duration) -> Result<Vec<TxResponse>, HostileError> {
        collect_responses(&mut self.tx, "TX", self.front, n, within)
    }

    /// Collects RX responses until `n` came or `within` passed.
    pub fn rx_responses(&mut self, n: usize, within: Duration) -> Result<Vec<RxResponse>, HostileError> {
        collect_responses(&mut self.rx, "RX", self.front, n, within)
    }

    /// The requests of one packet carrying `frame`, cut into data slots of `sizes` bytes
    /// (the first holds `sizes[0]`, and its `size` is the total), TX buffers `first_buf..`,
    /// `flags` on the first slot, `more_data` on all but the last. The bytes are written
    /// into the buffers.
    pub fn chain(
        &self,
        frame: &[u8],
        sizes: &[usize],
        first_buf: usize,
        flags: u16,
    ) -> Result<Vec<TxRequest>, HostileError> {
        assert_eq!(sizes.iter().sum::<usize>(), frame.len(), "slot sizes add up to the frame");
        let mut reqs = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let buf = first_buf + i;
            self.front.write_tx_buf(buf, 0, &frame[at..at + n])?;
            at += n;
            let more = if i + 1 < sizes.len() { netif::abi::NETTXF_MORE_DATA } else { 0 };
            let size = if i == 0 { frame.len() } else { n };
            reqs.push(TxRequest {
                gref: self.front.tx_gref(buf),
                offset: 0,
                flags: more | if i == 0 { flags } else { 0 },
                id: buf as u16,
                size: size as u16,
            });
        }
        Ok(reqs)
    }
}
