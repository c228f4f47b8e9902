//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-headers.
//!
//! Sums are kept unfolded in a `u64` and folded to 16 bits only at the end: the
//! one's-complement sum of 16-bit words equals, modulo 0xffff, the plain sum of 32-bit
//! words (2^16 ≡ 1 mod 0xffff), so the data is read four bytes at a time and widened into
//! `u64` lanes with no per-word carry handling (a loop the compiler vectorises). Words are
//! read in native byte order and the folded result byte-swapped once (RFC 1071 §2(B):
//! the sum is byte-order independent), which saves a swap per word on little-endian.
//! Every slice summed must start at an even offset from the start of the checksummed
//! area, which holds for all callers (headers are multiples of 4 bytes).

use super::headers::{IpVersion, Layout};

/// Bytes summed between two folds of the accumulator: 2^14 words of < 2^32 each stay
/// below 2^46, so adding a block to a folded (< 2^33) accumulator never overflows.
const BLOCK: usize = 1 << 16;

/// One's-complement sum of `data` as big-endian 16-bit words, as a `u64` (at most 0xffff,
/// ready to be added to other sums); an odd trailing byte is the high byte of a word padded
/// with zero.
pub(super) fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    for block in data.chunks(BLOCK) {
        let words = block.chunks_exact(4);
        let rest = words.remainder();
        let mut s: u64 = words.map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).sum();
        if !rest.is_empty() {
            let mut tail = [0u8; 4];
            tail[..rest.len()].copy_from_slice(rest);
            s += u64::from(u32::from_ne_bytes(tail));
        }
        acc = fold32(acc) + s;
    }
    u64::from(u16::from_be_bytes(fold(acc).to_ne_bytes()))
}

/// Folds a sum to below 2^33 (same value modulo 0xffff).
fn fold32(x: u64) -> u64 {
    (x & 0xffff_ffff) + (x >> 32)
}

/// Folds an unfolded sum to 16 bits with end-around carry (the one's-complement sum).
pub(super) fn fold(x: u64) -> u16 {
    let mut x = fold32(fold32(x));
    while x > 0xffff {
        x = (x & 0xffff) + (x >> 16);
    }
    x as u16
}

/// Unfolded sum of the pseudo-header for the L4 segment of `layout`, of length `l4_len`.
/// IPv6 uses the destination of the fixed header (as Linux's `skb_checksum_setup` does;
/// a routing header's final destination is not substituted).
pub(super) fn pseudo_header(frame: &[u8], layout: &Layout, l4_len: usize) -> u64 {
    let addrs = match layout.version {
        // Source and destination: bytes 12..20 of the IPv4 header.
        IpVersion::V4 => &frame[layout.l3 + 12..layout.l3 + 20],
        // Source and destination: bytes 8..40 of the IPv6 header.
        IpVersion::V6 => &frame[layout.l3 + 8..layout.l3 + 40],
    };
    // The length is 16 bits (v4) or 32 bits (v6) wide; either way it adds as a number.
    sum(addrs) + u64::from(layout.proto) + l4_len as u64
}

/// The checksum (complemented fold) of pseudo-header plus `frame[layout.l4..layout.end]`,
/// whatever the checksum field in it holds; zero the field first to compute a fresh one.
pub(super) fn l4_checksum(frame: &[u8], layout: &Layout) -> u16 {
    let seg = &frame[layout.l4..layout.end];
    !fold(pseudo_header(frame, layout, seg.len()) + sum(seg))
}

/// The IPv4 header checksum for the header at `frame[l3..l4]` with its checksum field
/// (bytes 10..12) taken as zero.
pub(super) fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let stored = u64::from(u16::from_be_bytes([hdr[10], hdr[11]]));
    // Subtracting the stored field from the sum is the same as summing it as zero.
    !fold(sum(hdr) + (0xffff - stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-by-byte RFC 1071 reference.
    fn naive(data: &[u8]) -> u16 {
        let mut s = 0u32;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn wide_sum_matches_naive() {
        let data: Vec<u8> = (0..200_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 9, 1514, 65_535, 65_536, 65_537, 200_003] {
            let d = &data[..len];
            // 0 and 0xffff are the same one's-complement value.
            let (a, b) = (fold(sum(d)), naive(d));
            assert!(a == b || (a, b) == (0xffff, 0) || (a, b) == (0, 0xffff), "{len}");
        }
        assert_eq!(fold(sum(&[0xff; 65_536])), 0xffff);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }
}
