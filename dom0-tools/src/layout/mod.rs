//! The xenstore layout of a vif, written as libxl writes it.
//!
//! Every operation that changes the layout does so in one xenstore transaction, so a
//! backend watching `backend/vif` never sees half a vif.

mod ops;

pub use ops::{attach, detach, list};

use grant::DomId;
use std::io::Read;
use xenstore::XsError;

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

/// The OUI xl uses for generated MACs (Xen's, `00:16:3e`).
const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];

/// `/local/domain/<domid>/device/vif/<handle>`.
pub fn frontend_path(domid: DomId, handle: u32) -> String {
    format!("/local/domain/{domid}/device/vif/{handle}")
}

/// `/local/domain/<backend>/backend/vif/<domid>/<handle>`.
pub fn backend_path(backend_domid: DomId, domid: DomId, handle: u32) -> String {
    format!("{}/{handle}", backend_domain_dir(backend_domid, domid))
}

/// `/local/domain/<backend>/backend/vif`: the root every backend watches.
pub fn backend_root(backend_domid: DomId) -> String {
    format!("/local/domain/{backend_domid}/backend/vif")
}

/// `/local/domain/<backend>/backend/vif/<domid>`: the parent of a guest's backend dirs.
pub(crate) fn backend_domain_dir(backend_domid: DomId, domid: DomId) -> String {
    format!("{}/{domid}", backend_root(backend_domid))
}

/// The name a vif goes by: `vif<domid>.<handle>`, like the Linux backend's interface.
pub fn vif_name(domid: DomId, handle: u32) -> String {
    format!("vif{domid}.{handle}")
}

/// A MAC as xl generates it: Xen's OUI and three random bytes.
pub fn random_mac() -> std::io::Result<Mac> {
    let mut tail = [0u8; 3];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut tail)?;
    Ok([XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], tail[0], tail[1], tail[2]])
}
