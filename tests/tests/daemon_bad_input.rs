//! A frontend (or toolstack entry) with bad input gets an `error` node and Closing for its
//! own vif only, while a pair of well-behaved guests keeps exchanging frames losslessly and
//! the daemon keeps running.

mod common;

use anyhow::{Context, ensure};
use common::{Lab, WAIT};
use grant::DomId;
use netback::xenbus::XenbusState;
use std::time::{Duration, Instant};

child_roles!();

/// Frontend keys of a frontend that the test plays itself (dom0 may write them).
fn publish(lab: &Lab, frontend: &str, keys: &[(&str, &str)]) -> anyhow::Result<()> {
    lab.xs().transaction(|tx| {
        for (k, v) in keys {
            tx.write(&format!("{frontend}/{k}"), *v)?;
        }
        tx.write(&format!("{frontend}/state"), XenbusState::Connected.value())
    })?;
    Ok(())
}

/// Waits for the vif of `domid` to be disabled: `error` under its backend dir (and at
/// Linux's path), state Closing, the daemon's report carrying the error. Returns the error.
fn expect_disabled(lab: &Lab, domid: DomId, backend: &str, about: &str) -> anyhow::Result<String> {
    lab.wait_state(backend, XenbusState::Closing).with_context(|| format!("case {about}"))?;
    let error = lab.xs().read_string(&format!("{backend}/error")).with_context(|| format!("{about}: error node"))?;
    ensure!(error.contains(about), "{about}: the error node says {error:?}");
    let linux = format!("/local/domain/0/error/backend/vif/{domid}/0/error");
    ensure!(lab.xs().read_string(&linux)? == error, "{about}: Linux's error path differs");
    // The control socket's view follows xenstore's shortly after.
    let deadline = Instant::now() + WAIT;
    loop {
        let report = lab.report(domid)?.context("the disabled vif is still listed")?;
        if report.error.as_deref() == Some(error.as_str()) {
            return Ok(error);
        }
        ensure!(Instant::now() < deadline, "{about}: the daemon reports {:?}", report.error);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn each_bad_input_disables_only_its_own_vif() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;

    let good_rings = [("rx-ring-ref", "9"), ("event-channel", "3"), ("request-rx-copy", "1")];
    // (domain name, frontend keys, what the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 4] = [
        ("garbage", vec![("tx-ring-ref", "garbage"), good_rings[0], good_rings[1], good_rings[2]], "tx-ring-ref"),
        ("ungranted", vec![("tx-ring-ref", "8"), good_rings[0], good_rings[1], good_rings[2]], "tx-ring-ref"),
        ("no-rx-copy", vec![("tx-ring-ref", "8"), good_rings[0], good_rings[1]], "request-rx-copy"),
        (
            "rx-flip",
            vec![("tx-ring-ref", "8"), good_rings[0], good_rings[1], ("request-rx-copy", "0")],
            "request-rx-copy",
        ),
    ];
    for (name, keys, about) in cases {
        let (spec, vif) = lab.domain(name)?;
        lab.wait_state(&vif.backend, XenbusState::InitWait)?;
        publish(&lab, &vif.frontend, &keys)?;
        let error = expect_disabled(&lab, spec.domid, &vif.backend, about)?;
        eprintln!("{name}: {error}");
        // It comes back only through a reconnect: Closed, then Initialising → InitWait.
        lab.xs().write(&format!("{}/state", vif.frontend), XenbusState::Closed.value())?;
        lab.wait_state(&vif.backend, XenbusState::Closed)?;
        lab.xs().write(&format!("{}/state", vif.frontend), XenbusState::Initialising.value())?;
        lab.wait_state(&vif.backend, XenbusState::InitWait)?;
    }

    // A MAC in the backend dir that does not parse (the toolstack's input).
    let (spec, vif) = lab.domain("bad-mac")?;
    lab.xs().write(&format!("{}/mac", vif.backend), "00:16:3e:zz:00:01")?;
    lab.wait_state(&vif.backend, XenbusState::InitWait)?;
    publish(&lab, &vif.frontend, &[("tx-ring-ref", "8"), good_rings[0], good_rings[1], good_rings[2]])?;
    expect_disabled(&lab, spec.domid, &vif.backend, "mac")?;

    // A real frontend with real ring grants naming an event channel it never allocated.
    let (spec, vif) = lab.domain("bad-evtchn")?;
    let hostile = lab.spawn_guest(&spec, "hostile-evtchn", &[])?;
    lab.hear(spec.domid, "published")?;
    expect_disabled(&lab, spec.domid, &vif.backend, "event channel")?;
    lab.guest_process(hostile).kill()?;
    lab.guest_process(hostile).wait()?;

    std::thread::sleep(Duration::from_millis(300));
    lab.finish_pair(a, b)?;
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    lab.stop()
}
