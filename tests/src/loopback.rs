//! A minimal loop-back backend for tests of a frontend alone: every TX request is copied
//! into the next posted RX buffer of the same guest, through the grant-copy interface.

use anyhow::Context;
use grant::{CopyPtr, CopySegment, DomId, GrantMapping, GrantOps};
use netif::abi::{NETIF_RSP_ERROR, NETIF_RSP_OKAY};
use netif::{BackRing, RxResponse, RxRing, TxResponse, TxRing};
use vm_memory::VolatileSlice;

/// Loops TX requests back into posted RX buffers while both rings have work; returns the
/// frames looped. A request crossing its page or a failed copy is answered
/// `NETIF_RSP_ERROR` on both rings.
pub fn loop_back(
    grants: &impl GrantOps,
    guest: DomId,
    tx: &mut BackRing<TxRing, GrantMapping>,
    rx: &mut BackRing<RxRing, GrantMapping>,
) -> anyhow::Result<u32> {
    let mut looped = 0;
    while rx.unconsumed_requests() > 0 {
        let Some(req) = tx.next_request()? else { break };
        let slot = rx.next_request()?.context("RX request vanished")?;
        let len = usize::from(req.size);
        let mut buf = vec![0u8; len];
        let mut ok = usize::from(req.offset) + len <= grant::PAGE_SIZE;
        if ok {
            let src = CopyPtr::Grant { domid: guest, gref: req.gref, offset: req.offset };
            let mut seg = [CopySegment::new(src, CopyPtr::Local(VolatileSlice::from(&mut buf[..])), req.size)];
            grants.copy(&mut seg)?;
            ok = seg[0].status.is_ok();
        }
        if ok {
            let dst = CopyPtr::Grant { domid: guest, gref: slot.gref, offset: 0 };
            let mut seg = [CopySegment::new(CopyPtr::Local(VolatileSlice::from(&mut buf[..])), dst, req.size)];
            grants.copy(&mut seg)?;
            ok = seg[0].status.is_ok();
        }
        let (tx_status, rx_status) =
            if ok { (NETIF_RSP_OKAY, req.size as i16) } else { (NETIF_RSP_ERROR, NETIF_RSP_ERROR) };
        tx.push_response(TxResponse { id: req.id, status: tx_status })?;
        rx.push_response(RxResponse { id: slot.id, offset: 0, flags: 0, status: rx_status })?;
        looped += 1;
    }
    Ok(looped)
}
