//! A minimal scatter-gather loop-back backend: every TX chain (first slot with the total
//! size, extras, follow-on slots) is copied out with one grant copy per slot and delivered
//! back as an RX chain of page-sized slots (one grant copy per slot), the GSO extra
//! echoed right after the first data slot, `csum_blank`/`data_validated` echoed on the
//! first RX response. Each TX data slot gets an `OKAY` response with its id, each extra a
//! `NETIF_RSP_NULL` right after the first slot's response (as Linux netback).

use super::Backend;
use anyhow::{Context, bail, ensure};
use grant::{CopyPtr, CopySegment, GrantOps, PAGE_SIZE};
use netif::abi::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
};
use netif::{Extra, NetifExtraInfo, RxResponse, TxRequest, TxResponse};
use vm_memory::VolatileSlice;

/// One complete TX chain, peeked (not yet consumed).
#[derive(Debug)]
struct TxChain {
    data: Vec<TxRequest>,
    extras: Vec<Extra>,
    slots: u32,
}

/// The complete chain at `req_cons`, or `None` if not all of it is on the ring yet.
fn peek_chain(b: &Backend) -> anyhow::Result<Option<TxChain>> {
    let Some(first) = b.tx.peek_request(0)? else { return Ok(None) };
    let mut ahead = 1;
    let mut extras = Vec::new();
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            let Some(raw) = b.tx.peek_request_as::<NetifExtraInfo>(ahead)? else { return Ok(None) };
            ahead += 1;
            extras.push(Extra::decode(&raw)?);
            if !raw.more() {
                break;
            }
        }
    }
    let mut data = vec![first];
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    while more {
        let Some(req) = b.tx.peek_request(ahead)? else { return Ok(None) };
        ensure!(ahead < 64, "TX chain without end");
        ahead += 1;
        more = req.flags & NETTXF_MORE_DATA != 0;
        data.push(req);
    }
    Ok(Some(TxChain { data, extras, slots: ahead }))
}

/// Copies the chain's bytes out of the guest (one segment per slot); `None` if a copy failed.
fn copy_in(b: &Backend, chain: &TxChain) -> anyhow::Result<Option<Vec<u8>>> {
    let total = usize::from(chain.data[0].size);
    let rest: usize = chain.data[1..].iter().map(|r| usize::from(r.size)).sum();
    let first_len = total.checked_sub(rest).context("first slot size below the follow-on sizes")?;
    let lens = std::iter::once(first_len).chain(chain.data[1..].iter().map(|r| usize::from(r.size)));
    let mut buf = vec![0u8; total];
    let mut segs = Vec::new();
    let mut left: &mut [u8] = &mut buf;
    for (req, len) in chain.data.iter().zip(lens) {
        let (head, tail) = std::mem::take(&mut left).split_at_mut(len);
        left = tail;
        let src = CopyPtr::Grant { domid: b.guest, gref: req.gref, offset: req.offset };
        segs.push(CopySegment::new(src, CopyPtr::Local(VolatileSlice::from(head)), len as u16));
    }
    b.dom0.domain.copy(&mut segs)?;
    let ok = segs.iter().all(|s| s.status.is_ok());
    drop(segs);
    Ok(ok.then_some(buf))
}

/// Loops back every complete TX chain for which enough RX buffers are posted.
pub fn loop_back(b: &mut Backend) -> anyhow::Result<bool> {
    let mut moved = false;
    while let Some(chain) = peek_chain(b)? {
        let total = usize::from(chain.data[0].size);
        let rx_slots = total.div_ceil(PAGE_SIZE).max(1) + chain.extras.len();
        if (b.rx.unconsumed_requests() as usize) < rx_slots {
            break;
        }
        b.tx.skip_requests(chain.slots)?;
        moved = true;
        let frame = copy_in(b, &chain)?;
        // TX responses: the first slot, NULL for each extra, then the other slots.
        let tx_status = if frame.is_some() { NETIF_RSP_OKAY } else { NETIF_RSP_ERROR };
        b.tx.push_response(TxResponse { id: chain.data[0].id, status: tx_status })?;
        for _ in &chain.extras {
            b.tx.push_response(TxResponse { id: 0, status: NETIF_RSP_NULL })?;
        }
        for req in &chain.data[1..] {
            b.tx.push_response(TxResponse { id: req.id, status: tx_status })?;
        }
        let Some(mut frame) = frame else {
            let req = b.rx.next_request()?.context("RX request vanished")?;
            b.rx.push_response(RxResponse { id: req.id, offset: 0, flags: 0, status: NETIF_RSP_ERROR })?;
            continue;
        };
        deliver(b, &chain, &mut frame)?;
    }
    Ok(moved)
}

/// Writes `frame` into posted RX buffers: data slot, the extras, the other data slots.
fn deliver(b: &mut Backend, chain: &TxChain, frame: &mut [u8]) -> anyhow::Result<()> {
    let first_flags = chain.data[0].flags;
    let n = frame.len().div_ceil(PAGE_SIZE);
    let mut data_reqs = Vec::with_capacity(n);
    let mut extra_reqs = Vec::new();
    for i in 0..n + chain.extras.len() {
        let req = b.rx.next_request()?.context("RX request vanished")?;
        if i >= 1 && i <= chain.extras.len() { extra_reqs.push(req) } else { data_reqs.push(req) }
    }
    let mut segs: Vec<CopySegment<'_>> = frame
        .chunks_mut(PAGE_SIZE)
        .zip(&data_reqs)
        .map(|(chunk, req)| {
            let len = chunk.len() as u16;
            let dst = CopyPtr::Grant { domid: b.guest, gref: req.gref, offset: 0 };
            CopySegment::new(CopyPtr::Local(VolatileSlice::from(chunk)), dst, len)
        })
        .collect();
    b.dom0.domain.copy(&mut segs)?;
    if let Some(bad) = segs.iter().find(|s| !s.status.is_ok()) {
        bail!("RX copy failed: {:?}", bad.status);
    }
    let lens: Vec<i16> = segs.iter().map(|s| s.len as i16).collect();
    drop(segs);
    let mut flags = 0;
    for (tx_flag, rx_flag) in [(NETTXF_CSUM_BLANK, NETRXF_CSUM_BLANK), (NETTXF_DATA_VALIDATED, NETRXF_DATA_VALIDATED)] {
        if first_flags & tx_flag != 0 {
            flags |= rx_flag;
        }
    }
    for (i, (req, status)) in data_reqs.iter().zip(lens).enumerate() {
        let more = if i + 1 < n { NETRXF_MORE_DATA } else { 0 };
        let extra = if i == 0 && !chain.extras.is_empty() { NETRXF_EXTRA_INFO } else { 0 };
        let flags = if i == 0 { flags | more | extra } else { more };
        b.rx.push_response(RxResponse { id: req.id, offset: 0, flags, status })?;
        if i == 0 {
            for extra in &chain.extras {
                b.rx.push_response(extra.to_rx_response())?;
            }
        }
    }
    Ok(())
}
