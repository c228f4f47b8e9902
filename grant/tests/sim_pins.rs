//! The host releases the grant pins of a process that ends holding them (gntdev's release
//! on close): after `kill -9` of a mapper or copier the guest can revoke its grants.

mod common;

use common::{Guest, Host, wait_until};
use grant::sim::{
    GTF_INVALID, GTF_PERMIT_ACCESS, GTF_READING, GTF_WRITING, GrantPins, MAX_MAPPED_GRANTS, PinReleases, SimDomain,
};
use grant::{Access, CopyPtr, CopySegment, DomId, GrantError, GrantOps, GrantRef, GrantStatus};

#[test]
#[ignore = "child process of the other tests"]
fn child_guest() {
    common::child_main();
}

fn pins(readers: u32, writers: u32) -> GrantPins {
    GrantPins { readers, writers, locked: false }
}

fn flags(dom0: &SimDomain, domid: DomId, gref: GrantRef) -> u16 {
    dom0.grant_entry(domid, gref).unwrap().flags
}

/// Ends `child` with `end` and waits until the host settled its ledger; returns what the
/// host did for it.
fn end_and_settle(host: &Host, child: Guest, end: impl FnOnce(Guest)) -> PinReleases {
    let before = host.hv.pin_releases();
    end(child);
    wait_until(|| host.hv.pin_releases().ledgers > before.ledgers);
    let after = host.hv.pin_releases();
    PinReleases {
        ledgers: after.ledgers - before.ledgers,
        pins: after.pins - before.pins,
        repaired: after.repaired - before.repaired,
        skipped: after.skipped - before.skipped,
    }
}

/// The guest drops its share (revocation parked while pinned) and reports how many
/// revocations are still pending after a retry.
fn pending(guest: &mut Guest) -> usize {
    guest.cmd("pending")[0].parse().unwrap()
}

#[test]
fn killed_mapper_releases_its_pin() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (share, g) = guest.share(0, 1, "rw");
    let mut mapper = host.dom0_process();
    mapper.cmd(&format!("map {d} {} rw", g[0]));
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 1));
    assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    guest.cmd(&format!("drop {share}"));
    assert_eq!(pending(&mut guest), 1, "mapped: the revocation waits");

    let done = end_and_settle(&host, mapper, Guest::kill);
    assert_eq!(done, PinReleases { ledgers: 1, pins: 1, repaired: 0, skipped: 0 });
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 0));
    assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS, "GTF_reading and GTF_writing cleared");
    assert_eq!(pending(&mut guest), 0, "the guest revoked its grant");
    assert_eq!(flags(&dom0, d, g[0]), GTF_INVALID);
}

#[test]
fn killed_mapper_releases_every_page_of_its_batches() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (share, g) = guest.share(0, 4, "rw");
    let mut mapper = host.dom0_process();
    // A batch naming g0 twice, and a read-only map of g1 besides.
    mapper.cmd(&format!("map-many {d} rw {} {} {} {} {}", g[0], g[1], g[2], g[3], g[0]));
    mapper.cmd(&format!("map {d} {} ro", g[1]));
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 2));
    assert_eq!(dom0.grant_pins(d, g[1]).unwrap(), pins(1, 1));
    guest.cmd(&format!("drop {share}"));
    assert_eq!(pending(&mut guest), 4);

    let done = end_and_settle(&host, mapper, Guest::kill);
    assert_eq!(done, PinReleases { ledgers: 1, pins: 6, repaired: 0, skipped: 0 });
    for &gref in &g {
        assert_eq!(dom0.grant_pins(d, gref).unwrap(), pins(0, 0), "gref {gref}");
        assert_eq!(flags(&dom0, d, gref), GTF_PERMIT_ACCESS, "gref {gref}");
    }
    assert_eq!(pending(&mut guest), 0);
}

#[test]
fn normal_unmap_and_exit_leaves_nothing_to_release() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (share, g) = guest.share(0, 1, "rw");
    // A second mapper, in this process, holds the grant across the first one's life.
    let held = dom0.map(d, g[0], Access::ReadWrite).unwrap();
    let mut mapper = host.dom0_process();
    let m = mapper.cmd(&format!("map {d} {} rw", g[0])).remove(0);
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 2));
    mapper.cmd(&format!("unmap {m}"));
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 1));

    let done = end_and_settle(&host, mapper, Guest::exit);
    assert_eq!(done, PinReleases { ledgers: 1, ..PinReleases::default() }, "nothing to release, nothing refused");
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 1), "the live mapper's pin survives");
    assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    guest.cmd(&format!("drop {share}"));
    assert_eq!(pending(&mut guest), 1, "still mapped here");
    drop(held);
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 0));
    assert_eq!(pending(&mut guest), 0);
}

#[test]
fn exit_without_unmapping_releases_only_what_was_held() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (_, g) = guest.share(0, 1, "rw");
    let held = dom0.map(d, g[0], Access::ReadOnly).unwrap();
    let mut mapper = host.dom0_process();
    let m = mapper.cmd(&format!("map {d} {} rw", g[0])).remove(0);
    mapper.cmd(&format!("map {d} {} ro", g[0]));
    mapper.cmd(&format!("unmap {m}"));
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(2, 0));

    // `exit` leaves the process without dropping its last mapping.
    let done = end_and_settle(&host, mapper, Guest::exit);
    assert_eq!(done, PinReleases { ledgers: 1, pins: 1, repaired: 0, skipped: 0 });
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(1, 0));
    assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS | GTF_READING);
    drop(held);
    assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS);
}

#[test]
fn full_ledger_refuses_the_map_and_leaks_nothing() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (share, g) = guest.share(0, 8, "ro");
    // Fill the ledger exactly: batches of 1024 pages naming each grant 128 times.
    let batch: Vec<GrantRef> = g.iter().copied().cycle().take(1024).collect();
    let full: Vec<_> =
        (0..MAX_MAPPED_GRANTS / 1024).map(|_| dom0.map_many(d, &batch, Access::ReadOnly).unwrap()).collect();
    let each = MAX_MAPPED_GRANTS / 8;
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(each, 0));

    let no_space = |r: Result<_, GrantError>| matches!(r, Err(GrantError::Map { status: GrantStatus::NoSpace, .. }));
    assert!(no_space(dom0.map(d, g[0], Access::ReadOnly)));
    assert!(no_space(dom0.map_many(d, &g, Access::ReadOnly)));
    for &gref in &g {
        assert_eq!(dom0.grant_pins(d, gref).unwrap(), pins(each, 0), "a refused map pins nothing");
    }
    // Copies have slots of their own; another process has a ledger of its own.
    let mut buf = [0u8; 16];
    let from = CopyPtr::Grant { domid: d, gref: g[0], offset: 0 };
    let mut seg = [CopySegment::new(from, CopyPtr::Local(vm_memory::VolatileSlice::from(&mut buf[..])), 16)];
    dom0.copy(&mut seg).unwrap();
    assert_eq!(seg[0].status, GrantStatus::Okay);
    let other = host.dom0();
    drop(other.map(d, g[0], Access::ReadOnly).unwrap());

    drop(full);
    assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 0));
    drop(dom0.map_many(d, &g, Access::ReadOnly).unwrap());
    guest.cmd(&format!("drop {share}"));
    assert_eq!(pending(&mut guest), 0, "nothing leaked: every grant revoked");
}

#[test]
fn killed_copier_leaves_no_pin_and_no_lock() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (share, g) = guest.share(0, 1, "rw");
    let mut repaired = 0;
    // Kill copiers at varying points of their loops; wherever one dies (often inside a
    // pin's or unpin's critical section), the host leaves the grant clean.
    for round in 0..8u64 {
        let mut copier = host.dom0_process();
        copier.cmd(&format!("copy-loop {d} {}", g[0]));
        std::thread::sleep(std::time::Duration::from_micros(300 * round));
        let done = end_and_settle(&host, copier, Guest::kill);
        assert_eq!(done.skipped, 0, "round {round}: {done:?}");
        repaired += done.repaired;
        assert_eq!(dom0.grant_pins(d, g[0]).unwrap(), pins(0, 0), "round {round}: {done:?}");
        assert_eq!(flags(&dom0, d, g[0]), GTF_PERMIT_ACCESS, "round {round}: {done:?}");
    }
    println!("{repaired} of 8 copiers died inside a critical section");
    // The grant still works, and the guest can revoke it.
    let mut buf = [0u8; 64];
    let from = CopyPtr::Grant { domid: d, gref: g[0], offset: 0 };
    let mut seg = [CopySegment::new(from, CopyPtr::Local(vm_memory::VolatileSlice::from(&mut buf[..])), 64)];
    dom0.copy(&mut seg).unwrap();
    assert_eq!(seg[0].status, GrantStatus::Okay);
    assert_eq!(buf, [0x5A; 64], "the copiers' bytes");
    guest.cmd(&format!("drop {share}"));
    assert_eq!(pending(&mut guest), 0);
}
