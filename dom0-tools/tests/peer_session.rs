//! `netfront_test::session::run_peer_traffic` in a guest process against a minimal
//! loop-back backend in this test process (no daemon): the guest is its own peer, so
//! every frame it sends comes back. Checks the gratuitous ARP, the start gate and the
//! JSON report, which the guest hands over through xenstore.

use anyhow::{Context, ensure};
use dom0_tools::layout::{self, VifSpec};
use grant::sim::{Credentials, DomainConfig};
use grant::{Access, DomId, EventChannel, EventChannels, GrantMapping, GrantOps};
use netback_e2e::loopback::loop_back;
use netback_e2e::{is_child, spawn_child, wait_child};
use netfront_test::session::{PeerConfig, PeerReport, StartGate, run_peer_traffic};
use netfront_test::traffic::FrameSize;
use netfront_test::{Netfront, NetfrontConfig, XenbusState};
use netif::{BackRing, RxRing, TxRing};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::SimHost;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use xenstore::Client;

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x07];
const WAIT: Duration = Duration::from_secs(30);

fn data(domid: DomId, key: &str) -> String {
    format!("/local/domain/{domid}/data/{key}")
}

#[test]
#[ignore = "child process of peer_traffic_through_a_loop_back_backend"]
fn child_peer() {
    if is_child() {
        run_peer().expect("guest");
    }
}

fn run_peer() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let domid = session.domid();
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?;
    let cfg = PeerConfig {
        flow: u32::from(domid),
        peer: MAC,
        ip: Ipv4Addr::new(10, 0, 0, 7),
        size: FrameSize::Uniform { min: 60, max: 1514 },
        rate: 0,
        duration: Duration::from_millis(300),
        linger: Duration::from_millis(200),
        start: Some(StartGate { xs: session.xenstore.clone(), path: data(domid, "start"), timeout: WAIT }),
        tcp: None,
    };
    let report = run_peer_traffic(&mut nf, &cfg)?;
    session.xenstore.write(&data(domid, "report"), report.to_json_line())?;
    nf.disconnect()?;
    Ok(())
}

fn state_of(xs: &Client, dir: &str) -> Option<XenbusState> {
    netfront_test::xenbus::read_state(xs, dir).ok().flatten()
}

fn wait_state(xs: &Client, dir: &str, want: XenbusState) -> anyhow::Result<()> {
    let watch = xs.watch(&format!("{dir}/state"), None)?;
    while state_of(xs, dir) != Some(want) {
        watch.recv_timeout(WAIT)?.with_context(|| format!("{dir} never reached {want}"))?;
    }
    Ok(())
}

#[test]
fn peer_traffic_through_a_loop_back_backend() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let host = SimHost::start_temp()?;
    let guest = host.create_domain("peer", DomainConfig::default())?;
    let g = guest.domid;
    let paths = layout::attach(host.toolstack(), &VifSpec { mac: Some(MAC), ..VifSpec::new(g) })?;
    let (fe, be) = (paths.frontend, paths.backend);
    let mut child = spawn_child("child_peer", guest.env())?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    let xs = &dom0.xenstore;

    xs.write(&format!("{be}/feature-rx-copy"), "1")?;
    xs.write(&format!("{be}/state"), XenbusState::InitWait.value())?;
    wait_state(xs, &fe, XenbusState::Connected)?;
    let read = |key: &str| -> anyhow::Result<u32> { Ok(xs.read_string(&format!("{fe}/{key}"))?.trim().parse()?) };
    let map = |key| -> anyhow::Result<GrantMapping> { Ok(dom0.domain.map(g, read(key)?, Access::ReadWrite)?) };
    let mut tx = BackRing::<TxRing, _>::attach(map("tx-ring-ref")?)?;
    let mut rx = BackRing::<RxRing, _>::attach(map("rx-ring-ref")?)?;
    let channel = dom0.domain.bind_interdomain(g, read("event-channel")?)?;
    let fe_watch = xs.watch(&format!("{fe}/state"), None)?;
    xs.write(&format!("{be}/state"), XenbusState::Connected.value())?;
    xs.write(&data(g, "start"), "1")?;

    let deadline = Instant::now() + WAIT;
    let mut looped = 0u64;
    loop {
        ensure!(Instant::now() < deadline, "backend timed out after looping {looped} frames");
        let n = loop_back(&dom0.domain, g, &mut tx, &mut rx)?;
        looped += u64::from(n);
        let (notify_tx, notify_rx) = (tx.push_responses_and_check_notify(), rx.push_responses_and_check_notify());
        if notify_tx || notify_rx {
            channel.notify()?;
        }
        if n > 0 {
            continue;
        }
        let (more_tx, more_rx) = (tx.final_check_for_requests(), rx.final_check_for_requests());
        if more_tx && more_rx {
            continue;
        }
        if fe_watch.try_recv()?.is_some() && state_of(xs, &fe) == Some(XenbusState::Closing) {
            break;
        }
        let mut fds =
            [PollFd::new(channel.as_fd(), PollFlags::POLLIN), PollFd::new(fe_watch.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16))? > 0 {
            channel.take_pending()?;
            channel.unmask()?;
        }
    }
    drop((tx, rx, channel));
    xs.write(&format!("{be}/state"), XenbusState::Closing.value())?;
    wait_state(xs, &fe, XenbusState::Closed)?;
    xs.write(&format!("{be}/state"), XenbusState::Closed.value())?;
    let status = wait_child(&mut child, WAIT)?;
    ensure!(status.success(), "guest process failed: {status}");

    let report = PeerReport::from_json_line(&xs.read_string(&data(g, "report"))?)?;
    ensure!(report.flow == u32::from(g) && report.mac == "00:16:3e:00:00:07", "{report:?}");
    ensure!(report.sent_frames > 0 && report.sent_bytes >= 60 * report.sent_frames, "{report:?}");
    ensure!((0.25..5.0).contains(&report.elapsed_secs), "{report:?}");
    // The gratuitous ARP came back as the one foreign frame; every test frame once, in order.
    ensure!(looped == report.sent_frames + 1 && report.foreign == 1 && report.corrupt == 0, "{looped}: {report:?}");
    let e = report.end_to_end(&report);
    ensure!((e.sent, e.received, e.lost, e.reordered, e.duplicated) == (looped - 1, looped - 1, 0, 0, 0), "{e:?}");
    ensure!(report.device.tx_errors == 0 && report.device.protocol_errors == 0, "{report:?}");
    Ok(())
}
