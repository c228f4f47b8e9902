//! [`EventChannel`] over `/dev/xen/evtchn`, one open file per channel.
//!
//! Each channel owns its file, so the file's pollable descriptor signals exactly this port
//! and its ring of pending ports never holds another. The driver masks a port when it
//! queues it, and a `write` of the port unmasks it: so at most one event waits in the ring,
//! and events that arrive while one is pending coalesce (Xen's pending bit), as the sim's
//! eventfd counter does.

use super::abi;
use super::device::{Device, Node};
use crate::{DomId, EventChannel, EvtchnError, EvtchnPort};
use nix::errno::Errno;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// An evtchn operation the kernel refused. Travels as the `source` (or, for binds, the
/// `reason`) of an [`EvtchnError`].
#[derive(Debug, thiserror::Error)]
pub enum EvtchnDeviceError {
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN` (`EVTCHNOP_bind_interdomain`).
    #[error("IOCTL_EVTCHN_BIND_INTERDOMAIN on {} failed: {errno}", path.display())]
    BindInterdomain {
        /// The evtchn path.
        path: PathBuf,
        /// Xen's (or the driver's) errno.
        errno: Errno,
    },
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (`EVTCHNOP_alloc_unbound`).
    #[error("IOCTL_EVTCHN_BIND_UNBOUND_PORT on {} failed: {errno}", path.display())]
    BindUnboundPort {
        /// The evtchn path.
        path: PathBuf,
        /// Xen's (or the driver's) errno.
        errno: Errno,
    },
    /// `IOCTL_EVTCHN_NOTIFY` (`EVTCHNOP_send`).
    #[error("IOCTL_EVTCHN_NOTIFY on {} failed: {errno}", path.display())]
    Notify {
        /// The evtchn path.
        path: PathBuf,
        /// What the driver said.
        errno: Errno,
    },
    /// `read` of pending ports.
    #[error("reading pending ports from {} failed: {errno}", path.display())]
    Read {
        /// The evtchn path.
        path: PathBuf,
        /// What the driver said.
        errno: Errno,
    },
    /// `write` of the port (unmask).
    #[error("unmasking through {} failed: {errno}", path.display())]
    Unmask {
        /// The evtchn path.
        path: PathBuf,
        /// What the driver said.
        errno: Errno,
    },
    /// `IOCTL_EVTCHN_RESET` after the ring overflowed.
    #[error("IOCTL_EVTCHN_RESET on {} failed: {errno}", path.display())]
    Reset {
        /// The evtchn path.
        path: PathBuf,
        /// What the driver said.
        errno: Errno,
    },
}

impl EvtchnDeviceError {
    /// The errno behind the failure.
    pub fn errno(&self) -> Errno {
        match self {
            Self::BindInterdomain { errno, .. }
            | Self::BindUnboundPort { errno, .. }
            | Self::Notify { errno, .. }
            | Self::Read { errno, .. }
            | Self::Unmask { errno, .. }
            | Self::Reset { errno, .. } => *errno,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::Error::from(self.errno()).kind(), self)
    }
}

fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Ports one `read` takes at most; with one port per file and masking, one is all there is.
const READ_PORTS: usize = 16;

/// A port bound through its own `/dev/xen/evtchn` file. Unbinds on drop.
pub struct XenEventChannel {
    dev: Device,
    port: EvtchnPort,
    remote: DomId,
}

impl XenEventChannel {
    /// `EVTCHNOP_alloc_unbound` for `remote`, on a new file under `dir`.
    pub(super) fn alloc_unbound(dir: &Path, remote: DomId) -> Result<Self, EvtchnError> {
        let dev = open(dir)?;
        let arg = abi::EvtchnBindUnboundPort { remote_domain: remote.into() };
        // SAFETY: `arg` is a valid request that the kernel only reads; the file is open.
        let port = unsafe { abi::evtchn_bind_unbound_port(dev.file.as_raw_fd(), &arg) }.and_then(port_of);
        match port {
            Ok(port) => Ok(Self::bound(dev, port, remote)),
            Err(errno) => {
                let reason = EvtchnDeviceError::BindUnboundPort { path: dev.path.to_path_buf(), errno }.to_string();
                Err(EvtchnError::AllocUnbound { remote, errno, reason })
            }
        }
    }

    /// `EVTCHNOP_bind_interdomain` to `remote_port` of `remote`, on a new file under `dir`.
    pub(super) fn bind_interdomain(dir: &Path, remote: DomId, remote_port: EvtchnPort) -> Result<Self, EvtchnError> {
        let dev = open(dir)?;
        let arg = abi::EvtchnBindInterdomain { remote_domain: remote.into(), remote_port };
        // SAFETY: `arg` is a valid request that the kernel only reads; the file is open.
        let port = unsafe { abi::evtchn_bind_interdomain(dev.file.as_raw_fd(), &arg) }.and_then(port_of);
        match port {
            Ok(port) => Ok(Self::bound(dev, port, remote)),
            Err(errno) => {
                let reason = EvtchnDeviceError::BindInterdomain { path: dev.path.to_path_buf(), errno }.to_string();
                Err(EvtchnError::Bind { remote, remote_port, errno, reason })
            }
        }
    }

    fn bound(dev: Device, port: EvtchnPort, remote: DomId) -> Self {
        tracing::debug!(port, remote, path = %dev.path(), "event channel bound");
        Self { dev, port, remote }
    }

    /// The domain at the other end.
    pub fn remote_domid(&self) -> DomId {
        self.remote
    }

    fn deliver_error(&self, e: EvtchnDeviceError) -> EvtchnError {
        EvtchnError::Deliver { port: self.port, source: e.into_io() }
    }

    fn path(&self) -> PathBuf {
        self.dev.path.to_path_buf()
    }
}

/// A new nonblocking evtchn file for one channel.
fn open(dir: &Path) -> Result<Device, EvtchnError> {
    Device::open(dir, Node::Evtchn, true)
        .map_err(|e| EvtchnError::Hypervisor { context: "opening an event channel".into(), source: e.into_io() })
}

/// The bind ioctls return the new local port.
fn port_of(ret: libc::c_int) -> nix::Result<EvtchnPort> {
    EvtchnPort::try_from(ret).map_err(|_| Errno::EINVAL)
}

impl EventChannel for XenEventChannel {
    fn port(&self) -> EvtchnPort {
        self.port
    }

    fn notify(&self) -> Result<(), EvtchnError> {
        let arg = abi::EvtchnPortArg { port: self.port };
        // SAFETY: `arg` is a valid request that the kernel only reads; the file is open.
        unsafe { abi::evtchn_notify(self.dev.file.as_raw_fd(), &arg) }.map(drop).map_err(|errno| EvtchnError::Notify {
            port: self.port,
            source: EvtchnDeviceError::Notify { path: self.path(), errno }.into_io(),
        })
    }

    /// A nonblocking `read` of pending ports. On ring overflow (`EFBIG`, which one masked
    /// port per file should never cause) the ring is reset and an event reported, since
    /// some were lost: callers re-check their rings on every event anyway.
    fn take_pending(&self) -> Result<bool, EvtchnError> {
        let mut buf = [0u8; 4 * READ_PORTS];
        let n = loop {
            match (&*self.dev.file).read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    tracing::warn!(port = self.port, path = %self.dev.path(), "event ring overflowed; resetting it");
                    // SAFETY: the reset ioctl takes no argument; the file is open.
                    unsafe { abi::evtchn_reset(self.dev.file.as_raw_fd()) }
                        .map_err(|errno| self.deliver_error(EvtchnDeviceError::Reset { path: self.path(), errno }))?;
                    return Ok(true);
                }
                Err(e) => {
                    return Err(self.deliver_error(EvtchnDeviceError::Read { path: self.path(), errno: errno_of(&e) }));
                }
            }
        };
        for chunk in buf[..n].chunks_exact(4) {
            let port = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if port != self.port {
                tracing::warn!(port, ours = self.port, "event for a port this file did not bind");
            }
        }
        Ok(n >= 4)
    }

    /// A `write` of our port; the driver ignores it while the port is not masked.
    fn unmask(&self) -> Result<(), EvtchnError> {
        loop {
            match (&*self.dev.file).write(&self.port.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let errno = errno_of(&e);
                    return Err(self.deliver_error(EvtchnDeviceError::Unmask { path: self.path(), errno }));
                }
            }
        }
    }
}

impl AsFd for XenEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.file.as_fd()
    }
}

impl fmt::Debug for XenEventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenEventChannel").field("port", &self.port).field("remote", &self.remote).finish()
    }
}

impl Drop for XenEventChannel {
    fn drop(&mut self) {
        let arg = abi::EvtchnPortArg { port: self.port };
        // SAFETY: `arg` is a valid request that the kernel only reads; the file is still open.
        if let Err(errno) = unsafe { abi::evtchn_unbind(self.dev.file.as_raw_fd(), &arg) } {
            // Closing the file (right after this) unbinds every port it holds anyway.
            tracing::debug!(port = self.port, path = %self.dev.path(), %errno, "IOCTL_EVTCHN_UNBIND failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::fs::File;
    use std::sync::Arc;

    /// A channel whose "device" is one end of a nonblocking socketpair; the other end plays
    /// the driver: what it writes is read as pending ports, and it reads our unmasks.
    fn channel(port: EvtchnPort) -> (XenEventChannel, File) {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (ours, driver) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap();
        let dev = Device { file: Arc::new(File::from(ours)), path: Path::new("/test/evtchn").into() };
        (XenEventChannel::bound(dev, port, 3), File::from(driver))
    }

    #[test]
    fn pending_ports_are_read_and_unmask_writes_the_port() {
        let (ch, mut driver) = channel(0x0102_0304);
        assert!(!ch.take_pending().unwrap(), "nothing queued reads as EAGAIN");
        driver.write_all(&0x0102_0304u32.to_ne_bytes()).unwrap();
        assert!(ch.take_pending().unwrap());
        assert!(!ch.take_pending().unwrap(), "the port was consumed");
        ch.unmask().unwrap();
        let mut got = [0u8; 8];
        assert_eq!(driver.read(&mut got).unwrap(), 4, "one u32 per unmask");
        assert_eq!(got[..4], 0x0102_0304u32.to_ne_bytes());
    }

    #[test]
    fn notify_failure_carries_the_errno_and_path() {
        let (ch, _driver) = channel(7);
        let Err(EvtchnError::Notify { port: 7, source }) = ch.notify() else { panic!("notify on a socket worked") };
        let inner = source.get_ref().and_then(|e| e.downcast_ref::<EvtchnDeviceError>()).unwrap();
        assert!(matches!(inner, EvtchnDeviceError::Notify { errno: Errno::ENOTTY, .. }), "{inner:?}");
        assert!(source.to_string().starts_with("IOCTL_EVTCHN_NOTIFY on /test/evtchn failed: ENOTTY"), "{source}");
    }

    #[test]
    fn a_closed_peer_reads_as_nothing_and_unmask_fails() {
        let (ch, driver) = channel(7);
        drop(driver);
        // A closed peer reads as end of file: no event, not an error.
        assert!(!ch.take_pending().unwrap());
        assert!(matches!(ch.unmask(), Err(EvtchnError::Deliver { port: 7, .. })), "EPIPE on write");
    }
}
