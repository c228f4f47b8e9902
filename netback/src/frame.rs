//! Ethernet frames as they travel between a vif and its uplink.
//!
//! A [`Frame`] is an owned byte vector holding a whole Ethernet frame (from
//! the destination MAC, no FCS) plus the [`Offload`] metadata that netif and
//! virtio need: whether the checksum still has to be filled in, whether it was
//! already validated, and GSO parameters.
//!
//! A later issue may add a second representation that references the
//! sender's grant instead of owning a copy, so a guest→guest frame is copied
//! only once (straight from the sender's grant into the receiver's); callers
//! should therefore use the accessors rather than assume a `Vec<u8>`.

/// Length of an Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HLEN: usize = 14;

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Whether `mac` is a group (multicast or broadcast) address: the I/G bit,
/// bit 0 of the first octet, is set.
pub fn is_multicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 0x01 != 0
}

/// Kind of segmentation offload requested for a large TCP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`, `VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`, `VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
}

/// Segmentation offload parameters: the frame is larger than the MTU and
/// must be cut into segments of `size` payload bytes by whoever receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    /// Protocol of the segments.
    pub kind: GsoKind,
    /// Maximum segment size (TCP payload bytes per segment).
    pub size: u16,
}

/// Offload metadata carried alongside the frame bytes. The default is all
/// off: a plain, fully checksummed frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Offload {
    /// The L4 checksum is blank (partial) and must be computed before the
    /// frame leaves the host (`NETTXF_csum_blank`, `VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub csum_blank: bool,
    /// The checksum was already validated (`NETTXF_data_validated`,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`).
    pub data_validated: bool,
    /// Segmentation offload, if the frame is a GSO super-frame.
    pub gso: Option<Gso>,
}

/// One Ethernet frame with its offload metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    data: Vec<u8>,
    offload: Offload,
}

impl Frame {
    /// A frame with no offloads.
    pub fn new(data: Vec<u8>) -> Frame {
        Frame { data, offload: Offload::default() }
    }

    /// A frame with the given offload metadata.
    pub fn with_offload(data: Vec<u8>, offload: Offload) -> Frame {
        Frame { data, offload }
    }

    /// The frame bytes, starting at the destination MAC.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The frame bytes, mutably (for checksum fill-in and the like).
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Consumes the frame, returning its bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Offload metadata.
    pub fn offload(&self) -> &Offload {
        &self.offload
    }

    /// Replaces the offload metadata.
    pub fn set_offload(&mut self, offload: Offload) {
        self.offload = offload;
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the frame has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Destination MAC, or `None` for a runt shorter than an Ethernet header.
    pub fn dst_mac(&self) -> Option<[u8; 6]> {
        self.mac_at(0)
    }

    /// Source MAC, or `None` for a runt shorter than an Ethernet header.
    pub fn src_mac(&self) -> Option<[u8; 6]> {
        self.mac_at(6)
    }

    fn mac_at(&self, offset: usize) -> Option<[u8; 6]> {
        if self.data.len() < ETH_HLEN {
            return None;
        }
        self.data[offset..offset + 6].try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_runts() {
        let mut bytes = vec![1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x08, 0x00];
        let f = Frame::new(bytes.clone());
        assert_eq!(f.dst_mac(), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.src_mac(), Some([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]));
        assert_eq!(f.len(), ETH_HLEN);
        assert_eq!(*f.offload(), Offload::default());
        bytes.pop();
        let runt = Frame::new(bytes);
        assert_eq!(runt.dst_mac(), None);
        assert_eq!(runt.src_mac(), None);
        assert!(Frame::default().is_empty());
    }

    #[test]
    fn multicast_bit() {
        assert!(is_multicast_mac(&BROADCAST_MAC));
        assert!(is_multicast_mac(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(is_multicast_mac(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(!is_multicast_mac(&[0x00, 0x16, 0x3e, 0, 0, 1]));
        assert!(!is_multicast_mac(&[0x02, 0, 0, 0, 0, 1]));
    }
}
