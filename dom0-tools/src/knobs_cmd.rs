//! `nbctl stats` (per-vif counters, rates, notifications per packet, batch histograms) and
//! `nbctl set` (change knobs while traffic runs), through the daemon's control socket; and
//! the knob nodes `nbctl attach` writes for the daemon to read at connect.

use anyhow::{Context, bail};
use netback::control::{self, VifReport};
use netback::vif::{BUCKETS, KnobValues, PartialKnobs, VifId, VifStats, bucket_label};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use xenstore::Client;

/// Options of `nbctl stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Seconds between two samples: rates are computed over this interval.
    #[arg(long)]
    pub interval: Option<f64>,
    /// Number of reports (with `--interval`).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

/// Options of `nbctl set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The vif, `D.H` or `vifD.H`; default: every vif and the defaults of new vifs.
    #[arg(long, value_parser = vif_arg)]
    pub vif: Option<VifId>,
    /// The knobs to change.
    #[command(flatten)]
    pub knobs: PartialKnobs,
}

/// Parses `D.H` or `vifD.H`.
pub fn vif_arg(s: &str) -> Result<VifId, String> {
    let t = s.trim().trim_start_matches("vif");
    let (d, h) = t.split_once('.').ok_or_else(|| format!("{s:?} is not a vif (D.H or vifD.H)"))?;
    let domid = d.parse().map_err(|_| format!("{s:?}: bad domain id"))?;
    let handle = h.parse().map_err(|_| format!("{s:?}: bad handle"))?;
    Ok(VifId { domid, handle })
}

/// Every vif's report.
pub fn sample(socket: &Path) -> anyhow::Result<Vec<VifReport>> {
    match control::call(socket, &control::Request::Stats)? {
        control::Response::Vifs { vifs } => Ok(vifs),
        control::Response::Error { message } => bail!("the daemon refused: {message}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// `nbctl set`.
pub fn set(socket: &Path, args: &SetArgs) -> anyhow::Result<()> {
    if args.knobs.named().is_empty() {
        bail!("no knob given (flags: {})", PartialKnobs::NAMES.join(", "));
    }
    let (defaults, vifs) = control::set(socket, args.vif, args.knobs)?;
    if args.vif.is_none() {
        println!("defaults  {}", knob_line(&defaults));
    }
    for v in vifs {
        println!("{:<9} {}", v.id.to_string(), knob_line(&v.knobs));
    }
    Ok(())
}

/// `name=value` for every knob.
pub fn knob_line(k: &KnobValues) -> String {
    k.all().named().iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
}

/// Validates `knobs` and writes them as `<backend>/netback-knobs/<name>` (read by the
/// daemon at the vif's next connect).
pub fn write_attach_knobs(xs: &Client, backend: &str, knobs: &PartialKnobs) -> anyhow::Result<()> {
    let named = knobs.named();
    if named.is_empty() {
        return Ok(());
    }
    KnobValues::default().with(knobs).validate().context("invalid knob flags")?;
    let dir = format!("{backend}/{}", netback::daemon::KNOBS_DIR);
    xs.transaction(|tx| named.iter().try_for_each(|(n, v)| tx.write(&format!("{dir}/{n}"), v.to_string())))
        .with_context(|| format!("writing {dir}"))?;
    println!("  knobs     {}", named.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// `nbctl stats`.
pub fn stats(socket: &Path, args: &StatsArgs) -> anyhow::Result<()> {
    let Some(interval) = args.interval else {
        print!("{}", render(&sample(socket)?, None));
        return Ok(());
    };
    anyhow::ensure!(interval.is_finite() && interval > 0.0, "--interval must be a positive number of seconds");
    let mut before = (sample(socket)?, Instant::now());
    for i in 0..args.count {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let now = (sample(socket)?, Instant::now());
        if i > 0 {
            println!();
        }
        print!("{}", render(&now.0, Some((&before.0, now.1.duration_since(before.1).as_secs_f64()))));
        before = now;
    }
    Ok(())
}

/// Notifications (both ways) per packet (both ways); 0 without packets.
pub fn notifications_per_packet(s: &VifStats) -> f64 {
    let packets = s.tx_packets + s.rx_packets;
    if packets == 0 { 0.0 } else { (s.notifications_in + s.notifications_out) as f64 / packets as f64 }
}

/// The report of every vif; with `(before, secs)`, counters over the interval and rates.
fn render(vifs: &[VifReport], interval: Option<(&[VifReport], f64)>) -> String {
    let mut out = String::new();
    if vifs.is_empty() {
        out.push_str("no vifs\n");
    }
    for v in vifs {
        let earlier = interval.and_then(|(b, _)| b.iter().find(|e| e.id == v.id));
        let s = earlier.map_or(v.stats, |e| v.stats.since(&e.stats));
        let secs = interval.map(|(_, s)| s);
        let rate = |n: u64| secs.map_or("-".into(), |t| format!("{:.0}/s", n as f64 / t));
        let gbps = |b: u64| secs.map_or("-".into(), |t| format!("{:.3} Gbit/s", b as f64 * 8.0 / t / 1e9));
        let span = secs.map_or("since start".to_string(), |t| format!("over {t:.2} s"));
        let _ = writeln!(out, "{} ({span})  knobs: {}", v.name, knob_line(&v.knobs));
        let _ = writeln!(
            out,
            "  tx {} pkts {} {} | rx {} pkts {} {} | drops {} (mtu {}, rx expired {}, rx stalled {})",
            s.tx_packets,
            rate(s.tx_packets),
            gbps(s.tx_bytes),
            s.rx_packets,
            rate(s.rx_packets),
            gbps(s.rx_bytes),
            s.dropped(),
            s.batching.tx_dropped_mtu,
            s.rx_dropped_expired,
            s.rx_dropped_stalled
        );
        let port_now = v.port.map_or(0, |p| p.dropped_carrier_off);
        let carrier_off = port_now.saturating_sub(earlier.and_then(|e| e.port).map_or(0, |p| p.dropped_carrier_off));
        let _ = writeln!(
            out,
            "  rx stalls {} (guest rx {}) | dropped at the port for carrier off {}",
            s.rx_stalls,
            if s.rx_stalled { "STALLED: carrier off" } else { "ok" },
            carrier_off
        );
        let b = &s.batching;
        let _ = writeln!(
            out,
            "  notifications in {} out {} ({:.3}/packet) | pushes {} deferred {} | timer {} | busy polls {} (hits {})",
            s.notifications_in,
            s.notifications_out,
            notifications_per_packet(&s),
            b.pushes,
            b.pushes_deferred,
            b.timer_wakeups,
            b.busy_polls,
            b.busy_poll_hits
        );
        let _ = writeln!(
            out,
            "  copy {} batches {} segments | mean batch: tx drain {:.1}, rx deliver {:.1}, copy {:.1}, slots/pkt {:.2}",
            s.copy_batches,
            s.copy_segments,
            b.tx_drain.mean(),
            b.rx_deliver.mean(),
            b.copy_batch.mean(),
            b.slots_per_packet.mean()
        );
        let _ = write!(out, "  {:<17}", "histogram");
        for i in 0..BUCKETS {
            let _ = write!(out, "{:>8}", bucket_label(i));
        }
        out.push('\n');
        for (name, h) in b.histograms() {
            let _ = write!(out, "  {name:<17}");
            for n in h.buckets {
                let _ = write!(out, "{n:>8}");
            }
            out.push('\n');
        }
    }
    out
}
