//! Watches: per-watch unbounded event queues with an eventfd for epoll.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{Client, XsError};
use crate::wire::MsgType;

/// One `XS_WATCH_EVENT`: `path` changed (or the watch was just registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (relative if the watch path was relative).
    pub path: String,
    /// The watch's token.
    pub token: String,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<WatchEvent>,
    /// Set once the connection is gone: no more events will arrive.
    closed: bool,
}

/// The queue the reader thread fills for one watch.
///
/// Invariant (under `state`'s lock): the eventfd counter is non-zero iff
/// `events` is non-empty or `closed` is set, so the fd is readable exactly
/// when `recv` would not block.
#[derive(Debug)]
pub(crate) struct WatchQueue {
    state: Mutex<QueueState>,
    cond: Condvar,
    efd: EventFd,
}

impl WatchQueue {
    pub(crate) fn new() -> io::Result<WatchQueue> {
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(WatchQueue { state: Mutex::default(), cond: Condvar::new(), efd })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (never blocks: the queue is unbounded).
    pub(crate) fn push(&self, event: WatchEvent) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        if st.events.is_empty() {
            let _ = self.efd.write(1);
        }
        st.events.push_back(event);
        self.cond.notify_all();
    }

    /// Marks the queue dead; queued events stay receivable.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        if !st.closed && st.events.is_empty() {
            let _ = self.efd.write(1);
        }
        st.closed = true;
        self.cond.notify_all();
    }

    /// Pops one event, waiting until `deadline` (`None`: forever) if `block`.
    fn pop(&self, block: bool, deadline: Option<Instant>) -> Result<Option<WatchEvent>, XsError> {
        let mut st = self.lock();
        loop {
            if let Some(ev) = st.events.pop_front() {
                if st.events.is_empty() && !st.closed {
                    // Drain the counter: readable no more (see invariant).
                    let _ = self.efd.read();
                }
                return Ok(Some(ev));
            }
            if st.closed {
                return Err(XsError::Disconnected);
            }
            if !block {
                return Ok(None);
            }
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    self.cond.wait_timeout(st, d - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    fn len(&self) -> usize {
        self.lock().events.len()
    }
}

/// A registered watch. Events queue up without bound until received; the
/// watch is removed (`XS_UNWATCH`, best effort) when dropped.
#[derive(Debug)]
pub struct Watch {
    client: Client,
    path: String,
    token: String,
    queue: Arc<WatchQueue>,
    active: bool,
}

impl Watch {
    pub(crate) fn new(client: Client, path: String, token: String, queue: Arc<WatchQueue>) -> Watch {
        Watch { client, path, token, queue, active: true }
    }

    /// Blocks until an event arrives; `Disconnected` once the connection is
    /// gone and the queue is drained.
    pub fn recv(&self) -> Result<WatchEvent, XsError> {
        self.queue.pop(true, None)?.ok_or(XsError::Disconnected)
    }

    /// Waits up to `timeout`; `Ok(None)` on timeout, `Disconnected` as [`Watch::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>, XsError> {
        self.queue.pop(true, Some(Instant::now() + timeout))
    }

    /// Returns a queued event without waiting; `Ok(None)` if none, `Disconnected` as
    /// [`Watch::recv`].
    pub fn try_recv(&self) -> Result<Option<WatchEvent>, XsError> {
        self.queue.pop(false, None)
    }

    /// Number of events queued right now.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The token identifying this watch on its connection.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The watched path, as given at registration.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes the watch and waits for the daemon's answer.
    pub fn unwatch(mut self) -> Result<(), XsError> {
        self.active = false;
        self.client.forget_watch(&self.token);
        let payload = crate::wire::join_strings(&[self.path.as_str(), self.token.as_str()]);
        self.client
            .call(MsgType::Unwatch, 0, payload)
            .map(drop)
            .map_err(|e| e.into_xs(|errno| XsError::Unwatch { path: self.path.clone(), errno }))
    }
}

impl AsFd for Watch {
    /// Readable while events are queued (or the connection is gone).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.efd.as_fd()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.active {
            self.client.forget_watch(&self.token);
            let payload = crate::wire::join_strings(&[self.path.as_str(), self.token.as_str()]);
            self.client.send_detached(MsgType::Unwatch, 0, payload);
        }
    }
}
