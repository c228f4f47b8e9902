//! `netback`: the userspace Xen netif backend daemon.
//!
//! In a Xen dom0 (`/dev/xen/gntdev` present, or `--xen`) it serves the real host: xenstored,
//! `/dev/xen/gntdev` and `/dev/xen/evtchn`. Without `/dev/xen` it serves a simulated host:
//! `--sim-dir` joins one that runs elsewhere (`nbctl sim`), `--embedded` (the default there)
//! starts one in this process.
#![forbid(unsafe_code)]

/// mimalloc: frames are allocated on one thread and freed on another (see the workspace
/// manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use netback::daemon::{self, DaemonConfig, UplinkMode};
use netback::switch::SwitchConfig;
use netback::vif::{KnobValues, PartialKnobs};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use simhost::SimHost;

mod xen;
use tracing_subscriber::EnvFilter;

/// Userspace Xen network backend.
#[derive(Debug, Parser)]
#[command(name = "netback", version, about)]
struct Args {
    /// Serve the real Xen host (the default when /dev/xen/gntdev exists).
    #[arg(long, conflicts_with_all = ["sim_dir", "embedded"])]
    xen: bool,
    /// Join the simulated host in DIR as Dom0 (with `--embedded`: start it there).
    #[arg(long, value_name = "DIR")]
    sim_dir: Option<PathBuf>,
    /// Start a simulated host in this process (the default when there is no /dev/xen).
    #[arg(long)]
    embedded: bool,
    /// The control socket (default `<sim dir>/netback.sock`, on Xen `/run/netback/netback.sock`).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Each vif's uplink: `switch` (the embedded switch), `tap` (a TAP device `vif<domid>.<handle>`
    /// for the host's bridge or Open vSwitch) or `auto` (a TAP when the backend directory has a
    /// `script` or `bridge` node, as `xl` writes). Default: `auto` on Xen, `switch` on the sim.
    #[arg(long, value_name = "MODE")]
    uplink: Option<UplinkMode>,
    /// Initial knobs of every vif (defaults: see `nbctl set --help`; changed at run time
    /// with `nbctl set`).
    #[command(flatten)]
    knobs: PartialKnobs,
    /// Old name of `--tx-drain-max` (also sets `--copy-batch` unless given).
    #[arg(long, hide = true)]
    tx_batch: Option<u32>,
    /// Old name of `--rx-drain-max`.
    #[arg(long, hide = true)]
    rx_batch: Option<u32>,
    /// Most frames queued for one switch port.
    #[arg(long, default_value_t = SwitchConfig::default().port_queue_frames)]
    port_queue_frames: usize,
    /// Seconds before the switch forgets an idle MAC.
    #[arg(long, default_value_t = SwitchConfig::default().mac_aging.as_secs())]
    mac_aging_secs: u64,
    /// Where each connected vif's state file lives, so that the daemon, killed and started
    /// again, takes its vifs over without the guests reconnecting (a tmpfs; default
    /// `/run/netback/vifs` on Xen, `<sim dir>/netback-vifs` on the sim).
    #[arg(long, value_name = "DIR", conflicts_with = "no_state_dir")]
    state_dir: Option<PathBuf>,
    /// Keep no state files: a restarted daemon then makes Connected frontends reconnect.
    #[arg(long)]
    no_state_dir: bool,
    /// On SIGTERM/SIGINT, leave connected vifs to the next daemon process (no Closing; state
    /// files and TAPs kept), so that a restart (`systemctl restart netback`) is hitless.
    #[arg(long, conflicts_with = "no_state_dir")]
    keep_vifs_on_exit: bool,
}

impl Args {
    /// The initial knobs: defaults, then the old batch flags, then the knob flags.
    fn knobs(&self) -> KnobValues {
        let old = PartialKnobs {
            tx_drain_max: self.tx_batch,
            rx_drain_max: self.rx_batch,
            copy_batch: self.tx_batch.max(self.rx_batch),
            ..PartialKnobs::default()
        };
        KnobValues::default().with(&old).with(&self.knobs)
    }

    /// `--state-dir`, else `default` unless `--no-state-dir`.
    fn state_dir(&self, default: PathBuf) -> Option<PathBuf> {
        (!self.no_state_dir).then(|| self.state_dir.clone().unwrap_or(default))
    }

    fn config(&self, control_socket: PathBuf, default_uplink: UplinkMode) -> DaemonConfig {
        DaemonConfig {
            backend_domid: 0,
            switch: SwitchConfig {
                port_queue_frames: self.port_queue_frames,
                mac_aging: Duration::from_secs(self.mac_aging_secs),
                ..SwitchConfig::default()
            },
            datapath: Default::default(),
            knobs: self.knobs(),
            control_socket: Some(self.control.clone().unwrap_or(control_socket)),
            uplink: self.uplink.unwrap_or(default_uplink),
            state_dir: None,
            keep_vifs_on_exit: self.keep_vifs_on_exit,
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.port_queue_frames == 0 {
        bail!("--port-queue-frames must be at least 1");
    }
    args.knobs().validate().context("invalid knob flags")?;
    let real_xen = args.xen || (args.sim_dir.is_none() && !args.embedded && grant::xen::available());

    // Before any thread starts, so every thread inherits the blocked mask and the signals
    // are only ever delivered through the signalfd.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT and SIGTERM")?;
    let stop = SignalFd::new(&signals).context("creating the signalfd")?;

    if real_xen {
        let (grants, xs) = xen::open()?;
        let socket = args.control.clone().unwrap_or_else(|| PathBuf::from(daemon::XEN_CONTROL_SOCKET));
        xen::prepare_socket_dir(&socket)?;
        let config = DaemonConfig {
            backend_domid: xen::own_domid(&xs),
            state_dir: args.state_dir(PathBuf::from(daemon::XEN_STATE_DIR)),
            ..args.config(socket, UplinkMode::Auto)
        };
        daemon::run(grants, xs, daemon::ReconnectDefault, config, stop.as_fd()).context("netback daemon")?;
        tracing::info!("netback stopped");
        return Ok(());
    }

    let _host;
    let dir = match &args.sim_dir {
        Some(dir) if !args.embedded => dir.clone(),
        dir => {
            let host = match dir {
                Some(dir) => SimHost::start(dir),
                None => SimHost::start_temp(),
            }
            .context("starting the simulated host")?;
            let dir = host.dir().to_path_buf();
            println!("sim host at {d}; attach guests with: nbctl --sim-dir {d} attach <domid>", d = dir.display());
            _host = host;
            dir
        }
    };
    let config = DaemonConfig {
        state_dir: args.state_dir(dir.join(daemon::SIM_STATE_DIR)),
        ..args.config(dir.join(netback::control::SIM_SOCKET_NAME), UplinkMode::Switch)
    };
    daemon::run_sim(&dir, config, stop.as_fd()).context("netback daemon")?;
    tracing::info!("netback stopped");
    Ok(())
}
