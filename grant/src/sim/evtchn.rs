//! Event channels: a bound port is a pair of eventfds, our inbox and the peer's.
//!
//! The host keeps, per domain, a port table with both eventfds of every port, following
//! `xen/common/event_channel.c`: `alloc_unbound` creates an `Unbound { remote }` port;
//! `bind_interdomain` links a new local port to it; closing one end of an interdomain
//! channel returns the other end to `Unbound` (so it can be bound again). Notifications
//! never involve the host: `notify` writes the peer's eventfd directly.

use super::domain::Control;
use super::protocol::Request;
use crate::{DomId, EventChannel, EvtchnError, EvtchnPort};
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// A bound (or allocated, not yet bound) sim event channel. Unbinds on drop.
pub struct SimEventChannel {
    port: EvtchnPort,
    remote: DomId,
    /// Readable when the peer notified us (nonblocking).
    inbox: OwnedFd,
    /// The peer's inbox; `notify` writes it.
    peer: OwnedFd,
    ctl: Arc<Control>,
}

impl SimEventChannel {
    pub(crate) fn new(port: EvtchnPort, remote: DomId, inbox: OwnedFd, peer: OwnedFd, ctl: Arc<Control>) -> Self {
        Self { port, remote, inbox, peer, ctl }
    }

    /// The domain at the other end.
    pub fn remote_domid(&self) -> DomId {
        self.remote
    }
}

impl fmt::Debug for SimEventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimEventChannel").field("port", &self.port).field("remote", &self.remote).finish()
    }
}

impl AsFd for SimEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inbox.as_fd()
    }
}

impl EventChannel for SimEventChannel {
    fn port(&self) -> EvtchnPort {
        self.port
    }

    fn notify(&self) -> Result<(), EvtchnError> {
        match nix::unistd::write(&self.peer, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is saturated, so an event is pending anyway.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(EvtchnError::Notify { port: self.port, source: e.into() }),
        }
    }

    fn take_pending(&self) -> Result<bool, EvtchnError> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(&self.inbox, &mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf) != 0),
            Ok(n) => Err(EvtchnError::Deliver {
                port: self.port,
                source: std::io::Error::other(format!("short eventfd read of {n} bytes")),
            }),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(EvtchnError::Deliver { port: self.port, source: e.into() }),
        }
    }

    /// Masking is not simulated: delivery is always enabled.
    fn unmask(&self) -> Result<(), EvtchnError> {
        Ok(())
    }
}

impl Drop for SimEventChannel {
    fn drop(&mut self) {
        if let Err(e) = self.ctl.call(&Request::Close(self.port)) {
            tracing::debug!(port = self.port, error = %e, "closing sim event channel");
        }
    }
}

/// Largest port number, as the 2-level ABI on 64-bit allows.
pub(crate) const MAX_PORT: EvtchnPort = 4095;

/// Who a port is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Allocated for `remote` to bind (`ECS_UNBOUND`).
    Unbound { remote: DomId },
    /// Bound to `port` of `remote` (`ECS_INTERDOMAIN`).
    Interdomain { remote: DomId, port: EvtchnPort },
}

/// One port of a domain, as the host keeps it.
#[derive(Debug)]
pub(crate) struct Port {
    pub link: Link,
    /// This port's inbox.
    pub inbox: OwnedFd,
    /// The inbox of whoever binds (or bound) to this port.
    pub peer: OwnedFd,
}

/// The ports of one domain.
#[derive(Debug, Default)]
pub(crate) struct PortTable {
    ports: BTreeMap<EvtchnPort, Port>,
}

impl PortTable {
    /// The lowest free port; port 0 is reserved, as in Xen.
    fn free_port(&self) -> Result<EvtchnPort, Errno> {
        let mut want = 1;
        for &p in self.ports.keys() {
            if p != want {
                break;
            }
            want += 1;
        }
        if want > MAX_PORT { Err(Errno::ENOSPC) } else { Ok(want) }
    }

    pub(crate) fn get(&self, port: EvtchnPort) -> Option<&Port> {
        self.ports.get(&port)
    }

    pub(crate) fn get_mut(&mut self, port: EvtchnPort) -> Option<&mut Port> {
        self.ports.get_mut(&port)
    }

    /// `EVTCHNOP_alloc_unbound`: a new port for `remote`, with two fresh eventfds.
    pub(crate) fn alloc_unbound(&mut self, remote: DomId) -> Result<EvtchnPort, Errno> {
        let port = self.free_port()?;
        let new_fd = || EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map(OwnedFd::from);
        let (inbox, peer) = (new_fd()?, new_fd()?);
        self.ports.insert(port, Port { link: Link::Unbound { remote }, inbox, peer });
        Ok(port)
    }

    /// Inserts the local end of a new interdomain binding; returns its port.
    pub(crate) fn insert_bound(&mut self, link: Link, inbox: OwnedFd, peer: OwnedFd) -> Result<EvtchnPort, Errno> {
        let port = self.free_port()?;
        self.ports.insert(port, Port { link, inbox, peer });
        Ok(port)
    }

    /// Removes `port`, returning it; the caller unlinks the peer.
    pub(crate) fn remove(&mut self, port: EvtchnPort) -> Option<Port> {
        self.ports.remove(&port)
    }

    /// Every port number.
    pub(crate) fn ports(&self) -> Vec<EvtchnPort> {
        self.ports.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_count_from_one_and_reuse_the_lowest() {
        let mut t = PortTable::default();
        assert_eq!(t.alloc_unbound(0), Ok(1));
        assert_eq!(t.alloc_unbound(0), Ok(2));
        assert_eq!(t.alloc_unbound(0), Ok(3));
        assert!(t.remove(2).is_some());
        assert_eq!(t.alloc_unbound(5), Ok(2));
        assert_eq!(t.get(2).unwrap().link, Link::Unbound { remote: 5 });
        assert_eq!(t.ports(), vec![1, 2, 3]);
    }
}
