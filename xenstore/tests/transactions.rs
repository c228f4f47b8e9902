//! Transactions: isolation, conflicts, the retry helper, abort.

mod common;

use std::cell::Cell;

use common::{assert_quiet, next_event, setup};
use xenstore::wire::MsgType;
use xenstore::{XsErrno, XsError};

#[test]
fn isolation_and_commit() {
    let (_xs, c) = setup();
    c.write("/t/x", "0").unwrap();
    let tx = c.transaction_start().unwrap();
    tx.write("/t/x", "1").unwrap();
    tx.write("/t/new/deep", "2").unwrap();
    // Private view inside, old view outside.
    assert_eq!(tx.read("/t/x").unwrap(), b"1");
    assert_eq!(c.read("/t/x").unwrap(), b"0");
    assert!(c.read("/t/new/deep").unwrap_err().is_enoent());
    let mut dir = tx.directory("/t").unwrap();
    dir.sort();
    assert_eq!(dir, vec!["new", "x"]);
    tx.commit().unwrap();
    assert_eq!(c.read("/t/x").unwrap(), b"1");
    assert_eq!(c.read("/t/new/deep").unwrap(), b"2");
}

#[test]
fn conflicting_commit_gets_eagain() {
    let (xs, c) = setup();
    let other = xs.connect(0).unwrap();
    c.write("/t/x", "0").unwrap();
    let tx = c.transaction_start().unwrap();
    assert_eq!(tx.read("/t/x").unwrap(), b"0");
    tx.write("/t/y", "from-tx").unwrap();
    other.write("/t/x", "changed").unwrap();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, XsError::TransactionEnd { errno: XsErrno::Eagain, .. }), "{err:?}");
    assert!(err.is_eagain());
    // Nothing of the failed transaction is visible.
    assert!(c.read("/t/y").unwrap_err().is_enoent());
}

#[test]
fn creation_under_a_listed_directory_conflicts() {
    let (xs, c) = setup();
    let other = xs.connect(0).unwrap();
    c.mkdir("/t/dir").unwrap();
    let tx = c.transaction_start().unwrap();
    assert!(tx.directory("/t/dir").unwrap().is_empty());
    tx.write("/t/elsewhere", "1").unwrap();
    other.write("/t/dir/appeared", "1").unwrap();
    assert!(tx.commit().unwrap_err().is_eagain());

    // Reading a node that does not exist yet, then someone creates it.
    let tx = c.transaction_start().unwrap();
    assert!(tx.read("/t/later").unwrap_err().is_enoent());
    other.write("/t/later", "1").unwrap();
    assert!(tx.commit().unwrap_err().is_eagain());

    // Unrelated changes do not conflict.
    let tx = c.transaction_start().unwrap();
    tx.read("/t/dir").unwrap();
    tx.write("/t/dir/appeared", "2").unwrap();
    other.write("/unrelated", "1").unwrap();
    tx.commit().unwrap();
    assert_eq!(c.read("/t/dir/appeared").unwrap(), b"2");
}

#[test]
fn retry_helper_succeeds_after_injected_conflict() {
    let (xs, c) = setup();
    let other = xs.connect(0).unwrap();
    c.write("/counter", "0").unwrap();
    let attempts = Cell::new(0);
    let result = c
        .transaction(|tx| {
            attempts.set(attempts.get() + 1);
            let n: u32 = tx.read_string("/counter")?.parse().unwrap();
            if attempts.get() == 1 {
                // Someone else bumps the counter while we are in flight.
                other.write("/counter", "10").unwrap();
            }
            tx.write("/counter", (n + 1).to_string())?;
            Ok(n + 1)
        })
        .unwrap();
    assert_eq!(attempts.get(), 2);
    assert_eq!(result, 11);
    assert_eq!(c.read_string("/counter").unwrap(), "11");
}

#[test]
fn retry_helper_gives_up_and_passes_other_errors() {
    let (xs, c) = setup();
    let other = xs.connect(0).unwrap();
    c.write("/hot", "0").unwrap();
    let attempts = Cell::new(0usize);
    let err = c
        .transaction(|tx| {
            attempts.set(attempts.get() + 1);
            tx.read("/hot")?;
            other.write("/hot", attempts.get().to_string()).unwrap();
            tx.write("/hot-copy", "x")
        })
        .unwrap_err();
    assert!(err.is_eagain());
    assert_eq!(attempts.get(), xenstore::client::MAX_TRANSACTION_ATTEMPTS);

    let attempts = Cell::new(0usize);
    let err = c
        .transaction(|tx| {
            attempts.set(attempts.get() + 1);
            tx.read("/absent")
        })
        .unwrap_err();
    assert!(err.is_enoent());
    assert_eq!(attempts.get(), 1);
}

#[test]
fn abort_discards() {
    let (_xs, c) = setup();
    c.write("/t/keep", "old").unwrap();
    let tx = c.transaction_start().unwrap();
    tx.write("/t/keep", "new").unwrap();
    tx.rm("/t/keep").unwrap();
    tx.mkdir("/t/made").unwrap();
    tx.abort().unwrap();
    assert_eq!(c.read("/t/keep").unwrap(), b"old");
    assert!(!c.exists("/t/made").unwrap());

    // Dropping an open transaction aborts it too.
    {
        let tx = c.transaction_start().unwrap();
        tx.write("/t/dropped", "x").unwrap();
    }
    assert!(!c.exists("/t/dropped").unwrap());
}

#[test]
fn watches_fire_only_on_commit() {
    let (_xs, c) = setup();
    c.mkdir("/tw").unwrap();
    let w = c.watch("/tw", None).unwrap();
    assert_eq!(next_event(&w).path, "/tw");
    let tx = c.transaction_start().unwrap();
    tx.write("/tw/a", "1").unwrap();
    assert_quiet(&w);
    tx.commit().unwrap();
    assert_eq!(next_event(&w).path, "/tw/a");

    let tx = c.transaction_start().unwrap();
    tx.write("/tw/b", "1").unwrap();
    tx.abort().unwrap();
    assert_quiet(&w);
}

#[test]
fn unknown_and_finished_transactions() {
    let (xs, c) = setup();
    let tx = c.transaction_start().unwrap();
    let id = tx.id();
    tx.commit().unwrap();
    // The id is gone: a raw request with it gets ENOENT.
    let (mut raw, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    xs.add_connection(theirs, 0).unwrap();
    common::send_raw(&mut raw, MsgType::Read.as_u32(), 1, id, b"/\0");
    let (h, payload) = common::recv_raw(&mut raw).unwrap();
    assert_eq!(h.msg_type, MsgType::Error.as_u32());
    assert_eq!(payload, b"ENOENT\0");
    common::send_raw(&mut raw, MsgType::TransactionEnd.as_u32(), 2, 12345, b"T\0");
    assert_eq!(common::recv_raw(&mut raw).unwrap().1, b"ENOENT\0");
    // A transaction id belongs to its connection.
    let other_tx = c.transaction_start().unwrap();
    common::send_raw(&mut raw, MsgType::Read.as_u32(), 3, other_tx.id(), b"/\0");
    assert_eq!(common::recv_raw(&mut raw).unwrap().1, b"ENOENT\0");
}

#[test]
fn transaction_quota() {
    let (xs, c) = setup();
    let max = xs.limits().max_transactions_per_connection;
    let open: Vec<_> = (0..max).map(|_| c.transaction_start().unwrap()).collect();
    assert!(matches!(c.transaction_start(), Err(XsError::TransactionStart { errno: XsErrno::Enospc })));
    drop(open);
    // Aborts are asynchronous (sent from Drop); a synchronous request after
    // them is answered after them, so a new transaction now fits.
    c.read("/").unwrap();
    c.transaction_start().unwrap().commit().unwrap();
}
