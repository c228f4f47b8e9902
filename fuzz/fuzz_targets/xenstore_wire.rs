//! The xenstore wire decoders (`xenstore::wire`): framing a byte stream into messages,
//! decoding one message, and the payload parsers (string lists, one argument, path and
//! value, permission strings, errno names).
//!
//! Asserts: never panics; a frame consumes its header plus exactly its announced length,
//! which never exceeds the protocol limit; a decoded message re-encodes to the same bytes;
//! parsed strings re-join to the payload; parsed permissions re-encode to what was parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore::XsErrno;
use xenstore::wire::{
    self, HEADER_LEN, Message, XENSTORE_PAYLOAD_MAX, decode_frame, join_strings, parse_one, parse_strings,
    split_path_value,
};

fuzz_target!(|data: &[u8]| {
    // A stream of frames, as a connection reads it.
    let mut rest = data;
    while let Ok(Some((raw, used))) = decode_frame(rest) {
        assert_eq!(used, HEADER_LEN + raw.payload.len());
        assert_eq!(raw.header.len as usize, raw.payload.len());
        assert!(raw.payload.len() <= XENSTORE_PAYLOAD_MAX);
        rest = &rest[used..];
    }
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode().expect("a decoded message encodes"), data);
    }
    // Payload parsers, on the input taken as a payload.
    if let Ok(items) = parse_strings(data) {
        assert_eq!(join_strings(&items), data);
        if let Ok(perms) = wire::parse_perms(items.iter().copied()) {
            let again = wire::perms_to_payload(&perms);
            let parsed = parse_strings(&again).expect("encoded perms are strings");
            assert_eq!(wire::parse_perms(parsed).expect("encoded perms parse"), perms);
        }
    }
    if let Ok(one) = parse_one(data) {
        assert_eq!(join_strings(&[one]), data);
    }
    if let Ok((path, value)) = split_path_value(data) {
        assert_eq!(wire::path_value_payload(path, value), data);
    }
    let errno = XsErrno::from_payload(data);
    assert_eq!(XsErrno::from_payload(&errno.to_payload()), errno);
});
