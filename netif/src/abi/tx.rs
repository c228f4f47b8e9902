//! Guest transmit (frontend → backend) messages: `netif_tx_request`,
//! `netif_tx_response` and the `NETTXF_*` flags.

use core::mem::offset_of;

use super::{RingEntry, assert_entry_size};

/// TX flag: the protocol checksum field is blank, the receiver must fill it
/// (checksum offload) (C: `NETTXF_csum_blank`, bit `_NETTXF_csum_blank` = 0).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// TX flag: packet data has been validated against its protocol checksum
/// (C: `NETTXF_data_validated`, bit 1).
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// TX flag: the packet continues in the next request
/// (C: `NETTXF_more_data`, bit 2).
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// TX flag: this request is followed by extra-info slot(s)
/// (C: `NETTXF_extra_info`, bit 3).
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// A transmit request (C: `struct netif_tx_request`, 12 bytes).
///
/// In the first slot of a packet `size` is the **total** packet size; in
/// follow-on slots it is the fragment size. An extra-info slot overlays this
/// struct (see [`NetifExtraInfo`](super::NetifExtraInfo)`: From<TxRequest>`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TxRequest {
    /// Grant reference of the buffer page (C: `grant_ref_t gref`).
    pub gref: u32,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETTXF_*` flags.
    pub flags: u16,
    /// Request identifier, echoed in the response.
    pub id: u16,
    /// Packet size (first slot) or fragment size (later slots), in bytes.
    pub size: u16,
}

assert_entry_size!(TxRequest, 12);
const _: () = assert!(offset_of!(TxRequest, gref) == 0);
const _: () = assert!(offset_of!(TxRequest, offset) == 4);
const _: () = assert!(offset_of!(TxRequest, flags) == 6);
const _: () = assert!(offset_of!(TxRequest, id) == 8);
const _: () = assert!(offset_of!(TxRequest, size) == 10);

impl RingEntry for TxRequest {
    type Raw = [u8; 12];

    fn decode(raw: &[u8; 12]) -> Self {
        let [g0, g1, g2, g3, o0, o1, f0, f1, i0, i1, s0, s1] = *raw;
        Self {
            gref: u32::from_ne_bytes([g0, g1, g2, g3]),
            offset: u16::from_ne_bytes([o0, o1]),
            flags: u16::from_ne_bytes([f0, f1]),
            id: u16::from_ne_bytes([i0, i1]),
            size: u16::from_ne_bytes([s0, s1]),
        }
    }

    fn encode(&self) -> [u8; 12] {
        let [g0, g1, g2, g3] = self.gref.to_ne_bytes();
        let [o0, o1] = self.offset.to_ne_bytes();
        let [f0, f1] = self.flags.to_ne_bytes();
        let [i0, i1] = self.id.to_ne_bytes();
        let [s0, s1] = self.size.to_ne_bytes();
        [g0, g1, g2, g3, o0, o1, f0, f1, i0, i1, s0, s1]
    }
}

impl TxRequest {
    /// True if every bit of `flag` (a `NETTXF_*` mask) is set.
    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }
}

/// A transmit response (C: `struct netif_tx_response`, 4 bytes; the rest of
/// the 12-byte slot is unused and left untouched).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TxResponse {
    /// The `id` of the request answered.
    pub id: u16,
    /// A `NETIF_RSP_*` status.
    pub status: i16,
}

assert_entry_size!(TxResponse, 4);
const _: () = assert!(offset_of!(TxResponse, id) == 0);
const _: () = assert!(offset_of!(TxResponse, status) == 2);

impl RingEntry for TxResponse {
    type Raw = [u8; 4];

    fn decode(raw: &[u8; 4]) -> Self {
        let [i0, i1, s0, s1] = *raw;
        Self { id: u16::from_ne_bytes([i0, i1]), status: i16::from_ne_bytes([s0, s1]) }
    }

    fn encode(&self) -> [u8; 4] {
        let [i0, i1] = self.id.to_ne_bytes();
        let [s0, s1] = self.status.to_ne_bytes();
        [i0, i1, s0, s1]
    }
}
