//! The serialisable outcome of a peer traffic run.

use crate::Stats;
use crate::mac::{Mac, format_mac};
use crate::traffic::{FlowReport, Report};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What one guest received of one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCounts {
    /// Valid frames, duplicates included.
    pub received: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Gaps in the sequence numbers seen (tail loss is not visible here; see
    /// [`PeerReport::end_to_end`]).
    pub lost: u64,
    /// Frames that filled a gap.
    pub reordered: u64,
    /// Frames received twice.
    pub duplicated: u64,
}

impl From<FlowReport> for FlowCounts {
    fn from(r: FlowReport) -> Self {
        Self { received: r.received, bytes: r.bytes, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated }
    }
}

/// The netfront's own error counters at the end of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// TX responses with an error or dropped status.
    pub tx_errors: u64,
    /// Bad RX responses.
    pub rx_errors: u64,
    /// Responses that broke the protocol.
    pub protocol_errors: u64,
    /// Notifications we sent.
    pub notifications_sent: u64,
    /// Notifications we received.
    pub notifications_received: u64,
}

/// One guest's report: what it sent and what it received, per flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Flow id of the frames we sent.
    pub flow: u32,
    /// Our MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Test frames sent during the timed phase.
    pub sent_frames: u64,
    /// Bytes of those frames (whole Ethernet frames).
    pub sent_bytes: u64,
    /// Length of the timed phase, in seconds.
    pub elapsed_secs: f64,
    /// Valid test frames received, per flow id.
    pub received: BTreeMap<u32, FlowCounts>,
    /// Frames with the test EtherType that failed verification.
    pub corrupt: u64,
    /// Other frames (ARP and the like).
    pub foreign: u64,
    /// The device's counters.
    pub device: DeviceCounts,
    /// TCP mode only: our stream's payload bytes sent and the peer's stream received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<super::TcpCounts>,
}

/// End-to-end counts of one flow: the sender's view matched with the receiver's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndToEnd {
    /// Frames the sender sent.
    pub sent: u64,
    /// Distinct frames the receiver got.
    pub received: u64,
    /// Sent but never received.
    pub lost: u64,
    /// Received out of order.
    pub reordered: u64,
    /// Received more than once.
    pub duplicated: u64,
}

impl PeerReport {
    /// Builds the report from the run's counters.
    pub(super) fn new(
        flow: u32,
        mac: Mac,
        sent_frames: u64,
        sent_bytes: u64,
        elapsed: Duration,
        received: &Report,
        stats: Stats,
    ) -> Self {
        Self {
            flow,
            mac: format_mac(&mac),
            sent_frames,
            sent_bytes,
            elapsed_secs: elapsed.as_secs_f64(),
            received: received.flows.iter().map(|(&id, r)| (id, FlowCounts::from(*r))).collect(),
            corrupt: received.corrupt,
            foreign: received.foreign,
            device: DeviceCounts {
                tx_errors: stats.tx_errors + stats.tx_dropped,
                rx_errors: stats.rx_errors,
                protocol_errors: stats.protocol_errors,
                notifications_sent: stats.notifications_sent,
                notifications_received: stats.notifications_received,
            },
            tcp: None,
        }
    }

    /// The report as one JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a PeerReport always serialises")
    }

    /// Parses a line written by [`PeerReport::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim())
    }

    /// How `sender`'s TCP stream fared on its way to us, in payload bytes: (sent,
    /// received in order, lost = sent − received). `None` unless both ran in TCP mode.
    pub fn tcp_end_to_end(&self, sender: &PeerReport) -> Option<(u64, u64, u64)> {
        let (ours, theirs) = (self.tcp?, sender.tcp?);
        Some((theirs.sent_bytes, ours.received_bytes, theirs.sent_bytes.saturating_sub(ours.received_bytes)))
    }

    /// How `sender`'s flow fared on its way to us.
    pub fn end_to_end(&self, sender: &PeerReport) -> EndToEnd {
        let got = self.received.get(&sender.flow).copied().unwrap_or_default();
        let distinct = got.received.saturating_sub(got.duplicated);
        EndToEnd {
            sent: sender.sent_frames,
            received: distinct,
            lost: sender.sent_frames.saturating_sub(distinct),
            reordered: got.reordered,
            duplicated: got.duplicated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(flow: u32, sent: u64, received: &[(u32, FlowCounts)]) -> PeerReport {
        PeerReport {
            flow,
            mac: "00:16:3e:00:00:01".into(),
            sent_frames: sent,
            sent_bytes: sent * 100,
            elapsed_secs: 1.5,
            received: received.iter().copied().collect(),
            corrupt: 0,
            foreign: 2,
            device: DeviceCounts::default(),
            tcp: None,
        }
    }

    #[test]
    fn json_line_round_trips() {
        let r = report(3, 10, &[(1, FlowCounts { received: 9, bytes: 900, lost: 1, reordered: 2, duplicated: 0 })]);
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(PeerReport::from_json_line(&line).unwrap(), r);
    }

    #[test]
    fn end_to_end_counts_tail_loss_and_ignores_duplicates() {
        let sender = report(1, 100, &[]);
        let got = FlowCounts { received: 95, bytes: 0, lost: 0, reordered: 3, duplicated: 5 };
        let receiver = report(2, 0, &[(1, got), (7, FlowCounts::default())]);
        let e = receiver.end_to_end(&sender);
        assert_eq!(e, EndToEnd { sent: 100, received: 90, lost: 10, reordered: 3, duplicated: 5 });
        assert_eq!(report(2, 0, &[]).end_to_end(&sender).lost, 100);
    }
}
