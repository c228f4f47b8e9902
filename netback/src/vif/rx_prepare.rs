//! Deciding how one frame reaches a guest, from the RECEIVER's [`FrontendFeatures`]:
//!
//! - a GSO super-frame goes as is (multi-slot, with a GSO extra) to a guest with SG and the
//!   matching `gso_tcpv4/6`; otherwise it is segmented in software and each segment follows
//!   the plain-frame rules with its checksum filled;
//! - a frame with a blank checksum goes as is to a guest that takes blank checksums for its
//!   IP version; otherwise the checksum is filled in software;
//! - a frame larger than one page needs SG; without it the frame is dropped.
//!
//! An offload that cannot parse the headers drops the frame (`rx_dropped_offload`).

use grant::PAGE_SIZE;
use netif::abi::{NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, XEN_NETIF_MAX_TX_SIZE};
use std::collections::VecDeque;

use super::{FrontendFeatures, VifCounters};
use crate::frame::{ETH_HLEN, Frame, Gso, GsoKind, Offload};
use crate::offload;

/// A frame ready to be written into the guest's RX buffers.
#[derive(Debug)]
pub(super) struct Ready {
    /// The bytes; at least [`ETH_HLEN`], at most `XEN_NETIF_MAX_TX_SIZE`.
    pub data: Vec<u8>,
    /// `NETRXF_*` checksum flags of the first response.
    pub flags: u16,
    /// The GSO extra to send after the first data slot.
    pub gso: Option<Gso>,
}

impl Ready {
    /// RX buffers the data takes: one per started page.
    pub fn data_slots(&self) -> u32 {
        // data.len() <= 0xFFFF: at most 16.
        self.data.len().div_ceil(PAGE_SIZE) as u32
    }

    /// RX requests the frame consumes: its data slots, plus one for the GSO extra (Linux
    /// `xenvif_rx_ring_slots_available`).
    pub fn slots(&self) -> u32 {
        self.data_slots() + u32::from(self.gso.is_some())
    }
}

/// The `NETRXF_*` flags of a frame the guest takes as is (Linux `xenvif_rx_data_slot`).
pub(super) fn rx_flags(offload: &Offload) -> u16 {
    if offload.csum_blank {
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    } else if offload.data_validated {
        NETRXF_DATA_VALIDATED
    } else {
        0
    }
}

/// The EtherType after any 802.1Q / 802.1ad tags; `None` if the frame ends first.
fn ethertype(data: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let ty = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
        if ty != 0x8100 && ty != 0x88a8 {
            return Some(ty);
        }
        at += 4;
    }
}

/// Whether the guest takes this frame with a blank checksum.
fn takes_blank_csum(features: &FrontendFeatures, data: &[u8]) -> bool {
    match ethertype(data) {
        Some(0x0800) => features.csum_offload,
        Some(0x86dd) => features.ipv6_csum_offload,
        _ => false,
    }
}

fn takes_gso(features: &FrontendFeatures, kind: GsoKind) -> bool {
    features.sg
        && match kind {
            GsoKind::TcpV4 => features.gso_tcpv4,
            GsoKind::TcpV6 => features.gso_tcpv6,
        }
}

/// Turns one frame from the uplink into what the guest gets (none if dropped, several if
/// segmented), appended to `out`. Every drop is counted.
pub(super) fn prepare(frame: Frame, features: &FrontendFeatures, counters: &VifCounters, out: &mut VecDeque<Ready>) {
    let offload = *frame.offload();
    let Some(gso) = offload.gso else { return plain(frame.into_data(), offload, features, counters, out) };
    if takes_gso(features, gso.kind) {
        // A GSO frame's checksum is always partial.
        let flags = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
        if fits(frame.len(), features, counters) {
            out.push_back(Ready { data: frame.into_data(), flags, gso: Some(gso) });
        }
        return;
    }
    match offload::segment_tcp(frame.data(), gso.kind, gso.size) {
        Ok(segments) => {
            VifCounters::add(&counters.sw_segmentations, 1);
            let finished = Offload { csum_blank: false, data_validated: true, gso: None };
            for segment in segments {
                plain(segment, finished, features, counters, out);
            }
        }
        Err(error) => {
            tracing::debug!(%error, len = frame.len(), ?gso, "RX GSO frame cannot be segmented, dropped");
            VifCounters::add(&counters.rx_dropped_offload, 1);
        }
    }
}

/// A frame without GSO: checksum filled if the guest cannot take it blank.
fn plain(
    mut data: Vec<u8>,
    offload: Offload,
    features: &FrontendFeatures,
    counters: &VifCounters,
    out: &mut VecDeque<Ready>,
) {
    if !fits(data.len(), features, counters) {
        return;
    }
    let mut flags = rx_flags(&offload);
    if offload.csum_blank && !takes_blank_csum(features, &data) {
        if let Err(error) = offload::fill_checksum(&mut data) {
            tracing::debug!(%error, len = data.len(), "RX frame's checksum cannot be filled, dropped");
            VifCounters::add(&counters.rx_dropped_offload, 1);
            return;
        }
        VifCounters::add(&counters.sw_checksums, 1);
        flags = NETRXF_DATA_VALIDATED;
    }
    out.push_back(Ready { data, flags, gso: None });
}

/// Whether a frame of `len` bytes can go to the guest: a whole Ethernet header, at most
/// 64 KiB, and one page unless the guest has SG. Counts the drop otherwise.
fn fits(len: usize, features: &FrontendFeatures, counters: &VifCounters) -> bool {
    if len < ETH_HLEN {
        tracing::debug!(len, "RX frame shorter than an Ethernet header dropped");
        VifCounters::add(&counters.rx_dropped_offload, 1);
        return false;
    }
    if len > XEN_NETIF_MAX_TX_SIZE as usize || (len > PAGE_SIZE && !features.sg) {
        tracing::debug!(len, sg = features.sg, "RX frame too big for the guest dropped");
        VifCounters::add(&counters.rx_dropped_too_big, 1);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_linux() {
        let off = |csum_blank, data_validated| Offload { csum_blank, data_validated, gso: None };
        assert_eq!(rx_flags(&off(true, false)), NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(true, true)), NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(false, true)), NETRXF_DATA_VALIDATED);
        assert_eq!(rx_flags(&off(false, false)), 0);
    }

    fn eth(ty: &[u8], len: usize) -> Vec<u8> {
        let mut f = vec![0; len];
        f[12..12 + ty.len()].copy_from_slice(ty);
        f
    }

    #[test]
    fn blank_checksums_by_ip_version_and_tags() {
        let all = FrontendFeatures { csum_offload: true, ipv6_csum_offload: true, ..FrontendFeatures::default() };
        let v4only = FrontendFeatures::default();
        let v4 = eth(&[0x08, 0x00], 60);
        let v6_tagged = eth(&[0x81, 0x00, 0, 5, 0x86, 0xdd], 80);
        assert!(takes_blank_csum(&v4only, &v4) && takes_blank_csum(&all, &v6_tagged));
        assert!(!takes_blank_csum(&v4only, &v6_tagged));
        assert!(!takes_blank_csum(&all, &eth(&[0x88, 0xb5], 60)));
        assert_eq!(ethertype(&eth(&[0x81, 0x00], 14)), None);
    }

    #[test]
    fn sizes_and_slots() {
        let counters = VifCounters::default();
        let sg = FrontendFeatures { sg: true, gso_tcpv4: true, ..FrontendFeatures::default() };
        let mut out = VecDeque::new();
        let gso =
            Offload { csum_blank: true, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV4, size: 1448 }) };
        prepare(Frame::with_offload(eth(&[0x08, 0x00], 65535), gso), &sg, &counters, &mut out);
        prepare(Frame::new(eth(&[0x88, 0xb5], 4097)), &sg, &counters, &mut out);
        prepare(Frame::new(eth(&[0x88, 0xb5], 4097)), &FrontendFeatures::default(), &counters, &mut out);
        prepare(Frame::new(vec![0; 13]), &sg, &counters, &mut out);
        let slots: Vec<(u32, u32, u16)> = out.iter().map(|r| (r.data_slots(), r.slots(), r.flags)).collect();
        assert_eq!(slots, [(16, 17, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED), (2, 2, 0)]);
        let stats = counters.snapshot();
        assert_eq!((stats.rx_dropped_too_big, stats.rx_dropped_offload), (1, 1));
    }
}
