//! Mapped TX (`tx-map-min`): frames at least that long reach an uplink that gathers as a
//! copied head plus slices of the guest's mapped pages. Checked against the copy path with a
//! hand-driven frontend and a recording uplink: identical bytes and offloads (plain, multi-slot,
//! GSO, blank checksum), the pages mapped while the uplink reads them and unmapped before the
//! slots are answered, a bad grant answered and counted as on the copy path, and the knob
//! switching paths while the vif runs.

#[allow(dead_code)]
mod datapath_support;
#[allow(dead_code)]
mod sg_support;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Instant;

use anyhow::{Context, ensure};
use datapath_support::{HandFront, WAIT};
use grant::sim::{Credentials, GTF_READING};
use grant::{DomId, GrantRef};
use netback::frame::{Frame, Gso, GsoKind, Offload};
use netback::port::{self, PortStats, TransmitOutcome, Uplink};
use netback::vif::{
    Datapath, DatapathConfig, DatapathError, FatalCallback, FrontendFeatures, Knobs, PartialKnobs, VifCounters, VifId,
    WorkerHandle,
};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_EXTRA_INFO};
use netif::{Extra, ExtraInfo, TxRequest};
use nix::sys::eventfd::{EfdFlags, EventFd};
use sg_support::{chain, ipv4, patterned, tcp, udp};
use simhost::{Session, SimHost};

const MAC_H: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x11];
const MAC_X: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0x33];
/// The head a mapped frame keeps (netback's `TX_HEAD_LEN`).
const HEAD: usize = 128;

/// One frame as the uplink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    /// The frame's bytes (head and slices joined by the test).
    data: Vec<u8>,
    offload: Offload,
    /// Whether it came through `transmit_gather` with slices.
    mapped: bool,
    /// Bytes of the private head.
    head: usize,
    /// What the probe said during the call (e.g. whether a TX buffer's grant is pinned).
    probe: bool,
}

/// Frames the uplink got, shared with the test.
#[derive(Default)]
struct Record {
    got: Mutex<Vec<Got>>,
    more: Condvar,
}

impl Record {
    fn push(&self, got: Got) {
        self.got.lock().unwrap().push(got);
        self.more.notify_all();
    }

    /// Waits until `n` frames were received in all; returns frames `from..`.
    fn wait(&self, from: usize, n: usize) -> anyhow::Result<Vec<Got>> {
        let deadline = Instant::now() + WAIT;
        let mut got = self.got.lock().unwrap();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "{} of {n} frames reached the uplink", got.len());
            got = self.more.wait_timeout(got, left).unwrap().0;
        }
        Ok(got[from..].to_vec())
    }

    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// Holds the uplink's calls while closed (it starts open).
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate { open: Mutex::new(true), changed: Condvar::new() }
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }

    /// Waits (at most `WAIT`) until the gate is open.
    fn pass(&self) {
        let open = self.open.lock().unwrap();
        drop(self.changed.wait_timeout_while(open, WAIT, |open| !*open).unwrap());
    }
}

/// An uplink that records what it is sent; it gathers or not as told.
struct Recorder {
    gathers: bool,
    gate: Arc<Gate>,
    record: Arc<Record>,
    probe: Probe,
    /// Never readable: nothing ever waits for the guest.
    idle: EventFd,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").field("gathers", &self.gathers).finish_non_exhaustive()
    }
}

impl Uplink for Recorder {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        self.gate.pass();
        let head = frame.len();
        self.record.push(Got { offload: *frame.offload(), data: frame.into_data(), mapped: false, head, probe: false });
        TransmitOutcome::Sent
    }

    fn gathers(&self) -> bool {
        self.gathers
    }

    fn transmit_gather(&self, mut head: Frame, rest: &[vm_memory::VolatileSlice<'_>]) -> TransmitOutcome {
        self.gate.pass();
        let probe = (self.probe)();
        let (len, mapped) = (head.len(), !rest.is_empty());
        port::append(&mut head, rest);
        self.record.push(Got { offload: *head.offload(), data: head.into_data(), mapped, head: len, probe });
        TransmitOutcome::Sent
    }

    fn pop(&self) -> Option<Frame> {
        None
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.idle.as_fd()
    }

    fn stats(&self) -> PortStats {
        PortStats::default()
    }
}

/// A host, dom0, one hand frontend and its vif on a [`Recorder`], with live knobs.
struct Rig {
    _host: SimHost,
    dom0: Session,
    h: HandFront,
    record: Arc<Record>,
    gate: Arc<Gate>,
    knobs: Arc<Knobs>,
    counters: Arc<VifCounters>,
    handle: WorkerHandle,
    fatal: mpsc::Receiver<String>,
}

impl Rig {
    /// The uplink's probe says whether a TX buffer's grant is pinned while it is called.
    fn start(gathers: bool, map_min: u32) -> anyhow::Result<Rig> {
        let host = SimHost::start_temp()?;
        let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
        let h = HandFront::new(&host, "tx", MAC_H)?;
        let features = FrontendFeatures { sg: true, gso_tcpv4: true, gso_tcpv6: true, ..FrontendFeatures::default() };
        let config = DatapathConfig { features, ..DatapathConfig::default() };
        let id = VifId { domid: h.domid, handle: 0 };
        let dp = Datapath::connect(dom0.domain.clone(), id, &h.params(), config)?;
        let record = Arc::new(Record::default());
        let (domain, domid) = (dom0.domain.clone(), h.domid);
        let grefs = h.bufs.grefs()[..datapath_support::TX_BUFS].to_vec();
        let probe: Probe = Arc::new(move || grefs.iter().any(|&g| pinned(&domain, domid, g)));
        let gate = Arc::new(Gate::new());
        let idle = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?;
        let uplink = Recorder { gathers, gate: gate.clone(), record: record.clone(), probe, idle };
        let knobs = Arc::new(Knobs::default());
        knobs.apply(&PartialKnobs { tx_map_min: Some(map_min), ..PartialKnobs::default() })?;
        let counters = Arc::new(VifCounters::default());
        let (tx, fatal) = mpsc::channel();
        let on_fatal: FatalCallback = Box::new(move |_, e: &DatapathError| {
            let _ = tx.send(e.to_string());
        });
        let handle = dp.spawn_with_knobs(uplink, counters.clone(), knobs.clone(), on_fatal)?;
        Ok(Rig { _host: host, dom0, h, record, gate, knobs, counters, handle, fatal })
    }

    fn set_map_min(&self, value: u32) -> anyhow::Result<()> {
        self.knobs.apply(&PartialKnobs { tx_map_min: Some(value), ..PartialKnobs::default() })?;
        Ok(())
    }

    /// Pushes `reqs` (one packet or several), waits for their responses and for `frames`
    /// frames at the uplink; returns the response statuses and those frames.
    fn send(&mut self, reqs: &[TxRequest], frames: usize) -> anyhow::Result<(Vec<i16>, Vec<Got>)> {
        let before = self.record.len();
        self.h.push_tx(reqs)?;
        let statuses = self.h.wait_tx(reqs.len())?.iter().map(|r| r.status).collect();
        let got = self.record.wait(before, before + frames)?;
        Ok((statuses, got))
    }

    /// Whether any TX buffer's grant is still pinned (mapped or being copied).
    fn any_pinned(&self) -> bool {
        self.h.bufs.grefs()[..datapath_support::TX_BUFS].iter().any(|&g| pinned(&self.dom0.domain, self.h.domid, g))
    }

    /// The counters once `ready` holds for them (at most `WAIT`).
    fn stats_when(&self, ready: impl Fn(&netback::vif::VifStats) -> bool) -> anyhow::Result<netback::vif::VifStats> {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.counters.snapshot();
            if ready(&stats) || Instant::now() >= deadline {
                return Ok(stats);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn alive(&self) -> anyhow::Result<()> {
        ensure!(!self.handle.is_finished(), "the worker ended");
        ensure!(self.fatal.try_recv().is_err(), "the worker reported a fatal error");
        Ok(())
    }
}

fn pinned(dom0: &grant::sim::SimDomain, domid: DomId, gref: GrantRef) -> bool {
    dom0.grant_entry(domid, gref).is_ok_and(|e| e.flags & GTF_READING != 0)
}

/// One frame every path must carry, and how the frontend lays it out.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    /// `(offset, len)` in TX buffers `0..`.
    pieces: Vec<(u16, usize)>,
    flags: u16,
    extra: Option<Extra>,
    offload: Offload,
}

impl Case {
    /// Writes the frame into the TX buffers; its requests (with the extra after the first).
    fn requests(&self, h: &HandFront) -> Vec<TxRequest> {
        let mut reqs = chain(h, &self.frame, &self.pieces, self.flags);
        if let Some(e) = self.extra {
            reqs[0].flags |= NETTXF_EXTRA_INFO;
            reqs.insert(1, e.to_tx_request());
        }
        reqs
    }
}

/// The frames every path must carry.
fn cases() -> Vec<Case> {
    let gso = |kind, size| Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind, size }) };
    let mut out = Vec::new();
    let mut add = |name, frame, pieces: &[(u16, usize)], flags, extra, offload| {
        out.push(Case { name, frame, pieces: pieces.to_vec(), flags, extra, offload });
    };
    // Short: copied whatever the knob.
    add("short", patterned(MAC_X, MAC_H, 100, 1), &[(0, 100)], 0, None, Offload::default());
    // One slot, head and piece in the same page.
    add("one slot", patterned(MAC_X, MAC_H, 1514, 2), &[(33, 1514)], 0, None, Offload::default());
    // The head spans two slots; the second is split between head and piece.
    let f = patterned(MAC_X, MAC_H, 54 + 4000 + 2000, 3);
    add("head across slots", f, &[(7, 54), (90, 4000), (0, 2000)], 0, None, Offload::default());
    // The first slot longer than the head, then whole pages.
    let f = patterned(MAC_X, MAC_H, 300 + 4096 * 3 + 17, 4);
    add("pages", f, &[(3000, 300), (0, 4096), (0, 4096), (0, 4096), (100, 17)], 0, None, Offload::default());
    // TCP GSO over IPv4, its headers in the first slot as netfront sends them.
    let payload: Vec<u8> = (0..9000u32).map(|i| (i % 253) as u8).collect();
    let f = ipv4(MAC_X, MAC_H, 6, &tcp(77, &payload));
    let n = f.len();
    let gso_extra = Extra { info: ExtraInfo::Gso { size: 1448, gso_type: 1, features: 0 }, more: false };
    add(
        "GSO",
        f,
        &[(0, 54), (0, 4096), (0, 4096), (0, n - 54 - 8192)],
        NETTXF_CSUM_BLANK,
        Some(gso_extra),
        gso(GsoKind::TcpV4, 1448),
    );
    // A blank UDP checksum, one slot.
    let f = ipv4(MAC_X, MAC_H, 17, &udp(&patterned(MAC_X, MAC_H, 1400, 5)));
    let n = f.len();
    add("blank UDP", f, &[(200, n)], NETTXF_CSUM_BLANK, None, Offload { csum_blank: true, ..Offload::default() });
    out
}

/// Runs every case on a rig with `map_min`, checking bytes, offload and responses; returns
/// which were mapped.
fn run_cases(rig: &mut Rig, map_min: usize) -> anyhow::Result<Vec<bool>> {
    let mut mapped = Vec::new();
    for case in cases() {
        let (name, f, offload) = (case.name, &case.frame, case.offload);
        let reqs = case.requests(&rig.h);
        let (statuses, got) = rig.send(&reqs, 1)?;
        // OKAY for every data slot, NULL for a GSO extra.
        let nulls = statuses.iter().filter(|&&s| s == NETIF_RSP_NULL).count();
        let okays = statuses.iter().filter(|&&s| s == NETIF_RSP_OKAY).count();
        ensure!(okays + nulls == reqs.len() && nulls == usize::from(offload.gso.is_some()), "{name}: {statuses:?}");
        let got = &got[0];
        ensure!(got.data == *f, "{name}: {} bytes arrived differently", f.len());
        ensure!(got.offload == offload, "{name}: offload {:?}", got.offload);
        let should_map = map_min > 0 && f.len() >= map_min && f.len() > HEAD;
        ensure!(got.mapped == should_map, "{name}: mapped {} with tx-map-min {map_min}", got.mapped);
        if got.mapped {
            ensure!(got.head == HEAD, "{name}: head of {} bytes", got.head);
            ensure!(got.probe, "{name}: the TX buffer was not mapped while the uplink read it");
        }
        // Answered only after the unmap.
        ensure!(!rig.any_pinned(), "{name}: a TX grant is still pinned after its response");
        mapped.push(got.mapped);
    }
    rig.alive().map(|()| mapped)
}

#[test]
fn mapped_and_copied_frames_arrive_identical() -> anyhow::Result<()> {
    let mut copy = Rig::start(true, 0)?;
    ensure!(run_cases(&mut copy, 0)?.iter().all(|m| !m), "nothing is mapped with tx-map-min 0");
    ensure!(copy.counters.snapshot().tx_mapped_frames == 0);

    let mut map = Rig::start(true, 1000)?;
    let mapped = run_cases(&mut map, 1000)?;
    ensure!(mapped == [false, true, true, true, true, true], "{mapped:?}");
    let stats = map.counters.snapshot();
    ensure!(stats.tx_mapped_frames == 5 && stats.tx_packets == 6 && stats.dropped() == 0, "{stats:?}");
    ensure!(stats.map_calls == 5 && stats.map_pages >= 5 && stats.tx_map_fallbacks == 0, "{stats:?}");
    // The mapped frames had only their heads copied.
    ensure!(stats.tx_mapped_bytes == stats.tx_bytes - 100 - 5 * HEAD as u64, "{stats:?}");
    Ok(())
}

#[test]
fn an_uplink_that_does_not_gather_gets_copies() -> anyhow::Result<()> {
    let mut rig = Rig::start(false, 64)?;
    ensure!(run_cases(&mut rig, 0)?.iter().all(|m| !m));
    let stats = rig.counters.snapshot();
    ensure!(stats.tx_mapped_frames == 0 && stats.map_calls == 0 && stats.tx_packets == 6, "{stats:?}");
    Ok(())
}

#[test]
fn several_mapped_frames_share_one_map_call() -> anyhow::Result<()> {
    let mut rig = Rig::start(true, 500)?;
    // Three frames in one push, in buffers 0, 2 and 5 (their slots on different pages).
    let frames: Vec<Vec<u8>> = (0..3).map(|i| patterned(MAC_X, MAC_H, 1000 + 700 * i, 10 + i as u8)).collect();
    let bufs = [0, 2, 5];
    let reqs: Vec<TxRequest> = frames.iter().zip(bufs).map(|(f, b)| rig.h.tx_request(b, 60, f, 0)).collect();
    let (statuses, got) = rig.send(&reqs, 3)?;
    ensure!(statuses == [NETIF_RSP_OKAY; 3], "{statuses:?}");
    for (g, f) in got.iter().zip(&frames) {
        ensure!(g.mapped && g.data == *f, "frame of {} bytes", f.len());
    }
    let stats = rig.counters.snapshot();
    ensure!(stats.map_calls == 1 && stats.map_pages == 3, "one call for the drain: {stats:?}");
    ensure!(!rig.any_pinned());
    Ok(())
}

#[test]
fn a_bad_grant_in_a_mapped_frame_is_an_error_response_not_a_dead_worker() -> anyhow::Result<()> {
    for map_min in [0, 500] {
        let mut rig = Rig::start(true, map_min)?;
        // The third slot's gref was never granted: ERROR for it, OKAY for the others, as the
        // copy path answers.
        let f = patterned(MAC_X, MAC_H, 200 + 3000 + 1000, 20);
        let mut reqs = chain(&rig.h, &f, &[(0, 200), (0, 3000), (0, 1000)], 0);
        reqs[2].gref = 5000;
        let before = rig.record.len();
        rig.h.push_tx(&reqs)?;
        let statuses: Vec<i16> = rig.h.wait_tx(3)?.iter().map(|r| r.status).collect();
        ensure!(statuses == [NETIF_RSP_OKAY, NETIF_RSP_OKAY, NETIF_RSP_ERROR], "{map_min}: {statuses:?}");
        // A single-slot frame whose only gref is bad: its head copy and its map both fail.
        let mut one = rig.h.tx_request(3, 0, &patterned(MAC_X, MAC_H, 1500, 21), 0);
        one.gref = 5001;
        rig.h.push_tx(&[one])?;
        ensure!(rig.h.wait_tx(1)?[0].status == NETIF_RSP_ERROR, "{map_min}");
        ensure!(rig.record.len() == before, "{map_min}: a frame with a bad grant reached the uplink");
        // Copied slots are answered before the drain's frames are handed on and counted.
        let stats = rig.stats_when(|s| s.tx_dropped_copy_failed == 2)?;
        ensure!(stats.tx_dropped_copy_failed == 2 && stats.tx_packets == 0, "{map_min}: {stats:?}");
        let fallbacks = if map_min > 0 { 2 } else { 0 };
        ensure!(stats.tx_map_fallbacks == fallbacks, "{map_min}: {stats:?}");

        // A bad frame and a good one in one drain: the good one is still mapped.
        let good = patterned(MAC_X, MAC_H, 2000, 22);
        let mut bad = rig.h.tx_request(4, 0, &patterned(MAC_X, MAC_H, 1800, 23), 0);
        bad.gref = 5002;
        let good_req = rig.h.tx_request(6, 10, &good, 0);
        let (statuses, got) = rig.send(&[bad, good_req], 1)?;
        ensure!(statuses == [NETIF_RSP_ERROR, NETIF_RSP_OKAY], "{map_min}: {statuses:?}");
        ensure!(got[0].data == good && got[0].mapped == (map_min > 0), "{map_min}: {:?}", got[0].mapped);
        ensure!(!rig.any_pinned(), "{map_min}: a grant stayed pinned");
        rig.alive().context(format!("tx-map-min {map_min}"))?;
    }
    Ok(())
}

#[test]
fn the_knob_switches_paths_while_the_vif_runs() -> anyhow::Result<()> {
    let mut rig = Rig::start(true, 0)?;
    let f = patterned(MAC_X, MAC_H, 3000, 30);
    for (map_min, mapped) in [(0, false), (2000, true), (3001, false), (3000, true), (0, false)] {
        rig.set_map_min(map_min)?;
        let req = rig.h.tx_request(0, 500, &f, 0);
        let (statuses, got) = rig.send(&[req], 1)?;
        ensure!(statuses == [NETIF_RSP_OKAY] && got[0].data == f, "tx-map-min {map_min}");
        ensure!(got[0].mapped == mapped, "tx-map-min {map_min}: mapped {}", got[0].mapped);
    }
    ensure!(rig.counters.snapshot().tx_mapped_frames == 2);
    let e = rig.knobs.apply(&PartialKnobs { tx_map_min: Some(65536), ..PartialKnobs::default() });
    ensure!(e.is_err_and(|e| e.to_string().contains("tx-map-min")), "a threshold beyond any frame is refused");
    ensure!(rig.knobs.get().tx_map_min == 0);
    rig.alive()
}

/// A copied frame is answered before the uplink gets it (the guest's buffer is free once
/// copied; a TAP's `writev` runs the host's stack); a mapped frame only after the uplink
/// returned and its pages were unmapped.
#[test]
fn copied_frames_are_answered_before_the_uplink_mapped_ones_after() -> anyhow::Result<()> {
    let mut rig = Rig::start(true, 1000)?;
    // Copied (shorter than tx-map-min): the response comes while the uplink is held.
    rig.gate.set(false);
    let short = patterned(MAC_X, MAC_H, 200, 7);
    let req = rig.h.tx_request(0, 0, &short, 0);
    rig.h.push_tx(&[req])?;
    let statuses: Vec<i16> = rig.h.wait_tx(1)?.iter().map(|r| r.status).collect();
    ensure!(statuses == [NETIF_RSP_OKAY], "{statuses:?}");
    ensure!(rig.record.len() == 0, "the uplink got the frame through a closed gate");
    rig.gate.set(true);
    ensure!(rig.record.wait(0, 1)?[0].data == short, "the copied frame");

    // Mapped: no response until the gate opens.
    rig.gate.set(false);
    let long = patterned(MAC_X, MAC_H, 3000, 8);
    let req = rig.h.tx_request(1, 0, &long, 0);
    let opened = Arc::new(Mutex::new(None));
    let opener = {
        let (gate, opened) = (rig.gate.clone(), opened.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            *opened.lock().unwrap() = Some(Instant::now());
            gate.set(true);
        })
    };
    rig.h.push_tx(&[req])?;
    let statuses: Vec<i16> = rig.h.wait_tx(1)?.iter().map(|r| r.status).collect();
    let answered = Instant::now();
    opener.join().unwrap();
    ensure!(statuses == [NETIF_RSP_OKAY], "{statuses:?}");
    let opened = opened.lock().unwrap().context("the gate never opened")?;
    ensure!(answered >= opened, "a mapped frame was answered while the uplink still held it");
    let got = rig.record.wait(1, 2)?;
    ensure!(got[0].mapped && got[0].data == long, "the mapped frame");
    ensure!(rig.counters.snapshot().tx_mapped_frames == 1);
    rig.alive()
}
