//! netback library: the embedded switch, the per-vif data path, the xenbus backend state
//! machine, the daemon that ties them together, and its control socket.
#![deny(unsafe_code)]

mod clock;
pub mod control;
pub mod daemon;
mod error_chain;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod offload;
pub mod port;
pub mod switch;
pub mod tap;
pub mod vif;
pub mod xenbus;
