//! TCP segmentation (TSO in software): one GSO super-frame in, finished frames out.
//!
//! Every output frame is `frame[..l4 + tcp_hlen]` (Ethernet, VLAN tag, IP header with
//! options or IPv6 extension headers, TCP header with options) followed by at most `mss`
//! payload bytes; Ethernet padding after the IP datagram is not copied. Segment `i`
//! carries payload bytes `i * mss ..`, so its sequence number is the original plus
//! `i * mss` (mod 2^32) and, for IPv4, its identification the original plus `i`
//! (mod 2^16).

use super::OffloadError;
use super::checksum;
use super::headers::{self, IpVersion, Layout, PROTO_TCP};
use crate::frame::GsoKind;

// TCP flag bits (byte 13 of the TCP header).
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const URG: u8 = 0x20;
const CWR: u8 = 0x80;

pub(super) fn segment_tcp(frame: &[u8], kind: GsoKind, mss: u16) -> Result<Vec<Vec<u8>>, OffloadError> {
    if mss == 0 {
        return Err(OffloadError::Segment("MSS of zero"));
    }
    let layout = headers::parse(frame)?;
    let want = match kind {
        GsoKind::TcpV4 => IpVersion::V4,
        GsoKind::TcpV6 => IpVersion::V6,
    };
    if layout.version != want {
        return Err(OffloadError::Segment("GSO kind does not match the IP version"));
    }
    if layout.proto != PROTO_TCP {
        return Err(OffloadError::Segment("not a TCP frame"));
    }
    let hdr_end = layout.l4 + headers::tcp_header_len(frame, &layout)?;
    let (hdrs, payload) = (&frame[..hdr_end], &frame[hdr_end..layout.end]);
    let mss = usize::from(mss);
    // An empty payload still yields one (header-only) frame.
    let count = payload.len().div_ceil(mss).max(1);
    let seq0 = u32::from_be_bytes(read4(frame, layout.l4 + 4));
    let id0 = u16::from_be_bytes([frame[layout.l3 + 4], frame[layout.l3 + 5]]);

    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let start = i * mss;
        let chunk = &payload[start..payload.len().min(start + mss)];
        let mut seg = Vec::with_capacity(hdr_end + chunk.len());
        seg.extend_from_slice(hdrs);
        seg.extend_from_slice(chunk);
        let lay = Layout { end: seg.len(), ..layout };
        // Segments are never longer than the original datagram, whose length fit 16 bits.
        match lay.version {
            IpVersion::V4 => {
                let ip = &mut seg[lay.l3..lay.l4];
                let total = (lay.end - lay.l3) as u16;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
                let c = checksum::ipv4_header_checksum(ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            IpVersion::V6 => {
                let plen = (lay.end - lay.l3 - 40) as u16;
                seg[lay.l3 + 4..lay.l3 + 6].copy_from_slice(&plen.to_be_bytes());
            }
        }
        let tcp = &mut seg[lay.l4..hdr_end];
        // start < 65536, so the cast is exact; the addition wraps as sequence numbers do.
        tcp[4..8].copy_from_slice(&seq0.wrapping_add(start as u32).to_be_bytes());
        if i != 0 {
            tcp[13] &= !(CWR | URG);
            tcp[18..20].fill(0);
        }
        if i + 1 != count {
            tcp[13] &= !(FIN | PSH);
        }
        tcp[16..18].fill(0);
        let c = checksum::l4_checksum(&seg, &lay);
        seg[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&c.to_be_bytes());
        out.push(seg);
    }
    Ok(out)
}

fn read4(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}
