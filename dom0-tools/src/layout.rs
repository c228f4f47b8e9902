//! The xenstore layout of a vif, written as libxl writes it.

use grant::DomId;
use std::time::Duration;
use xenstore::{Client, XsError};

/// A MAC address.
pub type Mac = [u8; 6];

/// What `attach` creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifSpec {
    /// The guest.
    pub domid: DomId,
    /// Device handle; `None` picks the lowest free one, as xl does.
    pub handle: Option<u32>,
    /// The guest's MAC; `None` picks `00:16:3e` plus three random bytes, as xl does.
    pub mac: Option<Mac>,
    /// `bridge` node (for hotplug scripts); `None` writes none.
    pub bridge: Option<String>,
    /// `script` node; when present the backend waits for `hotplug-status=connected`.
    pub script: Option<String>,
    /// The backend domain (0).
    pub backend_domid: DomId,
}

impl VifSpec {
    /// A vif for `domid` with every choice left to the defaults.
    pub fn new(domid: DomId) -> Self {
        Self { domid, handle: None, mac: None, bridge: None, script: None, backend_domid: 0 }
    }
}

/// Where an attached vif lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPaths {
    /// The guest.
    pub domid: DomId,
    /// Device handle.
    pub handle: u32,
    /// The MAC written.
    pub mac: Mac,
    /// `/local/domain/<domid>/device/vif/<handle>`.
    pub frontend: String,
    /// `/local/domain/<backend>/backend/vif/<domid>/<handle>`.
    pub backend: String,
}

/// One vif found by `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifEntry {
    /// Paths, handle and MAC (an unparsable MAC reads as all zeroes; see `mac_text`).
    pub paths: VifPaths,
    /// The `mac` node as written.
    pub mac_text: Option<String>,
    /// Backend `state` node value.
    pub backend_state: Option<u32>,
    /// Frontend `state` node value.
    pub frontend_state: Option<u32>,
    /// Backend `error` node, if the backend disabled the vif.
    pub error: Option<String>,
    /// Backend `hotplug-status`.
    pub hotplug_status: Option<String>,
}

/// How a detach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachOutcome {
    /// The backend reached Closed before the directories were removed.
    Clean,
    /// The backend did not reach Closed within the timeout; the directories were removed anyway.
    Forced,
}

/// Failures of the layout operations, named by the operation.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Writing the vif's directories.
    #[error("attaching a vif to domain {domid}")]
    Attach {
        /// The guest.
        domid: DomId,
        /// Why.
        #[source]
        source: XsError,
    },
    /// The guest domain does not exist in xenstore.
    #[error("domain {domid} has no /local/domain/{domid}")]
    NoSuchDomain {
        /// The guest.
        domid: DomId,
    },
    /// The handle is already in use.
    #[error("vif {domid}/{handle} already exists")]
    HandleInUse {
        /// The guest.
        domid: DomId,
        /// The handle.
        handle: u32,
    },
    /// Detaching.
    #[error("detaching vif {domid}/{handle}")]
    Detach {
        /// The guest.
        domid: DomId,
        /// The handle.
        handle: u32,
        /// Why.
        #[source]
        source: XsError,
    },
    /// No such vif.
    #[error("vif {domid}/{handle} does not exist")]
    NoSuchVif {
        /// The guest.
        domid: DomId,
        /// The handle.
        handle: u32,
    },
    /// Listing.
    #[error("listing vifs")]
    List(#[source] XsError),
}

/// Writes the backend and frontend directories of a new vif (states Initialising).
pub fn attach(xs: &Client, spec: &VifSpec) -> Result<VifPaths, LayoutError> {
    let _ = (xs, spec);
    todo!()
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
    let _ = (xs, backend_domid, domid, handle, timeout);
    todo!()
}

/// Every vif under `/local/domain/<backend_domid>/backend/vif`, sorted.
pub fn list(xs: &Client, backend_domid: DomId) -> Result<Vec<VifEntry>, LayoutError> {
    let _ = (xs, backend_domid);
    todo!()
}
