//! The backend half of the xenbus handshake for one vif, as Linux's
//! `drivers/net/xen-netback/xenbus.c`: publish features and go InitWait; on the frontend's
//! Connected read its keys, connect the data path and (after the hotplug gate) go
//! Connected; follow the frontend through Closing/Closed and back.
//!
//! [`machine`] decides (a pure function of what xenstore says), [`keys`] reads and
//! validates what the frontend and toolstack wrote, [`nodes`] writes our side. The daemon
//! ([`crate::daemon`]) owns the vifs and applies the decisions.

pub mod keys;
pub mod machine;
pub mod nodes;

pub use netif::xenbus::XenbusState;

pub use self::keys::{ConnectParams, format_mac, parse_mac, read_connect_params, read_mac};
pub use self::machine::{FrontendState, Hotplug, Inputs, Step, decide};
pub use self::nodes::{backend_root, error_path, remove_error, write_error, write_probe, write_state};

/// `ENOENT`.
const ENOENT: i32 = 2;
/// `EIO`.
const EIO: i32 = 5;
/// `EINVAL`.
const EINVAL: i32 = 22;
/// `EOPNOTSUPP`.
const EOPNOTSUPP: i32 = 95;

/// Why one vif cannot connect (or was disabled). Each is written, with its errno, to the
/// vif's `error` nodes; none stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum XenbusError {
    /// Reading a node failed for a reason other than its absence.
    #[error("reading {path}")]
    ReadKey {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: xenstore::XsError,
    },
    /// A node the protocol requires is missing.
    #[error("reading {path}: no such node")]
    MissingKey {
        /// The node.
        path: String,
    },
    /// A node holds a value of the wrong form.
    #[error("reading {path}: {value:?} is not {expected}")]
    ParseKey {
        /// The node.
        path: String,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// `request-rx-copy` is zero: page flipping is not supported.
    #[error("reading {path}: {value:?}: the frontend must support rx-copy")]
    RxCopyUnsupported {
        /// The node.
        path: String,
        /// What it holds.
        value: String,
    },
    /// Mapping the rings or binding the event channels.
    #[error("connecting the data path")]
    ConnectDatapath(#[source] crate::vif::ConnectError),
    /// Plugging the vif into the switch.
    #[error("adding the switch port")]
    AddSwitchPort(#[source] crate::switch::SwitchError),
    /// Creating the vif's TAP device (Linux: "creating interface").
    #[error("creating interface {name}")]
    CreateTap {
        /// The device name asked for.
        name: String,
        /// Why it failed.
        #[source]
        source: crate::tap::TapError,
    },
    /// The frontend or the hotplug script did something the protocol forbids.
    #[error("{0}")]
    Protocol(String),
    /// The worker stopped because the frontend broke the ring protocol.
    #[error("data path stopped: {0}")]
    Datapath(String),
    /// A vif the previous daemon process served cannot be taken over after a restart
    /// (`docs/restart.md`): it is disabled so that the frontend reconnects.
    #[error("taking the vif over after a daemon restart: {0}")]
    Takeover(String),
    /// Writing a node of ours.
    #[error("writing {path}")]
    WriteNode {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: xenstore::XsError,
    },
}

impl XenbusError {
    /// The positive errno Linux's `xenbus_dev_fatal` would write for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            XenbusError::MissingKey { .. } => ENOENT,
            XenbusError::RxCopyUnsupported { .. } => EOPNOTSUPP,
            XenbusError::ReadKey { .. } | XenbusError::WriteNode { .. } => EIO,
            _ => EINVAL,
        }
    }

    /// Whether this failed only because the xenstore connection is gone: not the vif's
    /// fault, so it is not disabled for it (the daemon reconnects and evaluates it again).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            XenbusError::ReadKey { source, .. } | XenbusError::WriteNode { source, .. } => source.is_disconnected(),
            _ => false,
        }
    }

    /// The `error` node's value: `"<errno> <message>"`, the message with every cause.
    pub fn node_value(&self) -> String {
        format!("{} {}", self.errno(), crate::error_chain::Chain(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_value_names_errno_key_and_value() {
        let e = XenbusError::ParseKey {
            path: "/local/domain/3/device/vif/0/tx-ring-ref".into(),
            value: "garbage".into(),
            expected: "a grant reference",
        };
        assert_eq!(
            e.node_value(),
            r#"22 reading /local/domain/3/device/vif/0/tx-ring-ref: "garbage" is not a grant reference"#
        );
        let e = XenbusError::MissingKey { path: "/x/request-rx-copy".into() };
        assert_eq!(e.node_value(), "2 reading /x/request-rx-copy: no such node");
        let e = XenbusError::RxCopyUnsupported { path: "/x/request-rx-copy".into(), value: "0".into() };
        assert!(e.node_value().starts_with("95 "));
        assert!(!e.is_connection_lost());
        let lost = XenbusError::ReadKey { path: "/x/state".into(), source: xenstore::XsError::Disconnected };
        assert!(lost.is_connection_lost());
    }

    #[test]
    fn node_value_includes_causes() {
        let source = xenstore::XsError::Read { path: "/p".into(), errno: xenstore::XsErrno::Eacces };
        let e = XenbusError::ReadKey { path: "/p".into(), source };
        let v = e.node_value();
        assert!(v.starts_with("5 reading /p: xenstore read /p"), "{v}");
    }
}
