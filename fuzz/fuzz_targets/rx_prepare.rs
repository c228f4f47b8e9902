//! RX preparation of one frame from the uplink for a guest: GSO pass-through, software
//! segmentation, software checksum, size limits; arbitrary bytes, offload metadata and
//! frontend features.
//!
//! Input: features (u8 bits: sg, gso_tcpv4, gso_tcpv6, csum_offload, ipv6_csum_offload),
//! offload (u8 bits: csum_blank, data_validated, gso, v6 kind, fix lengths), GSO size
//! (u16), extra length (u16: zero bytes appended, to reach 64 KiB frames), then the frame.
//! With "fix lengths" the IPv4 total length or IPv6 payload length is set to cover the
//! frame, so big frames stay well-formed.
//!
//! Asserts: never panics; every frame produced is 14..=65535 bytes, one page unless the
//! guest has SG, takes at most 16 data slots (+1 for a GSO extra); a GSO extra goes only to
//! a guest with SG and that GSO type, with blank-checksum flags; a frame that had to be
//! segmented comes out as segments no longer than the original, each with a valid TCP
//! checksum (our own check, and etherparse's when it parses the frame); a checksum filled
//! in software verifies; a frame that produced nothing was counted as dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::frame::{Gso, GsoKind, Offload};
use netback::fuzzing::rx_prepare;
use netback::offload::l4_checksum_is_valid;
use netback::vif::{FrontendFeatures, VifCounters};
use netback_fuzz::{Input, etherparse_tcp_check};
use netif::abi::{NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let f = input.u8();
    let features = FrontendFeatures {
        sg: f & 1 != 0,
        gso_tcpv4: f & 2 != 0,
        gso_tcpv6: f & 4 != 0,
        csum_offload: f & 8 != 0,
        ipv6_csum_offload: f & 16 != 0,
        rx_notify: false,
    };
    let o = input.u8();
    let gso_size = input.u16();
    let extra = usize::from(input.u16());
    let kind = if o & 8 != 0 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
    let offload = Offload {
        csum_blank: o & 1 != 0,
        data_validated: o & 2 != 0,
        gso: (o & 4 != 0).then_some(Gso { kind, size: gso_size }),
    };
    let mut frame = input.rest().to_vec();
    frame.resize(frame.len() + extra, 0);
    if o & 16 != 0 {
        fix_lengths(&mut frame);
    }

    let counters = VifCounters::default();
    let out = rx_prepare(frame.clone(), offload, &features, &counters);
    let stats = counters.snapshot();
    if out.is_empty() {
        assert!(stats.rx_dropped_offload + stats.rx_dropped_too_big > 0, "a frame vanished uncounted");
    }
    let segmented = stats.sw_segmentations > 0;
    for r in &out {
        let len = r.data.len();
        assert!((14..=65535).contains(&len), "{len}-byte frame for the guest");
        assert!(features.sg || len <= 4096, "{len} bytes for a guest without SG");
        assert!(r.data_slots as usize == len.div_ceil(4096) && r.data_slots <= 16);
        assert_eq!(r.slots, r.data_slots + u32::from(r.gso.is_some()));
        assert!(r.slots <= 17);
        if let Some(gso) = r.gso {
            let allowed = match gso.kind {
                GsoKind::TcpV4 => features.gso_tcpv4,
                GsoKind::TcpV6 => features.gso_tcpv6,
            };
            assert!(features.sg && allowed, "GSO to a guest that did not ask for it");
            assert_eq!(r.flags, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
            assert_eq!(r.data, frame);
        }
        if segmented {
            assert!(r.gso.is_none() && len <= frame.len());
            assert_eq!(l4_checksum_is_valid(&r.data), Ok(true), "segment with a bad checksum");
            if let Some(check) = etherparse_tcp_check(&r.data, true) {
                check.unwrap_or_else(|e| panic!("segment: {e}"));
            }
        } else if r.gso.is_none() && offload.csum_blank && r.flags & NETRXF_CSUM_BLANK == 0 {
            // The checksum was filled in software.
            assert_eq!(r.flags, NETRXF_DATA_VALIDATED);
            assert_eq!(l4_checksum_is_valid(&r.data), Ok(true), "filled checksum does not verify");
        }
    }
    if !segmented {
        assert!(out.len() <= 1);
    }
});

/// Sets the IP length field to cover the whole frame (Ethernet, at most one 802.1Q tag).
fn fix_lengths(frame: &mut [u8]) {
    let mut l3 = 14;
    if frame.get(12..14) == Some(&[0x81, 0x00]) {
        l3 = 18;
    }
    let Some(ty) = frame.get(l3 - 2..l3) else { return };
    match [ty[0], ty[1]] {
        [0x08, 0x00] if frame.len() >= l3 + 20 => {
            let total = (frame.len() - l3).min(65535) as u16;
            frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        }
        [0x86, 0xdd] if frame.len() >= l3 + 40 => {
            let payload = (frame.len() - l3 - 40).min(65535) as u16;
            frame[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
        }
        _ => {}
    }
}
