//! Guest roles of the lab, each a netfront-test frontend in its own process. The role is
//! chosen by [`ENV_MODE`]; the protocol with the test is described in the parent module.

use anyhow::{Context, bail, ensure};
use grant::{Access, EventChannel, EventChannels, GrantAlloc};
use netfront_test::mac::{Mac, format_mac, parse_mac};
use netfront_test::stack::{Responder, arp_request, echo_request, parse_arp, parse_echo};
use netfront_test::traffic::{FrameSize, Generator, GeneratorConfig, Next, Receiver};
use netfront_test::{Netfront, NetfrontConfig, XenbusState};
use netif::{FrontRing, RxRing, TxRing};
use simhost::Session;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xenstore::Watch;

use super::WAIT;

/// The role: `peer`, `broadcaster`, `listener`, `pinger`, `idle`, `hostile-evtchn`.
pub const ENV_MODE: &str = "E2E_MODE";
/// `peer`/`broadcaster`: frames per second (0 = as fast as possible).
pub const ENV_RATE: &str = "E2E_RATE";
/// `broadcaster`/`listener`: how many broadcast frames.
pub const ENV_COUNT: &str = "E2E_COUNT";
/// `listener`: the broadcaster's domid (its flow).
pub const ENV_FLOW: &str = "E2E_FLOW";
/// `pinger`: the IPv4 address to ping.
pub const ENV_TARGET: &str = "E2E_TARGET";
/// `pinger`: how many times to connect, ping and disconnect.
pub const ENV_ROUNDS: &str = "E2E_ROUNDS";
/// How long a `peer` waits after `data/expect` for frames still missing (ms; default: the
/// lab's whole patience).
pub const ENV_SETTLE_MS: &str = "E2E_SETTLE_MS";

type Nf = Netfront<grant::sim::SimEventChannel>;

/// What a guest received of its peer's flow, as written to `data/report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerReport {
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub corrupt: u64,
}

impl PeerReport {
    pub fn parse(text: &str) -> anyhow::Result<PeerReport> {
        let n: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        let [received, lost, reordered, duplicated, corrupt] = n[..] else { bail!("report {text:?}") };
        Ok(PeerReport { received, lost, reordered, duplicated, corrupt })
    }

    /// What `receiver` got of `flow`, plus every corrupt frame.
    fn of_flow(receiver: &Receiver, flow: u32) -> PeerReport {
        let report = receiver.report();
        let f = report.flows.get(&flow).copied().unwrap_or_default();
        PeerReport {
            received: f.received,
            lost: f.lost,
            reordered: f.reordered,
            duplicated: f.duplicated,
            corrupt: report.corrupt,
        }
    }

    fn text(&self) -> String {
        format!("{} {} {} {} {}", self.received, self.lost, self.reordered, self.duplicated, self.corrupt)
    }

    /// Every one of `sent` frames arrived once, intact, in order.
    pub fn is_perfect(&self, sent: u64) -> bool {
        *self == PeerReport { received: sent, lost: 0, reordered: 0, duplicated: 0, corrupt: 0 }
    }
}

/// The IPv4 address of domain `domid` in the lab.
pub fn ip_of(domid: u16) -> Ipv4Addr {
    let [hi, lo] = domid.to_be_bytes();
    Ipv4Addr::new(10, 0, hi, lo)
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::var(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name}={v:?}")))
}

/// Runs the role named by [`ENV_MODE`].
pub fn run() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let mode = std::env::var(ENV_MODE).context(ENV_MODE)?;
    match mode.as_str() {
        "peer" => peer(&session),
        "broadcaster" => broadcaster(&session),
        "listener" => listener(&session),
        "pinger" => pinger(&session),
        "held-pinger" => held_pinger(&session),
        "jumper" => jumper(&session),
        "idle" => idle(&session),
        "hostile-evtchn" => hostile_evtchn(&session),
        other => bail!("unknown mode {other:?}"),
    }
}

fn connect(session: &Session) -> anyhow::Result<Nf> {
    Ok(Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?)
}

fn responder(session: &Session, nf: &Nf) -> Responder {
    Responder::new(nf.mac(), ip_of(session.domid()))
}

/// Waits for `data/<key>` and returns its value.
pub fn wait_key(session: &Session, key: &str) -> anyhow::Result<String> {
    let watch = session.xenstore.watch(&format!("data/{key}"), None)?;
    let deadline = Instant::now() + WAIT;
    loop {
        match session.xenstore.read_string(&format!("data/{key}")) {
            Ok(v) => return Ok(v),
            Err(e) if e.is_enoent() => {}
            Err(e) => return Err(e.into()),
        }
        ensure!(Instant::now() < deadline, "data/{key} never came");
        watch.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
    }
}

/// Whether `data/<key>` exists, asking xenstore only when `watch` (on that key) fired.
fn key_written(session: &Session, watch: &Watch, key: &str) -> anyhow::Result<bool> {
    let mut fired = false;
    while watch.try_recv()?.is_some() {
        fired = true;
    }
    Ok(fired && session.xenstore.exists(&format!("data/{key}"))?)
}

/// Receives everything waiting: answers ARP/ping, feeds test frames addressed to us to
/// `receiver`. Returns whether anything arrived.
fn drain(nf: &mut Nf, me: &Responder, receiver: &mut Receiver) -> anyhow::Result<bool> {
    let mut any = false;
    while let Some(frame) = nf.recv()? {
        any = true;
        if let Some(reply) = me.respond(&frame) {
            nf.send(&reply)?;
        } else if frame.len() >= 6 && (frame[..6] == me.mac || frame[..6] == [0xff; 6]) {
            // Errors are counted by the receiver (corrupt); foreign frames are ignored.
            let _ = receiver.receive(&frame);
        }
    }
    Ok(any)
}

/// `peer`: after `data/start` (the peer's MAC), sends to the peer (flow = our domid) and
/// receives, until `data/stop`; then reports `data/sent`, waits for `data/expect` frames
/// of the peer's flow, writes `data/report`, disconnects.
fn peer(session: &Session) -> anyhow::Result<()> {
    let mut nf = connect(session)?;
    let me = responder(session, &nf);
    let stop = session.xenstore.watch("data/stop", None)?;
    let peer_mac = parse_mac(&wait_key(session, "start")?).context("data/start is not a MAC")?;
    let rate = env_u64(ENV_RATE, 2000)?;
    let cfg = GeneratorConfig {
        flow: u32::from(session.domid()),
        size: FrameSize::Uniform { min: 60, max: 1514 },
        rate,
        count: None,
        seed: u64::from(session.domid()),
        ..GeneratorConfig::new(nf.mac(), peer_mac, 0)
    };
    let mut generator = Generator::new(cfg)?;
    let mut receiver = Receiver::new();
    let mut sent = 0u64;
    while !key_written(session, &stop, "stop")? {
        // Draw a frame only when it can be sent: a drawn frame is a sequence number.
        let frame = if nf.tx_available()? > 0 { generator.next(Instant::now()) } else { Next::Done };
        if let Next::Frame(frame) = frame {
            nf.send(&frame)?;
            sent += 1;
        } else if !drain(&mut nf, &me, &mut receiver)? {
            nf.wait(Duration::from_millis(1))?;
        }
        drain(&mut nf, &me, &mut receiver)?;
    }
    session.xenstore.write("data/sent", sent.to_string())?;
    let expect: u64 = wait_key(session, "expect")?.parse()?;
    // The lab's MACs end in the domid, and a peer's flow is its domid.
    let peer_flow = u32::from(u16::from_be_bytes([peer_mac[4], peer_mac[5]]));
    let settle = std::env::var(ENV_SETTLE_MS).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
    let deadline = Instant::now() + settle.unwrap_or(WAIT);
    while received_of(&receiver, Some(peer_flow)) < expect && Instant::now() < deadline {
        if !drain(&mut nf, &me, &mut receiver)? {
            nf.wait(Duration::from_millis(50))?;
        }
    }
    receiver.expect(peer_flow, expect);
    let stats = nf.stats();
    let errors = format!("{} {} {}", stats.tx_errors, stats.rx_errors, stats.protocol_errors);
    session.xenstore.write("data/errors", errors)?;
    session.xenstore.write("data/report", PeerReport::of_flow(&receiver, peer_flow).text())?;
    nf.disconnect()?;
    Ok(())
}

fn received_of(receiver: &Receiver, flow: Option<u32>) -> u64 {
    flow.and_then(|f| receiver.report().flows.get(&f).map(|r| r.received)).unwrap_or(0)
}

/// `broadcaster`: after `data/start`, sends `E2E_COUNT` broadcast frames on flow = our
/// domid, then receives until `data/stop` and reports how many of its own came back.
fn broadcaster(session: &Session) -> anyhow::Result<()> {
    let mut nf = connect(session)?;
    let me = responder(session, &nf);
    let stop = session.xenstore.watch("data/stop", None)?;
    wait_key(session, "start")?;
    let count = env_u64(ENV_COUNT, 100)?;
    let cfg = GeneratorConfig {
        flow: u32::from(session.domid()),
        rate: env_u64(ENV_RATE, 2000)?,
        ..GeneratorConfig::new(nf.mac(), [0xff; 6], count)
    };
    let mut generator = Generator::new(cfg)?;
    let mut receiver = Receiver::new();
    loop {
        match generator.next(Instant::now()) {
            Next::Frame(frame) => nf.send(&frame)?,
            Next::WaitUntil(when) => std::thread::sleep(when.saturating_duration_since(Instant::now())),
            Next::Done => break,
        }
        drain(&mut nf, &me, &mut receiver)?;
    }
    session.xenstore.write("data/sent", count.to_string())?;
    while !key_written(session, &stop, "stop")? {
        if !drain(&mut nf, &me, &mut receiver)? {
            nf.wait(Duration::from_millis(20))?;
        }
    }
    let own = received_of(&receiver, Some(u32::from(session.domid())));
    session.xenstore.write("data/report", format!("{own} 0 0 0 {}", receiver.report().corrupt))?;
    nf.disconnect()?;
    Ok(())
}

/// `listener`: waits for `E2E_COUNT` frames of flow `E2E_FLOW` and reports them.
fn listener(session: &Session) -> anyhow::Result<()> {
    let mut nf = connect(session)?;
    let me = responder(session, &nf);
    let count = env_u64(ENV_COUNT, 100)?;
    let flow = u32::try_from(env_u64(ENV_FLOW, 0)?)?;
    let mut receiver = Receiver::new();
    receiver.expect(flow, count);
    let deadline = Instant::now() + WAIT;
    while received_of(&receiver, Some(flow)) < count && Instant::now() < deadline {
        if !drain(&mut nf, &me, &mut receiver)? {
            nf.wait(Duration::from_millis(20))?;
        }
    }
    session.xenstore.write("data/report", PeerReport::of_flow(&receiver, flow).text())?;
    nf.disconnect()?;
    Ok(())
}

/// `pinger`: `E2E_ROUNDS` times: connect, resolve `E2E_TARGET` with ARP, one echo, disconnect.
fn pinger(session: &Session) -> anyhow::Result<()> {
    let target: Ipv4Addr = std::env::var(ENV_TARGET).context(ENV_TARGET)?.parse()?;
    for round in 0..env_u64(ENV_ROUNDS, 1)? {
        let mut nf = connect(session).with_context(|| format!("connect, round {round}"))?;
        let me = responder(session, &nf);
        ping_round(&mut nf, &me, target, round, 0x4532)?;
        session.xenstore.write(format!("data/round{round}").as_str(), "ok")?;
        nf.disconnect()?;
    }
    Ok(())
}

/// Resolves `target` with ARP and waits for its answer to one echo request (sequence
/// `round`, identifier `ident`), answering ARP and pings meanwhile.
fn ping_round(nf: &mut Nf, me: &Responder, target: Ipv4Addr, round: u64, ident: u16) -> anyhow::Result<()> {
    let mac = resolve(nf, me, target).with_context(|| format!("ARP, round {round}"))?;
    nf.send(&echo_request(me.mac, mac, me.ip, target, ident, round as u16, b"e2e ping"))?;
    let deadline = Instant::now() + WAIT;
    loop {
        ensure!(Instant::now() < deadline, "no echo reply from {target} in round {round}");
        let Some(frame) = nf.recv()? else {
            nf.wait(Duration::from_millis(20))?;
            continue;
        };
        if let Some(reply) = me.respond(&frame) {
            nf.send(&reply)?;
        } else if parse_echo(&frame).is_some_and(|e| !e.request && e.src_ip == target && e.seq == round as u16) {
            return Ok(());
        }
    }
}

/// `held-pinger`: as `pinger`, on ONE connection: before each round after the first it
/// waits for `data/go<round>` (the test restarts the daemon in between), and after the last
/// for `data/finish` before it disconnects.
fn held_pinger(session: &Session) -> anyhow::Result<()> {
    let target: Ipv4Addr = std::env::var(ENV_TARGET).context(ENV_TARGET)?.parse()?;
    let mut nf = connect(session)?;
    let me = responder(session, &nf);
    for round in 0..env_u64(ENV_ROUNDS, 1)? {
        if round > 0 {
            wait_key(session, &format!("go{round}"))?;
        }
        ping_round(&mut nf, &me, target, round, 0x4533)?;
        session.xenstore.write(format!("data/round{round}").as_str(), "ok")?;
    }
    // Connected until the test has looked at the state nodes.
    wait_key(session, "finish")?;
    nf.disconnect()?;
    Ok(())
}

/// `jumper`: connects, says `data/connected`, and on `data/jump` moves its TX `req_prod`
/// 1000 past the backend's `rsp_prod` (a frontend lying while the daemon is down), says
/// `data/jumped`, then idles until killed.
fn jumper(session: &Session) -> anyhow::Result<()> {
    let mut nf = connect(session)?;
    session.xenstore.write("data/connected", "1")?;
    wait_key(session, "jump")?;
    let rsp_prod = nf.tx_rsp_prod()?;
    // The notification may find no backend bound: that is the point.
    let _ = nf.publish_tx_req_prod(rsp_prod.wrapping_add(1000));
    session.xenstore.write("data/jumped", rsp_prod.to_string())?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn resolve(nf: &mut Nf, me: &Responder, target: Ipv4Addr) -> anyhow::Result<Mac> {
    let deadline = Instant::now() + WAIT;
    let mut next_ask = Instant::now();
    loop {
        ensure!(Instant::now() < deadline, "{target} never answered ARP");
        if Instant::now() >= next_ask {
            nf.send(&arp_request(me.mac, me.ip, target))?;
            next_ask = Instant::now() + Duration::from_millis(200);
        }
        let Some(frame) = nf.recv()? else {
            nf.wait(Duration::from_millis(20))?;
            continue;
        };
        if let Some(reply) = me.respond(&frame) {
            nf.send(&reply)?;
        } else if let Some(arp) = parse_arp(&frame).filter(|a| a.op == 2 && a.sender_ip == target) {
            return Ok(arp.sender_mac);
        }
    }
}

/// `idle`: connects, then receives (answering ARP/ping) until the backend leaves
/// Connected (a detach), and closes like Linux netfront. With `E2E_TARGET`, then waits for
/// `data/reattached` and runs `pinger`.
fn idle(session: &Session) -> anyhow::Result<()> {
    let mut nf = connect(session)?;
    let me = responder(session, &nf);
    let backend = nf.info().backend.clone();
    let watch = session.xenstore.watch(&format!("{backend}/state"), None)?;
    session.xenstore.write("data/connected", format_mac(&nf.mac()))?;
    let mut receiver = Receiver::new();
    let deadline = Instant::now() + WAIT * 2;
    loop {
        ensure!(Instant::now() < deadline, "the backend never closed");
        let state = netfront_test::xenbus::read_state(&session.xenstore, &backend)?;
        if state != Some(XenbusState::Connected) {
            break;
        }
        if !drain(&mut nf, &me, &mut receiver)? {
            let _ = watch.recv_timeout(Duration::from_millis(20))?;
        }
    }
    nf.disconnect()?;
    // With a target: wait for the toolstack to attach the vif again, then ping through it.
    if std::env::var_os(ENV_TARGET).is_some() {
        wait_key(session, "reattached")?;
        pinger(session)?;
    }
    Ok(())
}

/// `hostile-evtchn`: a frontend with real ring grants that names an event channel it never
/// allocated; stays alive until killed.
fn hostile_evtchn(session: &Session) -> anyhow::Result<()> {
    let xs = &session.xenstore;
    let info = netfront_test::xenbus::read_frontend(xs, 0)?;
    netfront_test::xenbus::wait_backend_state(xs, &info.backend, XenbusState::InitWait, WAIT, |s| {
        s == Some(XenbusState::InitWait)
    })?;
    let tx_page = session.domain.share(info.backend_id, 1, Access::ReadWrite)?;
    let rx_page = session.domain.share(info.backend_id, 1, Access::ReadWrite)?;
    let (tx_ref, rx_ref) = (tx_page.grefs()[0], rx_page.grefs()[0]);
    let _tx = FrontRing::<TxRing, _>::init(tx_page)?;
    let _rx = FrontRing::<RxRing, _>::init(rx_page)?;
    // A real channel exists, so the bogus port is not simply "no channels at all".
    let real = session.domain.alloc_unbound(info.backend_id)?;
    let bogus = real.port() + 100;
    netfront_test::xenbus::publish_rings(xs, &info.dir, tx_ref, rx_ref, bogus)?;
    xs.write("data/published", "1")?;
    std::thread::sleep(WAIT * 4);
    Ok(())
}
