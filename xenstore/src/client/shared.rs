//! State shared between callers and the background reader thread, which
//! demultiplexes replies (by `req_id`) and watch events (by token).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::transport::Transport;
use super::watch::{WatchEvent, WatchQueue};
use crate::wire::{self, MsgType, RawMessage};

/// A reply routed to the caller that sent the request.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Raw type number of the reply (`XS_ERROR` or the request's type).
    pub msg_type: u32,
    /// Reply payload.
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Once set, no request is registered any more and no reply will come.
    pub disconnected: bool,
    next_req_id: u32,
    /// Callers waiting for a reply. Dropping a sender wakes its caller
    /// with `Disconnected`.
    pub pending: HashMap<u32, Sender<Reply>>,
    /// Watch queues by token (tokens are unique per client).
    pub watches: HashMap<String, Arc<WatchQueue>>,
}

impl State {
    /// A request id not currently pending (0 is avoided: events use it).
    pub fn alloc_req_id(&mut self) -> u32 {
        loop {
            self.next_req_id = self.next_req_id.wrapping_add(1);
            if self.next_req_id != 0 && !self.pending.contains_key(&self.next_req_id) {
                return self.next_req_id;
            }
        }
    }
}

/// Everything the reader thread touches.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Written once to stop the reader thread.
    stop: EventFd,
}

impl Shared {
    pub fn new() -> io::Result<Shared> {
        Ok(Shared { state: Mutex::default(), stop: EventFd::from_flags(EfdFlags::EFD_CLOEXEC)? })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the reader thread to exit.
    pub fn stop(&self) {
        let _ = self.stop.write(1);
    }

    /// Connection lost: fail every waiter and close every watch queue.
    fn disconnect(&self) {
        let mut st = self.lock();
        st.disconnected = true;
        st.pending.clear();
        for q in st.watches.values() {
            q.close();
        }
    }

    fn dispatch(&self, raw: RawMessage) {
        if raw.header.msg_type == MsgType::WatchEvent.as_u32() {
            let (path, token) = match wire::parse_strings(&raw.payload).as_deref() {
                Ok([path, token, ..]) => ((*path).to_owned(), (*token).to_owned()),
                _ => {
                    tracing::warn!(len = raw.payload.len(), "malformed XS_WATCH_EVENT ignored");
                    return;
                }
            };
            let queue = self.lock().watches.get(&token).cloned();
            match queue {
                Some(q) => q.push(WatchEvent { path, token }),
                None => tracing::debug!(%path, %token, "event for an unknown watch dropped"),
            }
            return;
        }
        let waiter = self.lock().pending.remove(&raw.header.req_id);
        match waiter {
            // A dropped receiver (detached request) is fine: nobody wants it.
            Some(tx) => {
                let _ = tx.send(Reply { msg_type: raw.header.msg_type, payload: raw.payload });
            }
            None => tracing::warn!(req_id = raw.header.req_id, "reply to no pending request dropped"),
        }
    }
}

/// Starts the reader thread on `transport` (a clone of the write handle).
pub(crate) fn spawn_reader(shared: Arc<Shared>, transport: Transport) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("xenstore-client".into()).spawn(move || {
        reader_loop(&shared, transport);
        shared.disconnect();
    })
}

fn reader_loop(shared: &Shared, mut transport: Transport) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 2 * wire::XENSTORE_PAYLOAD_MAX + 2 * wire::HEADER_LEN];
    loop {
        let (readable, stop) = {
            let mut fds = [
                PollFd::new(transport.as_fd(), PollFlags::POLLIN),
                PollFd::new(shared.stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "xenstore client poll failed");
                    return;
                }
            }
            (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(false))
        };
        if stop {
            return;
        }
        if !readable {
            continue;
        }
        match transport.read(&mut chunk) {
            Ok(0) => {
                tracing::debug!("xenstored closed the connection");
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "xenstore client read failed");
                return;
            }
        }
        // Invariant: `buf` holds the unconsumed tail of the stream, which
        // starts at a message boundary.
        loop {
            match wire::decode_frame(&buf) {
                Ok(Some((raw, used))) => {
                    buf.drain(..used);
                    shared.dispatch(raw);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "xenstored sent an unframeable message; disconnecting");
                    return;
                }
            }
        }
    }
}
