//! Negotiated features and per-frame offload metadata.

use crate::xenbus::BackendFeatures;
use netif::abi::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};

pub use netback::frame::GsoKind;

/// The offloads a netfront asks for (in [`NetfrontConfig`](super::NetfrontConfig)) or has
/// in effect (from [`Netfront::features`](super::Netfront::features)).
///
/// The default is all off, today's single-slot behaviour: `feature-sg=0`,
/// `feature-gso-tcpv4=0`, `feature-gso-tcpv6=0`, `feature-no-csum-offload=1`,
/// `feature-ipv6-csum-offload=0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Scatter-gather: multi-slot frames up to 65535 bytes, both directions
    /// (`feature-sg`; the backend must advertise `feature-sg` too).
    pub sg: bool,
    /// TCPv4 segmentation offload (`feature-gso-tcpv4`; needs `sg` and the backend's key).
    pub gso_tcpv4: bool,
    /// TCPv6 segmentation offload (`feature-gso-tcpv6`; needs `sg` and the backend's key).
    pub gso_tcpv6: bool,
    /// We take IPv4 frames with a blank checksum (`feature-no-csum-offload` = not this).
    pub csum_offload: bool,
    /// We take IPv6 frames with a blank checksum (`feature-ipv6-csum-offload`; needs the
    /// backend's key).
    pub ipv6_csum_offload: bool,
}

impl Features {
    /// Every offload on.
    pub const ALL: Features =
        Features { sg: true, gso_tcpv4: true, gso_tcpv6: true, csum_offload: true, ipv6_csum_offload: true };

    /// What is in effect when we ask for `self` and the backend offers `backend`: as Linux
    /// netfront, a feature the backend does not advertise is simply not used, and GSO
    /// needs scatter-gather. IPv4 checksum offload has no backend key (every backend
    /// takes blank checksums), so it is in effect whenever asked for.
    pub fn negotiate(self, backend: &BackendFeatures) -> Features {
        let sg = self.sg && backend.sg;
        Features {
            sg,
            gso_tcpv4: sg && self.gso_tcpv4 && backend.gso_tcpv4,
            gso_tcpv6: sg && self.gso_tcpv6 && backend.gso_tcpv6,
            csum_offload: self.csum_offload,
            ipv6_csum_offload: self.ipv6_csum_offload && backend.ipv6_csum_offload,
        }
    }

    /// Whether GSO of `kind` is in effect.
    pub fn gso(&self, kind: GsoKind) -> bool {
        match kind {
            GsoKind::TcpV4 => self.gso_tcpv4,
            GsoKind::TcpV6 => self.gso_tcpv6,
        }
    }

    /// The frontend keys these features are published as (`feature-sg`,
    /// `feature-gso-tcpv4`, `feature-gso-tcpv6`, `feature-no-csum-offload`,
    /// `feature-ipv6-csum-offload`), values `"0"`/`"1"`.
    pub fn xenstore_keys(&self) -> [(&'static str, &'static str); 5] {
        let flag = |on: bool| if on { "1" } else { "0" };
        [
            ("feature-sg", flag(self.sg)),
            ("feature-gso-tcpv4", flag(self.gso_tcpv4)),
            ("feature-gso-tcpv6", flag(self.gso_tcpv6)),
            ("feature-no-csum-offload", flag(!self.csum_offload)),
            ("feature-ipv6-csum-offload", flag(self.ipv6_csum_offload)),
        ]
    }
}

/// Offload metadata of a frame to send ([`Netfront::send_with`](super::Netfront::send_with)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TxMeta {
    /// `NETTXF_csum_blank`: the L4 checksum holds only the pseudo-header sum; the backend
    /// (or whoever receives the frame) completes it.
    pub csum_blank: bool,
    /// `NETTXF_data_validated`: the checksum is known good.
    pub data_validated: bool,
    /// A GSO super-frame: kind and MSS, sent as a `XEN_NETIF_EXTRA_TYPE_GSO` extra.
    pub gso: Option<(GsoKind, u16)>,
}

/// Offload metadata of a received frame ([`Netfront::recv_with`](super::Netfront::recv_with)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RxMeta {
    /// `NETRXF_csum_blank` on the first slot.
    pub csum_blank: bool,
    /// `NETRXF_data_validated` on the first slot.
    pub data_validated: bool,
    /// The frame's GSO extra: kind and MSS.
    pub gso: Option<(GsoKind, u16)>,
}

/// The `XEN_NETIF_GSO_TYPE_*` value of `kind`.
pub fn gso_type(kind: GsoKind) -> u8 {
    match kind {
        GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
        GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
    }
}

/// The kind of a `XEN_NETIF_GSO_TYPE_*` value; `None` for NONE and unknown values.
pub fn gso_kind(gso_type: u8) -> Option<GsoKind> {
    match gso_type {
        XEN_NETIF_GSO_TYPE_TCPV4 => Some(GsoKind::TcpV4),
        XEN_NETIF_GSO_TYPE_TCPV6 => Some(GsoKind::TcpV6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_drops_what_the_backend_lacks() {
        let backend = BackendFeatures { rx_copy: true, sg: true, gso_tcpv4: true, ..BackendFeatures::default() };
        let got = Features::ALL.negotiate(&backend);
        assert_eq!(got, Features { sg: true, gso_tcpv4: true, csum_offload: true, ..Features::default() });
        let no_sg = BackendFeatures { sg: false, ..backend };
        assert_eq!(Features::ALL.negotiate(&no_sg), Features { csum_offload: true, ..Features::default() });
        assert_eq!(Features::default().negotiate(&backend), Features::default());
    }

    #[test]
    fn default_keys_are_the_single_slot_ones() {
        let keys = Features::default().xenstore_keys();
        assert!(keys.contains(&("feature-no-csum-offload", "1")));
        assert_eq!(keys.iter().filter(|(_, v)| *v == "1").count(), 1);
        for kind in [GsoKind::TcpV4, GsoKind::TcpV6] {
            assert_eq!(gso_kind(gso_type(kind)), Some(kind));
        }
        assert_eq!(gso_kind(0), None);
        assert_eq!(gso_kind(3), None);
    }
}
