//! Guest receive (backend → frontend) messages: `netif_rx_request`,
//! `netif_rx_response` and the `NETRXF_*` flags.
//!
//! Invariant the backend must keep (netif.h): every RX response, and every
//! extra-info slot overlaying one, goes into **the same ring slot as the
//! request it consumed**, because Linux netfront ignores the response `id`.

use core::mem::offset_of;

use super::{RingEntry, assert_entry_size};

/// RX flag: packet data has been validated against its protocol checksum
/// (C: `NETRXF_data_validated`, bit `_NETRXF_data_validated` = 0).
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// RX flag: the protocol checksum field is blank (checksum offload)
/// (C: `NETRXF_csum_blank`, bit 1).
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// RX flag: the packet continues in the next response
/// (C: `NETRXF_more_data`, bit 2).
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// RX flag: this response is followed by extra-info slot(s)
/// (C: `NETRXF_extra_info`, bit 3).
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// RX flag: packet has a GSO prefix; deprecated, kept for compatibility
/// (C: `NETRXF_gso_prefix`, bit 4).
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// A receive request: an empty granted page posted by the frontend
/// (C: `struct netif_rx_request`, 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RxRequest {
    /// Request identifier, echoed in the response.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// Grant reference of the page to fill (C: `grant_ref_t gref`).
    pub gref: u32,
}

assert_entry_size!(RxRequest, 8);
const _: () = assert!(offset_of!(RxRequest, id) == 0);
const _: () = assert!(offset_of!(RxRequest, pad) == 2);
const _: () = assert!(offset_of!(RxRequest, gref) == 4);

impl RingEntry for RxRequest {
    type Raw = [u8; 8];

    fn decode(raw: &[u8; 8]) -> Self {
        let [i0, i1, p0, p1, g0, g1, g2, g3] = *raw;
        Self {
            id: u16::from_ne_bytes([i0, i1]),
            pad: u16::from_ne_bytes([p0, p1]),
            gref: u32::from_ne_bytes([g0, g1, g2, g3]),
        }
    }

    fn encode(&self) -> [u8; 8] {
        let [i0, i1] = self.id.to_ne_bytes();
        let [p0, p1] = self.pad.to_ne_bytes();
        let [g0, g1, g2, g3] = self.gref.to_ne_bytes();
        [i0, i1, p0, p1, g0, g1, g2, g3]
    }
}

/// A receive response (C: `struct netif_rx_response`, 8 bytes).
///
/// `status >= 0` is the number of bytes in this slot; `< 0` is a
/// `NETIF_RSP_*` error. The packet size is the sum of its slots' statuses.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RxResponse {
    /// The `id` of the request answered.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*` flags.
    pub flags: u16,
    /// Byte count (`>= 0`) or `NETIF_RSP_*` error (`< 0`).
    pub status: i16,
}

assert_entry_size!(RxResponse, 8);
const _: () = assert!(offset_of!(RxResponse, id) == 0);
const _: () = assert!(offset_of!(RxResponse, offset) == 2);
const _: () = assert!(offset_of!(RxResponse, flags) == 4);
const _: () = assert!(offset_of!(RxResponse, status) == 6);

impl RingEntry for RxResponse {
    type Raw = [u8; 8];

    fn decode(raw: &[u8; 8]) -> Self {
        let [i0, i1, o0, o1, f0, f1, s0, s1] = *raw;
        Self {
            id: u16::from_ne_bytes([i0, i1]),
            offset: u16::from_ne_bytes([o0, o1]),
            flags: u16::from_ne_bytes([f0, f1]),
            status: i16::from_ne_bytes([s0, s1]),
        }
    }

    fn encode(&self) -> [u8; 8] {
        let [i0, i1] = self.id.to_ne_bytes();
        let [o0, o1] = self.offset.to_ne_bytes();
        let [f0, f1] = self.flags.to_ne_bytes();
        let [s0, s1] = self.status.to_ne_bytes();
        [i0, i1, o0, o1, f0, f1, s0, s1]
    }
}

impl RxResponse {
    /// True if every bit of `flag` (a `NETRXF_*` mask) is set.
    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }
}
