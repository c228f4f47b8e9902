//! The bad-input catalogue of `netif.md` §4.2, one named case per entry, each played by a
//! `netfront_test::hostile` mode in a guest process of its own against the daemon, while a
//! pair of well-behaved guests exchanges sequence-checked traffic. Every case asserts that
//! the daemon still answers, that the hostile vif was disabled (its error) or its packet
//! dropped (the statuses and the drop counter) or served (the frames at a verifying
//! receiver) exactly as Linux netback's policy says; at the end the pair must have lost
//! nothing. Item 9 (the control ring) is not implemented by the daemon and not tested.
//! Items 10's ring refs, `request-rx-copy` and MAC cases are in `daemon_bad_input.rs`.

mod common;

use anyhow::{Context, bail, ensure};
use common::guest::{ENV_COUNT, ENV_FLOW, ENV_MODE, ENV_RATE, PeerReport, ip_of, wait_key};
use common::{Lab, WAIT, mac_of};
use grant::DomId;
use netback::control::VifReport;
use netback::vif::VifStats;
use netback::xenbus::XenbusState;
use netfront_test::hostile::{self, HostileConfig, Mode};
use netfront_test::mac::{format_mac, parse_mac};
use netfront_test::traffic::build_frame;
use netfront_test::{Features, Netfront, NetfrontConfig};
use std::time::{Duration, Instant};

child_roles!(role);

/// `hostile`: the mode's name.
const ENV_HOSTILE: &str = "E2E_HOSTILE";
/// `hostile`: where served frames go / whom to ask (MAC); `big-sender`: unused.
const ENV_TO: &str = "E2E_TO";
/// `hostile`: the IPv4 address to ask for ARP (`ro-rx-grant`).
const ENV_PEER: &str = "E2E_PEER";
/// `hostile`: how long to misbehave, in ms.
const ENV_HOLD_MS: &str = "E2E_HOLD_MS";

/// The guest roles of this file, then the common ones.
fn role() -> anyhow::Result<()> {
    match std::env::var(ENV_MODE).as_deref() {
        Ok("hostile") => hostile_role(),
        Ok("tcp-sink") => tcp_sink(),
        Ok("big-sender") => big_sender(),
        _ => common::guest::run(),
    }
}

/// `hostile`: runs the mode and writes `data/hostile` (the report line) and `data/passed`.
fn hostile_role() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let mode: Mode = std::env::var(ENV_HOSTILE)?.parse()?;
    let env = |k: &str| std::env::var(k).ok();
    let cfg = HostileConfig {
        timeout: Duration::from_secs(10),
        hold: Duration::from_millis(env(ENV_HOLD_MS).map_or(Ok(1000), |v| v.parse())?),
        to: env(ENV_TO).and_then(|m| parse_mac(&m)).unwrap_or([0xff; 6]),
        flow: env(ENV_FLOW).map_or(Ok(u32::from(session.domid())), |v| v.parse())?,
        ip: ip_of(session.domid()),
        peer_ip: env(ENV_PEER).map(|v| v.parse()).transpose()?,
        ..HostileConfig::default()
    };
    let report = hostile::run(&session.domain, session.xenstore.clone(), mode, &cfg)?;
    session.xenstore.write("data/hostile", report.to_string())?;
    session.xenstore.write("data/passed", if report.passed() { "1" } else { "0" })?;
    Ok(())
}

/// `tcp-sink`: a guest without offloads; counts TCP segments until `E2E_COUNT` payload
/// bytes came, and writes `data/report` = `segments bytes bad` (bad: checksum wrong).
fn tcp_sink() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?;
    session.xenstore.write("data/connected", "1")?;
    let want: usize = std::env::var(ENV_COUNT)?.parse()?;
    let (mut segments, mut bytes, mut bad) = (0, 0, 0);
    let deadline = Instant::now() + WAIT;
    while bytes < want && Instant::now() < deadline {
        let Some(frame) = nf.recv()? else {
            nf.wait(Duration::from_millis(20))?;
            continue;
        };
        match netfront_test::tcp::parse_tcp_frame(&frame) {
            Some(seg) if seg.checksum_ok => {
                segments += 1;
                bytes += seg.payload.len();
            }
            Some(_) => bad += 1,
            None => {}
        }
    }
    session.xenstore.write("data/report", format!("{segments} {bytes} {bad}"))?;
    nf.disconnect()?;
    Ok(())
}

/// `big-sender`: with scatter-gather, after `data/start` (a MAC) sends 6000-byte test
/// frames there at `E2E_RATE` per second until `data/stop`; writes `data/sent`.
fn big_sender() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let config = NetfrontConfig { features: Features { sg: true, ..Features::default() }, ..NetfrontConfig::default() };
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, config)?;
    let to = parse_mac(&wait_key(&session, "start")?).context("data/start")?;
    let rate: u64 = std::env::var(ENV_RATE)?.parse()?;
    let stop = session.xenstore.watch("data/stop", None)?;
    let mut sent = 0u64;
    let start = Instant::now();
    loop {
        if stop.try_recv()?.is_some() && session.xenstore.exists("data/stop")? {
            break;
        }
        let due = start.elapsed().as_secs_f64() * rate as f64;
        if (sent as f64) < due && nf.tx_available()? >= 2 {
            nf.send(&build_frame(to, nf.mac(), u32::from(session.domid()), sent, 6000))?;
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    session.xenstore.write("data/sent", sent.to_string())?;
    nf.disconnect()?;
    Ok(())
}

/// What the daemon must have done with a case's vif.
enum Want {
    /// Disabled, the error naming this.
    Disabled(&'static str),
    /// Kept, with these counters at least (each field of `VifStats` named by the closure).
    Kept(fn(&VifStats) -> Result<(), String>),
}

/// Runs `mode` in a new domain (`extra` environment) and checks the daemon's side.
fn case(lab: &mut Lab, mode: Mode, extra: &[(&'static str, String)], want: Want) -> anyhow::Result<VifReport> {
    let (spec, vif) = lab.domain(mode.name())?;
    let mut env = vec![(ENV_HOSTILE, mode.name().to_string())];
    env.extend(extra.iter().cloned());
    let guest = lab.spawn_guest(&spec, "hostile", &env)?;
    let line = lab.hear(spec.domid, "hostile")?;
    eprintln!("{line}");
    let passed = lab.hear(spec.domid, "passed")?;
    lab.wait_guest(guest)?;
    ensure!(passed == "1", "the hostile guest saw the wrong reaction: {line}");
    ensure!(netback::control::list(&lab.control()).is_ok(), "the daemon no longer answers");
    let mut report = lab.report(spec.domid)?.context("the vif is not listed")?;
    match want {
        Want::Disabled(about) => {
            // The control socket's view follows xenstore's shortly after.
            let deadline = Instant::now() + WAIT;
            while report.error.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                report = lab.report(spec.domid)?.context("the vif is not listed")?;
            }
            let error = report.error.clone().context("no error reported")?;
            ensure!(error.contains(about), "the error {error:?} does not name {about:?}");
            let node = lab.xs().read_string(&format!("{}/error", vif.backend))?;
            ensure!(node == error, "error node {node:?}");
        }
        Want::Kept(check) => {
            ensure!(report.error.is_none(), "disabled: {:?}", report.error);
            check(&report.stats).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(report)
}

fn need(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what} = {got}, want {want}")) }
}

/// Runs every case, then reports all failures by name.
fn run_cases(cases: Vec<(&str, anyhow::Result<()>)>) -> anyhow::Result<()> {
    let failed: Vec<String> =
        cases.into_iter().filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}"))).collect();
    if !failed.is_empty() {
        bail!("{} case(s) failed:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

/// A listener for `count` test frames of flow `flow`; returns (process index, MAC, domid).
fn listener(lab: &mut Lab, name: &str, flow: u32, count: u64) -> anyhow::Result<(usize, String, DomId)> {
    let (spec, vif) = lab.domain(name)?;
    let env = [(ENV_COUNT, count.to_string()), (ENV_FLOW, flow.to_string())];
    let index = lab.spawn_guest(&spec, "listener", &env)?;
    lab.wait_state(&vif.backend, XenbusState::Connected)?;
    Ok((index, format_mac(&mac_of(spec.domid)), spec.domid))
}

/// A served mode: its frames (test frames of its flow) must reach a listener intact.
fn served(lab: &mut Lab, mode: Mode, check: fn(&VifStats) -> Result<(), String>) -> anyhow::Result<()> {
    let count = mode.served_frames();
    let flow = 0x5e00 + Mode::EVERY.iter().position(|m| *m == mode).unwrap_or(0) as u32;
    let (index, mac, listener_domid) = listener(lab, &format!("{}-rx", mode.name()), flow, count)?;
    case(lab, mode, &[(ENV_TO, mac), (ENV_FLOW, flow.to_string())], Want::Kept(check))?;
    let report = PeerReport::parse(&lab.hear(listener_domid, "report")?)?;
    lab.wait_guest(index)?;
    ensure!(report.is_perfect(count), "the listener got {report:?} of {count}");
    Ok(())
}

#[test]
fn tx_and_xenstore_catalogue_disable_drop_or_serve_as_linux() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let t0 = Instant::now();
    let mut cases: Vec<(&str, anyhow::Result<()>)> = Vec::new();
    let disabled = |lab: &mut Lab, mode, about| case(lab, mode, &[], Want::Disabled(about)).map(drop);

    // 1. req_prod far ahead, and a ring attached with req_prod - rsp_prod > RING_SIZE.
    cases.push(("1 ring-overflow", disabled(&mut lab, Mode::RingOverflow, "TX ring")));
    cases.push(("1 attach-overflow", disabled(&mut lab, Mode::AttachOverflow, "TX ring")));
    // 3. more_data chains: 19 served, 20 and 21 dropped, 22 and unterminated fatal.
    cases.push(("3 chain-19", served(&mut lab, Mode::Chain19, |s| need("tx_sg_frames", s.tx_sg_frames, 1))));
    for mode in [Mode::Chain20, Mode::Chain21] {
        let check = |s: &VifStats| need("tx_dropped_bad_request", s.tx_dropped_bad_request, 1);
        cases.push((mode.name(), case(&mut lab, mode, &[], Want::Kept(check)).map(drop)));
    }
    cases.push(("3 chain-22", disabled(&mut lab, Mode::Chain22, "22+ slots")));
    cases.push(("3 chain-unterminated", disabled(&mut lab, Mode::ChainUnterminated, "more_data chain runs past")));
    // 4. offset + size > 4096 fatal; first slot < 14 bytes and sizes that do not add up dropped.
    cases.push(("4 cross-page", disabled(&mut lab, Mode::CrossPage, "crosses the page boundary")));
    let check = |s: &VifStats| need("tx_dropped_bad_request", s.tx_dropped_bad_request, 2);
    cases.push(("4 runt", case(&mut lab, Mode::Runt, &[], Want::Kept(check)).map(drop)));
    let check = |s: &VifStats| need("tx_dropped_bad_request", s.tx_dropped_bad_request, 1);
    cases.push(("4 size-mismatch", case(&mut lab, Mode::SizeMismatch, &[], Want::Kept(check)).map(drop)));
    // 5. zero-size and header-splitting slots: served intact.
    for mode in [Mode::ZeroSizeFrags, Mode::SplitHeaders] {
        cases.push((mode.name(), served(&mut lab, mode, |s| need("tx_packets", s.tx_packets, 3))));
    }
    // 6. extras.
    cases.push(("6 extra-missing", disabled(&mut lab, Mode::ExtraMissing, "missing extra info")));
    cases.push(("6 extra-type-0", disabled(&mut lab, Mode::ExtraType0, "extra info slot")));
    cases.push(("6 extra-type-max", disabled(&mut lab, Mode::ExtraTypeMax, "extra info slot")));
    cases.push(("6 extra-endless", disabled(&mut lab, Mode::ExtraEndless, "missing extra info")));
    cases.push(("6 gso-size-0", disabled(&mut lab, Mode::GsoSize0, "GSO extra with size 0")));
    cases.push(("6 gso-bad-type", disabled(&mut lab, Mode::GsoBadType, "GSO extra of unknown type")));
    cases.push(("6 gso-no-csum", gso_no_csum(&mut lab)));
    // 7. bad grants: TX ERROR; read-only RX buffers: RX ERROR, frame dropped.
    for mode in [Mode::BadTxGref, Mode::RevokedTxGref] {
        let check = |s: &VifStats| need("tx_dropped_copy_failed", s.tx_dropped_copy_failed, 1);
        cases.push((mode.name(), case(&mut lab, mode, &[], Want::Kept(check)).map(drop)));
    }
    let env = [(ENV_TO, format_mac(&mac_of(a))), (ENV_PEER, ip_of(a).to_string())];
    let check = |s: &VifStats| need("rx_dropped_copy_failed", s.rx_dropped_copy_failed, 1);
    cases.push(("7 ro-rx-grant", case(&mut lab, Mode::RoRxGrant, &env, Want::Kept(check)).map(drop)));
    // 2. requests rewritten while the backend reads them.
    let env = [(ENV_HOLD_MS, "1500".to_string())];
    let check = |s: &VifStats| if s.tx_dropped_uplink > 100 { Ok(()) } else { Err(format!("{s:?}")) };
    cases.push(("2 double-fetch", case(&mut lab, Mode::DoubleFetch, &env, Want::Kept(check)).map(drop)));
    // 10. xenstore garbage.
    cases.push(("10 multi-queue-num-queues", num_queues(&lab)));
    cases.push(("10 rate", rate(&mut lab, a)));
    eprintln!("catalogue cases took {:?}", t0.elapsed());

    let pair = lab.finish_pair(a, b);
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    cases.push(("the pair lost nothing", pair.map(drop)));
    run_cases(cases)?;
    lab.stop()
}

/// 6: a TCP GSO frame without csum_blank is served, its checksum treated as partial: the
/// sink (no GSO, no checksum offload) gets three segments with correct checksums.
fn gso_no_csum(lab: &mut Lab) -> anyhow::Result<()> {
    let (spec, vif) = lab.domain("tcp-sink")?;
    let sink = lab.spawn_guest(&spec, "tcp-sink", &[(ENV_COUNT, "3000".into())])?;
    lab.wait_state(&vif.backend, XenbusState::Connected)?;
    let check = |s: &VifStats| need("tx_gso_frames", s.tx_gso_frames, 1);
    case(lab, Mode::GsoNoCsum, &[(ENV_TO, format_mac(&mac_of(spec.domid)))], Want::Kept(check))?;
    let report = lab.hear(spec.domid, "report")?;
    lab.wait_guest(sink)?;
    ensure!(report == "3 3000 0", "the sink got (segments bytes bad) {report}");
    let stats = lab.report(spec.domid)?.context("sink")?.stats;
    need("sink sw_segmentations", stats.sw_segmentations, 1).map_err(anyhow::Error::msg)
}

/// 10: `multi-queue-num-queues` above our maximum (1), or not a number, disables the vif.
fn num_queues(lab: &Lab) -> anyhow::Result<()> {
    for (name, value, about) in [("queues-4", "4", "exceeding the maximum of 1"), ("queues-x", "x", "not a number")] {
        let (spec, vif) = lab.domain(name)?;
        lab.wait_state(&vif.backend, XenbusState::InitWait)?;
        let keys = [
            ("tx-ring-ref", "8"),
            ("rx-ring-ref", "9"),
            ("event-channel", "3"),
            ("request-rx-copy", "1"),
            ("multi-queue-num-queues", value),
        ];
        lab.xs().transaction(|tx| {
            for (k, v) in keys {
                tx.write(&format!("{}/{k}", vif.frontend), v)?;
            }
            tx.write(&format!("{}/state", vif.frontend), XenbusState::Connected.value())
        })?;
        lab.wait_state(&vif.backend, XenbusState::Closing)?;
        let error = lab.xs().read_string(&format!("{}/error", vif.backend))?;
        ensure!(error.contains("multi-queue-num-queues") && error.contains(about), "{value}: error {error:?}");
        let deadline = Instant::now() + WAIT;
        while lab.report(spec.domid)?.is_none_or(|r| r.error.as_deref() != Some(error.as_str())) {
            ensure!(Instant::now() < deadline, "{value}: the daemon does not report {error:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// 10: a `rate` that does not parse is a warning (Linux: "Traffic unlimited"), not fatal:
/// the guest connects and pings through the vif.
fn rate(lab: &mut Lab, a: DomId) -> anyhow::Result<()> {
    let (spec, vif) = lab.domain("bad-rate")?;
    lab.xs().write(&format!("{}/rate", vif.backend), "fast,please")?;
    let env = [(common::guest::ENV_TARGET, ip_of(a).to_string())];
    let pinger = lab.spawn_guest(&spec, "pinger", &env)?;
    lab.wait_guest(pinger)?;
    ensure!(lab.report(spec.domid)?.context("bad-rate")?.error.is_none(), "disabled for its rate");
    Ok(())
}

/// CPU ticks (user + system) of the daemon's thread named `name`.
fn worker_ticks(pid: u32, name: &str) -> anyhow::Result<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == name) {
            let stat = std::fs::read_to_string(dir.join("stat"))?;
            let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            return Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?);
        }
    }
    bail!("no thread {name} in the daemon")
}

/// Waits until the daemon has a worker thread for `domid`'s vif, with the hostile guest
/// connected.
fn wait_worker(lab: &Lab, domid: DomId, backend: &str) -> anyhow::Result<String> {
    lab.wait_state(backend, XenbusState::Connected)?;
    let name = format!("vif{domid}.0");
    let deadline = Instant::now() + WAIT;
    while worker_ticks(lab.daemon_pid(), &name).is_err() {
        ensure!(Instant::now() < deadline, "no worker thread {name}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(name)
}

/// 8: a guest that posts no RX buffer (or one while each frame needs two, the XSA-392
/// trick) while a sender floods it: its port queue stays within its bound and drops, its
/// worker sleeps, and the pair loses nothing.
fn rx_starvation(lab: &mut Lab, mode: Mode, sender_mode: &str) -> anyhow::Result<()> {
    const HOLD_MS: u64 = 2500;
    let (sender, sender_vif) = lab.domain(&format!("{}-tx", mode.name()))?;
    let sender_proc = lab.spawn_guest(&sender, sender_mode, &[(ENV_RATE, "2000".into())])?;
    lab.wait_state(&sender_vif.backend, XenbusState::Connected)?;
    let (spec, vif) = lab.domain(mode.name())?;
    let env = [(ENV_HOSTILE, mode.name().to_string()), (ENV_HOLD_MS, HOLD_MS.to_string())];
    let guest = lab.spawn_guest(&spec, "hostile", &env)?;
    let name = wait_worker(lab, spec.domid, &vif.backend)?;
    // Its hello teaches the switch its MAC; then the flood.
    std::thread::sleep(Duration::from_millis(200));
    lab.tell(sender.domid, "start", &format_mac(&mac_of(spec.domid)))?;
    std::thread::sleep(Duration::from_millis(700));
    let before = worker_ticks(lab.daemon_pid(), &name)?;
    std::thread::sleep(Duration::from_millis(1000));
    let spent = worker_ticks(lab.daemon_pid(), &name)? - before;
    lab.tell(sender.domid, "stop", "1")?;
    lab.tell(sender.domid, "expect", "0")?;
    if sender_mode == "peer" {
        lab.hear(sender.domid, "report")?;
    }
    lab.wait_guest(sender_proc)?;
    // The sender's last frames reach the switch shortly after its last response.
    std::thread::sleep(Duration::from_millis(100));
    let report = lab.report(spec.domid)?.context("hostile vif")?;
    let port = report.port.context("no port")?;
    let line = lab.hear(spec.domid, "hostile")?;
    eprintln!("{line}; worker ticks {spent}; port {port:?}");
    ensure!(lab.hear(spec.domid, "passed")? == "1", "{line}");
    lab.wait_guest(guest)?;
    ensure!(spent <= 5, "the starved vif's worker used {spent} ticks in 1 s");
    let sent: u64 = lab.hear(sender.domid, "sent")?.parse()?;
    ensure!(sent > 1500, "the sender sent only {sent}");
    // Everything sent that was not dropped at the full queue is still held: in the port's
    // queue (at most 1024 frames, fewer when its byte bound bites) or popped by the worker
    // and waiting for RX slots (at most one RX drain, 64).
    ensure!(port.dropped_queue_full > 0, "no drop at the starved port: {port:?}");
    let held = sent.saturating_sub(port.dropped_queue_full);
    ensure!(held <= 1024 + 64, "{held} of {sent} frames held for the starved vif");
    ensure!(report.stats.rx_packets == 0, "delivered {} frames", report.stats.rx_packets);
    Ok(())
}

/// 11: a guest notifying in a tight loop with no work: its worker must not spin a core.
fn notify_storm(lab: &mut Lab) -> anyhow::Result<()> {
    let (spec, vif) = lab.domain("notify-storm")?;
    let env = [(ENV_HOSTILE, "notify-storm".to_string()), (ENV_HOLD_MS, "3000".to_string())];
    let guest = lab.spawn_guest(&spec, "hostile", &env)?;
    let name = wait_worker(lab, spec.domid, &vif.backend)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = worker_ticks(lab.daemon_pid(), &name)?;
    std::thread::sleep(Duration::from_millis(1500));
    let spent = worker_ticks(lab.daemon_pid(), &name)? - before;
    let stats = lab.report(spec.domid)?.context("storm vif")?.stats;
    let line = lab.hear(spec.domid, "hostile")?;
    eprintln!(
        "{line}; worker ticks {spent} in 1.5 s; {} events in, {} spurious, {} mutes",
        stats.notifications_in, stats.events_spurious, stats.event_mutes
    );
    ensure!(lab.hear(spec.domid, "passed")? == "1", "{line}");
    lab.wait_guest(guest)?;
    ensure!(spent <= 15, "the storming vif's worker used {spent} ticks in 1.5 s");
    ensure!(stats.event_mutes > 0, "the storm never muted the channel");
    Ok(())
}

#[test]
fn rx_starvation_and_event_storm_are_contained() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let (a, b) = lab.start_pair()?;
    let t0 = Instant::now();
    let cases = vec![
        ("8 rx-none", rx_starvation(&mut lab, Mode::RxNone, "peer")),
        ("8 rx-one-short", rx_starvation(&mut lab, Mode::RxOneShort, "big-sender")),
        ("11 notify-storm", notify_storm(&mut lab)),
    ];
    eprintln!("starvation and storm cases took {:?}", t0.elapsed());
    let pair = lab.finish_pair(a, b);
    lab.wait_guest(0)?;
    lab.wait_guest(1)?;
    let mut cases = cases;
    cases.push(("the pair lost nothing", pair.map(drop)));
    run_cases(cases)?;
    lab.stop()
}
