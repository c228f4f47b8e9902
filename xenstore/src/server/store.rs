//! The node tree: a flat map from canonical path to [`Node`], plus path
//! syntax rules.
//!
//! Invariants: every node except `/` and the `@` special nodes has its
//! parent in the map and is listed in the parent's `children`; every node
//! has a non-empty permission list; `generation` is unique across all node
//! versions ever stored (a global counter), so "same generation" means
//! "untouched since".

use std::collections::{BTreeSet, HashMap};

use crate::wire::{Access, Perm, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX, XsErrno};

/// Special watch paths that are also nodes (for their permissions).
pub(crate) const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Fired when a domain is released.
pub(crate) const RELEASE_DOMAIN: &str = "@releaseDomain";

/// One stored node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    pub generation: u64,
    /// Leaf names of the children (sorted).
    pub children: BTreeSet<String>,
}

/// The whole database. Cloned wholesale to give a transaction its view.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    nodes: HashMap<String, Node>,
    next_generation: u64,
    /// Number of nodes owned (perm entry 0) by each domain, for quotas.
    owned: HashMap<u16, usize>,
}

impl Store {
    /// `/`, `/local`, `/local/domain`, `/tool` and the special nodes, all
    /// owned by dom0 with no access for others (`n0`).
    pub fn new() -> Store {
        let mut s = Store { nodes: HashMap::new(), next_generation: 1, owned: HashMap::new() };
        let n0 = vec![Perm::new(0, Access::None)];
        s.insert_raw("/", n0.clone());
        for p in ["/local", "/local/domain", "/tool"] {
            s.create(p, Vec::new(), n0.clone());
        }
        s.insert_raw(INTRODUCE_DOMAIN, n0.clone());
        s.insert_raw(RELEASE_DOMAIN, n0);
        s
    }

    fn bump(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    fn insert_raw(&mut self, path: &str, perms: Vec<Perm>) {
        let generation = self.bump();
        *self.owned.entry(owner(&perms)).or_default() += 1;
        self.nodes.insert(path.to_owned(), Node { value: Vec::new(), perms, generation, children: BTreeSet::new() });
    }

    /// Looks a node up.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The node's generation, `None` if absent.
    pub fn generation(&self, path: &str) -> Option<u64> {
        self.nodes.get(path).map(|n| n.generation)
    }

    /// Number of nodes owned by `domid`.
    pub fn owned_by(&self, domid: u16) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Creates `path`. Precondition: absent, parent present.
    pub fn create(&mut self, path: &str, value: Vec<u8>, perms: Vec<Perm>) {
        let Some(parent) = parent_of(path) else { return };
        let generation = self.bump();
        if let Some(p) = self.nodes.get_mut(parent) {
            p.children.insert(basename(path).to_owned());
            p.generation = generation;
        }
        let generation = self.bump();
        *self.owned.entry(owner(&perms)).or_default() += 1;
        self.nodes.insert(path.to_owned(), Node { value, perms, generation, children: BTreeSet::new() });
    }

    /// Replaces a node's value.
    pub fn set_value(&mut self, path: &str, value: Vec<u8>) {
        let generation = self.bump();
        if let Some(n) = self.nodes.get_mut(path) {
            n.value = value;
            n.generation = generation;
        }
    }

    /// Replaces a node's permissions, keeping the ownership counts right.
    pub fn set_perms(&mut self, path: &str, perms: Vec<Perm>) {
        let generation = self.bump();
        let Some(n) = self.nodes.get_mut(path) else { return };
        let (old, new) = (owner(&n.perms), owner(&perms));
        n.perms = perms;
        n.generation = generation;
        self.disown(old);
        *self.owned.entry(new).or_default() += 1;
    }

    fn disown(&mut self, domid: u16) {
        if let Some(c) = self.owned.get_mut(&domid) {
            *c = c.saturating_sub(1);
        }
    }

    /// `path` and all its descendants, parents before children.
    pub fn subtree(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.get(&p) {
                stack.extend(n.children.iter().rev().map(|c| child_path(&p, c)));
                out.push(p);
            }
        }
        out
    }

    /// Removes a subtree, returning each removed path with its permissions
    /// (root first). Precondition: `path` is not `/`.
    pub fn remove_subtree(&mut self, path: &str) -> Vec<(String, Vec<Perm>)> {
        let mut removed = Vec::new();
        for p in self.subtree(path) {
            if let Some(n) = self.nodes.remove(&p) {
                self.disown(owner(&n.perms));
                removed.push((p, n.perms));
            }
        }
        if let Some(parent) = parent_of(path) {
            let generation = self.bump();
            if let Some(p) = self.nodes.get_mut(parent) {
                p.children.remove(basename(path));
                p.generation = generation;
            }
        }
        removed
    }
}

fn owner(perms: &[Perm]) -> u16 {
    perms.first().map_or(0, |p| p.domid)
}

/// The parent of an absolute path; `None` for `/` and `@` specials.
pub(crate) fn parent_of(path: &str) -> Option<&str> {
    if path == "/" || !path.starts_with('/') {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Joins a parent path and a leaf name.
pub(crate) fn child_path(parent: &str, leaf: &str) -> String {
    if parent == "/" { format!("/{leaf}") } else { format!("{parent}/{leaf}") }
}

/// Whether `child` is `parent` or below it (`/` is everyone's parent).
pub(crate) fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return child.starts_with('/');
    }
    child.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The implicit base of relative paths for `domid`.
pub(crate) fn domain_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// A canonical path and whether it was given relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canonical {
    pub path: String,
    /// Length of the prefix added for a relative path (0 if absolute).
    pub prefix_len: usize,
}

/// Validates and absolutises a client path (C `canonicalize`): only
/// `[A-Za-z0-9-/_@]`, no `//`, no trailing `/` (except `/`), `@` paths
/// only where `allow_special`, and the length limits of `xs_wire.h`.
pub(crate) fn canonicalize(domid: u16, raw: &str, allow_special: bool) -> Result<Canonical, XsErrno> {
    let valid = raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'));
    if raw.is_empty() || !valid || (raw.starts_with('@') && !allow_special) {
        return Err(XsErrno::Einval);
    }
    if raw.starts_with('@') {
        return Ok(Canonical { path: raw.to_owned(), prefix_len: 0 });
    }
    let (path, prefix_len) = if raw.starts_with('/') {
        (raw.to_owned(), 0)
    } else {
        if raw.len() > XENSTORE_REL_PATH_MAX {
            return Err(XsErrno::Einval);
        }
        let base = domain_path(domid);
        (format!("{base}/{raw}"), base.len() + 1)
    };
    if (path.ends_with('/') && path != "/") || path.contains("//") || path.len() > XENSTORE_ABS_PATH_MAX {
        return Err(XsErrno::Einval);
    }
    Ok(Canonical { path, prefix_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/"), None);
        assert_eq!(parent_of("@x"), None);
        assert!(is_child("/a/b", "/a") && is_child("/a", "/a") && !is_child("/ab", "/a"));
        assert!(is_child("/x", "/") && !is_child("@x", "/"));
        let c = canonicalize(3, "device/vif", false).unwrap();
        assert_eq!(c.path, "/local/domain/3/device/vif");
        assert_eq!(&c.path[c.prefix_len..], "device/vif");
        for bad in ["", "/a/", "/a//b", "a b", "@x", "/a\u{e9}"] {
            assert_eq!(canonicalize(0, bad, false), Err(XsErrno::Einval), "{bad:?}");
        }
        assert!(canonicalize(0, "@introduceDomain", true).is_ok());
        assert!(canonicalize(0, &format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX)), false).is_err());
    }

    #[test]
    fn tree() {
        let mut s = Store::new();
        let perms = vec![Perm::new(0, Access::None)];
        s.create("/local/domain/1", Vec::new(), vec![Perm::new(1, Access::None)]);
        s.create("/local/domain/1/x", b"v".to_vec(), perms);
        assert_eq!(s.owned_by(1), 1);
        let g = s.generation("/local/domain").unwrap();
        let removed = s.remove_subtree("/local/domain/1");
        assert_eq!(removed.len(), 2);
        assert_eq!(removed[0].0, "/local/domain/1");
        assert!(s.generation("/local/domain").unwrap() > g);
        assert!(s.get("/local/domain/1/x").is_none());
        assert_eq!(s.owned_by(1), 0);
        assert!(s.get("/local/domain").unwrap().children.is_empty());
    }
}
