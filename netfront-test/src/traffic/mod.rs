//! Self-verifying test traffic: a frame format, a paced [`Generator`] and a verifying
//! [`Receiver`] that counts loss, reordering, duplication and corruption per flow.
//!
//! Frame layout (all integers big-endian):
//!
//! ```text
//! 0  dst MAC   6  src MAC   12 EtherType 0x88B5 (local experimental)
//! 14 magic u32 "NFTG"   18 flow u32   22 seq u64   30 payload length u16   32 checksum u32
//! 36 payload: a pseudo-random stream derived from (flow, seq)
//! ```
//!
//! The checksum is FNV-1a (32 bit) over bytes 14..32 followed by the payload. FNV-1a maps
//! every single-byte change to a different hash (each step is a bijection of the state),
//! so any one flipped byte after the Ethernet header is detected; the payload is also
//! compared with its derivation.

mod generator;
mod receiver;

pub use generator::{FrameSize, Generator, GeneratorConfig, Next};
pub use receiver::{FlowReport, Receiver, Report};

use crate::mac::Mac;

/// EtherType of test frames (IEEE 802 local experimental EtherType 1).
pub const ETHERTYPE_TRAFFIC: u16 = 0x88B5;
/// `"NFTG"`.
pub const MAGIC: u32 = 0x4E46_5447;
/// Ethernet header plus our header: the smallest test frame.
pub const HEADER_LEN: usize = 36;
/// The largest test frame: netif's largest frame (`XEN_NETIF_MAX_TX_SIZE`, 65535 bytes).
/// Frames above one page (4096 bytes) need scatter-gather in effect on the device
/// ([`Netfront::max_frame_len`](crate::Netfront::max_frame_len)); the session checks.
pub const MAX_FRAME_LEN: usize = netif::abi::XEN_NETIF_MAX_TX_SIZE as usize;
const CHECKSUM_AT: usize = 32;

/// Why a frame is not a valid test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not test traffic at all (another EtherType, or shorter than an Ethernet header).
    #[error("not a test frame")]
    Foreign,
    /// Our EtherType but shorter than our header.
    #[error("test frame of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    /// The magic number is wrong.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// The header's payload length disagrees with the frame length.
    #[error("header says {header} payload bytes, frame has {actual}")]
    BadLength { header: usize, actual: usize },
    /// The checksum does not match.
    #[error("checksum mismatch")]
    BadChecksum,
    /// Checksum fine but the payload is not what (flow, seq) derives (should not happen
    /// by chance: a strong hint of a bug that rewrites whole frames).
    #[error("payload differs from its derivation")]
    BadPayload,
}

/// The header fields of a valid test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Ethernet destination.
    pub dst: Mac,
    /// Ethernet source.
    pub src: Mac,
    /// Flow id.
    pub flow: u32,
    /// Sequence number within the flow.
    pub seq: u64,
    /// Payload bytes.
    pub payload_len: usize,
}

/// FNV-1a, 32 bit, over the concatenation of `parts`.
pub fn fnv1a32(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// SplitMix64 step: a full-period 64-bit generator, good enough for test data.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `out` with the payload of (`flow`, `seq`).
fn fill_payload(flow: u32, seq: u64, out: &mut [u8]) {
    let mut state = (u64::from(flow) << 32) ^ seq.rotate_left(17) ^ 0x6e66_7467;
    for chunk in out.chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Builds the test frame (`flow`, `seq`) of exactly `len` bytes.
///
/// # Panics
/// If `len` is not in `HEADER_LEN..=MAX_FRAME_LEN` (the generator validates sizes).
pub fn build_frame(dst: Mac, src: Mac, flow: u32, seq: u64, len: usize) -> Vec<u8> {
    assert!((HEADER_LEN..=MAX_FRAME_LEN).contains(&len), "test frame length {len}");
    let payload_len = len - HEADER_LEN;
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE_TRAFFIC.to_be_bytes());
    f[14..18].copy_from_slice(&MAGIC.to_be_bytes());
    f[18..22].copy_from_slice(&flow.to_be_bytes());
    f[22..30].copy_from_slice(&seq.to_be_bytes());
    f[30..32].copy_from_slice(&(payload_len as u16).to_be_bytes());
    fill_payload(flow, seq, &mut f[HEADER_LEN..]);
    let sum = fnv1a32(&[&f[14..CHECKSUM_AT], &f[HEADER_LEN..]]);
    f[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Verifies a test frame: EtherType, magic, length, checksum and payload derivation.
/// Zero padding up to the 60-byte Ethernet minimum is accepted after a short frame.
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo, FrameError> {
    if frame.len() < 14 || frame[12..14] != ETHERTYPE_TRAFFIC.to_be_bytes() {
        return Err(FrameError::Foreign);
    }
    if frame.len() < HEADER_LEN {
        return Err(FrameError::TooShort { len: frame.len() });
    }
    let word = |at: usize| u32::from_be_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
    if word(14) != MAGIC {
        return Err(FrameError::BadMagic(word(14)));
    }
    let payload_len = usize::from(u16::from_be_bytes([frame[30], frame[31]]));
    let actual = frame.len() - HEADER_LEN;
    let padded = frame.len() <= crate::stack::ETH_MIN_LEN && actual > payload_len;
    if actual != payload_len && !(padded && frame[HEADER_LEN + payload_len..].iter().all(|&b| b == 0)) {
        return Err(FrameError::BadLength { header: payload_len, actual });
    }
    let payload = &frame[HEADER_LEN..HEADER_LEN + payload_len];
    if fnv1a32(&[&frame[14..CHECKSUM_AT], payload]) != word(CHECKSUM_AT) {
        return Err(FrameError::BadChecksum);
    }
    let flow = word(18);
    let seq = u64::from_be_bytes(frame[22..30].try_into().expect("8 bytes"));
    let mut expected = vec![0u8; payload_len];
    fill_payload(flow, seq, &mut expected);
    if expected != payload {
        return Err(FrameError::BadPayload);
    }
    let mac = |at: usize| -> Mac { frame[at..at + 6].try_into().expect("6 bytes") };
    Ok(FrameInfo { dst: mac(0), src: mac(6), flow, seq, payload_len })
}

#[cfg(test)]
mod tests;
