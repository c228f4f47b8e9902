//! Event channels between real processes: notify both ways through the pollable fd,
//! `take_pending` semantics, and `bind_interdomain` refusals with event_channel.c's errnos.

mod common;

use common::{Host, readable};
use grant::{EventChannel, EventChannels, EvtchnError};
use nix::errno::Errno;

#[test]
#[ignore = "child process of the other tests"]
fn child_guest() {
    common::child_main();
}

fn bind_errno(result: Result<impl EventChannel, EvtchnError>) -> Errno {
    match result {
        Err(EvtchnError::Bind { errno, .. }) => errno,
        Err(e) => panic!("unexpected {e}"),
        Ok(ch) => panic!("bind of port {} succeeded", ch.port()),
    }
}

#[test]
fn notify_both_ways_across_processes() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let port: u32 = guest.cmd("alloc 0")[0].parse().unwrap();
    assert_eq!(port, 1, "ports count from 1");
    let ch = dom0.bind_interdomain(guest.domid, port).unwrap();
    assert_eq!(ch.port(), 1);
    // Xen marks a freshly bound port pending (notifications to an unbound port may be lost).
    assert!(readable(&ch, 0));
    assert!(ch.take_pending().unwrap());
    assert!(!ch.take_pending().unwrap());
    assert!(!readable(&ch, 0));

    // dom0 → guest; repeated notifies coalesce into one pending event.
    for _ in 0..3 {
        ch.notify().unwrap();
    }
    assert_eq!(guest.cmd(&format!("wait {port} 5000")), vec!["true"]);
    assert_eq!(guest.cmd(&format!("take {port}")), vec!["true"]);
    assert_eq!(guest.cmd(&format!("take {port}")), vec!["false"]);
    assert_eq!(guest.cmd(&format!("wait {port} 20")), vec!["false"]);

    // guest → dom0.
    guest.cmd(&format!("notify {port}"));
    assert!(readable(&ch, 5000));
    ch.unmask().unwrap();
    assert!(ch.take_pending().unwrap());
    assert!(!readable(&ch, 0));
    assert!(!ch.take_pending().unwrap());
}

#[test]
fn bind_refusals() {
    let host = Host::start();
    let dom0 = host.dom0();
    let (mut a, mut b) = (host.guest(), host.guest());
    let for_other: u32 = a.cmd("alloc 77")[0].parse().unwrap();
    let for_dom0: u32 = a.cmd("alloc 0")[0].parse().unwrap();
    // Allocated for another domain.
    assert_eq!(bind_errno(dom0.bind_interdomain(a.domid, for_other)), Errno::EINVAL);
    assert_eq!(b.try_cmd(&format!("bind {} {for_dom0}", a.domid)), Err("EINVAL".into()));
    // No such port, no such domain.
    assert_eq!(bind_errno(dom0.bind_interdomain(a.domid, 999)), Errno::EINVAL);
    assert_eq!(bind_errno(dom0.bind_interdomain(999, 1)), Errno::ESRCH);
    // Already bound.
    let ch = dom0.bind_interdomain(a.domid, for_dom0).unwrap();
    assert_eq!(bind_errno(dom0.bind_interdomain(a.domid, for_dom0)), Errno::EINVAL);
    // Closing our end returns the guest's port to unbound-for-dom0: it can be bound again.
    drop(ch);
    let again = dom0.bind_interdomain(a.domid, for_dom0).unwrap();
    assert!(again.take_pending().unwrap());
    a.cmd(&format!("notify {for_dom0}"));
    assert!(readable(&again, 5000));
}

#[test]
fn guest_to_guest_channel_and_dead_peer() {
    let host = Host::start();
    let (mut a, mut b) = (host.guest(), host.guest());
    let pa: u32 = a.cmd(&format!("alloc {}", b.domid))[0].parse().unwrap();
    let pb: u32 = b.cmd(&format!("bind {} {pa}", a.domid))[0].parse().unwrap();
    assert_eq!(b.cmd(&format!("take {pb}")), vec!["true"]);
    a.cmd(&format!("notify {pa}"));
    assert_eq!(b.cmd(&format!("wait {pb} 5000")), vec!["true"]);
    b.cmd(&format!("notify {pb}"));
    assert_eq!(a.cmd(&format!("wait {pa} 5000")), vec!["true"]);
    // Once the peer is gone, notifies go nowhere but do not fail.
    let d = b.domid;
    b.exit();
    host.wait_event(grant::sim::DomainEvent::Released(d));
    a.cmd(&format!("notify {pa}"));
}
