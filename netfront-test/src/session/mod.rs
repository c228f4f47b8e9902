//! A guest's part of a peer-to-peer traffic run: announce our MAC, wait for the go, send
//! generated frames to one peer for a fixed time while receiving and verifying whatever
//! arrives, then keep receiving a little longer and report.
//!
//! The report ([`PeerReport`]) is serialisable, so a guest process can hand it to the
//! host as one JSON line on stdout; [`PeerReport::end_to_end`] matches a receiver's counts
//! with its sender's to get the end-to-end loss.

mod report;
mod tcp_stream;

pub use report::{DeviceCounts, EndToEnd, FlowCounts, PeerReport};
pub use tcp_stream::{MSS, MTU_FRAME, TcpCounts, TcpMode, TcpReceiver, TcpSender};

use crate::device::tx_buffers_needed;
use crate::mac::{BROADCAST, Mac};
use crate::stack::arp_request;
use crate::traffic::{FrameSize, Generator, GeneratorConfig, Next, Receiver};
use crate::{DeviceError, Netfront, TxMeta};
use grant::EventChannel;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xenstore::{Client, XsError};

/// Longest single wait of the traffic loop: bounds how late a rate-limited frame or the
/// end of the lingering phase can be noticed.
const MAX_NAP: Duration = Duration::from_millis(10);

/// A xenstore node whose appearance starts the timed phase (so that every guest of a run
/// starts together).
#[derive(Debug, Clone)]
pub struct StartGate {
    /// Our xenstore connection.
    pub xs: Client,
    /// The node to wait for (absolute path).
    pub path: String,
    /// How long to wait for it.
    pub timeout: Duration,
}

/// What to send, to whom, and for how long.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Flow id of our frames (the sim uses the sender's domid).
    pub flow: u32,
    /// The peer's MAC: destination of every frame.
    pub peer: Mac,
    /// Our IPv4 address, announced by the gratuitous ARP.
    pub ip: Ipv4Addr,
    /// Frame sizes, 36 ([`HEADER_LEN`](crate::traffic::HEADER_LEN)) up to
    /// [`Netfront::max_frame_len`]: 4096 without scatter-gather, 65535 with it in effect
    /// (ask for [`Features::sg`](crate::Features::sg) in the `NetfrontConfig`; the backend
    /// must advertise `feature-sg`). E.g. `FrameSize::Fixed(9000)` or `Fixed(65000)`.
    pub size: FrameSize,
    /// Frames per second; 0 = as fast as the backend takes them.
    pub rate: u64,
    /// Length of the timed (sending) phase.
    pub duration: Duration,
    /// How long to keep receiving after we stop sending, for frames still in flight.
    pub linger: Duration,
    /// Wait for this node before the timed phase; `None` starts at once.
    pub start: Option<StartGate>,
    /// Send one TCP stream instead of test frames (see [`TcpMode`]); each generated frame
    /// of the configured size becomes TCP payload of `size − 54` bytes.
    pub tcp: Option<TcpMode>,
}

/// Failures of a traffic run, named by the phase.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The frame sizes cannot hold a test frame, or exceed what the device sends.
    #[error("invalid traffic configuration: {0}")]
    Config(String),
    /// Sending the gratuitous ARP.
    #[error("announcing our MAC with a gratuitous ARP")]
    Announce(#[source] DeviceError),
    /// Watching or reading the start node.
    #[error("waiting for the start node {path}")]
    StartGate {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: XsError,
    },
    /// The start node did not appear in time.
    #[error("the start node {path} did not appear within {timeout:?}")]
    StartTimeout {
        /// The node.
        path: String,
        /// The limit.
        timeout: Duration,
    },
    /// Sending, receiving or waiting on the device during the run.
    #[error("moving traffic")]
    Traffic(#[source] DeviceError),
}

/// Sends a gratuitous ARP (a broadcast ARP request for our own address), so that a
/// learning switch knows our MAC before any frame is addressed to it.
pub fn announce<C: EventChannel>(nf: &mut Netfront<C>, ip: Ipv4Addr) -> Result<(), DeviceError> {
    let frame = arp_request(nf.mac(), ip, ip);
    debug_assert_eq!(frame[..6], BROADCAST);
    nf.send(&frame)
}

/// Blocks until `gate.path` exists.
pub fn wait_for_gate(gate: &StartGate) -> Result<(), SessionError> {
    let err = |source| SessionError::StartGate { path: gate.path.clone(), source };
    let watch = gate.xs.watch(&gate.path, None).map_err(err)?;
    let deadline = Instant::now() + gate.timeout;
    while !gate.xs.exists(&gate.path).map_err(err)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SessionError::StartTimeout { path: gate.path.clone(), timeout: gate.timeout });
        }
        watch.recv_timeout(left).map_err(err)?;
    }
    Ok(())
}

/// Runs one guest's part of a peer-to-peer run on a connected `nf`: gratuitous ARP, the
/// start gate, `duration` of sending to `peer` (receiving and verifying all the while),
/// then `linger` of receiving only. The device stays connected; disconnect it afterwards.
pub fn run_peer_traffic<C: EventChannel>(nf: &mut Netfront<C>, cfg: &PeerConfig) -> Result<PeerReport, SessionError> {
    // In TCP mode the generator only paces (and draws uniform sizes); a fixed size needs
    // no full-size test frame to be built and then thrown away.
    let generator_size = match (cfg.tcp, cfg.size) {
        (Some(_), FrameSize::Fixed(_)) => FrameSize::Fixed(60),
        (_, size) => size,
    };
    let generator_cfg = GeneratorConfig {
        flow: cfg.flow,
        size: generator_size,
        rate: cfg.rate,
        count: None,
        duration: Some(cfg.duration),
        seed: u64::from(cfg.flow) + 1,
        ..GeneratorConfig::new(nf.mac(), cfg.peer, 0)
    };
    let mut generator = Generator::new(generator_cfg).map_err(|e| SessionError::Config(e.to_string()))?;
    let largest = match cfg.size {
        FrameSize::Fixed(n) => n,
        FrameSize::Uniform { max, .. } => max,
    };
    if largest > nf.max_frame_len() {
        let sg = if nf.features().sg { "on" } else { "off (needs feature-sg on both sides)" };
        return Err(SessionError::Config(format!(
            "frames of up to {largest} bytes, the device sends at most {} (scatter-gather {sg})",
            nf.max_frame_len()
        )));
    }
    let mut tcp = match cfg.tcp {
        Some(mode) => {
            let f = nf.features();
            if mode.gso && !f.gso_tcpv4 {
                return Err(SessionError::Config("TCP with GSO, but feature-gso-tcpv4 is not in effect".into()));
            }
            if largest <= crate::tcp::V4_HEADERS {
                return Err(SessionError::Config(format!("TCP frames of {largest} bytes carry no payload")));
            }
            Some((TcpSender::new(nf.mac(), cfg.peer, mode.gso, f.csum_offload), TcpReceiver::new()))
        }
        None => None,
    };
    announce(nf, cfg.ip).map_err(SessionError::Announce)?;
    if let Some(gate) = &cfg.start {
        wait_for_gate(gate)?;
    }
    let mut receiver = Receiver::new();
    let traffic = SessionError::Traffic;
    let start = Instant::now();
    let (mut sent_frames, mut sent_bytes) = (0u64, 0u64);
    // Frames ready to go: one test frame, or the TCP frames of one generated frame.
    let mut pending: VecDeque<(Vec<u8>, TxMeta)> = VecDeque::new();
    // Set when the generator is done: (elapsed sending time, end of the lingering phase).
    let mut finished: Option<(Duration, Instant)> = None;
    loop {
        let mut wake = Instant::now() + MAX_NAP;
        while finished.is_none() || !pending.is_empty() {
            if pending.is_empty() {
                if finished.is_some() {
                    break;
                }
                match generator.next(Instant::now()) {
                    Next::Frame(frame) => match &mut tcp {
                        Some((sender, _)) => {
                            let size = if let FrameSize::Fixed(n) = cfg.size { n } else { frame.len() };
                            pending.extend(sender.frames(size));
                        }
                        None => pending.push_back((frame, TxMeta::default())),
                    },
                    Next::WaitUntil(due) => {
                        wake = wake.min(due);
                        break;
                    }
                    Next::Done => {
                        finished = Some((start.elapsed(), Instant::now() + cfg.linger));
                        break;
                    }
                }
            }
            let need = pending.front().map_or(1, |(f, m)| tx_buffers_needed(f.len()) + usize::from(m.gso.is_some()));
            if nf.tx_available().map_err(traffic)? < need {
                break;
            }
            let (frame, meta) = pending.pop_front().expect("set above");
            nf.send_with(&frame, meta).map_err(traffic)?;
            sent_frames += 1;
            sent_bytes += frame.len() as u64;
        }
        let mut received = 0;
        while let Some((frame, meta)) = nf.recv_with().map_err(traffic)? {
            received += 1;
            if let Some((_, tcp_receiver)) = &mut tcp
                && tcp_receiver.receive(&frame, &meta)
            {
                continue;
            }
            // Verification failures are counted by the receiver (corrupt / foreign).
            let _ = receiver.receive(&frame);
        }
        if let Some((_, linger_end)) = finished
            && pending.is_empty()
        {
            if Instant::now() >= linger_end {
                break;
            }
            wake = wake.min(linger_end);
        }
        if received > 0 {
            continue;
        }
        if let Some((frame, meta)) = pending.pop_front() {
            // Nothing to receive and too few free TX buffers: block until the backend frees them.
            nf.send_with(&frame, meta).map_err(traffic)?;
            sent_frames += 1;
            sent_bytes += frame.len() as u64;
        } else {
            nf.wait(wake.saturating_duration_since(Instant::now())).map_err(traffic)?;
        }
    }
    let elapsed = finished.map_or_else(|| start.elapsed(), |(sending, _)| sending);
    let _ = nf.reap_tx();
    let sent = if tcp.is_some() { sent_frames } else { generator.generated() };
    let mut report = PeerReport::new(cfg.flow, nf.mac(), sent, sent_bytes, elapsed, &receiver.report(), nf.stats());
    report.tcp =
        tcp.map(|(sender, tcp_receiver)| TcpCounts { sent_bytes: sender.payload_bytes, ..tcp_receiver.counts() });
    Ok(report)
}
