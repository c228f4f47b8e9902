//! The `virtio_net_hdr_v1` before every frame on the TAP, and its translation to and from
//! a frame's [`Offload`]. Pure: no I/O, no unsafe.
//!
//! [`VnetHeader`] holds the header's fields as plain numbers and converts to and from the
//! 12 wire bytes at the offsets of virtio-bindings' `virtio_net_hdr_v1` (asserted at compile
//! time), little-endian as the v1 header is. It is not the bindgen struct itself because
//! that keeps `csum_start`/`csum_offset` in a union, which only `unsafe` can read.
//!
//! Translation rules (Linux netback's, with virtio's names):
//! * to the kernel ([`encode`]): a blank checksum is `NEEDS_CSUM` with `csum_start` at the
//!   TCP/UDP header and `csum_offset` 16 (TCP) or 6 (UDP); `data_validated` is `DATA_VALID`
//!   (which a TAP ignores on write: the kernel verifies complete checksums itself); TCP GSO
//!   is `GSO_TCPV4/6` with `gso_size` and `hdr_len` = all headers, and always `NEEDS_CSUM`.
//! * from the kernel ([`decode`]): `NEEDS_CSUM` is a blank checksum, also marked validated
//!   (as Linux netback marks RX); `DATA_VALID` is validated; `GSO_TCPV4/6` (ECN bit ignored)
//!   is [`Gso`]. UDP or unknown GSO, a zero `gso_size`, or a checksum the frame's own TCP or
//!   UDP header does not locate (netif cannot say where else it would be) are errors: the
//!   port drops the frame and counts it.

use std::mem::{offset_of, size_of};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
    virtio_net_hdr_v1, virtio_net_hdr_v1__bindgen_ty_1__bindgen_ty_1 as CsumFields,
};

use crate::frame::{Gso, GsoKind, Offload};
use crate::offload::{self, L4Header, OffloadError};

/// Bytes of the header before every frame (`TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = size_of::<virtio_net_hdr_v1>();
const _: () = assert!(VNET_HDR_LEN == 12);

// Field offsets in the wire header, from the bindgen struct (the union's variants all
// start at its own offset).
const AT_FLAGS: usize = offset_of!(virtio_net_hdr_v1, flags);
const AT_GSO_TYPE: usize = offset_of!(virtio_net_hdr_v1, gso_type);
const AT_HDR_LEN: usize = offset_of!(virtio_net_hdr_v1, hdr_len);
const AT_GSO_SIZE: usize = offset_of!(virtio_net_hdr_v1, gso_size);
const AT_CSUM_START: usize = offset_of!(virtio_net_hdr_v1, __bindgen_anon_1) + offset_of!(CsumFields, csum_start);
const AT_CSUM_OFFSET: usize = offset_of!(virtio_net_hdr_v1, __bindgen_anon_1) + offset_of!(CsumFields, csum_offset);
const AT_NUM_BUFFERS: usize = offset_of!(virtio_net_hdr_v1, num_buffers);
const _: () = assert!(AT_FLAGS == 0 && AT_GSO_TYPE == 1 && AT_HDR_LEN == 2 && AT_GSO_SIZE == 4);
const _: () = assert!(AT_CSUM_START == 6 && AT_CSUM_OFFSET == 8 && AT_NUM_BUFFERS == 10);

// The flag and GSO constants are u32 in the bindings and all fit the u8 fields.
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// `VIRTIO_NET_HDR_F_DATA_VALID`.
pub const F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
pub const GSO_UDP: u8 = VIRTIO_NET_HDR_GSO_UDP as u8;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = VIRTIO_NET_HDR_GSO_UDP_L4 as u8;
/// `VIRTIO_NET_HDR_GSO_ECN`: an ECN flag on a TCP GSO type.
pub const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;
const _: () = assert!(VIRTIO_NET_HDR_GSO_ECN <= 0xff && VIRTIO_NET_HDR_F_DATA_VALID <= 0xff);

/// A `virtio_net_hdr_v1`, field by field, in host byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VnetHeader {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with the ECN bit.
    pub gso_type: u8,
    /// Length of the headers (a hint; the kernel raises it to cover the checksum field).
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Where checksumming starts (with `NEEDS_CSUM`).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Unused by a TAP (mergeable receive buffers); zero on write.
    pub num_buffers: u16,
}

impl VnetHeader {
    /// The header as the TAP reads and writes it.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[AT_FLAGS] = self.flags;
        b[AT_GSO_TYPE] = self.gso_type;
        for (at, v) in [
            (AT_HDR_LEN, self.hdr_len),
            (AT_GSO_SIZE, self.gso_size),
            (AT_CSUM_START, self.csum_start),
            (AT_CSUM_OFFSET, self.csum_offset),
            (AT_NUM_BUFFERS, self.num_buffers),
        ] {
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The header from the bytes the TAP returned.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> VnetHeader {
        let le = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        VnetHeader {
            flags: b[AT_FLAGS],
            gso_type: b[AT_GSO_TYPE],
            hdr_len: le(AT_HDR_LEN),
            gso_size: le(AT_GSO_SIZE),
            csum_start: le(AT_CSUM_START),
            csum_offset: le(AT_CSUM_OFFSET),
            num_buffers: le(AT_NUM_BUFFERS),
        }
    }
}

/// Why an offload could not be translated; the frame is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// The checksum or GSO needs a TCP or UDP header that could not be found.
    #[error("locating the TCP/UDP header")]
    Headers(#[source] OffloadError),
    /// GSO on a frame that is not TCP over the IP version of the GSO kind.
    #[error("{kind:?} GSO on a frame that is not TCP over that IP version")]
    GsoMismatch {
        /// The GSO kind asked for.
        kind: GsoKind,
    },
    /// The headers end beyond what the header's 16-bit fields can say.
    #[error("headers end at byte {0}, beyond 65535")]
    HeadersTooLong(usize),
    /// A GSO type with a segment size of zero.
    #[error("GSO with a segment size of zero")]
    GsoSizeZero,
    /// UDP fragmentation or segmentation offload, which netif cannot carry (the TAP does not
    /// enable it, so the kernel should never send it).
    #[error("UDP GSO (type {0}) is not supported")]
    UdpGso(u8),
    /// A GSO type virtio does not define.
    #[error("unknown GSO type {0}")]
    UnknownGso(u8),
    /// The kernel asks for a checksum somewhere else than the frame's TCP/UDP checksum field
    /// (e.g. an inner header of a tunnel): netif's blank checksum cannot say so.
    #[error("checksum at {start}+{offset}, but the frame's TCP/UDP checksum is at {want_start}+{want_offset}")]
    ChecksumElsewhere {
        /// `csum_start` asked for.
        start: u16,
        /// `csum_offset` asked for.
        offset: u16,
        /// The frame's L4 header offset.
        want_start: usize,
        /// The frame's checksum field offset in that header.
        want_offset: usize,
    },
}

/// The header for writing `frame` with `offload` to the TAP. A GSO frame always gets
/// `NEEDS_CSUM` (a guest's GSO frame has a blank checksum; if it was not marked so, the
/// port first rewrites the field with [`offload::set_partial_checksum`], as Linux netback's
/// `checksum_setup` does).
pub fn encode(offload: &Offload, frame: &[u8]) -> Result<VnetHeader, VnetError> {
    encode_head(offload, frame, frame.len())
}

/// As [`encode`], for a frame of `frame_len` bytes of which `head` holds the first ones,
/// all of its headers among them ([`offload::locate_l4_in_head`]).
pub fn encode_head(offload: &Offload, head: &[u8], frame_len: usize) -> Result<VnetHeader, VnetError> {
    let mut hdr = VnetHeader::default();
    if offload.data_validated {
        hdr.flags |= F_DATA_VALID;
    }
    if !offload.csum_blank && offload.gso.is_none() {
        return Ok(hdr);
    }
    let l4 = offload::locate_l4_in_head(head, frame_len).map_err(VnetError::Headers)?;
    let field = |v: usize| u16::try_from(v).map_err(|_| VnetError::HeadersTooLong(v));
    hdr.flags |= F_NEEDS_CSUM;
    hdr.csum_start = field(l4.start)?;
    hdr.csum_offset = field(l4.csum_offset)?;
    hdr.hdr_len = field(l4.start + l4.len)?;
    if let Some(gso) = offload.gso {
        check_gso(gso, &l4)?;
        hdr.gso_type = match gso.kind {
            GsoKind::TcpV4 => GSO_TCPV4,
            GsoKind::TcpV6 => GSO_TCPV6,
        };
        hdr.gso_size = gso.size;
    }
    Ok(hdr)
}

/// The offload of `frame` as the TAP returned it with `hdr`.
pub fn decode(hdr: &VnetHeader, frame: &[u8]) -> Result<Offload, VnetError> {
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(GsoKind::TcpV4),
        GSO_TCPV6 => Some(GsoKind::TcpV6),
        t @ (GSO_UDP | GSO_UDP_L4) => return Err(VnetError::UdpGso(t)),
        t => return Err(VnetError::UnknownGso(t)),
    };
    let gso = kind.map(|kind| Gso { kind, size: hdr.gso_size });
    let needs_csum = hdr.flags & F_NEEDS_CSUM != 0;
    if needs_csum || gso.is_some() {
        let l4 = offload::locate_l4(frame).map_err(VnetError::Headers)?;
        if let Some(gso) = gso {
            check_gso(gso, &l4)?;
        }
        if needs_csum && (usize::from(hdr.csum_start), usize::from(hdr.csum_offset)) != (l4.start, l4.csum_offset) {
            return Err(VnetError::ChecksumElsewhere {
                start: hdr.csum_start,
                offset: hdr.csum_offset,
                want_start: l4.start,
                want_offset: l4.csum_offset,
            });
        }
    }
    Ok(Offload { csum_blank: needs_csum, data_validated: needs_csum || hdr.flags & F_DATA_VALID != 0, gso })
}

/// A GSO request is for TCP over the IP version of its kind, with a non-zero MSS.
fn check_gso(gso: Gso, l4: &L4Header) -> Result<(), VnetError> {
    if gso.size == 0 {
        return Err(VnetError::GsoSizeZero);
    }
    let v6 = gso.kind == GsoKind::TcpV6;
    if !l4.tcp || l4.ipv6 != v6 {
        return Err(VnetError::GsoMismatch { kind: gso.kind });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
