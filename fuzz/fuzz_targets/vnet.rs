//! The `virtio_net_hdr` decode (`netback::tap::vnet::decode`): what the host's kernel hands
//! us with a frame read from a TAP, then the header we would write back for that offload.
//!
//! Input: the 12 header bytes, a head cut (u16), then the frame.
//!
//! Asserts: never panics; a decoded GSO has a non-zero size and sits on TCP of its IP
//! version; a decoded checksum request points at the frame's own TCP/UDP checksum; an
//! offload we decoded encodes again (whole frame, and from a head holding the headers) to
//! a header that decodes to the same offload (a GSO one with its checksum marked partial).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::frame::GsoKind;
use netback::offload::locate_l4;
use netback::tap::vnet::{VNET_HDR_LEN, VnetHeader, decode, encode, encode_head};
use netback_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut raw = [0u8; VNET_HDR_LEN];
    raw.copy_from_slice(&{
        let mut b = input.bytes(VNET_HDR_LEN).to_vec();
        b.resize(VNET_HDR_LEN, 0);
        b
    });
    let cut = usize::from(input.u16());
    let frame = input.rest();
    let hdr = VnetHeader::from_bytes(&raw);
    assert_eq!(VnetHeader::from_bytes(&hdr.to_bytes()), hdr);
    let Ok(offload) = decode(&hdr, frame) else { return };
    if let Some(gso) = offload.gso {
        let l4 = locate_l4(frame).expect("GSO accepted on a frame without L4 header");
        assert!(gso.size > 0 && l4.tcp && l4.ipv6 == (gso.kind == GsoKind::TcpV6));
    }
    if offload.csum_blank {
        let l4 = locate_l4(frame).expect("checksum offload accepted on a frame without L4 header");
        assert_eq!((usize::from(hdr.csum_start), usize::from(hdr.csum_offset)), (l4.start, l4.csum_offset));
        assert!(offload.data_validated);
    }
    let again = encode(&offload, frame).expect("a decoded offload encodes");
    // A GSO frame is always written with NEEDS_CSUM (its checksum is partial).
    let mut want = offload;
    if want.gso.is_some() {
        (want.csum_blank, want.data_validated) = (true, true);
    }
    assert_eq!(decode(&again, frame), Ok(want), "{hdr:?} -> {offload:?} -> {again:?}");
    if let Ok(l4) = locate_l4(frame) {
        let h = (cut % (frame.len() + 1)).max(l4.start + l4.len);
        assert_eq!(encode_head(&offload, &frame[..h], frame.len()), Ok(again));
    }
});
