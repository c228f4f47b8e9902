//! [`XsError`]: every way a client call can fail.

use std::io;

use crate::wire::{WireError, XsErrno};

/// Errors of the xenstore [`Client`](super::Client).
///
/// Daemon-reported failures are named after the failing operation and carry
/// the path (or domid) and the typed errno, so callers can match
/// `XsError::Read { errno: XsErrno::Enoent, .. }` or use [`XsError::is_enoent`].
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// `XS_READ` failed.
    #[error("xenstore read {path}: {errno}")]
    Read {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_WRITE` failed.
    #[error("xenstore write {path}: {errno}")]
    Write {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_MKDIR` failed.
    #[error("xenstore mkdir {path}: {errno}")]
    Mkdir {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_RM` failed.
    #[error("xenstore rm {path}: {errno}")]
    Rm {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_DIRECTORY` failed.
    #[error("xenstore directory {path}: {errno}")]
    Directory {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_GET_PERMS` failed.
    #[error("xenstore get-perms {path}: {errno}")]
    GetPerms {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_SET_PERMS` failed.
    #[error("xenstore set-perms {path}: {errno}")]
    SetPerms {
        /// Requested path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_WATCH` failed (or the token is already used by this client: `EEXIST`).
    #[error("xenstore watch {path}: {errno}")]
    Watch {
        /// Watched path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_UNWATCH` failed.
    #[error("xenstore unwatch {path}: {errno}")]
    Unwatch {
        /// Watched path.
        path: String,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_RESET_WATCHES` failed.
    #[error("xenstore reset-watches: {errno}")]
    ResetWatches {
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_TRANSACTION_START` failed.
    #[error("xenstore transaction start: {errno}")]
    TransactionStart {
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_TRANSACTION_END` failed (`EAGAIN`: conflict, retry).
    #[error("xenstore transaction {tx_id} end: {errno}")]
    TransactionEnd {
        /// Transaction id.
        tx_id: u32,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_INTRODUCE` failed.
    #[error("xenstore introduce domain {domid}: {errno}")]
    Introduce {
        /// Domain.
        domid: u16,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_RELEASE` failed.
    #[error("xenstore release domain {domid}: {errno}")]
    Release {
        /// Domain.
        domid: u16,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_IS_DOMAIN_INTRODUCED` failed.
    #[error("xenstore is-domain-introduced {domid}: {errno}")]
    IsDomainIntroduced {
        /// Domain.
        domid: u16,
        /// Daemon error.
        errno: XsErrno,
    },
    /// `XS_GET_DOMAIN_PATH` failed.
    #[error("xenstore get-domain-path {domid}: {errno}")]
    GetDomainPath {
        /// Domain.
        domid: u16,
        /// Daemon error.
        errno: XsErrno,
    },
    /// The request could not be encoded (too long, embedded NUL).
    #[error("invalid xenstore request")]
    InvalidRequest(#[source] WireError),
    /// Transport failure.
    #[error("xenstore transport error")]
    Io(#[from] io::Error),
    /// The daemon sent something that violates the protocol.
    #[error("xenstore protocol violation: {0}")]
    Protocol(String),
    /// The connection is gone (xenstored closed it, restarted, or sent something
    /// unframeable): every waiting and every later call of the client fails with this, and
    /// its watches with it. Only a new [`Client`](super::Client) talks to xenstored again.
    #[error("xenstore connection closed")]
    Disconnected,
}

impl XsError {
    /// The daemon's errno, if this is a daemon-reported failure.
    pub fn errno(&self) -> Option<&XsErrno> {
        match self {
            XsError::Read { errno, .. }
            | XsError::Write { errno, .. }
            | XsError::Mkdir { errno, .. }
            | XsError::Rm { errno, .. }
            | XsError::Directory { errno, .. }
            | XsError::GetPerms { errno, .. }
            | XsError::SetPerms { errno, .. }
            | XsError::Watch { errno, .. }
            | XsError::Unwatch { errno, .. }
            | XsError::ResetWatches { errno }
            | XsError::TransactionStart { errno }
            | XsError::TransactionEnd { errno, .. }
            | XsError::Introduce { errno, .. }
            | XsError::Release { errno, .. }
            | XsError::IsDomainIntroduced { errno, .. }
            | XsError::GetDomainPath { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether the connection to xenstored is gone ([`XsError::Disconnected`]), as opposed
    /// to a request that failed on a live connection.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, XsError::Disconnected)
    }

    /// Whether the daemon said `ENOENT`.
    pub fn is_enoent(&self) -> bool {
        self.errno() == Some(&XsErrno::Enoent)
    }

    /// Whether the daemon said `EAGAIN` (transaction conflict).
    pub fn is_eagain(&self) -> bool {
        self.errno() == Some(&XsErrno::Eagain)
    }

    /// Whether the daemon said `EACCES`.
    pub fn is_eacces(&self) -> bool {
        self.errno() == Some(&XsErrno::Eacces)
    }

    /// Whether the daemon said `EEXIST`.
    pub fn is_eexist(&self) -> bool {
        self.errno() == Some(&XsErrno::Eexist)
    }
}
