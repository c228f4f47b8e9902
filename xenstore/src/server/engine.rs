//! Database operations with xenstored's permission, creation and quota
//! rules, run against either the live store or a transaction's copy.
//!
//! Every operation either fails without touching the store or succeeds
//! completely (quota checks happen before any mutation), which is what
//! lets transactions replay their operations on commit.

use std::collections::HashMap;

use super::Limits;
use super::perms::{Caller, Need, rights};
use super::store::{self, Store};
use crate::wire::{Perm, XENSTORE_PAYLOAD_MAX, XsErrno};

/// A transaction's record: the generation of every node it looked at when
/// it first looked (`None`: absent then).
pub(crate) type AccessLog = HashMap<String, Option<u64>>;

/// A change that may fire watches.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A node was created, written, or had its permissions changed.
    Changed {
        path: String,
        perms: Vec<Perm>,
        parent_perms: Option<Vec<Perm>>,
        /// Permissions before a `SET_PERMS`: losing access still notifies.
        old_perms: Option<Vec<Perm>>,
    },
    /// A subtree was removed; `removed` lists it root first, with perms.
    Removed { path: String, removed: Vec<(String, Vec<Perm>)>, parent_perms: Vec<Perm> },
    /// `@introduceDomain` or `@releaseDomain`.
    Special { path: &'static str },
}

/// One request's view of the database.
pub(crate) struct Engine<'a> {
    pub store: &'a mut Store,
    pub caller: Caller,
    pub limits: &'a Limits,
    /// `Some` inside a transaction.
    pub accessed: Option<&'a mut AccessLog>,
    /// Changes made, in order (discarded inside a transaction).
    pub events: Vec<Event>,
}

impl<'a> Engine<'a> {
    pub fn new(store: &'a mut Store, caller: Caller, limits: &'a Limits, accessed: Option<&'a mut AccessLog>) -> Self {
        Engine { store, caller, limits, accessed, events: Vec::new() }
    }

    /// Records the first-seen generation of `path` (transactions only).
    fn touch(&mut self, path: &str) {
        if let Some(log) = self.accessed.as_deref_mut()
            && !log.contains_key(path)
        {
            log.insert(path.to_owned(), self.store.generation(path));
        }
    }

    /// C's `get_node` + `errno_from_parents`: `Ok` if the node exists and
    /// `need` is granted; `EACCES` if it exists but is denied; for a missing
    /// node `ENOENT` if the nearest existing ancestor grants `need`
    /// (so callers may create it), else `EACCES` (hide its absence).
    fn check(&mut self, path: &str, need: Need) -> Result<(), XsErrno> {
        self.touch(path);
        if let Some(n) = self.store.get(path) {
            return if rights(&self.caller, &n.perms).allow(need) { Ok(()) } else { Err(XsErrno::Eacces) };
        }
        let mut cur = path;
        while let Some(parent) = store::parent_of(cur) {
            self.touch(parent);
            if let Some(n) = self.store.get(parent) {
                return if rights(&self.caller, &n.perms).allow(need) {
                    Err(XsErrno::Enoent)
                } else {
                    Err(XsErrno::Eacces)
                };
            }
            cur = parent;
        }
        Err(XsErrno::Enoent)
    }

    fn node_perms(&self, path: &str) -> Option<Vec<Perm>> {
        self.store.get(path).map(|n| n.perms.clone())
    }

    fn changed(&mut self, path: &str, old_perms: Option<Vec<Perm>>) {
        let perms = self.node_perms(path).unwrap_or_default();
        let parent_perms = store::parent_of(path).and_then(|p| self.node_perms(p));
        self.events.push(Event::Changed { path: path.to_owned(), perms, parent_perms, old_perms });
    }

    /// `XS_READ`.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, XsErrno> {
        self.check(path, Need::Read)?;
        Ok(self.store.get(path).map(|n| n.value.clone()).unwrap_or_default())
    }

    /// `XS_WRITE`: replaces the value, or creates the node and parents.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsErrno> {
        match self.check(path, Need::Write) {
            Ok(()) => self.store.set_value(path, value.to_vec()),
            Err(XsErrno::Enoent) => self.create(path, value)?,
            Err(e) => return Err(e),
        }
        self.changed(path, None);
        Ok(())
    }

    /// `XS_MKDIR`: creates the node if missing (no event if it exists).
    pub fn mkdir(&mut self, path: &str) -> Result<(), XsErrno> {
        match self.check(path, Need::Write) {
            Ok(()) => Ok(()),
            Err(XsErrno::Enoent) => {
                self.create(path, &[])?;
                self.changed(path, None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `path` and missing ancestors. New nodes copy their parent's
    /// permissions; an unprivileged creator becomes their owner. The
    /// caller has checked write access on the nearest existing ancestor.
    fn create(&mut self, path: &str, value: &[u8]) -> Result<(), XsErrno> {
        let mut missing = vec![path];
        let mut cur = path;
        let base = loop {
            let Some(parent) = store::parent_of(cur) else { return Err(XsErrno::Enoent) };
            if self.store.get(parent).is_some() {
                break parent;
            }
            missing.push(parent);
            cur = parent;
        };
        if !self.caller.privileged()
            && self.store.owned_by(self.caller.domid) + missing.len() > self.limits.max_nodes_per_domain
        {
            return Err(XsErrno::Enospc);
        }
        let mut perms = self.node_perms(base).unwrap_or_default();
        if !self.caller.privileged()
            && let Some(first) = perms.first_mut()
        {
            first.domid = self.caller.domid;
        }
        for p in missing.iter().rev() {
            let v = if *p == path { value.to_vec() } else { Vec::new() };
            self.store.create(p, v, perms.clone());
        }
        Ok(())
    }

    /// `XS_RM`: removes a subtree; absent is fine if the parent exists.
    pub fn rm(&mut self, path: &str) -> Result<(), XsErrno> {
        match self.check(path, Need::Write) {
            Ok(()) => {}
            Err(XsErrno::Enoent) => {
                let parent = store::parent_of(path).ok_or(XsErrno::Enoent)?;
                self.touch(parent);
                return if self.store.get(parent).is_some() { Ok(()) } else { Err(XsErrno::Enoent) };
            }
            Err(e) => return Err(e),
        }
        let Some(parent) = store::parent_of(path) else { return Err(XsErrno::Einval) };
        for p in self.store.subtree(path) {
            self.touch(&p);
        }
        self.touch(parent);
        let parent_perms = self.node_perms(parent).unwrap_or_default();
        let removed = self.store.remove_subtree(path);
        self.events.push(Event::Removed { path: path.to_owned(), removed, parent_perms });
        Ok(())
    }

    /// `XS_DIRECTORY`: leaf names of the children.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, XsErrno> {
        self.check(path, Need::Read)?;
        Ok(self.store.get(path).map(|n| n.children.iter().cloned().collect()).unwrap_or_default())
    }

    /// `XS_DIRECTORY_PART`: `<generation>|<child>|...` from byte `offset`
    /// of the full child list, with a final empty string once complete.
    pub fn directory_part(&mut self, path: &str, offset: usize) -> Result<Vec<u8>, XsErrno> {
        self.check(path, Need::Read)?;
        let Some(node) = self.store.get(path) else { return Err(XsErrno::Enoent) };
        let mut out = format!("{}\0", node.generation).into_bytes();
        let mut all = Vec::new();
        for c in &node.children {
            all.extend_from_slice(c.as_bytes());
            all.push(0);
        }
        let mut pos = offset.min(all.len());
        // Never start in the middle of a name.
        while pos > 0 && pos < all.len() && all[pos - 1] != 0 {
            pos += 1;
        }
        let budget = XENSTORE_PAYLOAD_MAX - out.len() - 1;
        let mut end = pos;
        while end < all.len() {
            let len = all[end..].iter().position(|&b| b == 0).map_or(all.len() - end, |i| i + 1);
            if end + len - pos > budget {
                break;
            }
            end += len;
        }
        out.extend_from_slice(&all[pos..end]);
        if end == all.len() {
            out.push(0);
        }
        Ok(out)
    }

    /// `XS_GET_PERMS` (special `@` nodes included).
    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, XsErrno> {
        self.check(path, Need::Read)?;
        self.node_perms(path).ok_or(XsErrno::Enoent)
    }

    /// `XS_SET_PERMS`: owner (or dom0) only; a guest may not give the node away.
    pub fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), XsErrno> {
        let Some(new_owner) = perms.first().map(|p| p.domid) else { return Err(XsErrno::Einval) };
        self.check(path, Need::Owner)?;
        let old = self.node_perms(path).ok_or(XsErrno::Enoent)?;
        if !self.caller.privileged() && old.first().map(|p| p.domid) != Some(new_owner) {
            return Err(XsErrno::Eperm);
        }
        self.store.set_perms(path, perms);
        self.changed(path, Some(old));
        Ok(())
    }
}
