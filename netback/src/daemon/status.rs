//! What the control socket reports: a copy of each vif's xenbus view, published by the
//! xenstore thread after every event, plus the live counters and the switch's port stats.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::knobs::KnobRegistry;
use crate::control::{Request, Response, VifReport};
use crate::switch::Switch;
use crate::vif::{VifCounters, VifId};
use crate::xenbus::XenbusState;

/// One vif as last published by the xenstore thread.
#[derive(Debug, Clone)]
pub(super) struct VifStatus {
    pub state: XenbusState,
    pub frontend_state: Option<u32>,
    pub mac: Option<String>,
    pub error: Option<String>,
    pub counters: Arc<VifCounters>,
    /// The data path runs (so the switch has a port named after the vif).
    pub running: bool,
}

/// Shared between the xenstore thread (writer) and the control socket (reader).
pub(super) type StatusMap = Arc<Mutex<BTreeMap<VifId, VifStatus>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers control requests from `status`, `switch` and `knobs`.
pub(super) fn answer(status: &StatusMap, switch: &Switch, knobs: &KnobRegistry, request: &Request) -> Response {
    match request {
        Request::Set { vif, knobs: change } => knobs.set(*vif, change),
        Request::List | Request::Stats => {
            let ports = switch.snapshot();
            let vifs = lock(status)
                .iter()
                .map(|(id, s)| {
                    let name = id.to_string();
                    let port = s.running.then(|| ports.iter().find(|p| p.name == name).map(|p| p.stats)).flatten();
                    VifReport {
                        id: *id,
                        name,
                        state: s.state as u32,
                        frontend_state: s.frontend_state,
                        mac: s.mac.clone(),
                        error: s.error.clone(),
                        stats: s.counters.snapshot(),
                        port,
                        knobs: knobs.values(*id).unwrap_or_else(|| knobs.defaults()),
                    }
                })
                .collect();
            Response::Vifs { vifs }
        }
    }
}

/// Worker failures reported by `on_fatal` callbacks (on worker threads), for the xenstore
/// thread: `(vif, connection generation, message)`, and an eventfd that is readable while
/// some are pending.
#[derive(Debug)]
pub(super) struct FatalQueue {
    efd: EventFd,
    pending: Mutex<Vec<(VifId, u64, String)>>,
}

impl FatalQueue {
    pub fn new() -> std::io::Result<Self> {
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Self { efd, pending: Mutex::new(Vec::new()) })
    }

    /// Called on a worker thread.
    pub fn push(&self, id: VifId, generation: u64, message: String) {
        lock(&self.pending).push((id, generation, message));
        let _ = self.efd.write(1);
    }

    /// Takes every pending failure (and resets the eventfd).
    pub fn drain(&self) -> Vec<(VifId, u64, String)> {
        let mut pending = lock(&self.pending);
        let _ = self.efd.read();
        std::mem::take(&mut *pending)
    }
}

impl AsFd for FatalQueue {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.efd.as_fd()
    }
}
