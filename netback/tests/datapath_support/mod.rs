//! Shared pieces of the data-path tests: a frontend driven by hand over `FrontRing` (so tests
//! can write hostile requests), and the backend side (connect + spawn on a switch port).

use anyhow::{Context, ensure};
use grant::sim::{Credentials, DomainConfig, SimEventChannel};
use grant::{Access, DomId, EventChannel, EventChannels, GrantAlloc, SharedPages};
use netback::switch::Switch;
use netback::vif::{
    Datapath, DatapathConfig, DatapathError, EventChannelSpec, FatalCallback, RingParams, VifCounters, VifId,
    WorkerHandle,
};
use netif::{FrontRing, RxRequest, RxResponse, RxRing, TxRequest, TxResponse, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::{Session, SimHost};
use std::os::fd::AsFd;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use vm_memory::Bytes;

/// Limit of every wait; generous because tests run in parallel.
pub const WAIT: Duration = Duration::from_secs(30);
/// Buffer pages of a hand-driven frontend: the first `TX_BUFS` carry TX frames, the rest
/// are RX buffers.
pub const TX_BUFS: usize = 32;
/// RX buffer pages.
pub const RX_BUFS: usize = 32;

/// A frontend written by hand: its rings, its channel and its buffer pages.
pub struct HandFront {
    pub domid: DomId,
    pub mac: [u8; 6],
    pub session: Session,
    pub tx: FrontRing<TxRing, SharedPages>,
    pub rx: FrontRing<RxRing, SharedPages>,
    pub channel: SimEventChannel,
    /// `TX_BUFS + RX_BUFS` pages granted read-write to dom0.
    pub bufs: SharedPages,
}

impl HandFront {
    /// Creates a guest domain and, as that guest, shares and initialises both rings,
    /// allocates the buffers and an unbound event channel for dom0.
    pub fn new(host: &SimHost, name: &str, mac: [u8; 6]) -> anyhow::Result<Self> {
        let spec = host.create_domain(name, DomainConfig::default())?;
        let session = simhost::join(host.dir(), Credentials::Guest { token: spec.token })?;
        let dom = &session.domain;
        let tx = FrontRing::init(dom.share(0, 1, Access::ReadWrite)?)?;
        let rx = FrontRing::init(dom.share(0, 1, Access::ReadWrite)?)?;
        let bufs = dom.share(0, TX_BUFS + RX_BUFS, Access::ReadWrite)?;
        let channel = dom.alloc_unbound(0)?;
        Ok(Self { domid: spec.domid, mac, session, tx, rx, channel, bufs })
    }

    /// What the frontend would publish in xenstore.
    pub fn params(&self) -> RingParams {
        RingParams {
            tx_ring_ref: self.tx.memory().grefs()[0],
            rx_ring_ref: self.rx.memory().grefs()[0],
            event_channels: EventChannelSpec::Shared(self.channel.port()),
        }
    }

    /// Writes `frame` into TX buffer `buf` at `offset` and returns a request for it.
    pub fn tx_request(&self, buf: usize, offset: u16, frame: &[u8], flags: u16) -> TxRequest {
        assert!(buf < TX_BUFS);
        let page = self.bufs.page(buf).expect("TX buffer page");
        page.write_slice(frame, usize::from(offset)).expect("frame fits the page");
        TxRequest { gref: self.bufs.grefs()[buf], offset, flags, id: buf as u16, size: frame.len() as u16 }
    }

    /// Pushes requests (as one batch) and notifies the backend if it asked to be.
    pub fn push_tx(&mut self, reqs: &[TxRequest]) -> anyhow::Result<()> {
        for req in reqs {
            self.tx.push_request(*req)?;
        }
        if self.tx.push_requests_and_check_notify() {
            self.channel.notify()?;
        }
        Ok(())
    }

    /// Posts RX buffers `first..first + n` (ids = buffer index).
    pub fn post_rx(&mut self, first: usize, n: usize) -> anyhow::Result<()> {
        for i in first..first + n {
            let gref = self.bufs.grefs()[TX_BUFS + i];
            self.rx.push_request(RxRequest { id: i as u16, pad: 0, gref })?;
        }
        if self.rx.push_requests_and_check_notify() {
            self.channel.notify()?;
        }
        Ok(())
    }

    /// Waits for `n` TX responses.
    pub fn wait_tx(&mut self, n: usize) -> anyhow::Result<Vec<TxResponse>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(rsp) = self.tx.next_response()? {
                got.push(rsp);
            }
            if got.len() >= n {
                return Ok(got);
            }
            if self.tx.final_check_for_responses() {
                continue;
            }
            self.wait_event(deadline).with_context(|| format!("{} of {n} TX responses", got.len()))?;
        }
    }

    /// Waits for `n` RX responses; returns each with its buffer's bytes (`status` of them).
    pub fn wait_rx(&mut self, n: usize) -> anyhow::Result<Vec<(RxResponse, Vec<u8>)>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(rsp) = self.rx.next_response()? {
                let len = usize::try_from(rsp.status).unwrap_or(0);
                let mut data = vec![0; len];
                let page = self.bufs.page(TX_BUFS + usize::from(rsp.id)).context("RX buffer id")?;
                page.read_slice(&mut data, usize::from(rsp.offset))?;
                got.push((rsp, data));
            }
            if got.len() >= n {
                return Ok(got);
            }
            if self.rx.final_check_for_responses() {
                continue;
            }
            self.wait_event(deadline).with_context(|| format!("{} of {n} RX responses", got.len()))?;
        }
    }

    fn wait_event(&self, deadline: Instant) -> anyhow::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "timed out");
        let mut fds = [PollFd::new(self.channel.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX))?;
        self.channel.take_pending()?;
        self.channel.unmask()?;
        Ok(())
    }
}

/// An Ethernet frame of `len` bytes from `src` to `dst`, payload byte `fill`.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// A running vif, and what its worker reported.
pub struct Vif {
    pub handle: Option<WorkerHandle>,
    pub counters: Arc<VifCounters>,
    /// Receives `(vif, error)` when the worker calls `on_fatal`.
    pub fatal: mpsc::Receiver<(VifId, String, bool)>,
}

impl Vif {
    /// Connects to `params` of `domid` as dom0 and spawns the worker on a new port of `switch`.
    pub fn start(
        dom0: &Session,
        switch: &Arc<Switch>,
        domid: DomId,
        params: &RingParams,
        config: DatapathConfig,
    ) -> anyhow::Result<Self> {
        let id = VifId { domid, handle: 0 };
        let dp = Datapath::connect(dom0.domain.clone(), id, params, config)?;
        let port = switch.add_port(&id.to_string())?;
        let counters = Arc::new(VifCounters::default());
        let (tx, fatal) = mpsc::channel();
        let on_fatal: FatalCallback = Box::new(move |id, e: &DatapathError| {
            let _ = tx.send((id, e.to_string(), matches!(e, DatapathError::TxProtocol(_))));
        });
        let handle = dp.spawn(port, counters.clone(), on_fatal)?;
        Ok(Self { handle: Some(handle), counters, fatal })
    }

    /// The worker handle (present until stopped).
    pub fn handle(&self) -> &WorkerHandle {
        self.handle.as_ref().expect("worker not stopped yet")
    }

    /// Waits until the worker thread has ended on its own.
    pub fn wait_finished(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !self.handle().is_finished() {
            ensure!(Instant::now() < deadline, "worker never finished");
            std::thread::yield_now();
        }
        Ok(())
    }
}
