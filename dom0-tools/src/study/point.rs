//! One study point: knobs set through the control socket, fresh guests attached and run,
//! the daemon's counters sampled after the warm-up and after the measured interval.

use super::baseline::RingResult as Baseline;
use crate::commands::CONTROL_SOCKET;
use crate::sim::procs::Procs;
use crate::sim::{SimArgs, guest_mac, parse_report, roles, wait_connected};
use anyhow::Context;
use dom0_tools::layout::{self, VifSpec};
use grant::DomId;
use grant::sim::DomainConfig;
use netback::control::{self, VifReport};
use netback::vif::{KnobValues, PartialKnobs, VifStats};
use netfront_test::traffic::FrameSize;
use simhost::SimHost;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Extra seconds of sending after the measured interval, so it ends inside the traffic.
const TAIL: f64 = 0.2;
const LIMIT: Duration = Duration::from_secs(30);

/// One grid point.
#[derive(Debug, Clone)]
pub struct Point {
    pub batch: u32,
    pub size: usize,
    pub guests: u16,
    pub knobs: PartialKnobs,
    /// `None`: test frames (the original study); `Some(gso)`: one TCP stream per guest.
    pub tcp: Option<bool>,
}

/// One measured point: a CSV row.
#[derive(Debug, Clone)]
pub struct Row {
    pub knobs: KnobValues,
    pub batch: u32,
    pub size: usize,
    pub guests: u16,
    pub tcp: Option<bool>,
    pub frames_per_sec: f64,
    pub gbit_per_sec: f64,
    pub notifications_per_packet: f64,
    pub mean_batch: f64,
    pub drops: u64,
    pub loss: f64,
    pub baseline_frames_per_sec: f64,
    pub ratio_to_baseline: f64,
    /// TCP payload Gbit/s in the measured window (0 without TCP).
    pub payload_gbit_per_sec: f64,
    /// The baseline's TCP payload Gbit/s (0 without TCP).
    pub baseline_payload_gbit_per_sec: f64,
    /// TCP payload bytes received in order, over the whole run, all guests.
    pub payload_bytes: u64,
    /// Corrupt TCP frames, all guests.
    pub corrupt: u64,
}

impl Row {
    pub const HEADER: &str = "batch,tx_drain_max,rx_drain_max,copy_batch,req_event_ahead,notify_every,notify_usecs,\
busy_poll_usecs,mtu,frame_size,guests,frames_per_sec,gbit_per_sec,notifications_per_packet,mean_batch,drops,loss,\
baseline_frames_per_sec,ratio_to_baseline,tcp,gso,payload_gbit_per_sec,baseline_payload_gbit_per_sec,\
payload_bytes,corrupt";

    pub fn csv(&self) -> String {
        let k = &self.knobs;
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.4},{:.4},{:.2},{},{:.6},{:.1},{:.4},{},{},{:.4},{:.4},{},{}",
            self.batch,
            k.tx_drain_max,
            k.rx_drain_max,
            k.copy_batch,
            k.req_event_ahead,
            k.notify_every,
            k.notify_usecs,
            k.busy_poll_usecs,
            k.mtu,
            self.size,
            self.guests,
            self.frames_per_sec,
            self.gbit_per_sec,
            self.notifications_per_packet,
            self.mean_batch,
            self.drops,
            self.loss,
            self.baseline_frames_per_sec,
            self.ratio_to_baseline,
            u8::from(self.tcp.is_some()),
            u8::from(self.tcp == Some(true)),
            self.payload_gbit_per_sec,
            self.baseline_payload_gbit_per_sec,
            self.payload_bytes,
            self.corrupt
        )
    }
}

/// The host and the daemon, for the whole study.
#[derive(Debug)]
pub struct Bench {
    host: SimHost,
    procs: Procs,
    sock: PathBuf,
    round: u32,
}

impl Bench {
    pub fn start() -> anyhow::Result<Bench> {
        let host = SimHost::start_temp().context("starting the simulated Xen host")?;
        let mut procs = Procs::default();
        procs.spawn_daemon(host.dir())?;
        let sock = host.dir().join(CONTROL_SOCKET);
        let deadline = Instant::now() + LIMIT;
        while control::list(&sock).is_err() {
            procs.check_alive()?;
            anyhow::ensure!(Instant::now() < deadline, "the daemon's control socket never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Bench { host, procs, sock, round: 0 })
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = self.procs.stop_daemon(LIMIT)?;
        anyhow::ensure!(status.is_some_and(|s| s.success()), "the daemon did not exit cleanly");
        Ok(())
    }

    fn sample(&self, ids: &[DomId]) -> anyhow::Result<Vec<VifReport>> {
        let vifs = control::list(&self.sock)?;
        Ok(vifs.into_iter().filter(|v| ids.contains(&v.id.domid)).collect())
    }

    pub fn measure(&mut self, p: &Point, warmup: f64, duration: f64, baseline: Baseline) -> anyhow::Result<Row> {
        let (defaults, _) = control::set(&self.sock, None, p.knobs)?;
        self.round += 1;
        let xs = self.host.toolstack();
        let mut guests = Vec::new();
        for g in 0..p.guests {
            let spec = self.host.create_domain(&format!("s{}g{g}", self.round), DomainConfig::default())?;
            let vif = VifSpec { handle: Some(0), mac: Some(guest_mac(spec.domid)), ..VifSpec::new(spec.domid) };
            layout::attach(xs, &vif)?;
            guests.push(spec);
        }
        let args = SimArgs {
            guests: p.guests,
            duration: warmup + duration + TAIL,
            size: FrameSize::Fixed(p.size),
            rate: 0,
            tcp: p.tcp.is_some(),
            gso: p.tcp == Some(true),
            keep: false,
        };
        for (i, g) in guests.iter().enumerate() {
            self.procs.spawn_guest(g, guest_mac(guests[(i + 1) % guests.len()].domid), &args)?;
        }
        let ids: Vec<DomId> = guests.iter().map(|g| g.domid).collect();
        wait_connected(xs, &ids, &mut self.procs)?;
        xs.transaction(|tx| ids.iter().try_for_each(|&d| tx.write(&roles::start_node(d), "1")))?;
        std::thread::sleep(Duration::from_secs_f64(warmup));
        let (before, t0) = (self.sample(&ids)?, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(duration));
        let (after, secs) = (self.sample(&ids)?, t0.elapsed().as_secs_f64());
        let exits = self.procs.wait_guests(Instant::now() + Duration::from_secs_f64(TAIL + 1.0) + LIMIT)?;
        let reports: Vec<_> = exits.iter().map(|e| parse_report(&e.stdout)).collect();
        let (mut sent, mut lost) = (0u64, 0u64);
        let (mut payload, mut frame_bytes, mut corrupt) = (0u64, 0u64, 0u64);
        for (i, r) in reports.iter().enumerate() {
            let next = &reports[(i + 1) % reports.len()];
            match (r, next) {
                (Some(sender), Some(receiver)) => {
                    if let (Some(t), Some((s, _, l))) = (receiver.tcp, receiver.tcp_end_to_end(sender)) {
                        (sent, lost) = (sent + s, lost + l);
                        (payload, frame_bytes, corrupt) =
                            (payload + t.received_bytes, frame_bytes + t.received_frame_bytes, corrupt + t.corrupt);
                    } else {
                        let e = receiver.end_to_end(sender);
                        sent += e.sent;
                        lost += e.lost;
                    }
                }
                _ => anyhow::bail!("guest {} gave no report", exits[i].domid),
            }
        }
        for &d in &ids {
            layout::detach(xs, 0, d, 0, Duration::from_secs(10))?;
            let _ = self.host.destroy_domain(d);
            let _ = xs.rm(&format!("/local/domain/{d}"));
        }
        let mut total = VifStats::default();
        let mut mean = (0u64, 0u64);
        for a in &after {
            let b = before.iter().find(|b| b.id == a.id).map(|b| b.stats).unwrap_or_default();
            let d = a.stats.since(&b);
            mean = (mean.0 + d.batching.tx_drain.sum, mean.1 + d.batching.tx_drain.count);
            total = add(&total, &d);
        }
        let frames_per_sec = total.rx_packets as f64 / secs;
        let gbit_per_sec = total.rx_bytes as f64 * 8.0 / secs / 1e9;
        // The window's delivered bytes, scaled by the payload share of what the receivers got.
        let payload_gbit_per_sec =
            if frame_bytes == 0 { 0.0 } else { gbit_per_sec * payload as f64 / frame_bytes as f64 };
        let ratio_to_baseline = match p.tcp {
            Some(_) if baseline.payload_gbit_per_sec > 0.0 => payload_gbit_per_sec / baseline.payload_gbit_per_sec,
            None if baseline.frames_per_sec > 0.0 => frames_per_sec / baseline.frames_per_sec,
            _ => 0.0,
        };
        Ok(Row {
            knobs: defaults,
            batch: p.batch,
            size: p.size,
            guests: p.guests,
            tcp: p.tcp,
            frames_per_sec,
            gbit_per_sec,
            notifications_per_packet: crate::knobs_cmd::notifications_per_packet(&total),
            mean_batch: if mean.1 == 0 { 0.0 } else { mean.0 as f64 / mean.1 as f64 },
            drops: total.dropped(),
            loss: if sent == 0 { 0.0 } else { lost as f64 / sent as f64 },
            baseline_frames_per_sec: baseline.frames_per_sec,
            ratio_to_baseline,
            payload_gbit_per_sec,
            baseline_payload_gbit_per_sec: baseline.payload_gbit_per_sec,
            payload_bytes: payload,
            corrupt,
        })
    }
}

/// The sums the study needs (packets, bytes, notifications, drops).
fn add(a: &VifStats, b: &VifStats) -> VifStats {
    let mut s = *a;
    s.tx_packets += b.tx_packets;
    s.rx_packets += b.rx_packets;
    s.rx_bytes += b.rx_bytes;
    s.notifications_in += b.notifications_in;
    s.notifications_out += b.notifications_out;
    s.tx_dropped_bad_request += b.tx_dropped_bad_request;
    s.tx_dropped_copy_failed += b.tx_dropped_copy_failed;
    s.tx_dropped_uplink += b.tx_dropped_uplink;
    s.rx_dropped_too_big += b.rx_dropped_too_big;
    s.rx_dropped_copy_failed += b.rx_dropped_copy_failed;
    s
}
