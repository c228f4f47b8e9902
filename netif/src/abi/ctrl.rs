//! Control ring messages (C: `struct xen_netif_ctrl_request`,
//! `struct xen_netif_ctrl_response`) and the hashing constants.
//!
//! The control ring is balanced (one response per request) but responses
//! need not be in request order.

use core::mem::offset_of;

use super::{RingEntry, assert_entry_size};

/// Control request type 0: invalid (C: `XEN_NETIF_CTRL_TYPE_INVALID`).
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// Query supported hash types (C: `XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// Set hash types, `data[0]` = `XEN_NETIF_CTRL_HASH_TYPE_*` mask
/// (C: `XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// Set hash key, `data[0]` = gref, `data[1]` = key length in octets
/// (C: `XEN_NETIF_CTRL_TYPE_SET_HASH_KEY`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// Query maximum mapping table size (C: `XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// Set mapping table size, `data[0]` = entries
/// (C: `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// Set (part of) the mapping table, `data[0]` = gref, `data[1]` = entries,
/// `data[2]` = offset in entries (C: `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// Set hash algorithm, `data[0]` = `XEN_NETIF_CTRL_HASH_ALGORITHM_*`
/// (C: `XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;

/// Control status: success (C: `XEN_NETIF_CTRL_STATUS_SUCCESS`).
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// Control status: operation not supported (C: `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`).
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// Control status: invalid parameter (C: `XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`).
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// Control status: buffer too large for the backend (C: `XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`).
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;

/// Bit number of the IPv4 hash type (C: `_XEN_NETIF_CTRL_HASH_TYPE_IPV4`);
/// also the `hash_type` of a hash extra.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_BIT: u8 = 0;
/// Bit number of the IPv4+TCP hash type (C: `_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT: u8 = 1;
/// Bit number of the IPv6 hash type (C: `_XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_BIT: u8 = 2;
/// Bit number of the IPv6+TCP hash type (C: `_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP_BIT: u8 = 3;

/// Hash over IPv4 source + destination address, 8 bytes
/// (C: `XEN_NETIF_CTRL_HASH_TYPE_IPV4`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV4_BIT;
/// Hash over IPv4 addresses + TCP ports, 12 bytes (C: `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP_BIT;
/// Hash over IPv6 source + destination address, 32 bytes
/// (C: `XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV6_BIT;
/// Hash over IPv6 addresses + TCP ports, 36 bytes (C: `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP_BIT;

/// Hash algorithm: none, hashing disabled (C: `XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// Hash algorithm: Toeplitz (C: `XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;

/// A control request (C: `struct xen_netif_ctrl_request`, 16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CtrlRequest {
    /// Request identifier, echoed in the response.
    pub id: u16,
    /// A `XEN_NETIF_CTRL_TYPE_*` value (C: `type`).
    pub ty: u16,
    /// Type-specific arguments.
    pub data: [u32; 3],
}

assert_entry_size!(CtrlRequest, 16);
const _: () = assert!(offset_of!(CtrlRequest, id) == 0);
const _: () = assert!(offset_of!(CtrlRequest, ty) == 2);
const _: () = assert!(offset_of!(CtrlRequest, data) == 4);

impl RingEntry for CtrlRequest {
    type Raw = [u8; 16];

    fn decode(raw: &[u8; 16]) -> Self {
        let [i0, i1, t0, t1, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] = *raw;
        Self {
            id: u16::from_ne_bytes([i0, i1]),
            ty: u16::from_ne_bytes([t0, t1]),
            data: [
                u32::from_ne_bytes([a0, a1, a2, a3]),
                u32::from_ne_bytes([b0, b1, b2, b3]),
                u32::from_ne_bytes([c0, c1, c2, c3]),
            ],
        }
    }

    fn encode(&self) -> [u8; 16] {
        let [i0, i1] = self.id.to_ne_bytes();
        let [t0, t1] = self.ty.to_ne_bytes();
        let [a, b, c] = self.data;
        let [a0, a1, a2, a3] = a.to_ne_bytes();
        let [b0, b1, b2, b3] = b.to_ne_bytes();
        let [c0, c1, c2, c3] = c.to_ne_bytes();
        [i0, i1, t0, t1, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3]
    }
}

/// A control response (C: `struct xen_netif_ctrl_response`, 12 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CtrlResponse {
    /// The `id` of the request answered.
    pub id: u16,
    /// The `type` of the request answered (C: `type`).
    pub ty: u16,
    /// A `XEN_NETIF_CTRL_STATUS_*` value.
    pub status: u32,
    /// Type- and status-specific result.
    pub data: u32,
}

assert_entry_size!(CtrlResponse, 12);
const _: () = assert!(offset_of!(CtrlResponse, id) == 0);
const _: () = assert!(offset_of!(CtrlResponse, ty) == 2);
const _: () = assert!(offset_of!(CtrlResponse, status) == 4);
const _: () = assert!(offset_of!(CtrlResponse, data) == 8);

impl RingEntry for CtrlResponse {
    type Raw = [u8; 12];

    fn decode(raw: &[u8; 12]) -> Self {
        let [i0, i1, t0, t1, s0, s1, s2, s3, d0, d1, d2, d3] = *raw;
        Self {
            id: u16::from_ne_bytes([i0, i1]),
            ty: u16::from_ne_bytes([t0, t1]),
            status: u32::from_ne_bytes([s0, s1, s2, s3]),
            data: u32::from_ne_bytes([d0, d1, d2, d3]),
        }
    }

    fn encode(&self) -> [u8; 12] {
        let [i0, i1] = self.id.to_ne_bytes();
        let [t0, t1] = self.ty.to_ne_bytes();
        let [s0, s1, s2, s3] = self.status.to_ne_bytes();
        let [d0, d1, d2, d3] = self.data.to_ne_bytes();
        [i0, i1, t0, t1, s0, s1, s2, s3, d0, d1, d2, d3]
    }
}
