//! The Xen netif ABI (`xen/include/public/io/netif.h`) and the generic shared
//! producer/consumer ring of `xen/include/public/io/ring.h`, shared by the
//! userspace backend (`netback`) and the test frontend (`netfront-test`).
//!
//! * [`abi`]: every netif message as a `#[repr(C)]` struct with const-asserted
//!   size and field offsets, all protocol constants (searchable by their C
//!   names), the typed [`abi::ExtraInfo`], and the [`abi::RingEntry`] codec
//!   trait that turns a ring slot's bytes into a local copy and back.
//! * [`ring`]: [`ring::FrontRing`] and [`ring::BackRing`] over any
//!   [`ring::RingMemory`] (an `MmapRegion`-backed page), with the index
//!   arithmetic, memory barriers and notification hold-off of `ring.h`, and
//!   the checks a backend needs against a hostile frontend (and vice versa).
//!
//! Xen's ring ABI is native-endian: entries are encoded with
//! `to_ne_bytes`/`from_ne_bytes`. This crate contains no `unsafe` code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod abi;
pub mod ring;
pub mod xenbus;

pub use abi::{
    AbiError, CtrlRequest, CtrlResponse, Extra, ExtraInfo, NetifExtraInfo, RingEntry, RxRequest, RxResponse, TxRequest,
    TxResponse,
};
pub use ring::{BackRing, CtrlRing, FrontRing, RingError, RingKind, RingMemory, RxRing, TxRing};
