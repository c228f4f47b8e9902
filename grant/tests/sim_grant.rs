//! Grant copy and map between real processes, and every refusal with Xen's exact code.

mod common;

use common::{Host, pattern, wait_until};
use grant::sim::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING, GrantEntryV1};
use grant::{Access, CopyPtr, CopySegment, GrantError, GrantOps, GrantStatus, PAGE_SIZE};
use vm_memory::VolatileSlice;

#[test]
#[ignore = "child process of the other tests"]
fn child_guest() {
    common::child_main();
}

fn grant(domid: u16, gref: u32, offset: u16) -> CopyPtr<'static> {
    CopyPtr::Grant { domid, gref, offset }
}

fn local(buf: &mut [u8]) -> CopyPtr<'_> {
    CopyPtr::Local(VolatileSlice::from(buf))
}

fn copy_status(dom0: &impl GrantOps, source: CopyPtr<'_>, dest: CopyPtr<'_>, len: u16) -> GrantStatus {
    let mut segs = [CopySegment::new(source, dest, len)];
    dom0.copy(&mut segs).expect("batch");
    segs[0].status
}

fn map_status(dom0: &impl GrantOps, domid: u16, gref: u32, access: Access) -> GrantStatus {
    match dom0.map(domid, gref, access) {
        Ok(_) => GrantStatus::Okay,
        Err(GrantError::Map { status, .. }) => status,
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn copy_grant_to_local_and_local_to_grant() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (id, grefs) = guest.share(0, 2, "rw");
    assert_eq!(grefs, vec![8, 9], "grefs are handed out from 8");
    guest.cmd(&format!("fill {id} 0 42"));

    let mut buf = vec![0u8; 1514];
    assert_eq!(copy_status(&dom0, grant(guest.domid, grefs[0], 100), local(&mut buf), 1514), GrantStatus::Okay);
    assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(42, i + 100)));

    let src: Vec<u8> = (0..300).map(|i| pattern(9, i)).collect();
    let mut src = src;
    assert_eq!(copy_status(&dom0, local(&mut src), grant(guest.domid, grefs[1], 3796), 300), GrantStatus::Okay);
    assert_eq!(guest.cmd(&format!("check {id} 1 3796 300 9")), vec!["true"]);
    // The transient pins are gone.
    assert_eq!(dom0.grant_entry(guest.domid, grefs[1]).unwrap().flags, GTF_PERMIT_ACCESS);
}

#[test]
fn guest_to_guest_copy_with_both_ends_granted() {
    let host = Host::start();
    let dom0 = host.dom0();
    let (mut a, mut b) = (host.guest(), host.guest());
    let (ida, ga) = a.share(0, 1, "ro");
    let (idb, gb) = b.share(0, 1, "rw");
    a.cmd(&format!("fill {ida} 0 77"));
    let mut segs = [
        CopySegment::new(grant(a.domid, ga[0], 0), grant(b.domid, gb[0], 0), 2048),
        CopySegment::new(grant(a.domid, ga[0], 2048), grant(b.domid, gb[0], 2048), 2048),
    ];
    dom0.copy(&mut segs).unwrap();
    assert!(segs.iter().all(|s| s.status == GrantStatus::Okay));
    assert_eq!(b.cmd(&format!("check {idb} 0 0 4096 77")), vec!["true"]);
}

#[test]
fn map_read_only_and_read_write_both_ways() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (ro_id, ro) = guest.share(0, 1, "ro");
    let (rw_id, rw) = guest.share(0, 1, "rw");
    guest.cmd(&format!("fill {ro_id} 0 5"));

    let m = dom0.map(guest.domid, ro[0], Access::ReadOnly).unwrap();
    assert_eq!(m.prot(), libc::PROT_READ);
    let mut page = vec![0u8; PAGE_SIZE];
    m.slice().copy_to(&mut page[..]);
    assert!(page.iter().enumerate().all(|(i, &b)| b == pattern(5, i)));
    let flags = dom0.grant_entry(guest.domid, ro[0]).unwrap().flags;
    assert_eq!(flags, GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    // Nested maps share one pin count; the flag clears with the last unmap.
    let m2 = dom0.map(guest.domid, ro[0], Access::ReadOnly).unwrap();
    drop(m);
    assert_eq!(dom0.grant_entry(guest.domid, ro[0]).unwrap().flags & GTF_READING, GTF_READING);
    drop(m2);
    assert_eq!(dom0.grant_entry(guest.domid, ro[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY);

    let m = dom0.map(guest.domid, rw[0], Access::ReadWrite).unwrap();
    assert_eq!(dom0.grant_entry(guest.domid, rw[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(11, i)).collect();
    m.slice().copy_from(&bytes);
    assert_eq!(guest.cmd(&format!("check {rw_id} 0 0 4096 11")), vec!["true"]);
    guest.cmd(&format!("fill {rw_id} 0 12"));
    m.slice().copy_to(&mut page[..]);
    assert!(page.iter().enumerate().all(|(i, &b)| b == pattern(12, i)));
    // A read-only map of a writable grant, taken while it is mapped writable.
    let r = dom0.map(guest.domid, rw[0], Access::ReadOnly).unwrap();
    drop(m);
    assert_eq!(dom0.grant_entry(guest.domid, rw[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING);
    drop(r);
    assert_eq!(dom0.grant_entry(guest.domid, rw[0]).unwrap().flags, GTF_PERMIT_ACCESS);
}

#[test]
fn revoke_while_mapped_is_deferred_until_unmap() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (id, grefs) = guest.share(0, 1, "rw");
    guest.cmd(&format!("fill {id} 0 1"));
    let m = dom0.map(guest.domid, grefs[0], Access::ReadWrite).unwrap();
    guest.cmd(&format!("drop {id}"));
    assert_eq!(guest.cmd("pending"), vec!["1"]);
    // Still granted and pinned; the page keeps its contents for the mapper.
    assert_eq!(dom0.grant_entry(guest.domid, grefs[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    // The parked gref and frame are not reused meanwhile.
    let (_, next) = guest.share(0, 1, "rw");
    assert_ne!(next[0], grefs[0]);
    let mut page = vec![0u8; PAGE_SIZE];
    m.slice().copy_to(&mut page[..]);
    assert_eq!(page[10], pattern(1, 10));
    drop(m);
    assert_eq!(guest.cmd("pending"), vec!["0"]);
    assert_eq!(dom0.grant_entry(guest.domid, grefs[0]).unwrap().flags, 0);
    assert_eq!(map_status(&dom0, guest.domid, grefs[0], Access::ReadOnly), GrantStatus::GeneralError);
    // Reused later, zeroed.
    let (id2, again) = guest.share(0, 1, "rw");
    assert_eq!(again[0], grefs[0]);
    assert_eq!(guest.cmd(&format!("byte {id2} 0 10")), vec!["0"]);
}

#[test]
fn every_refusal_has_xens_code() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (_, ro) = guest.share(0, 1, "ro");
    let (_, rw) = guest.share(0, 1, "rw");
    let (_, other) = guest.share(77, 1, "rw");
    let (revoked_id, revoked) = guest.share(0, 1, "rw");
    guest.cmd(&format!("drop {revoked_id}"));
    let mut buf = vec![0u8; PAGE_SIZE];

    // Grant reference beyond the table (8192 entries by default).
    assert_eq!(map_status(&dom0, d, 8192, Access::ReadOnly), GrantStatus::BadGntref);
    assert_eq!(copy_status(&dom0, grant(d, 8192, 0), local(&mut buf), 10), GrantStatus::BadGntref);
    // Unknown domain.
    assert_eq!(map_status(&dom0, 999, 8, Access::ReadOnly), GrantStatus::BadDomain);
    assert_eq!(copy_status(&dom0, local(&mut buf), grant(999, 8, 0), 10), GrantStatus::BadDomain);
    // Granted to another domain, never granted (reserved), revoked.
    for gref in [other[0], 3, revoked[0]] {
        assert_eq!(map_status(&dom0, d, gref, Access::ReadOnly), GrantStatus::GeneralError);
        assert_eq!(copy_status(&dom0, grant(d, gref, 0), local(&mut buf), 10), GrantStatus::GeneralError);
    }
    // Writing a read-only grant, by map and by copy.
    assert_eq!(map_status(&dom0, d, ro[0], Access::ReadWrite), GrantStatus::GeneralError);
    assert_eq!(copy_status(&dom0, local(&mut buf), grant(d, ro[0], 0), 10), GrantStatus::GeneralError);
    assert_eq!(dom0.grant_entry(d, ro[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY);
    // Crossing the page end on either grant end.
    assert_eq!(copy_status(&dom0, grant(d, rw[0], 4000), local(&mut buf), 97), GrantStatus::BadCopyArg);
    assert_eq!(copy_status(&dom0, local(&mut buf), grant(d, rw[0], 1), 4096), GrantStatus::BadCopyArg);
    assert_eq!(copy_status(&dom0, grant(d, rw[0], 4000), local(&mut buf), 96), GrantStatus::Okay);
    // A frame beyond the domain's memory, from a misbehaving guest.
    guest.cmd("poke 100 0 1000000");
    assert_eq!(map_status(&dom0, d, 100, Access::ReadOnly), GrantStatus::BadPage);
    assert_eq!(copy_status(&dom0, grant(d, 100, 0), local(&mut buf), 1), GrantStatus::BadPage);
    assert_eq!(dom0.grant_entry(d, 100).unwrap(), GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 0, frame: 1000000 });
    // A local buffer shorter than the segment fails the batch before anything moves.
    let mut short = vec![0u8; 10];
    let mut segs = [
        CopySegment::new(grant(d, rw[0], 0), local(&mut buf), 100),
        CopySegment::new(grant(d, rw[0], 0), local(&mut short), 11),
    ];
    assert!(matches!(dom0.copy(&mut segs), Err(GrantError::LocalBufferTooShort { have: 10, len: 11 })));
    assert!(segs.iter().all(|s| s.status == GrantStatus::GeneralError), "no segment ran");
}

#[test]
fn one_bad_segment_does_not_affect_the_others() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (id, g) = guest.share(0, 1, "rw");
    guest.cmd(&format!("fill {id} 0 3"));
    let d = guest.domid;
    let mut bufs = vec![vec![0u8; 512]; 5];
    let mut it = bufs.iter_mut();
    let mut segs = vec![
        CopySegment::new(grant(d, g[0], 0), local(it.next().unwrap()), 512),
        CopySegment::new(grant(d, 9999, 0), local(it.next().unwrap()), 512),
        CopySegment::new(grant(d, g[0], 512), local(it.next().unwrap()), 512),
        CopySegment::new(grant(d, g[0], 4000), local(it.next().unwrap()), 512),
        CopySegment::new(grant(d, g[0], 1024), local(it.next().unwrap()), 512),
    ];
    dom0.copy(&mut segs).unwrap();
    let statuses: Vec<_> = segs.iter().map(|s| s.status).collect();
    use GrantStatus::*;
    assert_eq!(statuses, vec![Okay, BadGntref, Okay, BadCopyArg, Okay]);
    drop(segs);
    for (k, off) in [(0, 0), (2, 512), (4, 1024)] {
        assert!(bufs[k].iter().enumerate().all(|(i, &b)| b == pattern(3, i + off)));
    }
    assert_eq!(bufs[1], vec![0; 512]);
}

#[test]
fn dead_guest_is_bad_domain_even_when_cached() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (_, g) = guest.share(0, 1, "rw");
    let mut buf = vec![0u8; 64];
    assert_eq!(copy_status(&dom0, grant(d, g[0], 0), local(&mut buf), 64), GrantStatus::Okay);
    let held = dom0.map(d, g[0], Access::ReadWrite).unwrap();
    guest.exit();
    wait_until(|| !dom0.domain_alive(d).unwrap());
    assert_eq!(map_status(&dom0, d, g[0], Access::ReadOnly), GrantStatus::BadDomain);
    assert_eq!(copy_status(&dom0, grant(d, g[0], 0), local(&mut buf), 64), GrantStatus::BadDomain);
    assert_eq!(copy_status(&dom0, local(&mut buf), grant(d, g[0], 0), 64), GrantStatus::BadDomain);
    // A mapping taken before the death stays valid memory until dropped.
    held.slice().copy_from(&[1u8; 8]);
    drop(held);
    // A fresh process that never cached the domain gets the same answer.
    assert_eq!(map_status(&host.dom0(), d, g[0], Access::ReadOnly), GrantStatus::BadDomain);
}

#[test]
fn copies_from_many_threads() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (id, g) = guest.share(0, 4, "rw");
    for page in 0..4 {
        guest.cmd(&format!("fill {id} {page} {page}"));
    }
    let d = guest.domid;
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let dom0 = dom0.clone();
            let g = g.clone();
            s.spawn(move || {
                let mut buf = vec![0u8; 1514];
                for round in 0..500u32 {
                    let page = ((t + round) % 4) as usize;
                    assert_eq!(copy_status(&dom0, grant(d, g[page], 7), local(&mut buf), 1514), GrantStatus::Okay);
                    assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(page as u8, i + 7)));
                    let _m = dom0.map(d, g[page], Access::ReadOnly).unwrap();
                }
            });
        }
    });
    for gref in g {
        assert_eq!(dom0.grant_entry(d, gref).unwrap().flags, GTF_PERMIT_ACCESS);
    }
}

fn map_many_status(dom0: &impl GrantOps, domid: u16, grefs: &[u32], access: Access) -> (GrantStatus, Option<u32>) {
    match dom0.map_many(domid, grefs, access) {
        Ok(_) => (GrantStatus::Okay, None),
        Err(GrantError::Map { status, gref, .. }) => (status, Some(gref)),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn map_many_places_each_grant_at_its_page_both_ways() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (ro_id, ro) = guest.share(0, 3, "ro");
    let (rw_id, rw) = guest.share(0, 2, "rw");
    for page in 0..3 {
        guest.cmd(&format!("fill {ro_id} {page} {}", 10 + page));
    }
    // Out of order, with a repeat, across two share calls: the frames are not contiguous.
    let order = [ro[2], ro[0], rw[1], ro[2]];
    let seeds = [12u8, 10, 0, 12];
    guest.cmd(&format!("fill {rw_id} 1 0"));
    let m = dom0.map_many(d, &order, Access::ReadOnly).unwrap();
    assert_eq!((m.pages(), m.grefs(), m.prot()), (4, &order[..], libc::PROT_READ));
    assert_eq!(m.slice().len(), 4 * PAGE_SIZE);
    let mut page = vec![0u8; PAGE_SIZE];
    for (i, seed) in seeds.into_iter().enumerate() {
        m.page(i).unwrap().copy_to(&mut page[..]);
        assert!(page.iter().enumerate().all(|(j, &b)| b == pattern(seed, j)), "page {i}");
    }
    assert!(m.page(4).is_none());
    // The guest's later writes show through: this is the guest's page, not a copy.
    guest.cmd(&format!("fill {ro_id} 0 33"));
    m.page(1).unwrap().copy_to(&mut page[..]);
    assert_eq!(page[5], pattern(33, 5));
    for gref in [ro[0], ro[2]] {
        assert_eq!(dom0.grant_entry(d, gref).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    }
    assert_eq!(dom0.grant_entry(d, ro[1]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY, "not in the list");
    drop(m);
    for gref in [ro[0], ro[2]] {
        assert_eq!(dom0.grant_entry(d, gref).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READONLY, "unpinned on drop");
    }
    assert_eq!(dom0.grant_entry(d, rw[1]).unwrap().flags, GTF_PERMIT_ACCESS);

    // Read-write: writes reach the guest's pages, in place.
    let m = dom0.map_many(d, &[rw[1], rw[0]], Access::ReadWrite).unwrap();
    assert_eq!(dom0.grant_entry(d, rw[0]).unwrap().flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(21, i)).collect();
    m.page(1).unwrap().copy_from(&bytes);
    let bytes: Vec<u8> = (0..PAGE_SIZE).map(|i| pattern(22, i)).collect();
    m.page(0).unwrap().copy_from(&bytes);
    assert_eq!(guest.cmd(&format!("check {rw_id} 0 0 4096 21")), vec!["true"]);
    assert_eq!(guest.cmd(&format!("check {rw_id} 1 0 4096 22")), vec!["true"]);
    drop(m);
    assert_eq!(dom0.grant_entry(d, rw[0]).unwrap().flags, GTF_PERMIT_ACCESS);
    // Revocation is refused while mapped and goes through after the drop.
    let m = dom0.map_many(d, &[rw[0], rw[1]], Access::ReadOnly).unwrap();
    guest.cmd(&format!("drop {rw_id}"));
    assert_eq!(guest.cmd("pending"), vec!["2"]);
    drop(m);
    assert_eq!(guest.cmd("pending"), vec!["0"]);
}

#[test]
fn map_many_refusals_leave_nothing_pinned() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (_, ro) = guest.share(0, 2, "ro");
    let (_, rw) = guest.share(0, 1, "rw");
    let (_, other) = guest.share(77, 1, "rw");
    let pinned = |gref| dom0.grant_entry(d, gref).unwrap().flags & (GTF_READING | GTF_WRITING);
    use GrantStatus::*;
    let cases: [(&[u32], Access, GrantStatus, u32); 5] = [
        // Never granted (a reserved gref), after good ones: those are unpinned again.
        (&[ro[0], rw[0], 3], Access::ReadOnly, GeneralError, 3),
        // Granted to another domain.
        (&[ro[0], other[0]], Access::ReadOnly, GeneralError, other[0]),
        // A read-only grant mapped read-write.
        (&[rw[0], ro[1]], Access::ReadWrite, GeneralError, ro[1]),
        // Beyond the table.
        (&[ro[0], 8192], Access::ReadOnly, BadGntref, 8192),
        (&[8192], Access::ReadOnly, BadGntref, 8192),
    ];
    for (grefs, access, status, gref) in cases {
        assert_eq!(map_many_status(&dom0, d, grefs, access), (status, Some(gref)), "{grefs:?} {access:?}");
        for g in [ro[0], ro[1], rw[0], other[0]] {
            assert_eq!(pinned(g), 0, "gref {g} left pinned after refusing {grefs:?}");
        }
    }
    // Unknown domain, and an empty list.
    assert_eq!(map_many_status(&dom0, 999, &[8], Access::ReadOnly), (BadDomain, Some(8)));
    assert!(matches!(dom0.map_many(d, &[], Access::ReadOnly), Err(GrantError::Hypervisor { .. })));
    // Everything still maps afterwards.
    let m = dom0.map_many(d, &[ro[0], ro[1], rw[0]], Access::ReadOnly).unwrap();
    assert_eq!(m.pages(), 3);
}
