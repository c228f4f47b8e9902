//! The software offloads (`netback::offload`) on arbitrary frames: `locate_l4`,
//! `locate_l4_in_head`, `fill_checksum`, `l4_checksum_is_valid`, `set_partial_checksum`
//! (and its head-only twin), `segment_tcp`.
//!
//! Input: kind (u8 bit 0: TCPv6), MSS (u16), head cut (u16), then the frame.
//!
//! Asserts: never panics; a located L4 header lies in the frame; with only a head at hand
//! the answer is the whole frame's whenever the head holds the headers; a filled checksum
//! verifies (ours and etherparse's); a partial checksum completed as Linux completes
//! `CHECKSUM_PARTIAL` gives the filled one; the head-only partial checksum writes the same
//! bytes; segments carry at most MSS payload bytes, reassemble the original payload with
//! consecutive sequence numbers, and verify (ours and etherparse's, IPv4 header included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::frame::GsoKind;
use netback::offload::{
    fill_checksum, l4_checksum_is_valid, locate_l4, locate_l4_in_head, segment_tcp, set_partial_checksum,
    set_partial_checksum_in_head,
};
use netback_fuzz::{Input, etherparse_tcp_check, ones_complement_sum};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let kind = if input.u8() & 1 != 0 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
    let mss = input.u16();
    let cut = usize::from(input.u16());
    let frame = input.rest();

    let whole = locate_l4(frame);
    let valid = l4_checksum_is_valid(frame);
    assert_eq!(whole.is_ok(), valid.is_ok(), "{whole:?} against {valid:?}");
    if let Ok(l4) = &whole {
        assert!(l4.start >= 14 && l4.start + l4.len <= frame.len());
        assert!(l4.len >= if l4.tcp { 20 } else { 8 });
        assert_eq!(l4.csum_offset, if l4.tcp { 16 } else { 6 });
    }
    let h = cut % (frame.len() + 1);
    let head = locate_l4_in_head(&frame[..h], frame.len());
    match (&whole, &head) {
        (Ok(w), Ok(got)) => assert_eq!(w, got),
        (Ok(w), Err(_)) => assert!(h < w.start + w.len, "refused although the head holds the headers"),
        (Err(_), Ok(got)) => panic!("found {got:?} in the head of a frame that has none"),
        (Err(_), Err(_)) => {}
    }

    let mut filled = frame.to_vec();
    let fill = fill_checksum(&mut filled);
    assert_eq!(fill.is_ok(), whole.is_ok());
    if let Ok(l4) = whole {
        assert_eq!(l4_checksum_is_valid(&filled), Ok(true));
        assert_eq!(filled[..l4.start + l4.csum_offset], frame[..l4.start + l4.csum_offset]);
        assert_eq!(filled[l4.start + l4.csum_offset + 2..], frame[l4.start + l4.csum_offset + 2..]);
        if let Some(check) = etherparse_tcp_check(&filled, false).filter(|_| l4.tcp) {
            check.unwrap_or_else(|e| panic!("filled: {e}"));
        }
        // CHECKSUM_PARTIAL completed as Linux does: sum from the L4 header to the end of
        // the datagram, field included, and store the complement.
        let mut partial = frame.to_vec();
        set_partial_checksum(&mut partial).expect("parsed once already");
        let at = l4.start + l4.csum_offset;
        let end = ip_end(frame, l4.start, l4.ipv6);
        let mut done = partial.clone();
        let mut c = !ones_complement_sum(&done[l4.start..end]);
        if !l4.tcp && c == 0 {
            c = 0xffff;
        }
        done[at..at + 2].copy_from_slice(&c.to_be_bytes());
        assert_eq!(done, filled, "partial checksum completed differs from the filled one");
        if head.is_ok() {
            let mut part = frame[..h].to_vec();
            set_partial_checksum_in_head(&mut part, frame.len()).expect("head holds the headers");
            assert_eq!(part[..], partial[..h]);
        }
    }

    if let Ok(segments) = segment_tcp(frame, kind, mss) {
        let l4 = whole.expect("a segmented frame parses");
        assert!(l4.tcp && l4.ipv6 == (kind == GsoKind::TcpV6));
        let hdr = l4.start + l4.len;
        let end = ip_end(frame, l4.start, l4.ipv6);
        let payload = &frame[hdr..end];
        assert_eq!(segments.len(), payload.len().div_ceil(usize::from(mss)).max(1));
        let seq0 = u32::from_be_bytes(frame[l4.start + 4..l4.start + 8].try_into().expect("4 bytes"));
        let mut joined = Vec::with_capacity(payload.len());
        for seg in &segments {
            assert!(seg.len() >= hdr && seg.len() - hdr <= usize::from(mss));
            let seq = u32::from_be_bytes(seg[l4.start + 4..l4.start + 8].try_into().expect("4 bytes"));
            assert_eq!(seq, seq0.wrapping_add(joined.len() as u32));
            assert_eq!(l4_checksum_is_valid(seg), Ok(true));
            if let Some(check) = etherparse_tcp_check(seg, true) {
                check.unwrap_or_else(|e| panic!("segment: {e}"));
            }
            joined.extend_from_slice(&seg[hdr..]);
        }
        assert_eq!(joined, payload, "segments reassemble the payload");
    }
});

/// End of the IP datagram whose L4 header starts at `l4` (the frame parsed).
fn ip_end(frame: &[u8], l4: usize, ipv6: bool) -> usize {
    let l3 = if frame[12..14] == [0x81, 0x00] { 18 } else { 14 };
    let be = |at: usize| usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    let end = if ipv6 { l3 + 40 + be(l3 + 4) } else { l3 + be(l3 + 2) };
    assert!(end >= l4 && end <= frame.len());
    end
}
