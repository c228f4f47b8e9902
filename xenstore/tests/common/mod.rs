//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use xenstore::wire::{HEADER_LEN, Header};
use xenstore::{Access, Client, Perm, Watch, WatchEvent, Xenstored};

/// Generous bound for events that must arrive.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long to wait before concluding an event will not come.
pub const QUIET: Duration = Duration::from_millis(300);

/// A fresh daemon and a dom0 client on it.
pub fn setup() -> (Arc<Xenstored>, Client) {
    let xs = Xenstored::new();
    let dom0 = xs.connect(0).expect("dom0 client");
    (xs, dom0)
}

/// Creates `/local/domain/<domid>` owned by the domain (as a toolstack would
/// for its writable home) and returns a client speaking as that guest.
pub fn guest(xs: &Arc<Xenstored>, dom0: &Client, domid: u16) -> Client {
    let home = format!("/local/domain/{domid}");
    dom0.mkdir(&home).unwrap();
    dom0.set_perms(&home, &[Perm::new(domid, Access::None)]).unwrap();
    xs.connect(domid).expect("guest client")
}

/// A unique socket path under the temp dir.
pub fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("xs-{tag}-{}-{n}.sock", std::process::id()))
}

/// The next event, or a panic after [`WAIT`].
pub fn next_event(w: &Watch) -> WatchEvent {
    w.recv_timeout(WAIT).expect("watch alive").expect("event within timeout")
}

/// Asserts nothing arrives for [`QUIET`].
pub fn assert_quiet(w: &Watch) {
    if let Some(ev) = w.recv_timeout(QUIET).expect("watch alive") {
        panic!("unexpected event {ev:?}");
    }
}

/// Writes a raw message.
pub fn send_raw(s: &mut UnixStream, ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) {
    let h = Header { msg_type: ty, req_id, tx_id, len: payload.len() as u32 };
    let mut buf = h.encode().to_vec();
    buf.extend_from_slice(payload);
    s.write_all(&buf).unwrap();
}

/// Reads one raw message; `None` at EOF.
pub fn recv_raw(s: &mut UnixStream) -> Option<(Header, Vec<u8>)> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let h = Header::decode(&head);
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).ok()?;
    Some((h, payload))
}
