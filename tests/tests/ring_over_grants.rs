//! The foundations composed across processes: a guest process runs the front end of a
//! netif TX ring on a page it granted to dom0; this test process runs the simulated host
//! and the back end, mapping the ring grant, grant-copying every frame out in batches and
//! answering on the ring, with event channels for notifications and xenstore for the
//! handshake.

use anyhow::{Context, ensure};
use grant::sim::{Credentials, DomainConfig};
use grant::{Access, CopyPtr, CopySegment, EventChannel, EventChannels, GrantAlloc, GrantOps};
use netback_e2e::{is_child, spawn_child, wait_child};
use netif::abi::{NETIF_RSP_OKAY, TxRequest, TxResponse};
use netif::ring::{BackRing, FrontRing, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::SimHost;
use std::collections::HashMap;
use std::time::Duration;
use vm_memory::{Bytes, VolatileSlice};

const FRAMES: u32 = 3000;
const DATA_PAGES: usize = 32;
const COPY_BATCH: usize = 64;
const WAIT: Duration = Duration::from_secs(20);

/// The bytes of frame `seq`: its length varies over 60..=1514 and every byte depends on
/// `seq`, so a frame copied from the wrong page or at the wrong offset is detected.
fn frame(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 37) % 1455;
    (0..len).map(|i| (seq as usize).wrapping_mul(131).wrapping_add(i * 7) as u8).collect()
}

fn wait_event(channel: &impl EventChannel) -> anyhow::Result<()> {
    let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::try_from(WAIT).expect("fits")).context("poll")?;
    ensure!(ready == 1, "no event within {WAIT:?}");
    channel.take_pending()?;
    channel.unmask()?;
    Ok(())
}

#[test]
#[ignore = "child process of tx_ring_over_grants_between_processes"]
fn child_frontend() {
    if is_child() {
        run_frontend().expect("frontend");
    }
}

fn run_frontend() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let ring_page = session.domain.share(0, 1, Access::ReadWrite)?;
    let ring_gref = ring_page.grefs()[0];
    let data = session.domain.share(0, DATA_PAGES, Access::ReadOnly)?;
    let mut ring = FrontRing::<TxRing, _>::init(ring_page)?;
    let channel = session.domain.alloc_unbound(0)?;
    session.xenstore.transaction(|tx| {
        tx.write("data/ring/tx-ring-ref", ring_gref.to_string())?;
        tx.write("data/ring/event-channel", channel.port().to_string())
    })?;

    let mut free_pages: Vec<usize> = (0..DATA_PAGES).collect();
    let mut in_flight: HashMap<u16, usize> = HashMap::new();
    let (mut next, mut done) = (0u32, 0u32);
    while done < FRAMES {
        while next < FRAMES && !ring.is_full() {
            let Some(page) = free_pages.pop() else { break };
            let bytes = frame(next);
            data.page(page).context("data page")?.write_slice(&bytes, 0)?;
            let id = next as u16;
            let size = u16::try_from(bytes.len())?;
            ring.push_request(TxRequest { gref: data.grefs()[page], offset: 0, flags: 0, id, size })?;
            in_flight.insert(id, page);
            next += 1;
        }
        if ring.push_requests_and_check_notify() {
            channel.notify()?;
        }
        while let Some(rsp) = ring.next_response()? {
            ensure!(rsp.status == NETIF_RSP_OKAY, "response {rsp:?} is not OKAY");
            let page = in_flight.remove(&rsp.id).with_context(|| format!("response for unknown id {}", rsp.id))?;
            free_pages.push(page);
            done += 1;
        }
        if done < FRAMES && !ring.final_check_for_responses() && free_pages.is_empty() {
            wait_event(&channel)?;
        }
    }
    println!("frontend: {FRAMES} frames sent and answered");
    Ok(())
}

#[test]
fn tx_ring_over_grants_between_processes() -> anyhow::Result<()> {
    let host = SimHost::start_temp()?;
    let guest = host.create_domain("frontend", DomainConfig::default())?;
    let mut child = spawn_child("child_frontend", guest.env().map(|(k, v)| (k, v)))?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let xs = &dom0.xenstore;
    let base = format!("/local/domain/{}/data/ring", guest.domid);
    let watch = xs.watch(&format!("{base}/event-channel"), None)?;
    while !xs.exists(&format!("{base}/event-channel"))? {
        watch.recv_timeout(WAIT)?.context("frontend never published its ring")?;
    }
    let ring_gref: u32 = xs.read_string(&format!("{base}/tx-ring-ref"))?.parse()?;
    let port: u32 = xs.read_string(&format!("{base}/event-channel"))?.parse()?;

    let mapping = dom0.domain.map(guest.domid, ring_gref, Access::ReadWrite)?;
    let mut ring = BackRing::<TxRing, _>::attach(mapping)?;
    let channel = dom0.domain.bind_interdomain(guest.domid, port)?;

    let mut buffers = vec![vec![0u8; 1514]; COPY_BATCH];
    let (mut served, mut batches, mut notifies, mut waits) = (0u32, 0u32, 0u32, 0u32);
    while served < FRAMES {
        let mut requests = Vec::with_capacity(COPY_BATCH);
        while requests.len() < COPY_BATCH {
            match ring.next_request()? {
                Some(req) => requests.push(req),
                None => break,
            }
        }
        if requests.is_empty() {
            if !ring.final_check_for_requests() {
                wait_event(&channel)?;
                waits += 1;
            }
            continue;
        }
        let mut segments: Vec<CopySegment<'_>> = requests
            .iter()
            .zip(buffers.iter_mut())
            .map(|(req, buf)| {
                CopySegment::new(
                    CopyPtr::Grant { domid: guest.domid, gref: req.gref, offset: req.offset },
                    CopyPtr::Local(VolatileSlice::from(&mut buf[..usize::from(req.size)])),
                    req.size,
                )
            })
            .collect();
        dom0.domain.copy(&mut segments)?;
        batches += 1;
        for (seg, req) in segments.iter().zip(&requests) {
            ensure!(seg.status.is_ok(), "copy of request {req:?} failed: {}", seg.status);
        }
        drop(segments);
        for (req, buf) in requests.iter().zip(&buffers) {
            let expected = frame(served);
            ensure!(req.id == served as u16, "request {req:?} out of order, expected seq {served}");
            ensure!(buf[..usize::from(req.size)] == expected[..], "frame {served} arrived damaged");
            ring.push_response(TxResponse { id: req.id, status: NETIF_RSP_OKAY })?;
            served += 1;
        }
        if ring.push_responses_and_check_notify() {
            channel.notify()?;
            notifies += 1;
        }
    }
    let status = wait_child(&mut child, WAIT)?;
    ensure!(status.success(), "frontend process failed: {status}");
    println!("backend: {served} frames in {batches} copy batches, {notifies} notifications sent, {waits} waits");
    ensure!(batches < FRAMES, "no batching happened: {batches} batches for {FRAMES} frames");
    Ok(())
}
