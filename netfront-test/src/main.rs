//! `netfront-test`: a userspace netfront. In a Xen guest (`/dev/xen` present, or `--xen`) it
//! shares pages through `/dev/xen/gntalloc`, binds event channels through `/dev/xen/evtchn`
//! and talks to xenstore through `/dev/xen/xenbus`; otherwise it joins the simulated host
//! named by the environment (`NETBACK_SIM_DIR`, `NETBACK_SIM_TOKEN`). It connects
//! `device/vif/<handle>` and pings, sends generated traffic, or receives and verifies it.
//! With `--hostile <mode>` it misbehaves instead (see `netfront_test::hostile`) and exits 0
//! only if the backend reacted as Linux netback does.
#![forbid(unsafe_code)]

/// mimalloc: frames are allocated on one thread and freed on another (see the workspace
/// manifest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, bail};
use clap::Parser;
use grant::{EventChannel, EventChannels, GrantAlloc};
use netfront_test::hostile::{self, HostileConfig, Mode};
use netfront_test::mac::{Mac, format_mac, parse_mac};
use netfront_test::stack::{Responder, arp_request, echo_request, parse_arp, parse_echo};
use netfront_test::traffic::{FrameSize, Generator, GeneratorConfig, Next, Receiver};
use netfront_test::{Features, Netfront, NetfrontConfig};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xenstore::Client;

#[derive(Debug, Parser)]
#[command(about = "A userspace Xen netfront: ping, send or receive test traffic")]
struct Args {
    /// Device handle: connects device/vif/<handle>.
    #[arg(long, default_value_t = 0)]
    handle: u32,
    /// Our IPv4 address (answered for ARP and ping).
    #[arg(long, default_value = "10.0.0.2")]
    ip: Ipv4Addr,
    /// Resolve this address with ARP and send it ICMP echo requests.
    #[arg(long)]
    ping: Option<Ipv4Addr>,
    /// Number of echo requests for --ping.
    #[arg(long, default_value_t = 3)]
    count: u16,
    /// Send this many generated test frames.
    #[arg(long)]
    send: Option<u64>,
    /// Destination MAC of --send.
    #[arg(long, value_parser = mac_arg, default_value = "ff:ff:ff:ff:ff:ff")]
    to: Mac,
    /// Frame size of --send: `N` or `MIN-MAX` (uniform), 36..=4096, or up to 65535 with
    /// --offload against a backend with feature-sg.
    #[arg(long, value_parser = size_arg, default_value = "60-1514")]
    size: FrameSize,
    /// Frames per second of --send (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Receive and verify test traffic (answering ARP and ping) for this many seconds.
    #[arg(long)]
    receive: Option<u64>,
    /// Ask for scatter-gather, GSO and checksum offload (used where the backend offers them).
    #[arg(long)]
    offload: bool,
    /// Handshake and reply timeout, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Run as a real Xen guest (the default when /dev/xen exists and NETBACK_SIM_DIR is unset).
    #[arg(long, conflicts_with = "sim")]
    xen: bool,
    /// Join the simulated host named by the environment even if /dev/xen exists.
    #[arg(long)]
    sim: bool,
    /// Misbehave instead, as one entry of the bad-input catalogue (`netfront_test::hostile`
    /// lists the modes): the backend must disable the vif with an error within --timeout,
    /// or answer ERROR (bad-tx-gref: --ping then checks that the vif still works), or serve
    /// the frames (sent to --to as test frames of flow --flow); ro-rx-grant asks --ping's
    /// address (at --to) for ARP. Exits 0 only if the backend reacted as Linux netback does.
    #[arg(long, value_name = "MODE", conflicts_with_all = ["send", "receive"])]
    hostile: Option<Mode>,
    /// How long double-fetch, notify-storm, rx-none and rx-one-short misbehave, in seconds.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// The flow of the test frames served hostile modes send.
    #[arg(long, default_value_t = 0x4057)]
    flow: u32,
}

fn mac_arg(s: &str) -> Result<Mac, String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not xx:xx:xx:xx:xx:xx"))
}

fn size_arg(s: &str) -> Result<FrameSize, String> {
    let num = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    match s.split_once('-') {
        Some((min, max)) => Ok(FrameSize::Uniform { min: num(min)?, max: num(max)? }),
        None => Ok(FrameSize::Fixed(num(s)?)),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let real = args.xen || (!args.sim && grant::xen::available() && std::env::var_os("NETBACK_SIM_DIR").is_none());
    if real {
        let host = grant::xen::XenHost::open()?;
        let xs = xenstore::Client::open_default()
            .context("cannot reach xenstore (/dev/xen/xenbus): is this a Xen guest with xenfs/xenbus?")?;
        start(&args, &host, xs)
    } else {
        let session = simhost::join_from_env().context("joining the sim host")?;
        start(&args, &session.domain, session.xenstore.clone())
    }
}

fn start<G: GrantAlloc + EventChannels>(args: &Args, domain: &G, xs: Client) -> anyhow::Result<()> {
    match args.hostile {
        Some(mode) => misbehave(args, domain, xs, mode),
        None => run(args, Netfront::connect(domain, xs, args.handle, config(args))?),
    }
}

fn config(args: &Args) -> NetfrontConfig {
    let features = if args.offload { Features::ALL } else { Features::default() };
    NetfrontConfig { timeout: Duration::from_secs(args.timeout), features, ..NetfrontConfig::default() }
}

/// Does what the arguments ask on a connected netfront, then disconnects.
fn run<C: EventChannel>(args: &Args, mut nf: Netfront<C>) -> anyhow::Result<()> {
    println!("connected vif {} as {} ({}), backend {}", args.handle, format_mac(&nf.mac()), args.ip, nf.info().backend);
    let responder = Responder::new(nf.mac(), args.ip);
    let timeout = Duration::from_secs(args.timeout);
    let mut result = Ok(());
    if let Some(target) = args.ping {
        result = result.and_then(|()| ping(&mut nf, &responder, target, args.count, timeout));
    }
    if let Some(count) = args.send {
        let cfg =
            GeneratorConfig { size: args.size, rate: args.rate, ..GeneratorConfig::new(nf.mac(), args.to, count) };
        result = result.and_then(|()| send(&mut nf, cfg));
    }
    if let Some(secs) = args.receive {
        result = result.and_then(|()| receive(&mut nf, &responder, Duration::from_secs(secs)));
    }
    let stats = nf.disconnect()?;
    println!("{stats:?}");
    result
}

/// Misbehaves as `mode` says, prints what the backend did (`hostile <mode>: ...`) and fails
/// unless it reacted as Linux netback does.
fn misbehave<G: GrantAlloc + EventChannels>(args: &Args, domain: &G, xs: Client, mode: Mode) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let mut still_works = Ok(());
    let report = match mode {
        Mode::UngrantedRing => hostile::ungranted_ring(domain, &xs, args.handle, timeout)?,
        Mode::RingOverflow => {
            let mut nf = Netfront::connect(domain, xs, args.handle, config(args))?;
            let report = hostile::ring_overflow(&mut nf, timeout)?;
            close(nf);
            report
        }
        Mode::BadTxGref => {
            let mut nf = Netfront::connect(domain, xs, args.handle, config(args))?;
            // (kept apart from `hostile::run` for the ping that follows)
            println!(
                "connected vif {} as {} ({}), backend {}",
                args.handle,
                format_mac(&nf.mac()),
                args.ip,
                nf.info().backend
            );
            let report = hostile::bad_tx_gref(&mut nf)?;
            // Printed before the ping's lines, whatever the ping does.
            println!("{report}");
            if let (true, Some(target)) = (report.passed(), args.ping) {
                let me = Responder::new(nf.mac(), args.ip);
                still_works = ping(&mut nf, &me, target, args.count, timeout)
                    .context("the vif no longer works after the bad TX request");
            }
            close(nf);
            report
        }
        mode => {
            let cfg = HostileConfig {
                handle: args.handle,
                timeout,
                hold: Duration::from_secs_f64(args.hold),
                to: args.to,
                flow: args.flow,
                ip: args.ip,
                peer_ip: args.ping,
            };
            let report = hostile::run(domain, xs, mode, &cfg)?;
            println!("{report}");
            if !report.passed() {
                bail!("hostile {mode}: want {:?} as Linux netback reacts", mode.expect());
            }
            return Ok(());
        }
    };
    if mode.expects_disabled() {
        println!("{report}");
    }
    if !report.passed() {
        if mode.expects_disabled() {
            bail!("hostile {mode}: the backend did not disable the vif with an error within {timeout:?}");
        }
        bail!("hostile {mode}: want TX status -1 (NETIF_RSP_ERROR) and the vif still Connected without error");
    }
    still_works
}

/// Disconnects, logging (not failing on) a backend that does not follow.
fn close<C: EventChannel>(nf: Netfront<C>) {
    match nf.disconnect() {
        Ok(stats) => tracing::debug!(?stats, "disconnected"),
        Err(e) => tracing::warn!(error = %e, "disconnecting"),
    }
}

/// Receives until `deadline`, answering ARP/ping; returns the first frame `want` accepts.
fn recv_until<T, C: EventChannel>(
    nf: &mut Netfront<C>,
    responder: &Responder,
    deadline: Instant,
    mut want: impl FnMut(&[u8]) -> Option<T>,
) -> anyhow::Result<Option<T>> {
    while Instant::now() < deadline {
        let Some(frame) = nf.recv()? else {
            nf.wait(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)))?;
            continue;
        };
        if let Some(reply) = responder.respond(&frame) {
            nf.send(&reply)?;
        } else if let Some(found) = want(&frame) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn ping<C: EventChannel>(
    nf: &mut Netfront<C>,
    me: &Responder,
    target: Ipv4Addr,
    count: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    nf.send(&arp_request(me.mac, me.ip, target))?;
    let is_answer = |f: &[u8]| parse_arp(f).filter(|a| a.op == 2 && a.sender_ip == target).map(|a| a.sender_mac);
    let Some(mac) = recv_until(nf, me, Instant::now() + timeout, is_answer)? else {
        bail!("no ARP reply from {target} within {timeout:?}");
    };
    println!("{target} is at {}", format_mac(&mac));
    let mut answered = 0;
    for seq in 1..=count {
        let sent = Instant::now();
        nf.send(&echo_request(me.mac, mac, me.ip, target, 0x6e66, seq, b"netfront-test ping"))?;
        let is_reply = |f: &[u8]| parse_echo(f).filter(|e| !e.request && e.src_ip == target && e.seq == seq);
        match recv_until(nf, me, sent + timeout, is_reply)? {
            Some(_) => {
                answered += 1;
                println!("reply from {target}: seq={seq} time={:?}", sent.elapsed());
            }
            None => println!("no reply from {target}: seq={seq}"),
        }
    }
    println!("{count} sent, {answered} answered");
    if answered == 0 { bail!("{target} did not answer") } else { Ok(()) }
}

fn send<C: EventChannel>(nf: &mut Netfront<C>, cfg: GeneratorConfig) -> anyhow::Result<()> {
    let mut generator = Generator::new(cfg)?;
    let start = Instant::now();
    loop {
        match generator.next(Instant::now()) {
            Next::Frame(frame) => nf.send(&frame)?,
            Next::WaitUntil(when) => std::thread::sleep(when.saturating_duration_since(Instant::now())),
            Next::Done => break,
        }
        // Keep the RX ring drained so the backend never stalls on us.
        while nf.recv()?.is_some() {}
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = nf.stats();
    println!("sent {} frames, {} bytes in {secs:.3} s", generator.generated(), stats.tx_bytes);
    Ok(())
}

fn receive<C: EventChannel>(nf: &mut Netfront<C>, me: &Responder, duration: Duration) -> anyhow::Result<()> {
    let mut receiver = Receiver::new();
    recv_until(nf, me, Instant::now() + duration, |f| {
        let _ = receiver.receive(f);
        None::<()>
    })?;
    let report = receiver.report();
    for (flow, r) in &report.flows {
        println!(
            "flow {flow}: received {} ({} bytes), lost {}, reordered {}, duplicated {}",
            r.received, r.bytes, r.lost, r.reordered, r.duplicated
        );
    }
    println!("corrupt {}, foreign {}", report.corrupt, report.foreign);
    Ok(())
}
