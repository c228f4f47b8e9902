//! Where a vif's frames go: a port of the embedded switch, or a TAP device named like the
//! kernel's vif (`vif<domid>.<handle>`, or the backend's `vifname`) for the host's bridge or
//! Open vSwitch. [`UplinkMode`] says which; [`VifUplink`] is the one type the workers run on.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::VolatileSlice;

use crate::frame::Frame;
use crate::port::{Backlog, PortStats, TransmitOutcome, Uplink};
use crate::switch::SwitchPort;
use crate::tap::{Tap, TapPort};

/// How the daemon chooses each vif's uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UplinkMode {
    /// Every vif on the embedded switch (the simulated host's default).
    #[default]
    Switch,
    /// Every vif gets a TAP device.
    Tap,
    /// A TAP when the toolstack asks for one (the backend directory has a `script` or
    /// `bridge` node, as `xl` writes for `vif-bridge` / `vif-openvswitch`), else the switch
    /// (the real host's default).
    Auto,
}

impl UplinkMode {
    /// Whether a vif whose backend directory has (or lacks) `script` / `bridge` gets a TAP.
    pub fn wants_tap(self, has_script_or_bridge: bool) -> bool {
        match self {
            UplinkMode::Switch => false,
            UplinkMode::Tap => true,
            UplinkMode::Auto => has_script_or_bridge,
        }
    }
}

impl std::str::FromStr for UplinkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switch" => Ok(UplinkMode::Switch),
            "tap" => Ok(UplinkMode::Tap),
            "auto" => Ok(UplinkMode::Auto),
            _ => Err(format!("{s:?} is not one of switch, tap, auto")),
        }
    }
}

/// A connected vif's uplink.
#[derive(Debug)]
pub enum VifUplink {
    /// A port of the embedded switch.
    Switch(SwitchPort),
    /// The vif's TAP device (which outlives reconnects: the port shares it).
    Tap(TapPort),
}

impl VifUplink {
    /// A port on the vif's TAP device.
    pub fn tap(tap: &Arc<Tap>) -> VifUplink {
        VifUplink::Tap(TapPort::new(Arc::clone(tap)))
    }
}

impl Uplink for VifUplink {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        match self {
            VifUplink::Switch(p) => p.transmit(frame),
            VifUplink::Tap(p) => p.transmit(frame),
        }
    }

    fn transmit_batch(&self, frames: &mut Vec<Frame>) -> usize {
        match self {
            VifUplink::Switch(p) => p.transmit_batch(frames),
            VifUplink::Tap(p) => p.transmit_batch(frames),
        }
    }

    fn gathers(&self) -> bool {
        match self {
            VifUplink::Switch(p) => p.gathers(),
            VifUplink::Tap(p) => p.gathers(),
        }
    }

    fn transmit_gather(&self, head: Frame, rest: &[VolatileSlice<'_>]) -> TransmitOutcome {
        match self {
            VifUplink::Switch(p) => p.transmit_gather(head, rest),
            VifUplink::Tap(p) => p.transmit_gather(head, rest),
        }
    }

    fn pop(&self) -> Option<Frame> {
        match self {
            VifUplink::Switch(p) => p.pop(),
            VifUplink::Tap(p) => p.pop(),
        }
    }

    fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        match self {
            VifUplink::Switch(p) => p.pop_batch(max, out),
            VifUplink::Tap(p) => p.pop_batch(max, out),
        }
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        match self {
            VifUplink::Switch(p) => p.ready_fd(),
            VifUplink::Tap(p) => p.ready_fd(),
        }
    }

    fn stats(&self) -> PortStats {
        match self {
            VifUplink::Switch(p) => p.stats(),
            VifUplink::Tap(p) => p.stats(),
        }
    }

    fn expire(&self, max_age: Option<Duration>) -> Backlog {
        match self {
            VifUplink::Switch(p) => p.expire(max_age),
            VifUplink::Tap(p) => p.expire(max_age),
        }
    }

    fn set_carrier(&self, on: bool) {
        match self {
            VifUplink::Switch(p) => p.set_carrier(on),
            VifUplink::Tap(p) => p.set_carrier(on),
        }
    }
}
