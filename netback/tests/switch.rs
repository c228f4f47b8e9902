//! Behaviour of the embedded learning switch through its public API.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use netback::frame::{BROADCAST_MAC, Frame};
use netback::port::{Backlog, DropReason, TransmitOutcome, Uplink};
use netback::switch::{Switch, SwitchConfig, SwitchError, SwitchPort};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xa];
const B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xb];
const C: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xc];
const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];

/// A 64-byte frame whose payload starts with `tag`.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u32) -> Frame {
    let mut d = vec![0u8; 64];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&[0x08, 0x00]);
    d[14..18].copy_from_slice(&tag.to_be_bytes());
    Frame::new(d)
}

fn tag(f: &Frame) -> u32 {
    u32::from_be_bytes(f.data()[14..18].try_into().unwrap())
}

/// Tags of every frame waiting on `port`, in order.
fn drain(port: &SwitchPort) -> Vec<u32> {
    std::iter::from_fn(|| port.pop()).map(|f| tag(&f)).collect()
}

fn switch_with(config: SwitchConfig, n: usize) -> (Arc<Switch>, Vec<SwitchPort>) {
    let sw = Switch::new(config);
    let ports = (0..n).map(|i| sw.add_port(&format!("vif{i}.0")).unwrap()).collect();
    (sw, ports)
}

fn switch(n: usize) -> (Arc<Switch>, Vec<SwitchPort>) {
    switch_with(SwitchConfig::default(), n)
}

fn readable(port: &SwitchPort) -> bool {
    let mut fds = [PollFd::new(port.ready_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
}

#[test]
fn learned_unicast_goes_only_to_its_port() {
    let (sw, p) = switch(3);
    // B is unknown: flooded. A is learned on p0.
    assert_eq!(p[0].transmit(frame(B, A, 1)), TransmitOutcome::Flooded { queued: 2, queue_full: 0 });
    assert_eq!((drain(&p[1]), drain(&p[2])), (vec![1], vec![1]));
    // p1 answers A: A is known, so only p0 gets it; B is learned on p1.
    assert_eq!(p[1].transmit(frame(A, B, 2)), TransmitOutcome::Sent);
    assert_eq!((drain(&p[0]), drain(&p[2])), (vec![2], vec![]));
    assert_eq!(p[0].transmit(frame(B, A, 3)), TransmitOutcome::Sent);
    assert_eq!((drain(&p[1]), drain(&p[2])), (vec![3], vec![]));

    let table = sw.mac_table();
    let entries: Vec<_> = table.iter().map(|e| (e.mac, e.port)).collect();
    assert_eq!(entries, vec![(A, p[0].id()), (B, p[1].id())]);
    let s0 = p[0].stats();
    assert_eq!((s0.tx_frames, s0.tx_bytes, s0.rx_frames, s0.rx_bytes, s0.floods), (2, 128, 1, 64, 1));
}

#[test]
fn broadcast_multicast_and_unknown_flood_to_all_others() {
    let (sw, p) = switch(4);
    for (i, dst) in [BROADCAST_MAC, MCAST, C].into_iter().enumerate() {
        let t = u32::try_from(i).unwrap();
        assert_eq!(p[1].transmit(frame(dst, A, t)), TransmitOutcome::Flooded { queued: 3, queue_full: 0 });
    }
    assert_eq!(drain(&p[1]), Vec::<u32>::new(), "never back to the sender");
    for i in [0, 2, 3] {
        assert_eq!(drain(&p[i]), vec![0, 1, 2]);
    }
    // A group source MAC is dropped and never learned.
    assert_eq!(p[2].transmit(frame(B, MCAST, 9)), TransmitOutcome::Dropped(DropReason::BadSourceMac));
    assert_eq!(p[2].stats().dropped_bad_source_mac, 1);
    assert!(sw.mac_table().iter().all(|e| e.mac == A));
    assert_eq!(p[1].stats().floods, 3);
}

#[test]
fn a_lone_port_floods_to_nobody() {
    let (_sw, p) = switch(1);
    assert_eq!(p[0].transmit(frame(BROADCAST_MAC, A, 1)), TransmitOutcome::Flooded { queued: 0, queue_full: 0 });
    assert_eq!(p[0].pop(), None);
}

#[test]
fn runts_are_dropped_and_counted() {
    let (_sw, p) = switch(2);
    assert_eq!(p[0].transmit(Frame::new(vec![0xff; 13])), TransmitOutcome::Dropped(DropReason::Runt));
    assert_eq!(p[0].transmit(Frame::new(Vec::new())), TransmitOutcome::Dropped(DropReason::Runt));
    let s = p[0].stats();
    assert_eq!((s.tx_frames, s.tx_bytes, s.dropped_runt), (2, 13, 2));
    assert_eq!(p[1].pop(), None);
}

#[test]
fn no_hairpin() {
    let (_sw, p) = switch(2);
    p[0].transmit(frame(BROADCAST_MAC, A, 1));
    p[0].transmit(frame(BROADCAST_MAC, B, 2));
    // A and B both live behind p0: A -> B must not come back out of p0.
    assert_eq!(p[0].transmit(frame(B, A, 3)), TransmitOutcome::Dropped(DropReason::Hairpin));
    // Nor may a frame to oneself.
    assert_eq!(p[0].transmit(frame(A, A, 4)), TransmitOutcome::Dropped(DropReason::Hairpin));
    assert_eq!(drain(&p[0]), Vec::<u32>::new());
    assert_eq!(drain(&p[1]), vec![1, 2]);
    assert_eq!(p[0].stats().dropped_hairpin, 2);
}

#[test]
fn entries_age_out() {
    let config = SwitchConfig { mac_aging: Duration::from_millis(100), ..SwitchConfig::default() };
    let (sw, p) = switch_with(config, 3);
    p[0].transmit(frame(BROADCAST_MAC, A, 0));
    assert_eq!(p[1].transmit(frame(A, B, 1)), TransmitOutcome::Sent);
    thread::sleep(Duration::from_millis(250));
    assert!(sw.mac_table().iter().all(|e| e.mac == B), "A aged out of the snapshot");
    // A is forgotten: flooded again.
    assert_eq!(p[1].transmit(frame(A, B, 2)), TransmitOutcome::Flooded { queued: 2, queue_full: 0 });
    assert_eq!((drain(&p[0]), drain(&p[2])), (vec![1, 2], vec![0, 2]));
}

#[test]
fn the_batched_fast_path_ages_out_like_the_table() {
    let config = SwitchConfig { mac_aging: Duration::from_millis(100), ..SwitchConfig::default() };
    let (_sw, p) = switch_with(config, 3);
    p[0].transmit(frame(BROADCAST_MAC, A, 0));
    assert_eq!((drain(&p[1]), drain(&p[2])), (vec![0], vec![0]));
    // p1 keeps sending B -> A in batches: A stays cached as p0's, B stays learned.
    let start = std::time::Instant::now();
    let mut t = 1;
    while start.elapsed() < Duration::from_millis(60) {
        assert_eq!(p[1].transmit_batch(&mut vec![frame(A, B, t), frame(A, B, t + 1)]), 0);
        assert_eq!(drain(&p[0]), vec![t, t + 1]);
        // Empty unless a stalled machine let A age out mid-loop (then these were flooded).
        drain(&p[2]);
        t += 2;
        thread::sleep(Duration::from_millis(5));
    }
    // A falls silent: within the aging time plus the cache's refresh interval, B's frames
    // to A are flooded instead of following a stale cache entry.
    thread::sleep(Duration::from_millis(250));
    assert_eq!(p[1].transmit_batch(&mut vec![frame(A, B, 1000)]), 0);
    assert_eq!((drain(&p[0]), drain(&p[2])), (vec![1000], vec![1000]), "flooded");
    // That frame learned B again: p0 answering reaches only p1.
    assert_eq!(p[0].transmit(frame(B, A, 1001)), TransmitOutcome::Sent);
    assert_eq!((drain(&p[1]), drain(&p[2])), (vec![1001], vec![]));
}

#[test]
fn batched_runs_are_bounded_and_wake_the_reader_once() {
    let config = SwitchConfig { port_queue_frames: 3, ..SwitchConfig::default() };
    let (_sw, p) = switch_with(config, 2);
    p[1].transmit(frame(BROADCAST_MAC, B, 0));
    drain(&p[0]);
    assert!(!readable(&p[1]));
    let mut batch: Vec<Frame> = (1..=5).map(|t| frame(B, A, t)).collect();
    assert_eq!(p[0].transmit_batch(&mut batch), 2, "two past the 3-frame bound");
    assert_eq!(p[1].stats().dropped_queue_full, 2);
    assert!(readable(&p[1]));
    let mut got = Vec::new();
    p[1].pop_batch(2, &mut got);
    assert_eq!(got.iter().map(tag).collect::<Vec<_>>(), vec![1, 2]);
    assert!(readable(&p[1]), "one frame still waits");
    p[1].pop_batch(8, &mut got);
    assert_eq!(got.iter().map(tag).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(!readable(&p[1]), "empty: the fd stops polling readable");
    assert_eq!(p[1].stats().rx_frames, 3);
}

#[test]
fn a_moved_mac_is_relearned() {
    let (sw, p) = switch(3);
    p[0].transmit(frame(BROADCAST_MAC, A, 0));
    p[2].transmit(frame(A, C, 1));
    assert_eq!(drain(&p[0]), vec![1]);
    // A migrates to p1.
    p[1].transmit(frame(BROADCAST_MAC, A, 2));
    assert_eq!(sw.mac_table()[0].port, p[1].id());
    assert_eq!(p[2].transmit(frame(A, C, 3)), TransmitOutcome::Sent);
    assert_eq!((drain(&p[0]), drain(&p[1]), drain(&p[2])), (vec![2], vec![0, 3], vec![0, 2]));
}

#[test]
fn queue_bounded_in_frames() {
    let config = SwitchConfig { port_queue_frames: 3, ..SwitchConfig::default() };
    let (sw, p) = switch_with(config, 2);
    p[1].transmit(frame(BROADCAST_MAC, B, 100));
    for t in 0..5 {
        p[0].transmit(frame(B, A, t));
    }
    assert_eq!(p[1].queued(), (3, 192));
    assert_eq!(p[0].transmit(frame(B, A, 5)), TransmitOutcome::Dropped(DropReason::QueueFull));
    assert_eq!(p[1].stats().dropped_queue_full, 3);
    assert_eq!(p[0].stats().dropped_queue_full, 0, "counted on the destination");
    let snap = sw.snapshot();
    assert_eq!((snap[1].name.as_str(), snap[1].queued_frames, snap[1].queued_bytes), ("vif1.0", 3, 192));
    assert_eq!(drain(&p[1]), vec![0, 1, 2]);
    assert_eq!(p[0].transmit(frame(B, A, 6)), TransmitOutcome::Sent, "room again after draining");
}

#[test]
fn queue_bounded_in_bytes() {
    let config = SwitchConfig { port_queue_bytes: 200, ..SwitchConfig::default() };
    let (_sw, p) = switch_with(config, 3);
    for t in 0..4 {
        p[0].transmit(frame(BROADCAST_MAC, A, t));
    }
    // 3 x 64 = 192 fit in 200 bytes, the 4th does not.
    assert_eq!(p[1].queued(), (3, 192));
    assert_eq!(p[0].transmit(frame(BROADCAST_MAC, A, 4)), TransmitOutcome::Flooded { queued: 0, queue_full: 2 });
    // Even an empty queue refuses a frame larger than the byte bound.
    assert_eq!(drain(&p[2]), vec![0, 1, 2]);
    let mut big = frame(BROADCAST_MAC, A, 5).into_data();
    big.resize(201, 0);
    assert_eq!(p[0].transmit(Frame::new(big)), TransmitOutcome::Flooded { queued: 0, queue_full: 2 });
    assert_eq!((p[1].stats().dropped_queue_full, p[2].stats().dropped_queue_full), (3, 3));
    assert_eq!(p[2].queued(), (0, 0));
}

#[test]
fn carrier_off_drops_what_waits_and_what_comes_until_on() {
    let (_sw, p) = switch(3);
    p[1].transmit(frame(BROADCAST_MAC, B, 100));
    drain(&p[0]);
    drain(&p[2]);
    for t in 0..3 {
        p[0].transmit(frame(B, A, t));
    }
    assert!(readable(&p[1]));
    p[1].set_carrier(false);
    assert_eq!(p[1].queued(), (0, 0));
    assert!(!readable(&p[1]), "purged: the fd stops polling readable");
    // Unicast, batched and flooded frames for it are all dropped and counted at once.
    assert_eq!(p[0].transmit(frame(B, A, 3)), TransmitOutcome::Dropped(DropReason::CarrierOff));
    let mut batch: Vec<Frame> = (4..8).map(|t| frame(B, A, t)).collect();
    assert_eq!(p[0].transmit_batch(&mut batch), 4);
    assert_eq!(p[0].transmit(frame(BROADCAST_MAC, A, 8)), TransmitOutcome::Flooded { queued: 1, queue_full: 0 });
    assert_eq!(p[1].queued(), (0, 0));
    assert_eq!((p[1].stats().dropped_carrier_off, p[1].stats().dropped_queue_full), (3 + 1 + 4 + 1, 0));
    assert_eq!(drain(&p[2]), vec![8], "other ports are not affected");
    p[1].set_carrier(true);
    assert_eq!(p[0].transmit(frame(B, A, 9)), TransmitOutcome::Sent);
    assert_eq!(drain(&p[1]), vec![9]);
    assert_eq!(p[1].stats().dropped_carrier_off, 9);
}

#[test]
fn expire_drops_the_frames_queued_longer_than_the_limit() {
    let (_sw, p) = switch(2);
    p[1].transmit(frame(BROADCAST_MAC, B, 100));
    drain(&p[0]);
    assert_eq!(p[1].expire(Some(Duration::from_millis(1))), Backlog::default(), "nothing waits");
    p[0].transmit(frame(B, A, 0));
    let mut batch: Vec<Frame> = (1..3).map(|t| frame(B, A, t)).collect();
    p[0].transmit_batch(&mut batch);
    // No limit, or a limit far away: nothing expires, and the head's deadline is reported.
    assert_eq!(p[1].expire(None), Backlog { expired: 0, waiting: true, next_expiry: None });
    let far = p[1].expire(Some(Duration::from_secs(3600)));
    assert!(far.waiting && far.expired == 0 && far.next_expiry.is_some_and(|d| d > Duration::from_secs(3000)));
    // Once they are older than the limit (the clock is coarse: wait out its resolution).
    thread::sleep(Duration::from_millis(300));
    p[0].transmit(frame(B, A, 3));
    assert_eq!(p[1].expire(Some(Duration::from_millis(200))).expired, 3);
    assert_eq!(drain(&p[1]), vec![3], "the young one stays, in order");
    assert!(!readable(&p[1]));
    p[0].transmit(frame(B, A, 4));
    thread::sleep(Duration::from_millis(300));
    let all = p[1].expire(Some(Duration::from_millis(200)));
    assert_eq!(all, Backlog { expired: 1, waiting: false, next_expiry: None });
    assert!(!readable(&p[1]), "emptied by expiry: the fd stops polling readable");
    assert_eq!(p[1].queued(), (0, 0));
}

#[test]
fn dropping_a_port_forgets_its_macs_and_stops_delivery() {
    let (sw, mut p) = switch(3);
    p[2].transmit(frame(BROADCAST_MAC, C, 0));
    p[0].transmit(frame(C, A, 1));
    let gone = p.remove(2).id();
    assert!(sw.mac_table().iter().all(|e| e.port != gone));
    assert_eq!(sw.snapshot().len(), 2);
    // C is unknown again: flooded to the one remaining other port.
    assert_eq!(p[0].transmit(frame(C, A, 2)), TransmitOutcome::Flooded { queued: 1, queue_full: 0 });
    assert_eq!(drain(&p[1]), vec![0, 2]);
    // The name is free again, and ids are not reused.
    let again = sw.add_port("vif2.0").unwrap();
    assert_ne!(again.id(), gone);
}

#[test]
fn add_port_refuses_duplicates_and_too_many() {
    let config = SwitchConfig { max_ports: 2, ..SwitchConfig::default() };
    let (sw, _p) = switch_with(config, 2);
    let err = sw.add_port("vif9.0").unwrap_err();
    assert!(matches!(err, SwitchError::AddPort { ref name, .. } if name == "vif9.0"), "{err}");
    let (sw, _p) = switch(1);
    assert!(matches!(sw.add_port("vif0.0"), Err(SwitchError::AddPort { .. })));
}

#[test]
fn ready_fd_tracks_the_queue() {
    let (_sw, p) = switch(2);
    assert!(!readable(&p[1]));
    p[0].transmit(frame(BROADCAST_MAC, A, 1));
    p[0].transmit(frame(BROADCAST_MAC, A, 2));
    assert!(readable(&p[1]));
    assert!(p[1].pop().is_some());
    assert!(readable(&p[1]), "still one frame waiting");
    assert!(p[1].pop().is_some());
    assert!(!readable(&p[1]), "drained");
    assert!(!readable(&p[0]), "the sender got nothing");
    // The fd is usable from another thread blocked in poll.
    let fd = p[1].ready_fd().as_fd().try_clone_to_owned().unwrap();
    let waiter = thread::spawn(move || {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap()
    });
    thread::sleep(Duration::from_millis(20));
    p[0].transmit(frame(BROADCAST_MAC, A, 3));
    assert_eq!(waiter.join().unwrap(), 1);
}

#[test]
fn concurrent_transmit_loses_nothing() {
    const SENDERS: usize = 4;
    const PER_SENDER: u32 = 5000;
    let config = SwitchConfig { port_queue_frames: 1 << 16, port_queue_bytes: 64 << 20, ..SwitchConfig::default() };
    let (sw, mut p) = switch_with(config, SENDERS + 1);
    let sink = p.remove(0);
    sink.transmit(frame(BROADCAST_MAC, A, 0));
    let handles: Vec<_> = p
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            thread::spawn(move || {
                let src = [0x00, 0x16, 0x3e, 1, 0, u8::try_from(i).unwrap()];
                for t in 0..PER_SENDER {
                    assert_eq!(port.transmit(frame(A, src, t)), TransmitOutcome::Sent);
                }
                port
            })
        })
        .collect();
    // Pop concurrently with the senders, then collect the rest.
    let mut got = 0u64;
    while handles.iter().any(|h| !h.is_finished()) {
        got += drain(&sink).len() as u64;
    }
    let _ports: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got += drain(&sink).len() as u64;
    let expected = SENDERS as u64 * u64::from(PER_SENDER);
    assert_eq!(got, expected);
    assert_eq!(sink.stats().rx_frames, expected);
    assert_eq!(sw.snapshot().iter().map(|s| s.stats.tx_frames).sum::<u64>(), expected + 1);
}
