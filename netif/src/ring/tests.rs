//! Unit tests of the ring halves, one shared `MmapRegion` per test.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use super::*;
use crate::abi::*;

type Mem = Arc<MmapRegion>;

fn page() -> Mem {
    Arc::new(MmapRegion::new(XEN_PAGE_SIZE).unwrap())
}

fn load(mem: &Mem, off: usize) -> u32 {
    mem.as_volatile_slice().load::<u32>(off, Ordering::Acquire).unwrap()
}

fn store(mem: &Mem, off: usize, v: u32) {
    mem.as_volatile_slice().store(v, off, Ordering::Release).unwrap();
}

fn tx(id: u16) -> TxRequest {
    TxRequest { gref: 1000 + u32::from(id), offset: id, flags: 0, id, size: 60 + id }
}

fn pair(start: u32) -> (FrontRing<TxRing, Mem>, BackRing<TxRing, Mem>) {
    let mem = page();
    let front = FrontRing::<TxRing, _>::init_at(mem.clone(), start).unwrap();
    let back = BackRing::<TxRing, _>::attach(mem).unwrap();
    (front, back)
}

#[test]
fn ring_sizes() {
    assert_eq!((TxRing::SIZE, RxRing::SIZE, CtrlRing::SIZE), (256, 256, 128));
    assert_eq!((const_ring_size(1), const_ring_size(4), const_ring_size(63)), (2048, 512, 64));
    assert_eq!((const_ring_size(0), const_ring_size(4033)), (0, 0));
}

#[test]
fn init_writes_shared_header() {
    let mem = page();
    mem.as_volatile_slice().write_slice(&[0xffu8; 64], 0).unwrap();
    let front = FrontRing::<RxRing, _>::init_at(mem.clone(), 0xffff_fff0).unwrap();
    assert_eq!(
        [load(&mem, 0), load(&mem, 4), load(&mem, 8), load(&mem, 12)],
        [0xffff_fff0, 0xffff_fff1, 0xffff_fff0, 0xffff_fff1]
    );
    let mut rest = [0xaau8; 48];
    mem.as_volatile_slice().read_slice(&mut rest, 16).unwrap();
    assert_eq!(rest, [0u8; 48]);
    assert_eq!((front.req_prod_pvt(), front.rsp_cons(), front.free_requests()), (0xffff_fff0, 0xffff_fff0, 256));
    let front = FrontRing::<RxRing, _>::init(mem.clone()).unwrap();
    assert_eq!([load(&mem, 0), load(&mem, 4), load(&mem, 8), load(&mem, 12)], [0, 1, 0, 1]);
    assert_eq!(front.rsp_prod().unwrap(), 0);
}

#[test]
fn short_page_is_rejected() {
    let small = Arc::new(MmapRegion::new(2048).unwrap());
    assert!(matches!(FrontRing::<TxRing, _>::init(small.clone()), Err(RingError::PageTooSmall { len: 2048 })));
    assert!(matches!(BackRing::<TxRing, _>::attach(small), Err(RingError::PageTooSmall { len: 2048 })));
    // A larger region works: only the first page is used.
    let big = Arc::new(MmapRegion::new(3 * XEN_PAGE_SIZE).unwrap());
    assert_eq!(big.ring_page().len(), XEN_PAGE_SIZE);
    assert!(FrontRing::<TxRing, _>::init(&*big).is_ok());
}

#[test]
fn front_fills_up_and_reports_full() {
    let (mut front, _back) = pair(0);
    for i in 0..256 {
        assert_eq!(front.free_requests(), 256 - u32::from(i));
        front.push_request(tx(i)).unwrap();
    }
    assert!(front.is_full());
    assert_eq!(front.outstanding_requests(), 256);
    assert!(matches!(front.push_request(tx(0)), Err(RingError::Full)));
}

#[test]
fn request_notify_follows_req_event() {
    let (mut front, mut back) = pair(0);
    front.push_request(tx(1)).unwrap();
    // req_event = 1 after init: the first request notifies.
    assert!(front.push_requests_and_check_notify());
    front.push_request(tx(2)).unwrap();
    assert!(!front.push_requests_and_check_notify(), "backend did not re-arm");
    // Nothing published: never notify.
    assert!(!front.push_requests_and_check_notify());
    assert_eq!(back.next_request().unwrap(), Some(tx(1)));
    assert_eq!(back.next_request().unwrap(), Some(tx(2)));
    assert!(!back.final_check_for_requests());
    assert_eq!(load(back.memory(), REQ_EVENT_OFFSET), 3);
    front.push_request(tx(3)).unwrap();
    assert!(front.push_requests_and_check_notify());
}

#[test]
fn back_consumes_in_order_with_copies() {
    let (mut front, mut back) = pair(5);
    assert_eq!(back.next_request().unwrap(), None);
    for i in 0..3 {
        front.push_request(tx(i)).unwrap();
    }
    // Not yet published.
    assert_eq!(back.unconsumed_requests(), 0);
    front.push_requests_and_check_notify();
    assert_eq!(back.unconsumed_requests(), 3);
    assert_eq!(back.req_prod().unwrap(), 8);
    assert_eq!(back.next_request().unwrap(), Some(tx(0)));
    assert_eq!(back.next_request().unwrap(), Some(tx(1)));
    assert_eq!(back.next_request().unwrap(), Some(tx(2)));
    assert_eq!(back.next_request().unwrap(), None);
    assert_eq!((back.req_cons(), back.unanswered_requests()), (8, 3));
}

#[test]
fn attach_rejects_impossible_req_prod() {
    let mem = page();
    FrontRing::<TxRing, _>::init_at(mem.clone(), 100).unwrap();
    store(&mem, REQ_PROD_OFFSET, 100 + 257);
    let err = BackRing::<TxRing, _>::attach(mem.clone()).unwrap_err();
    assert!(matches!(err, RingError::AttachOverflow { req_prod: 357, rsp_prod: 100 }), "{err:?}");
    store(&mem, REQ_PROD_OFFSET, 99);
    assert!(matches!(BackRing::<TxRing, _>::attach(mem.clone()), Err(RingError::AttachOverflow { .. })));
    store(&mem, REQ_PROD_OFFSET, 100 + 256);
    let back = BackRing::<TxRing, _>::attach(mem.clone()).unwrap();
    assert_eq!(back.unconsumed_requests(), 256);
    assert!(matches!(FrontRing::<TxRing, _>::attach(mem.clone()), Ok(f) if f.free_requests() == 0));
    store(&mem, REQ_PROD_OFFSET, 100 + 257);
    assert!(matches!(FrontRing::<TxRing, _>::attach(mem), Err(RingError::AttachOverflow { .. })));
}

#[test]
fn lying_req_prod_is_detected() {
    let (mut front, mut back) = pair(u32::MAX - 1);
    for i in 0..4 {
        front.push_request(tx(i)).unwrap();
    }
    front.push_requests_and_check_notify();
    back.next_request().unwrap();
    back.next_request().unwrap();
    let mem = back.memory().clone();
    let cons = back.req_cons();
    // Too far ahead: 2 unanswered + 255 > 256.
    store(&mem, REQ_PROD_OFFSET, cons.wrapping_add(255));
    assert!(back.request_overflow());
    assert_eq!(back.unconsumed_requests(), 254, "clamped to the free space");
    let err = back.next_request().unwrap_err();
    assert!(matches!(err, RingError::RequestOverflow { rsp_prod_pvt, .. } if rsp_prod_pvt == u32::MAX - 1));
    assert_eq!(back.req_cons(), cons, "nothing consumed on error");
    assert!(back.final_check_for_requests(), "work reported so the caller sees the error");
    // Exactly full is fine.
    store(&mem, REQ_PROD_OFFSET, cons.wrapping_add(254));
    assert!(!back.request_overflow());
    // Moving backwards is impossible too, even though within a ring of rsp_prod_pvt.
    store(&mem, REQ_PROD_OFFSET, cons.wrapping_sub(1));
    assert!(back.request_overflow());
    assert!(matches!(back.next_request(), Err(RingError::RequestOverflow { .. })));
    assert!(matches!(back.peek_request(0), Err(RingError::RequestOverflow { .. })));
    assert!(matches!(back.skip_requests(0), Err(RingError::RequestOverflow { .. })));
}

#[test]
fn responses_need_consumed_requests() {
    let (mut front, mut back) = pair(0);
    let rsp = TxResponse { id: 0, status: NETIF_RSP_OKAY };
    assert!(matches!(back.push_response(rsp), Err(RingError::UnmatchedResponse { .. })));
    front.push_request(tx(0)).unwrap();
    front.push_requests_and_check_notify();
    back.next_request().unwrap();
    back.push_response(rsp).unwrap();
    assert!(matches!(back.push_response(rsp), Err(RingError::UnmatchedResponse { rsp_prod_pvt: 1, req_cons: 1 })));
}

#[test]
fn response_roundtrip_and_notify() {
    let (mut front, mut back) = pair(0);
    for i in 0..3 {
        front.push_request(tx(i)).unwrap();
    }
    front.push_requests_and_check_notify();
    while let Some(req) = back.next_request().unwrap() {
        back.push_response(TxResponse { id: req.id, status: NETIF_RSP_OKAY }).unwrap();
    }
    assert_eq!(front.unconsumed_responses(), 0, "not yet published");
    // rsp_event = 1 after init: the first batch notifies.
    assert!(back.push_responses_and_check_notify());
    assert_eq!(back.rsp_prod_pushed(), 3);
    assert_eq!(front.unconsumed_responses(), 3);
    for i in 0..3 {
        assert_eq!(front.next_response().unwrap(), Some(TxResponse { id: i, status: 0 }));
    }
    assert_eq!(front.next_response().unwrap(), None);
    assert!(!front.final_check_for_responses());
    assert_eq!(load(front.memory(), RSP_EVENT_OFFSET), 4);
    assert_eq!(front.free_requests(), 256);
}

#[test]
fn lying_rsp_prod_is_detected() {
    let (mut front, mut back) = pair(u32::MAX);
    front.push_request(tx(0)).unwrap();
    front.push_request(tx(1)).unwrap();
    front.push_requests_and_check_notify();
    front.push_request(tx(2)).unwrap(); // queued, not published
    back.next_request().unwrap();
    back.push_response(TxResponse { id: 0, status: 0 }).unwrap();
    back.push_responses_and_check_notify();
    let mem = front.memory().clone();
    // Answers a request that was never published.
    store(&mem, RSP_PROD_OFFSET, front.req_prod_pushed().wrapping_add(1));
    assert!(front.response_overflow());
    assert_eq!(front.unconsumed_responses(), 2, "clamped to published requests");
    assert!(matches!(front.next_response(), Err(RingError::ResponseOverflow { .. })));
    assert_eq!(front.rsp_cons(), u32::MAX, "nothing consumed on error");
    // Backwards.
    store(&mem, RSP_PROD_OFFSET, u32::MAX - 1);
    assert!(matches!(front.next_response(), Err(RingError::ResponseOverflow { .. })));
    store(&mem, RSP_PROD_OFFSET, 0);
    assert_eq!(front.next_response().unwrap(), Some(TxResponse { id: 0, status: 0 }));
}

#[test]
fn final_checks_and_custom_events() {
    let (mut front, mut back) = pair(10);
    assert!(!back.final_check_for_requests_with_event(8));
    assert_eq!(load(back.memory(), REQ_EVENT_OFFSET), 18);
    assert!(!back.final_check_for_requests_with_event(0));
    assert_eq!(load(back.memory(), REQ_EVENT_OFFSET), 11, "ahead clamped to >= 1");
    assert!(!back.final_check_for_requests_with_event(1000));
    assert_eq!(load(back.memory(), REQ_EVENT_OFFSET), 10 + 256, "ahead clamped to the ring");
    back.set_req_event(12);
    for i in 0..2 {
        front.push_request(tx(i)).unwrap();
        // Only the request that makes req_prod reach 12 notifies.
        assert_eq!(front.push_requests_and_check_notify(), i == 1);
    }
    assert!(back.final_check_for_requests());
    back.skip_requests(2).unwrap();
    back.push_response(TxResponse::default()).unwrap();
    back.push_response(TxResponse::default()).unwrap();
    front.set_rsp_event(12);
    assert!(back.push_responses_and_check_notify());
    assert!(front.final_check_for_responses());
}

#[test]
fn peek_and_skip() {
    let (mut front, mut back) = pair(u32::MAX - 1);
    for i in 0..4 {
        front.push_request(tx(i)).unwrap();
    }
    front.push_requests_and_check_notify();
    assert_eq!(back.peek_request(3).unwrap(), Some(tx(3)));
    assert_eq!(back.peek_request(4).unwrap(), None);
    assert_eq!(back.peek_request(0).unwrap(), Some(tx(0)));
    assert!(matches!(back.skip_requests(5), Err(RingError::SkipRequests { n: 5, available: 4 })));
    back.skip_requests(3).unwrap();
    assert_eq!(back.next_request().unwrap(), Some(tx(3)));
    assert_eq!(back.unanswered_requests(), 4);
}

#[test]
fn tx_extra_overlays_request_slot() {
    let (mut front, mut back) = pair(0);
    let gso =
        Extra { info: ExtraInfo::Gso { size: 1448, gso_type: XEN_NETIF_GSO_TYPE_TCPV6, features: 0 }, more: false };
    front.push_request(TxRequest { flags: NETTXF_EXTRA_INFO, ..tx(0) }).unwrap();
    front.push_request_as(gso.encode()).unwrap();
    front.push_requests_and_check_notify();
    let first = back.next_request().unwrap().unwrap();
    assert!(first.has_flag(NETTXF_EXTRA_INFO));
    let raw: NetifExtraInfo = back.next_request_as().unwrap().unwrap();
    assert_eq!(Extra::decode(&raw), Ok(gso));
    // Both responses; the extra's is NETIF_RSP_NULL.
    back.push_response(TxResponse { id: first.id, status: NETIF_RSP_OKAY }).unwrap();
    back.push_response(TxResponse { id: 0, status: NETIF_RSP_NULL }).unwrap();
    back.push_responses_and_check_notify();
    assert_eq!(front.next_response().unwrap().map(|r| r.status), Some(NETIF_RSP_OKAY));
    assert_eq!(front.next_response().unwrap().map(|r| r.status), Some(NETIF_RSP_NULL));
}

#[test]
fn rx_responses_land_in_request_slots() {
    let mem = page();
    let mut front = FrontRing::<RxRing, _>::init_at(mem.clone(), 254).unwrap();
    let mut back = BackRing::<RxRing, _>::attach(mem.clone()).unwrap();
    for id in 0..4 {
        front.push_request(RxRequest { id, pad: 0, gref: 77 + u32::from(id) }).unwrap();
    }
    front.push_requests_and_check_notify();
    let hash = Extra { info: ExtraInfo::Hash { hash_type: 1, algorithm: 1, value: [1, 2, 3, 4] }, more: false };
    let r0 = back.next_request().unwrap().unwrap();
    let _r1 = back.next_request().unwrap().unwrap();
    back.push_response(RxResponse { id: r0.id, offset: 0, flags: NETRXF_EXTRA_INFO, status: 100 }).unwrap();
    back.push_response_as(hash.encode()).unwrap();
    back.push_responses_and_check_notify();
    // Slot of index 254 (the first request) now holds the response, and slot
    // 255 the extra; both were request slots.
    let mut slot = [0u8; 8];
    mem.as_volatile_slice().read_slice(&mut slot, SRING_HEADER_SIZE + 254 * 8).unwrap();
    assert_eq!(RxResponse::decode(&slot).status, 100);
    mem.as_volatile_slice().read_slice(&mut slot, SRING_HEADER_SIZE + 255 * 8).unwrap();
    assert_eq!(NetifExtraInfo::decode(&slot).ty, XEN_NETIF_EXTRA_TYPE_HASH);
    let rsp = front.next_response().unwrap().unwrap();
    assert!(rsp.has_flag(NETRXF_EXTRA_INFO));
    let extra: NetifExtraInfo = front.next_response_as().unwrap().unwrap();
    assert_eq!(Extra::decode(&extra), Ok(hash));
    assert_eq!(front.next_response().unwrap(), None);
}

#[test]
fn attach_at_resumes_after_restart() {
    let (mut front, mut back) = pair(u32::MAX - 2);
    for i in 0..5 {
        front.push_request(tx(i)).unwrap();
    }
    front.push_requests_and_check_notify();
    for _ in 0..3 {
        back.next_request().unwrap();
    }
    back.push_response(TxResponse { id: 0, status: 0 }).unwrap();
    back.push_responses_and_check_notify();
    back.push_response(TxResponse { id: 1, status: 0 }).unwrap(); // written, unpublished
    let (req_cons, rsp_prod_pvt) = (back.req_cons(), back.rsp_prod_pvt());
    let mem = back.into_memory();
    let bad = BackRing::<TxRing, _>::attach_at(mem.clone(), req_cons, req_cons.wrapping_add(1));
    assert!(matches!(bad, Err(RingError::AttachIndices { .. })));
    let bad = BackRing::<TxRing, _>::attach_at(mem.clone(), req_cons, rsp_prod_pvt.wrapping_sub(2));
    assert!(matches!(bad, Err(RingError::AttachIndices { .. })), "behind the shared rsp_prod");
    let mut back = BackRing::<TxRing, _>::attach_at(mem, req_cons, rsp_prod_pvt).unwrap();
    assert_eq!((back.unconsumed_requests(), back.unanswered_requests()), (2, 1));
    back.push_response(TxResponse { id: 2, status: 0 }).unwrap();
    back.push_responses_and_check_notify();
    let ids: Vec<u16> = std::iter::from_fn(|| front.next_response().unwrap()).map(|r| r.id).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert_eq!(back.next_request().unwrap(), Some(tx(3)));
}

#[test]
fn front_attach_resumes_outstanding() {
    let (mut front, _back) = pair(7);
    front.push_request(tx(0)).unwrap();
    front.push_request(tx(1)).unwrap();
    front.push_requests_and_check_notify();
    let front = FrontRing::<TxRing, _>::attach(front.into_memory()).unwrap();
    assert_eq!((front.req_prod_pvt(), front.rsp_cons(), front.free_requests()), (9, 7, 254));
}

#[test]
fn ctrl_ring_roundtrip() {
    let mem = page();
    let mut front = FrontRing::<CtrlRing, _>::init(&*mem).unwrap();
    let mut back = BackRing::<CtrlRing, _>::attach(&*mem).unwrap();
    let req = CtrlRequest { id: 9, ty: XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, data: [0; 3] };
    front.push_request(req).unwrap();
    assert!(front.push_requests_and_check_notify());
    let got = back.next_request().unwrap().unwrap();
    assert_eq!(got, req);
    back.push_response(CtrlResponse { id: got.id, ty: got.ty, status: XEN_NETIF_CTRL_STATUS_SUCCESS, data: 128 })
        .unwrap();
    assert!(back.push_responses_and_check_notify());
    assert_eq!(front.next_response().unwrap().map(|r| r.data), Some(128));
    assert!(format!("{front:?} {back:?}").contains("req_prod_pvt: 1"));
}
