//! Knobs through the control socket while two real guests (netfront-test in threads, each
//! its own domain) exchange sequence-checked frames: no loss and no reordering while every
//! knob changes; coalescing knobs cut notifications per packet; a lone ping-pong completes
//! with the defaults; invalid values are refused.

mod daemon_common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::ensure;
use daemon_common::*;
use netback::control::{self, Request, Response};
use netback::vif::{PartialKnobs, VifStats};
use netback::xenbus::XenbusState;
use netfront_test::session::{PeerConfig, PeerReport, run_peer_traffic};
use netfront_test::traffic::FrameSize;
use netfront_test::{Netfront, NetfrontConfig};

fn mac(domid: u16) -> [u8; 6] {
    let [hi, lo] = domid.to_be_bytes();
    [0x00, 0x16, 0x3e, 0x10, hi, lo]
}

/// Two guests sending to each other at `rate` frames/s for `secs`; their reports.
fn run_pair(h: &Harness, rate: u64, secs: f64, during: impl FnOnce()) -> anyhow::Result<Vec<PeerReport>> {
    let sessions = [h.guest("a")?, h.guest("b")?];
    let ids: Vec<u16> = sessions.iter().map(|s| s.domid()).collect();
    for &d in &ids {
        let v = write_vif_layout(h.xs(), d, 0, None)?;
        let text = netfront_test::mac::format_mac(&mac(d));
        write_keys(h.xs(), &v.fe, &[("mac", &text)])?;
        write_keys(h.xs(), &v.be, &[("mac", &text)])?;
    }
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<JoinHandle<anyhow::Result<PeerReport>>> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (barrier, peer) = (barrier.clone(), mac(ids[1 - i]));
            std::thread::spawn(move || {
                let mut nf = Netfront::connect(&s.domain, s.xenstore.clone(), 0, NetfrontConfig::default())?;
                barrier.wait();
                let cfg = PeerConfig {
                    flow: u32::from(s.domid()),
                    peer,
                    ip: Ipv4Addr::new(10, 0, 0, i as u8 + 1),
                    size: FrameSize::Fixed(200),
                    rate,
                    duration: Duration::from_secs_f64(secs),
                    linger: Duration::from_millis(500),
                    start: None,
                    tcp: None,
                };
                let report = run_peer_traffic(&mut nf, &cfg)?;
                nf.disconnect()?;
                Ok(report)
            })
        })
        .collect();
    barrier.wait();
    during();
    let reports = threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow::anyhow!("guest panicked"))?)
        .collect::<anyhow::Result<Vec<_>>>()?;
    for &d in &ids {
        wait_state(h.xs(), &format!("/local/domain/0/backend/vif/{d}/0"), XenbusState::Closed)?;
    }
    Ok(reports)
}

fn totals(h: &Harness) -> anyhow::Result<VifStats> {
    let mut t = VifStats::default();
    for v in control::list(&h.sock)? {
        let s = v.stats;
        t.tx_packets += s.tx_packets;
        t.rx_packets += s.rx_packets;
        t.notifications_in += s.notifications_in;
        t.notifications_out += s.notifications_out;
        t.batching.events_armed_ahead += s.batching.events_armed_ahead;
    }
    Ok(t)
}

fn per_packet(s: &VifStats) -> f64 {
    (s.notifications_in + s.notifications_out) as f64 / (s.tx_packets + s.rx_packets).max(1) as f64
}

/// Frontend → backend notifications per packet the guests sent (what `req_event_ahead` acts on).
fn kicks_per_packet(s: &VifStats) -> f64 {
    s.notifications_in as f64 / s.tx_packets.max(1) as f64
}

#[test]
fn knobs_change_mid_traffic_without_loss() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let sock = h.sock.clone();
    let changes = [
        PartialKnobs { tx_drain_max: Some(1), rx_drain_max: Some(1), copy_batch: Some(1), ..Default::default() },
        PartialKnobs {
            req_event_ahead: Some(32),
            notify_every: Some(128),
            notify_usecs: Some(500),
            ..Default::default()
        },
        PartialKnobs { busy_poll_usecs: Some(200), copy_batch: Some(7), ..Default::default() },
        PartialKnobs { tx_drain_max: Some(256), rx_drain_max: Some(3), mtu: Some(1000), ..Default::default() },
        PartialKnobs {
            notify_every: Some(1),
            req_event_ahead: Some(1),
            busy_poll_usecs: Some(0),
            ..Default::default()
        },
    ];
    let reports = run_pair(&h, 2000, 1.5, || {
        for round in 0..3 {
            for change in &changes {
                std::thread::sleep(Duration::from_millis(80));
                let answer = control::set(&sock, None, *change);
                assert!(answer.is_ok(), "round {round}: {answer:?}");
            }
        }
    })?;
    let vifs = control::list(&h.sock)?;
    ensure!(vifs.iter().all(|v| v.stats.batching.knob_changes > 0), "workers never saw a change: {vifs:?}");
    for (i, r) in reports.iter().enumerate() {
        let e = reports[1 - i].end_to_end(r);
        ensure!(e.sent > 1000 && e.lost == 0 && e.reordered == 0 && e.duplicated == 0, "flow {}: {e:?}", r.flow);
    }
    Ok(())
}

#[test]
fn coalescing_knobs_arm_the_tx_event_ahead() -> anyhow::Result<()> {
    let h = Harness::start()?;
    run_pair(&h, 4000, 1.0, || {})?;
    let default = totals(&h)?;
    let coalesce = PartialKnobs {
        req_event_ahead: Some(128),
        notify_every: Some(256),
        notify_usecs: Some(2000),
        ..Default::default()
    };
    control::set(&h.sock, None, coalesce)?;
    run_pair(&h, 4000, 1.0, || {})?;
    let coalesced = totals(&h)?.since(&default);
    let (d, c) = (kicks_per_packet(&default), kicks_per_packet(&coalesced));
    let (d_all, c_all) = (per_packet(&default), per_packet(&coalesced));
    eprintln!(
        "frontend kicks per packet: default {d:.3}, coalescing {c:.3}; all notifications {d_all:.3} vs {c_all:.3}"
    );
    ensure!(default.tx_packets > 0 && coalesced.tx_packets > 0 && d > 0.0, "no traffic or no kicks");
    // How far notifications fall depends on how loaded the machine is (a loaded worker
    // batches by itself), so the ratios above are reported, and the study measures them.
    // What must hold on any machine is the mechanism: with the defaults the TX event is
    // always re-armed at req_cons + 1; with coalescing
    // knobs the event is armed ahead. (Pushes are deferred only while a ring stays busy,
    // which a paced 4000 frames/s need not make it; the study covers that.)
    let (db, cb) = (&default.batching, &coalesced.batching);
    ensure!(db.events_armed_ahead == 0, "defaults armed the TX event ahead {} times", db.events_armed_ahead);
    ensure!(cb.events_armed_ahead > 0, "req-event-ahead = 128 never armed the TX event ahead: {cb:?}");
    Ok(())
}

#[test]
fn a_lone_ping_pong_completes_with_default_knobs() -> anyhow::Result<()> {
    let h = Harness::start()?;
    // One frame each way (rate 1/s for a moment): delivered with no batching delay to wait out.
    let reports = run_pair(&h, 1, 0.01, || {})?;
    for (i, r) in reports.iter().enumerate() {
        let e = reports[1 - i].end_to_end(r);
        ensure!(e.sent >= 1 && e.lost == 0, "flow {}: {e:?}", r.flow);
    }
    Ok(())
}

#[test]
fn invalid_knobs_are_refused_and_nothing_changes() -> anyhow::Result<()> {
    let h = Harness::start()?;
    let deadline = std::time::Instant::now() + WAIT;
    while control::list(&h.sock).is_err() {
        ensure!(std::time::Instant::now() < deadline, "the control socket never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let bad = [
        PartialKnobs { tx_drain_max: Some(0), ..Default::default() },
        PartialKnobs { req_event_ahead: Some(257), ..Default::default() },
        PartialKnobs { notify_usecs: Some(5_000_000), ..Default::default() },
        PartialKnobs { mtu: Some(10), copy_batch: Some(8), ..Default::default() },
        PartialKnobs { rx_stall_timeout_ms: Some(3_600_001), ..Default::default() },
    ];
    for change in bad {
        match control::call(&h.sock, &Request::Set { vif: None, knobs: change })? {
            Response::Error { message } => ensure!(message.contains("invalid knobs"), "{message}"),
            other => anyhow::bail!("accepted {change:?}: {other:?}"),
        }
    }
    let unknown = netback::vif::VifId { domid: 77, handle: 0 };
    let answer = control::call(&h.sock, &Request::Set { vif: Some(unknown), knobs: PartialKnobs::default() })?;
    ensure!(matches!(answer, Response::Error { ref message } if message.contains("no vif")), "{answer:?}");
    let (defaults, _) = control::set(&h.sock, None, PartialKnobs::default())?;
    ensure!(defaults == netback::vif::KnobValues::default(), "{defaults:?}");
    Ok(())
}
