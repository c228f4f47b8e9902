//! Property tests of the ring index arithmetic against a model.
//!
//! A front and a back ring share one `MmapRegion`, start at arbitrary indices
//! (often just below 2^32, so the free-running indices wrap), and run a random
//! interleaving of push / publish / consume / respond / publish / collect /
//! final-check. After each step the rings' counts, FIFO order and content,
//! the event indices in the header, and every notify decision are checked
//! against a model written independently of ring.h's formulas.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use netif::abi::*;
use netif::ring::{
    BackRing, CtrlRing, FrontRing, REQ_EVENT_OFFSET, REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET, RingError,
    RingKind, RxRing, TxRing,
};
use proptest::prelude::*;
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

type Mem = Arc<MmapRegion>;

/// Content of the request / response at free-running index `i`, so FIFO order
/// and payload can be checked from the index alone.
trait TestKind: RingKind<Req: PartialEq + core::fmt::Debug, Rsp: PartialEq + core::fmt::Debug> {
    fn req(i: u32) -> Self::Req;
    fn rsp(i: u32) -> Self::Rsp;
}

impl TestKind for TxRing {
    fn req(i: u32) -> TxRequest {
        TxRequest { gref: i, offset: (i >> 16) as u16, flags: 0, id: i as u16, size: (i >> 8) as u16 }
    }
    fn rsp(i: u32) -> TxResponse {
        TxResponse { id: i as u16, status: (i >> 16) as i16 }
    }
}

impl TestKind for RxRing {
    fn req(i: u32) -> RxRequest {
        RxRequest { id: i as u16, pad: 0, gref: !i }
    }
    fn rsp(i: u32) -> RxResponse {
        RxResponse { id: i as u16, offset: (i >> 16) as u16, flags: 0, status: (i >> 8) as i16 }
    }
}

impl TestKind for CtrlRing {
    fn req(i: u32) -> CtrlRequest {
        CtrlRequest { id: i as u16, ty: (i >> 16) as u16, data: [i, !i, i.rotate_left(7)] }
    }
    fn rsp(i: u32) -> CtrlResponse {
        CtrlResponse { id: i as u16, ty: (i >> 16) as u16, status: !i, data: i }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    PublishRequests,
    Consume(u32),
    Respond(u32),
    PublishResponses,
    Collect(u32),
    BackFinalCheck(u32),
    FrontFinalCheck,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..300u32).prop_map(Op::Push),
        Just(Op::PublishRequests),
        (0..300u32).prop_map(Op::Consume),
        (0..300u32).prop_map(Op::Respond),
        Just(Op::PublishResponses),
        (0..300u32).prop_map(Op::Collect),
        (0..300u32).prop_map(Op::BackFinalCheck),
        Just(Op::FrontFinalCheck),
    ]
}

fn start() -> impl Strategy<Value = u32> {
    prop_oneof![u32::MAX - 700..=u32::MAX, 0..700u32, any::<u32>()]
}

/// The model: plain counters, distances computed in u64 modulo 2^32.
#[derive(Debug)]
struct Model {
    size: u32,
    req_prod_pvt: u32,
    req_pushed: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
    rsp_pushed: u32,
    rsp_cons: u32,
    req_event: u32,
    rsp_event: u32,
}

/// Distance from `a` forward to `b` modulo 2^32.
fn dist(a: u32, b: u32) -> u64 {
    (u64::from(b) + (1 << 32) - u64::from(a)) % (1 << 32)
}

/// Notify iff `event` is one of `old+1, ..., new` (mod 2^32).
fn model_notify(event: u32, old: u32, new: u32) -> bool {
    let batch = dist(old, new);
    (1..=batch).contains(&dist(old, event))
}

fn header(mem: &Mem, off: usize) -> u32 {
    mem.as_volatile_slice().load::<u32>(off, Ordering::Acquire).unwrap()
}

struct Harness<K: TestKind> {
    mem: Mem,
    front: FrontRing<K, Mem>,
    back: BackRing<K, Mem>,
    m: Model,
}

impl<K: TestKind> Harness<K> {
    fn new(start: u32) -> Self {
        let mem: Mem = Arc::new(MmapRegion::new(XEN_PAGE_SIZE).unwrap());
        let front = FrontRing::<K, _>::init_at(mem.clone(), start).unwrap();
        let back = BackRing::<K, _>::attach(mem.clone()).unwrap();
        let e = start.wrapping_add(1);
        let m = Model {
            size: K::SIZE,
            req_prod_pvt: start,
            req_pushed: start,
            req_cons: start,
            rsp_prod_pvt: start,
            rsp_pushed: start,
            rsp_cons: start,
            req_event: e,
            rsp_event: e,
        };
        Self { mem, front, back, m }
    }

    fn check_counts(&self) -> Result<(), TestCaseError> {
        let m = &self.m;
        prop_assert_eq!(u64::from(self.front.free_requests()), u64::from(m.size) - dist(m.rsp_cons, m.req_prod_pvt));
        prop_assert_eq!(u64::from(self.back.unconsumed_requests()), dist(m.req_cons, m.req_pushed));
        prop_assert_eq!(u64::from(self.front.unconsumed_responses()), dist(m.rsp_cons, m.rsp_pushed));
        prop_assert_eq!(u64::from(self.back.unanswered_requests()), dist(m.rsp_prod_pvt, m.req_cons));
        prop_assert!(!self.back.request_overflow());
        prop_assert!(!self.front.response_overflow());
        prop_assert_eq!((self.front.req_prod_pvt(), self.front.rsp_cons()), (m.req_prod_pvt, m.rsp_cons));
        prop_assert_eq!((self.back.req_cons(), self.back.rsp_prod_pvt()), (m.req_cons, m.rsp_prod_pvt));
        prop_assert_eq!(header(&self.mem, REQ_PROD_OFFSET), m.req_pushed);
        prop_assert_eq!(header(&self.mem, RSP_PROD_OFFSET), m.rsp_pushed);
        prop_assert_eq!(header(&self.mem, REQ_EVENT_OFFSET), m.req_event);
        prop_assert_eq!(header(&self.mem, RSP_EVENT_OFFSET), m.rsp_event);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let m = &mut self.m;
        match *op {
            Op::Push(n) => {
                for _ in 0..n {
                    let full = dist(m.rsp_cons, m.req_prod_pvt) == u64::from(m.size);
                    let res = self.front.push_request(K::req(m.req_prod_pvt));
                    if full {
                        prop_assert!(matches!(res, Err(RingError::Full)), "expected Full, got {:?}", res);
                        break;
                    }
                    prop_assert!(res.is_ok());
                    m.req_prod_pvt = m.req_prod_pvt.wrapping_add(1);
                }
            }
            Op::PublishRequests => {
                let expect = model_notify(m.req_event, m.req_pushed, m.req_prod_pvt);
                prop_assert_eq!(self.front.push_requests_and_check_notify(), expect);
                m.req_pushed = m.req_prod_pvt;
            }
            Op::Consume(n) => {
                for _ in 0..n {
                    let got = self.back.next_request().unwrap();
                    if m.req_cons == m.req_pushed {
                        prop_assert_eq!(got, None);
                        break;
                    }
                    prop_assert_eq!(got, Some(K::req(m.req_cons)));
                    m.req_cons = m.req_cons.wrapping_add(1);
                }
            }
            Op::Respond(n) => {
                for _ in 0..n {
                    let res = self.back.push_response(K::rsp(m.rsp_prod_pvt));
                    if m.rsp_prod_pvt == m.req_cons {
                        let unmatched = matches!(res, Err(RingError::UnmatchedResponse { .. }));
                        prop_assert!(unmatched, "expected UnmatchedResponse, got {:?}", res);
                        break;
                    }
                    prop_assert!(res.is_ok());
                    m.rsp_prod_pvt = m.rsp_prod_pvt.wrapping_add(1);
                }
            }
            Op::PublishResponses => {
                let expect = model_notify(m.rsp_event, m.rsp_pushed, m.rsp_prod_pvt);
                prop_assert_eq!(self.back.push_responses_and_check_notify(), expect);
                m.rsp_pushed = m.rsp_prod_pvt;
            }
            Op::Collect(n) => {
                for _ in 0..n {
                    let got = self.front.next_response().unwrap();
                    if m.rsp_cons == m.rsp_pushed {
                        prop_assert_eq!(got, None);
                        break;
                    }
                    prop_assert_eq!(got, Some(K::rsp(m.rsp_cons)));
                    m.rsp_cons = m.rsp_cons.wrapping_add(1);
                }
            }
            Op::BackFinalCheck(ahead) => {
                let pending = m.req_cons != m.req_pushed;
                prop_assert_eq!(self.back.final_check_for_requests_with_event(ahead), pending);
                if !pending {
                    let reachable = u64::from(m.size) - dist(m.rsp_pushed, m.req_cons);
                    let ahead = u64::from(ahead).clamp(1, reachable.max(1));
                    m.req_event = (u64::from(m.req_cons) + ahead) as u32;
                }
            }
            Op::FrontFinalCheck => {
                let pending = m.rsp_cons != m.rsp_pushed;
                prop_assert_eq!(self.front.final_check_for_responses(), pending);
                if !pending {
                    m.rsp_event = m.rsp_cons.wrapping_add(1);
                }
            }
        }
        self.check_counts()
    }

    fn run(start: u32, ops: &[Op]) -> Result<Self, TestCaseError> {
        let mut h = Self::new(start);
        h.check_counts()?;
        for op in ops {
            h.step(op)?;
        }
        Ok(h)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tx_ring_matches_model(start in start(), ops in prop::collection::vec(op(), 1..120)) {
        Harness::<TxRing>::run(start, &ops)?;
    }

    #[test]
    fn rx_ring_matches_model(start in start(), ops in prop::collection::vec(op(), 1..120)) {
        Harness::<RxRing>::run(start, &ops)?;
    }

    #[test]
    fn ctrl_ring_matches_model(start in start(), ops in prop::collection::vec(op(), 1..120)) {
        Harness::<CtrlRing>::run(start, &ops)?;
    }

    /// A hostile frontend writes an arbitrary `req_prod`: the backend flags
    /// exactly the impossible values, never consumes on them, and counts
    /// with ring.h's clamp.
    #[test]
    fn lying_req_prod(start in start(), ops in prop::collection::vec(op(), 0..60), lie_off in any::<u32>(),
                      near in any::<bool>()) {
        let mut h = Harness::<TxRing>::run(start, &ops)?;
        let m = &h.m;
        // Half the time pick values around the boundary.
        let lie = if near { m.req_cons.wrapping_add(lie_off % 600).wrapping_sub(300) } else { lie_off };
        h.mem.as_volatile_slice().store(lie, REQ_PROD_OFFSET, Ordering::Release).unwrap();
        let space = u64::from(m.size) - dist(m.rsp_prod_pvt, m.req_cons);
        let overflow = dist(m.req_cons, lie) > space;
        prop_assert_eq!(h.back.request_overflow(), overflow);
        // ring.h's RING_REQUEST_PROD_OVERFLOW is always caught.
        if dist(m.rsp_prod_pvt, lie) > u64::from(m.size) {
            prop_assert!(overflow);
        }
        prop_assert_eq!(u64::from(h.back.unconsumed_requests()), dist(m.req_cons, lie).min(space));
        let cons = m.req_cons;
        match h.back.next_request() {
            Err(RingError::RequestOverflow { req_prod, .. }) => {
                prop_assert!(overflow);
                prop_assert_eq!(req_prod, lie);
            }
            Ok(Some(_)) => prop_assert!(!overflow && lie != cons),
            Ok(None) => prop_assert!(!overflow && lie == cons),
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
        if overflow {
            prop_assert_eq!(h.back.req_cons(), cons);
        }
    }

    /// A hostile backend writes an arbitrary `rsp_prod`: the frontend accepts
    /// only values answering published requests.
    #[test]
    fn lying_rsp_prod(start in start(), ops in prop::collection::vec(op(), 0..60), lie_off in any::<u32>(),
                      near in any::<bool>()) {
        let mut h = Harness::<TxRing>::run(start, &ops)?;
        let m = &h.m;
        let lie = if near { m.rsp_cons.wrapping_add(lie_off % 600).wrapping_sub(300) } else { lie_off };
        h.mem.as_volatile_slice().store(lie, RSP_PROD_OFFSET, Ordering::Release).unwrap();
        let published = dist(m.rsp_cons, m.req_pushed);
        let overflow = dist(m.rsp_cons, lie) > published;
        prop_assert_eq!(h.front.response_overflow(), overflow);
        if dist(m.rsp_cons, lie) > u64::from(m.size) {
            prop_assert!(overflow, "RING_RESPONSE_PROD_OVERFLOW is always caught");
        }
        prop_assert_eq!(u64::from(h.front.unconsumed_responses()), dist(m.rsp_cons, lie).min(published));
        let cons = m.rsp_cons;
        match h.front.next_response() {
            Err(RingError::ResponseOverflow { rsp_prod, .. }) => {
                prop_assert!(overflow);
                prop_assert_eq!(rsp_prod, lie);
                prop_assert_eq!(h.front.rsp_cons(), cons);
            }
            Ok(Some(_)) => prop_assert!(!overflow && lie != cons),
            Ok(None) => prop_assert!(!overflow && lie == cons),
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    /// `attach` accepts exactly `req_prod - rsp_prod <= SIZE`.
    #[test]
    fn attach_overflow(start in start(), ahead in prop_oneof![0..600u32, any::<u32>()]) {
        let mem: Mem = Arc::new(MmapRegion::new(XEN_PAGE_SIZE).unwrap());
        FrontRing::<TxRing, _>::init_at(mem.clone(), start).unwrap();
        mem.as_volatile_slice().store(start.wrapping_add(ahead), REQ_PROD_OFFSET, Ordering::Release).unwrap();
        let res = BackRing::<TxRing, _>::attach(mem);
        prop_assert_eq!(res.is_ok(), ahead <= TxRing::SIZE);
        if let Ok(back) = res {
            prop_assert_eq!(back.unconsumed_requests(), ahead);
        }
    }
}
