//! Every mix of frontend features through the daemon: guests with and without
//! scatter-gather, GSO (TCPv4, TCPv6) and checksum offload send TCP streams over IPv4 and
//! IPv6 to every other guest, with GSO super-frames up to 64 KiB where the sender may. Each
//! receiver checks that it only gets what it negotiated (no frame over one page without SG,
//! no GSO without GSO, no blank checksum without checksum offload, every other checksum
//! valid) and that every stream arrives byte-exact, whatever netback had to do in between
//! (segmenting, filling checksums).
//!
//! Frames are built and checked with etherparse, independently of netback's own code.

mod common;

use anyhow::{Context, bail, ensure};
use common::Lab;
use common::guest::wait_key;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use netback::frame::GsoKind;
use netback::xenbus::XenbusState;
use netfront_test::{Features, Netfront, NetfrontConfig, RxMeta, TxMeta};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ENV_FEATURES: &str = "E2E_FEATURES";
/// Bytes of each (sender, receiver, IP version) stream.
const STREAM: usize = 120_000;
/// TCP payload per segment when the sender segments itself.
const MSS: [usize; 2] = [1448, 1428];
/// Message sizes the senders cycle through; the large ones become GSO super-frames.
const MESSAGES: [usize; 6] = [100, 1448, 3000, 20_000, 65_000, 7];
const WAIT: Duration = Duration::from_secs(60);

/// The feature sets of the guests: every on/off combination that a frontend can negotiate
/// (GSO needs SG; Linux netfront never offers GSO without checksum offload).
const SETS: [&str; 8] = [
    "",
    "csum",
    "sg",
    "sg,csum",
    "sg,csum,gso4",
    "sg,csum,csum6,gso6",
    "sg,csum,csum6,gso4,gso6",
    "sg,csum,csum6,gso4,gso6",
];

child_roles!(run_guest);

#[test]
fn every_feature_mix_delivers_byte_exact_streams() -> anyhow::Result<()> {
    if netback_e2e::is_child() {
        return Ok(());
    }
    let mut lab = Lab::start()?;
    let mut guests = Vec::new();
    for (i, set) in SETS.iter().enumerate() {
        let (spec, vif) = lab.domain(&format!("matrix{i}"))?;
        let index = lab.spawn_guest(&spec, "matrix", &[(ENV_FEATURES, set.to_string())])?;
        guests.push((spec.domid, vif, index));
    }
    for (_, vif, _) in &guests {
        lab.wait_state(&vif.backend, XenbusState::Connected)?;
    }
    let all: Vec<String> = guests.iter().map(|(d, _, _)| d.to_string()).collect();
    for (domid, _, _) in &guests {
        lab.tell(*domid, "peers", &all.join(","))?;
    }
    // One sender at a time, so no receiver's bounded queue overflows.
    for (domid, _, _) in &guests {
        lab.tell(*domid, "send", "1")?;
        lab.hear(*domid, "sent")?;
    }
    for (domid, _, _) in &guests {
        lab.tell(*domid, "finish", "1")?;
    }
    let mut failures = Vec::new();
    for ((domid, _, index), set) in guests.iter().zip(SETS) {
        let report = lab.hear(*domid, "report")?;
        if report != "ok" {
            failures.push(format!("guest {domid} [{set}]: {report}"));
        }
        lab.wait_guest(*index)?;
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let stats = netback::control::list(&lab.control())?;
    let segmented: u64 = stats.iter().map(|v| v.stats.sw_segmentations).sum();
    let filled: u64 = stats.iter().map(|v| v.stats.sw_checksums).sum();
    ensure!(segmented > 0 && filled > 0, "netback never segmented ({segmented}) or filled checksums ({filled})");
    lab.stop()
}

// ---- the guest ----

fn features(set: &str) -> Features {
    let has = |f: &str| set.split(',').any(|x| x == f);
    Features {
        sg: has("sg"),
        gso_tcpv4: has("gso4"),
        gso_tcpv6: has("gso6"),
        csum_offload: has("csum"),
        ipv6_csum_offload: has("csum6"),
    }
}

fn ip4(domid: u16) -> [u8; 4] {
    let [hi, lo] = domid.to_be_bytes();
    [10, 0, hi, lo]
}

fn ip6(domid: u16) -> [u8; 16] {
    let [hi, lo] = domid.to_be_bytes();
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo]
}

/// The bytes of the stream from `src` to `dst` over IP version index `v` (0: v4, 1: v6).
fn stream(src: u16, dst: u16, v: usize) -> Vec<u8> {
    let mut state = (u64::from(src) << 32) ^ (u64::from(dst) << 8) ^ v as u64 ^ 0x5eed;
    (0..STREAM)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn run_guest() -> anyhow::Result<()> {
    let session = simhost::join_from_env()?;
    let set = std::env::var(ENV_FEATURES).context(ENV_FEATURES)?;
    let config = NetfrontConfig { features: features(&set), ..NetfrontConfig::default() };
    let mut nf = Netfront::connect(&session.domain, session.xenstore.clone(), 0, config)?;
    let me = session.domid();
    let peers: Vec<u16> = wait_key(&session, "peers")?.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let mut rx = Receiver::new(me, nf.features());
    let mut sent = false;
    let deadline = Instant::now() + WAIT * 3;
    loop {
        ensure!(Instant::now() < deadline, "the test never finished");
        while let Some((frame, meta)) = nf.recv_with()? {
            rx.take(&frame, meta);
        }
        if !sent && session.xenstore.exists("data/send")? {
            for &peer in peers.iter().filter(|&&p| p != me) {
                for v in 0..2 {
                    send_stream(&mut nf, &mut rx, me, peer, v)?;
                }
            }
            session.xenstore.write("data/sent", "1")?;
            sent = true;
        }
        if session.xenstore.exists("data/finish")? {
            break;
        }
        nf.wait(Duration::from_millis(5))?;
    }
    // Late frames: everything was sent before `finish`, so a short drain collects them.
    let drain_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_until {
        match nf.recv_with()? {
            Some((frame, meta)) => rx.take(&frame, meta),
            None => {
                nf.wait(Duration::from_millis(10))?;
            }
        }
    }
    let verdict = rx.verdict(&peers);
    session.xenstore.write("data/report", verdict.as_deref().unwrap_or("ok"))?;
    nf.disconnect()?;
    Ok(())
}

/// Sends the stream to `peer` over version `v` as this guest's features allow.
fn send_stream<C: grant::EventChannel>(
    nf: &mut Netfront<C>,
    rx: &mut Receiver,
    me: u16,
    peer: u16,
    v: usize,
) -> anyhow::Result<()> {
    let f = nf.features();
    let data = stream(me, peer, v);
    let (gso, blank) = match v {
        0 => (f.sg && f.gso_tcpv4, f.csum_offload),
        _ => (f.sg && f.gso_tcpv6, f.ipv6_csum_offload),
    };
    let kind = if v == 0 { GsoKind::TcpV4 } else { GsoKind::TcpV6 };
    let mss = MSS[v];
    let (mut offset, mut m) = (0, 0);
    while offset < data.len() {
        let len = MESSAGES[m % MESSAGES.len()].min(data.len() - offset);
        m += 1;
        let pieces: Vec<(usize, usize)> = if gso && len > mss {
            vec![(offset, len)]
        } else {
            (offset..offset + len).step_by(mss).map(|at| (at, mss.min(offset + len - at))).collect()
        };
        for (at, n) in pieces {
            let super_frame = n > mss;
            let frame = tcp_frame(me, peer, v, at as u32, &data[at..at + n], blank || super_frame)?;
            let meta = TxMeta {
                csum_blank: blank || super_frame,
                data_validated: false,
                gso: super_frame.then_some((kind, mss as u16)),
            };
            nf.send_with(&frame, meta)?;
            while let Some((frame, meta)) = nf.recv_with()? {
                rx.take(&frame, meta);
            }
        }
        offset += len;
    }
    Ok(())
}

/// An Ethernet + IP + TCP frame with a correct checksum, or with the checksum field
/// zeroed when `blank` (a partial checksum: the receiver or netback fills it).
fn tcp_frame(src: u16, dst: u16, v: usize, seq: u32, payload: &[u8], blank: bool) -> anyhow::Result<Vec<u8>> {
    let (src_mac, dst_mac) = (common::mac_of(src), common::mac_of(dst));
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut frame = Vec::new();
    let ip_len = if v == 0 {
        eth.ipv4(ip4(src), ip4(dst), 64).tcp(4000, 4000, seq, 65535).write(&mut frame, payload)?;
        20
    } else {
        eth.ipv6(ip6(src), ip6(dst), 64).tcp(6000, 6000, seq, 65535).write(&mut frame, payload)?;
        40
    };
    if blank {
        let at = 14 + ip_len + 16;
        frame[at..at + 2].copy_from_slice(&[0, 0]);
    }
    Ok(frame)
}

/// What a guest received, per (sender, version), and every rule a frame broke.
struct Receiver {
    me: u16,
    features: Features,
    streams: BTreeMap<(u16, usize), Vec<Option<u8>>>,
    violations: Vec<String>,
}

impl Receiver {
    fn new(me: u16, features: Features) -> Self {
        Self { me, features, streams: BTreeMap::new(), violations: Vec::new() }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 10 {
            self.violations.push(what);
        }
    }

    fn take(&mut self, frame: &[u8], meta: RxMeta) {
        if let Err(e) = self.check(frame, meta) {
            self.violation(format!("{e:#}"));
        }
    }

    fn check(&mut self, frame: &[u8], meta: RxMeta) -> anyhow::Result<()> {
        let f = self.features;
        // Until the switch has learned our MAC, frames for other guests are flooded to us too.
        if frame.len() < 6 || frame[..6] != common::mac_of(self.me) {
            return Ok(());
        }
        let Ok(packet) = SlicedPacket::from_ethernet(frame) else { return Ok(()) };
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else { return Ok(()) };
        let (v, src, checksum) = match &packet.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                (
                    0,
                    u16::from_be_bytes([h.source()[2], h.source()[3]]),
                    tcp.calc_checksum_ipv4(h.source(), h.destination())?,
                )
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                (
                    1,
                    u16::from_be_bytes([h.source()[14], h.source()[15]]),
                    tcp.calc_checksum_ipv6(h.source(), h.destination())?,
                )
            }
            _ => return Ok(()),
        };
        if frame.len() > grant::PAGE_SIZE && !f.sg {
            bail!("a {}-byte frame from {src} without SG", frame.len());
        }
        if let Some((kind, _)) = meta.gso {
            let allowed = f.sg && if kind == GsoKind::TcpV4 { f.gso_tcpv4 } else { f.gso_tcpv6 };
            ensure!(allowed, "a {kind:?} GSO frame from {src} without that feature");
        } else if frame.len() > 14 + 60 + MSS[v] + 40 {
            bail!("an unsegmented {}-byte frame from {src} without a GSO extra", frame.len());
        }
        if meta.csum_blank {
            let allowed = if v == 0 { f.csum_offload } else { f.ipv6_csum_offload };
            ensure!(allowed, "a blank checksum from {src} (v{}) without checksum offload", 4 + 2 * v);
        } else {
            ensure!(tcp.checksum() == checksum, "bad TCP checksum from {src} (v{})", 4 + 2 * v);
        }
        let seq = tcp.sequence_number() as usize;
        let payload = tcp.payload();
        let buf = self.streams.entry((src, v)).or_insert_with(|| vec![None; STREAM]);
        ensure!(seq + payload.len() <= STREAM, "segment {seq}+{} beyond the stream from {src}", payload.len());
        for (i, &b) in payload.iter().enumerate() {
            ensure!(buf[seq + i].is_none(), "byte {} from {src} (v{}) arrived twice", seq + i, 4 + 2 * v);
            buf[seq + i] = Some(b);
        }
        Ok(())
    }

    /// `None` if every stream from every peer arrived exactly and no rule was broken.
    fn verdict(&mut self, peers: &[u16]) -> Option<String> {
        let me = self.me;
        for &src in peers.iter().filter(|&&p| p != me) {
            for v in 0..2 {
                let want = stream(src, self.me, v);
                let got = self.streams.get(&(src, v));
                let missing = got.map_or(STREAM, |g| g.iter().filter(|b| b.is_none()).count());
                let wrong = got.map_or(0, |g| g.iter().zip(&want).filter(|(g, w)| g.is_some_and(|g| g != **w)).count());
                if missing + wrong > 0 {
                    self.violation(format!(
                        "stream from {src} (v{}): {missing} bytes missing, {wrong} wrong",
                        4 + 2 * v
                    ));
                }
            }
        }
        (!self.violations.is_empty()).then(|| self.violations.join("; "))
    }
}
