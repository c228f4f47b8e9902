//! Software offloads: what netback does when the receiving side cannot take what the
//! sender produced. A guest with checksum offload sends frames whose TCP/UDP checksum is
//! blank ([`fill_checksum`]); a guest with GSO sends TCP super-frames up to 64 KiB
//! ([`segment_tcp`]). A receiver without those features gets finished frames.
//!
//! Pure functions on byte slices: no I/O, no unsafe; property-tested against an independent
//! implementation (etherparse).

use crate::frame::GsoKind;

/// Why a frame could not be finished in software (it is then dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Parsing the Ethernet/IP/L4 headers failed.
    #[error("parsing the headers: {0}")]
    Parse(&'static str),
    /// The L4 protocol has no checksum we can fill (not TCP or UDP).
    #[error("no TCP or UDP checksum to fill (protocol {0})")]
    UnsupportedProtocol(u8),
    /// Segmenting: not a TCP frame of the GSO kind, or an MSS of zero.
    #[error("segmenting: {0}")]
    Segment(&'static str),
}

/// Fills the full L4 checksum (pseudo-header included) of a TCP or UDP frame over IPv4 or
/// IPv6 (Ethernet, optionally one 802.1Q tag; IPv4 options; IPv6 without extension
/// headers or with hop-by-hop/routing/destination-options headers). Whatever the checksum
/// field held is ignored. A UDP checksum that computes to 0 is written as 0xffff.
pub fn fill_checksum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let _ = frame;
    todo!()
}

/// Cuts a TCP GSO super-frame into frames carrying at most `mss` payload bytes each, as a
/// NIC's TSO does: headers copied; IPv4 total length, identification (+1 per segment) and
/// header checksum, or the IPv6 payload length, rewritten; TCP sequence number advanced;
/// FIN and PSH only on the last segment, CWR only on the first; every TCP checksum filled.
/// A frame whose payload already fits one segment comes back as one finished frame.
pub fn segment_tcp(frame: &[u8], kind: GsoKind, mss: u16) -> Result<Vec<Vec<u8>>, OffloadError> {
    let _ = (frame, kind, mss);
    todo!()
}
