//! The netfront library in a guest process against a minimal backend in this test process
//! (which also runs the simulated host and plays the toolstack): the backend loops every
//! TX frame back on RX with two grant copies. The guest sends generated traffic and checks
//! that all of it comes back intact and in order, then resolves and pings its own address
//! through the loop (its responder answers its own ARP request and echo request), and
//! disconnects cleanly.

mod common;

use anyhow::{Context, ensure};
use common::{GUEST_MAC, state_of, write_vif_layout};
use grant::sim::{Credentials, DomainConfig};
use grant::{Access, EventChannel, EventChannels, GrantOps};
use netback_e2e::loopback::loop_back;
use netback_e2e::{is_child, spawn_child, wait_child};
use netfront_test::mac::format_mac;
use netfront_test::stack::{Responder, arp_request, echo_request, parse_arp, parse_echo};
use netfront_test::traffic::{Generator, GeneratorConfig, Next, Receiver};
use netfront_test::{DeviceError, Netfront, NetfrontConfig, XenbusError, XenbusState};
use netif::{BackRing, RxRing, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::SimHost;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use xenstore::Client;

const FRAMES: u64 = 400;
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const WAIT: Duration = Duration::from_secs(30);

// ---- the guest ----

#[test]
#[ignore = "child process of loopback_through_a_minimal_backend"]
fn child_guest() {
    if is_child() {
        run_guest().expect("guest");
    }
}

fn run_guest() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?;
    ensure!(nf.mac() == GUEST_MAC, "mac {}", format_mac(&nf.mac()));
    let deadline = Instant::now() + WAIT;

    // Phase 1: generated frames of random sizes, looped back by the backend.
    let mut generator =
        Generator::new(GeneratorConfig { seed: 42, ..GeneratorConfig::new(GUEST_MAC, GUEST_MAC, FRAMES) })?;
    let mut receiver = Receiver::new();
    receiver.expect(0, FRAMES);
    while receiver.report().total().received < FRAMES {
        ensure!(Instant::now() < deadline, "traffic phase timed out: {:?}", receiver.report());
        while nf.tx_available()? > 0 {
            let Next::Frame(frame) = generator.next(Instant::now()) else { break };
            nf.send(&frame)?;
        }
        let mut got = false;
        while let Some(frame) = nf.recv()? {
            receiver.receive(&frame).context("looped-back frame failed verification")?;
            got = true;
        }
        if !got {
            // recv returned None, so the RX event is armed: no notification can be lost.
            nf.wait(Duration::from_millis(100))?;
        }
    }
    let report = receiver.report();
    ensure!(report.is_perfect(), "traffic report {report:?}");

    // Phase 2: ARP and ping our own address through the loop.
    let responder = Responder::new(GUEST_MAC, GUEST_IP);
    nf.send(&arp_request(GUEST_MAC, PEER_IP, GUEST_IP))?;
    nf.send(&echo_request(GUEST_MAC, GUEST_MAC, PEER_IP, GUEST_IP, 0xbeef, 1, b"netfront ping"))?;
    let (mut arp_ok, mut ping_ok) = (false, false);
    while !(arp_ok && ping_ok) {
        ensure!(Instant::now() < deadline, "ARP/ping phase timed out (arp {arp_ok}, ping {ping_ok})");
        let Some(frame) = nf.recv()? else {
            nf.wait(Duration::from_millis(100))?;
            continue;
        };
        if let Some(reply) = responder.respond(&frame) {
            nf.send(&reply)?;
        } else if let Some(arp) = parse_arp(&frame) {
            ensure!(arp.op == 2 && arp.sender_ip == GUEST_IP && arp.sender_mac == GUEST_MAC, "ARP reply {arp:?}");
            arp_ok = true;
        } else if let Some(echo) = parse_echo(&frame) {
            ensure!(!echo.request && echo.src_ip == GUEST_IP && echo.dst_ip == PEER_IP, "echo {echo:?}");
            ensure!((echo.ident, echo.seq, &echo.payload[..]) == (0xbeef, 1, &b"netfront ping"[..]), "echo {echo:?}");
            ping_ok = true;
        }
    }

    let too_big = nf.send(&[0u8; grant::PAGE_SIZE + 1]);
    ensure!(matches!(too_big, Err(DeviceError::FrameSize { len: 4097, max: 4096 })), "oversized frame: {too_big:?}");
    let stats = nf.disconnect()?;
    eprintln!("guest: {stats:?}");
    ensure!(stats.tx_frames == FRAMES + 4 && stats.rx_frames == FRAMES + 4, "frame counts {stats:?}");
    ensure!(
        stats.tx_errors + stats.tx_dropped + stats.rx_errors + stats.protocol_errors + stats.rx_dropped_chains == 0,
        "{stats:?}"
    );
    Ok(())
}

// ---- the toolstack and the backend ----

fn wait_state(xs: &Client, dir: &str, want: XenbusState) -> anyhow::Result<()> {
    common::wait_state_within(xs, dir, want, WAIT)
}

#[test]
fn loopback_through_a_minimal_backend() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let host = SimHost::start_temp()?;
    let guest = host.create_domain("netfront", DomainConfig::default())?;
    let (fe, be) = write_vif_layout(host.toolstack(), guest.domid)?;
    let mut child = spawn_child("child_guest", guest.env().map(|(k, v)| (k, v)))?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let xs = &dom0.xenstore;

    // Probe: features, then InitWait; the frontend answers with its rings and Connected.
    xs.write(&format!("{be}/feature-rx-copy"), "1")?;
    xs.write(&format!("{be}/state"), XenbusState::InitWait.value())?;
    wait_state(xs, &fe, XenbusState::Connected)?;
    let read = |key: &str| -> anyhow::Result<u32> { Ok(xs.read_string(&format!("{fe}/{key}"))?.trim().parse()?) };
    ensure!(read("request-rx-copy")? == 1, "frontend did not request rx-copy");
    let mut tx =
        BackRing::<TxRing, _>::attach(dom0.domain.map(guest.domid, read("tx-ring-ref")?, Access::ReadWrite)?)?;
    let mut rx =
        BackRing::<RxRing, _>::attach(dom0.domain.map(guest.domid, read("rx-ring-ref")?, Access::ReadWrite)?)?;
    let channel = dom0.domain.bind_interdomain(guest.domid, read("event-channel")?)?;
    let fe_watch = xs.watch(&format!("{fe}/state"), None)?;
    xs.write(&format!("{be}/state"), XenbusState::Connected.value())?;

    let deadline = Instant::now() + WAIT;
    let mut looped = 0;
    loop {
        ensure!(Instant::now() < deadline, "backend timed out after looping {looped} frames");
        let n = loop_back(&dom0.domain, guest.domid, &mut tx, &mut rx)?;
        looped += n;
        // Push both rings (no short-circuit), notify once if either asks.
        let (notify_tx, notify_rx) = (tx.push_responses_and_check_notify(), rx.push_responses_and_check_notify());
        if notify_tx || notify_rx {
            channel.notify()?;
        }
        if n > 0 {
            continue;
        }
        // Progress needs a TX request and an RX buffer: arm both events, then re-check.
        let (more_tx, more_rx) = (tx.final_check_for_requests(), rx.final_check_for_requests());
        if more_tx && more_rx {
            continue;
        }
        if fe_watch.try_recv()?.is_some() && state_of(xs, &fe)? == Some(XenbusState::Closing) {
            break;
        }
        let mut fds =
            [PollFd::new(channel.as_fd(), PollFlags::POLLIN), PollFd::new(fe_watch.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16))? > 0 {
            channel.take_pending()?;
            channel.unmask()?;
        }
    }
    ensure!(looped == FRAMES as u32 + 4, "looped {looped} frames");

    // Frontend Closing: unmap, unbind, go Closing; its Closed lets us go Closed.
    drop((tx, rx, channel));
    xs.write(&format!("{be}/state"), XenbusState::Closing.value())?;
    wait_state(xs, &fe, XenbusState::Closed)?;
    xs.write(&format!("{be}/state"), XenbusState::Closed.value())?;
    let status = wait_child(&mut child, WAIT)?;
    ensure!(status.success(), "guest process failed: {status}");
    ensure!(state_of(xs, &fe)? == Some(XenbusState::Closed), "frontend state after exit");
    Ok(())
}

// ---- handshake failures ----

#[test]
#[ignore = "child process of handshake_failures_are_named_after_their_step"]
fn child_guest_refused() {
    if is_child() {
        run_guest_refused().expect("refused guest");
    }
}

fn run_guest_refused() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let short = NetfrontConfig { timeout: Duration::from_millis(300), ..NetfrontConfig::default() };
    // The backend never left Initialising.
    match Netfront::connect(&session.domain, session.xenstore.clone(), 0, short) {
        Err(XenbusError::WaitBackendState { want: XenbusState::InitWait, got: Some(XenbusState::Initialising) }) => {}
        other => anyhow::bail!("expected a WaitBackendState timeout, got {other:?}"),
    }
    match Netfront::connect(&session.domain, session.xenstore.clone(), 1, short) {
        Err(XenbusError::ReadBackendPath { .. }) => {}
        other => anyhow::bail!("expected ReadBackendPath for a missing vif, got {other:?}"),
    }
    // Tell the test to go InitWait, without feature-rx-copy.
    session.xenstore.write("data/phase", "1")?;
    match Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default()) {
        Err(XenbusError::BackendLacksRxCopy { .. }) => Ok(()),
        other => anyhow::bail!("expected BackendLacksRxCopy, got {other:?}"),
    }
}

#[test]
fn handshake_failures_are_named_after_their_step() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let host = SimHost::start_temp()?;
    let guest = host.create_domain("refused", DomainConfig::default())?;
    let (fe, be) = write_vif_layout(host.toolstack(), guest.domid)?;
    let xs = host.toolstack();
    let phase = format!("/local/domain/{}/data/phase", guest.domid);
    let watch = xs.watch(&phase, None)?;
    let mut child = spawn_child("child_guest_refused", guest.env().map(|(k, v)| (k, v)))?;
    while !xs.exists(&phase)? {
        watch.recv_timeout(WAIT)?.context("guest never reached phase 1")?;
    }
    xs.write(&format!("{be}/state"), XenbusState::InitWait.value())?;
    let status = wait_child(&mut child, WAIT)?;
    ensure!(status.success(), "guest process failed: {status}");
    ensure!(state_of(xs, &fe)? == Some(XenbusState::Initialising), "a refused frontend must not connect");
    Ok(())
}
