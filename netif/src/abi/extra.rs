//! Extra-info slots (C: `struct netif_extra_info`), their constants, and the
//! typed, validated [`Extra`] / [`ExtraInfo`].
//!
//! An extra-info slot overlays a TX request slot (frontend → backend, the 8
//! bytes are followed by 4 bytes of padding) or an RX response slot (backend →
//! frontend). It follows a request/response with `NET{T,R}XF_extra_info`, or
//! a previous extra with `XEN_NETIF_EXTRA_FLAG_MORE`. Because it overlays the
//! `id` field, an RX extra must sit in the slot of the request it consumed.

use core::mem::offset_of;

use super::{AbiError, RingEntry, RxResponse, TxRequest, assert_entry_size};

/// Extra type 0: never used, invalid (C: `XEN_NETIF_EXTRA_TYPE_NONE`).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra type: GSO parameters, `u.gso` (C: `XEN_NETIF_EXTRA_TYPE_GSO`).
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra type: add a multicast address, `u.mcast` (C: `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra type: delete a multicast address, `u.mcast` (C: `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra type: packet hash, `u.hash` (C: `XEN_NETIF_EXTRA_TYPE_HASH`).
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Extra type: XDP headroom, `u.xdp` (C: `XEN_NETIF_EXTRA_TYPE_XDP`).
pub const XEN_NETIF_EXTRA_TYPE_XDP: u8 = 5;
/// One past the last valid extra type (C: `XEN_NETIF_EXTRA_TYPE_MAX`).
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 6;

/// Extra flag: another extra-info slot follows this one
/// (C: `XEN_NETIF_EXTRA_FLAG_MORE`, bit `_XEN_NETIF_EXTRA_FLAG_MORE` = 0).
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// GSO type: none (C: `XEN_NETIF_GSO_TYPE_NONE`).
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// GSO type: TCP over IPv4 (C: `XEN_NETIF_GSO_TYPE_TCPV4`).
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// GSO type: TCP over IPv6 (C: `XEN_NETIF_GSO_TYPE_TCPV6`).
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// The raw extra-info slot (C: `struct netif_extra_info`, 8 bytes, 2-aligned).
///
/// The C union `u` is kept as its 6 raw bytes; [`gso`](Self::gso),
/// [`mcast`](Self::mcast), [`hash`](Self::hash) and [`xdp`](Self::xdp) decode
/// a view of it, and [`Extra::decode`] validates the type.
#[repr(C, align(2))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NetifExtraInfo {
    /// A `XEN_NETIF_EXTRA_TYPE_*` value (C: `type`).
    pub ty: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*` bits.
    pub flags: u8,
    /// The type-specific union (C: `u`), in native byte order.
    pub u: [u8; 6],
}

assert_entry_size!(NetifExtraInfo, 8);
const _: () = assert!(core::mem::align_of::<NetifExtraInfo>() == 2);
const _: () = assert!(offset_of!(NetifExtraInfo, ty) == 0);
const _: () = assert!(offset_of!(NetifExtraInfo, flags) == 1);
const _: () = assert!(offset_of!(NetifExtraInfo, u) == 2);

/// The `u.gso` member of the extra-info union (6 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtraGso {
    /// Maximum payload size of each segment (the TCP MSS).
    pub size: u16,
    /// A `XEN_NETIF_GSO_TYPE_*` value (C: `type`).
    pub gso_type: u8,
    /// Padding.
    pub pad: u8,
    /// `XEN_NETIF_GSO_FEAT_*` bits (none are defined).
    pub features: u16,
}
const _: () = assert!(core::mem::size_of::<ExtraGso>() == 6);
const _: () = assert!(offset_of!(ExtraGso, size) == 0);
const _: () = assert!(offset_of!(ExtraGso, gso_type) == 2);
const _: () = assert!(offset_of!(ExtraGso, pad) == 3);
const _: () = assert!(offset_of!(ExtraGso, features) == 4);

/// The `u.mcast` member of the extra-info union (6 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtraMcast {
    /// The Ethernet multicast address to add or remove.
    pub addr: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<ExtraMcast>() == 6);
const _: () = assert!(offset_of!(ExtraMcast, addr) == 0);

/// The `u.hash` member of the extra-info union (6 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtraHash {
    /// Hash type as a bit *number* (`_XEN_NETIF_CTRL_HASH_TYPE_*`, e.g.
    /// [`XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT`](super::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT)) (C: `type`).
    pub hash_type: u8,
    /// A `XEN_NETIF_CTRL_HASH_ALGORITHM_*` value.
    pub algorithm: u8,
    /// The hash value, least significant byte first (netif.h figure).
    pub value: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<ExtraHash>() == 6);
const _: () = assert!(offset_of!(ExtraHash, hash_type) == 0);
const _: () = assert!(offset_of!(ExtraHash, algorithm) == 1);
const _: () = assert!(offset_of!(ExtraHash, value) == 2);

/// The `u.xdp` member of the extra-info union (6 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtraXdp {
    /// Headroom in bytes.
    pub headroom: u16,
    /// Padding.
    pub pad: [u16; 2],
}
const _: () = assert!(core::mem::size_of::<ExtraXdp>() == 6);
const _: () = assert!(offset_of!(ExtraXdp, headroom) == 0);
const _: () = assert!(offset_of!(ExtraXdp, pad) == 2);

impl RingEntry for NetifExtraInfo {
    type Raw = [u8; 8];

    fn decode(raw: &[u8; 8]) -> Self {
        let [ty, flags, u0, u1, u2, u3, u4, u5] = *raw;
        Self { ty, flags, u: [u0, u1, u2, u3, u4, u5] }
    }

    fn encode(&self) -> [u8; 8] {
        let [u0, u1, u2, u3, u4, u5] = self.u;
        [self.ty, self.flags, u0, u1, u2, u3, u4, u5]
    }
}

impl NetifExtraInfo {
    /// True if `XEN_NETIF_EXTRA_FLAG_MORE` is set: another extra follows.
    pub fn more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }

    /// Views the union as `u.gso`.
    pub fn gso(&self) -> ExtraGso {
        let [s0, s1, gso_type, pad, f0, f1] = self.u;
        ExtraGso { size: u16::from_ne_bytes([s0, s1]), gso_type, pad, features: u16::from_ne_bytes([f0, f1]) }
    }

    /// Views the union as `u.mcast`.
    pub fn mcast(&self) -> ExtraMcast {
        ExtraMcast { addr: self.u }
    }

    /// Views the union as `u.hash`.
    pub fn hash(&self) -> ExtraHash {
        let [hash_type, algorithm, v0, v1, v2, v3] = self.u;
        ExtraHash { hash_type, algorithm, value: [v0, v1, v2, v3] }
    }

    /// Views the union as `u.xdp`.
    pub fn xdp(&self) -> ExtraXdp {
        let [h0, h1, p0, p1, p2, p3] = self.u;
        ExtraXdp {
            headroom: u16::from_ne_bytes([h0, h1]),
            pad: [u16::from_ne_bytes([p0, p1]), u16::from_ne_bytes([p2, p3])],
        }
    }
}

/// An extra-info slot read from a TX request slot: its first 8 bytes (the
/// other 4 are padding). Pure re-interpretation of a local copy.
impl From<TxRequest> for NetifExtraInfo {
    fn from(req: TxRequest) -> Self {
        let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = req.encode();
        Self::decode(&[b0, b1, b2, b3, b4, b5, b6, b7])
    }
}

/// The TX request slot image of an extra-info slot, with zeroed padding.
impl From<NetifExtraInfo> for TxRequest {
    fn from(extra: NetifExtraInfo) -> Self {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = extra.encode();
        Self::decode(&[b0, b1, b2, b3, b4, b5, b6, b7, 0, 0, 0, 0])
    }
}

/// An extra-info slot read from an RX response slot (same 8 bytes).
impl From<RxResponse> for NetifExtraInfo {
    fn from(rsp: RxResponse) -> Self {
        Self::decode(&rsp.encode())
    }
}

/// The RX response slot image of an extra-info slot (same 8 bytes).
impl From<NetifExtraInfo> for RxResponse {
    fn from(extra: NetifExtraInfo) -> Self {
        Self::decode(&extra.encode())
    }
}

/// A decoded, type-checked extra-info payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_GSO`. `gso_type` is not validated here.
    Gso {
        /// Maximum segment payload (MSS).
        size: u16,
        /// `XEN_NETIF_GSO_TYPE_*`.
        gso_type: u8,
        /// `XEN_NETIF_GSO_FEAT_*` bits.
        features: u16,
    },
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD` with the address.
    McastAdd([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL` with the address.
    McastDel([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_HASH`.
    Hash {
        /// Hash type bit number (`_XEN_NETIF_CTRL_HASH_TYPE_*`).
        hash_type: u8,
        /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
        algorithm: u8,
        /// Hash value bytes, least significant first.
        value: [u8; 4],
    },
    /// `XEN_NETIF_EXTRA_TYPE_XDP`.
    Xdp {
        /// Headroom in bytes.
        headroom: u16,
    },
}

impl ExtraInfo {
    /// The `XEN_NETIF_EXTRA_TYPE_*` value of this payload.
    pub fn extra_type(&self) -> u8 {
        match self {
            Self::Gso { .. } => XEN_NETIF_EXTRA_TYPE_GSO,
            Self::McastAdd(_) => XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
            Self::McastDel(_) => XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
            Self::Hash { .. } => XEN_NETIF_EXTRA_TYPE_HASH,
            Self::Xdp { .. } => XEN_NETIF_EXTRA_TYPE_XDP,
        }
    }
}

/// One decoded extra-info slot: the payload plus `XEN_NETIF_EXTRA_FLAG_MORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extra {
    /// The typed payload.
    pub info: ExtraInfo,
    /// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra slot follows.
    pub more: bool,
}

impl Extra {
    /// Decodes and type-checks a raw slot. Unknown flag bits are ignored
    /// (as Linux does); padding bytes are not checked.
    ///
    /// # Errors
    /// [`AbiError::DecodeExtra`] for type `XEN_NETIF_EXTRA_TYPE_NONE` or
    /// `>= XEN_NETIF_EXTRA_TYPE_MAX`.
    pub fn decode(raw: &NetifExtraInfo) -> Result<Self, AbiError> {
        let info = match raw.ty {
            XEN_NETIF_EXTRA_TYPE_GSO => {
                let g = raw.gso();
                ExtraInfo::Gso { size: g.size, gso_type: g.gso_type, features: g.features }
            }
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD => ExtraInfo::McastAdd(raw.u),
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL => ExtraInfo::McastDel(raw.u),
            XEN_NETIF_EXTRA_TYPE_HASH => {
                let h = raw.hash();
                ExtraInfo::Hash { hash_type: h.hash_type, algorithm: h.algorithm, value: h.value }
            }
            XEN_NETIF_EXTRA_TYPE_XDP => ExtraInfo::Xdp { headroom: raw.xdp().headroom },
            ty => return Err(AbiError::DecodeExtra { ty }),
        };
        Ok(Self { info, more: raw.more() })
    }

    /// Encodes into a raw slot; padding bytes are zero.
    pub fn encode(&self) -> NetifExtraInfo {
        let u = match self.info {
            ExtraInfo::Gso { size, gso_type, features } => {
                let [s0, s1] = size.to_ne_bytes();
                let [f0, f1] = features.to_ne_bytes();
                [s0, s1, gso_type, 0, f0, f1]
            }
            ExtraInfo::McastAdd(addr) | ExtraInfo::McastDel(addr) => addr,
            ExtraInfo::Hash { hash_type, algorithm, value: [v0, v1, v2, v3] } => [hash_type, algorithm, v0, v1, v2, v3],
            ExtraInfo::Xdp { headroom } => {
                let [h0, h1] = headroom.to_ne_bytes();
                [h0, h1, 0, 0, 0, 0]
            }
        };
        let flags = if self.more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 };
        NetifExtraInfo { ty: self.info.extra_type(), flags, u }
    }

    /// Decodes an extra that the frontend put in a TX request slot.
    ///
    /// # Errors
    /// As [`Extra::decode`].
    pub fn from_tx_request(req: &TxRequest) -> Result<Self, AbiError> {
        Self::decode(&NetifExtraInfo::from(*req))
    }

    /// The TX request slot image of this extra (frontend side).
    pub fn to_tx_request(&self) -> TxRequest {
        TxRequest::from(self.encode())
    }

    /// Decodes an extra that the backend put in an RX response slot.
    ///
    /// # Errors
    /// As [`Extra::decode`].
    pub fn from_rx_response(rsp: &RxResponse) -> Result<Self, AbiError> {
        Self::decode(&NetifExtraInfo::from(*rsp))
    }

    /// The RX response slot image of this extra (backend side).
    pub fn to_rx_response(&self) -> RxResponse {
        RxResponse::from(self.encode())
    }
}

impl TryFrom<NetifExtraInfo> for Extra {
    type Error = AbiError;

    fn try_from(raw: NetifExtraInfo) -> Result<Self, AbiError> {
        Self::decode(&raw)
    }
}

impl From<Extra> for NetifExtraInfo {
    fn from(extra: Extra) -> Self {
        extra.encode()
    }
}
