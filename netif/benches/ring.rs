//! Ring throughput: a frontend publishes 256 TX requests; the backend drains
//! them, writes 256 responses and does one push/notify check; the frontend
//! collects them. `tx_full_round_256` times all of it, `tx_backend_only_256`
//! only the backend's drain/respond/push.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use netif::abi::{NETIF_RSP_OKAY, TxRequest, TxResponse, XEN_PAGE_SIZE};
use netif::ring::{BackRing, FrontRing, TxRing};
use vm_memory::MmapRegion;

fn drain_256(c: &mut Criterion) {
    let mem = Arc::new(MmapRegion::new(XEN_PAGE_SIZE).unwrap());
    let mut front = FrontRing::<TxRing, _>::init(mem.clone()).unwrap();
    let mut back = BackRing::<TxRing, _>::attach(mem).unwrap();

    c.bench_function("tx_full_round_256", |b| {
        b.iter(|| {
            // Frontend publishes a full ring.
            for i in 0..256u16 {
                let req = TxRequest { gref: u32::from(i), offset: 0, flags: 0, id: i, size: 1514 };
                front.push_request(req).unwrap();
            }
            front.push_requests_and_check_notify();
            // Backend: drain, respond, one push/notify check.
            let mut n = 0u32;
            while let Some(req) = back.next_request().unwrap() {
                back.push_response(TxResponse { id: black_box(req).id, status: NETIF_RSP_OKAY }).unwrap();
                n += 1;
            }
            let notify = back.push_responses_and_check_notify();
            back.final_check_for_requests();
            // Frontend collects, freeing the ring for the next round.
            while let Some(rsp) = front.next_response().unwrap() {
                black_box(rsp);
            }
            front.final_check_for_responses();
            black_box((n, notify))
        });
    });

    // Backend half only (the figure the brief asks for): the frontend
    // refills and collects outside the timed section.
    c.bench_function("tx_backend_only_256", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                for i in 0..256u16 {
                    front.push_request(TxRequest { gref: 0, offset: 0, flags: 0, id: i, size: 60 }).unwrap();
                }
                front.push_requests_and_check_notify();
                let t = std::time::Instant::now();
                while let Some(req) = back.next_request().unwrap() {
                    back.push_response(TxResponse { id: req.id, status: NETIF_RSP_OKAY }).unwrap();
                }
                black_box(back.push_responses_and_check_notify());
                total += t.elapsed();
                while front.next_response().unwrap().is_some() {}
            }
            total
        });
    });
}

criterion_group!(benches, drain_256);
criterion_main!(benches);
