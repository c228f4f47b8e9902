//! Fuzz entry point into the daemon's request handling (feature `fuzzing`, off by default;
//! used by the `fuzz/` crate only).
//!
//! [`FuzzServer`] registers connections as [`Xenstored::add_connection`] does, but starts no
//! thread: bytes are framed as the connection's reader does and each request goes to the
//! same handler, after which the replies (and watch events) queued for the connection are
//! taken out directly.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::conn::{OutQueue, error_reply};
use super::watch::ConnId;
use super::{Limits, Xenstored};
use crate::wire::{HEADER_LEN, Header, RawMessage, XsErrno};

#[derive(Debug)]
struct FuzzConn {
    id: ConnId,
    out: Arc<OutQueue>,
    /// Our end of the connection's socketpair (the daemon holds the other, to cut it).
    _peer: UnixStream,
}

/// A daemon and its thread-less connections.
#[derive(Debug)]
pub struct FuzzServer {
    daemon: Arc<Xenstored>,
    conns: Vec<FuzzConn>,
}

impl FuzzServer {
    /// A fresh daemon (initial tree only) with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { daemon: Xenstored::with_limits(limits), conns: Vec::new() }
    }

    /// The daemon, for its public API (introduce, release, counts).
    pub fn daemon(&self) -> &Arc<Xenstored> {
        &self.daemon
    }

    /// Opens a connection as domain `domid`; returns its index for [`FuzzServer::request`].
    ///
    /// # Errors
    /// Creating the socketpair failed.
    pub fn connect(&mut self, domid: u16) -> io::Result<usize> {
        let (ours, theirs) = UnixStream::pair()?;
        let out = Arc::new(OutQueue::default());
        let id = self.daemon.register_conn(domid, out.clone(), theirs);
        self.conns.push(FuzzConn { id, out, _peer: ours });
        Ok(self.conns.len() - 1)
    }

    /// Whether connection `conn` is still open (a release of its domain or a framing
    /// violation closes it).
    pub fn is_open(&self, conn: usize) -> bool {
        self.conns.get(conn).is_some_and(|c| self.daemon.lock().conns.contains_key(&c.id))
    }

    /// Handles one request on connection `conn` and returns what was queued for it since
    /// the last call: its reply, then any watch events.
    pub fn request(&mut self, conn: usize, raw: RawMessage) -> Vec<Vec<u8>> {
        let Some(c) = self.conns.get(conn) else { return Vec::new() };
        self.daemon.handle(c.id, raw);
        c.out.take_all()
    }

    /// Frames `bytes` as the connection's reader does and handles each whole request;
    /// returns what was queued for the connection. A header announcing more than the
    /// payload limit is answered `E2BIG` and closes the connection, as on a socket; a
    /// trailing partial message is ignored.
    pub fn feed(&mut self, conn: usize, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let Some(c) = self.conns.get(conn) else { return Vec::new() };
        let (id, out) = (c.id, c.out.clone());
        let mut replies = Vec::new();
        while let Some(head) = bytes.first_chunk::<HEADER_LEN>() {
            let header = Header::decode(head);
            let len = header.len as usize;
            if len > self.daemon.limits().max_payload {
                self.daemon.push_raw(id, error_reply(&header, &XsErrno::E2big));
                replies.append(&mut out.take_all());
                self.daemon.close_conn_graceful(id);
                break;
            }
            let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) else { break };
            self.daemon.handle(id, RawMessage { header, payload: payload.to_vec() });
            replies.append(&mut out.take_all());
            bytes = &bytes[HEADER_LEN + len..];
        }
        replies
    }

    /// Takes what was queued for connection `conn` (watch events fired by others).
    pub fn take_queued(&self, conn: usize) -> Vec<Vec<u8>> {
        self.conns.get(conn).map(|c| c.out.take_all()).unwrap_or_default()
    }
}
