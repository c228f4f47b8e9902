//! Errors of the grant and event-channel interfaces.

use crate::{DomId, EvtchnPort, GrantRef, GrantStatus};

/// A grant operation that failed as a whole or for the one grant it named.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The hypervisor refused to map `domid`'s grant `gref`.
    #[error("map of grant {gref} from domain {domid} refused: {status}")]
    Map {
        /// Granting domain.
        domid: DomId,
        /// Grant reference.
        gref: GrantRef,
        /// Xen's reason.
        status: GrantStatus,
    },
    /// Mapping the granted page into our address space failed.
    #[error("mmap of grant {gref} from domain {domid} failed")]
    Mmap {
        /// Granting domain.
        domid: DomId,
        /// Grant reference.
        gref: GrantRef,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A copy batch could not be submitted at all (per-segment failures are statuses instead).
    #[error("grant copy batch of {segments} segments failed")]
    CopyBatch {
        /// Segments in the batch.
        segments: usize,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A segment's local buffer is shorter than its `len`.
    #[error("local buffer of {have} bytes is shorter than the segment length {len}")]
    LocalBufferTooShort {
        /// Bytes available.
        have: usize,
        /// Bytes asked for.
        len: u16,
    },
    /// Allocating or granting our own pages failed.
    #[error("sharing {pages} pages with domain {domid} failed: {status}")]
    Share {
        /// Peer domain.
        domid: DomId,
        /// Pages asked for.
        pages: usize,
        /// Reason.
        status: GrantStatus,
    },
    /// Talking to the hypervisor (the gntdev/gntalloc device or the sim host) failed.
    #[error("hypervisor interface: {context}")]
    Hypervisor {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// An event-channel operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum EvtchnError {
    /// `EVTCHNOP_bind_interdomain` refused.
    #[error("bind to port {remote_port} of domain {remote} failed: {reason}")]
    Bind {
        /// Remote domain.
        remote: DomId,
        /// Remote port.
        remote_port: EvtchnPort,
        /// The errno Xen's `EVTCHNOP_bind_interdomain` returns for this refusal: `ESRCH`
        /// for an unknown domain, `EINVAL` for a port that is not unbound for us.
        errno: nix::errno::Errno,
        /// Why.
        reason: String,
    },
    /// `EVTCHNOP_alloc_unbound` refused.
    #[error("allocating a port for domain {remote} failed: {reason}")]
    AllocUnbound {
        /// Remote domain.
        remote: DomId,
        /// The errno of the refusal.
        errno: nix::errno::Errno,
        /// Why.
        reason: String,
    },
    /// Sending a notification failed.
    #[error("notify on port {port} failed")]
    Notify {
        /// Local port.
        port: EvtchnPort,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading pending events or unmasking failed.
    #[error("event delivery on port {port} failed")]
    Deliver {
        /// Local port.
        port: EvtchnPort,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the hypervisor (the evtchn device or the sim host) failed.
    #[error("hypervisor interface: {context}")]
    Hypervisor {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
