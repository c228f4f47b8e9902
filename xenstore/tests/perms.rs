//! The permission model, seen from guest connections.

mod common;

use common::{guest, setup};
use xenstore::{Access, Limits, Perm, Xenstored, XsErrno, XsError};

#[test]
fn guest_cannot_read_or_write_other_domains() {
    let (xs, dom0) = setup();
    let g1 = guest(&xs, &dom0, 1);
    let _g2 = guest(&xs, &dom0, 2);
    dom0.write("/local/domain/2/secret", "s").unwrap();

    let err = g1.read("/local/domain/2/secret").unwrap_err();
    assert!(matches!(err, XsError::Read { errno: XsErrno::Eacces, .. }), "{err:?}");
    assert!(g1.directory("/local/domain/2").unwrap_err().is_eacces());
    // Absence is hidden too: EACCES, not ENOENT, under an unreadable parent.
    assert!(g1.read("/local/domain/2/nothing").unwrap_err().is_eacces());
    assert!(g1.write("/local/domain/2/evil", "x").unwrap_err().is_eacces());
    assert!(g1.write("/tool/evil", "x").unwrap_err().is_eacces());
    assert!(g1.mkdir("/evil").unwrap_err().is_eacces());
    assert!(g1.rm("/local/domain/2/secret").unwrap_err().is_eacces());
    assert!(g1.read("/").unwrap_err().is_eacces());
    assert_eq!(dom0.read("/local/domain/2/secret").unwrap(), b"s");
    // In its own home, absence is plain ENOENT.
    assert!(g1.read("nothing").unwrap_err().is_enoent());
}

#[test]
fn dom0_grants_read_access() {
    let (xs, dom0) = setup();
    let g1 = guest(&xs, &dom0, 1);
    dom0.write("/backend/vif/1/0/mac", "00:16:3e:00:00:01").unwrap();
    assert!(g1.read("/backend/vif/1/0/mac").unwrap_err().is_eacces());
    dom0.set_perms("/backend/vif/1/0/mac", &[Perm::new(0, Access::None), Perm::new(1, Access::Read)]).unwrap();
    assert_eq!(g1.read_string("/backend/vif/1/0/mac").unwrap(), "00:16:3e:00:00:01");
    // Read access is not write access.
    assert!(g1.write("/backend/vif/1/0/mac", "x").unwrap_err().is_eacces());
    // Nor ownership.
    assert!(g1.set_perms("/backend/vif/1/0/mac", &[Perm::new(0, Access::Both)]).unwrap_err().is_eacces());
    assert!(g1.get_perms("/backend/vif/1/0/mac").is_ok());
}

#[test]
fn write_access_through_a_per_domain_entry() {
    let (xs, dom0) = setup();
    let g1 = guest(&xs, &dom0, 1);
    let g2 = guest(&xs, &dom0, 2);
    // The frontend dir pattern: owned by the guest, readable by the backend.
    dom0.mkdir("/shared").unwrap();
    dom0.set_perms("/shared", &[Perm::new(0, Access::None), Perm::new(1, Access::Both)]).unwrap();
    g1.write("/shared/x", "1").unwrap();
    assert!(g2.write("/shared/y", "1").unwrap_err().is_eacces());
    assert!(g2.read("/shared/x").unwrap_err().is_eacces());
}

#[test]
fn guest_becomes_owner_of_what_it_creates() {
    let (xs, dom0) = setup();
    dom0.mkdir("/local/domain/1").unwrap();
    // Owned by dom0, everyone may write (libxl's "device" dirs are similar).
    dom0.set_perms("/local/domain/1", &[Perm::new(0, Access::Write), Perm::new(1, Access::Both)]).unwrap();
    let g1 = xs.connect(1).unwrap();
    g1.write("data/key", "v").unwrap();
    let perms = g1.get_perms("data/key").unwrap();
    assert_eq!(perms, vec![Perm::new(1, Access::Write), Perm::new(1, Access::Both)]);
    assert_eq!(dom0.get_perms("/local/domain/1/data").unwrap()[0].domid, 1);
    // As owner it may change the permissions, but not give the node away.
    g1.set_perms("data/key", &[Perm::new(1, Access::None), Perm::new(2, Access::Read)]).unwrap();
    let err = g1.set_perms("data/key", &[Perm::new(2, Access::None)]).unwrap_err();
    assert_eq!(err.errno(), Some(&XsErrno::Eperm));
    // Dom0-created nodes keep the inherited owner.
    dom0.write("/local/domain/1/by-dom0", "x").unwrap();
    assert_eq!(dom0.get_perms("/local/domain/1/by-dom0").unwrap()[0], Perm::new(0, Access::Write));
}

#[test]
fn guests_cannot_use_privileged_requests() {
    let (xs, dom0) = setup();
    let g = guest(&xs, &dom0, 1);
    assert!(matches!(g.introduce(5, 1, 1), Err(XsError::Introduce { errno: XsErrno::Eacces, .. })));
    assert!(g.release(1).unwrap_err().is_eacces());
    assert!(g.is_domain_introduced(1).unwrap_err().is_eacces());
    // GET_DOMAIN_PATH is open to everyone.
    assert_eq!(g.get_domain_path(2).unwrap(), "/local/domain/2");
}

#[test]
fn node_and_watch_quotas() {
    let xs = Xenstored::with_limits(Limits { max_nodes_per_domain: 5, max_watches_per_domain: 3, ..Limits::default() });
    let dom0 = xs.connect(0).unwrap();
    let g = guest(&xs, &dom0, 1);
    // The home directory itself counts (owned by the guest).
    for i in 0..4 {
        g.write(&format!("n{i}"), "x").unwrap();
    }
    let err = g.write("n4", "x").unwrap_err();
    assert_eq!(err.errno(), Some(&XsErrno::Enospc));
    // A multi-level create is refused as a whole.
    g.rm("n3").unwrap();
    assert_eq!(g.write("a/b", "x").unwrap_err().errno(), Some(&XsErrno::Enospc));
    assert!(!g.exists("a").unwrap());
    g.write("a", "x").unwrap();
    // Dom0 is not subject to quotas.
    for i in 0..10 {
        dom0.write(&format!("/local/domain/1/dom0-{i}"), "x").unwrap();
    }

    let _w: Vec<_> = (0..3).map(|i| g.watch(&format!("w{i}"), None).unwrap()).collect();
    let err = g.watch("w3", None).unwrap_err();
    assert!(matches!(err, XsError::Watch { errno: XsErrno::E2big, .. }), "{err:?}");
    let _ok: Vec<_> = (0..5).map(|i| dom0.watch(&format!("/d{i}"), None).unwrap()).collect();
}
