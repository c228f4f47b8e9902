//! Header parsing for the software offloads: where the IP and L4 headers of an Ethernet
//! frame are, checked so that every offset returned is in bounds.
//!
//! Invariant of a returned [`Layout`]: `l3 < l4 <= end <= frame.len()`, the IP header at
//! `l3` is complete (20 bytes + options for IPv4, 40 bytes for IPv6), and every IPv6
//! extension header walked lies in `l3 + 40 .. l4`. Nothing past `end` (Ethernet padding)
//! belongs to the datagram.

use super::OffloadError;

const ETH_HLEN: usize = 14;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// IP protocol numbers.
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;

/// TCP header bounds.
pub(super) const TCP_MIN_HLEN: usize = 20;
pub(super) const UDP_HLEN: usize = 8;

/// Which IP version the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpVersion {
    V4,
    V6,
}

/// Offsets of the headers of one frame (see the module invariant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub version: IpVersion,
    /// Start of the IP header.
    pub l3: usize,
    /// Start of the L4 (TCP/UDP/other) header.
    pub l4: usize,
    /// End of the IP datagram (from the IP length field); `frame[end..]` is padding.
    pub end: usize,
    /// The L4 protocol (IPv4 protocol, or the last IPv6 next-header walked).
    pub proto: u8,
}

impl Layout {
    /// Length of the L4 segment (header and payload) as the IP header gives it.
    pub fn l4_len(&self) -> usize {
        self.end - self.l4
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, OffloadError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(OffloadError::Parse("frame truncated")),
    }
}

/// Parses Ethernet (with at most one 802.1Q tag) and the IP header(s). IPv4 fragments and
/// IPv6 fragment headers are rejected: one fragment cannot be checksummed or segmented.
pub(super) fn parse(frame: &[u8]) -> Result<Layout, OffloadError> {
    parse_head(frame, frame.len())
}

/// As [`parse`], for the first `head.len()` bytes of a frame of `frame_len` bytes: the IP
/// length is checked against `frame_len`, and every header byte read must lie in `head`.
/// The returned layout keeps the module invariant with `frame_len` in place of
/// `frame.len()`: its `end` may lie beyond `head`, so only headers may be read through it.
pub(super) fn parse_head(frame: &[u8], frame_len: usize) -> Result<Layout, OffloadError> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(frame, 12)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16)?;
        l3 += 4;
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            return Err(OffloadError::Parse("more than one VLAN tag"));
        }
    }
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(frame, l3, frame_len),
        ETHERTYPE_IPV6 => parse_ipv6(frame, l3, frame_len),
        _ => Err(OffloadError::Parse("not IPv4 or IPv6")),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize, frame_len: usize) -> Result<Layout, OffloadError> {
    let ip = frame.get(l3..l3 + 20).ok_or(OffloadError::Parse("IPv4 header truncated"))?;
    if ip[0] >> 4 != 4 {
        return Err(OffloadError::Parse("IPv4 version field is not 4"));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(OffloadError::Parse("IPv4 IHL below 5"));
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < ihl {
        return Err(OffloadError::Parse("IPv4 total length below the header length"));
    }
    let end = l3 + total;
    if end > frame_len {
        return Err(OffloadError::Parse("IPv4 total length exceeds the frame"));
    }
    // More-fragments flag or a non-zero fragment offset.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(OffloadError::Parse("IPv4 fragment"));
    }
    Ok(Layout { version: IpVersion::V4, l3, l4: l3 + ihl, end, proto: ip[9] })
}

fn parse_ipv6(frame: &[u8], l3: usize, frame_len: usize) -> Result<Layout, OffloadError> {
    let ip = frame.get(l3..l3 + 40).ok_or(OffloadError::Parse("IPv6 header truncated"))?;
    if ip[0] >> 4 != 6 {
        return Err(OffloadError::Parse("IPv6 version field is not 6"));
    }
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if payload == 0 {
        // Zero means a jumbogram (or nothing to do); neither is supported.
        return Err(OffloadError::Parse("IPv6 payload length is zero"));
    }
    let end = l3 + 40 + payload;
    if end > frame_len {
        return Err(OffloadError::Parse("IPv6 payload length exceeds the frame"));
    }
    let mut next = ip[6];
    let mut at = l3 + 40;
    // Each extension header is at least 8 bytes, so the walk advances and ends.
    loop {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let h = frame
                    .get(at..at + 2)
                    .filter(|_| at + 2 <= end)
                    .ok_or(OffloadError::Parse("IPv6 extension header truncated"))?;
                let len = (usize::from(h[1]) + 1) * 8;
                if at + len > end {
                    return Err(OffloadError::Parse("IPv6 extension header truncated"));
                }
                next = h[0];
                at += len;
            }
            IPV6_FRAGMENT => return Err(OffloadError::Parse("IPv6 fragment header")),
            _ => break,
        }
    }
    Ok(Layout { version: IpVersion::V6, l3, l4: at, end, proto: next })
}

/// The TCP header length (data offset) of the segment at `layout.l4`, checked to be at
/// least 20 bytes and to fit in the datagram.
pub(super) fn tcp_header_len(frame: &[u8], layout: &Layout) -> Result<usize, OffloadError> {
    if layout.l4_len() < TCP_MIN_HLEN {
        return Err(OffloadError::Parse("TCP header truncated"));
    }
    let hlen = usize::from(frame[layout.l4 + 12] >> 4) * 4;
    if hlen < TCP_MIN_HLEN {
        return Err(OffloadError::Parse("TCP data offset below 5"));
    }
    if hlen > layout.l4_len() {
        return Err(OffloadError::Parse("TCP header exceeds the datagram"));
    }
    Ok(hlen)
}

/// Offset of the L4 checksum field in `frame` for TCP or UDP, checking that the L4 header
/// is complete. Other protocols: [`OffloadError::UnsupportedProtocol`].
pub(super) fn checksum_offset(frame: &[u8], layout: &Layout) -> Result<usize, OffloadError> {
    match layout.proto {
        PROTO_TCP => tcp_header_len(frame, layout).map(|_| layout.l4 + 16),
        PROTO_UDP if layout.l4_len() >= UDP_HLEN => Ok(layout.l4 + 6),
        PROTO_UDP => Err(OffloadError::Parse("UDP header truncated")),
        p => Err(OffloadError::UnsupportedProtocol(p)),
    }
}
