//! `nbctl`: the operator CLI of netback.
//!
//! `nbctl sim` brings up the simulated Xen host and shows a guest and a backend, each a
//! separate process, exchanging data through a grant. The process roles it starts are
//! hidden subcommands of this same binary, so one `cargo run` builds everything needed.
#![forbid(unsafe_code)]

mod sim_demo;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// netback operator tool.
#[derive(Debug, Parser)]
#[command(name = "nbctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the simulated Xen host (hypervisor + xenstored), a guest and a backend process,
    /// and report what crossed the grant.
    Sim(sim_demo::SimArgs),
    /// (internal) The guest process started by `sim`.
    #[command(hide = true)]
    SimGuest,
    /// (internal) The backend process started by `sim`.
    #[command(hide = true)]
    SimBackend {
        /// The guest domain to serve.
        #[arg(long)]
        guest: u16,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Sim(args) => sim_demo::run_host(&args),
        Command::SimGuest => sim_demo::run_guest(),
        Command::SimBackend { guest } => sim_demo::run_backend(guest),
    }
}
