//! Losing the connection to xenstored: what a client's callers see (every waiting and later
//! call fails with `Disconnected`, every watch fd turns readable), and the daemon's hooks
//! that cause it (cutting one connection, a listener that is down and back).

mod common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{WAIT, assert_quiet, next_event, send_raw, setup, socket_path};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use xenstore::wire::MsgType;
use xenstore::{Client, Watch, Xenstored, XsError};

/// Whether `watch`'s fd is readable within `limit` (what an epoll loop would see).
fn readable(watch: &Watch, limit: Duration) -> bool {
    let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
}

fn lost<T: std::fmt::Debug>(result: Result<T, XsError>) -> bool {
    matches!(&result, Err(e) if e.is_disconnected())
}

#[test]
fn a_pending_call_and_every_later_one_fail_and_watch_fds_turn_readable() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let client = Client::from_stream(ours).unwrap();
    // A fake daemon: accepts one watch (reply and registration event), then swallows a
    // READ and hangs up without answering it.
    let fake = std::thread::spawn(move || {
        let (h, payload) = common::recv_raw(&mut theirs).expect("WATCH");
        assert_eq!(h.msg_type, MsgType::Watch.as_u32());
        send_raw(&mut theirs, MsgType::Watch.as_u32(), h.req_id, 0, b"OK\0");
        send_raw(&mut theirs, MsgType::WatchEvent.as_u32(), 0, 0, &payload);
        let (h, _) = common::recv_raw(&mut theirs).expect("READ");
        assert_eq!(h.msg_type, MsgType::Read.as_u32());
        drop(theirs);
    });
    let watch = client.watch("/w", Some("tok")).unwrap();
    assert_eq!(next_event(&watch).path, "/w");
    assert!(!readable(&watch, Duration::ZERO), "nothing queued: the fd is quiet");
    assert!(client.is_connected());

    let pending = client.read("/x");
    assert!(lost(pending), "the pending read ends with the connection");
    fake.join().unwrap();
    assert!(!client.is_connected());

    // The watch fd is readable, and stays so (level-triggered) after every receive.
    assert!(readable(&watch, WAIT), "a watch fd wakes an epoll loop once the connection is gone");
    assert!(lost(watch.try_recv()));
    assert!(readable(&watch, Duration::ZERO));
    assert!(lost(watch.recv_timeout(WAIT)));
    assert!(lost(watch.recv()));

    // Every later call fails at once with the same error.
    assert!(lost(client.read("/x")));
    assert!(lost(client.write("/x", "1")));
    assert!(lost(client.directory("/")));
    assert!(lost(client.transaction(|tx| tx.write("/x", "1"))));
    let late = client.watch("/late", None);
    assert!(lost(late), "a new watch fails too");
}

#[test]
fn cutting_one_connection_leaves_the_others_and_fires_nothing() {
    let (xs, observer) = setup();
    let victim = xs.connect(0).unwrap();
    let w = victim.watch("/victim", None).unwrap();
    assert_eq!(next_event(&w).path, "/victim");
    let release = observer.watch("@releaseDomain", None).unwrap();
    assert_eq!(next_event(&release).path, "@releaseDomain");
    let other = observer.watch("/victim", None).unwrap();
    assert_eq!(next_event(&other).path, "/victim");
    xs.introduce_domain(3);

    let conns = xs.connections();
    assert_eq!(conns.len(), 2);
    let target: Vec<_> = conns.iter().filter(|c| c.watches == ["/victim"]).collect();
    assert_eq!(target.len(), 1, "{conns:?}");
    let id = target[0].id;
    assert_eq!(target[0].domid, 0);

    assert!(xs.drop_connection(id));
    assert!(readable(&w, WAIT));
    assert!(lost(w.try_recv()));
    assert!(lost(victim.read("/")));
    assert!(!xs.drop_connection(id), "already gone");
    assert_eq!(xs.connections().len(), 1);
    assert_eq!(xs.watch_count(), 2, "only the victim's watch went");

    // The other connection works and still hears its watches; no domain was released.
    observer.write("/victim", "1").unwrap();
    assert_eq!(next_event(&other).path, "/victim");
    assert_quiet(&release);
    assert!(xs.is_domain_introduced(3));
}

#[test]
fn a_paused_listener_refuses_connections_until_it_resumes() {
    let xs = Xenstored::new();
    let path = socket_path("pause");
    let handle = xs.serve_unix(&path).unwrap();
    let kept = Client::connect(&path).unwrap();
    // A round trip: xenstored has accepted it (a connection still in the listener's backlog
    // would go with the listener).
    kept.write("/before", "1").unwrap();
    handle.pause();
    handle.pause();
    assert!(!path.exists());
    assert!(Client::connect(&path).is_err(), "xenstored is down");
    kept.write("/still", "here").unwrap();

    handle.resume().unwrap();
    handle.resume().unwrap();
    let again = Client::connect(&path).unwrap();
    assert_eq!(again.read_string("/still").unwrap(), "here");
    assert_eq!(xs.connection_count(), 2);

    handle.shutdown();
    assert!(handle.resume().is_err(), "a shut-down listener stays down");
    assert!(!path.exists());
    assert!(lost(kept.read("/still")));
    assert!(lost(again.read("/still")));
}
