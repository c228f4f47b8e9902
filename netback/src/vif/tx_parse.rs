//! Reading one TX packet's slots out of the ring: the first request, its extra-info slots
//! and its `more_data` chain, with Linux netback's fatal checks (`netif.md` §1.6).
//!
//! Every slot is copied out of the ring once per attempt ([`BackRing::peek_request`]) and only
//! that copy is examined; the caller consumes the slots with [`BackRing::skip_requests`] once
//! the whole packet is present, so a packet is never half-consumed.

use grant::PAGE_SIZE;
use netif::abi::{NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};
use netif::{BackRing, Extra, ExtraInfo, NetifExtraInfo, RingMemory, TxRequest, TxRing};

use super::DatapathError;

/// Linux's `fatal_skb_slots`: a packet with more follow-on slots than this (a `more_data`
/// chain of 22 slots or more) is an attack. Like Linux's `xenvif_count_requests`, the
/// limits count the slots after the first.
pub(super) const FATAL_SKB_SLOTS: usize = 20;

/// Linux's `XEN_NETBK_LEGACY_SLOTS_MAX` (`XEN_NETIF_NR_SLOTS_MIN`): the most follow-on slots
/// a packet may have (a chain of up to 19 slots is served; Linux netfront sends up to 18,
/// a 64 KiB GSO frame). With more (up to [`FATAL_SKB_SLOTS`]) it is answered ERROR and
/// dropped.
pub(super) const LEGACY_SLOTS_MAX: usize = 18;

/// One packet's slots, in ring order: `first`, then `extras`, then `frags`.
#[derive(Debug)]
pub(super) struct TxPacket {
    /// The first request; its `size` is the whole packet's.
    pub first: TxRequest,
    /// The extra-info slots after it.
    pub extras: Vec<Extra>,
    /// The follow-on requests of a `more_data` chain.
    pub frags: Vec<TxRequest>,
    /// Bytes in the first slot: `first.size` minus the follow-on sizes; `None` if the
    /// follow-ons claim more than the total (a ≥ 64 KiB packet that overflowed `u16`).
    pub first_len: Option<u16>,
}

impl TxPacket {
    /// Ring slots the packet occupies; each gets exactly one response.
    pub fn slots(&self) -> u32 {
        // At most FATAL_SKB_SLOTS + the ring size: far below u32::MAX.
        (1 + self.extras.len() + self.frags.len()) as u32
    }
}

/// What the ring holds at `req_cons`.
#[derive(Debug)]
pub(super) enum Parsed {
    /// No request.
    Empty,
    /// A whole packet, not consumed yet.
    Packet(TxPacket),
}

fn protocol(msg: String) -> DatapathError {
    DatapathError::TxProtocol(msg)
}

fn ring_err(source: netif::RingError) -> DatapathError {
    DatapathError::Ring { ring: "TX", source }
}

/// "Cross page boundary" (Linux): fatal.
fn check_in_page(what: &str, offset: u16, len: u16) -> Result<(), DatapathError> {
    if usize::from(offset) + usize::from(len) > PAGE_SIZE {
        return Err(protocol(format!("{what}: offset {offset} + size {len} crosses the page boundary")));
    }
    Ok(())
}

/// Linux `xenvif_set_skb_gso`: a GSO extra with an MSS of 0 or an unknown type is fatal.
fn check_gso(extra: &Extra) -> Result<(), DatapathError> {
    if let ExtraInfo::Gso { size, gso_type, .. } = extra.info {
        if size == 0 {
            return Err(protocol("GSO extra with size 0".into()));
        }
        if gso_type != XEN_NETIF_GSO_TYPE_TCPV4 && gso_type != XEN_NETIF_GSO_TYPE_TCPV6 {
            return Err(protocol(format!("GSO extra of unknown type {gso_type}")));
        }
    }
    Ok(())
}

/// Reads the packet at `req_cons` without consuming anything.
///
/// A packet whose slots run past the requests the frontend produced is fatal, as in Linux
/// (`xenvif_get_extras`: "Missing extra info"; `xenvif_count_requests`: "Asked for %d
/// slots but exceeds this limit"): a frontend publishes `req_prod` only after writing a
/// whole packet (Linux netfront's `xennet_start_xmit` does), so a packet cut short by
/// `req_prod` is a missing extra, a `more_data` chain that never ends, or a chain longer
/// than the ring. Waiting for the rest instead would let such a frontend park its TX ring
/// for ever with nothing to show for it.
///
/// # Errors
/// Fatal protocol violations: a slot crossing its page, an extra of type 0 or ≥ MAX, a GSO
/// extra of size 0 or unknown type, more than [`FATAL_SKB_SLOTS`] follow-on slots, a packet
/// longer than the requests produced; ring index errors.
pub(super) fn parse<M: RingMemory>(ring: &BackRing<TxRing, M>) -> Result<Parsed, DatapathError> {
    // Linux's `work_to_do`: the requests produced past req_cons, read once.
    let work = ring.unconsumed_requests();
    if work == 0 {
        return Ok(Parsed::Empty);
    }
    let Some(first) = ring.peek_request(0).map_err(ring_err)? else { return Ok(Parsed::Empty) };
    let missing = |ahead: u32, what: &str| -> Result<Parsed, DatapathError> {
        Err(protocol(format!("{what}: the packet needs more than the {work} requests produced (slot {})", ahead + 1)))
    };
    let mut ahead = 1u32;

    let mut extras = Vec::new();
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            let peeked =
                if ahead < work { ring.peek_request_as::<NetifExtraInfo>(ahead).map_err(ring_err)? } else { None };
            let Some(raw) = peeked else { return missing(ahead, "missing extra info") };
            ahead += 1;
            let extra = Extra::decode(&raw).map_err(|e| protocol(format!("extra info slot: {e}")))?;
            check_gso(&extra)?;
            extras.push(extra);
            if !extra.more {
                break;
            }
        }
    }

    let mut frags: Vec<TxRequest> = Vec::new();
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    while more {
        // Linux's check before it reads another follow-on slot.
        if frags.len() >= FATAL_SKB_SLOTS {
            let chain = 1 + frags.len() + 1;
            return Err(protocol(format!("malicious frontend using {chain}+ slots in one packet")));
        }
        let peeked = if ahead < work { ring.peek_request(ahead).map_err(ring_err)? } else { None };
        let Some(req) = peeked else { return missing(ahead, "more_data chain runs past the requests") };
        ahead += 1;
        check_in_page("follow-on TX slot", req.offset, req.size)?;
        more = req.flags & NETTXF_MORE_DATA != 0;
        frags.push(req);
    }

    let rest: u32 = frags.iter().map(|f| u32::from(f.size)).sum();
    let first_len = u32::from(first.size).checked_sub(rest).map(|n| n as u16);
    if let Some(len) = first_len {
        check_in_page("first TX slot", first.offset, len)?;
    }
    Ok(Parsed::Packet(TxPacket { first, extras, frags, first_len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netif::abi::XEN_NETIF_EXTRA_FLAG_MORE;
    use netif::{FrontRing, RingKind};
    use vm_memory::MmapRegion;

    fn rings() -> (FrontRing<TxRing, std::sync::Arc<MmapRegion>>, BackRing<TxRing, std::sync::Arc<MmapRegion>>) {
        let page = std::sync::Arc::new(MmapRegion::new(PAGE_SIZE).expect("anonymous page"));
        let front = FrontRing::init(page.clone()).expect("init");
        let back = BackRing::attach(page).expect("attach");
        (front, back)
    }

    fn req(offset: u16, size: u16, flags: u16) -> TxRequest {
        TxRequest { gref: 9, offset, flags, id: 0, size }
    }

    fn push(front: &mut FrontRing<TxRing, std::sync::Arc<MmapRegion>>, reqs: &[TxRequest]) {
        for r in reqs {
            front.push_request(*r).expect("push");
        }
        front.push_requests_and_check_notify();
    }

    #[test]
    fn single_slot_and_empty() {
        let (mut front, back) = rings();
        assert!(matches!(parse(&back), Ok(Parsed::Empty)));
        push(&mut front, &[req(100, 200, 0)]);
        let Ok(Parsed::Packet(p)) = parse(&back) else { panic!("packet expected") };
        assert_eq!((p.slots(), p.first_len), (1, Some(200)));
    }

    #[test]
    fn cross_page_is_fatal() {
        let (mut front, back) = rings();
        push(&mut front, &[req(4000, 97, 0)]);
        assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))));
    }

    #[test]
    fn chain_cut_short_by_req_prod_is_fatal() {
        let (mut front, back) = rings();
        push(&mut front, &[req(0, 300, NETTXF_MORE_DATA), req(0, 100, 0)]);
        let Ok(Parsed::Packet(p)) = parse(&back) else { panic!("packet expected") };
        assert_eq!((p.slots(), p.first_len), (2, Some(200)));

        // Linux's xenvif_count_requests: a chain longer than the requests produced.
        let (mut front, back) = rings();
        push(&mut front, &[req(0, 300, NETTXF_MORE_DATA), req(0, 100, NETTXF_MORE_DATA)]);
        let Err(DatapathError::TxProtocol(msg)) = parse(&back) else { panic!("fatal expected") };
        assert!(msg.contains("more_data chain runs past"), "{msg}");
    }

    #[test]
    fn chain_limits() {
        // Linux's xenvif_count_requests: fatal once a 21st follow-on slot is announced (a
        // 22-slot chain); 21 slots still parse (the TX path drops 20 and 21).
        let (mut front, back) = rings();
        let mut chain = vec![req(0, 21 * 10, NETTXF_MORE_DATA)];
        chain.extend((1..21).map(|i| req(0, 10, if i < 20 { NETTXF_MORE_DATA } else { 0 })));
        push(&mut front, &chain);
        let Ok(Parsed::Packet(p)) = parse(&back) else { panic!("a 21-slot chain is a packet") };
        assert_eq!(p.slots(), 21);

        let (mut front, back) = rings();
        push(&mut front, &vec![req(0, 10, NETTXF_MORE_DATA); 21]);
        assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))), "22nd slot announced");
    }

    #[test]
    fn extras_follow_more_and_type_zero_is_fatal() {
        let (mut front, back) = rings();
        let gso = Extra { info: ExtraInfo::Gso { size: 1400, gso_type: 1, features: 0 }, more: true };
        let mcast = Extra { info: ExtraInfo::McastAdd([1, 0, 0x5e, 0, 0, 1]), more: false };
        push(&mut front, &[req(0, 60, NETTXF_EXTRA_INFO), gso.to_tx_request(), mcast.to_tx_request()]);
        let Ok(Parsed::Packet(p)) = parse(&back) else { panic!("packet expected") };
        assert_eq!(p.extras, vec![gso, mcast]);

        // Linux's xenvif_get_extras: "Missing extra info".
        let (mut front, back) = rings();
        push(&mut front, &[req(0, 60, NETTXF_EXTRA_INFO), gso.to_tx_request()]);
        let Err(DatapathError::TxProtocol(msg)) = parse(&back) else { panic!("fatal expected") };
        assert!(msg.contains("missing extra info"), "{msg}");
        let (mut front, back) = rings();
        push(&mut front, &[req(0, 60, NETTXF_EXTRA_INFO)]);
        assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))));

        let (mut front, back) = rings();
        let zero = NetifExtraInfo { ty: 0, flags: XEN_NETIF_EXTRA_FLAG_MORE, u: [0; 6] };
        push(&mut front, &[req(0, 60, NETTXF_EXTRA_INFO), TxRequest::from(zero)]);
        assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))));
    }

    #[test]
    fn bad_gso_extras_are_fatal() {
        for (size, gso_type) in [(0, 1), (1400, 0), (1400, 3)] {
            let (mut front, back) = rings();
            let gso = Extra { info: ExtraInfo::Gso { size, gso_type, features: 0 }, more: false };
            push(&mut front, &[req(0, 60, NETTXF_EXTRA_INFO), gso.to_tx_request()]);
            assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))), "{size} {gso_type}");
        }
    }

    #[test]
    fn endless_extras_fill_the_ring_and_are_fatal() {
        let (mut front, back) = rings();
        let more = Extra { info: ExtraInfo::McastDel([1, 2, 3, 4, 5, 6]), more: true };
        let mut reqs = vec![req(0, 60, NETTXF_EXTRA_INFO)];
        reqs.extend(std::iter::repeat_n(more.to_tx_request(), TxRing::SIZE as usize - 1));
        push(&mut front, &reqs);
        assert!(matches!(parse(&back), Err(DatapathError::TxProtocol(_))));
    }
}
