//! The simulated Xen host: grant tables and event channels between ordinary processes.
//!
//! A **host** process runs a [`Hypervisor`] (domain registry, event-channel registry) on a
//! unix `SOCK_SEQPACKET` socket. Every **domain** is a separate process holding a
//! [`SimDomain`]: dom0 processes (backend, toolstack) connect with [`Credentials::Dom0`], a
//! guest with the one-time [`SimToken`] the toolstack got from `create_domain`.
//!
//! * A domain's memory, its v1 grant table, its active-grant table and its status page are
//!   memfds created by the host and passed with `SCM_RIGHTS`. The guest writes grant
//!   entries directly into the shared table, like a PV guest.
//! * Grant checks run in the caller's process, as a hypercall runs on the caller's CPU:
//!   [`GrantOps`](crate::GrantOps) fetches the granting domain's descriptors once per domid
//!   and then validates every operation against the shared tables exactly like
//!   `xen/common/grant_table.c`, returning the same `GNTST_*` codes.
//! * Each connection also gets a **pin ledger** (a memfd) in which the process records the
//!   grants it holds pinned, so that when the process dies the host drops its pins, as
//!   closing `/dev/xen/gntdev` does on Linux (see the `ledger` module). A process may hold
//!   at most [`MAX_MAPPED_GRANTS`] map pins; more maps fail with `GNTST_no_space`.
//! * An event channel is a pair of eventfds; `notify` is one `write(2)` to the peer's.
//! * The control socket carries only control-plane messages (hello, domain descriptors,
//!   event-channel alloc/bind/close, toolstack create/destroy), in a small binary format.
//!
//! Unsafe code is limited to adopting descriptors received with `recvmsg`/`accept` and to
//! placing the pages of a multi-grant mapping side by side (`MAP_FIXED` into a reservation
//! of our own, `memory::FixedPages`); the shared tables are reached through vm-memory's
//! checked atomic references.

mod alloc;
mod domain;
mod evtchn;
mod gnttab;
mod host;
mod ledger;
mod memory;
mod ops;
mod protocol;
mod registry;

pub use domain::SimDomain;
pub use evtchn::SimEventChannel;
pub use gnttab::{
    GNTTAB_NR_RESERVED_ENTRIES, GTF_ACCEPT_TRANSFER, GTF_INVALID, GTF_PCD, GTF_PERMIT_ACCESS, GTF_PWT, GTF_READING,
    GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK, GTF_WRITING, GrantEntryV1, GrantPins,
};
pub use host::{Hypervisor, HypervisorHandle, PinReleases};
pub use ledger::{COPY_SLOTS, MAX_MAPPED_GRANTS};

use crate::DomId;
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::str::FromStr;

/// Sizing of a simulated domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainConfig {
    /// Pages of memory. The memfd is sparse: untouched pages cost nothing.
    pub mem_pages: u32,
    /// Grant-table frames; each holds 512 v1 entries.
    pub grant_frames: u32,
}

impl DomainConfig {
    /// Largest accepted `mem_pages` (4 GiB).
    pub const MAX_MEM_PAGES: u32 = 1 << 20;
    /// Largest accepted `grant_frames` (Xen's default `gnttab_max_frames`).
    pub const MAX_GRANT_FRAMES: u32 = 64;

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.mem_pages == 0 || self.mem_pages > Self::MAX_MEM_PAGES {
            return Err(SimError::InvalidConfig { reason: format!("mem_pages {} not in 1..=2^20", self.mem_pages) });
        }
        if self.grant_frames == 0 || self.grant_frames > Self::MAX_GRANT_FRAMES {
            return Err(SimError::InvalidConfig {
                reason: format!("grant_frames {} not in 1..={}", self.grant_frames, Self::MAX_GRANT_FRAMES),
            });
        }
        Ok(())
    }

    /// Number of v1 grant entries.
    pub fn grant_entries(&self) -> u32 {
        self.grant_frames * gnttab::ENTRIES_PER_FRAME
    }
}

impl Default for DomainConfig {
    /// 64 MiB of memory and 16 grant frames (8192 entries).
    fn default() -> Self {
        Self { mem_pages: 16384, grant_frames: 16 }
    }
}

/// A change in the set of running guests, reported to the host's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainEvent {
    /// The guest's process connected for the first time (xenstored's `@introduceDomain`).
    Introduced(DomId),
    /// An introduced guest died or was destroyed (xenstored's `@releaseDomain`).
    Released(DomId),
}

/// Who a process claims to be when it connects to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The privileged control domain; any number of dom0 processes may connect.
    Dom0,
    /// A guest, with the token returned when the toolstack created it. Usable once.
    Guest {
        /// The one-time token.
        token: SimToken,
    },
}

/// A one-time secret that lets one process connect as a freshly created guest.
///
/// Printed and parsed as 32 lowercase hex digits, so it can travel in an environment
/// variable or on a command line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimToken(pub(crate) [u8; 16]);

impl SimToken {
    /// A fresh random token (from `/dev/urandom`).
    pub fn random() -> io::Result<Self> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimToken({self})")
    }
}

impl FromStr for SimToken {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        let bad = || SimError::Protocol { reason: format!("token {s:?} is not 32 hex digits") };
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// Failures of the sim host and of its control connection.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A system call failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A [`DomainConfig`] is out of range.
    #[error("invalid domain config: {reason}")]
    InvalidConfig {
        /// Which limit.
        reason: String,
    },
    /// No live domain has this id.
    #[error("no such domain {0}")]
    NoSuchDomain(DomId),
    /// The host refused a control request.
    #[error("host refused {op}: {errno}")]
    Refused {
        /// The request.
        op: &'static str,
        /// Its errno, as the matching Xen operation would return it.
        errno: Errno,
    },
    /// A malformed or unexpected control message.
    #[error("control protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
}

impl SimError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Io { context: context.into(), source: source.into() }
    }

    /// The errno this error carries or stands for.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Io { source, .. } => source.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
            Self::InvalidConfig { .. } => Errno::EINVAL,
            Self::NoSuchDomain(_) => Errno::ESRCH,
            Self::Refused { errno, .. } => *errno,
            Self::Protocol { .. } => Errno::EPROTO,
        }
    }

    /// Converts into an `io::Error`, keeping the errno.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Io { source, .. } => source,
            other => io::Error::new(io::Error::from(other.errno()).kind(), other),
        }
    }
}
