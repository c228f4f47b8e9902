//! [`TapPort`]: the [`Uplink`] of a vif whose frames go to the host kernel through a TAP
//! device (and from there to a bridge or Open vSwitch), instead of the embedded switch.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::VolatileSlice;

use super::Tap;
use super::vnet::{self, VNET_HDR_LEN, VnetError, VnetHeader};
use crate::frame::{ETH_HLEN, Frame};
use crate::offload;
use crate::port::{self, DropReason, PortStats, TransmitOutcome, Uplink};

/// The largest frame read: what netif can carry (its sizes are 16-bit). The kernel keeps
/// what it sends a TAP below it (MTU at most 65521, GSO frames below `gso_max_size` 64 KiB
/// with the Ethernet header), except for a VLAN tag the TAP inserts as it hands a frame out.
const MAX_FRAME: usize = u16::MAX as usize;
/// Frames a single [`Uplink::pop`] may skip (errors, untranslatable headers) before it
/// gives up for this call; the descriptor stays readable, so the worker comes back.
const MAX_SKIPS: usize = 64;
/// Frames up to this long are copied out of the read buffer; a longer one takes the buffer
/// itself (a fresh one, uninitialized, replaces it), which saves copying it.
const HAND_OVER_ABOVE: usize = 16 * 1024;
/// The most reads one [`Uplink::pop_batch`] starts with (see [`RxState::budget`]).
const MAX_READ_BUDGET: usize = 64;

/// A TAP device as a vif's uplink. Every frame crosses with one vnet header, so checksum
/// and segmentation offloads stay offloads both ways.
#[derive(Debug)]
pub struct TapPort {
    /// Shared with the daemon's vif, which keeps the device across reconnects.
    tap: Arc<Tap>,
    /// Only the worker owning the port reads; the lock is never contended.
    rx: Mutex<RxState>,
    counters: Counters,
}

/// The reading side of a [`TapPort`].
#[derive(Debug)]
struct RxState {
    /// The read buffer's data part (capacity `MAX_FRAME + 1`: one byte more, so a longer
    /// frame is seen as such whether the kernel cuts it or reports its whole length).
    data: Vec<u8>,
    /// How many frames the next [`Uplink::pop_batch`] reads at most. It doubles while
    /// batches end without finding the TAP empty and halves when a batch did (`EAGAIN`),
    /// so sparse traffic (one frame per wakeup) costs one `read` per frame, not two. A
    /// batch that stops at its budget leaves the descriptor readable: the worker's epoll
    /// brings it back.
    budget: usize,
}

impl RxState {
    fn new() -> RxState {
        RxState { data: Vec::with_capacity(MAX_FRAME + 1), budget: 1 }
    }
}

/// A [`TapPort`]'s counters: the [`PortStats`] every uplink has, and why frames were lost.
/// Every frame [`Uplink::transmit`] refuses is in `port.dropped_runt` (shorter than an
/// Ethernet header) or `port.dropped_queue_full`, which is `tx_dropped_full +
/// tx_dropped_offload + tx_errors`; frames lost on the way in are not in `port`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapStats {
    /// The uplink counters.
    pub port: PortStats,
    /// Frames refused because the TAP's queue was full (`EAGAIN`).
    pub tx_dropped_full: u64,
    /// Frames whose offload the TAP cannot express (no TCP/UDP header for a blank
    /// checksum, GSO on a frame that is not TCP of that IP version, …).
    pub tx_dropped_offload: u64,
    /// Frames the kernel refused with another error.
    pub tx_errors: u64,
    /// GSO frames that came without a blank checksum: their checksum field was rewritten to
    /// the partial sum before sending (Linux netback's `rx_gso_checksum_fixup`).
    pub tx_gso_checksum_fixups: u64,
    /// Frames written from a private head and the guest's mapped pages in one `writev`
    /// ([`Uplink::transmit_gather`]), without joining them.
    #[serde(default)]
    pub tx_gathered: u64,
    /// Frames handed over in pieces that had to be joined first: their offload needs headers
    /// that do not all lie in the head.
    #[serde(default)]
    pub tx_gather_joined: u64,
    /// Frames read whose vnet header does not translate (UDP GSO, checksum elsewhere, …).
    pub rx_dropped_offload: u64,
    /// Frames read that were longer than netif can carry (65535 bytes).
    pub rx_dropped_oversize: u64,
    /// Reads that failed with something other than `EAGAIN`.
    pub rx_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    dropped_runt: AtomicU64,
    tx_dropped_full: AtomicU64,
    tx_dropped_offload: AtomicU64,
    tx_errors: AtomicU64,
    tx_gso_checksum_fixups: AtomicU64,
    tx_gathered: AtomicU64,
    tx_gather_joined: AtomicU64,
    rx_dropped_offload: AtomicU64,
    rx_dropped_oversize: AtomicU64,
    rx_errors: AtomicU64,
}

/// Adds `n` to a counter and returns its new value. Counters are statistics only: no
/// ordering with other memory is needed.
fn add(counter: &AtomicU64, n: usize) -> u64 {
    counter.fetch_add(n as u64, Ordering::Relaxed) + n as u64
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Whether the `n`th occurrence of an error is logged: the 1st, 2nd, 4th, 8th… so a
/// persistent failure is visible without flooding the log.
fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

impl TapPort {
    /// Wraps a created TAP (its vnet header and offloads are set by [`Tap::create`]).
    pub fn new(tap: Arc<Tap>) -> TapPort {
        TapPort { tap, rx: Mutex::new(RxState::new()), counters: Counters::default() }
    }

    /// The TAP device (to bring it up, set its MTU, read its name).
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// All counters.
    pub fn tap_stats(&self) -> TapStats {
        let c = &self.counters;
        TapStats {
            port: self.stats(),
            tx_dropped_full: get(&c.tx_dropped_full),
            tx_dropped_offload: get(&c.tx_dropped_offload),
            tx_errors: get(&c.tx_errors),
            tx_gso_checksum_fixups: get(&c.tx_gso_checksum_fixups),
            tx_gathered: get(&c.tx_gathered),
            tx_gather_joined: get(&c.tx_gather_joined),
            rx_dropped_offload: get(&c.rx_dropped_offload),
            rx_dropped_oversize: get(&c.rx_dropped_oversize),
            rx_errors: get(&c.rx_errors),
        }
    }

    /// The vnet header for a frame of `len` bytes whose first bytes (all of them, or at least
    /// every header) are `head`, after making a GSO frame's checksum blank if it was not.
    /// Reads and writes `head` only.
    fn prepare(&self, head: &mut Frame, len: usize) -> Result<VnetHeader, VnetError> {
        let mut offload = *head.offload();
        if offload.gso.is_some() && !offload.csum_blank {
            // A GSO frame must be CHECKSUM_PARTIAL: the kernel derives every segment's
            // checksum from the partial sum in the field.
            offload::set_partial_checksum_in_head(head.data_mut(), len).map_err(VnetError::Headers)?;
            offload.csum_blank = true;
            add(&self.counters.tx_gso_checksum_fixups, 1);
        }
        vnet::encode_head(&offload, head.data(), len)
    }

    /// Counts a frame of `len` bytes and prepares its vnet header from `head`; `Err` is the
    /// outcome of a frame refused (counted).
    fn admit(&self, head: &mut Frame, len: usize) -> Result<VnetHeader, TransmitOutcome> {
        let c = &self.counters;
        add(&c.tx_frames, 1);
        add(&c.tx_bytes, len);
        if len < ETH_HLEN {
            add(&c.dropped_runt, 1);
            return Err(TransmitOutcome::Dropped(DropReason::Runt));
        }
        self.prepare(head, len).map_err(|error| {
            let n = add(&c.tx_dropped_offload, 1);
            if worth_logging(n) {
                tracing::warn!(tap = self.tap.name(), offload = ?head.offload(), %error, dropped = n,
                    "frame with untranslatable offload not sent to the TAP");
            }
            // The closest reason the trait has: the frame cannot be queued.
            TransmitOutcome::Dropped(DropReason::QueueFull)
        })
    }

    /// The outcome of writing a `len`-byte frame with `hdr`, as the write returned.
    fn written(&self, hdr: &VnetHeader, len: usize, result: io::Result<usize>) -> TransmitOutcome {
        let c = &self.counters;
        match result {
            Ok(n) if n == VNET_HDR_LEN + len => TransmitOutcome::Sent,
            Ok(n) => {
                // A TAP takes a frame whole; anything else is the kernel refusing it.
                let errors = add(&c.tx_errors, 1);
                tracing::warn!(tap = self.tap.name(), written = n, len, errors, "short write to the TAP");
                TransmitOutcome::Dropped(DropReason::QueueFull)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                add(&c.tx_dropped_full, 1);
                TransmitOutcome::Dropped(DropReason::QueueFull)
            }
            Err(error) => {
                let n = add(&c.tx_errors, 1);
                if worth_logging(n) {
                    tracing::warn!(tap = self.tap.name(), ?hdr, len, %error, errors = n,
                        "writing a frame to the TAP failed");
                }
                TransmitOutcome::Dropped(DropReason::QueueFull)
            }
        }
    }

    /// Reads and translates one frame; `Ok(None)` for a frame read and dropped (counted).
    fn read_one(&self, rx: &mut RxState) -> io::Result<Option<Frame>> {
        let mut hdr = [0; VNET_HDR_LEN];
        let n = self.tap.read_frame_into(&mut hdr, &mut rx.data)?;
        let c = &self.counters;
        if n > VNET_HDR_LEN + MAX_FRAME {
            add(&c.rx_dropped_oversize, 1);
            tracing::debug!(tap = self.tap.name(), len = n - VNET_HDR_LEN, "oversized frame from the TAP dropped");
            return Ok(None);
        }
        if n < VNET_HDR_LEN {
            // Impossible with IFF_VNET_HDR: every read starts with a whole header.
            add(&c.rx_errors, 1);
            return Ok(None);
        }
        let hdr = VnetHeader::from_bytes(&hdr);
        match vnet::decode(&hdr, &rx.data) {
            Ok(offload) => {
                add(&c.rx_frames, 1);
                add(&c.rx_bytes, rx.data.len());
                let data = if rx.data.len() > HAND_OVER_ABOVE {
                    std::mem::replace(&mut rx.data, Vec::with_capacity(MAX_FRAME + 1))
                } else {
                    rx.data.clone()
                };
                Ok(Some(Frame::with_offload(data, offload)))
            }
            Err(e) => {
                let n = add(&c.rx_dropped_offload, 1);
                if worth_logging(n) {
                    tracing::warn!(tap = self.tap.name(), ?hdr, error = %e, dropped = n, "frame from the TAP dropped");
                }
                Ok(None)
            }
        }
    }

    /// The next translatable frame, skipping at most [`MAX_SKIPS`] dropped ones. `Err` only
    /// for `EAGAIN` (no frame waits).
    fn read_next(&self, rx: &mut RxState) -> Result<Frame, io::ErrorKind> {
        for _ in 0..MAX_SKIPS {
            match self.read_one(rx) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::WouldBlock),
                Err(error) => {
                    // A failed read still consumes the frame it was for.
                    let n = add(&self.counters.rx_errors, 1);
                    if worth_logging(n) {
                        tracing::warn!(tap = self.tap.name(), %error, errors = n, "reading from the TAP failed");
                    }
                }
            }
        }
        Err(io::ErrorKind::Other)
    }
}

impl Uplink for TapPort {
    fn transmit(&self, mut frame: Frame) -> TransmitOutcome {
        let len = frame.len();
        match self.admit(&mut frame, len) {
            Ok(hdr) => self.written(&hdr, len, self.tap.write_frame(&hdr.to_bytes(), frame.data())),
            Err(outcome) => outcome,
        }
    }

    fn gathers(&self) -> bool {
        true
    }

    /// One `writev` of the vnet header, `head` and `rest`; the offload is prepared from
    /// (and its checksum fix-up written into) `head` alone. A frame whose offload needs
    /// headers beyond `head` is joined and sent as by [`Uplink::transmit`].
    fn transmit_gather(&self, mut head: Frame, rest: &[VolatileSlice<'_>]) -> TransmitOutcome {
        let len = head.len() + rest.iter().map(|s| s.len()).sum::<usize>();
        let offload = *head.offload();
        let needs_headers = offload.csum_blank || offload.gso.is_some();
        if rest.is_empty()
            || head.len() < ETH_HLEN
            || needs_headers && offload::locate_l4_in_head(head.data(), len).is_err()
        {
            if !rest.is_empty() {
                add(&self.counters.tx_gather_joined, 1);
            }
            port::append(&mut head, rest);
            return self.transmit(head);
        }
        match self.admit(&mut head, len) {
            Ok(hdr) => {
                add(&self.counters.tx_gathered, 1);
                self.written(&hdr, len, self.tap.write_gather(&hdr.to_bytes(), head.data(), rest))
            }
            Err(outcome) => outcome,
        }
    }

    fn pop(&self) -> Option<Frame> {
        let mut rx = self.rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.read_next(&mut rx).ok()
    }

    /// Reads at most `max` frames, and at most the read budget (see [`RxState::budget`]).
    fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        let mut rx = self.rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let limit = rx.budget.min(max);
        let mut empty = false;
        for _ in 0..limit {
            match self.read_next(&mut rx) {
                Ok(frame) => out.push(frame),
                Err(kind) => {
                    empty = kind == io::ErrorKind::WouldBlock;
                    break;
                }
            }
        }
        rx.budget = if empty { (rx.budget / 2).max(1) } else { (rx.budget * 2).min(MAX_READ_BUDGET) };
    }

    /// Sets the TAP's carrier; a failure is logged and changes nothing else (the vif works on,
    /// only the kernel keeps queueing for a stalled guest).
    fn set_carrier(&self, on: bool) {
        match self.tap.set_carrier(on) {
            Ok(()) => tracing::debug!(tap = self.tap.name(), on, "TAP carrier set"),
            Err(error) => tracing::warn!(tap = self.tap.name(), on, %error, "setting the TAP's carrier failed"),
        }
    }

    /// The TAP's descriptor: it polls readable exactly while the kernel has queued a frame.
    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.tap.as_fd()
    }

    fn stats(&self) -> PortStats {
        let c = &self.counters;
        PortStats {
            tx_frames: get(&c.tx_frames),
            tx_bytes: get(&c.tx_bytes),
            rx_frames: get(&c.rx_frames),
            rx_bytes: get(&c.rx_bytes),
            dropped_runt: get(&c.dropped_runt),
            dropped_queue_full: get(&c.tx_dropped_full) + get(&c.tx_dropped_offload) + get(&c.tx_errors),
            ..PortStats::default()
        }
    }
}
