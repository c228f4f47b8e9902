//! The `xsd_errors` table: xenstored reports failures as errno *names*.

use std::fmt;

/// An error reported by xenstored in an `XS_ERROR` reply.
///
/// The wire carries the errno's name (`"ENOENT"`), never its number, so the
/// variants mirror the `xsd_errors` table of `xs_wire.h`. Names outside the
/// table are kept verbatim in [`XsErrno::Other`] so nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XsErrno {
    /// `EINVAL`: malformed request, bad path, bad argument.
    Einval,
    /// `EACCES`: permission denied.
    Eacces,
    /// `EEXIST`: already exists (e.g. duplicate watch).
    Eexist,
    /// `EISDIR`: is a directory.
    Eisdir,
    /// `ENOENT`: no such node, watch or transaction.
    Enoent,
    /// `ENOMEM`: out of memory.
    Enomem,
    /// `ENOSPC`: quota exceeded (nodes, transactions).
    Enospc,
    /// `EIO`: internal I/O error.
    Eio,
    /// `ENOTEMPTY`: directory not empty.
    Enotempty,
    /// `ENOSYS`: unsupported operation.
    Enosys,
    /// `EROFS`: read-only.
    Erofs,
    /// `EBUSY`: busy (e.g. nested transaction).
    Ebusy,
    /// `EAGAIN`: transaction conflict, retry.
    Eagain,
    /// `EISCONN`: already connected.
    Eisconn,
    /// `E2BIG`: too big (payload, watch quota).
    E2big,
    /// `EPERM`: operation not permitted (e.g. guest changing an owner).
    Eperm,
    /// Any other name the daemon sent.
    Other(String),
}

/// Every table entry, in `xsd_errors` order (plus `EPERM`), used by parsing
/// and by the round-trip tests.
pub const KNOWN_ERRNOS: [XsErrno; 16] = [
    XsErrno::Einval,
    XsErrno::Eacces,
    XsErrno::Eexist,
    XsErrno::Eisdir,
    XsErrno::Enoent,
    XsErrno::Enomem,
    XsErrno::Enospc,
    XsErrno::Eio,
    XsErrno::Enotempty,
    XsErrno::Enosys,
    XsErrno::Erofs,
    XsErrno::Ebusy,
    XsErrno::Eagain,
    XsErrno::Eisconn,
    XsErrno::E2big,
    XsErrno::Eperm,
];

impl XsErrno {
    /// The name as sent on the wire (without the trailing NUL).
    pub fn as_str(&self) -> &str {
        match self {
            XsErrno::Einval => "EINVAL",
            XsErrno::Eacces => "EACCES",
            XsErrno::Eexist => "EEXIST",
            XsErrno::Eisdir => "EISDIR",
            XsErrno::Enoent => "ENOENT",
            XsErrno::Enomem => "ENOMEM",
            XsErrno::Enospc => "ENOSPC",
            XsErrno::Eio => "EIO",
            XsErrno::Enotempty => "ENOTEMPTY",
            XsErrno::Enosys => "ENOSYS",
            XsErrno::Erofs => "EROFS",
            XsErrno::Ebusy => "EBUSY",
            XsErrno::Eagain => "EAGAIN",
            XsErrno::Eisconn => "EISCONN",
            XsErrno::E2big => "E2BIG",
            XsErrno::Eperm => "EPERM",
            XsErrno::Other(s) => s,
        }
    }

    /// Parses an errno name; unknown names become [`XsErrno::Other`].
    pub fn from_name(name: &str) -> XsErrno {
        KNOWN_ERRNOS.iter().find(|e| e.as_str() == name).cloned().unwrap_or_else(|| XsErrno::Other(name.to_owned()))
    }

    /// Parses the payload of an `XS_ERROR` reply (`"ENOENT\0"`); a missing
    /// NUL or bad UTF-8 is tolerated (lossy) because the reply is already an
    /// error and must not be turned into a panic or a second failure.
    pub fn from_payload(payload: &[u8]) -> XsErrno {
        let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
        XsErrno::from_name(&String::from_utf8_lossy(&payload[..end]))
    }

    /// Encodes the `XS_ERROR` payload (name plus NUL).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = self.as_str().as_bytes().to_vec();
        v.push(0);
        v
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
