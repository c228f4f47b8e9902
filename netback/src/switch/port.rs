//! [`SwitchPort`]: a vif's handle on its port of the switch.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::forward::ForwardCache;
use super::queue::PortQueue;
use super::{PortId, Switch};
use crate::clock::coarse_now;
use crate::frame::Frame;
use crate::port::{Backlog, PortStats, TransmitOutcome, Uplink};

/// One port of a [`Switch`], owned by the vif worker it serves. Dropping it
/// unplugs the port: frames waiting for it are freed, nothing more is
/// delivered to it, and the MACs learned on it are forgotten.
#[derive(Debug)]
pub struct SwitchPort {
    switch: Arc<Switch>,
    queue: Arc<PortQueue>,
    /// Only the port's owner transmits, so this lock is never contended.
    cache: Mutex<ForwardCache>,
}

impl SwitchPort {
    pub(super) fn new(switch: Arc<Switch>, queue: Arc<PortQueue>) -> SwitchPort {
        SwitchPort { switch, queue, cache: Mutex::default() }
    }

    /// This port's id (as in [`Switch::mac_table`] and [`Switch::snapshot`]).
    pub fn id(&self) -> PortId {
        self.queue.id
    }

    /// The name given to [`Switch::add_port`].
    pub fn name(&self) -> &str {
        &self.queue.name
    }

    /// The switch this port is plugged into.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// Frames and bytes waiting to be popped.
    pub fn queued(&self) -> (usize, usize) {
        self.queue.depth()
    }
}

impl Uplink for SwitchPort {
    fn transmit(&self, frame: Frame) -> TransmitOutcome {
        self.switch.transmit(&self.queue, frame, coarse_now()).0
    }

    fn transmit_batch(&self, frames: &mut Vec<Frame>) -> usize {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.switch.transmit_batch(&self.queue, &mut cache, frames)
    }

    fn pop(&self) -> Option<Frame> {
        self.queue.pop()
    }

    fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        self.queue.pop_batch(max, out);
    }

    fn ready_fd(&self) -> BorrowedFd<'_> {
        self.queue.ready().as_fd()
    }

    fn stats(&self) -> PortStats {
        self.queue.counters.snapshot()
    }

    fn expire(&self, max_age: Option<Duration>) -> Backlog {
        self.queue.expire(max_age)
    }

    fn set_carrier(&self, on: bool) {
        self.queue.set_carrier(on);
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        self.switch.remove_port(self.queue.id);
    }
}
