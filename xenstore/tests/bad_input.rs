//! Malformed requests get errors (or lose their own connection) and never
//! disturb other clients.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::{recv_raw, send_raw, setup, socket_path};
use xenstore::wire::{Header, MsgType};
use xenstore::{Client, Xenstored};

fn raw_conn(xs: &Arc<Xenstored>, domid: u16) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().unwrap();
    xs.add_connection(theirs, domid).unwrap();
    ours
}

/// Sends one request and returns (reply type, payload).
fn ask(s: &mut UnixStream, ty: u32, req_id: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    send_raw(s, ty, req_id, 0, payload);
    let (h, p) = recv_raw(s).expect("reply");
    assert_eq!(h.req_id, req_id, "reply echoes req_id");
    (h.msg_type, p)
}

const ERROR: u32 = MsgType::Error as u32;

#[test]
fn oversized_length_gets_e2big_and_closes_only_that_connection() {
    let (xs, good) = setup();
    let mut bad = raw_conn(&xs, 0);
    let h = Header { msg_type: MsgType::Write.as_u32(), req_id: 77, tx_id: 0, len: 5000 };
    bad.write_all(&h.encode()).unwrap();
    let (reply, payload) = recv_raw(&mut bad).expect("error reply before close");
    assert_eq!((reply.msg_type, reply.req_id), (ERROR, 77));
    assert_eq!(payload, b"E2BIG\0");
    assert!(recv_raw(&mut bad).is_none(), "connection closed");
    good.write("/still", "working").unwrap();
    assert_eq!(good.read("/still").unwrap(), b"working");
}

#[test]
fn malformed_payloads_get_einval() {
    let (xs, good) = setup();
    let mut s = raw_conn(&xs, 0);
    let read = MsgType::Read.as_u32();
    assert_eq!(ask(&mut s, read, 1, b"/local"), (ERROR, b"EINVAL\0".to_vec()), "missing NUL");
    assert_eq!(ask(&mut s, read, 2, b""), (ERROR, b"EINVAL\0".to_vec()), "empty");
    assert_eq!(ask(&mut s, read, 3, b"/a\0/b\0"), (ERROR, b"EINVAL\0".to_vec()), "two args");
    assert_eq!(ask(&mut s, read, 4, b"/\xff\xfe\0"), (ERROR, b"EINVAL\0".to_vec()), "not UTF-8");
    assert_eq!(ask(&mut s, read, 5, b"/a b\0"), (ERROR, b"EINVAL\0".to_vec()), "bad character");
    assert_eq!(ask(&mut s, read, 6, b"/a/\0"), (ERROR, b"EINVAL\0".to_vec()), "trailing slash");
    let long = format!("/{}\0", "a".repeat(3100));
    assert_eq!(ask(&mut s, read, 7, long.as_bytes()), (ERROR, b"EINVAL\0".to_vec()), "path too long");
    let write = MsgType::Write.as_u32();
    assert_eq!(ask(&mut s, write, 8, b"/no-separator"), (ERROR, b"EINVAL\0".to_vec()));
    assert_eq!(ask(&mut s, MsgType::Watch.as_u32(), 9, b"/only-path\0"), (ERROR, b"EINVAL\0".to_vec()));
    assert_eq!(ask(&mut s, MsgType::SetPerms.as_u32(), 10, b"/\0x9\0"), (ERROR, b"EINVAL\0".to_vec()));
    assert_eq!(ask(&mut s, MsgType::TransactionEnd.as_u32(), 11, b"X\0"), (ERROR, b"EINVAL\0".to_vec()));
    assert_eq!(ask(&mut s, MsgType::GetDomainPath.as_u32(), 12, b"abc\0"), (ERROR, b"EINVAL\0".to_vec()));
    // The connection survives all of that.
    assert_eq!(ask(&mut s, write, 13, b"/ok\0value"), (write, b"OK\0".to_vec()));
    assert_eq!(ask(&mut s, read, 14, b"/ok\0"), (read, b"value".to_vec()));
    assert_eq!(good.read("/ok").unwrap(), b"value");
}

#[test]
fn unknown_and_reply_only_types_get_enosys() {
    let (xs, good) = setup();
    let mut s = raw_conn(&xs, 0);
    for ty in
        [99u32, 0xffff, u32::MAX, MsgType::Restrict.as_u32(), MsgType::WatchEvent.as_u32(), MsgType::Error.as_u32()]
    {
        assert_eq!(ask(&mut s, ty, ty.wrapping_add(1), b"x\0"), (ERROR, b"ENOSYS\0".to_vec()), "type {ty}");
    }
    good.write("/fine", "1").unwrap();
}

#[test]
fn daemon_side_watch_rules() {
    let (xs, _good) = setup();
    let mut s = raw_conn(&xs, 0);
    let watch = MsgType::Watch.as_u32();
    assert_eq!(ask(&mut s, watch, 1, b"/w\0tok\0"), (watch, b"OK\0".to_vec()));
    let (h, ev) = recv_raw(&mut s).unwrap();
    assert_eq!((h.msg_type, h.req_id, ev.as_slice()), (MsgType::WatchEvent.as_u32(), 0, &b"/w\0tok\0"[..]));
    assert_eq!(ask(&mut s, watch, 2, b"/w\0tok\0"), (ERROR, b"EEXIST\0".to_vec()));
    let unwatch = MsgType::Unwatch.as_u32();
    assert_eq!(ask(&mut s, unwatch, 3, b"/w\0other\0"), (ERROR, b"ENOENT\0".to_vec()));
    assert_eq!(ask(&mut s, unwatch, 4, b"/w\0tok\0"), (unwatch, b"OK\0".to_vec()));
    // A plain DIRECTORY over the payload limit is refused with E2BIG.
    let c = xs.connect(0).unwrap();
    for i in 0..200 {
        c.mkdir(&format!("/wide/a-rather-long-child-name-{i:04}")).unwrap();
    }
    assert_eq!(ask(&mut s, MsgType::Directory.as_u32(), 5, b"/wide\0"), (ERROR, b"E2BIG\0".to_vec()));
}

#[test]
fn garbage_on_a_socket_does_not_disturb_a_client() {
    let xs = Xenstored::new();
    let path = socket_path("garbage");
    let _handle = xs.serve_unix(&path).unwrap();
    let client = Client::connect(&path).unwrap();
    let w = client.watch("/g", None).unwrap();
    common::next_event(&w);

    let mut junk = UnixStream::connect(&path).unwrap();
    // Pseudo-random bytes: eventually a header with a huge length closes it.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let writer = std::thread::spawn(move || {
        for chunk in bytes.chunks(997) {
            if junk.write_all(chunk).is_err() {
                break;
            }
        }
    });
    for i in 0..100 {
        client.write(&format!("/g/{i}"), "v").unwrap();
        assert_eq!(client.read(&format!("/g/{i}")).unwrap(), b"v");
        assert_eq!(common::next_event(&w).path, format!("/g/{i}"));
    }
    writer.join().unwrap();
    client.write("/g/after", "ok").unwrap();
    assert_eq!(client.read("/g/after").unwrap(), b"ok");
}
