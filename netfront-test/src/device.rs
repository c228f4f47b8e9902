//! The connected netfront device: rings, buffer pools, send/receive and notifications.
//!
//! One page per TX buffer (granted read-only) and per RX buffer (granted read-write).
//! Without scatter-gather a frame is one slot, at most one page; with `feature-sg` in
//! effect a frame of up to 65535 bytes is a chain of page-sized slots (see [`tx`] and
//! [`rx`] for the exact wire layout).

mod meta;
mod misbehave;
mod rx;
mod tx;

pub use meta::{Features, GsoKind, RxMeta, TxMeta, gso_kind, gso_type};
pub use tx::tx_buffers_needed;

use crate::xenbus::{self, BackendFeatures, FrontendInfo, XenbusError, XenbusState};
use grant::{Access, EventChannel, EventChannels, EvtchnError, GrantAlloc, PAGE_SIZE, SharedPages};
use netif::{FrontRing, RingError, RingKind, RxRing, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use xenstore::Client;

/// Sizing and timeouts of a [`Netfront`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetfrontConfig {
    /// TX buffer pages (1..=256), one per TX data slot in flight towards the backend
    /// (a 65535-byte frame takes 16).
    pub tx_buffers: u16,
    /// RX buffer pages (1..=256) kept posted on the RX ring. With scatter-gather keep at
    /// least 17 (a 64 KiB frame with its GSO extra), better the full 256.
    pub rx_buffers: u16,
    /// Limit for each handshake wait and for `send` waiting for free TX buffers.
    pub timeout: Duration,
    /// The offloads asked for; [`Netfront::features`] says which are in effect.
    pub features: Features,
}

impl Default for NetfrontConfig {
    /// 128 TX buffers (eight 64 KiB frames in flight), a full RX ring (256), 10 s, no
    /// offloads (single-slot frames, `feature-no-csum-offload=1`).
    fn default() -> Self {
        Self { tx_buffers: 128, rx_buffers: 256, timeout: Duration::from_secs(10), features: Features::default() }
    }
}

/// Counters of a [`Netfront`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames pushed on the TX ring.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// TX responses with `NETIF_RSP_ERROR`.
    pub tx_errors: u64,
    /// TX responses with `NETIF_RSP_DROPPED`.
    pub tx_dropped: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// RX responses with status ≤ 0 or a bad offset/length.
    pub rx_errors: u64,
    /// Multi-slot RX frames (`more_data`/`extra_info`) dropped because scatter-gather is
    /// not in effect.
    pub rx_dropped_chains: u64,
    /// Responses that break the protocol (unknown TX id, unexpected `NETIF_RSP_NULL`, an
    /// RX slot beyond its page, a chain too long, an extra that is not a negotiated GSO ...).
    pub protocol_errors: u64,
    /// Notifications sent to the backend.
    pub notifications_sent: u64,
    /// Notifications received from the backend.
    pub notifications_received: u64,
}

/// Failures of the data path.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The frame is empty or too long: `max` is 4096 (one slot) without scatter-gather
    /// in effect, 65535 with it.
    #[error(
        "frame of {len} bytes: only 1..={max} bytes can be sent (above {PAGE_SIZE} needs feature-sg on both sides)"
    )]
    FrameSize { len: usize, max: usize },
    /// GSO of this kind is not in effect (it needs scatter-gather and the backend's
    /// `feature-gso-tcpv4`/`-tcpv6`), or the MSS is 0.
    #[error("GSO {kind:?} with MSS {mss} not possible: GSO in effect for TCPv4 {v4}, TCPv6 {v6}")]
    Gso { kind: GsoKind, mss: u16, v4: bool, v6: bool },
    /// The frame needs more TX buffers than the device has.
    #[error("a frame of {len} bytes needs {need} TX buffers, the device has {have}")]
    TooFewTxBuffers { len: usize, need: usize, have: usize },
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
/// * TX buffer `i` is in `tx_free` xor `tx_busy[i]`; a busy buffer has exactly one data
///   request with id `i` outstanding on the TX ring; `tx_extras` extra-info slots are
///   outstanding too (answered by `NETIF_RSP_NULL`); a frame is pushed only when the ring
///   has room for all its slots;
/// * `rx_slot_buf[s]` is `Some(b)` iff the RX request in ring slot `s` is outstanding and
///   names buffer `b`; every RX buffer is posted except while `recv` handles its response.
#[derive(Debug)]
pub struct Netfront<C: EventChannel> {
    xs: Client,
    info: FrontendInfo,
    backend_features: BackendFeatures,
    features: Features,
    config: NetfrontConfig,
    tx: FrontRing<TxRing, SharedPages>,
    rx: FrontRing<RxRing, SharedPages>,
    tx_pages: SharedPages,
    rx_pages: SharedPages,
    tx_free: Vec<u16>,
    tx_busy: Vec<bool>,
    tx_extras: u32,
    rx_slot_buf: Vec<Option<u16>>,
    rx_frame: rx::Assembly,
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
        let backend_features = xenbus::read_backend_features(&xs, &backend)?;
        let features = config.features.negotiate(&backend_features);
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
            backend_features,
            features,
            config,
            tx,
            rx,
            tx_pages,
            rx_pages,
            // Reversed so that `pop` hands out buffer 0 first.
            tx_free: (0..n_tx).rev().collect(),
            tx_busy: vec![false; usize::from(n_tx)],
            tx_extras: 0,
            rx_slot_buf: vec![None; RxRing::SIZE as usize],
            rx_frame: rx::Assembly::default(),
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
        xenbus::publish_rings_with(&nf.xs, &nf.info.dir, tx_ref, rx_ref, port, &nf.features)?;
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

    /// The xenstore connection the device was connected with.
    pub fn xenstore(&self) -> &Client {
        &self.xs
    }

    /// Our MAC address.
    pub fn mac(&self) -> crate::mac::Mac {
        self.info.mac
    }

    /// The backend's features as read at connect time.
    pub fn backend_features(&self) -> BackendFeatures {
        self.backend_features
    }

    /// The offloads in effect: those asked for in [`NetfrontConfig::features`] that the
    /// backend also advertised (see [`Features::negotiate`]); published as our keys.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The longest frame [`Netfront::send_with`] takes: 65535 with scatter-gather in
    /// effect, one page (4096) without.
    pub fn max_frame_len(&self) -> usize {
        if self.features.sg { netif::abi::XEN_NETIF_MAX_TX_SIZE as usize } else { PAGE_SIZE }
    }

    /// The event channel (its fd is readable when the backend notified us).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats { notifications_received: self.notifications_received.load(Ordering::Relaxed), ..self.stats }
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
