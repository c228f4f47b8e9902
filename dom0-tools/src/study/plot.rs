//! The study's two plots (SVG, plotters): frames/s and notifications per packet against the
//! batch size (log2 axis), one line per frame size (and guests / notify-every when varied).

use super::point::Row;
use anyhow::anyhow;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

/// Points of each line, keyed by its label.
fn lines(rows: &[Row], y: impl Fn(&Row) -> f64) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        let tcp = match r.tcp {
            None => "",
            Some(false) => ", TCP",
            Some(true) => ", TCP+GSO",
        };
        let label = format!("{} B{tcp}, {} guests, notify-every {}", r.size, r.guests, r.knobs.notify_every);
        out.entry(label).or_default().push((f64::from(r.batch.max(1)).log2(), y(r)));
    }
    out
}

fn draw(path: &Path, title: &str, y_desc: &str, rows: &[Row], y: impl Fn(&Row) -> f64) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let series = lines(rows, y);
    let xs = series.values().flatten().map(|p| p.0);
    let x_max = xs.fold(1.0f64, f64::max);
    let y_max = series.values().flatten().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max.max(1.0), 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("batch size (tx/rx drain max = copy batch)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{:.0}", 2f64.powf(*v)))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `throughput.svg`.
pub fn throughput(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    draw(path, "netback throughput vs batch size", "frames/s (received)", rows, |r| r.frames_per_sec)
}

/// `notifications.svg`.
pub fn notifications(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    draw(path, "notifications per packet vs batch size", "notifications / packet", rows, |r| r.notifications_per_packet)
}
