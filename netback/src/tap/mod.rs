//! The TAP vif: on real Xen each vif is also a Linux TAP device named like the kernel's
//! `vif<domid>.<handle>`, so Xen's hotplug scripts (`vif-bridge`, `vif-openvswitch`) can put
//! it into a bridge or an Open vSwitch.
//!
//! * [`Tap`] (`device.rs` and `carrier.rs`, the only files of the crate with `unsafe`: the
//!   ioctls) creates the device with a 12-byte `virtio_net_hdr_v1` before every frame and
//!   checksum/TSO offload on, so 64 KiB TCP super-frames cross between the guest and the
//!   kernel unsegmented, and turns its carrier off while the guest's RX is stalled;
//! * [`vnet`] translates [`crate::frame::Offload`] to and from that header (pure);
//! * [`TapPort`] is the [`crate::port::Uplink`] a vif worker uses instead of a switch port.

#[allow(unsafe_code)]
mod carrier;
#[allow(unsafe_code)]
mod device;
mod port;
pub mod vnet;

use std::io;

pub use device::{Tap, VIF_MAC};
pub use port::{TapPort, TapStats};

/// Why a TAP device could not be created or configured. Every variant names the device
/// (as asked for, or as the kernel named it) and the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be a Linux interface name.
    #[error("invalid TAP name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `/dev/net/tun` does not exist: the `tun` module is not loaded.
    #[error("opening /dev/net/tun for TAP {name}: no such device node (load the driver: modprobe tun)")]
    NoTunDevice {
        /// The device name.
        name: String,
        /// The `open(2)` error.
        #[source]
        source: io::Error,
    },
    /// Opening `/dev/net/tun` failed for another reason (permissions, most often).
    #[error("opening /dev/net/tun for TAP {name}")]
    Open {
        /// The device name.
        name: String,
        /// The `open(2)` error.
        #[source]
        source: io::Error,
    },
    /// `TUNSETIFF` (creating the device) failed, e.g. the name is taken by another device.
    #[error("creating TAP {name} (TUNSETIFF)")]
    SetIff {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("setting the vnet header size of TAP {name} (TUNSETVNETHDRSZ)")]
    SetVnetHdrSize {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `TUNSETOFFLOAD` failed.
    #[error("enabling checksum and TSO offload on TAP {name} (TUNSETOFFLOAD)")]
    SetOffload {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("making TAP {name} persistent (TUNSETPERSIST)")]
    SetPersist {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// Opening the `AF_INET` datagram socket the `SIOC*` ioctls go through failed.
    #[error("opening a control socket for TAP {name}")]
    Socket {
        /// The device name.
        name: String,
        /// The `socket(2)` error.
        #[source]
        source: io::Error,
    },
    /// `SIOCSIFHWADDR` failed.
    #[error("setting the MAC address of TAP {name} (SIOCSIFHWADDR)")]
    SetMac {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `SIOCGIFFLAGS` failed.
    #[error("reading the flags of TAP {name} (SIOCGIFFLAGS)")]
    GetFlags {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `SIOCSIFFLAGS` failed.
    #[error("setting the flags of TAP {name} (SIOCSIFFLAGS)")]
    SetFlags {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
    /// `SIOCSIFMTU` failed (or the MTU does not fit the ioctl).
    #[error("setting the MTU of TAP {name} (SIOCSIFMTU)")]
    SetMtu {
        /// The device name.
        name: String,
        /// The ioctl error.
        #[source]
        source: io::Error,
    },
}
