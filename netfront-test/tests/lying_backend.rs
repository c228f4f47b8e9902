//! A lying backend against a scatter-gather netfront: bad RX statuses and offsets, extras
//! that are not (negotiated) GSO, a `more_data` chain longer than the ring, duplicate GSO
//! extras, bogus TX responses. Every lie is counted (protocol or RX error), nothing panics,
//! and a good frame sent after all of them arrives intact.

mod common;

use anyhow::{Context, ensure};
use common::{Backend, MODE, WAIT};
use grant::{CopyPtr, CopySegment, GrantOps};
use netback_e2e::is_child;
use netfront_test::{Features, Netfront, NetfrontConfig, RxMeta};
use netif::abi::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_HASH,
    XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_GSO_TYPE_TCPV4,
};
use netif::{NetifExtraInfo, RxResponse, TxResponse};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use vm_memory::VolatileSlice;

/// Lies told on the RX ring that count as protocol errors (see `script`).
const RX_PROTOCOL_ERRORS: u64 = 8;
/// Lies told on the TX ring (an unknown id, an unexpected `NETIF_RSP_NULL`).
const TX_PROTOCOL_ERRORS: u64 = 2;
/// A slot longer than the ring: 300 slots all saying `more_data`, then the end.
const LONG_CHAIN: usize = 300;
const SENTINEL: &[u8] = b"the good frame after all the lies, padded to sixty bytes......";

#[test]
#[ignore = "child process of lies_are_counted_not_fatal"]
fn child_guest() {
    if is_child() {
        let sg = std::env::var(MODE).expect("NF_MODE") == "lying";
        run_guest(sg).expect("guest");
    }
}

fn run_guest(sg: bool) -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let features = if sg { Features::ALL } else { Features::default() };
    let config = NetfrontConfig { features, ..NetfrontConfig::default() };
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, config)?;
    let want = if sg { (true, true) } else { (false, false) };
    ensure!((nf.features().sg, nf.features().gso_tcpv4) == want, "{:?}", nf.features());
    if !sg {
        return run_guest_no_sg(nf);
    }
    nf.send(&[0xaa; 60])?;
    nf.send(&[0xbb; 60])?;
    let deadline = Instant::now() + WAIT;
    let (frame, meta) = loop {
        ensure!(Instant::now() < deadline, "no good frame; {:?}", nf.stats());
        match nf.recv_with()? {
            Some(got) => break got,
            None => {
                nf.wait(Duration::from_millis(50))?;
            }
        }
    };
    ensure!(frame == SENTINEL, "first delivered frame is {} bytes: {:?}", frame.len(), &frame[..frame.len().min(16)]);
    ensure!(meta == RxMeta { csum_blank: true, data_validated: true, gso: None }, "{meta:?}");
    nf.tx_available()?;
    let stats = nf.disconnect()?;
    eprintln!("guest: {stats:?}");
    ensure!(stats.protocol_errors == RX_PROTOCOL_ERRORS + TX_PROTOCOL_ERRORS, "{stats:?}");
    ensure!((stats.rx_frames, stats.rx_errors, stats.rx_dropped_chains) == (1, 1, 0), "{stats:?}");
    Ok(())
}

/// Without scatter-gather, chains are dropped and counted as such, not as protocol errors.
fn run_guest_no_sg(mut nf: Netfront<grant::sim::SimEventChannel>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let frame = loop {
        ensure!(Instant::now() < deadline, "no good frame; {:?}", nf.stats());
        match nf.recv()? {
            Some(frame) => break frame,
            None => {
                nf.wait(Duration::from_millis(50))?;
            }
        }
    };
    ensure!(frame == SENTINEL, "first delivered frame is {} bytes", frame.len());
    let stats = nf.disconnect()?;
    eprintln!("guest: {stats:?}");
    ensure!((stats.rx_frames, stats.rx_dropped_chains, stats.protocol_errors) == (1, 2, 0), "{stats:?}");
    Ok(())
}

/// One RX ring entry the backend writes into the next posted slot.
#[derive(Debug, Clone)]
enum Lie {
    /// A data response (the id is filled in from the request).
    Data { offset: u16, flags: u16, status: i16 },
    /// An extra-info slot.
    Extra(NetifExtraInfo),
    /// The good frame: copied into the buffer for real.
    Sentinel,
}

fn data(flags: u16, status: i16) -> Lie {
    Lie::Data { offset: 0, flags, status }
}

fn extra(ty: u8, more: bool, u: [u8; 6]) -> Lie {
    Lie::Extra(NetifExtraInfo { ty, flags: if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 }, u })
}

fn gso_v4(more: bool) -> Lie {
    let [s0, s1] = 1448u16.to_ne_bytes();
    extra(XEN_NETIF_EXTRA_TYPE_GSO, more, [s0, s1, XEN_NETIF_GSO_TYPE_TCPV4, 0, 0, 0])
}

/// The lies, frame by frame, then the good frame.
fn script() -> VecDeque<Lie> {
    let (ex, more) = (NETRXF_EXTRA_INFO, NETRXF_MORE_DATA);
    let mut s = vec![
        Lie::Data { offset: 100, flags: 0, status: 4000 }, // 1: beyond its page
        data(0, 0),                                        // 2: an empty frame
        data(0, NETIF_RSP_ERROR),                          // RX error (not a lie)
        data(ex, 60),                                      // 3: a hash extra, not GSO
        extra(XEN_NETIF_EXTRA_TYPE_HASH, false, [0; 6]),
        data(ex, 60), // 4: GSO of an unknown type
        extra(XEN_NETIF_EXTRA_TYPE_GSO, false, [0x5a, 0x05, 7, 0, 0, 0]),
        data(ex, 60), // 5: extra type NONE
        extra(XEN_NETIF_EXTRA_TYPE_NONE, false, [0; 6]),
        data(ex | more, 100), // 6: two GSO extras
        gso_v4(true),
        gso_v4(false),
        data(0, 100),
        data(more, 100), // 7: a follow-on slot beyond its page
        Lie::Data { offset: 4000, flags: 0, status: 200 },
    ];
    // 8: more_data for longer than the ring holds.
    s.extend((0..LONG_CHAIN).map(|_| data(more, 100)));
    s.push(data(0, 100));
    s.push(Lie::Sentinel);
    s.into()
}

/// First answers the guest's two TX frames with lies, then tells the RX lies as fast as
/// the guest posts buffers.
fn serve(b: &mut Backend, tx_done: &mut bool, lies: &mut VecDeque<Lie>) -> anyhow::Result<bool> {
    let mut moved = false;
    if !*tx_done {
        if b.tx.unconsumed_requests() < 2 {
            return Ok(false);
        }
        b.tx.next_request()?.context("TX request")?;
        b.tx.next_request()?.context("TX request")?;
        b.tx.push_response(TxResponse { id: 999, status: NETIF_RSP_OKAY })?;
        b.tx.push_response(TxResponse { id: 0, status: NETIF_RSP_NULL })?;
        *tx_done = true;
        moved = true;
    }
    while b.rx.unconsumed_requests() > 0 {
        let Some(lie) = lies.pop_front() else { break };
        let req = b.rx.next_request()?.context("RX request vanished")?;
        let rsp = match lie {
            Lie::Data { offset, flags, status } => RxResponse { id: req.id, offset, flags, status },
            Lie::Extra(raw) => RxResponse::from(raw),
            Lie::Sentinel => {
                let mut bytes = SENTINEL.to_vec();
                let dst = CopyPtr::Grant { domid: b.guest, gref: req.gref, offset: 0 };
                let len = bytes.len() as u16;
                let mut seg = [CopySegment::new(CopyPtr::Local(VolatileSlice::from(&mut bytes[..])), dst, len)];
                b.dom0.domain.copy(&mut seg)?;
                ensure!(seg[0].status.is_ok(), "sentinel copy failed");
                let flags = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
                RxResponse { id: req.id, offset: 0, flags, status: len as i16 }
            }
        };
        b.rx.push_response(rsp)?;
        moved = true;
    }
    Ok(moved)
}

/// Chains sent to a frontend that did not ask for scatter-gather, then the good frame.
fn script_no_sg() -> VecDeque<Lie> {
    let (ex, more) = (NETRXF_EXTRA_INFO, NETRXF_MORE_DATA);
    VecDeque::from([data(more, 100), data(0, 100), data(ex, 60), gso_v4(false), Lie::Sentinel])
}

#[test]
fn chains_to_a_frontend_without_sg_are_dropped() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let (mut tx_done, mut lies) = (true, script_no_sg());
    common::run("child_guest", "lying-nosg", &["feature-sg"], |_| Ok(()), |b| serve(b, &mut tx_done, &mut lies))?;
    ensure!(lies.is_empty(), "{} lies left untold", lies.len());
    Ok(())
}

#[test]
fn lies_are_counted_not_fatal() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let (mut tx_done, mut lies) = (false, script());
    let features = ["feature-sg", "feature-gso-tcpv4"];
    common::run("child_guest", "lying", &features, |_| Ok(()), |b| serve(b, &mut tx_done, &mut lies))?;
    ensure!(lies.is_empty(), "{} lies left untold", lies.len());
    Ok(())
}
