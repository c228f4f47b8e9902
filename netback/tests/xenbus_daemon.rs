//! The daemon against a simulated host, driven as the toolstack and as the guests would
//! (writing their xenstore nodes): probing, disabling vifs on bad input, detach, the
//! control socket and stopping. None of these needs a running data path; those that do
//! are in `xenbus_daemon_datapath.rs`.

mod daemon_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use anyhow::ensure;
use daemon_common::*;
use netback::control::{self, Request, Response};
use netback::daemon::DaemonError;
use netback::vif::VifId;
use netback::xenbus::XenbusState;
use simhost::SimHost;

#[test]
fn probe_publishes_features_and_initwait_per_vif() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let (a, b) = (h.guest("a")?, h.guest("b")?);
    let va = write_vif_layout(h.xs(), a.domid(), 0, None)?;
    let vb = write_vif_layout(h.xs(), b.domid(), 0, None)?;
    for v in [&va, &vb] {
        wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
        for (key, want) in [
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-split-event-channels", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
        ] {
            ensure!(read(h.xs(), &format!("{}/{key}", v.be))?.as_deref() == Some(want), "{}/{key}", v.be);
        }
        // The guest can read what we published.
        ensure!(read(&a.xenstore, &format!("{}/feature-rx-copy", va.be))?.as_deref() == Some("1"));
    }
    let vifs = wait_list(&h.sock, |v| v.len() == 2)?;
    ensure!(vifs[0].id == VifId { domid: a.domid(), handle: 0 } && vifs[1].id.domid == b.domid(), "{vifs:?}");
    ensure!(vifs.iter().all(|v| v.state == 2 && v.error.is_none() && v.port.is_none()), "{vifs:?}");
    ensure!(vifs[0].name == format!("vif{}.0", a.domid()) && vifs[0].mac.as_deref() == Some("00:16:3e:00:00:00"));
    Ok(())
}

/// Frontend keys of a well-formed Connected frontend, except for what each case breaks.
const GOOD_KEYS: [(&str, &str); 4] =
    [("tx-ring-ref", "8"), ("rx-ring-ref", "9"), ("event-channel", "5"), ("request-rx-copy", "1")];

#[test]
fn bad_frontend_inputs_disable_only_that_vif() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("bad")?;
    let healthy = h.guest("healthy")?;
    let domid = guest.domid();
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("tx-ring-ref", Some("garbage"), r#"22 reading {fe}/tx-ring-ref: "garbage" is not a grant reference"#),
        ("request-rx-copy", None, "2 reading {fe}/request-rx-copy: no such node"),
        ("mac", Some("00:16:3e:zz:00:01"), r#"22 reading {be}/mac: "00:16:3e:zz:00:01" is not a MAC address"#),
        ("event-channel", None, "2 reading {fe}/event-channel: no such node"),
    ];
    let mut vifs = Vec::new();
    for (handle, (key, value, _)) in (0..).zip(cases) {
        let v = write_vif_layout(h.xs(), domid, handle, None)?;
        wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
        if key == "mac" {
            h.xs().write(&format!("{}/mac", v.be), value.unwrap_or_default())?;
        }
        let keys: Vec<_> = GOOD_KEYS.iter().copied().filter(|(k, _)| *k != key).collect();
        let mut keys: Vec<(&str, &str)> = keys;
        if let (Some(value), true) = (value, key != "mac") {
            keys.push((key, value));
        }
        keys.push(("state", "4"));
        write_keys(&guest.xenstore, &v.fe, &keys)?;
        vifs.push(v);
    }
    let other = write_vif_layout(h.xs(), healthy.domid(), 0, None)?;
    for (v, (key, _, message)) in vifs.iter().zip(cases) {
        wait_state(h.xs(), &v.be, XenbusState::Closing)?;
        let want = message.replace("{fe}", &v.fe).replace("{be}", &v.be);
        for path in [format!("{}/error", v.be), v.linux_error()] {
            let got = read(h.xs(), &path)?.unwrap_or_default();
            ensure!(got.starts_with(&want), "{key}: {path} = {got:?}, want {want:?}");
        }
    }
    wait_state(h.xs(), &other.be, XenbusState::InitWait)?;
    ensure!(h.running(), "the daemon stopped");
    let list = wait_list(&h.sock, |l| l.len() == 5 && l.iter().filter(|v| v.error.is_some()).count() == 4)?;
    ensure!(list.iter().filter(|v| v.state == 5).count() == 4, "{list:?}");

    // The disabled vif follows its frontend through Closed and back to InitWait.
    let v = &vifs[0];
    write_keys(&guest.xenstore, &v.fe, &[("state", "6")])?;
    wait_state(h.xs(), &v.be, XenbusState::Closed)?;
    write_keys(&guest.xenstore, &v.fe, &[("state", "1")])?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    Ok(())
}

#[test]
fn unexpected_frontend_state_is_fatal() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("odd")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    write_keys(&guest.xenstore, &v.fe, &[("state", "7")])?;
    wait_state(h.xs(), &v.be, XenbusState::Closing)?;
    ensure!(read(h.xs(), &v.linux_error())?.as_deref() == Some("22 saw state 7 at frontend"));
    Ok(())
}

#[test]
fn detach_closes_an_unconnected_vif_and_removal_forgets_it() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("detach")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    let keep = write_vif_layout(h.xs(), guest.domid(), 1, None)?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    wait_state(h.xs(), &keep.be, XenbusState::InitWait)?;
    // `xl network-detach`: online=0 and state=5, then wait for our Closed.
    h.xs().transaction(|tx| {
        tx.write(&format!("{}/online", v.be), "0")?;
        tx.write(&format!("{}/state", v.be), "5")
    })?;
    wait_state(h.xs(), &v.be, XenbusState::Closed)?;
    // It stays closed even though the frontend still says Initialising.
    wait_list(&h.sock, |l| l.iter().any(|r| r.id.handle == 0 && r.state == 6))?;
    h.xs().rm(&v.be)?;
    h.xs().rm(&v.fe)?;
    let list = wait_list(&h.sock, |l| l.len() == 1)?;
    ensure!(!h.xs().exists(&v.be)?, "the daemon re-created {}", v.be);
    ensure!(list[0].id.handle == 1 && list[0].state == 2, "{list:?}");
    Ok(())
}

#[test]
fn control_socket_answers_lists_and_survives_malformed_lines() -> anyhow::Result<()> {
    let host = SimHost::start_temp()?;
    let sock = host.dir().join("ctl.sock");
    // A stale socket file from a dead daemon: nobody answers on it.
    drop(UnixListener::bind(&sock)?);
    ensure!(sock.exists());
    let h = Harness::start_on(host, sock)?;
    let guest = h.guest("ctl")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 3, None)?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    let list = wait_list(&h.sock, |l| l.len() == 1)?;
    ensure!(list[0].id == VifId { domid: guest.domid(), handle: 3 } && list[0].frontend_state == Some(1), "{list:?}");

    let stream = UnixStream::connect(&h.sock)?;
    let mut lines = BufReader::new(&stream);
    let mut ask = |line: &str| -> anyhow::Result<Response> {
        (&stream).write_all(line.as_bytes())?;
        let mut answer = String::new();
        lines.read_line(&mut answer)?;
        Ok(serde_json::from_str(&answer)?)
    };
    ensure!(matches!(ask("this is not json\n")?, Response::Error { .. }));
    ensure!(matches!(ask("{\"op\":\"reboot\"}\n")?, Response::Error { .. }));
    ensure!(matches!(ask("{\"op\":\"list\"}\n")?, Response::Vifs { vifs } if vifs.len() == 1));
    ensure!(control::call(&h.sock, &Request::List)? == Response::Vifs { vifs: list });

    // A second daemon on the same socket refuses to start.
    let stop = std::sync::Arc::new(new_eventfd()?);
    let second = spawn_daemon(&h.host, &h.sock, &stop)?.join().expect("second daemon panicked");
    ensure!(matches!(second, Err(DaemonError::ControlSocket { .. })), "{second:?}");
    ensure!(control::list(&h.sock)?.len() == 1, "the first daemon still answers");
    Ok(())
}

#[test]
fn stop_fd_returns_ok_and_removes_the_socket() -> anyhow::Result<()> {
    let mut h = Harness::start()?;
    let guest = h.guest("stop")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    ensure!(h.sock.exists());
    h.stop()?;
    ensure!(!h.sock.exists(), "socket left behind");
    ensure!(control::list(&h.sock).is_err());
    Ok(())
}
