//! Helpers shared by the fuzz targets: a byte cursor over the fuzzer's input, the TX ring
//! layout every TX target uses, and independent checks of frames with etherparse.

use std::sync::Arc;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netif::{BackRing, TxRing};
use vm_memory::{Bytes, MmapRegion, VolatileMemory};

/// Ring page size.
pub const PAGE: usize = 4096;
/// Bytes of the shared ring header (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`, pad).
pub const SRING_HEADER: usize = 64;
/// Bytes of one TX ring slot.
pub const TX_SLOT: usize = 12;
/// Slots of the TX ring.
pub const TX_SLOTS: u32 = 256;

/// Reads the fuzzer's bytes front to back; past the end everything reads as zero.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A TX ring built from the fuzzer's bytes, with the indices it was attached at.
///
/// Layout of the input (`Input` order): `rsp_prod` (u32, the shared value), `lag` (u8:
/// `rsp_prod_pvt = rsp_prod + lag`), `unanswered` (u8: `req_cons = rsp_prod_pvt +
/// unanswered`), `req_delta` (u32: shared `req_prod = req_cons + req_delta`, any value,
/// so impossible producers are reachable), `req_event`, `rsp_event` (u32), then the slot
/// bytes, written from the slot of `req_cons` on (wrapping), at most the whole ring.
#[derive(Debug)]
pub struct TxRingInput {
    /// The ring page (exactly one page: a read beyond it fails in vm-memory).
    pub page: Arc<MmapRegion>,
    /// The backend end, attached with the private indices below.
    pub ring: BackRing<TxRing, Arc<MmapRegion>>,
    /// The shared `req_prod` written.
    pub req_prod: u32,
    /// `req_cons` at attach.
    pub req_cons: u32,
    /// `rsp_prod_pvt` at attach.
    pub rsp_prod_pvt: u32,
}

impl TxRingInput {
    /// Builds the page and attaches; `None` if the indices are refused at attach (the
    /// daemon then never runs the parser).
    pub fn build(input: &mut Input<'_>) -> Option<Self> {
        let rsp_prod = input.u32();
        let rsp_prod_pvt = rsp_prod.wrapping_add(u32::from(input.u8()));
        let req_cons = rsp_prod_pvt.wrapping_add(u32::from(input.u8()));
        let req_prod = req_cons.wrapping_add(input.u32());
        let (req_event, rsp_event) = (input.u32(), input.u32());
        let page = Arc::new(MmapRegion::new(PAGE).expect("anonymous page"));
        let mem = page.as_volatile_slice();
        // Attached with a sane producer, which then moves anywhere (as a hostile frontend
        // can move it after the backend attached).
        for (at, v) in [(0, req_cons), (4, req_event), (8, rsp_prod), (12, rsp_event)] {
            mem.write_obj(v, at).expect("header in page");
        }
        let slots = input.bytes(TX_SLOTS as usize * TX_SLOT);
        for (i, chunk) in slots.chunks(TX_SLOT).enumerate() {
            let slot = req_cons.wrapping_add(i as u32) % TX_SLOTS;
            mem.write_slice(chunk, SRING_HEADER + slot as usize * TX_SLOT).expect("slot in page");
        }
        let ring = BackRing::attach_at(page.clone(), req_cons, rsp_prod_pvt).ok()?;
        page.as_volatile_slice().write_obj(req_prod, 0).expect("header in page");
        Some(Self { page, ring, req_prod, req_cons, rsp_prod_pvt })
    }

    /// A copy of the page, attached at the same indices as `ring` is now; `None` if the
    /// shared `req_prod` is impossible for them.
    pub fn snapshot(&self) -> Option<BackRing<TxRing, Arc<MmapRegion>>> {
        let copy = Arc::new(MmapRegion::new(PAGE).expect("anonymous page"));
        let mut bytes = vec![0u8; PAGE];
        self.page.as_volatile_slice().read_slice(&mut bytes, 0).expect("page");
        copy.as_volatile_slice().write_slice(&bytes, 0).expect("page");
        BackRing::attach_at(copy, self.ring.req_cons(), self.ring.rsp_prod_pvt()).ok()
    }

    /// The raw 12 bytes of the slot holding free-running index `idx`.
    pub fn slot(&self, idx: u32) -> [u8; TX_SLOT] {
        let mut raw = [0u8; TX_SLOT];
        let at = SRING_HEADER + (idx % TX_SLOTS) as usize * TX_SLOT;
        self.page.as_volatile_slice().read_slice(&mut raw, at).expect("slot in page");
        raw
    }
}

/// Checks a TCP frame with etherparse, an independent parser: `None` if etherparse does
/// not see a TCP segment over IPv4 or IPv6 in it; otherwise whether its TCP checksum (and,
/// for IPv4 with `ip_too`, the header checksum) is right, `Err` saying what is wrong.
pub fn etherparse_tcp_check(frame: &[u8], ip_too: bool) -> Option<Result<(), String>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = p.transport.as_ref() else { return None };
    let (got, want) = match p.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            // Summed raw: etherparse's `Ipv4Header` drops the reserved flag bit, so its
            // recomputed checksum differs for a header that has it set.
            if ip_too && ones_complement_sum(ip.header().slice()) != 0xffff {
                return Some(Err("IPv4 header checksum".into()));
            }
            (tcp.checksum(), tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination()).ok()?)
        }
        NetSlice::Ipv6(ip) => {
            (tcp.checksum(), tcp.calc_checksum_ipv6(ip.header().source(), ip.header().destination()).ok()?)
        }
        _ => return None,
    };
    Some(if got == want { Ok(()) } else { Err(format!("TCP checksum {got:#06x}, etherparse computes {want:#06x}")) })
}

/// RFC 1071 one's-complement sum of `data` as big-endian 16-bit words, folded, computed
/// byte by byte (independent of the crate's wide summation). A header or segment with its
/// checksum in place sums to 0xffff.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
