//! Watches: registration event, matching, removal, special paths, fd
//! readiness, and no deadlock with many queued events.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::{assert_quiet, guest, next_event, setup};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use xenstore::{Access, Perm, XsError};

fn readable(fd: &impl AsFd, timeout_ms: u16) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(timeout_ms)).unwrap() == 1
}

#[test]
fn fires_on_registration_then_on_changes_below() {
    let (_xs, c) = setup();
    let w = c.watch("/backend/vif", Some("my-token")).unwrap();
    assert_eq!(w.token(), "my-token");
    let first = next_event(&w);
    assert_eq!((first.path.as_str(), first.token.as_str()), ("/backend/vif", "my-token"));

    c.write("/backend/vif/1/0/state", "1").unwrap();
    assert_eq!(next_event(&w).path, "/backend/vif/1/0/state");
    c.write("/backend/vif", "x").unwrap();
    assert_eq!(next_event(&w).path, "/backend/vif");
    c.mkdir("/backend/vif/2").unwrap();
    assert_eq!(next_event(&w).path, "/backend/vif/2");
    c.set_perms("/backend/vif/2", &[Perm::new(0, Access::Read)]).unwrap();
    assert_eq!(next_event(&w).path, "/backend/vif/2");
    // mkdir of an existing node changes nothing and fires nothing.
    c.mkdir("/backend/vif/2").unwrap();
    assert_quiet(&w);
}

#[test]
fn siblings_and_parents_do_not_fire() {
    let (_xs, c) = setup();
    let w = c.watch("/a/b", None).unwrap();
    next_event(&w);
    c.write("/a/bc", "1").unwrap();
    c.write("/a/c/b", "1").unwrap();
    c.write("/a", "1").unwrap();
    assert_quiet(&w);
    c.write("/a/b", "1").unwrap();
    assert_eq!(next_event(&w).path, "/a/b");
}

#[test]
fn rm_of_a_parent_fires_watches_below() {
    let (_xs, c) = setup();
    c.write("/dev/vif/0/state", "4").unwrap();
    let below = c.watch("/dev/vif/0/state", None).unwrap();
    let missing_below = c.watch("/dev/vif/0/not-there", None).unwrap();
    let above = c.watch("/dev", None).unwrap();
    for w in [&below, &missing_below, &above] {
        next_event(w);
    }
    c.rm("/dev/vif").unwrap();
    assert_eq!(next_event(&below).path, "/dev/vif/0/state");
    assert_eq!(next_event(&missing_below).path, "/dev/vif/0/not-there");
    assert_eq!(next_event(&above).path, "/dev/vif");
    for w in [&below, &missing_below, &above] {
        assert_quiet(w);
    }
    // Removing something absent fires nothing.
    c.rm("/dev/vif").unwrap();
    assert_quiet(&above);
}

#[test]
fn introduce_and_release_domain_events() {
    let (xs, c) = setup();
    let intro = c.watch("@introduceDomain", None).unwrap();
    let release = c.watch("@releaseDomain", None).unwrap();
    assert_eq!(next_event(&intro).path, "@introduceDomain");
    assert_eq!(next_event(&release).path, "@releaseDomain");

    assert!(xs.introduce_domain(3));
    assert_eq!(next_event(&intro).path, "@introduceDomain");
    assert!(!xs.introduce_domain(3), "already introduced: no second event");
    assert_quiet(&intro);

    c.introduce(4, 1, 2).unwrap();
    assert_eq!(next_event(&intro).path, "@introduceDomain");
    c.release(4).unwrap();
    assert_eq!(next_event(&release).path, "@releaseDomain");

    // Releasing drops the guest's connections and watches.
    let g = guest(&xs, &c, 3);
    let gw = g.watch("device", None).unwrap();
    assert_eq!(next_event(&gw).path, "device");
    let before = xs.watch_count();
    assert!(xs.release_domain(3));
    assert_eq!(next_event(&release).path, "@releaseDomain");
    assert!(matches!(gw.recv_timeout(common::WAIT), Err(XsError::Disconnected)));
    assert!(matches!(g.read("device"), Err(XsError::Disconnected)));
    assert_eq!(xs.watch_count(), before - 1);
    assert_quiet(&intro);
}

#[test]
fn special_events_need_permission_for_guests() {
    let (xs, c) = setup();
    let g = guest(&xs, &c, 2);
    let gw = g.watch("@releaseDomain", None).unwrap();
    next_event(&gw); // registration always fires
    xs.release_domain(9);
    assert_quiet(&gw);
    c.set_perms("@releaseDomain", &[Perm::new(0, Access::None), Perm::new(2, Access::Read)]).unwrap();
    xs.release_domain(9);
    assert_eq!(next_event(&gw).path, "@releaseDomain");
}

#[test]
fn guest_watches_relative_paths_and_only_readable_nodes() {
    let (xs, c) = setup();
    let g = guest(&xs, &c, 1);
    let rel = g.watch("device", None).unwrap();
    assert_eq!(next_event(&rel).path, "device");
    g.write("device/vif/0/state", "1").unwrap();
    assert_eq!(next_event(&rel).path, "device/vif/0/state");

    // A guest watching /local/domain hears about its own nodes only.
    let abs = g.watch("/local/domain", None).unwrap();
    next_event(&abs);
    c.write("/local/domain/5/secret", "x").unwrap();
    assert_quiet(&abs);
    g.write("mine", "x").unwrap();
    assert_eq!(next_event(&abs).path, "/local/domain/1/mine");
}

#[test]
fn fd_is_readable_while_events_are_queued() {
    let (_xs, c) = setup();
    let w = c.watch("/fd", None).unwrap();
    assert!(readable(&w, 5000), "registration event makes the fd readable");
    assert!(w.try_recv().unwrap().is_some());
    assert!(!readable(&w, 0));
    assert!(w.try_recv().unwrap().is_none());

    c.write("/fd/a", "1").unwrap();
    c.write("/fd/b", "1").unwrap();
    assert!(readable(&w, 5000));
    // Both events must be in before we drain (the reader thread may lag).
    let deadline = std::time::Instant::now() + common::WAIT;
    while w.pending() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(w.try_recv().unwrap().unwrap().path, "/fd/a");
    assert!(readable(&w, 0), "still one queued");
    assert_eq!(w.try_recv().unwrap().unwrap().path, "/fd/b");
    assert!(!readable(&w, 0));
}

#[test]
fn no_deadlock_with_hundreds_of_queued_events() {
    let (_xs, c) = setup();
    let w = c.watch("/flood", None).unwrap();
    // Queue hundreds of events without reading any, issuing requests in
    // between on the same client (the xenstore-rs deadlock scenario).
    for i in 0..600 {
        c.write(&format!("/flood/{i}"), i.to_string()).unwrap();
        if i % 50 == 0 {
            assert_eq!(c.read_string(&format!("/flood/{i}")).unwrap(), i.to_string());
        }
    }
    assert_eq!(c.directory("/flood").unwrap().len(), 600);
    // Now consume, issuing a request per event.
    assert_eq!(next_event(&w).path, "/flood");
    for i in 0..600 {
        let ev = next_event(&w);
        assert_eq!(ev.path, format!("/flood/{i}"));
        assert_eq!(c.read_string(&ev.path).unwrap(), i.to_string());
    }
    assert_quiet(&w);
}

#[test]
fn tokens_are_unique_and_drop_unwatches() {
    let (xs, c) = setup();
    let a = c.watch("/u", None).unwrap();
    let b = c.watch("/u", None).unwrap();
    assert_ne!(a.token(), b.token());
    let dup = c.watch("/other", Some(a.token()));
    assert!(matches!(dup, Err(XsError::Watch { .. })) && dup.unwrap_err().is_eexist());
    assert_eq!(xs.watch_count(), 2);
    drop(a);
    b.unwatch().unwrap();
    c.read("/").unwrap(); // the detached UNWATCH was handled before this
    assert_eq!(xs.watch_count(), 0);

    // Tokens only need to be unique per connection.
    let other = xs.connect(0).unwrap();
    let _w1 = other.watch("/same", Some("t")).unwrap();
    let c2 = xs.connect(0).unwrap();
    let _w2 = c2.watch("/same", Some("t")).unwrap();
    assert_eq!(xs.watch_count(), 2);
}

#[test]
fn reset_watches_clears_daemon_side() {
    let (xs, c) = setup();
    let w = c.watch("/r", None).unwrap();
    next_event(&w);
    c.reset_watches().unwrap();
    assert_eq!(xs.watch_count(), 0);
    c.write("/r/x", "1").unwrap();
    assert_quiet(&w);
}
