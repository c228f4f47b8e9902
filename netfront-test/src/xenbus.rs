//! The xenbus side of a netfront: the `XenbusState` machine, reading what the toolstack
//! and the backend published, publishing our rings, and waiting for the backend's state.
//!
//! Paths: our device directory is relative (`device/vif/<handle>`, resolved by xenstored
//! under `/local/domain/<our domid>`); the backend directory is the absolute path the
//! toolstack wrote into our `backend` key.

use crate::device::Features;
use crate::mac::{Mac, parse_mac};
use grant::{DomId, EventChannel, EvtchnError, EvtchnPort, GrantError, GrantRef};
use netif::RingError;
use std::time::{Duration, Instant};
use xenstore::{Client, XsError};

pub use netif::xenbus::XenbusState;

/// Failures of the xenbus handshake, each named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum XenbusError {
    /// Reading our `backend` key.
    #[error("reading the backend path from {path}")]
    ReadBackendPath {
        path: String,
        #[source]
        source: XsError,
    },
    /// Reading our `backend-id` key.
    #[error("reading the backend domain id from {path}")]
    ReadBackendId {
        path: String,
        #[source]
        source: XsError,
    },
    /// `backend-id` is not a domain id.
    #[error("backend-id {value:?} is not a domain id")]
    BadBackendId { value: String },
    /// Reading our `mac` key.
    #[error("reading the MAC address from {path}")]
    ReadMac {
        path: String,
        #[source]
        source: XsError,
    },
    /// `mac` is not `xx:xx:xx:xx:xx:xx`.
    #[error("mac {value:?} is not xx:xx:xx:xx:xx:xx")]
    BadMac { value: String },
    /// Registering the watch on the backend's `state`.
    #[error("watching {path}")]
    WatchBackendState {
        path: String,
        #[source]
        source: XsError,
    },
    /// Reading the backend's `state`.
    #[error("reading {path}")]
    ReadBackendState {
        path: String,
        #[source]
        source: XsError,
    },
    /// The backend did not reach the wanted state in time (or went away).
    #[error("waiting for the backend to reach {want}: last saw {}", got.map_or("nothing".into(), |s| s.to_string()))]
    WaitBackendState { want: XenbusState, got: Option<XenbusState> },
    /// Reading a `feature-*` key of the backend.
    #[error("reading backend feature {path}")]
    ReadBackendFeature {
        path: String,
        #[source]
        source: XsError,
    },
    /// The backend does not offer `feature-rx-copy=1` (page flipping is not supported).
    #[error("backend {backend} lacks feature-rx-copy: only rx-copy is supported")]
    BackendLacksRxCopy { backend: String },
    /// Sharing a ring page with the backend.
    #[error("sharing the {ring} ring page")]
    ShareRing {
        ring: &'static str,
        #[source]
        source: GrantError,
    },
    /// Initialising a shared ring.
    #[error("initialising the {ring} ring")]
    InitRing {
        ring: &'static str,
        #[source]
        source: RingError,
    },
    /// Sharing the TX or RX data pages.
    #[error("sharing {pages} {pool} buffer pages")]
    ShareBuffers {
        pool: &'static str,
        pages: usize,
        #[source]
        source: GrantError,
    },
    /// Posting the initial RX buffers.
    #[error("posting RX buffers")]
    PostRxBuffers(#[source] RingError),
    /// Allocating the unbound event channel.
    #[error("allocating an event channel for domain {backend_id}")]
    AllocEventChannel {
        backend_id: DomId,
        #[source]
        source: EvtchnError,
    },
    /// Writing ring refs, event channel, features and state in one transaction.
    #[error("publishing the rings in {dir}")]
    PublishRings {
        dir: String,
        #[source]
        source: XsError,
    },
    /// Kicking the backend after connecting.
    #[error("notifying the backend")]
    Notify(#[source] EvtchnError),
    /// Writing our `state`.
    #[error("writing state {state} to {path}")]
    WriteState {
        path: String,
        state: XenbusState,
        #[source]
        source: XsError,
    },
}

/// What the toolstack wrote into our device directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendInfo {
    /// Our device directory, relative to our domain's home (`device/vif/<handle>`).
    pub dir: String,
    /// The device handle.
    pub handle: u32,
    /// Absolute path of the backend directory.
    pub backend: String,
    /// The backend's domain.
    pub backend_id: DomId,
    /// Our MAC address.
    pub mac: Mac,
}

/// Reads `backend`, `backend-id` and `mac` from `device/vif/<handle>`.
pub fn read_frontend(xs: &Client, handle: u32) -> Result<FrontendInfo, XenbusError> {
    let dir = format!("device/vif/{handle}");
    let path = format!("{dir}/backend");
    let backend = xs.read_string(&path).map_err(|source| XenbusError::ReadBackendPath { path, source })?;
    let path = format!("{dir}/backend-id");
    let value = xs.read_string(&path).map_err(|source| XenbusError::ReadBackendId { path, source })?;
    let backend_id = value.trim().parse().map_err(|_| XenbusError::BadBackendId { value })?;
    let path = format!("{dir}/mac");
    let value = xs.read_string(&path).map_err(|source| XenbusError::ReadMac { path, source })?;
    let mac = parse_mac(&value).ok_or(XenbusError::BadMac { value })?;
    Ok(FrontendInfo { dir, handle, backend, backend_id, mac })
}

/// The `feature-*` keys of the backend directory that matter to a netfront.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendFeatures {
    /// `feature-rx-copy`: the backend copies into our RX pages (required).
    pub rx_copy: bool,
    /// `feature-sg`: multi-slot TX frames accepted.
    pub sg: bool,
    /// `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`.
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`.
    pub ipv6_csum_offload: bool,
    /// `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// `feature-ctrl-ring`.
    pub ctrl_ring: bool,
}

/// Reads one boolean feature key: absent means off, any non-zero number means on.
fn read_flag(xs: &Client, backend: &str, key: &str) -> Result<bool, XenbusError> {
    let path = format!("{backend}/{key}");
    match xs.read_string(&path) {
        Ok(v) => Ok(v.trim().parse::<u64>().is_ok_and(|n| n != 0)),
        Err(e) if e.is_enoent() => Ok(false),
        Err(source) => Err(XenbusError::ReadBackendFeature { path, source }),
    }
}

/// Reads the backend's features; fails unless `feature-rx-copy` is on.
pub fn read_backend_features(xs: &Client, backend: &str) -> Result<BackendFeatures, XenbusError> {
    let f = BackendFeatures {
        rx_copy: read_flag(xs, backend, "feature-rx-copy")?,
        sg: read_flag(xs, backend, "feature-sg")?,
        gso_tcpv4: read_flag(xs, backend, "feature-gso-tcpv4")?,
        gso_tcpv6: read_flag(xs, backend, "feature-gso-tcpv6")?,
        ipv6_csum_offload: read_flag(xs, backend, "feature-ipv6-csum-offload")?,
        split_event_channels: read_flag(xs, backend, "feature-split-event-channels")?,
        ctrl_ring: read_flag(xs, backend, "feature-ctrl-ring")?,
    };
    if !f.rx_copy {
        return Err(XenbusError::BackendLacksRxCopy { backend: backend.to_owned() });
    }
    Ok(f)
}

/// Reads `<dir>/state`; `None` if the node is missing or holds garbage.
pub fn read_state(xs: &Client, dir: &str) -> Result<Option<XenbusState>, XsError> {
    match xs.read_string(&format!("{dir}/state")) {
        Ok(v) => Ok(XenbusState::parse(&v)),
        Err(e) if e.is_enoent() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits (xenstore watch, at most `timeout`) until the backend's state satisfies `accept`
/// and returns it. `want` only names the goal in the error. A missing node counts as
/// `None` and is passed to `accept` (a removed backend directory means "gone").
pub fn wait_backend_state(
    xs: &Client,
    backend: &str,
    want: XenbusState,
    timeout: Duration,
    accept: impl Fn(Option<XenbusState>) -> bool,
) -> Result<Option<XenbusState>, XenbusError> {
    let path = format!("{backend}/state");
    let watch =
        xs.watch(&path, None).map_err(|source| XenbusError::WatchBackendState { path: path.clone(), source })?;
    let deadline = Instant::now() + timeout;
    loop {
        // Read after the watch is registered, so no change between read and wait is lost.
        let got =
            read_state(xs, backend).map_err(|source| XenbusError::ReadBackendState { path: path.clone(), source })?;
        if accept(got) {
            return Ok(got);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match watch.recv_timeout(left) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err(XenbusError::WaitBackendState { want, got }),
        }
    }
}

/// Writes our `state`, unless the node is gone: as Linux's `xenbus_switch_state`, a device
/// whose directory the toolstack removed (a detach) is not brought back by a late write.
pub fn write_state(xs: &Client, dir: &str, state: XenbusState) -> Result<(), XenbusError> {
    let path = format!("{dir}/state");
    xs.transaction(|tx| match tx.exists(&path)? {
        true => tx.write(&path, state.value()),
        false => Ok(()),
    })
    .map_err(|source| XenbusError::WriteState { path, state, source })
}

/// Publishes the rings, the event channel, no offloads (`Features::default()`) and
/// `state=Connected` in one transaction; see [`publish_rings_with`].
pub fn publish_rings(
    xs: &Client,
    dir: &str,
    tx_ring_ref: GrantRef,
    rx_ring_ref: GrantRef,
    port: EvtchnPort,
) -> Result<(), XenbusError> {
    publish_rings_with(xs, dir, tx_ring_ref, rx_ring_ref, port, &Features::default())
}

/// Publishes the rings, the event channel, our feature requests and `state=Connected` in
/// one transaction (as Linux netfront's `talk_to_netback`, which then goes
/// Initialising → Connected directly). `features` are the ones in effect (asked for and
/// advertised by the backend), written as `feature-sg`, `feature-gso-tcpv4`,
/// `feature-gso-tcpv6`, `feature-no-csum-offload` (= not `csum_offload`) and
/// `feature-ipv6-csum-offload`.
pub fn publish_rings_with(
    xs: &Client,
    dir: &str,
    tx_ring_ref: GrantRef,
    rx_ring_ref: GrantRef,
    port: EvtchnPort,
    features: &Features,
) -> Result<(), XenbusError> {
    let mut keys = vec![
        ("tx-ring-ref", tx_ring_ref.to_string()),
        ("rx-ring-ref", rx_ring_ref.to_string()),
        ("event-channel", port.to_string()),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
    ];
    keys.extend(features.xenstore_keys().map(|(key, value)| (key, value.to_owned())));
    keys.push(("state", XenbusState::Connected.value()));
    xs.transaction(|tx| {
        for (key, value) in &keys {
            tx.write(&format!("{dir}/{key}"), value)?;
        }
        Ok(())
    })
    .map_err(|source| XenbusError::PublishRings { dir: dir.to_owned(), source })
}

/// Closes the device like Linux netfront: `Closing`, wait (at most `timeout`) for the
/// backend to reach Closing or Closed (or vanish), then `Closed`. Returns the backend
/// state seen.
pub fn close(xs: &Client, dir: &str, backend: &str, timeout: Duration) -> Result<Option<XenbusState>, XenbusError> {
    write_state(xs, dir, XenbusState::Closing)?;
    let seen = wait_backend_state(xs, backend, XenbusState::Closing, timeout, |s| {
        matches!(s, None | Some(XenbusState::Closing | XenbusState::Closed))
    });
    // Go Closed even if the backend was slow: we are about to revoke everything.
    write_state(xs, dir, XenbusState::Closed)?;
    seen
}

/// Notifies `channel`, mapping the error.
pub(crate) fn kick(channel: &impl EventChannel) -> Result<(), XenbusError> {
    channel.notify().map_err(XenbusError::Notify)
}
