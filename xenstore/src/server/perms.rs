//! The xenstore permission model (C xenstored's `perm_for_conn`).
//!
//! A node's list is never empty. Entry 0 names the owner and gives the
//! access of every domain not listed later; entries 1.. give per-domain
//! access. Dom0 (privileged) and the owner (or a domain targeting the owner)
//! get full access.

use crate::wire::{Access, Perm};

/// The identity a request is evaluated under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The connection's domain; 0 is privileged.
    pub domid: u16,
    /// `XS_SET_TARGET`: this domain acts with `target`'s rights.
    pub target: Option<u16>,
}

impl Caller {
    /// Dom0 (every unix-socket connection) bypasses permission checks.
    pub fn privileged(&self) -> bool {
        self.domid == 0
    }

    fn is(&self, domid: u16) -> bool {
        self.domid == domid || self.target == Some(domid)
    }
}

/// What a caller may do with one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rights {
    pub read: bool,
    pub write: bool,
    /// May change permissions.
    pub owner: bool,
}

/// The access a permission requirement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
    /// Write access and ownership (`SET_PERMS`).
    Owner,
}

impl Rights {
    const ALL: Rights = Rights { read: true, write: true, owner: true };

    /// Whether these rights satisfy `need`.
    pub fn allow(self, need: Need) -> bool {
        match need {
            Need::Read => self.read,
            Need::Write => self.write,
            Need::Owner => self.write && self.owner,
        }
    }
}

/// Computes `caller`'s rights on a node with permission list `perms`.
pub(crate) fn rights(caller: &Caller, perms: &[Perm]) -> Rights {
    let Some((owner, rest)) = perms.split_first() else {
        // Unreachable by invariant; fail closed for guests.
        return if caller.privileged() { Rights::ALL } else { from_access(Access::None) };
    };
    if caller.privileged() || caller.is(owner.domid) {
        return Rights::ALL;
    }
    let access = rest.iter().find(|p| caller.is(p.domid)).map_or(owner.access, |p| p.access);
    from_access(access)
}

fn from_access(a: Access) -> Rights {
    Rights { read: a.can_read(), write: a.can_write(), owner: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Perm {
        s.parse().unwrap()
    }

    #[test]
    fn model() {
        let perms = [p("n5"), p("r1"), p("b2")];
        let guest = |d| Caller { domid: d, target: None };
        assert_eq!(rights(&guest(0), &perms), Rights::ALL);
        assert_eq!(rights(&guest(5), &perms), Rights::ALL);
        assert!(rights(&guest(1), &perms).read && !rights(&guest(1), &perms).write);
        assert!(rights(&guest(2), &perms).allow(Need::Write) && !rights(&guest(2), &perms).allow(Need::Owner));
        assert!(!rights(&guest(3), &perms).read);
        let everyone = [p("r5")];
        assert!(rights(&guest(3), &everyone).read);
        let targeting = Caller { domid: 7, target: Some(5) };
        assert_eq!(rights(&targeting, &perms), Rights::ALL);
    }
}
