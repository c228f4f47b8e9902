//! Interoperability: the third-party `xenstore-rs` client (GPL, dev-only)
//! talks to our embedded daemon.
//!
//! `xenstore-rs` only finds its daemon through `$XENSTORED_PATH`, and
//! setting the environment is `unsafe` in edition 2024, so the parent test
//! starts the daemon and re-runs this test binary with the variable set,
//! selecting the `#[ignore]`d child test.

mod common;

use std::process::Command;

use xenstore::{Client, Xenstored};
use xenstore_rs::Xs;
use xenstore_rs::unix::XsUnix;

const CHILD: &str = "interop_child";

#[test]
fn xenstore_rs_client_against_our_daemon() {
    let xs = Xenstored::new();
    let path = common::socket_path("interop");
    let _handle = xs.serve_unix(&path).unwrap();
    let ours = xs.connect(0).unwrap();
    ours.write("/interop/from-parent", "parent-value").unwrap();
    ours.write("/interop/doomed/leaf", "x").unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD, "--ignored", "--nocapture", "--test-threads=1"])
        .env("XENSTORED_PATH", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("INTEROP-CHILD-OK"), "child did not run:\n{stdout}\n{stderr}");

    // The child really talked to this daemon.
    assert_eq!(ours.read_string("/interop/from-child").unwrap(), "child-value");
    assert_eq!(ours.read_string("/interop/open-default").unwrap(), "ok");
    assert!(!ours.exists("/interop/doomed").unwrap());
}

/// Runs only as the parent's child process (it needs `XENSTORED_PATH`).
#[test]
#[ignore = "run by xenstore_rs_client_against_our_daemon in a child process"]
fn interop_child() {
    let Some(path) = std::env::var_os("XENSTORED_PATH") else {
        eprintln!("XENSTORED_PATH unset: nothing to do");
        return;
    };
    let xs = XsUnix::new().expect("xenstore-rs connects");
    assert_eq!(&*xs.read("/interop/from-parent").unwrap(), "parent-value");
    xs.write("/interop/from-child", "child-value").unwrap();
    assert_eq!(&*xs.read("/interop/from-child").unwrap(), "child-value");
    let mut dir: Vec<String> = xs.directory("/interop").unwrap().iter().map(|s| s.to_string()).collect();
    dir.sort();
    assert_eq!(dir, vec!["doomed", "from-child", "from-parent"]);
    xs.rm("/interop/doomed").unwrap();
    let err = xs.read("/interop/doomed/leaf").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    // Our own client honours XENSTORED_PATH the same way.
    let ours = Client::open_default().expect("open_default via XENSTORED_PATH");
    ours.write("/interop/open-default", "ok").unwrap();
    assert_eq!(&*xs.read("/interop/open-default").unwrap(), "ok");
    println!("INTEROP-CHILD-OK {}", path.to_string_lossy());
}
