//! `nbctl sim`: a simulated Xen host running the netback daemon and N guests that send
//! each other generated traffic through it, guest i to guest (i+1) mod N.
//!
//! Processes: this one (hypervisor, xenstored and the toolstack), the daemon
//! (`sim-netback`) and one `sim-guest` per guest, each a real netfront. The host attaches
//! a vif per guest, waits until every vif is Connected, writes each guest's
//! `data/start`, collects the guests' JSON reports and the daemon's counters, prints
//! the table, then detaches everything and stops the daemon.

pub(crate) mod procs;
mod report;
pub mod roles;

use crate::commands::{CONTROL_SOCKET, mac_arg};
use anyhow::{Context, bail};
use dom0_tools::layout::{self, DetachOutcome, VifSpec};
use grant::DomId;
use grant::sim::DomainConfig;
use netfront_test::mac::{Mac, format_mac};
use netfront_test::session::PeerReport;
use netfront_test::traffic::FrameSize;
use procs::Procs;
use simhost::SimHost;
use std::time::{Duration, Instant};

/// Limit for the daemon's handshakes with every guest, and for its shutdown.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a detach waits for the backend's Closed.
const DETACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `nbctl sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Number of guests (at least 2); guest i sends to guest (i+1) mod N.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=250))]
    pub guests: u16,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 3.0, value_parser = duration_arg)]
    pub duration: f64,
    /// Frame size in bytes: `N` or `MIN-MAX` (uniform), within 60..=65535 (a large effective
    /// MTU: frames over one page go as scatter-gather chains).
    #[arg(long, default_value = "60-1514", value_parser = size_arg)]
    pub size: FrameSize,
    /// Frames per second per guest; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Send one TCP stream per guest instead of test frames (IPv4; each frame of `--size`
    /// bytes carries size − 54 bytes of payload, segmented to MSS 1448 by the guest).
    #[arg(long)]
    pub tcp: bool,
    /// With `--tcp`: negotiate every offload and send frames over 1514 bytes as one GSO
    /// super-frame (else scatter-gather and checksum offload only).
    #[arg(long, requires = "tcp")]
    pub gso: bool,
    /// After the report, keep the host, daemon and vifs up until Enter is pressed (for
    /// `nbctl --sim-dir DIR list`).
    #[arg(long)]
    pub keep: bool,
}

/// Options of the hidden `sim-guest` role.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Destination MAC of our frames.
    #[arg(long, value_parser = mac_arg)]
    pub peer: Mac,
    /// Frame sizes.
    #[arg(long, value_parser = size_arg)]
    pub size: FrameSize,
    /// Frames per second, 0 = unpaced.
    #[arg(long)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, value_parser = duration_arg)]
    pub duration: f64,
    /// Milliseconds of receiving after the sending stops.
    #[arg(long, default_value_t = Self::DEFAULT_LINGER_MS)]
    pub linger_ms: u64,
    /// TCP mode.
    #[arg(long)]
    pub tcp: bool,
    /// TCP with GSO (every offload).
    #[arg(long)]
    pub gso: bool,
}

impl GuestArgs {
    /// Receiving continues this long after sending, for frames still in flight.
    pub const DEFAULT_LINGER_MS: u64 = 500;

    /// The command-line arguments that parse back into `self`.
    fn to_args(&self) -> Vec<String> {
        let size = match self.size {
            FrameSize::Fixed(n) => n.to_string(),
            FrameSize::Uniform { min, max } => format!("{min}-{max}"),
        };
        [
            ("--peer", format_mac(&self.peer)),
            ("--size", size),
            ("--rate", self.rate.to_string()),
            ("--duration", self.duration.to_string()),
            ("--linger-ms", self.linger_ms.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .chain(self.tcp.then(|| "--tcp".to_string()))
        .chain(self.gso.then(|| "--gso".to_string()))
        .collect()
    }
}

fn duration_arg(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 3600.0 => Ok(secs),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 3600]")),
    }
}

/// Parses `N` or `MIN-MAX`, each within 60..=65535 (frames over 4096 bytes travel as
/// scatter-gather chains: the guests negotiate `feature-sg`).
fn size_arg(s: &str) -> Result<FrameSize, String> {
    let num = |v: &str| -> Result<usize, String> {
        let n = v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"))?;
        if (60..=65535).contains(&n) { Ok(n) } else { Err(format!("frame size {n} outside 60..=65535")) }
    };
    match s.split_once('-') {
        Some((min, max)) => {
            let (min, max) = (num(min)?, num(max)?);
            if min > max {
                return Err(format!("{s:?}: MIN is larger than MAX"));
            }
            Ok(FrameSize::Uniform { min, max })
        }
        None => Ok(FrameSize::Fixed(num(s)?)),
    }
}

/// The MAC of a sim guest: `00:16:3e:00:00:<domid>`.
pub(crate) fn guest_mac(domid: DomId) -> Mac {
    let [hi, lo] = domid.to_be_bytes();
    [0x00, 0x16, 0x3e, 0x00, hi, lo]
}

/// `nbctl sim`: the host process.
pub fn run_host(args: &SimArgs) -> anyhow::Result<()> {
    let host = SimHost::start_temp().context("starting the simulated Xen host")?;
    let dir = host.dir().to_path_buf();
    println!("[host] simulated Xen host up in {} (hypervisor, xenstored)", dir.display());
    let mut procs = Procs::default();
    let pid = procs.spawn_daemon(&dir)?;
    println!("[host] netback daemon started (pid {pid}), control socket {CONTROL_SOCKET}");

    let xs = host.toolstack();
    let mut domids = Vec::new();
    for i in 1..=args.guests {
        let guest = host.create_domain(&format!("guest{i}"), DomainConfig::default())?;
        let spec = VifSpec { handle: Some(0), mac: Some(guest_mac(guest.domid)), ..VifSpec::new(guest.domid) };
        layout::attach(xs, &spec)?;
        domids.push(guest);
    }
    for (i, guest) in domids.iter().enumerate() {
        let peer = &domids[(i + 1) % domids.len()];
        procs.spawn_guest(guest, guest_mac(peer.domid), args)?;
    }
    let ids: Vec<DomId> = domids.iter().map(|g| g.domid).collect();
    let names: Vec<String> = ids.iter().map(|&d| layout::vif_name(d, 0)).collect();
    println!("[host] {} guests, each a netfront process: {}; guest i sends to guest i+1", ids.len(), names.join(" "));

    wait_connected(xs, &ids, &mut procs)?;
    xs.transaction(|tx| ids.iter().try_for_each(|&d| tx.write(&roles::start_node(d), "1")))
        .context("writing the start nodes")?;
    println!(
        "[host] all vifs Connected; {} for {} s (size {:?}, rate {})",
        match (args.tcp, args.gso) {
            (false, _) => "test frames",
            (true, false) => "TCP without GSO",
            (true, true) => "TCP with GSO",
        },
        args.duration,
        args.size,
        rate(args)
    );

    let limit = Duration::from_secs_f64(args.duration) + CONNECT_TIMEOUT;
    let exits = procs.wait_guests(Instant::now() + limit)?;
    let daemon_vifs = crate::commands::daemon_vifs(&dir.join(crate::commands::CONTROL_SOCKET));
    let outcome = report::Outcome::new(&ids, &exits, daemon_vifs);
    print!("{}", outcome.table());
    let mut failures = outcome.failures();

    if args.keep {
        println!("[host] --keep: host up in {0}; try `nbctl --sim-dir {0} list`; press Enter to stop", dir.display());
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    let mut clean_detaches = 0;
    for &domid in &ids {
        match layout::detach(xs, 0, domid, 0, DETACH_TIMEOUT) {
            Ok(DetachOutcome::Clean) => clean_detaches += 1,
            Ok(DetachOutcome::Forced) => failures.push(format!("{} did not close cleanly", layout::vif_name(domid, 0))),
            Err(e) => failures.push(format!("{e:#}")),
        }
        // The guest's process is gone; what remains is the toolstack's part of xl destroy.
        let _ = host.destroy_domain(domid);
        match xs.rm(&format!("/local/domain/{domid}")) {
            Err(e) if !e.is_enoent() => failures.push(format!("removing domain {domid}: {e}")),
            _ => {}
        }
    }
    let left: Vec<DomId> = ids
        .iter()
        .copied()
        .filter(|&d| {
            host.xenstored().is_domain_introduced(d) || xs.exists(&format!("/local/domain/{d}")).unwrap_or(true)
        })
        .collect();
    let daemon = procs.stop_daemon(CONNECT_TIMEOUT)?;
    let daemon_ok = daemon.is_some_and(|s| s.success());
    let guests_ok = exits.iter().filter(|e| e.status.is_some_and(|s| s.success())).count();
    if !daemon_ok {
        failures
            .push(format!("the daemon did not exit cleanly ({})", daemon.map_or("killed".into(), |s| s.to_string())));
    }
    if !left.is_empty() {
        failures.push(format!("domains left behind: {left:?}"));
    }
    let clean = daemon_ok && guests_ok == ids.len() && clean_detaches == ids.len() && left.is_empty();
    println!(
        "[host] {}: daemon {}, {guests_ok}/{n} guests exited 0, {clean_detaches}/{n} detaches clean, {}",
        if clean { "clean shutdown" } else { "UNCLEAN shutdown" },
        if daemon_ok { "exited 0" } else { "did not exit 0" },
        if left.is_empty() { "no domain left".to_string() } else { format!("{} domains left", left.len()) },
        n = ids.len(),
    );
    if !failures.is_empty() {
        bail!("the simulation failed: {}", failures.join("; "));
    }
    Ok(())
}

fn rate(args: &SimArgs) -> String {
    if args.rate == 0 { "unlimited".into() } else { format!("{} frames/s per guest", args.rate) }
}

/// Waits until every vif's backend and frontend say Connected, failing early if a child
/// process dies.
pub(crate) fn wait_connected(xs: &xenstore::Client, ids: &[DomId], procs: &mut Procs) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let entries = layout::list(xs, 0)?;
        let connected = |d: DomId| {
            entries.iter().any(|e| e.paths.domid == d && e.backend_state == Some(4) && e.frontend_state == Some(4))
        };
        if ids.iter().all(|&d| connected(d)) {
            return Ok(());
        }
        procs.check_alive()?;
        if Instant::now() >= deadline {
            let waiting: Vec<String> =
                ids.iter().filter(|&&d| !connected(d)).map(|&d| layout::vif_name(d, 0)).collect();
            bail!("not Connected within {CONNECT_TIMEOUT:?}: {}", waiting.join(", "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses the last line of a guest's stdout as its report.
pub(crate) fn parse_report(stdout: &str) -> Option<PeerReport> {
    stdout.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| PeerReport::from_json_line(l).ok())
}
