//! `nbctl attach`, `detach` and `list`: the toolstack's view of the vifs, against the
//! xenstored of a running (simulated) host.

use crate::table::Table;
use anyhow::Context;
use dom0_tools::layout::{self, DetachOutcome, Mac, VifSpec};
use grant::DomId;
use netback::control::VifReport;
use netfront_test::mac::{format_mac, parse_mac};
use netif::xenbus::XenbusState;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xenstore::Client;

/// File name of the daemon's control socket inside the host directory.
pub const CONTROL_SOCKET: &str = netback::control::SIM_SOCKET_NAME;

/// Options of `nbctl attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The guest's domain id.
    pub domid: DomId,
    /// Device handle (default: the lowest free one).
    #[arg(long)]
    pub handle: Option<u32>,
    /// The guest's MAC, xx:xx:xx:xx:xx:xx (default: 00:16:3e plus three random bytes).
    #[arg(long, value_parser = mac_arg)]
    pub mac: Option<Mac>,
    /// Bridge for the hotplug script (written to the backend's `bridge` node).
    #[arg(long)]
    pub bridge: Option<String>,
    /// Hotplug script (written to the backend's `script` node).
    #[arg(long)]
    pub script: Option<String>,
    /// Knobs of this vif, written to `<backend>/netback-knobs/<name>`; the daemon applies
    /// them at every connect of the vif.
    #[command(flatten)]
    pub knobs: netback::vif::PartialKnobs,
}

/// Options of `nbctl detach`.
#[derive(Debug, clap::Args)]
pub struct DetachArgs {
    /// The guest's domain id.
    pub domid: DomId,
    /// Device handle.
    pub handle: u32,
    /// Seconds to wait for the backend to reach Closed before removing the vif anyway.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// Parses a MAC argument.
pub fn mac_arg(s: &str) -> Result<Mac, String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address (xx:xx:xx:xx:xx:xx)"))
}

/// The host directory given by `--sim-dir` or `NETBACK_SIM_DIR`, or the error saying how to get one.
/// The host nbctl acts on: a simulated one (its directory), or the real Xen host.
#[derive(Debug, Clone)]
pub enum Target {
    /// The simulated host in this directory.
    Sim(PathBuf),
    /// This machine's Xen: xenstored and the daemon's control socket.
    Xen {
        /// The daemon's control socket.
        control: PathBuf,
    },
}

impl Target {
    /// The simulated host in `dir` if one is named, else real Xen if `/dev/xen` exists.
    pub fn choose(dir: Option<&Path>, control: Option<&Path>) -> anyhow::Result<Target> {
        match dir {
            Some(dir) => Ok(Target::Sim(dir.to_path_buf())),
            None if grant::xen::available() => Ok(Target::Xen {
                control: control.map_or_else(|| PathBuf::from(netback::daemon::XEN_CONTROL_SOCKET), Path::to_path_buf),
            }),
            None => sim_dir(None).map(|d| Target::Sim(d.to_path_buf())),
        }
    }

    /// The privileged xenstore connection.
    pub fn xenstore(&self) -> anyhow::Result<Client> {
        match self {
            Target::Sim(dir) => connect(dir),
            Target::Xen { .. } => Client::open_default()
                .context("cannot reach xenstored (/run/xenstored/socket or /dev/xen/xenbus): is it running?"),
        }
    }

    /// The daemon's control socket.
    pub fn control_socket(&self) -> PathBuf {
        match self {
            Target::Sim(dir) => dir.join(CONTROL_SOCKET),
            Target::Xen { control } => control.clone(),
        }
    }
}

pub fn sim_dir(dir: Option<&Path>) -> anyhow::Result<&Path> {
    dir.context(
        "no simulated host: start `netback` or `nbctl sim --keep`, or pass --sim-dir DIR (or set NETBACK_SIM_DIR)",
    )
}

/// The privileged xenstore connection of the host in `dir`.
pub fn connect(dir: &Path) -> anyhow::Result<Client> {
    let socket = dir.join(simhost::XENSTORED_SOCKET);
    Client::connect(&socket).with_context(|| format!("connecting to xenstored at {}", socket.display()))
}

/// `nbctl attach`.
pub fn attach(xs: &Client, args: &AttachArgs) -> anyhow::Result<()> {
    let spec = VifSpec {
        handle: args.handle,
        mac: args.mac,
        bridge: args.bridge.clone(),
        script: args.script.clone(),
        ..VifSpec::new(args.domid)
    };
    netback::vif::KnobValues::default().with(&args.knobs).validate().context("invalid knob flags")?;
    let paths = layout::attach(xs, &spec)?;
    println!("attached {}", layout::vif_name(paths.domid, paths.handle));
    println!("  mac       {}", format_mac(&paths.mac));
    println!("  frontend  {}", paths.frontend);
    println!("  backend   {}", paths.backend);
    crate::knobs_cmd::write_attach_knobs(xs, &paths.backend, &args.knobs)?;
    Ok(())
}

/// `nbctl detach`.
pub fn detach(xs: &Client, args: &DetachArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.timeout.is_finite() && args.timeout >= 0.0, "--timeout must be a number of seconds ≥ 0");
    let timeout = Duration::from_secs_f64(args.timeout);
    let name = layout::vif_name(args.domid, args.handle);
    match layout::detach(xs, 0, args.domid, args.handle, timeout)? {
        DetachOutcome::Clean => println!("detached {name} (backend closed)"),
        DetachOutcome::Forced => {
            println!("detached {name} (forced: the backend did not reach Closed within {timeout:?})");
        }
    }
    Ok(())
}

/// A xenbus state number as its name (`Connected (4)`), `-` when absent.
pub fn state_name(state: Option<u32>) -> String {
    match state {
        None => "-".into(),
        Some(n) => XenbusState::parse(&n.to_string()).map_or_else(|| n.to_string(), |s| format!("{s:?}")),
    }
}

/// The daemon's per-vif report, or why it is not available.
pub fn daemon_vifs(socket: &Path) -> Result<Vec<VifReport>, String> {
    // Probe first: a missing socket is the common case and needs no protocol.
    UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    netback::control::list(socket).map_err(|e| format!("{e:#}"))
}

/// `nbctl list`.
pub fn list(xs: &Client, socket: &Path) -> anyhow::Result<()> {
    let entries = layout::list(xs, 0)?;
    let daemon = daemon_vifs(socket);
    let mut headers = vec!["VIF", "MAC", "BACKEND", "FRONTEND", "HOTPLUG", "ERROR"];
    if daemon.is_ok() {
        headers.extend(["TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES", "DROPS"]);
    }
    let mut table = Table::new(&headers);
    for e in &entries {
        let (domid, handle) = (e.paths.domid, e.paths.handle);
        let mut row = vec![
            layout::vif_name(domid, handle),
            e.mac_text.clone().unwrap_or_else(|| "-".into()),
            state_name(e.backend_state),
            state_name(e.frontend_state),
            e.hotplug_status.clone().unwrap_or_else(|| "-".into()),
            e.error.clone().unwrap_or_else(|| "-".into()),
        ];
        if let Ok(vifs) = &daemon {
            match vifs.iter().find(|v| v.id.domid == domid && v.id.handle == handle) {
                Some(v) => row.extend(
                    [v.stats.tx_packets, v.stats.tx_bytes, v.stats.rx_packets, v.stats.rx_bytes, v.stats.dropped()]
                        .map(|n| n.to_string()),
                ),
                None => row.extend(std::iter::repeat_n("-".to_string(), 5)),
            }
        }
        table.row(row);
    }
    if entries.is_empty() {
        println!("no vifs");
    } else {
        print!("{}", table.render());
    }
    if let Err(why) = daemon {
        println!("(daemon not reachable: {why})");
    }
    Ok(())
}
