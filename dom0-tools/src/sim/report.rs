//! The end of `nbctl sim`: the guests' reports matched with the daemon's counters, as one
//! table, and the list of functional failures.

use super::procs::GuestExit;
use crate::table::Table;
use dom0_tools::layout::vif_name;
use grant::DomId;
use netback::control::VifReport;
use netfront_test::session::PeerReport;

/// Everything known about the run, per guest.
#[derive(Debug)]
pub struct Outcome {
    guests: Vec<GuestRow>,
    daemon: Result<Vec<VifReport>, String>,
}

#[derive(Debug)]
struct GuestRow {
    domid: DomId,
    exit: String,
    ok: bool,
    report: Option<PeerReport>,
}

/// `x / secs` (0 when no time passed).
fn per_sec(x: f64, secs: f64) -> f64 {
    if secs > 0.0 { x / secs } else { 0.0 }
}

impl Outcome {
    /// Matches guests (in sending order) with their exits and the daemon's vifs.
    pub fn new(ids: &[DomId], exits: &[GuestExit], daemon: Result<Vec<VifReport>, String>) -> Self {
        let guests = ids
            .iter()
            .map(|&domid| {
                let exit = exits.iter().find(|e| e.domid == domid);
                let status = exit.and_then(|e| e.status);
                GuestRow {
                    domid,
                    exit: status.map_or_else(|| "killed (timeout)".into(), |s| s.to_string()),
                    ok: status.is_some_and(|s| s.success()),
                    report: exit.and_then(|e| super::parse_report(&e.stdout)),
                }
            })
            .collect();
        Self { guests, daemon }
    }

    /// The guest sending to guest `i`.
    fn sender_of(&self, i: usize) -> Option<&PeerReport> {
        let n = self.guests.len();
        self.guests[(i + n - 1) % n].report.as_ref()
    }

    /// The per-vif table, followed by a note when the daemon could not be asked.
    pub fn table(&self) -> String {
        let mut table = Table::new(&[
            "VIF",
            "MAC",
            "TX PKTS",
            "TX BYTES",
            "RX PKTS",
            "RX BYTES",
            "DROPS",
            "NOTIF/PKT",
            "TX Mbit/s",
            "TX kfps",
            "RX Mbit/s",
            "RX kfps",
            "LOST",
            "REORD",
            "DUP",
        ]);
        for (i, g) in self.guests.iter().enumerate() {
            let vif =
                self.daemon.as_ref().ok().and_then(|v| v.iter().find(|v| v.id.domid == g.domid && v.id.handle == 0));
            let secs = g.report.as_ref().map_or(0.0, |r| r.elapsed_secs);
            let mut row = vec![vif_name(g.domid, 0), g.report.as_ref().map_or("-".into(), |r| r.mac.clone())];
            match vif {
                Some(v) => {
                    let s = &v.stats;
                    let packets = s.tx_packets + s.rx_packets;
                    let notifs = (s.notifications_in + s.notifications_out) as f64;
                    let mbit = |bytes: u64| format!("{:.1}", per_sec(bytes as f64 * 8.0, secs) / 1e6);
                    let kfps = |pkts: u64| format!("{:.1}", per_sec(pkts as f64, secs) / 1e3);
                    row.extend(
                        [s.tx_packets, s.tx_bytes, s.rx_packets, s.rx_bytes, s.dropped()].map(|n| n.to_string()),
                    );
                    row.push(if packets == 0 { "-".into() } else { format!("{:.3}", notifs / packets as f64) });
                    row.extend([mbit(s.tx_bytes), kfps(s.tx_packets), mbit(s.rx_bytes), kfps(s.rx_packets)]);
                }
                None => row.extend(std::iter::repeat_n("-".to_string(), 10)),
            }
            match (&g.report, self.sender_of(i)) {
                (Some(me), Some(sender)) => {
                    let e = me.end_to_end(sender);
                    row.extend([e.lost, e.reordered, e.duplicated].map(|n| n.to_string()));
                }
                _ => row.extend(std::iter::repeat_n("-".to_string(), 3)),
            }
            table.row(row);
        }
        let mut out = table.render();
        if let Err(why) = &self.daemon {
            out.push_str(&format!("(daemon not reachable: {why})\n"));
        }
        out.push_str(
            "TX/RX are the guest's directions; LOST = frames sent by the previous guest and never received.\n",
        );
        for (i, g) in self.guests.iter().enumerate() {
            let (Some(me), Some(sender)) = (&g.report, self.sender_of(i)) else { continue };
            let (Some(tcp), Some((sent, got, lost))) = (me.tcp, me.tcp_end_to_end(sender)) else { continue };
            out.push_str(&format!(
                "[tcp] {}: {got} of {sent} payload bytes in order ({:.3} Gbit/s), {lost} lost ({} in gaps), \
{} frames ({} corrupt, {} late)\n",
                vif_name(g.domid, 0),
                per_sec(got as f64 * 8.0, sender.elapsed_secs) / 1e9,
                tcp.lost_bytes,
                tcp.received_frames,
                tcp.corrupt,
                tcp.late,
            ));
        }
        out
    }

    /// The functional failures: a guest error or missing report, corrupt frames, protocol
    /// errors, an unreachable daemon. Loss is not a failure.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Err(why) = &self.daemon {
            failures.push(format!("the daemon did not answer List: {why}"));
        }
        for g in &self.guests {
            if !g.ok {
                failures.push(format!("guest {} exited with {}", g.domid, g.exit));
            }
            match &g.report {
                None => failures.push(format!("guest {} printed no report", g.domid)),
                Some(r) if r.corrupt > 0 => {
                    failures.push(format!("guest {} received {} corrupt frames", g.domid, r.corrupt))
                }
                Some(r) if r.tcp.is_some_and(|t| t.corrupt > 0 || t.received_bytes == 0) => {
                    let t = r.tcp.unwrap_or_default();
                    failures.push(format!(
                        "guest {} received {} corrupt TCP frames and {} payload bytes",
                        g.domid, t.corrupt, t.received_bytes
                    ))
                }
                Some(r) if r.device.protocol_errors > 0 => failures.push(format!(
                    "guest {} saw {} protocol errors from the backend",
                    g.domid, r.device.protocol_errors
                )),
                Some(_) => {}
            }
        }
        failures
    }
}
