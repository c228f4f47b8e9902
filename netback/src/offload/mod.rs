//! Software offloads: what netback does when the receiving side cannot take what the
//! sender produced. A guest with checksum offload sends frames whose TCP/UDP checksum is
//! blank ([`fill_checksum`]); a guest with GSO sends TCP super-frames up to 64 KiB
//! ([`segment_tcp`]). A receiver without those features gets finished frames.
//!
//! Pure functions on byte slices: no I/O, no unsafe; property-tested against an independent
//! implementation (etherparse).

mod checksum;
mod headers;
mod segment;

use crate::frame::GsoKind;
use headers::{IpVersion, PROTO_TCP, PROTO_UDP};

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
/// The segment is the IP payload as the IP length gives it: Ethernet padding after it is
/// left alone. IP fragments (IPv4 MF/offset, IPv6 fragment header) are rejected.
pub fn fill_checksum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let layout = headers::parse(frame)?;
    let at = headers::checksum_offset(frame, &layout)?;
    frame[at..at + 2].fill(0);
    let mut c = checksum::l4_checksum(frame, &layout);
    if layout.proto == PROTO_UDP && c == 0 {
        // Zero means "no checksum" in UDP; the same value in one's complement is 0xffff.
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Whether the TCP or UDP checksum of `frame` is correct (headers parsed as for
/// [`fill_checksum`]). A UDP checksum of zero over IPv4 means "none" and counts as valid;
/// over IPv6 it is invalid (RFC 8200).
pub fn l4_checksum_is_valid(frame: &[u8]) -> Result<bool, OffloadError> {
    let layout = headers::parse(frame)?;
    let at = headers::checksum_offset(frame, &layout)?;
    if layout.proto == PROTO_UDP && frame[at..at + 2] == [0, 0] {
        return Ok(layout.version == IpVersion::V4);
    }
    // Summed with its correct checksum in place, a segment complements to zero.
    Ok(checksum::l4_checksum(frame, &layout) == 0)
}

/// Cuts a TCP GSO super-frame into frames carrying at most `mss` payload bytes each, as a
/// NIC's TSO does: headers copied; IPv4 total length, identification (+1 per segment) and
/// header checksum, or the IPv6 payload length, rewritten; TCP sequence number advanced;
/// FIN and PSH only on the last segment, CWR only on the first; every TCP checksum filled.
/// A frame whose payload already fits one segment comes back as one finished frame.
/// URG and the urgent pointer stay on the first segment only; Ethernet padding after the
/// IP datagram is not copied into any segment.
pub fn segment_tcp(frame: &[u8], kind: GsoKind, mss: u16) -> Result<Vec<Vec<u8>>, OffloadError> {
    segment::segment_tcp(frame, kind, mss)
}

/// Where the TCP or UDP header of a frame is: what a checksum offload (virtio's
/// `csum_start`/`csum_offset`, Linux's `skb_checksum_setup`) and a GSO `hdr_len` need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Header {
    /// Offset of the TCP/UDP header from the start of the frame (`csum_start`).
    pub start: usize,
    /// Offset of the checksum field within that header: 16 for TCP, 6 for UDP (`csum_offset`).
    pub csum_offset: usize,
    /// Length of the L4 header: the TCP data offset, or 8 for UDP. `start + len` is the
    /// length of all headers (GSO `hdr_len`), within the IP datagram.
    pub len: usize,
    /// TCP (else UDP).
    pub tcp: bool,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

/// Locates the TCP or UDP header of `frame`, parsed as for [`fill_checksum`]; other L4
/// protocols give [`OffloadError::UnsupportedProtocol`].
pub fn locate_l4(frame: &[u8]) -> Result<L4Header, OffloadError> {
    let layout = headers::parse(frame)?;
    locate(frame, &layout)
}

/// As [`locate_l4`], for a frame of `frame_len` bytes of which only the first `head.len()`
/// are at hand (the rest still in the sender's memory): the IP length is checked against
/// `frame_len`, and the Ethernet, IP and TCP/UDP headers must all lie within `head`
/// (otherwise [`OffloadError::Parse`]; the caller then needs the whole frame).
pub fn locate_l4_in_head(head: &[u8], frame_len: usize) -> Result<L4Header, OffloadError> {
    if head.len() > frame_len {
        return Err(OffloadError::Parse("head longer than the frame"));
    }
    let layout = headers::parse_head(head, frame_len)?;
    // The L4 header checks below read up to its fixed part; it must be in the head.
    let fixed = match layout.proto {
        PROTO_TCP => headers::TCP_MIN_HLEN,
        PROTO_UDP => headers::UDP_HLEN,
        p => return Err(OffloadError::UnsupportedProtocol(p)),
    };
    if layout.l4_len() >= fixed && head.len() < layout.l4 + fixed {
        return Err(OffloadError::Parse("L4 header beyond the head"));
    }
    let l4 = locate(head, &layout)?;
    if l4.start + l4.len > head.len() {
        return Err(OffloadError::Parse("L4 header beyond the head"));
    }
    Ok(l4)
}

/// The L4 header of a parsed frame (whose L4 header, if the datagram holds it, is in `frame`).
fn locate(frame: &[u8], layout: &headers::Layout) -> Result<L4Header, OffloadError> {
    let csum_at = headers::checksum_offset(frame, layout)?;
    let tcp = layout.proto == PROTO_TCP;
    let len = if tcp { headers::tcp_header_len(frame, layout)? } else { headers::UDP_HLEN };
    let ipv6 = layout.version == IpVersion::V6;
    Ok(L4Header { start: layout.l4, csum_offset: csum_at - layout.l4, len, tcp, ipv6 })
}

/// As [`set_partial_checksum`], for a frame of `frame_len` bytes of which `head` holds the
/// first bytes, every header among them ([`locate_l4_in_head`]); only `head` is written.
pub fn set_partial_checksum_in_head(head: &mut [u8], frame_len: usize) -> Result<(), OffloadError> {
    let l4 = locate_l4_in_head(head, frame_len)?;
    let layout = headers::parse_head(head, frame_len)?;
    let partial = checksum::fold(checksum::pseudo_header(head, &layout, layout.l4_len()));
    let at = l4.start + l4.csum_offset;
    head[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    Ok(())
}

/// Writes the *partial* checksum of a TCP or UDP frame into its checksum field: the folded
/// pseudo-header sum, not complemented, as Linux leaves it under `CHECKSUM_PARTIAL`, so that
/// whoever completes it (sum from the L4 header to the end, store the complement) or
/// segments it gets the right checksum. What the field held is ignored.
pub fn set_partial_checksum(frame: &mut [u8]) -> Result<(), OffloadError> {
    let layout = headers::parse(frame)?;
    let at = headers::checksum_offset(frame, &layout)?;
    let partial = checksum::fold(checksum::pseudo_header(frame, &layout, layout.l4_len()));
    frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    Ok(())
}
