//! The vif layout against a real simulated host (its xenstored and permissions), with no
//! daemon: where a backend is needed, the test plays it.

use dom0_tools::layout::{self, DetachOutcome, LayoutError, VifSpec};
use grant::sim::{Credentials, DomainConfig};
use simhost::{GuestSpec, SimHost};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use xenstore::{Access, Client, Perm};

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];

fn host_with_guests(n: usize) -> (SimHost, Vec<GuestSpec>) {
    let host = SimHost::start_temp().expect("sim host");
    let guests = (0..n).map(|i| host.create_domain(&format!("g{i}"), DomainConfig::default()).unwrap()).collect();
    (host, guests)
}

fn keys(xs: &Client, dir: &str) -> BTreeSet<String> {
    xs.directory(dir).unwrap().into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn attach_writes_the_libxl_keys_with_the_right_perms() {
    let (host, guests) = host_with_guests(2);
    let (g, other) = (guests[0].domid, guests[1].domid);
    let xs = host.toolstack();
    let spec = VifSpec { mac: Some(MAC), bridge: Some("xenbr0".into()), ..VifSpec::new(g) };
    let paths = layout::attach(xs, &spec).unwrap();
    let (fe, be) = (format!("/local/domain/{g}/device/vif/0"), format!("/local/domain/0/backend/vif/{g}/0"));
    assert_eq!((paths.handle, paths.mac, &paths.frontend, &paths.backend), (0, MAC, &fe, &be));

    assert_eq!(keys(xs, &fe), set(&["backend", "backend-id", "state", "handle", "mac"]));
    let be_keys = ["frontend", "frontend-id", "online", "state", "handle", "mac", "type", "bridge"];
    assert_eq!(keys(xs, &be), set(&be_keys));
    let read = |p: String| xs.read_string(&p).unwrap();
    for (key, value) in [("backend", be.as_str()), ("backend-id", "0"), ("state", "1"), ("handle", "0")] {
        assert_eq!(read(format!("{fe}/{key}")), value, "{fe}/{key}");
    }
    assert_eq!(read(format!("{fe}/mac")), "00:16:3e:00:00:01");
    let g_text = g.to_string();
    for (key, value) in [
        ("frontend", fe.as_str()),
        ("frontend-id", g_text.as_str()),
        ("online", "1"),
        ("state", "1"),
        ("handle", "0"),
        ("mac", "00:16:3e:00:00:01"),
        ("type", "vif"),
        ("bridge", "xenbr0"),
    ] {
        assert_eq!(read(format!("{be}/{key}")), value, "{be}/{key}");
    }
    let fe_perms = vec![Perm { domid: g, access: Access::None }, Perm { domid: 0, access: Access::Read }];
    let be_perms = vec![Perm { domid: 0, access: Access::None }, Perm { domid: g, access: Access::Read }];
    assert_eq!(xs.get_perms(&fe).unwrap(), fe_perms);
    assert_eq!(xs.get_perms(&format!("{fe}/mac")).unwrap(), fe_perms);
    assert_eq!(xs.get_perms(&be).unwrap(), be_perms);
    assert_eq!(xs.get_perms(&format!("{be}/state")).unwrap(), be_perms);

    // The guest's own connection: its frontend is its own, the backend is read-only.
    // The session is kept: dropping its hypervisor handle would end the domain.
    let guest_session = simhost::join(host.dir(), Credentials::Guest { token: guests[0].token }).unwrap();
    let guest = &guest_session.xenstore;
    guest.write(&format!("{fe}/state"), "4").expect("guest writes its frontend");
    assert_eq!(guest.read_string(&format!("{be}/mac")).unwrap(), "00:16:3e:00:00:01");
    let denied = guest.write(&format!("{be}/state"), "4").unwrap_err();
    assert!(denied.is_eacces(), "{denied}");
    // Another guest sees neither directory.
    let intruder_session = simhost::join(host.dir(), Credentials::Guest { token: guests[1].token }).unwrap();
    let intruder = &intruder_session.xenstore;
    for path in [format!("{fe}/mac"), format!("{be}/mac"), fe.clone(), be.clone()] {
        let err = intruder.read_string(&path).unwrap_err();
        assert!(err.is_eacces(), "guest {other} reading {path}: {err}");
    }
}

#[test]
fn attach_picks_the_lowest_free_handle_and_a_xen_mac() {
    let (host, guests) = host_with_guests(1);
    let (g, xs) = (guests[0].domid, host.toolstack());
    let attach = |handle| layout::attach(xs, &VifSpec { handle, ..VifSpec::new(g) }).unwrap();
    let (a, b) = (attach(None), attach(None));
    assert_eq!((a.handle, b.handle), (0, 1));
    assert_eq!(a.mac[..3], [0x00, 0x16, 0x3e]);
    assert_ne!(a.mac, b.mac, "random MACs");
    assert_eq!(attach(Some(5)).handle, 5);
    assert_eq!(layout::detach(xs, 0, g, 0, Duration::ZERO).unwrap(), DetachOutcome::Forced);
    assert_eq!(attach(None).handle, 0);
    assert_eq!(attach(None).handle, 2);
}

#[test]
fn attach_refuses_a_taken_handle_and_an_unknown_domain() {
    let (host, guests) = host_with_guests(1);
    let (g, xs) = (guests[0].domid, host.toolstack());
    layout::attach(xs, &VifSpec { handle: Some(3), ..VifSpec::new(g) }).unwrap();
    let taken = layout::attach(xs, &VifSpec { handle: Some(3), ..VifSpec::new(g) }).unwrap_err();
    assert!(matches!(taken, LayoutError::HandleInUse { domid, handle: 3 } if domid == g), "{taken:?}");
    let unknown = layout::attach(xs, &VifSpec::new(77)).unwrap_err();
    assert!(matches!(unknown, LayoutError::NoSuchDomain { domid: 77 }), "{unknown:?}");
    assert!(!xs.exists("/local/domain/0/backend/vif/77").unwrap());
}

/// Plays the backend of `be`: answers the toolstack's Closing with Closed.
fn play_backend(xs: Client, be: String) -> std::thread::JoinHandle<bool> {
    let watch = xs.watch(&format!("{be}/state"), None).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if xs.read_string(&format!("{be}/state")).is_ok_and(|s| s == "5") {
                assert_eq!(xs.read_string(&format!("{be}/online")).unwrap(), "0");
                xs.write(&format!("{be}/state"), "6").unwrap();
                return true;
            }
            let _ = watch.recv_timeout(Duration::from_millis(200));
        }
        false
    })
}

#[test]
fn detach_is_clean_when_the_backend_closes() {
    let (host, guests) = host_with_guests(1);
    let (g, xs) = (guests[0].domid, host.toolstack());
    let paths = layout::attach(xs, &VifSpec::new(g)).unwrap();
    let backend = play_backend(xs.clone(), paths.backend.clone());
    assert_eq!(layout::detach(xs, 0, g, 0, Duration::from_secs(10)).unwrap(), DetachOutcome::Clean);
    assert!(backend.join().unwrap(), "the backend saw Closing");
    for gone in [&paths.frontend, &paths.backend, &format!("/local/domain/0/backend/vif/{g}")] {
        assert!(!xs.exists(gone).unwrap(), "{gone} is left");
    }
    let again = layout::detach(xs, 0, g, 0, Duration::ZERO).unwrap_err();
    assert!(matches!(again, LayoutError::NoSuchVif { handle: 0, .. }), "{again:?}");
}

#[test]
fn detach_is_forced_after_the_timeout_without_a_backend() {
    let (host, guests) = host_with_guests(1);
    let (g, xs) = (guests[0].domid, host.toolstack());
    let paths = layout::attach(xs, &VifSpec::new(g)).unwrap();
    let started = Instant::now();
    assert_eq!(layout::detach(xs, 0, g, 0, Duration::from_millis(300)).unwrap(), DetachOutcome::Forced);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!xs.exists(&paths.frontend).unwrap() && !xs.exists(&paths.backend).unwrap());
    let unknown = layout::detach(xs, 0, g, 9, Duration::ZERO).unwrap_err();
    assert!(matches!(unknown, LayoutError::NoSuchVif { handle: 9, .. }), "{unknown:?}");
}

#[test]
fn list_reports_every_vif_sorted_with_states_hotplug_and_errors() {
    let (host, guests) = host_with_guests(2);
    let (a, b, xs) = (guests[0].domid, guests[1].domid, host.toolstack());
    assert!(layout::list(xs, 0).unwrap().is_empty());
    for (domid, handle) in [(b, 0), (a, 1), (a, 0)] {
        layout::attach(xs, &VifSpec { handle: Some(handle), mac: Some(MAC), ..VifSpec::new(domid) }).unwrap();
    }
    let be = format!("/local/domain/0/backend/vif/{a}/1");
    xs.write(&format!("{be}/state"), "4").unwrap();
    xs.write(&format!("{be}/hotplug-status"), "connected").unwrap();
    xs.write(&format!("/local/domain/{a}/device/vif/1/state"), "4").unwrap();
    xs.write(&format!("/local/domain/0/error/backend/vif/{b}/0/error"), "bad ring").unwrap();

    let list = layout::list(xs, 0).unwrap();
    let ids: Vec<(u16, u32)> = list.iter().map(|e| (e.paths.domid, e.paths.handle)).collect();
    assert_eq!(ids, [(a, 0), (a, 1), (b, 0)]);
    let connected = &list[1];
    assert_eq!((connected.backend_state, connected.frontend_state), (Some(4), Some(4)));
    assert_eq!(connected.hotplug_status.as_deref(), Some("connected"));
    assert_eq!(connected.mac_text.as_deref(), Some("00:16:3e:00:00:01"));
    assert_eq!(connected.paths.mac, MAC);
    assert_eq!((list[0].backend_state, list[0].frontend_state, list[0].error.as_deref()), (Some(1), Some(1), None));
    assert_eq!(list[2].error.as_deref(), Some("bad ring"));
}
