//! Drains of the real TX path (`TxPath::take` + `send`: parse, plan, map, grant-copy,
//! account, transmit, answer) over an arbitrary ring, against a guest with a few granted
//! pages (some refusing maps or copies) and an uplink that records what it gets.
//!
//! Asserts: never panics; a drain that succeeds answers every slot it consumed (exactly
//! the unanswered count it started with remains) with OKAY, ERROR or NULL; every frame
//! sent is 14..=65535 bytes and is byte for byte one parsed packet's slots read from the
//! guest's pages, in ring order; a packet the guest's grants fully allow and the policy
//! accepts is sent; the counters match what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::fuzzing::{FuzzGrants, FuzzUplink, LEGACY_SLOTS_MAX, TxParsed, parse_tx, tx_drain};
use netback::vif::VifCounters;
use netback_fuzz::{Input, TxRingInput};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY};
use netif::{ExtraInfo, RingEntry, TxResponse};

/// Page `gref`'s byte `i` (`gref` < 8): distinct enough that a misplaced byte shows.
fn pattern(gref: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8).wrapping_mul(7) ^ gref.wrapping_mul(101)) as u8
}

/// A packet as the oracle sees it: its bytes if the TX policy accepts it, and whether
/// every grant it names is fully usable.
struct Expected {
    bytes: Option<Vec<u8>>,
    grants_ok: bool,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let batch = 1 + usize::from(input.u8() % 64);
    let mode = input.u8();
    let map_min = [0, 129, 1500, 4096][usize::from(mode & 3)];
    let gathers = mode & 4 != 0;
    let refuse_maps = u64::from(input.u8());
    let refuse_copies = u64::from(input.u8());
    let npages = usize::from(input.u8() % 9);
    let rounds = 1 + input.u8() % 4;
    let Some(mut t) = TxRingInput::build(&mut input) else { return };
    let pages = (0..npages).map(|g| std::array::from_fn(|i| pattern(g, i))).collect();
    let grants = FuzzGrants { pages, refuse_maps, refuse_copies };
    let counters = VifCounters::default();

    for _ in 0..rounds {
        let expected = oracle(&t, batch, &grants);
        let uplink = FuzzUplink::new(gathers).expect("/dev/null");
        let before = counters.snapshot();
        let (cons0, pvt0) = (t.ring.req_cons(), t.ring.rsp_prod_pvt());
        let unanswered = t.ring.unanswered_requests();
        let result = tx_drain(&mut t.ring, &grants, &uplink, &counters, batch, map_min);
        // The worker publishes the responses after a drain.
        t.ring.push_responses_and_check_notify();
        let frames = uplink.frames.into_inner().expect("uplink lock");
        let Ok(_) = result else {
            // Fatal for the vif: the worker stops here. Nothing was sent.
            assert!(frames.is_empty());
            return;
        };
        assert_eq!(t.ring.unanswered_requests(), unanswered, "every consumed slot answered");
        for idx in pvt0..t.ring.rsp_prod_pvt() {
            let rsp = TxResponse::decode(&t.slot(idx)[..4].try_into().expect("4 bytes"));
            assert!([NETIF_RSP_OKAY, NETIF_RSP_ERROR, NETIF_RSP_NULL].contains(&rsp.status), "{rsp:?}");
        }
        let consumed = t.ring.req_cons().wrapping_sub(cons0);
        let expected = expected.expect("the oracle parses what the drain parsed");
        assert!(consumed == 0 || !expected.is_empty());
        // Frames are the accepted packets, in order; fully granted ones are never lost.
        let mut sent = frames.iter().peekable();
        for e in &expected {
            let frame = sent.peek().map(|f| f.data());
            match &e.bytes {
                Some(bytes) if frame == Some(&bytes[..]) => {
                    sent.next();
                }
                Some(_) => assert!(!e.grants_ok, "a fully granted, valid packet was not sent"),
                None => {}
            }
        }
        assert!(sent.next().is_none(), "a frame that is no packet's bytes was sent");
        for f in &frames {
            assert!((14..=65535).contains(&f.len()));
            if let Some(gso) = f.offload().gso {
                assert!(gso.size > 0 && f.offload().csum_blank);
            }
        }
        let now = counters.snapshot();
        assert_eq!(now.tx_packets - before.tx_packets, frames.len() as u64);
        assert_eq!(now.tx_bytes - before.tx_bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
        if consumed == 0 {
            return;
        }
    }
});

/// What a drain of up to `batch` packets should do, from a snapshot of the ring: `None` if
/// the parser fails on it (the drain then fails too, or stops before).
fn oracle(t: &TxRingInput, batch: usize, grants: &FuzzGrants) -> Option<Vec<Expected>> {
    let mut ring = t.snapshot()?;
    let mut out = Vec::new();
    while out.len() < batch {
        let TxParsed::Packet { first, extras, frags, first_len, slots } = parse_tx(&ring).ok()? else { break };
        ring.skip_requests(slots).ok()?;
        let accepted = extras.iter().all(|e| matches!(e.info, ExtraInfo::Gso { .. }))
            && frags.len() <= LEGACY_SLOTS_MAX
            // Linux's runt rule: the Ethernet header in the first slot's own bytes.
            && first_len.is_some_and(|len| len >= 14);
        let mut slices = vec![(first.gref, first.offset, first_len)];
        slices.extend(frags.iter().map(|f| (f.gref, f.offset, Some(f.size))));
        // A packet naming a grant that does not exist can never be sent (its copy or map
        // fails); its pattern bytes could equal another grant's, so it expects nothing. An
        // empty slot touches no grant (Linux answers it OKAY without one).
        let used = slices.iter().filter(|&&(_, _, len)| len != Some(0));
        let granted = used.clone().all(|&(g, _, _)| (g as usize) < grants.pages.len());
        let refused = used.clone().any(|&(g, _, _)| (grants.refuse_maps | grants.refuse_copies) & (1 << (g % 64)) != 0);
        let grants_ok = granted && !refused;
        let bytes = match (accepted && granted, first_len) {
            (true, Some(_)) => Some(
                slices
                    .iter()
                    .flat_map(|&(g, off, len)| {
                        let (off, len) = (usize::from(off), usize::from(len.unwrap_or(0)));
                        (off..off + len).map(move |i| pattern(g as usize, i))
                    })
                    .collect(),
            ),
            _ => None,
        };
        out.push(Expected { bytes, grants_ok });
    }
    Some(out)
}
