//! The xenbus device states (`xen/include/public/io/xenbus.h`), shared by both ends: each
//! end publishes its state as a decimal number in its `state` node.

use core::fmt;

/// `enum xenbus_state` (`xen/include/public/io/xenbus.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XenbusState {
    /// 0: not yet written.
    Unknown = 0,
    /// 1: early initialisation.
    Initialising = 1,
    /// 2: waiting for the peer (backend after probe).
    InitWait = 2,
    /// 3: initialised, not yet connected.
    Initialised = 3,
    /// 4: connected, data may flow.
    Connected = 4,
    /// 5: shutting down.
    Closing = 5,
    /// 6: shut down.
    Closed = 6,
    /// 7: renegotiating (Linux XDP).
    Reconfiguring = 7,
    /// 8: renegotiated.
    Reconfigured = 8,
}

impl XenbusState {
    /// Decodes the xenstore value (a decimal number), `None` if out of range.
    pub fn parse(value: &str) -> Option<Self> {
        use XenbusState::*;
        Some(match value.trim().parse::<u32>().ok()? {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// The xenstore value ("4" for Connected).
    pub fn value(self) -> String {
        (self as u32).to_string()
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} ({})", *self as u32)
    }
}
