//! The seam between a vif worker and whatever its frames go to: the
//! [`Uplink`] trait, implemented by a port of the embedded switch
//! ([`crate::switch::SwitchPort`]) and by a TAP device ([`crate::tap::TapPort`]).

use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use vm_memory::VolatileSlice;

use crate::frame::Frame;

/// Why an uplink refused a frame as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// The source MAC is a multicast or broadcast address.
    BadSourceMac,
    /// The destination was learned on the ingress port itself.
    Hairpin,
    /// The (single) destination's queue was full in frames or bytes.
    QueueFull,
    /// The (single) destination's carrier is off: its guest stopped taking frames
    /// ([`Uplink::set_carrier`]).
    CarrierOff,
}

/// What happened to a frame handed to [`Uplink::transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransmitOutcome {
    /// Queued for exactly one destination (a known unicast MAC, or a TAP).
    Sent,
    /// Broadcast, multicast or unknown unicast, copied to every other port:
    /// `queued` copies were accepted and `queue_full` were dropped because the
    /// destination's queue was full. Both are zero if there is no other port.
    Flooded {
        /// Destinations that accepted a copy.
        queued: usize,
        /// Destinations whose queue was full.
        queue_full: usize,
    },
    /// Dropped before reaching any queue, or refused by its one destination.
    Dropped(DropReason),
}

/// Per-port counters, read in one go. The names are from the vif's point of
/// view: `tx` is what the port sent into the uplink, `rx` what it received
/// from it. Counters that make no sense for an uplink stay zero (a TAP does
/// not hairpin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortStats {
    /// Frames handed to [`Uplink::transmit`], including dropped ones.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames returned by [`Uplink::pop`] (delivered to the port).
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames transmitted by this port that were flooded.
    pub floods: u64,
    /// Frames transmitted by this port dropped as runts.
    pub dropped_runt: u64,
    /// Frames transmitted by this port dropped for a group source MAC.
    pub dropped_bad_source_mac: u64,
    /// Frames transmitted by this port whose destination is this port.
    pub dropped_hairpin: u64,
    /// Frames *for* this port dropped because its queue was full.
    pub dropped_queue_full: u64,
    /// Frames *for* this port dropped because its carrier was off: those queued when it
    /// went off, and those that came while it stayed off.
    #[serde(default)]
    pub dropped_carrier_off: u64,
}

/// What [`Uplink::expire`] left waiting for the port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Frames just dropped because they had waited longer than the limit.
    pub expired: usize,
    /// Whether a frame still waits ([`Uplink::pop`] would return one).
    pub waiting: bool,
    /// How long until the oldest frame still waiting expires; `None` if none waits or the
    /// uplink does not time its frames.
    pub next_expiry: Option<Duration>,
}

/// Where a vif worker sends the guest's frames and gets the guest's
/// incoming frames.
///
/// `ready_fd` is level-triggered in effect: it is readable exactly while at
/// least one frame waits for [`Uplink::pop`], so a worker that polls it,
/// then pops until `None`, neither misses a frame nor spins.
pub trait Uplink: Send {
    /// Sends a frame the guest transmitted. Never blocks: if there is no
    /// room the frame is dropped and counted.
    fn transmit(&self, frame: Frame) -> TransmitOutcome;

    /// Sends the guest's frames in order, draining `frames`; returns how many were
    /// [`TransmitOutcome::Dropped`]. Implementations amortize locks and wake-ups over the
    /// batch; the default sends one at a time.
    fn transmit_batch(&self, frames: &mut Vec<Frame>) -> usize {
        let mut dropped = 0;
        for frame in frames.drain(..) {
            if let TransmitOutcome::Dropped(_) = self.transmit(frame) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Whether [`Uplink::transmit_gather`] sends a frame's pieces as they are (one gathered
    /// write) rather than joining them first. The TX path maps a guest's pages instead of
    /// copying them only for an uplink that gathers.
    fn gathers(&self) -> bool {
        false
    }

    /// Sends a frame the guest transmitted, given as its first bytes `head` (private to us,
    /// carrying the offload metadata) followed by the bytes of `rest` (the guest's mapped
    /// pages, readable only during the call). The guest may change `rest` while we read it:
    /// everything an implementation parses or rewrites (headers, checksum fields) must come
    /// from `head`. Never blocks. The default joins the pieces into one frame and calls
    /// [`Uplink::transmit`].
    fn transmit_gather(&self, head: Frame, rest: &[VolatileSlice<'_>]) -> TransmitOutcome {
        let mut frame = head;
        append(&mut frame, rest);
        self.transmit(frame)
    }

    /// Takes the next frame waiting for this port, if any. Never blocks.
    fn pop(&self) -> Option<Frame>;

    /// Appends up to `max` waiting frames to `out`, oldest first. Never blocks.
    fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        for _ in 0..max {
            let Some(frame) = self.pop() else { break };
            out.push(frame);
        }
    }

    /// A descriptor that polls readable while [`Uplink::pop`] has a frame.
    fn ready_fd(&self) -> BorrowedFd<'_>;

    /// This port's counters.
    fn stats(&self) -> PortStats;

    /// Drops the frames that have waited for this port longer than `max_age` (none if
    /// `None`) and says what still waits. The worker calls it only while its guest lacks
    /// the RX requests for the next frame: it may read the clock. The default times
    /// nothing (a TAP's frames wait in the kernel, bounded by its `txqueuelen`) and tells
    /// from [`Uplink::ready_fd`] whether a frame waits.
    fn expire(&self, max_age: Option<Duration>) -> Backlog {
        let _ = max_age;
        Backlog { waiting: readable(self.ready_fd()), ..Backlog::default() }
    }

    /// Turns the port's carrier on or off (Linux's `netif_carrier_on/off`). While off, the
    /// other side stops sending frames for the guest: a switch port drops them at once
    /// (counted in [`PortStats::dropped_carrier_off`]), and turning it off drops those it
    /// holds. Never fails: a carrier that cannot be set is logged. The default does nothing.
    fn set_carrier(&self, on: bool) {
        let _ = on;
    }
}

/// Whether `fd` polls readable right now.
fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// Appends the bytes of `rest` to `frame`, in order (one copy of each slice).
pub fn append(frame: &mut Frame, rest: &[VolatileSlice<'_>]) {
    let data = frame.data_mut();
    data.reserve(rest.iter().map(|s| s.len()).sum());
    for slice in rest {
        let at = data.len();
        data.resize(at + slice.len(), 0);
        slice.copy_to(&mut data[at..]);
    }
}
