//! Wire encoding: round trips, rejection of malformed input, totality.

use proptest::prelude::*;
use xenstore::wire::{
    self, HEADER_LEN, Header, KNOWN_ERRNOS, Message, MsgType, RawMessage, WireError, XENSTORE_PAYLOAD_MAX, decode_frame,
};
use xenstore::{Access, Perm, XsErrno};

#[test]
fn message_round_trip_every_type() {
    for (i, ty) in MsgType::ALL.iter().enumerate() {
        let m = Message::new(*ty, i as u32 + 7, 3, wire::join_strings(&["/local/domain/1", "tok"]));
        let bytes = m.encode().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + m.payload.len());
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }
}

#[test]
fn header_is_native_endian_u32s() {
    let h = Header { msg_type: 2, req_id: 0x01020304, tx_id: 9, len: 5 };
    let raw = h.encode();
    assert_eq!(&raw[0..4], &2u32.to_ne_bytes());
    assert_eq!(&raw[4..8], &0x01020304u32.to_ne_bytes());
    assert_eq!(&raw[12..16], &5u32.to_ne_bytes());
    assert_eq!(Header::decode(&raw), h);
}

#[test]
fn rejects_malformed() {
    // Oversized payload, both when encoding and when framing.
    let big = Message::new(MsgType::Write, 1, 0, vec![b'a'; XENSTORE_PAYLOAD_MAX + 1]);
    assert_eq!(big.encode(), Err(WireError::PayloadTooLarge { len: XENSTORE_PAYLOAD_MAX + 1 }));
    let h = Header { msg_type: 2, req_id: 1, tx_id: 0, len: 5000 }.encode();
    assert_eq!(decode_frame(&h), Err(WireError::PayloadTooLarge { len: 5000 }));
    // Exactly the maximum is fine.
    let max = Message::new(MsgType::Write, 1, 0, vec![b'a'; XENSTORE_PAYLOAD_MAX]);
    assert!(Message::decode(&max.encode().unwrap()).is_ok());
    // Unknown type: frameable, but not a Message.
    let unknown = Header { msg_type: 99, req_id: 1, tx_id: 0, len: 0 }.encode();
    let (raw, used) = decode_frame(&unknown).unwrap().unwrap();
    assert_eq!(used, HEADER_LEN);
    assert_eq!(Message::try_from(raw), Err(WireError::UnknownType(99)));
    assert_eq!(MsgType::from_u32(20), Some(MsgType::Restrict));
    // Truncation and trailing bytes.
    let ok = Message::new(MsgType::Read, 1, 0, b"/a\0".to_vec()).encode().unwrap();
    assert!(matches!(Message::decode(&ok[..10]), Err(WireError::Truncated { .. })));
    assert!(matches!(Message::decode(&ok[..ok.len() - 1]), Err(WireError::Truncated { .. })));
    assert_eq!(decode_frame(&ok[..ok.len() - 1]), Ok(None));
    let mut extra = ok.clone();
    extra.push(0);
    assert_eq!(Message::decode(&extra), Err(WireError::TrailingBytes { extra: 1 }));
    // String payload rules.
    assert_eq!(wire::parse_one(b"/a"), Err(WireError::MissingNul));
    assert_eq!(wire::parse_one(b"\xc3\x28\0"), Err(WireError::NotUtf8));
    assert_eq!(wire::parse_one(b"a\0b\0"), Err(WireError::ArgCount { expected: 1, got: 2 }));
    assert_eq!(wire::split_path_value(b"/no-nul"), Err(WireError::MissingNul));
    assert_eq!(wire::check_no_nul("a\0b"), Err(WireError::EmbeddedNul));
}

#[test]
fn two_messages_in_one_buffer() {
    let mut buf = Message::new(MsgType::Read, 1, 0, b"/a\0".to_vec()).encode().unwrap();
    buf.extend(Message::new(MsgType::WatchEvent, 0, 0, wire::join_strings(&["/a", "t"])).encode().unwrap());
    let (first, used) = decode_frame(&buf).unwrap().unwrap();
    assert_eq!(first.header.req_id, 1);
    let (second, used2) = decode_frame(&buf[used..]).unwrap().unwrap();
    assert_eq!(second.header.msg_type, MsgType::WatchEvent.as_u32());
    assert_eq!(used + used2, buf.len());
}

#[test]
fn errno_names() {
    for e in KNOWN_ERRNOS {
        assert_eq!(XsErrno::from_payload(&e.to_payload()), e);
    }
    assert_eq!(XsErrno::from_payload(b"ENOENT\0"), XsErrno::Enoent);
    assert_eq!(XsErrno::from_payload(b"EQUOTA\0"), XsErrno::Other("EQUOTA".into()));
    assert_eq!(XsErrno::Eagain.to_string(), "EAGAIN");
}

#[test]
fn perm_strings() {
    assert_eq!("n0".parse::<Perm>().unwrap(), Perm::new(0, Access::None));
    assert_eq!("r1".parse::<Perm>().unwrap(), Perm::new(1, Access::Read));
    assert_eq!("w2".parse::<Perm>().unwrap(), Perm::new(2, Access::Write));
    assert_eq!("b3".parse::<Perm>().unwrap(), Perm::new(3, Access::Both));
    assert_eq!(Perm::new(65535, Access::Both).to_string(), "b65535");
    for bad in ["", "x1", "b", "b-1", "b65536", "b1 ", "B1", "b+1"] {
        assert!(bad.parse::<Perm>().is_err(), "{bad:?}");
    }
    let list = [Perm::new(5, Access::None), Perm::new(0, Access::Read)];
    assert_eq!(wire::perms_to_payload(&list), b"n5\0r0\0");
}

fn any_access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::None), Just(Access::Read), Just(Access::Write), Just(Access::Both)]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_frame(&bytes);
        let _ = Message::decode(&bytes);
        let _ = wire::parse_strings(&bytes);
        let _ = wire::parse_one(&bytes);
        let _ = wire::split_path_value(&bytes);
        let _ = XsErrno::from_payload(&bytes);
        let _ = std::str::from_utf8(&bytes).map(|s| s.parse::<Perm>());
    }

    #[test]
    fn decoding_arbitrary_framed_messages_never_panics(
        ty in any::<u32>(), req in any::<u32>(), tx in any::<u32>(), len in 0u32..=8192,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = Header { msg_type: ty, req_id: req, tx_id: tx, len }.encode().to_vec();
        bytes.extend(body);
        match decode_frame(&bytes) {
            Ok(Some((RawMessage { header, payload }, used))) => {
                prop_assert_eq!(header.len as usize, payload.len());
                prop_assert!(used <= bytes.len());
            }
            Ok(None) => prop_assert!(bytes.len() < HEADER_LEN + len as usize),
            Err(e) => prop_assert_eq!(e, WireError::PayloadTooLarge { len: len as usize }),
        }
    }

    #[test]
    fn message_round_trips(
        idx in 0usize..MsgType::ALL.len(), req in any::<u32>(), tx in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=XENSTORE_PAYLOAD_MAX),
    ) {
        let m = Message::new(MsgType::ALL[idx], req, tx, payload);
        prop_assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn strings_round_trip(items in proptest::collection::vec("[a-zA-Z0-9/_@-]{0,12}", 0..8)) {
        let payload = wire::join_strings(&items);
        let parsed = wire::parse_strings(&payload).unwrap();
        prop_assert_eq!(parsed, items.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn perms_round_trip(domid in any::<u16>(), access in any_access()) {
        let p = Perm::new(domid, access);
        prop_assert_eq!(p.to_string().parse::<Perm>().unwrap(), p);
    }
}
