//! Writing the backend's side of the handshake: the probe's features, `state`, and the
//! `error` nodes of a disabled vif (in the backend directory and where Linux's
//! `xenbus_dev_fatal` puts it, `/local/domain/<be>/error/<backend path>/error`).

use grant::DomId;
use xenstore::Client;

use super::{XenbusError, XenbusState};
use crate::vif::VifId;

/// Keys written at probe, in one transaction (the subset of Linux's `netback_probe` that
/// this backend implements: rx-copy only, split event channels, scatter-gather, TCP GSO and
/// IPv6 checksum offload; no multicast control, control ring or multi-queue).
const PROBE_FEATURES: [(&str, &str); 7] = [
    ("feature-sg", "1"),
    ("feature-gso-tcpv4", "1"),
    ("feature-gso-tcpv6", "1"),
    ("feature-ipv6-csum-offload", "1"),
    ("feature-rx-copy", "1"),
    ("feature-rx-flip", "0"),
    ("feature-split-event-channels", "1"),
];

/// `/local/domain/<backend_domid>/backend/vif`.
pub fn backend_root(backend_domid: DomId) -> String {
    format!("/local/domain/{backend_domid}/backend/vif")
}

/// Linux's second copy of the error: `/local/domain/<be>/error/backend/vif/<domid>/<handle>/error`.
pub fn error_path(backend_domid: DomId, id: VifId) -> String {
    format!("/local/domain/{backend_domid}/error/backend/vif/{}/{}/error", id.domid, id.handle)
}

fn write_err(path: String) -> impl FnOnce(xenstore::XsError) -> XenbusError {
    move |source| XenbusError::WriteNode { path, source }
}

/// The probe: features, then `state = InitWait`, in one transaction. Does nothing (and
/// returns false) if the toolstack removed the directory meanwhile.
pub fn write_probe(xs: &Client, backend: &str) -> Result<bool, XenbusError> {
    xs.transaction(|tx| {
        if !tx.exists(&format!("{backend}/frontend"))? {
            return Ok(false);
        }
        for (key, value) in PROBE_FEATURES {
            tx.write(&format!("{backend}/{key}"), value)?;
        }
        tx.write(&format!("{backend}/state"), XenbusState::InitWait.value())?;
        Ok(true)
    })
    .map_err(write_err(backend.to_owned()))
}

/// Writes `<backend>/state`, unless the node is gone (as Linux's `xenbus_switch_state`:
/// a write must not re-create a directory the toolstack just removed).
pub fn write_state(xs: &Client, backend: &str, state: XenbusState) -> Result<(), XenbusError> {
    let path = format!("{backend}/state");
    xs.transaction(|tx| if tx.exists(&path)? { tx.write(&path, state.value()) } else { Ok(()) })
        .map_err(write_err(path))
}

/// Writes `value` to both error nodes (none if the backend directory is gone).
pub fn write_error(
    xs: &Client,
    backend_domid: DomId,
    id: VifId,
    backend: &str,
    value: &str,
) -> Result<(), XenbusError> {
    xs.transaction(|tx| {
        if tx.exists(&format!("{backend}/state"))? {
            tx.write(&format!("{backend}/error"), value)?;
            tx.write(&error_path(backend_domid, id), value)?;
        }
        Ok(())
    })
    .map_err(write_err(backend.to_owned()))
}

/// Removes both error nodes (a missing node is fine).
pub fn remove_error(xs: &Client, backend_domid: DomId, id: VifId, backend: &str) -> Result<(), XenbusError> {
    let linux = error_path(backend_domid, id);
    // Remove the vif's whole directory under `error/`, not just the leaf.
    let linux_dir = linux.trim_end_matches("/error").to_owned();
    for path in [format!("{backend}/error"), linux_dir] {
        match xs.rm(&path) {
            Err(e) if !e.is_enoent() => return Err(XenbusError::WriteNode { path, source: e }),
            _ => {}
        }
    }
    Ok(())
}
