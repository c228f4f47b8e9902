//! The embedded xenstored's request handling, in process: a sequence of requests on four
//! connections (dom0, two of domain 1, domain 2), some framed from raw bytes as the
//! connection reader frames them, with transaction ids the daemon handed out, and domains
//! introduced and released in between.
//!
//! Input, repeated: an op byte (bits 0-1: connection; bits 5-7: 7 = raw bytes (u8 length)
//! fed to the framer, 6 = introduce or release the domain in the next byte, otherwise a
//! request whose payload length is a u16 with bit 4 and a u8 without), then for a request:
//! type (u8: 0..=26, or `XS_INVALID`/an unknown number), transaction (u8: 0 none, 1..=8 a
//! transaction id handed out earlier, else the u32 that follows), request id (u8), payload.
//!
//! Asserts: never panics; every request on an open connection gets exactly one reply
//! first, echoing its request id and transaction id, of its own type or `XS_ERROR` with a
//! known errno name; unknown types get an error; anything after the reply is a watch
//! event; a closed connection gets nothing; frames are whole, within the payload limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback_fuzz::Input;
use xenstore::Limits;
use xenstore::server::fuzzing::FuzzServer;
use xenstore::wire::{HEADER_LEN, Header, MsgType, RawMessage, XENSTORE_PAYLOAD_MAX, XsErrno, decode_frame};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut server =
        FuzzServer::new(Limits { max_nodes_per_domain: 64, max_watches_per_domain: 8, ..Limits::default() });
    let conns: Vec<usize> = [0, 1, 1, 2].iter().map(|&d| server.connect(d).expect("socketpair")).collect();
    let mut txs: Vec<u32> = Vec::new();
    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        let op = input.u8();
        let conn = conns[usize::from(op & 3)];
        // Events fired by other connections' requests and by introduce/release.
        for e in server.take_queued(conn) {
            assert_eq!(check_frame(&e).msg_type, MsgType::WatchEvent.as_u32());
        }
        match op >> 5 {
            7 => {
                let n = usize::from(input.u8());
                let open = server.is_open(conn);
                let replies = server.feed(conn, input.bytes(n));
                if !open {
                    assert!(replies.is_empty());
                }
                for r in &replies {
                    check_frame(r);
                }
            }
            6 => {
                let d = u16::from(input.u8() % 4);
                if op & 4 != 0 {
                    server.daemon().release_domain(d)
                } else {
                    server.daemon().introduce_domain(d)
                };
            }
            _ => {
                let ty = match input.u8() {
                    t @ 0..=26 => u32::from(t),
                    27 => 0xffff,
                    t => u32::from(t) * 1000,
                };
                let tx_id = match input.u8() {
                    0 => 0,
                    t @ 1..=8 => txs.get(usize::from(t) - 1).copied().unwrap_or(u32::from(t)),
                    _ => input.u32(),
                };
                let req_id = u32::from(input.u8());
                let len = if op & 16 != 0 { usize::from(input.u16()) % 4200 } else { usize::from(input.u8()) };
                let payload = input.bytes(len).to_vec();
                let header = Header { msg_type: ty, req_id, tx_id, len: payload.len() as u32 };
                let open = server.is_open(conn);
                let replies = server.request(conn, RawMessage { header, payload });
                if !open {
                    assert!(replies.is_empty(), "a closed connection was answered");
                    continue;
                }
                // Watch events queued earlier (by a release, an introduce or a raw feed) may
                // go out ahead of the reply; exactly one frame is not an event.
                let is_event = |f: &Vec<u8>| check_frame(f).msg_type == MsgType::WatchEvent.as_u32();
                let (mut events, answers): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = replies.iter().partition(|f| is_event(f));
                // A reply to a WATCH_EVENT request would itself look like an event.
                if answers.is_empty() && ty == MsgType::WatchEvent.as_u32() {
                    assert!(!events.is_empty(), "every request is answered");
                    let first = events.remove(0);
                    assert_eq!((check_frame(first).req_id, check_frame(first).tx_id), (req_id, tx_id));
                    continue;
                }
                assert_eq!(answers.len(), 1, "exactly one reply per request");
                let first = answers[0];
                let reply = check_frame(first);
                assert_eq!((reply.req_id, reply.tx_id), (req_id, tx_id), "reply ids echo the request");
                let payload = &first[HEADER_LEN..];
                if reply.msg_type == MsgType::Error.as_u32() {
                    assert!(!matches!(XsErrno::from_payload(payload), XsErrno::Other(_)), "{payload:?}");
                } else {
                    assert_eq!(reply.msg_type, ty, "a reply of another type");
                    assert!(MsgType::from_u32(ty).is_some(), "unknown type {ty} answered without error");
                    if ty == MsgType::TransactionStart.as_u32() {
                        let id = std::str::from_utf8(payload).ok().and_then(|s| s.trim_end_matches('\0').parse().ok());
                        txs.push(id.expect("a transaction id"));
                    }
                }
                for e in events {
                    assert_eq!(check_frame(e).msg_type, MsgType::WatchEvent.as_u32());
                }
            }
        }
    }
    for &c in &conns {
        for e in server.take_queued(c) {
            assert_eq!(check_frame(&e).msg_type, MsgType::WatchEvent.as_u32());
        }
    }
});

/// One whole message within the payload limit.
fn check_frame(bytes: &[u8]) -> Header {
    let (raw, used) = decode_frame(bytes).expect("reply within the limit").expect("whole reply");
    assert_eq!(used, bytes.len());
    assert!(raw.payload.len() <= XENSTORE_PAYLOAD_MAX);
    raw.header
}
