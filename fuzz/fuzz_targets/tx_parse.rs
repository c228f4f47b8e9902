//! The TX request parser over arbitrary ring contents, indices included.
//!
//! Asserts: never panics (an out-of-page read would fail in vm-memory, the page is exactly
//! one page); each answer is consistent with the ring: `Empty` only when `req_prod ==
//! req_cons`, errors only `TxProtocol` (a packet `req_prod` cuts short among them, as in
//! Linux) or a request overflow the indices imply; a `Packet` starts at `req_cons`, its slots are the ring's next slots, all
//! produced, its chain follows the flags, its GSO extras are valid, its sizes add up and
//! every slot lies within its page. Packets are consumed until the parser stops.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback::fuzzing::{FATAL_SKB_SLOTS, TxParsed, parse_tx};
use netback::vif::DatapathError;
use netback_fuzz::{Input, TX_SLOTS, TxRingInput};
use netif::abi::{NETTXF_EXTRA_INFO, NETTXF_MORE_DATA};
use netif::{ExtraInfo, RingEntry, RingError, TxRequest, TxResponse};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    // Whether consumed packets are answered (else the ring fills and the parser blocks).
    let answer = input.u8() & 1 != 0;
    let Some(mut t) = TxRingInput::build(&mut input) else { return };
    for _ in 0..TX_SLOTS {
        let (req_cons, unanswered) = (t.ring.req_cons(), t.ring.unanswered_requests());
        let produced = t.req_prod.wrapping_sub(req_cons);
        let space = TX_SLOTS - unanswered;
        match parse_tx(&t.ring) {
            Ok(TxParsed::Empty) => {
                assert_eq!(produced, 0);
                return;
            }
            Ok(TxParsed::Packet { first, extras, frags, first_len, slots }) => {
                assert!(produced <= space);
                assert_eq!(slots as usize, 1 + extras.len() + frags.len());
                assert!(slots <= produced, "{slots} slots, {produced} produced");
                assert_eq!(first, TxRequest::decode(&t.slot(req_cons)), "first slot is at req_cons");
                // Extras: present iff flagged, each but the last says "more".
                assert_eq!(extras.is_empty(), first.flags & NETTXF_EXTRA_INFO == 0);
                for (i, e) in extras.iter().enumerate() {
                    assert_eq!(e.more, i + 1 < extras.len());
                    if let ExtraInfo::Gso { size, gso_type, .. } = e.info {
                        assert!(size > 0 && (gso_type == 1 || gso_type == 2));
                    }
                }
                // Follow-ons: present iff flagged, chained by MORE_DATA, read in ring order.
                assert_eq!(frags.is_empty(), first.flags & NETTXF_MORE_DATA == 0);
                assert!(frags.len() <= FATAL_SKB_SLOTS);
                let base = req_cons.wrapping_add(1 + extras.len() as u32);
                for (i, f) in frags.iter().enumerate() {
                    assert_eq!(*f, TxRequest::decode(&t.slot(base.wrapping_add(i as u32))));
                    assert_eq!(f.flags & NETTXF_MORE_DATA != 0, i + 1 < frags.len());
                    assert!(usize::from(f.offset) + usize::from(f.size) <= 4096, "follow-on crosses its page");
                }
                let rest: u32 = frags.iter().map(|f| u32::from(f.size)).sum();
                match first_len {
                    Some(len) => {
                        assert_eq!(u32::from(len) + rest, u32::from(first.size), "sizes add up");
                        assert!(usize::from(first.offset) + usize::from(len) <= 4096, "first slot crosses its page");
                    }
                    None => assert!(rest > u32::from(first.size)),
                }
                t.ring.skip_requests(slots).expect("a parsed packet's slots are there");
                if answer {
                    for _ in 0..slots {
                        t.ring.push_response(TxResponse { id: 0, status: 0 }).expect("a consumed slot");
                    }
                }
            }
            Err(DatapathError::TxProtocol(msg)) => {
                assert!(!msg.is_empty());
                return;
            }
            Err(DatapathError::Ring { source: RingError::RequestOverflow { .. }, .. }) => {
                assert!(produced > space, "overflow reported for {produced} produced, {space} space");
                return;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
});
