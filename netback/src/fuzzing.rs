//! Entry points for the `fuzz/` crate (cargo feature `fuzzing`, off by default): thin
//! wrappers around parsers that are private to their modules, so that nothing internal has
//! to become public API. Not for any other use.
//!
//! - [`parse_tx`], [`tx_drain`]: the TX request parser and one drain of the TX path over a
//!   ring whose page the caller fills, against [`FuzzGrants`] and [`FuzzUplink`];
//! - [`rx_prepare`]: RX preparation (GSO pass-through, software segmentation and checksum,
//!   size limits) of one frame for a guest's features;
//! - [`parse_u32`], [`parse_flag`]: how the daemon reads numeric xenstore nodes (ring refs,
//!   event channels, `request-rx-copy`, `feature-*`).
//!
//! Everything public elsewhere (`offload`, `tap::vnet`, `xenbus::parse_mac`,
//! `vif::PartialKnobs`, `netif::Extra`) is fuzzed through its own API.

pub use crate::vif::fuzzing::{
    FATAL_SKB_SLOTS, FuzzGrants, FuzzUplink, LEGACY_SLOTS_MAX, RxReady, TxParsed, parse_tx, rx_prepare, tx_drain,
};

/// A numeric xenstore node as the daemon reads it (`xenbus::keys`): plain decimal, no sign
/// or spaces, at most `u32::MAX`.
pub fn parse_u32(value: &str) -> Option<u32> {
    crate::xenbus::keys::parse_u32(value)
}

/// A `feature-*` node as the daemon reads it: a number, non-zero meaning on.
pub fn parse_flag(value: &str) -> Option<bool> {
    crate::xenbus::keys::parse_flag(value)
}
