//! The netif wire ABI (`xen/include/public/io/netif.h`).
//!
//! Every message is a `#[repr(C)]` struct with public fields whose size and
//! field offsets are checked against the C layout at compile time. Messages
//! are never read in place from shared memory: the ring copies a slot once
//! into a local byte array ([`RingEntry::Raw`]) and decodes that copy, so the
//! peer cannot change a value between validation and use (XSA-155).
//!
//! Constants keep their C names (`NETTXF_csum_blank` becomes
//! [`NETTXF_CSUM_BLANK`]), so `grep -i` for the C name finds them.

mod ctrl;
mod extra;
mod rx;
mod tx;

pub use ctrl::*;
pub use extra::*;
pub use rx::*;
pub use tx::*;

/// Size of a Xen page, and of every ring page (`XEN_PAGE_SIZE`, `1 << XEN_PAGE_SHIFT`
/// in `ring.h`): always 4 KiB whatever the host page size.
pub const XEN_PAGE_SIZE: usize = 4096;

/// Minimum number of slots a backend must accept for one packet
/// (C: `XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;

/// Largest packet a TX request chain may describe: the first slot's `size`
/// is a `u16` holding the total (C: `XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// Largest RX headroom a frontend may request with `xdp-headroom`
/// (C: `XEN_NETIF_MAX_XDP_HEADROOM`).
pub const XEN_NETIF_MAX_XDP_HEADROOM: u16 = 0x7FFF;

/// Response status: packet dropped (C: `NETIF_RSP_DROPPED`).
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: error (C: `NETIF_RSP_ERROR`).
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: success (C: `NETIF_RSP_OKAY`).
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status for an auxiliary slot such as an extra-info slot: "no
/// response" (C: `NETIF_RSP_NULL`).
pub const NETIF_RSP_NULL: i16 = 1;

/// Errors decoding netif messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// An extra-info slot carries type `XEN_NETIF_EXTRA_TYPE_NONE` (0) or a
    /// type `>= XEN_NETIF_EXTRA_TYPE_MAX`; Linux treats this as fatal.
    #[error("decode extra info: invalid extra type {ty}")]
    DecodeExtra {
        /// The `type` byte found in the slot.
        ty: u8,
    },
}

/// A message that occupies (part of) one shared-ring slot.
///
/// `decode` and `encode` are pure functions on a local byte array in native
/// byte order, the layout of the C struct. They never fail: every bit pattern
/// is a valid value of these plain-integer structs (validation of field
/// *meaning* is the caller's job, on the local copy).
pub trait RingEntry: Copy + Sized {
    /// The raw bytes of one entry, `[u8; SIZE]`.
    type Raw: Copy + Default + AsRef<[u8]> + AsMut<[u8]>;

    /// Size in bytes of the C struct (`sizeof`), which is what is copied to
    /// or from a ring slot.
    const SIZE: usize = core::mem::size_of::<Self::Raw>();

    /// Decodes a local copy of the entry's bytes.
    fn decode(raw: &Self::Raw) -> Self;

    /// Encodes the entry into its bytes.
    fn encode(&self) -> Self::Raw;

    /// Decodes from the start of `bytes`; `None` if `bytes` is shorter than
    /// [`Self::SIZE`](RingEntry::SIZE).
    fn decode_prefix(bytes: &[u8]) -> Option<Self> {
        let mut raw = Self::Raw::default();
        let dst = raw.as_mut();
        dst.copy_from_slice(bytes.get(..dst.len())?);
        Some(Self::decode(&raw))
    }
}

/// Asserts at compile time that a `RingEntry` impl's byte size equals the C
/// struct size, and that the Rust struct has that size too.
macro_rules! assert_entry_size {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(<$t as $crate::abi::RingEntry>::SIZE == $size);
    };
}
pub(crate) use assert_entry_size;

#[cfg(test)]
mod tests;
