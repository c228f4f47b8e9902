//! Connection plumbing: one reader and one writer thread per connection,
//! an unbounded outgoing queue between them, and the unix-socket listener.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;

use super::Xenstored;
use super::watch::ConnId;
use crate::wire::{HEADER_LEN, Header, Message, MsgType, RawMessage, XsErrno};

#[derive(Debug, Default)]
struct OutState {
    msgs: VecDeque<Vec<u8>>,
    /// No more messages will be queued; the writer drains and hangs up.
    closed: bool,
    /// The writer thread has exited.
    finished: bool,
}

/// Messages waiting to be written to one connection. Producers (any
/// request thread, under the daemon lock) never block on a slow reader.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    state: Mutex<OutState>,
    cond: Condvar,
}

impl OutQueue {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one encoded message (dropped if the connection is closing).
    pub fn push(&self, bytes: Vec<u8>) {
        let mut st = self.lock();
        if !st.closed {
            st.msgs.push_back(bytes);
            self.cond.notify_one();
        }
    }

    /// Queues a `XS_WATCH_EVENT`; events over the payload limit are
    /// dropped, as C xenstored does.
    pub fn push_event(&self, path: &str, token: &str) {
        let payload = crate::wire::join_strings(&[path, token]);
        match Message::new(MsgType::WatchEvent, 0, 0, payload).encode() {
            Ok(bytes) => self.push(bytes),
            Err(e) => tracing::warn!(%path, error = %e, "watch event dropped"),
        }
    }

    /// Lets the writer finish what is queued, then hang up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Called by the writer thread as it exits.
    fn mark_finished(&self) {
        self.lock().finished = true;
        self.cond.notify_all();
    }

    /// Waits until the writer has exited, at most `timeout`.
    fn wait_finished(&self, timeout: Duration) {
        let st = self.lock();
        let _ = self.cond.wait_timeout_while(st, timeout, |st| !st.finished);
    }

    /// Takes every queued message without waiting (the fuzz harness has no writer thread).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn take_all(&self) -> Vec<Vec<u8>> {
        self.lock().msgs.drain(..).collect()
    }

    /// Next message; `None` once closed and drained.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut st = self.lock();
        loop {
            if let Some(m) = st.msgs.pop_front() {
                return Some(m);
            }
            if st.closed {
                return None;
            }
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Encodes an error reply echoing the request's ids.
pub(crate) fn error_reply(header: &Header, errno: &XsErrno) -> Vec<u8> {
    let payload = errno.to_payload();
    let h = Header {
        msg_type: MsgType::Error.as_u32(),
        req_id: header.req_id,
        tx_id: header.tx_id,
        len: payload.len() as u32,
    };
    let mut out = h.encode().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Starts the threads serving `stream` as domain `domid`.
pub(crate) fn spawn(daemon: Arc<Xenstored>, stream: UnixStream, domid: u16) -> io::Result<()> {
    let out = Arc::new(OutQueue::default());
    let mut write_half = stream.try_clone()?;
    let conn = daemon.register_conn(domid, out.clone(), stream.try_clone()?);
    let writer_out = out.clone();
    let writer = std::thread::Builder::new().name(format!("xenstored-w{conn}")).spawn(move || {
        while let Some(msg) = writer_out.pop() {
            if let Err(e) = write_half.write_all(&msg) {
                tracing::debug!(conn, error = %e, "xenstored write failed");
                break;
            }
        }
        // Wakes our reader (EOF) and tells the client we are done.
        let _ = write_half.shutdown(Shutdown::Both);
        writer_out.mark_finished();
    });
    if let Err(e) = writer {
        daemon.close_conn(conn);
        return Err(e);
    }
    let reader_daemon = daemon.clone();
    let mut stream = stream;
    let reader_out = out.clone();
    let reader = std::thread::Builder::new().name(format!("xenstored-r{conn}")).spawn(move || {
        match read_loop(&reader_daemon, conn, domid, &mut stream) {
            // Let the writer flush the final error, but never wait forever
            // on a peer that does not read.
            Ending::Violation => {
                reader_daemon.close_conn_graceful(conn);
                reader_out.wait_finished(FLUSH_TIMEOUT);
            }
            Ending::Eof => reader_daemon.close_conn(conn),
        }
        let _ = stream.shutdown(Shutdown::Both);
    });
    if let Err(e) = reader {
        daemon.close_conn(conn);
        return Err(e);
    }
    Ok(())
}

/// How long a connection closed for a protocol violation gets to read
/// the final error before it is cut.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection's read loop ended.
enum Ending {
    /// EOF or read error: the peer is gone.
    Eof,
    /// The peer broke framing; an error reply is queued.
    Violation,
}

/// Reads requests until EOF or a framing violation.
fn read_loop(daemon: &Xenstored, conn: ConnId, domid: u16, stream: &mut UnixStream) -> Ending {
    loop {
        let mut head = [0u8; HEADER_LEN];
        if stream.read_exact(&mut head).is_err() {
            return Ending::Eof;
        }
        let header = Header::decode(&head);
        let len = header.len as usize;
        if len > daemon.limits().max_payload {
            // The stream cannot be re-synchronised: answer, then hang up.
            tracing::warn!(conn, domid, len, "request over the payload limit; closing connection");
            daemon.push_raw(conn, error_reply(&header, &XsErrno::E2big));
            return Ending::Violation;
        }
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).is_err() {
            tracing::warn!(conn, domid, len, "connection closed inside a message");
            return Ending::Eof;
        }
        daemon.handle(conn, RawMessage { header, payload });
    }
}

/// Accepts connections (each one privileged dom0) until `stop` is written.
pub(crate) fn listen(daemon: Arc<Xenstored>, listener: UnixListener, stop: Arc<EventFd>) {
    loop {
        let (ready, stopping) = {
            let mut fds =
                [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "xenstored listener poll failed");
                    return;
                }
            }
            (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false))
        };
        if stopping {
            return;
        }
        if !ready {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Err(e) = spawn(daemon.clone(), stream, 0) {
                    tracing::warn!(error = %e, "cannot serve accepted connection");
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => tracing::warn!(error = %e, "xenstored accept failed"),
        }
    }
}
