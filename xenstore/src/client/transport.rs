//! The byte pipe under a [`Client`](super::Client): a unix socket to
//! xenstored or the `/dev/xen/xenbus` character device.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// A xenstore transport. Both kinds can be cloned into independent read and
/// write handles, and both are pollable.
#[derive(Debug)]
pub enum Transport {
    /// A connection to a xenstored unix socket (or one end of a socketpair).
    Socket(UnixStream),
    /// The xenbus device: each `write` must carry a whole message, `read`
    /// returns queued replies and events.
    Device(File),
}

impl Transport {
    /// Duplicates the handle (shared file description).
    pub fn try_clone(&self) -> io::Result<Transport> {
        Ok(match self {
            Transport::Socket(s) => Transport::Socket(s.try_clone()?),
            Transport::Device(f) => Transport::Device(f.try_clone()?),
        })
    }

    /// Writes one complete encoded message.
    ///
    /// Invariant: `buf` is exactly one message, so a device sees the whole
    /// message in one `write` call (a short write is completed by
    /// `write_all`, which the socket tolerates).
    pub fn write_message(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Transport::Socket(s) => s.write_all(buf),
            Transport::Device(f) => f.write_all(buf),
        }
    }

    /// Reads whatever is available.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.read(buf),
            Transport::Device(f) => f.read(buf),
        }
    }

    /// Best-effort shutdown so the peer (and our reader) see EOF. A device
    /// cannot be shut down; the reader thread is stopped by its own eventfd.
    pub fn shutdown(&self) {
        if let Transport::Socket(s) = self {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(s) => s.as_fd(),
            Transport::Device(f) => f.as_fd(),
        }
    }
}
