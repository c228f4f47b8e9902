//! The daemon with real guests (the netfront-test library in a thread, as its own domain):
//! connecting, the hotplug gate, a bad grant, close/reconnect and domain destruction.

mod daemon_common;

use std::thread::JoinHandle;

use anyhow::ensure;
use daemon_common::*;
use grant::EventChannels;
use netback::xenbus::XenbusState;
use netfront_test::{Netfront, NetfrontConfig};
use simhost::Session;

/// Connects a netfront on `device/vif/<handle>` in a thread; it returns once the backend
/// is Connected (or fails after the netfront's timeout), then disconnects cleanly.
fn spawn_guest(session: Session, handle: u32) -> JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let nf = Netfront::connect(&session.domain, session.xenstore.clone(), handle, NetfrontConfig::default())?;
        nf.disconnect()?;
        Ok(())
    })
}

fn join(guest: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    guest.join().map_err(|_| anyhow::anyhow!("guest thread panicked"))?
}

#[test]
fn a_real_guest_connects_and_disconnects() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("guest")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    let thread = {
        let session = guest.clone();
        std::thread::spawn(move || -> anyhow::Result<Netfront<_>> {
            Ok(Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?)
        })
    };
    wait_state(h.xs(), &v.be, XenbusState::Connected)?;
    let nf = thread.join().map_err(|_| anyhow::anyhow!("guest panicked"))??;
    let list = wait_list(&h.sock, |l| l.len() == 1 && l[0].port.is_some())?;
    ensure!(list[0].state == 4 && list[0].frontend_state == Some(4) && list[0].error.is_none(), "{list:?}");
    nf.disconnect()?;
    wait_state(h.xs(), &v.be, XenbusState::Closed)?;
    wait_list(&h.sock, |l| l[0].port.is_none())?;
    Ok(())
}

#[test]
fn the_hotplug_gate_holds_connected_until_the_script_reports() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("hotplug")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, Some("/etc/xen/scripts/vif-bridge"))?;
    let thread = spawn_guest(guest.clone(), 0);
    // The frontend is Connected and the data path runs, but we stay InitWait.
    wait_list(&h.sock, |l| l.len() == 1 && l[0].frontend_state == Some(4) && l[0].port.is_some())?;
    ensure!(read(h.xs(), &format!("{}/state", v.be))?.as_deref() == Some("2"), "went Connected before the script");
    h.xs().write(&format!("{}/hotplug-status", v.be), "connected")?;
    wait_state(h.xs(), &v.be, XenbusState::Connected)?;
    join(thread)?;
    wait_state(h.xs(), &v.be, XenbusState::Closed)?;
    Ok(())
}

#[test]
fn an_ungranted_ring_ref_disables_the_vif() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("badgrant")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
    // A real event channel, but ring refs the guest never granted.
    let channel = guest.domain.alloc_unbound(0)?;
    let port = grant::EventChannel::port(&channel).to_string();
    let keys = [("tx-ring-ref", "4000"), ("rx-ring-ref", "4001"), ("event-channel", &port), ("request-rx-copy", "1")];
    write_keys(&guest.xenstore, &v.fe, &keys)?;
    write_keys(&guest.xenstore, &v.fe, &[("state", "4")])?;
    wait_state(h.xs(), &v.be, XenbusState::Closing)?;
    for path in [format!("{}/error", v.be), v.linux_error()] {
        let got = read(h.xs(), &path)?.unwrap_or_default();
        ensure!(got.contains("tx-ring-ref 4000"), "{path} = {got:?}");
    }
    ensure!(h.running());
    Ok(())
}

#[test]
fn a_frontend_can_close_and_reconnect() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let guest = h.guest("cycle")?;
    let v = write_vif_layout(h.xs(), guest.domid(), 0, None)?;
    for round in 0..3 {
        join(spawn_guest(guest.clone(), 0))?;
        wait_state(h.xs(), &v.be, XenbusState::Closed)?;
        // A restarting netfront goes Initialising again; we answer InitWait.
        write_keys(&guest.xenstore, &v.fe, &[("state", "1")])?;
        wait_state(h.xs(), &v.be, XenbusState::InitWait)?;
        let list = wait_list(&h.sock, |l| l.len() == 1)?;
        ensure!(list[0].error.is_none() && list[0].port.is_none(), "round {round}: {list:?}");
    }
    Ok(())
}

#[test]
fn a_destroyed_guest_closes_its_vif() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let doomed = h.guest("doomed")?;
    let other = h.guest("other")?;
    let v = write_vif_layout(h.xs(), doomed.domid(), 0, None)?;
    let w = write_vif_layout(h.xs(), other.domid(), 0, None)?;
    let thread = {
        let session = doomed.clone();
        std::thread::spawn(move || -> anyhow::Result<Netfront<_>> {
            Ok(Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?)
        })
    };
    wait_state(h.xs(), &v.be, XenbusState::Connected)?;
    let nf = thread.join().map_err(|_| anyhow::anyhow!("guest panicked"))??;
    h.host.destroy_domain(doomed.domid())?;
    wait_state(h.xs(), &v.be, XenbusState::Closed)?;
    drop(nf);
    wait_state(h.xs(), &w.be, XenbusState::InitWait)?;
    let list = wait_list(&h.sock, |l| l.iter().any(|r| r.id.domid == doomed.domid() && r.port.is_none()))?;
    ensure!(list.len() == 2, "{list:?}");
    Ok(())
}
