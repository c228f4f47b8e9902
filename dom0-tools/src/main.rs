//! `nbctl`: the operator CLI of netback.
//!
//! `attach`, `detach` and `list` act on the xenstore of a running (simulated) host, as
//! `xl network-attach` / `network-detach` / `network-list` do. `nbctl sim` brings up a
//! whole simulated host: xenstored, the netback daemon and guests exchanging traffic,
//! each a separate process. The process roles it starts are hidden subcommands of this
//! same binary, so one `cargo run --bin nbctl` builds everything needed.
#![forbid(unsafe_code)]

mod commands;
mod domain_cmd;
mod knobs_cmd;
mod sim;
mod study;
mod table;

/// mimalloc: frames are allocated on one thread and freed on another (see the workspace
/// manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// netback operator tool.
#[derive(Debug, Parser)]
#[command(name = "nbctl", version, about)]
struct Cli {
    /// Directory of a running simulated host (holds xenstored.sock and netback.sock);
    /// default: $NETBACK_SIM_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    sim_dir: Option<PathBuf>,
    /// The daemon's control socket on a real Xen host (default /run/netback/netback.sock).
    #[arg(long, global = true, value_name = "PATH")]
    control: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Give a guest a vif: write its frontend and backend directories (xl network-attach).
    Attach(commands::AttachArgs),
    /// Remove a vif: ask the backend to close, wait, remove both directories.
    Detach(commands::DetachArgs),
    /// Every vif with its xenbus states, and the daemon's counters when it answers.
    List,
    /// Per-vif counters, rates, notifications per packet, batch sizes and histograms.
    Stats(knobs_cmd::StatsArgs),
    /// Change batching knobs of one vif or of all (and the defaults), while traffic runs.
    Set(knobs_cmd::SetArgs),
    /// Create or destroy a guest domain on the simulated host.
    #[command(subcommand)]
    Domain(domain_cmd::DomainCommand),
    /// Run a simulated host with the netback daemon and guests sending each other
    /// traffic, and report per-vif counters and throughput.
    Sim(sim::SimArgs),
    /// Sweep batch sizes × frame sizes × guests on one simulated host, against a bare
    /// shared-memory baseline; writes study.csv, throughput.svg and notifications.svg.
    Study(study::StudyArgs),
    /// (internal) One end of the study's baseline ring.
    #[command(hide = true)]
    StudyRing(study::baseline::RingArgs),
    /// (internal) The netback daemon process started by `sim`.
    #[command(hide = true)]
    SimNetback,
    /// (internal) A guest process started by `sim`.
    #[command(hide = true)]
    SimGuest(sim::GuestArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let from_env = std::env::var_os(simhost::ENV_SIM_DIR).filter(|d| !d.is_empty()).map(PathBuf::from);
    let dir = cli.sim_dir.or(from_env);
    let dir = dir.as_deref();
    let target = || commands::Target::choose(dir, cli.control.as_deref());
    match &cli.command {
        Command::Attach(args) => commands::attach(&target()?.xenstore()?, args),
        Command::Detach(args) => commands::detach(&target()?.xenstore()?, args),
        Command::List => {
            let target = target()?;
            commands::list(&target.xenstore()?, &target.control_socket())
        }
        Command::Stats(args) => knobs_cmd::stats(&target()?.control_socket(), args),
        Command::Set(args) => knobs_cmd::set(&target()?.control_socket(), args),
        Command::Domain(cmd) => domain_cmd::run(commands::sim_dir(dir)?, cmd),
        Command::Sim(args) => sim::run_host(args),
        Command::Study(args) => study::run(args),
        Command::StudyRing(args) => study::baseline::run_role(args),
        Command::SimNetback => sim::roles::run_netback(commands::sim_dir(dir)?),
        Command::SimGuest(args) => sim::roles::run_guest(args),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
