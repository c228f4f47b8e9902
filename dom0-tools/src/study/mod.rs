//! `nbctl study`: sweeps batching knobs × frame sizes × guests on one simulated host and
//! one daemon, measures each point after a warm-up, and writes `study.csv`,
//! `throughput.svg` and `notifications.svg`, each point compared with the bare baseline
//! ([`baseline`]) of its frame size, measured in the same run.
//!
//! Per point: the knobs are changed through the control socket (`Set` for all vifs, which
//! also sets the defaults of the vifs attached next), fresh guests are created, attached and
//! started; after `--warmup` seconds the daemon's counters are sampled, again after
//! `--duration` seconds, and the guests' reports give the end-to-end loss.

pub mod baseline;
mod plot;
mod point;

use anyhow::Context;
use netback::vif::PartialKnobs;
use point::{Point, Row};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Options of `nbctl study`.
#[derive(Debug, Clone, clap::Args)]
pub struct StudyArgs {
    /// Output directory.
    #[arg(long, default_value = "study")]
    pub out: PathBuf,
    /// Batch sizes: each sets tx-drain-max, rx-drain-max and copy-batch.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,256")]
    pub batch: Vec<u32>,
    /// Frame sizes in bytes (60..=65535; over 4096 they travel as scatter-gather chains).
    #[arg(long, value_delimiter = ',', default_value = "64,1514")]
    pub frame_size: Vec<usize>,
    /// Numbers of guests (at least 2; guest i sends to guest i+1).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub guests: Vec<u16>,
    /// notify-every values (default: the daemon's default only).
    #[arg(long, value_delimiter = ',')]
    pub notify_every: Vec<u32>,
    /// TCP points: `off` (guests segment to MSS 1448 themselves; scatter-gather and
    /// checksum offload) and/or `on` (every offload: frames over 1514 bytes go as one GSO
    /// super-frame). Without this option the study sends test frames, as always.
    #[arg(long, value_delimiter = ',', value_parser = gso_arg)]
    pub gso: Vec<bool>,
    /// Seconds measured per point.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Seconds of traffic before each measurement.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
}

impl StudyArgs {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.duration > 0.0 && self.duration.is_finite(), "--duration must be > 0");
        anyhow::ensure!(self.warmup >= 0.0 && self.warmup.is_finite(), "--warmup must be ≥ 0");
        anyhow::ensure!(!self.batch.is_empty() && !self.frame_size.is_empty(), "empty grid");
        anyhow::ensure!(self.guests.iter().all(|&g| (2..=250).contains(&g)), "--guests must be within 2..=250");
        anyhow::ensure!(self.frame_size.iter().all(|s| (60..=65535).contains(s)), "frame sizes must be 60..=65535");
        for p in self.points() {
            netback::vif::KnobValues::default().with(&p.knobs).validate().context("invalid grid point")?;
        }
        Ok(())
    }

    /// The grid, frame size outermost, then TCP/GSO, batch innermost.
    fn points(&self) -> Vec<Point> {
        let notify: Vec<Option<u32>> = if self.notify_every.is_empty() {
            vec![None]
        } else {
            self.notify_every.iter().copied().map(Some).collect()
        };
        let tcp: Vec<Option<bool>> =
            if self.gso.is_empty() { vec![None] } else { self.gso.iter().copied().map(Some).collect() };
        let mut points = Vec::new();
        for &size in &self.frame_size {
            for &tcp in &tcp {
                for &guests in &self.guests {
                    for &notify_every in &notify {
                        for &b in &self.batch {
                            let knobs = PartialKnobs {
                                tx_drain_max: Some(b),
                                rx_drain_max: Some(b),
                                copy_batch: Some(b),
                                notify_every,
                                ..PartialKnobs::default()
                            };
                            points.push(Point { batch: b, size, guests, knobs, tcp });
                        }
                    }
                }
            }
        }
        points
    }
}

/// `nbctl study`.
pub fn run(args: &StudyArgs) -> anyhow::Result<()> {
    args.check()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let points = args.points();
    let mut baselines = BTreeMap::new();
    for p in &points {
        if baselines.contains_key(&(p.size, p.tcp)) {
            continue;
        }
        let b = baseline::measure(p.size, p.tcp, args.warmup, args.duration)?;
        println!(
            "[baseline] size={} {}: {:.0} frames/s{} through a shared-memory ring (lost {})",
            p.size,
            mode(p.tcp),
            b.frames_per_sec,
            if p.tcp.is_some() { format!(", {:.3} Gbit/s TCP payload", b.payload_gbit_per_sec) } else { String::new() },
            b.lost
        );
        baselines.insert((p.size, p.tcp), b);
    }
    let mut bench = point::Bench::start()?;
    let mut rows = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let row = bench.measure(p, args.warmup, args.duration, baselines[&(p.size, p.tcp)])?;
        let payload = match p.tcp {
            Some(_) => format!(
                ", {:.3} Gbit/s TCP payload ({} bytes, {} corrupt)",
                row.payload_gbit_per_sec, row.payload_bytes, row.corrupt
            ),
            None => String::new(),
        };
        println!(
            "[{}/{}] batch={} size={} {} guests={} notify-every={}: {:.0} frames/s, {:.3} Gbit/s{payload}, {:.3} notif/pkt, mean batch {:.1}, loss {:.4}%, ratio {:.3}",
            i + 1,
            points.len(),
            p.batch,
            p.size,
            mode(p.tcp),
            p.guests,
            row.knobs.notify_every,
            row.frames_per_sec,
            row.gbit_per_sec,
            row.notifications_per_packet,
            row.mean_batch,
            row.loss * 100.0,
            row.ratio_to_baseline
        );
        rows.push(row);
    }
    bench.stop()?;
    write_csv(args, &rows)?;
    plot::throughput(&args.out.join("throughput.svg"), &rows)?;
    plot::notifications(&args.out.join("notifications.svg"), &rows)?;
    println!("[study] wrote {}/study.csv, throughput.svg, notifications.svg", args.out.display());
    Ok(())
}

fn gso_arg(s: &str) -> Result<bool, String> {
    match s.trim() {
        "off" => Ok(false),
        "on" => Ok(true),
        other => Err(format!("{other:?}: expected off or on")),
    }
}

/// How a point's traffic is described in the progress lines.
fn mode(tcp: Option<bool>) -> &'static str {
    match tcp {
        None => "frames",
        Some(false) => "tcp gso=off",
        Some(true) => "tcp gso=on",
    }
}

fn write_csv(args: &StudyArgs, rows: &[Row]) -> anyhow::Result<()> {
    let path = args.out.join("study.csv");
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", Row::HEADER)?;
    for r in rows {
        writeln!(f, "{}", r.csv())?;
    }
    Ok(())
}
