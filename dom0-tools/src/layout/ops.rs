//! The layout operations: each change is one xenstore transaction.

use super::{
    DetachOutcome, LayoutError, VifEntry, VifPaths, VifSpec, backend_domain_dir, backend_path, backend_root,
    frontend_path, random_mac, vif_name,
};
use grant::DomId;
use netfront_test::mac::{format_mac, parse_mac};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use xenstore::{Access, Client, Perm, Transaction, XsError};

/// Xenbus `Closing`, written by the toolstack to start a detach.
const STATE_CLOSING: u32 = 5;
/// Xenbus `Closed`, the backend's answer to a detach.
const STATE_CLOSED: u32 = 6;

/// Names of a directory's children, empty if it does not exist.
fn children(tx: &Transaction, path: &str) -> Result<Vec<String>, XsError> {
    match tx.directory(path) {
        Err(e) if e.is_enoent() => Ok(Vec::new()),
        other => other,
    }
}

/// The lowest handle used neither by a frontend nor by a backend directory (xl's devid).
fn lowest_free_handle(tx: &Transaction, spec: &VifSpec) -> Result<u32, XsError> {
    let mut used = BTreeSet::new();
    for dir in [format!("/local/domain/{}/device/vif", spec.domid), backend_domain_dir(spec.backend_domid, spec.domid)]
    {
        used.extend(children(tx, &dir)?.iter().filter_map(|h| h.parse::<u32>().ok()));
    }
    Ok((0..).find(|h| !used.contains(h)).expect("fewer than 2^32 handles in use"))
}

/// Writes the backend and frontend directories of a new vif (states Initialising).
pub fn attach(xs: &Client, spec: &VifSpec) -> Result<VifPaths, LayoutError> {
    let domid = spec.domid;
    let attach_err = |source| LayoutError::Attach { domid, source };
    let mac = match spec.mac {
        Some(mac) => mac,
        None => random_mac().map_err(|e| attach_err(XsError::Io(e)))?,
    };
    let be = spec.backend_domid;
    let outcome = xs
        .transaction(|tx| {
            if !tx.exists(&format!("/local/domain/{domid}"))? {
                return Ok(Err(LayoutError::NoSuchDomain { domid }));
            }
            let handle = match spec.handle {
                Some(h) => h,
                None => lowest_free_handle(tx, spec)?,
            };
            let paths = VifPaths {
                domid,
                handle,
                mac,
                frontend: frontend_path(domid, handle),
                backend: backend_path(be, domid, handle),
            };
            if tx.exists(&paths.frontend)? || tx.exists(&paths.backend)? {
                return Ok(Err(LayoutError::HandleInUse { domid, handle }));
            }
            let mac_text = format_mac(&mac);
            let (fe, bk) = (&paths.frontend, &paths.backend);
            tx.mkdir(fe)?;
            tx.set_perms(fe, &[Perm { domid, access: Access::None }, Perm { domid: be, access: Access::Read }])?;
            for (key, value) in [
                ("backend", bk.clone()),
                ("backend-id", be.to_string()),
                ("state", "1".to_string()),
                ("handle", handle.to_string()),
                ("mac", mac_text.clone()),
            ] {
                tx.write(&format!("{fe}/{key}"), value)?;
            }
            tx.mkdir(bk)?;
            tx.set_perms(bk, &[Perm { domid: be, access: Access::None }, Perm { domid, access: Access::Read }])?;
            let optional = [("bridge", &spec.bridge), ("script", &spec.script)];
            let optional = optional.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.clone())));
            for (key, value) in [
                ("frontend", fe.clone()),
                ("frontend-id", domid.to_string()),
                ("online", "1".to_string()),
                ("state", "1".to_string()),
                ("handle", handle.to_string()),
                ("mac", mac_text),
                ("type", "vif".to_string()),
            ]
            .into_iter()
            .chain(optional)
            {
                tx.write(&format!("{bk}/{key}"), value)?;
            }
            Ok(Ok(paths))
        })
        .map_err(attach_err)??;
    tracing::info!(vif = %vif_name(domid, outcome.handle), mac = %format_mac(&mac), "vif attached");
    Ok(outcome)
}

/// Detaches like `xl network-detach`: backend `online=0`, `state=Closing`, waits up to
/// `timeout` for the backend's Closed, then removes both directories.
pub fn detach(
    xs: &Client,
    backend_domid: DomId,
    domid: DomId,
    handle: u32,
    timeout: Duration,
) -> Result<DetachOutcome, LayoutError> {
    let err = |source| LayoutError::Detach { domid, handle, source };
    let (fe, bk) = (frontend_path(domid, handle), backend_path(backend_domid, domid, handle));
    let has_backend = xs
        .transaction(|tx| {
            if tx.exists(&bk)? {
                tx.write(&format!("{bk}/online"), "0")?;
                tx.write(&format!("{bk}/state"), STATE_CLOSING.to_string())?;
                Ok(Some(true))
            } else {
                Ok(tx.exists(&fe)?.then_some(false))
            }
        })
        .map_err(err)?;
    let Some(has_backend) = has_backend else {
        return Err(LayoutError::NoSuchVif { domid, handle });
    };
    let outcome = if has_backend { wait_closed(xs, &bk, timeout).map_err(err)? } else { DetachOutcome::Clean };
    let parent = backend_domain_dir(backend_domid, domid);
    xs.transaction(|tx| {
        for dir in [&bk, &fe] {
            match tx.rm(dir) {
                Err(e) if !e.is_enoent() => return Err(e),
                _ => {}
            }
        }
        if tx.exists(&parent)? && children(tx, &parent)?.is_empty() {
            tx.rm(&parent)?;
        }
        Ok(())
    })
    .map_err(err)?;
    tracing::info!(vif = %vif_name(domid, handle), ?outcome, "vif detached");
    Ok(outcome)
}

/// Waits until the backend directory `bk` says Closed or disappears.
fn wait_closed(xs: &Client, bk: &str, timeout: Duration) -> Result<DetachOutcome, XsError> {
    let deadline = Instant::now() + timeout;
    let watch = xs.watch(bk, None)?;
    loop {
        let state = match xs.read_string(&format!("{bk}/state")) {
            Err(e) if e.is_enoent() => {
                if !xs.exists(bk)? {
                    return Ok(DetachOutcome::Clean);
                }
                None
            }
            other => other?.trim().parse::<u32>().ok(),
        };
        if state == Some(STATE_CLOSED) {
            return Ok(DetachOutcome::Clean);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(backend = bk, ?state, "backend did not reach Closed; removing the vif anyway");
            return Ok(DetachOutcome::Forced);
        }
        watch.recv_timeout(left)?;
    }
}

/// Every vif under `/local/domain/<backend_domid>/backend/vif`, sorted.
pub fn list(xs: &Client, backend_domid: DomId) -> Result<Vec<VifEntry>, LayoutError> {
    let root = backend_root(backend_domid);
    xs.transaction(|tx| {
        let mut entries = Vec::new();
        for dom in children(tx, &root)? {
            let Ok(domid) = dom.parse::<DomId>() else { continue };
            for h in children(tx, &format!("{root}/{dom}"))? {
                let Ok(handle) = h.parse::<u32>() else { continue };
                entries.push(read_entry(tx, backend_domid, domid, handle)?);
            }
        }
        entries.sort_by_key(|e| (e.paths.domid, e.paths.handle));
        Ok(entries)
    })
    .map_err(LayoutError::List)
}

fn read_opt(tx: &Transaction, path: &str) -> Result<Option<String>, XsError> {
    match tx.read_string(path) {
        Err(e) if e.is_enoent() => Ok(None),
        other => other.map(Some),
    }
}

fn read_entry(tx: &Transaction, be: DomId, domid: DomId, handle: u32) -> Result<VifEntry, XsError> {
    let backend = backend_path(be, domid, handle);
    let frontend = read_opt(tx, &format!("{backend}/frontend"))?.unwrap_or_else(|| frontend_path(domid, handle));
    let mac_text = read_opt(tx, &format!("{backend}/mac"))?;
    let state =
        |path: String| -> Result<Option<u32>, XsError> { Ok(read_opt(tx, &path)?.and_then(|s| s.trim().parse().ok())) };
    // Linux backends report fatal errors under `/local/domain/<be>/error/<backend path>`.
    let error = match read_opt(tx, &format!("{backend}/error"))? {
        Some(e) => Some(e),
        None => read_opt(tx, &format!("/local/domain/{be}/error/backend/vif/{domid}/{handle}/error"))?,
    };
    Ok(VifEntry {
        paths: VifPaths {
            domid,
            handle,
            mac: mac_text.as_deref().and_then(parse_mac).unwrap_or_default(),
            frontend: frontend.clone(),
            backend: backend.clone(),
        },
        mac_text,
        backend_state: state(format!("{backend}/state"))?,
        frontend_state: state(format!("{frontend}/state"))?,
        error,
        hotplug_status: read_opt(tx, &format!("{backend}/hotplug-status"))?,
    })
}
