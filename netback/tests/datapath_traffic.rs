//! Two `Netfront` guests (threads of this test, each joined as its own domain) exchange
//! generated traffic through their vifs and the switch; the test plays the toolstack and
//! the xenbus backend by hand.

use anyhow::{Context, ensure};
use dom0_tools::layout::{self, VifSpec};
use grant::DomId;
use grant::sim::{Credentials, DomainConfig};
use netback::switch::{Switch, SwitchConfig, SwitchPort};
use netback::vif::{Datapath, DatapathConfig, EventChannelSpec, RingParams, VifCounters, VifId, WorkerExit};
use netfront_test::traffic::{Generator, GeneratorConfig, Next, Receiver, Report};
use netfront_test::{Netfront, NetfrontConfig, Stats, XenbusState};
use simhost::SimHost;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenstore::Client;

const FRAMES: u64 = 2000;
const WAIT: Duration = Duration::from_secs(60);
const MAC_A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 1, 0x0a];
const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 1, 0x0b];

/// The toolstack's layout for vif `<domid>/0`, as `nbctl attach` writes it.
fn write_vif_layout(xs: &Client, domid: DomId, mac: [u8; 6]) -> anyhow::Result<(String, String)> {
    let paths = layout::attach(xs, &VifSpec { handle: Some(0), mac: Some(mac), ..VifSpec::new(domid) })?;
    Ok((paths.frontend, paths.backend))
}

fn wait_state(xs: &Client, dir: &str, want: XenbusState) -> anyhow::Result<()> {
    let watch = xs.watch(&format!("{dir}/state"), None)?;
    while netfront_test::xenbus::read_state(xs, dir)? != Some(want) {
        watch.recv_timeout(WAIT)?.with_context(|| format!("{dir} never reached {want}"))?;
    }
    Ok(())
}

/// The guest: connects, sends `FRAMES` frames to `peer` while receiving the peer's.
fn guest(dir: std::path::PathBuf, token: grant::sim::SimToken, peer: [u8; 6]) -> anyhow::Result<(Report, Stats)> {
    let session = simhost::join(&dir, Credentials::Guest { token })?;
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, NetfrontConfig::default())?;
    let seed = u64::from(nf.mac()[5]);
    let mut generator = Generator::new(GeneratorConfig { seed, ..GeneratorConfig::new(nf.mac(), peer, FRAMES) })?;
    let mut receiver = Receiver::new();
    receiver.expect(0, FRAMES);
    let deadline = Instant::now() + WAIT;
    let mut done = false;
    while !(done && receiver.report().total().received >= FRAMES) {
        ensure!(Instant::now() < deadline, "traffic timed out: {:?}", receiver.report());
        for _ in 0..32 {
            match generator.next(Instant::now()) {
                // Waits for a free TX buffer (the TX response event is armed meanwhile).
                Next::Frame(frame) => nf.send(&frame)?,
                Next::Done => {
                    done = true;
                    break;
                }
                Next::WaitUntil(_) => break,
            }
        }
        let mut got = false;
        while let Some(frame) = nf.recv()? {
            receiver.receive(&frame).context("received frame failed verification")?;
            got = true;
        }
        if done && !got {
            // recv returned None, so the RX event is armed: no frame can be missed.
            nf.wait(Duration::from_millis(100))?;
        }
    }
    // Our last frames must be copied out before our grants go away with `nf`.
    let tx_buffers = usize::from(NetfrontConfig::default().tx_buffers);
    while nf.tx_available()? < tx_buffers {
        ensure!(Instant::now() < deadline, "TX completions timed out");
        nf.wait(Duration::from_millis(10))?;
    }
    let stats = nf.stats();
    // Dropped without disconnect: the backend is stopped by the test.
    Ok((receiver.report(), stats))
}

/// Backend side of one vif: InitWait, wait for the frontend, connect, spawn, Connected.
fn serve_vif(
    host: &SimHost,
    dom0: &simhost::Session,
    port: SwitchPort,
    domid: DomId,
    fe: &str,
    be: &str,
) -> anyhow::Result<(netback::vif::WorkerHandle, Arc<VifCounters>)> {
    let xs = &dom0.xenstore;
    wait_state(xs, fe, XenbusState::Connected)?;
    let read = |key: &str| -> anyhow::Result<u32> { Ok(xs.read_string(&format!("{fe}/{key}"))?.trim().parse()?) };
    ensure!(read("request-rx-copy")? == 1);
    let params = RingParams {
        tx_ring_ref: read("tx-ring-ref")?,
        rx_ring_ref: read("rx-ring-ref")?,
        event_channels: EventChannelSpec::Shared(read("event-channel")?),
    };
    let id = VifId { domid, handle: 0 };
    let dp = Datapath::connect(dom0.domain.clone(), id, &params, DatapathConfig::default())?;
    let counters = Arc::new(VifCounters::default());
    let handle = dp.spawn(port, counters.clone(), Box::new(|id, e| panic!("{id}: {e}")))?;
    host.toolstack().write(&format!("{be}/state"), XenbusState::Connected.value())?;
    Ok((handle, counters))
}

#[test]
fn two_guests_exchange_traffic_byte_exact() -> anyhow::Result<()> {
    let host = SimHost::start_temp()?;
    let dom0 = simhost::join(host.dir(), Credentials::Dom0)?;
    // The queue holds every frame in flight, so nothing can be dropped for lack of room.
    let switch = Switch::new(SwitchConfig { port_queue_frames: 4096, ..SwitchConfig::default() });
    let mut guests = Vec::new();
    for (name, mac, peer) in [("a", MAC_A, MAC_B), ("b", MAC_B, MAC_A)] {
        let spec = host.create_domain(name, DomainConfig::default())?;
        let (fe, be) = write_vif_layout(host.toolstack(), spec.domid, mac)?;
        host.toolstack().write(&format!("{be}/feature-rx-copy"), "1")?;
        host.toolstack().write(&format!("{be}/state"), XenbusState::InitWait.value())?;
        let dir = host.dir().to_path_buf();
        let thread = std::thread::spawn(move || guest(dir, spec.token, peer));
        guests.push((spec.domid, fe, be, thread));
    }
    // Both ports exist before either guest can send: a frame flooded while its
    // destination has no port yet would be lost.
    let ports =
        guests.iter().map(|(domid, ..)| switch.add_port(&format!("vif{domid}.0"))).collect::<Result<Vec<_>, _>>()?;
    let mut vifs = Vec::new();
    for ((domid, fe, be, _), port) in guests.iter().zip(ports) {
        vifs.push(serve_vif(&host, &dom0, port, *domid, fe, be)?);
    }
    let mut results = Vec::new();
    for (_, _, _, thread) in guests {
        results.push(thread.join().map_err(|_| anyhow::anyhow!("guest panicked"))??);
    }
    for (report, _) in &results {
        ensure!(report.is_perfect() && report.total().received == FRAMES, "{report:?}");
    }
    for (i, (handle, counters)) in vifs.into_iter().enumerate() {
        let exit = handle.stop();
        ensure!(matches!(exit, WorkerExit::Stopped), "{exit:?}");
        let s = counters.snapshot();
        let (mine, peers) = (&results[i].1, &results[1 - i].1);
        ensure!(s.tx_packets == FRAMES && s.tx_bytes == mine.tx_bytes, "vif {i}: {s:?} vs {mine:?}");
        ensure!(s.rx_packets == FRAMES && s.rx_bytes == peers.tx_bytes, "vif {i}: {s:?} vs {peers:?}");
        ensure!(s.dropped() == 0, "vif {i}: {s:?}");
        let packets = s.tx_packets + s.rx_packets;
        ensure!(s.copy_segments == packets && s.copy_batches > 0 && s.copy_batches < packets, "vif {i}: {s:?}");
        ensure!(s.notifications_in > 0 && s.notifications_out > 0, "vif {i}: {s:?}");
    }
    Ok(())
}
