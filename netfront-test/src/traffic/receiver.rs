//! The verifying receiver: per-flow sequence tracking with exact loss, reorder and
//! duplicate accounting.
//!
//! Per flow, `next` is one past the highest sequence number seen and `missing` holds the
//! numbers below `next` never received (as disjoint half-open ranges, so a huge gap costs
//! one entry). A frame with:
//! * `seq == next`: in order;
//! * `seq > next`: opens the gap `next..seq`;
//! * `seq < next` and in `missing`: fills a gap: **reordered**;
//! * `seq < next` otherwise: **duplicated**.
//!
//! **Lost** = numbers still missing, plus those between `next` and an expected count given
//! with [`Receiver::expect`] (tail loss is invisible otherwise).

use super::{FrameError, parse_frame};
use std::collections::BTreeMap;

/// Counters of one flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowReport {
    /// Valid frames (duplicates included).
    pub received: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Sequence numbers never received (gaps, and the tail up to the expected count).
    pub lost: u64,
    /// Frames that filled a gap.
    pub reordered: u64,
    /// Frames whose sequence number was already received.
    pub duplicated: u64,
}

/// Counters of all flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per flow id.
    pub flows: BTreeMap<u32, FlowReport>,
    /// Frames with our EtherType that failed verification.
    pub corrupt: u64,
    /// Frames that are not test traffic.
    pub foreign: u64,
}

impl Report {
    /// The sum over all flows.
    pub fn total(&self) -> FlowReport {
        self.flows.values().fold(FlowReport::default(), |a, f| FlowReport {
            received: a.received + f.received,
            bytes: a.bytes + f.bytes,
            lost: a.lost + f.lost,
            reordered: a.reordered + f.reordered,
            duplicated: a.duplicated + f.duplicated,
        })
    }

    /// True if every frame arrived once, intact and in order.
    pub fn is_perfect(&self) -> bool {
        let t = self.total();
        self.corrupt == 0 && t.lost == 0 && t.reordered == 0 && t.duplicated == 0
    }
}

#[derive(Debug, Default)]
struct Flow {
    report: FlowReport,
    next: u64,
    /// start → end (exclusive) of never-received ranges below `next`.
    missing: BTreeMap<u64, u64>,
    expected: Option<u64>,
}

impl Flow {
    fn missing_count(&self) -> u64 {
        self.missing.iter().map(|(s, e)| e - s).sum::<u64>() + self.expected.map_or(0, |x| x.saturating_sub(self.next))
    }

    /// Removes `seq` from `missing`; `true` if it was there.
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else { return false };
        if seq >= end {
            return false;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq);
        }
        if seq + 1 < end {
            self.missing.insert(seq + 1, end);
        }
        true
    }

    fn record(&mut self, seq: u64) {
        if seq >= self.next {
            if seq > self.next {
                self.missing.insert(self.next, seq);
            }
            self.next = seq + 1;
        } else if self.fill(seq) {
            self.report.reordered += 1;
        } else {
            self.report.duplicated += 1;
        }
    }
}

/// Verifies frames and keeps the per-flow accounting.
#[derive(Debug, Default)]
pub struct Receiver {
    flows: BTreeMap<u32, Flow>,
    corrupt: u64,
    foreign: u64,
}

impl Receiver {
    /// An empty receiver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that `count` frames (sequence numbers `0..count`) were sent on `flow`, so
    /// that frames missing at the tail count as lost.
    pub fn expect(&mut self, flow: u32, count: u64) {
        self.flows.entry(flow).or_default().expected = Some(count);
    }

    /// Verifies and accounts one frame; returns the verification outcome.
    pub fn receive(&mut self, frame: &[u8]) -> Result<super::FrameInfo, FrameError> {
        match parse_frame(frame) {
            Ok(info) => {
                let flow = self.flows.entry(info.flow).or_default();
                flow.report.received += 1;
                flow.report.bytes += info.payload_len as u64;
                flow.record(info.seq);
                Ok(info)
            }
            Err(FrameError::Foreign) => {
                self.foreign += 1;
                Err(FrameError::Foreign)
            }
            Err(e) => {
                self.corrupt += 1;
                Err(e)
            }
        }
    }

    /// The counters so far.
    pub fn report(&self) -> Report {
        let flows =
            self.flows.iter().map(|(&id, f)| (id, FlowReport { lost: f.missing_count(), ..f.report })).collect();
        Report { flows, corrupt: self.corrupt, foreign: self.foreign }
    }
}
