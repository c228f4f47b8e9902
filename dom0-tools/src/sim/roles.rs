//! The processes `nbctl sim` starts: the netback daemon and the guests.

use super::GuestArgs;
use crate::commands::CONTROL_SOCKET;
use anyhow::Context;
use netback::daemon::{DaemonConfig, run_sim};
use netfront_test::session::{PeerConfig, StartGate, TcpMode, run_peer_traffic};
use netfront_test::{Features, Netfront, NetfrontConfig};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// How long a guest waits for each handshake step and for the start node.
const GUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The xenstore node the host writes when every vif is connected.
pub fn start_node(domid: grant::DomId) -> String {
    format!("/local/domain/{domid}/data/start")
}

/// `sim-netback`: the daemon as Dom0 of the host in `dir`, until SIGTERM or SIGINT.
pub fn run_netback(dir: &Path) -> anyhow::Result<()> {
    // Blocked before any thread exists, so every thread inherits the mask and the signals
    // are only ever taken from the signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("blocking SIGTERM and SIGINT")?;
    let stop = SignalFd::new(&mask).context("creating the stop signalfd")?;
    // State files as the daemon binary keeps them, so studies measure the data path as it
    // runs (with its restart journal).
    let config = DaemonConfig {
        control_socket: Some(dir.join(CONTROL_SOCKET)),
        state_dir: Some(dir.join(netback::daemon::SIM_STATE_DIR)),
        ..DaemonConfig::default()
    };
    run_sim(dir, config, stop.as_fd()).context("running the netback daemon")?;
    Ok(())
}

/// `sim-guest`: connect vif 0 as a real netfront, run the peer traffic, print the report
/// as one JSON line on stdout.
pub fn run_guest(args: &GuestArgs) -> anyhow::Result<()> {
    let session = simhost::join_from_env().context("joining the sim host as a guest")?;
    let domid = session.domid();
    // Scatter-gather, so frames up to 64 KiB (a large effective MTU) can be studied.
    // In TCP mode: every offload with --gso, else scatter-gather and checksum offload.
    let features = match (args.tcp, args.gso) {
        (false, _) => Features { sg: true, ..Features::default() },
        (true, false) => Features { sg: true, csum_offload: true, ..Features::default() },
        (true, true) => Features::ALL,
    };
    let config = NetfrontConfig { timeout: GUEST_TIMEOUT, features, ..NetfrontConfig::default() };
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, config)
        .with_context(|| format!("guest {domid}: connecting vif{domid}.0"))?;
    tracing::info!(domid, "netfront connected");
    let [hi, lo] = domid.to_be_bytes();
    let cfg = PeerConfig {
        flow: u32::from(domid),
        peer: args.peer,
        ip: Ipv4Addr::new(10, 0, hi, lo),
        size: args.size,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        linger: Duration::from_millis(args.linger_ms),
        start: Some(StartGate { xs: session.xenstore.clone(), path: start_node(domid), timeout: GUEST_TIMEOUT }),
        tcp: args.tcp.then_some(TcpMode { gso: args.gso }),
    };
    let report = run_peer_traffic(&mut nf, &cfg).with_context(|| format!("guest {domid}: traffic"))?;
    nf.disconnect().with_context(|| format!("guest {domid}: disconnecting"))?;
    println!("{}", report.to_json_line());
    Ok(())
}
