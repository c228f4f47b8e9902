//! TCP mode of a peer run: one IPv4 TCP stream per sender, built with [`crate::tcp`].
//!
//! Each "frame" of the configured size becomes `size − 54` bytes of TCP payload
//! ([`V4_HEADERS`]): one segment when the frame fits a 1500-byte MTU (≤ 1514 bytes), else
//! one GSO super-frame (`TcpV4`, MSS [`MSS`]) when GSO is used, else (what a guest kernel
//! without GSO does) segments of at most [`MSS`] payload bytes. The payload byte at stream
//! offset `o` is `PATTERN[o % 251]`, so the receiver verifies the content from the
//! sequence number alone. Checksums are blank (`csum_blank`) when checksum offload is in
//! effect, complete otherwise.

use crate::mac::Mac;
use crate::tcp::{V4_HEADERS, build_tcp_frame, build_tcp_frame_blank_checksum, parse_tcp_frame};
use crate::{GsoKind, RxMeta, TxMeta};
use serde::{Deserialize, Serialize};

/// The MSS of a 1500-byte MTU with a 20-byte TCP header and 12 bytes of timestamps.
pub const MSS: usize = 1448;
/// The largest frame sent as a single segment (a 1500-byte MTU).
pub const MTU_FRAME: usize = 1514;
/// Period of the payload pattern (a prime, so it does not line up with segment sizes).
const PERIOD: usize = 251;

/// TCP mode of [`PeerConfig`](super::PeerConfig).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpMode {
    /// Send frames over [`MTU_FRAME`] as GSO super-frames (needs `gso_tcpv4` in effect).
    pub gso: bool,
}

/// The pattern, repeated so that any payload of up to 64 KiB is one slice of it.
fn pattern() -> Vec<u8> {
    (0..65536 + PERIOD).map(|i| ((i % PERIOD) as u8).wrapping_mul(167).wrapping_add(13)).collect()
}

/// The payload at stream offset `seq` of `len` bytes, as a slice of `pattern`.
fn expected(pattern: &[u8], seq: u32, len: usize) -> &[u8] {
    let start = (seq as usize) % PERIOD;
    &pattern[start..start + len]
}

/// Builds the sender's frames.
#[derive(Debug, Clone)]
pub struct TcpSender {
    src: Mac,
    dst: Mac,
    gso: bool,
    blank: bool,
    seq: u32,
    pattern: Vec<u8>,
    /// Payload bytes built so far.
    pub payload_bytes: u64,
}

impl TcpSender {
    /// A sender from `src` to `dst`, starting at sequence number 0. `gso`: use GSO
    /// super-frames; `blank`: leave checksums blank (checksum offload in effect).
    pub fn new(src: Mac, dst: Mac, gso: bool, blank: bool) -> Self {
        Self { src, dst, gso, blank, seq: 0, pattern: pattern(), payload_bytes: 0 }
    }

    /// The frames (with their TX metadata) that carry one "frame" of `size` bytes.
    ///
    /// # Panics
    /// If `size` is not within `V4_HEADERS + 1 ..= 65535`.
    pub fn frames(&mut self, size: usize) -> Vec<(Vec<u8>, TxMeta)> {
        assert!(size > V4_HEADERS && size <= 65535, "TCP frame size {size}");
        let payload = size - V4_HEADERS;
        let chunk = if size <= MTU_FRAME || self.gso { payload } else { MSS };
        let mut out = Vec::with_capacity(payload.div_ceil(chunk));
        let mut left = payload;
        while left > 0 {
            let len = left.min(chunk);
            let data = expected(&self.pattern, self.seq, len);
            let frame = if self.blank {
                build_tcp_frame_blank_checksum(self.src, self.dst, false, self.seq, data)
            } else {
                build_tcp_frame(self.src, self.dst, false, self.seq, data)
            };
            let gso = (len > MSS && frame.len() > MTU_FRAME).then_some((GsoKind::TcpV4, MSS as u16));
            out.push((frame, TxMeta { csum_blank: self.blank, data_validated: false, gso }));
            self.seq = self.seq.wrapping_add(len as u32);
            self.payload_bytes += len as u64;
            left -= len;
        }
        out
    }
}

/// What a TCP receiver counted (and, for the sender, what it sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounts {
    /// TCP payload bytes we sent.
    pub sent_bytes: u64,
    /// In-order TCP payload bytes received from the peer (verified).
    pub received_bytes: u64,
    /// Payload bytes skipped by gaps in the sequence numbers (tail loss is not visible
    /// here: compare with the sender's `sent_bytes`).
    pub lost_bytes: u64,
    /// TCP frames received (segments or super-frames), valid or not.
    pub received_frames: u64,
    /// Whole-frame bytes of those frames.
    pub received_frame_bytes: u64,
    /// Frames with a bad checksum or payload.
    pub corrupt: u64,
    /// Valid frames behind the expected sequence number (duplicates or late ones).
    pub late: u64,
}

/// Verifies and counts the peer's stream.
#[derive(Debug, Clone)]
pub struct TcpReceiver {
    next: u32,
    pattern: Vec<u8>,
    counts: TcpCounts,
}

impl Default for TcpReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpReceiver {
    /// A receiver expecting sequence number 0 first.
    pub fn new() -> Self {
        Self { next: 0, pattern: pattern(), counts: TcpCounts::default() }
    }

    /// Takes one received frame; `false` if it is not TCP (left to the caller).
    pub fn receive(&mut self, frame: &[u8], meta: &RxMeta) -> bool {
        let Some(seg) = parse_tcp_frame(frame) else { return false };
        let c = &mut self.counts;
        c.received_frames += 1;
        c.received_frame_bytes += frame.len() as u64;
        let checksum = seg.checksum_ok || (meta.csum_blank && seg.checksum_partial);
        if seg.v6
            || !checksum
            || seg.payload.len() > 65535
            || seg.payload != expected(&self.pattern, seg.seq, seg.payload.len())
        {
            c.corrupt += 1;
            return true;
        }
        let ahead = seg.seq.wrapping_sub(self.next);
        if ahead >= 1 << 31 {
            c.late += 1;
            return true;
        }
        c.lost_bytes += u64::from(ahead);
        c.received_bytes += seg.payload.len() as u64;
        self.next = seg.seq.wrapping_add(seg.payload.len() as u32);
        true
    }

    /// The counts so far.
    pub fn counts(&self) -> TcpCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];

    #[test]
    fn segments_without_gso_one_super_frame_with_it() {
        let mut s = TcpSender::new(A, B, false, false);
        let f = s.frames(65000);
        assert_eq!(f.len(), (65000 - 54usize).div_ceil(MSS));
        assert!(f.iter().all(|(fr, m)| fr.len() <= MSS + 54 && m.gso.is_none() && !m.csum_blank));
        let mut g = TcpSender::new(A, B, true, true);
        let f = g.frames(65000);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0.len(), 65000);
        assert_eq!(f[0].1.gso, Some((GsoKind::TcpV4, MSS as u16)));
        assert!(f[0].1.csum_blank);
        let small = g.frames(1514);
        assert_eq!((small.len(), small[0].0.len(), small[0].1.gso), (1, 1514, None));
    }

    #[test]
    fn receiver_counts_bytes_gaps_late_and_corruption() {
        let mut s = TcpSender::new(A, B, false, false);
        let mut r = TcpReceiver::new();
        let frames: Vec<_> = (0..4).flat_map(|_| s.frames(3000)).collect();
        let meta = RxMeta::default();
        for (i, (f, _)) in frames.iter().enumerate() {
            if i != 2 {
                assert!(r.receive(f, &meta));
            }
        }
        assert!(r.receive(&frames[2].0, &meta)); // late
        let mut bad = frames[1].0.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(r.receive(&bad, &meta));
        assert!(!r.receive(&[0u8; 60], &meta));
        let c = r.counts();
        let gap = frames[2].0.len() as u64 - 54;
        assert_eq!(c.received_bytes, s.payload_bytes - gap);
        assert_eq!((c.lost_bytes, c.late, c.corrupt, c.received_frames), (gap, 1, 1, frames.len() as u64 + 1));
        // Blank checksums pass only when the frame says so.
        let mut b = TcpSender::new(A, B, false, true);
        let mut r = TcpReceiver::new();
        let f = b.frames(1000);
        r.receive(&f[0].0, &RxMeta::default());
        r.receive(&f[0].0, &RxMeta { csum_blank: true, ..RxMeta::default() });
        assert_eq!((r.counts().corrupt, r.counts().received_bytes), (1, 1000 - 54));
    }
}
