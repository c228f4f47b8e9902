//! A xenstore client and an embedded xenstored, both speaking the real
//! `xs_wire.h` protocol.
//!
//! - [`wire`]: message framing, types, errno names, permission strings.
//! - [`client`]: a thread-safe [`Client`] with watches and transactions,
//!   over a unix socket or `/dev/xen/xenbus`.
//! - [`server`]: [`Xenstored`], an in-process daemon for simulation and tests.
//!
//! ```
//! use xenstore::{Access, Perm, Xenstored};
//!
//! let xs = Xenstored::new();
//! let dom0 = xs.connect(0)?; // privileged, like a unix-socket client
//! dom0.mkdir("/local/domain/1")?;
//! dom0.set_perms("/local/domain/1", &[Perm::new(1, Access::None)])?;
//!
//! let guest = xs.connect(1)?; // relative paths live under /local/domain/1
//! let watch = dom0.watch("/local/domain/1/device", None)?;
//! assert_eq!(watch.recv()?.path, "/local/domain/1/device"); // registration event
//! guest.write("device/vif/0/state", "1")?;
//! assert_eq!(watch.recv()?.path, "/local/domain/1/device/vif/0/state");
//!
//! dom0.transaction(|tx| {
//!     let state = tx.read_string("/local/domain/1/device/vif/0/state")?;
//!     tx.write("/local/domain/0/backend/vif/1/0/frontend-state", state)
//! })?;
//! # Ok::<(), xenstore::XsError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod server;
pub mod wire;

pub use client::{Client, Transaction, Watch, WatchEvent, XsError};
pub use server::{ConnectionInfo, Limits, ServerHandle, Xenstored};
pub use wire::{Access, Perm, XsErrno};
