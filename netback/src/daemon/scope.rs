//! Routing xenstore watch events: which vifs a path under the backend root concerns.

use grant::DomId;
use xenstore::Watch;

use crate::vif::VifId;

/// Which vifs a backend-root event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Scope {
    /// The root itself (or something unexpected): rescan everything.
    All,
    /// `root/<domid>`: that domain's vifs.
    Domain(DomId),
    /// `root/<domid>/<handle>[/...]`: one vif.
    Vif(VifId),
}

/// `root/<domid>/<handle>/...` → the vif; `root/<domid>` → the domain; `root` → all;
/// non-numeric components → `None` (not a vif of ours).
pub(super) fn scope_of(root: &str, path: &str) -> Option<Scope> {
    let Some(rest) = path.strip_prefix(root) else { return Some(Scope::All) };
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let Some(domid) = parts.next() else { return Some(Scope::All) };
    let domid: DomId = domid.parse().ok()?;
    match parts.next() {
        None => Some(Scope::Domain(domid)),
        Some(handle) => Some(Scope::Vif(VifId { domid, handle: handle.parse().ok()? })),
    }
}

/// Takes every queued event of `watch`; returns how many.
pub(super) fn drain(watch: &Watch) -> Result<usize, xenstore::XsError> {
    let mut n = 0;
    while watch.try_recv()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/local/domain/0/backend/vif";

    #[test]
    fn paths_map_to_scopes() {
        assert_eq!(scope_of(ROOT, ROOT), Some(Scope::All));
        assert_eq!(scope_of(ROOT, "/local/domain/0/backend"), Some(Scope::All));
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/7")), Some(Scope::Domain(7)));
        let vif = Some(Scope::Vif(VifId { domid: 7, handle: 2 }));
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/7/2")), vif);
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/7/2/hotplug-status")), vif);
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/x/2")), None);
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/7/y")), None);
        assert_eq!(scope_of(ROOT, &format!("{ROOT}/70000/0")), None);
        assert_eq!(scope_of(ROOT, &format!("{ROOT}ifs/1/0")), None);
    }
}
