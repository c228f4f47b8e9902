//! Traffic through the netback daemon between guest processes: unicast between pairs,
//! byte-exact and in order with nothing lost, and broadcast to everyone but the sender.

mod common;

use anyhow::ensure;
use common::guest::{ENV_COUNT, ENV_FLOW, ENV_RATE, PeerReport};
use common::{Lab, mac_of};
use netback::xenbus::XenbusState;
use netfront_test::mac::format_mac;
use std::time::Duration;

child_roles!();

#[test]
fn unicast_between_three_guests_is_byte_exact_in_order_and_lossless() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let mut guests = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let (spec, vif) = lab.domain(name)?;
        lab.spawn_guest(&spec, "peer", &[(ENV_RATE, "3000".into())])?;
        guests.push((spec.domid, vif));
    }
    for (_, vif) in &guests {
        lab.wait_state(&vif.backend, XenbusState::Connected)?;
    }
    // alice <-> bob is a pair; carol talks to nobody's flow but sends to alice, who must
    // neither lose nor mix up bob's frames (carol's arrive on a flow of their own).
    let (a, b, c) = (guests[0].0, guests[1].0, guests[2].0);
    lab.tell(a, "start", &format_mac(&mac_of(b)))?;
    lab.tell(b, "start", &format_mac(&mac_of(a)))?;
    lab.tell(c, "start", &format_mac(&mac_of(b)))?;
    std::thread::sleep(Duration::from_millis(1500));
    let (sent_a, sent_b) = lab.finish_pair(a, b)?;
    lab.tell(c, "stop", "1")?;
    lab.tell(c, "expect", "0")?;
    lab.hear(c, "report")?;
    for i in 0..3 {
        lab.wait_guest(i)?;
    }
    let report_a = lab.report(a)?.expect("alice's vif");
    ensure!(report_a.stats.tx_packets >= sent_a, "alice's vif counted {:?}", report_a.stats);
    ensure!(report_a.stats.rx_packets >= sent_b, "alice's vif counted {:?}", report_a.stats);
    ensure!(report_a.stats.copy_batches > 0 && report_a.stats.copy_segments >= report_a.stats.tx_packets);
    eprintln!("alice sent {sent_a}, bob sent {sent_b}; alice's vif: {:?}", report_a.stats);
    lab.stop()
}

#[test]
fn broadcast_reaches_every_other_guest_and_not_the_sender() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    const COUNT: u64 = 300;
    let mut lab = Lab::start()?;
    let (sender, sender_vif) = lab.domain("sender")?;
    let mut listeners = Vec::new();
    for name in ["l1", "l2", "l3"] {
        let (spec, vif) = lab.domain(name)?;
        let env = [(ENV_COUNT, COUNT.to_string()), (ENV_FLOW, sender.domid.to_string())];
        listeners.push((lab.spawn_guest(&spec, "listener", &env)?, spec.domid, vif));
    }
    let sender_proc = lab.spawn_guest(&sender, "broadcaster", &[(ENV_COUNT, COUNT.to_string())])?;
    lab.wait_state(&sender_vif.backend, XenbusState::Connected)?;
    for (_, _, vif) in &listeners {
        lab.wait_state(&vif.backend, XenbusState::Connected)?;
    }
    lab.tell(sender.domid, "start", "ff:ff:ff:ff:ff:ff")?;
    for (index, domid, _) in &listeners {
        let report = PeerReport::parse(&lab.hear(*domid, "report")?)?;
        ensure!(report.is_perfect(COUNT), "listener {domid} got {report:?} of {COUNT} broadcasts");
        lab.wait_guest(*index)?;
    }
    lab.hear(sender.domid, "sent")?;
    let port = lab.report(sender.domid)?.and_then(|r| r.port).expect("the sender's switch port");
    ensure!(port.floods >= COUNT, "the switch flooded {} of {COUNT} broadcasts", port.floods);
    lab.tell(sender.domid, "stop", "1")?;
    let own = PeerReport::parse(&lab.hear(sender.domid, "report")?)?;
    ensure!(own.received == 0, "the sender got {} of its own broadcasts back", own.received);
    lab.wait_guest(sender_proc)?;
    lab.stop()
}
