//! A frontend and a backend thread exchange requests over one page, using the
//! notify / final-check protocol with a simulated event channel (a flag per
//! direction). A lost wake-up would leave a thread waiting for a kick that
//! never comes: the wait times out and the test fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netif::abi::{NETIF_RSP_OKAY, TxRequest, TxResponse, XEN_PAGE_SIZE};
use netif::ring::{BackRing, FrontRing, TxRing};
use vm_memory::MmapRegion;

const N: u32 = 200_000;

/// Waits for a kick on `evtchn`; panics if none comes (lost wake-up).
fn wait_kick(evtchn: &AtomicBool, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !evtchn.swap(false, Ordering::AcqRel) {
        assert!(Instant::now() < deadline, "{who}: lost wake-up");
        thread::yield_now();
    }
}

#[test]
fn two_threads_no_lost_wakeups() {
    let mem = Arc::new(MmapRegion::new(XEN_PAGE_SIZE).unwrap());
    let mut front = FrontRing::<TxRing, _>::init_at(mem.clone(), u32::MAX - 1000).unwrap();
    let mut back = BackRing::<TxRing, _>::attach(mem).unwrap();
    let to_back = Arc::new(AtomicBool::new(false));
    let to_front = Arc::new(AtomicBool::new(false));

    let (kick_front, my_kick) = (to_front.clone(), to_back.clone());
    let backend = thread::spawn(move || {
        let mut done = 0u32;
        loop {
            while let Some(req) = back.next_request().unwrap() {
                assert_eq!(req.gref, done, "requests in FIFO order");
                back.push_response(TxResponse { id: req.id, status: NETIF_RSP_OKAY }).unwrap();
                done += 1;
            }
            if back.push_responses_and_check_notify() {
                kick_front.store(true, Ordering::Release);
            }
            if done == N {
                return;
            }
            if !back.final_check_for_requests() {
                wait_kick(&my_kick, "backend");
            }
        }
    });

    let (mut next, mut collected) = (0u32, 0u32);
    loop {
        while next < N && !front.is_full() {
            front.push_request(TxRequest { gref: next, offset: 0, flags: 0, id: next as u16, size: 64 }).unwrap();
            next += 1;
        }
        if front.push_requests_and_check_notify() {
            to_back.store(true, Ordering::Release);
        }
        while let Some(rsp) = front.next_response().unwrap() {
            assert_eq!(rsp.id, collected as u16, "responses in FIFO order");
            collected += 1;
        }
        if collected == N {
            break;
        }
        // Sleep only if we cannot make progress ourselves.
        if (next == N || front.is_full()) && !front.final_check_for_responses() {
            wait_kick(&to_front, "frontend");
        }
    }
    backend.join().unwrap();
}
