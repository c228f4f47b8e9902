//! The connected netfront device: rings, buffer pools, send/receive and notifications.
//!
//! One page per TX buffer (granted read-only) and per RX buffer (granted read-write);
//! single-slot frames only (`feature-sg=0`), so a frame is at most one page.

mod rx;

use crate::xenbus::{self, BackendFeatures, FrontendInfo, XenbusError, XenbusState};
use grant::{Access, EventChannel, EventChannels, EvtchnError, GrantAlloc, PAGE_SIZE, SharedPages};
use netif::abi::{NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY};
use netif::{FrontRing, RingError, RingKind, RxRing, TxRequest, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vm_memory::Bytes;
use xenstore::Client;

/// Sizing and timeouts of a [`Netfront`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetfrontConfig {
    /// TX buffer pages (1..=256): frames in flight towards the backend.
    pub tx_buffers: u16,
    /// RX buffer pages (1..=256) kept posted on the RX ring.
    pub rx_buffers: u16,
    /// Limit for each handshake wait and for `send` waiting for a free TX buffer.
    pub timeout: Duration,
}

impl Default for NetfrontConfig {
    /// 64 TX buffers, a full RX ring (256), 10 s.
    fn default() -> Self {
        Self { tx_buffers: 64, rx_buffers: 256, timeout: Duration::from_secs(10) }
    }
}

/// Counters of a [`Netfront`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames pushed on the TX ring.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// TX responses with `NETIF_RSP_ERROR` or `NETIF_RSP_DROPPED`.
    pub tx_errors: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// RX responses with status ≤ 0 or a bad offset/length.
    pub rx_errors: u64,
    /// Multi-slot RX frames (`more_data`/`extra_info`) dropped, unsupported for now.
    pub rx_dropped_chains: u64,
    /// Responses that break the protocol (unknown TX id, `NETIF_RSP_NULL`, ...).
    pub protocol_errors: u64,
    /// Notifications sent to the backend.
    pub notifications_sent: u64,
    /// Notifications received from the backend.
    pub notifications_received: u64,
}

/// Failures of the data path.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The frame is empty or does not fit one page.
    #[error("frame of {len} bytes: only 1..={PAGE_SIZE} fits one slot")]
    FrameSize { len: usize },
    /// No TX buffer came back within the timeout.
    #[error("no free TX buffer within {0:?}")]
    TxTimeout(Duration),
    /// A ring operation failed (a lying backend, or a bug).
    #[error("{ring} ring")]
    Ring {
        ring: &'static str,
        #[source]
        source: RingError,
    },
    /// Copying a frame into or out of a shared page.
    #[error("accessing buffer page {index}")]
    Buffer {
        index: usize,
        #[source]
        source: vm_memory::VolatileMemoryError,
    },
    /// Notifying the backend.
    #[error("notifying the backend")]
    Notify(#[source] EvtchnError),
    /// Waiting on or acknowledging the event channel.
    #[error("waiting for the event channel")]
    Wait(#[source] std::io::Error),
}

pub(crate) fn tx_ring_err(source: RingError) -> DeviceError {
    DeviceError::Ring { ring: "TX", source }
}

/// A connected netfront over event channels of type `C`.
///
/// Invariants:
/// * TX buffer `i` is in `tx_free` xor `tx_busy[i]`; a busy buffer has exactly one request
///   with id `i` outstanding on the TX ring, so `tx_buffers ≤ 256` keeps the ring from filling;
/// * `rx_slot_buf[s]` is `Some(b)` iff the RX request in ring slot `s` is outstanding and
///   names buffer `b`; every RX buffer is posted except while `recv` handles its response.
#[derive(Debug)]
pub struct Netfront<C: EventChannel> {
    xs: Client,
    info: FrontendInfo,
    features: BackendFeatures,
    config: NetfrontConfig,
    tx: FrontRing<TxRing, SharedPages>,
    rx: FrontRing<RxRing, SharedPages>,
    tx_pages: SharedPages,
    rx_pages: SharedPages,
    tx_free: Vec<u16>,
    tx_busy: Vec<bool>,
    rx_slot_buf: Vec<Option<u16>>,
    rx_chain: rx::Chain,
    channel: C,
    stats: Stats,
    /// Kept apart so that [`Netfront::wait`] can count with `&self`.
    notifications_received: AtomicU64,
    closed: bool,
}

impl<C: EventChannel> Netfront<C> {
    /// Connects `device/vif/<handle>` like Linux netfront: reads the toolstack's keys,
    /// says Initialising if it is not already, waits for the backend's InitWait, checks its features, shares and initialises both
    /// rings and the buffer pools, allocates the event channel, posts the RX buffers,
    /// publishes everything with `state=Connected` in one transaction, waits for the
    /// backend's Connected and kicks it once.
    pub fn connect<G>(domain: &G, xs: Client, handle: u32, config: NetfrontConfig) -> Result<Self, XenbusError>
    where
        G: GrantAlloc + EventChannels<Channel = C>,
    {
        let info = xenbus::read_frontend(&xs, handle)?;
        let backend = info.backend.clone();
        let t = config.timeout;
        // A frontend (re)starting says Initialising, so a backend left Closed by an
        // earlier connection goes back to InitWait.
        if xenbus::read_state(&xs, &info.dir).ok().flatten() != Some(XenbusState::Initialising) {
            xenbus::write_state(&xs, &info.dir, XenbusState::Initialising)?;
        }
        xenbus::wait_backend_state(&xs, &backend, XenbusState::InitWait, t, |s| {
            matches!(s, Some(XenbusState::InitWait | XenbusState::Initialised))
        })?;
        let features = xenbus::read_backend_features(&xs, &backend)?;
        let dom = info.backend_id;
        let share_ring =
            |ring| domain.share(dom, 1, Access::ReadWrite).map_err(|source| XenbusError::ShareRing { ring, source });
        let (tx_page, rx_page) = (share_ring("TX")?, share_ring("RX")?);
        let (tx_ref, rx_ref) = (tx_page.grefs()[0], rx_page.grefs()[0]);
        let tx = FrontRing::init(tx_page).map_err(|source| XenbusError::InitRing { ring: "TX", source })?;
        let rx = FrontRing::init(rx_page).map_err(|source| XenbusError::InitRing { ring: "RX", source })?;
        let n_tx = config.tx_buffers.clamp(1, TxRing::SIZE as u16);
        let n_rx = config.rx_buffers.clamp(1, RxRing::SIZE as u16);
        let share_pool = |pool, pages: u16, access| {
            let pages = usize::from(pages);
            domain.share(dom, pages, access).map_err(|source| XenbusError::ShareBuffers { pool, pages, source })
        };
        let tx_pages = share_pool("TX", n_tx, Access::ReadOnly)?;
        let rx_pages = share_pool("RX", n_rx, Access::ReadWrite)?;
        let channel =
            domain.alloc_unbound(dom).map_err(|source| XenbusError::AllocEventChannel { backend_id: dom, source })?;
        let mut nf = Self {
            xs,
            info,
            features,
            config,
            tx,
            rx,
            tx_pages,
            rx_pages,
            // Reversed so that `pop` hands out buffer 0 first.
            tx_free: (0..n_tx).rev().collect(),
            tx_busy: vec![false; usize::from(n_tx)],
            rx_slot_buf: vec![None; RxRing::SIZE as usize],
            rx_chain: rx::Chain::Idle,
            channel,
            stats: Stats::default(),
            notifications_received: AtomicU64::new(0),
            closed: false,
        };
        for buf in 0..n_rx {
            nf.post_rx(buf).map_err(XenbusError::PostRxBuffers)?;
        }
        // The backend reads req_prod when it attaches; no notification is due yet.
        nf.rx.push_requests_and_check_notify();
        let port = nf.channel.port();
        xenbus::publish_rings(&nf.xs, &nf.info.dir, tx_ref, rx_ref, port)?;
        xenbus::wait_backend_state(&nf.xs, &backend, XenbusState::Connected, t, |s| s == Some(XenbusState::Connected))?;
        xenbus::kick(&nf.channel)?;
        nf.stats.notifications_sent += 1;
        tracing::debug!(dir = %nf.info.dir, tx_ref, rx_ref, port, "netfront connected");
        Ok(nf)
    }

    /// Closes like Linux netfront (Closing, wait for the backend's Closing/Closed, Closed),
    /// then revokes the rings and buffers. Returns the final counters.
    pub fn disconnect(mut self) -> Result<Stats, XenbusError> {
        self.closed = true;
        xenbus::close(&self.xs, &self.info.dir, &self.info.backend, self.config.timeout)?;
        Ok(self.stats())
    }

    /// What the toolstack told us (directory, backend, MAC).
    pub fn info(&self) -> &FrontendInfo {
        &self.info
    }

    /// Our MAC address.
    pub fn mac(&self) -> crate::mac::Mac {
        self.info.mac
    }

    /// The backend's features as read at connect time.
    pub fn backend_features(&self) -> BackendFeatures {
        self.features
    }

    /// The event channel (its fd is readable when the backend notified us).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats { notifications_received: self.notifications_received.load(Ordering::Relaxed), ..self.stats }
    }

    /// Frees the TX buffers of every TX response; returns how many responses were reaped.
    pub fn reap_tx(&mut self) -> Result<usize, DeviceError> {
        let mut reaped = 0;
        while let Some(rsp) = self.tx.next_response().map_err(tx_ring_err)? {
            reaped += 1;
            match rsp.status {
                NETIF_RSP_OKAY => {}
                NETIF_RSP_ERROR | NETIF_RSP_DROPPED => self.stats.tx_errors += 1,
                // NETIF_RSP_NULL answers extra-info slots, which we never send.
                _ => self.stats.protocol_errors += 1,
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

    /// Free TX buffers after reaping responses: how many frames `send` takes without waiting.
    pub fn tx_available(&mut self) -> Result<usize, DeviceError> {
        self.reap_tx()?;
        Ok(self.tx_free.len())
    }

    /// Copies `frame` into a free TX buffer and pushes one request for it, notifying the
    /// backend if it asked to be. Waits (up to the configured timeout) for a free buffer.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), DeviceError> {
        if frame.is_empty() || frame.len() > PAGE_SIZE {
            return Err(DeviceError::FrameSize { len: frame.len() });
        }
        let id = self.free_tx_buffer()?;
        let index = usize::from(id);
        let page = self.tx_pages.page(index).expect("tx ids index tx_pages");
        page.write_slice(frame, 0).map_err(|source| DeviceError::Buffer { index, source })?;
        let size = u16::try_from(frame.len()).expect("checked ≤ PAGE_SIZE");
        let req = TxRequest { gref: self.tx_pages.grefs()[index], offset: 0, flags: 0, id, size };
        if let Err(source) = self.tx.push_request(req) {
            self.tx_free.push(id);
            return Err(tx_ring_err(source));
        }
        self.tx_busy[index] = true;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += frame.len() as u64;
        if self.tx.push_requests_and_check_notify() {
            self.notify()?;
        }
        Ok(())
    }

    /// A free TX buffer, waiting for TX responses if there is none.
    fn free_tx_buffer(&mut self) -> Result<u16, DeviceError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            if let Some(id) = self.tx_free.pop() {
                return Ok(id);
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

    /// Waits up to `timeout` for a notification; `true` if one arrived (it is consumed).
    ///
    /// Lost-wake-up discipline: call it only after [`Netfront::recv`] returned `None` (which
    /// armed the RX `rsp_event` and re-checked the ring), so any response produced since
    /// then has notified us. Spurious wake-ups are possible (e.g. a TX completion).
    pub fn wait(&self, timeout: Duration) -> Result<bool, DeviceError> {
        let mut fds = [PollFd::new(self.channel.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let ready = poll(&mut fds, ms).map_err(|e| DeviceError::Wait(e.into()))?;
        if ready == 0 {
            return Ok(false);
        }
        let pending = self.channel.take_pending().map_err(|e| DeviceError::Wait(std::io::Error::other(e)))?;
        self.channel.unmask().map_err(|e| DeviceError::Wait(std::io::Error::other(e)))?;
        if pending {
            self.notifications_received.fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn notify(&mut self) -> Result<(), DeviceError> {
        self.channel.notify().map_err(DeviceError::Notify)?;
        self.stats.notifications_sent += 1;
        Ok(())
    }
}

impl<C: EventChannel> Drop for Netfront<C> {
    /// A netfront dropped without [`Netfront::disconnect`] still tells the backend it is
    /// gone (best effort) before its grants are revoked.
    fn drop(&mut self) {
        if !self.closed {
            let _ = xenbus::write_state(&self.xs, &self.info.dir, XenbusState::Closed);
        }
    }
}
