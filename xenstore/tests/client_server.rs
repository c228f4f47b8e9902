//! Client against the embedded daemon: basic database operations.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::{guest, setup, socket_path};
use xenstore::wire::MsgType;
use xenstore::{Access, Client, Perm, Xenstored, XsErrno, XsError};

#[test]
fn read_write_mkdir_rm_directory() {
    let (_xs, c) = setup();
    c.write("/test/a/b", "hello").unwrap();
    assert_eq!(c.read("/test/a/b").unwrap(), b"hello");
    assert_eq!(c.read_string("/test/a/b").unwrap(), "hello");
    // Parents were created empty.
    assert_eq!(c.read("/test/a").unwrap(), b"");
    assert_eq!(c.directory("/test").unwrap(), vec!["a"]);
    c.write("/test/a/b", b"world").unwrap();
    assert_eq!(c.read("/test/a/b").unwrap(), b"world");

    // Binary values with NULs survive.
    c.write("/test/bin", [0u8, 1, 0, 255]).unwrap();
    assert_eq!(c.read("/test/bin").unwrap(), vec![0u8, 1, 0, 255]);

    c.mkdir("/test/dir/sub").unwrap();
    c.write("/test/dir/value", "v").unwrap();
    c.mkdir("/test/dir").unwrap(); // existing: no-op, value kept
    let mut children = c.directory("/test").unwrap();
    children.sort();
    assert_eq!(children, vec!["a", "bin", "dir"]);
    assert_eq!(c.directory("/test/dir/sub").unwrap(), Vec::<String>::new());

    c.rm("/test/dir").unwrap();
    assert!(c.read("/test/dir/value").unwrap_err().is_enoent());
    assert!(!c.exists("/test/dir").unwrap());
    assert!(c.exists("/test/a").unwrap());
    // Removing an absent node whose parent exists is fine...
    c.rm("/test/dir").unwrap();
    // ...but not when the parent is absent too.
    let err = c.rm("/test/nothing/here").unwrap_err();
    assert!(matches!(err, XsError::Rm { ref path, errno: XsErrno::Enoent } if path == "/test/nothing/here"), "{err:?}");
    // The root cannot go.
    assert_eq!(c.rm("/").unwrap_err().errno(), Some(&XsErrno::Einval));
}

#[test]
fn errors_name_the_operation() {
    let (_xs, c) = setup();
    match c.read("/missing") {
        Err(XsError::Read { path, errno: XsErrno::Enoent }) => assert_eq!(path, "/missing"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.directory("/missing"), Err(XsError::Directory { errno: XsErrno::Enoent, .. })));
    assert!(matches!(c.write("/bad//path", "x"), Err(XsError::Write { errno: XsErrno::Einval, .. })));
    assert!(matches!(c.read("/bad path"), Err(XsError::Read { errno: XsErrno::Einval, .. })));
    assert!(matches!(c.read("/embedded\0nul"), Err(XsError::InvalidRequest(_))));
    let long = format!("/{}", "x".repeat(5000));
    assert!(matches!(c.write(&long, "x"), Err(XsError::InvalidRequest(_))));
}

#[test]
fn initial_tree_and_perms() {
    let (_xs, c) = setup();
    let mut root = c.directory("/").unwrap();
    root.sort();
    assert_eq!(root, vec!["local", "tool"]);
    assert_eq!(c.directory("/local").unwrap(), vec!["domain"]);
    for p in ["/", "/local", "/local/domain", "/tool"] {
        assert_eq!(c.get_perms(p).unwrap(), vec![Perm::new(0, Access::None)], "{p}");
    }
    assert_eq!(c.get_perms("@introduceDomain").unwrap(), vec![Perm::new(0, Access::None)]);
}

#[test]
fn relative_paths_and_domain_path() {
    let (xs, dom0) = setup();
    assert_eq!(dom0.get_domain_path(7).unwrap(), "/local/domain/7");
    assert_eq!(dom0.get_domain_path(0).unwrap(), "/local/domain/0");

    let g = guest(&xs, &dom0, 3);
    assert_eq!(g.get_domain_path(3).unwrap(), "/local/domain/3");
    g.write("device/vif/0/state", "1").unwrap();
    assert_eq!(dom0.read("/local/domain/3/device/vif/0/state").unwrap(), b"1");
    assert_eq!(g.read("device/vif/0/state").unwrap(), b"1");
    assert_eq!(g.directory("device").unwrap(), vec!["vif"]);
    // Dom0's relative paths are under /local/domain/0.
    dom0.write("name", "Domain-0").unwrap();
    assert_eq!(dom0.read("/local/domain/0/name").unwrap(), b"Domain-0");
}

#[test]
fn set_and_get_perms() {
    let (_xs, c) = setup();
    c.write("/p/node", "x").unwrap();
    let perms = [Perm::new(4, Access::Read), Perm::new(5, Access::Both), Perm::new(6, Access::Write)];
    c.set_perms("/p/node", &perms).unwrap();
    assert_eq!(c.get_perms("/p/node").unwrap(), perms);
    // Children created later inherit the parent's list.
    c.write("/p/node/child", "y").unwrap();
    assert_eq!(c.get_perms("/p/node/child").unwrap(), perms);
    assert!(c.set_perms("/p/missing", &perms).unwrap_err().is_enoent());
    assert_eq!(c.set_perms("/p/node", &[]).unwrap_err().errno(), Some(&XsErrno::Einval));
}

#[test]
fn domain_introduction() {
    let (xs, c) = setup();
    assert!(c.is_domain_introduced(0).unwrap());
    assert!(!c.is_domain_introduced(5).unwrap());
    c.introduce(5, 0x1234, 7).unwrap();
    assert!(c.is_domain_introduced(5).unwrap());
    assert!(xs.is_domain_introduced(5));
    c.release(5).unwrap();
    assert!(!c.is_domain_introduced(5).unwrap());
    assert!(c.release(5).unwrap_err().is_enoent());
    assert_eq!(c.introduce(0, 1, 1).unwrap_err().errno(), Some(&XsErrno::Einval));
}

#[test]
fn large_directory_uses_directory_part() {
    let (_xs, c) = setup();
    // 300 children of 24 bytes: the plain listing is over 4096 bytes.
    let names: Vec<String> = (0..300).map(|i| format!("child-with-long-name-{i:03}")).collect();
    c.transaction(|tx| {
        for n in &names {
            tx.mkdir(&format!("/big/{n}"))?;
        }
        Ok(())
    })
    .unwrap();
    let mut got = c.directory("/big").unwrap();
    got.sort();
    assert_eq!(got, names);
}

#[test]
fn unix_socket_listener() {
    let xs = Xenstored::new();
    let path = socket_path("listen");
    let handle = xs.serve_unix(&path).unwrap();
    let a = Client::connect(&path).unwrap();
    let b = Client::connect(&path).unwrap();
    a.write("/shared", "1").unwrap();
    assert_eq!(b.read("/shared").unwrap(), b"1");
    // Socket clients are privileged.
    a.introduce(9, 1, 1).unwrap();
    assert_eq!(xs.connection_count(), 2);
    handle.shutdown();
    assert!(!path.exists());
    assert!(matches!(a.read("/shared"), Err(XsError::Disconnected)));
    assert!(Client::connect(&path).is_err());
}

#[test]
fn concurrent_callers_share_one_client() {
    let (_xs, c) = setup();
    let c = Arc::new(c);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = format!("/conc/{t}/{i}");
                    c.write(&p, format!("{t}-{i}")).unwrap();
                    assert_eq!(c.read_string(&p).unwrap(), format!("{t}-{i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.directory("/conc").unwrap().len(), 8);
}

#[test]
fn waiters_get_disconnected_when_the_daemon_goes_away() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let client = Client::from_stream(ours).unwrap();
    let watch_client = client.clone();
    let fake = std::thread::spawn(move || {
        // Swallow the WATCH and the READ requests, then hang up unanswered.
        let mut types = Vec::new();
        for _ in 0..2 {
            types.push(common::recv_raw(&mut theirs).expect("request").0.msg_type);
        }
        types.sort();
        assert_eq!(types, vec![MsgType::Read.as_u32(), MsgType::Watch.as_u32()]);
        drop(theirs);
    });
    let waiter = std::thread::spawn(move || watch_client.watch("/w", None).map(drop));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let res = client.read("/x");
    assert!(matches!(res, Err(XsError::Disconnected)), "{res:?}");
    assert!(matches!(waiter.join().unwrap(), Err(XsError::Disconnected)));
    fake.join().unwrap();
    // Later calls fail at once.
    assert!(matches!(client.write("/x", "1"), Err(XsError::Disconnected)));
}
