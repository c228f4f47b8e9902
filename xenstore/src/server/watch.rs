//! Registered watches and the matching of [`Event`]s against them.

use super::engine::Event;
use super::perms::{Caller, rights};
use super::store::{self, Store};
use crate::wire::{Perm, XsErrno};

/// Connection identifier inside one daemon.
pub(crate) type ConnId = u64;

/// One `XS_WATCH` registration.
#[derive(Debug, Clone)]
struct WatchEntry {
    conn: ConnId,
    domid: u16,
    /// Canonical (absolute or `@special`) path.
    path: String,
    token: String,
    /// Bytes stripped from event paths (relative registration).
    prefix_len: usize,
}

/// An event to deliver: `(connection, event path, token)`.
pub(crate) type Delivery = (ConnId, String, String);

/// All watches of the daemon, in registration order.
#[derive(Debug, Default)]
pub(crate) struct WatchTable {
    entries: Vec<WatchEntry>,
}

impl WatchTable {
    /// Adds a watch. `EEXIST` for a duplicate (path, token) on the
    /// connection, `E2BIG` once an unprivileged domain has `max` watches.
    pub fn add(
        &mut self,
        conn: ConnId,
        domid: u16,
        path: String,
        token: String,
        prefix_len: usize,
        max: usize,
    ) -> Result<(), XsErrno> {
        if self.entries.iter().any(|w| w.conn == conn && w.path == path && w.token == token) {
            return Err(XsErrno::Eexist);
        }
        if domid != 0 && self.entries.iter().filter(|w| w.domid == domid).count() >= max {
            return Err(XsErrno::E2big);
        }
        self.entries.push(WatchEntry { conn, domid, path, token, prefix_len });
        Ok(())
    }

    /// Removes one watch; `ENOENT` if it is not registered.
    pub fn remove(&mut self, conn: ConnId, path: &str, token: &str) -> Result<(), XsErrno> {
        let before = self.entries.len();
        self.entries.retain(|w| !(w.conn == conn && w.path == path && w.token == token));
        if self.entries.len() == before { Err(XsErrno::Enoent) } else { Ok(()) }
    }

    /// Drops every watch of a connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        self.entries.retain(|w| w.conn != conn);
    }

    /// The watched paths of a connection, in registration order.
    pub fn paths_of(&self, conn: ConnId) -> Vec<String> {
        self.entries.iter().filter(|w| w.conn == conn).map(|w| w.path.clone()).collect()
    }

    /// Number of watches registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The deliveries `event` causes. `caller_of` gives the identity of a
    /// watching domain (for targets); a watcher only hears about nodes it
    /// (or, for removals, the node's parent) can read; dom0 hears all.
    pub fn deliveries(&self, event: &Event, store: &Store, caller_of: impl Fn(u16) -> Caller) -> Vec<Delivery> {
        let mut out = Vec::new();
        for w in &self.entries {
            let caller = caller_of(w.domid);
            let readable = |perms: &[Perm]| rights(&caller, perms).read;
            let hit = match event {
                Event::Changed { path, perms, parent_perms, old_perms } => {
                    let allowed = || {
                        old_perms.as_deref().is_some_and(readable)
                            || readable(perms)
                            || parent_perms.as_deref().is_some_and(readable)
                    };
                    (store::is_child(path, &w.path) && allowed()).then(|| path.clone())
                }
                Event::Removed { path, removed, parent_perms } => {
                    removal_hit(w, path, removed, parent_perms, &readable)
                }
                Event::Special { path } => {
                    let allowed = || store.get(path).is_some_and(|n| readable(&n.perms));
                    (w.path == *path && allowed()).then(|| (*path).to_owned())
                }
            };
            if let Some(epath) = hit {
                let epath = epath.get(w.prefix_len..).unwrap_or(&epath).to_owned();
                out.push((w.conn, epath, w.token.clone()));
            }
        }
        out
    }
}

/// A removal of `root` fires watches at or above it with the root's path,
/// and watches below it with their own path (xenstore.txt, WATCH_EVENT).
fn removal_hit(
    w: &WatchEntry,
    root: &str,
    removed: &[(String, Vec<Perm>)],
    parent_perms: &[Perm],
    readable: &dyn Fn(&[Perm]) -> bool,
) -> Option<String> {
    let perms_of = |p: &str| removed.iter().find(|(q, _)| q == p).map(|(_, perms)| perms.as_slice());
    if store::is_child(root, &w.path) {
        let ok = perms_of(root).is_some_and(readable) || readable(parent_perms);
        return ok.then(|| root.to_owned());
    }
    if !store::is_child(&w.path, root) {
        return None;
    }
    // The deepest removed node at or above the watched path decides.
    let (nearest, perms) = removed.iter().filter(|(p, _)| store::is_child(&w.path, p)).max_by_key(|(p, _)| p.len())?;
    let parent_ok = match store::parent_of(nearest) {
        Some(parent) if parent != root && store::is_child(parent, root) => perms_of(parent).is_some_and(readable),
        Some(_) => readable(parent_perms) || perms_of(root).is_some_and(readable),
        None => false,
    };
    (readable(perms) || parent_ok).then(|| w.path.clone())
}
