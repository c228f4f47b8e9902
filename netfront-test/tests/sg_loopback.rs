//! Scatter-gather, GSO and checksum offload of the netfront library against a minimal
//! loop-back backend in the test process (`common::sg_backend`): frames of 60..65535
//! bytes come back byte-exact, GSO extras and checksum flags come back in `RxMeta`; with
//! a backend that lacks `feature-sg` the features fall back and large frames are refused.

mod common;

use anyhow::{Context, ensure};
use common::{GUEST_MAC, MODE, WAIT, sg_backend};
use netback_e2e::is_child;
use netfront_test::session::{PeerConfig, SessionError, run_peer_traffic};
use netfront_test::tcp::{build_tcp_frame, build_tcp_frame_blank_checksum, parse_tcp_frame};
use netfront_test::traffic::{FrameSize, HEADER_LEN, build_frame};
use netfront_test::{DeviceError, Features, GsoKind, Netfront, NetfrontConfig, RxMeta, TxMeta};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SIZES: [usize; 17] =
    [60, 61, 1514, 4095, 4096, 4097, 8191, 8192, 8193, 9000, 12289, 16384, 32768, 65000, 65534, 65535, 60];
const RANDOM_FRAMES: u64 = 120;

type Guest = Netfront<grant::sim::SimEventChannel>;

#[test]
#[ignore = "child process of the tests in this file"]
fn child_guest() {
    if is_child() {
        let mode = std::env::var(MODE).expect("NF_MODE");
        run_guest(&mode).expect("guest");
    }
}

fn run_guest(mode: &str) -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let config = NetfrontConfig { features: Features::ALL, ..NetfrontConfig::default() };
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, config)?;
    match mode {
        "sg" => guest_sg(&mut nf)?,
        "nosg" => guest_no_sg(&mut nf)?,
        other => anyhow::bail!("unknown mode {other}"),
    }
    let stats = nf.disconnect()?;
    eprintln!("guest: {stats:?}");
    ensure!(
        stats.tx_errors + stats.tx_dropped + stats.rx_errors + stats.protocol_errors + stats.rx_dropped_chains == 0,
        "{stats:?}"
    );
    ensure!(stats.tx_frames == stats.rx_frames && stats.tx_bytes == stats.rx_bytes, "{stats:?}");
    ensure!(mode != "sg" || stats.tx_frames > 200, "{stats:?}");
    Ok(())
}

/// Sends every frame with its meta and checks each comes back byte-exact with the same
/// meta, in order. Keeps receiving while it waits for TX buffers.
fn round_trip(nf: &mut Guest, frames: Vec<(Vec<u8>, TxMeta)>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut to_send: VecDeque<_> = frames.into();
    let mut in_flight = VecDeque::new();
    while !(to_send.is_empty() && in_flight.is_empty()) {
        ensure!(Instant::now() < deadline, "round trip timed out with {} in flight", in_flight.len());
        while let Some((frame, _)) = to_send.front() {
            if nf.tx_available()? < netfront_test::device::tx_buffers_needed(frame.len()) {
                break;
            }
            let (frame, meta) = to_send.pop_front().expect("front exists");
            nf.send_with(&frame, meta)?;
            in_flight.push_back((frame, meta));
        }
        let mut got = false;
        while let Some((frame, meta)) = nf.recv_with()? {
            let (sent, sent_meta) = in_flight.pop_front().context("a frame nobody sent")?;
            ensure!(frame.len() == sent.len(), "length {} came back as {}", sent.len(), frame.len());
            ensure!(frame == sent, "frame of {} bytes corrupted", sent.len());
            let want = RxMeta {
                csum_blank: sent_meta.csum_blank,
                data_validated: sent_meta.data_validated,
                gso: sent_meta.gso,
            };
            ensure!(meta == want, "meta {meta:?}, sent {sent_meta:?}");
            got = true;
        }
        if !got {
            nf.wait(Duration::from_millis(50))?;
        }
    }
    Ok(())
}

fn guest_sg(nf: &mut Guest) -> anyhow::Result<()> {
    ensure!(nf.features() == Features::ALL, "features in effect {:?}", nf.features());
    ensure!(nf.max_frame_len() == 65535);
    // Fixed sizes around the page boundaries, then random sizes up to 65535.
    let mut frames: Vec<_> =
        SIZES.iter().enumerate().map(|(i, &len)| build_frame(GUEST_MAC, GUEST_MAC, 1, i as u64, len)).collect();
    let mut rng = 0x5eed_u64;
    for seq in 0..RANDOM_FRAMES {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 60 + (rng >> 33) as usize % (65535 - 60 + 1);
        frames.push(build_frame(GUEST_MAC, GUEST_MAC, 2, seq, len));
    }
    round_trip(nf, frames.into_iter().map(|f| (f, TxMeta::default())).collect())?;

    // Real TCP frames with offload metadata: GSO super-frames with blank checksums,
    // validated full checksums, both IP versions.
    let payload: Vec<u8> = (0..60000u32).map(|i| (i % 253) as u8).collect();
    let mut tcp = Vec::new();
    for (v6, kind) in [(false, GsoKind::TcpV4), (true, GsoKind::TcpV6)] {
        let gso = TxMeta { csum_blank: true, data_validated: true, gso: Some((kind, 1448)) };
        tcp.push((build_tcp_frame_blank_checksum(GUEST_MAC, GUEST_MAC, v6, 1000, &payload), gso));
        let blank = TxMeta { csum_blank: true, ..TxMeta::default() };
        tcp.push((build_tcp_frame_blank_checksum(GUEST_MAC, GUEST_MAC, v6, 2000, &payload[..1400]), blank));
        let valid = TxMeta { data_validated: true, ..TxMeta::default() };
        tcp.push((build_tcp_frame(GUEST_MAC, GUEST_MAC, v6, 3000, &payload[..9000]), valid));
    }
    for (frame, meta) in &tcp {
        let seg = parse_tcp_frame(frame).context("not TCP")?;
        ensure!(seg.checksum_ok != meta.csum_blank && seg.checksum_partial == meta.csum_blank, "{meta:?}");
    }
    round_trip(nf, tcp)?;

    // A peer session with frames up to 64 KiB, peer = ourselves through the loop.
    let peer = PeerConfig {
        flow: 9,
        peer: GUEST_MAC,
        ip: Ipv4Addr::new(10, 0, 0, 2),
        size: FrameSize::Uniform { min: 60, max: 65535 },
        rate: 0,
        duration: Duration::from_millis(300),
        linger: Duration::from_millis(300),
        start: None,
        tcp: None,
    };
    let report = run_peer_traffic(nf, &peer)?;
    let flow = report.received.get(&9).context("no frame of our flow came back")?;
    ensure!(report.sent_frames > 0 && flow.received == report.sent_frames, "{report:?}");
    let frame_bytes = flow.bytes + flow.received * HEADER_LEN as u64; // `bytes` counts payload
    ensure!(frame_bytes == report.sent_bytes && flow.lost + report.corrupt == 0, "{report:?}");

    let zero_mss = nf.send_with(&[0u8; 100], TxMeta { gso: Some((GsoKind::TcpV4, 0)), ..TxMeta::default() });
    ensure!(matches!(zero_mss, Err(DeviceError::Gso { mss: 0, .. })), "{zero_mss:?}");
    let too_big = nf.send(&vec![0u8; 65536]);
    ensure!(matches!(too_big, Err(DeviceError::FrameSize { len: 65536, max: 65535 })), "{too_big:?}");
    Ok(())
}

fn guest_no_sg(nf: &mut Guest) -> anyhow::Result<()> {
    let want = Features { csum_offload: true, ..Features::default() };
    ensure!(nf.features() == want, "features in effect {:?}", nf.features());
    let too_big = nf.send_with(&vec![1u8; 4097], TxMeta::default());
    ensure!(matches!(too_big, Err(DeviceError::FrameSize { len: 4097, max: 4096 })), "{too_big:?}");
    let message = too_big.unwrap_err().to_string();
    ensure!(message.contains("4097") && message.contains("feature-sg"), "unclear error: {message}");
    let peer = PeerConfig {
        flow: 1,
        peer: GUEST_MAC,
        ip: Ipv4Addr::new(10, 0, 0, 2),
        size: FrameSize::Fixed(9000),
        rate: 0,
        duration: Duration::from_millis(10),
        linger: Duration::ZERO,
        start: None,
        tcp: None,
    };
    let refused = run_peer_traffic(nf, &peer);
    ensure!(matches!(&refused, Err(SessionError::Config(m)) if m.contains("9000")), "{refused:?}");
    let gso = nf.send_with(&[0u8; 100], TxMeta { gso: Some((GsoKind::TcpV4, 1448)), ..TxMeta::default() });
    ensure!(matches!(gso, Err(DeviceError::Gso { kind: GsoKind::TcpV4, v4: false, .. })), "{gso:?}");
    let frames =
        [60, 4096, 1514].iter().map(|&len| (build_frame(GUEST_MAC, GUEST_MAC, 3, len as u64, len), TxMeta::default()));
    let csum = (
        build_tcp_frame_blank_checksum(GUEST_MAC, GUEST_MAC, false, 1, &[7; 1000]),
        TxMeta { csum_blank: true, ..TxMeta::default() },
    );
    round_trip(nf, frames.chain([csum]).collect())
}

#[test]
fn sg_gso_and_csum_round_trip_through_a_loop_back_backend() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    let features = ["feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-ipv6-csum-offload"];
    common::run(
        "child_guest",
        "sg",
        &features,
        |b| {
            for (key, want) in [
                ("feature-sg", "1"),
                ("feature-gso-tcpv4", "1"),
                ("feature-gso-tcpv6", "1"),
                ("feature-no-csum-offload", "0"),
                ("feature-ipv6-csum-offload", "1"),
            ] {
                ensure!(b.key(key) == Some(want), "frontend {key} = {:?}", b.key(key));
            }
            Ok(())
        },
        sg_backend::loop_back,
    )
}

#[test]
fn without_backend_sg_large_frames_and_gso_are_refused() -> anyhow::Result<()> {
    if is_child() {
        return Ok(());
    }
    common::run(
        "child_guest",
        "nosg",
        &[],
        |b| {
            for (key, want) in [
                ("feature-sg", "0"),
                ("feature-gso-tcpv4", "0"),
                ("feature-gso-tcpv6", "0"),
                ("feature-no-csum-offload", "0"),
                ("feature-ipv6-csum-offload", "0"),
            ] {
                ensure!(b.key(key) == Some(want), "frontend {key} = {:?}", b.key(key));
            }
            Ok(())
        },
        sg_backend::loop_back,
    )
}
