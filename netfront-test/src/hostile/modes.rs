//! The hand-written modes of the catalogue (see the parent module), over a [`RawFront`].

use super::raw::{RawFront, Rings};
use super::{BackendView, Expect, HostileError, Mode, Report, wait_disabled};
use crate::device::{Features, Netfront, NetfrontConfig};
use crate::mac::Mac;
use crate::stack::arp_request;
use crate::tcp::build_tcp_frame_blank_checksum;
use crate::traffic::build_frame;
use crate::xenbus::XenbusError;
use grant::{Access, EventChannel, EventChannels, GrantAlloc};
use netif::abi::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    XEN_NETIF_GSO_TYPE_TCPV4,
};
use netif::ring::SRING_HEADER_SIZE;
use netif::{Extra, ExtraInfo, NetifExtraInfo, RingKind, TxRequest, TxRing};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, VolatileMemory};
use xenstore::Client;

/// What the modes need besides the domain.
#[derive(Debug, Clone, Copy)]
pub struct HostileConfig {
    /// The device handle.
    pub handle: u32,
    /// Handshake and response timeout; how long a disabled mode waits for the error.
    pub timeout: Duration,
    /// How long [`Mode::DoubleFetch`], [`Mode::NotifyStorm`], [`Mode::RxNone`] and
    /// [`Mode::RxOneShort`] keep misbehaving.
    pub hold: Duration,
    /// Where served frames go.
    pub to: Mac,
    /// The flow of served test frames.
    pub flow: u32,
    /// Our IPv4 address ([`Mode::RoRxGrant`]'s ARP request).
    pub ip: Ipv4Addr,
    /// Whom [`Mode::RoRxGrant`] asks (at MAC [`HostileConfig::to`]), so that a reply comes.
    pub peer_ip: Option<Ipv4Addr>,
}

impl Default for HostileConfig {
    fn default() -> Self {
        HostileConfig {
            handle: 0,
            timeout: Duration::from_secs(10),
            hold: Duration::from_secs(2),
            to: [0xff; 6],
            flow: 0x4057,
            ip: Ipv4Addr::new(10, 0, 0, 66),
            peer_ip: None,
        }
    }
}

/// What a hand-written mode saw.
#[derive(Debug, Default)]
struct Outcome {
    statuses: Vec<i16>,
    want: Vec<i16>,
    ok: bool,
    detail: String,
}

impl Outcome {
    /// The statuses of `want.len()` responses, and whether they are `want`.
    fn statuses(rings: &mut Rings<'_, impl EventChannel>, want: Vec<i16>) -> Result<Self, HostileError> {
        let timeout = rings.front.timeout;
        let got = rings.tx_responses(want.len(), timeout)?;
        let statuses: Vec<i16> = got.iter().map(|r| r.status).collect();
        Ok(Outcome { ok: statuses == want, statuses, want, detail: String::new() })
    }
}

/// Runs `mode` on `device/vif/<cfg.handle>` and reports what the backend did. The
/// frontend is closed afterwards (the backend's error, if any, is read first).
pub fn run<G>(domain: &G, xs: Client, mode: Mode, cfg: &HostileConfig) -> Result<Report, HostileError>
where
    G: GrantAlloc + EventChannels,
{
    let timeout = cfg.timeout;
    match mode {
        Mode::UngrantedRing => return super::ungranted_ring(domain, &xs, cfg.handle, timeout),
        Mode::RingOverflow | Mode::BadTxGref => {
            let config = NetfrontConfig { timeout, ..NetfrontConfig::default() };
            let mut nf = Netfront::connect(domain, xs, cfg.handle, config)?;
            let report = if mode == Mode::RingOverflow {
                super::ring_overflow(&mut nf, timeout)?
            } else {
                super::bad_tx_gref(&mut nf)?
            };
            if let Err(e) = nf.disconnect() {
                tracing::warn!(error = %e, "closing after {mode}");
            }
            return Ok(report);
        }
        _ => {}
    }
    let features = match mode {
        Mode::GsoNoCsum | Mode::GsoSize0 | Mode::GsoBadType => {
            Features { sg: true, gso_tcpv4: true, ..Features::default() }
        }
        _ => Features { sg: true, ..Features::default() },
    };
    let disabled = mode.expect() == Expect::Disabled;
    let req_prod = (mode == Mode::AttachOverflow).then_some(TxRing::SIZE + 10);
    let nf = RawFront::connect(domain, xs, cfg.handle, &features, timeout, req_prod, !disabled)?;
    let outcome = if mode == Mode::AttachOverflow { Outcome::default() } else { misbehave(domain, &nf, mode, cfg)? };
    let view = if disabled { wait_disabled(&nf.xs, &nf.info.backend, timeout)? } else { read_view(&nf)? };
    nf.close();
    let Outcome { statuses, want, ok, detail } = outcome;
    Ok(Report { mode, view, tx_status: None, statuses, want, ok: ok || disabled, detail })
}

fn read_view<C: EventChannel>(nf: &RawFront<C>) -> Result<BackendView, HostileError> {
    BackendView::read(&nf.xs, &nf.info.backend)
}

/// `n` ERROR statuses.
fn errors(n: usize) -> Vec<i16> {
    vec![NETIF_RSP_ERROR; n]
}

/// A test frame of `len` bytes from us to `cfg.to`.
fn frame<C: EventChannel>(nf: &RawFront<C>, cfg: &HostileConfig, seq: u64, len: usize) -> Vec<u8> {
    build_frame(cfg.to, nf.info.mac, cfg.flow, seq, len)
}

/// The raw TX request image of an extra-info slot.
fn extra(ty: u8, flags: u8, u: [u8; 6]) -> TxRequest {
    TxRequest::from(NetifExtraInfo { ty, flags, u })
}

fn gso(size: u16, gso_type: u8) -> TxRequest {
    Extra { info: ExtraInfo::Gso { size, gso_type, features: 0 }, more: false }.to_tx_request()
}

/// The first slot of `reqs` gets `NETTXF_extra_info` and `extras` right after it.
fn with_extras(mut reqs: Vec<TxRequest>, extras: &[TxRequest]) -> Vec<TxRequest> {
    reqs[0].flags |= NETTXF_EXTRA_INFO;
    reqs.splice(1..1, extras.iter().copied());
    reqs
}

fn misbehave<G, C>(domain: &G, nf: &RawFront<C>, mode: Mode, cfg: &HostileConfig) -> Result<Outcome, HostileError>
where
    G: GrantAlloc,
    C: EventChannel,
{
    let mut rings = nf.rings()?;
    let r = &mut rings;
    // A chain of `n` slots of 100 bytes.
    let chain = |r: &Rings<'_, C>, n: usize| r.chain(&frame(nf, cfg, 0, 100 * n), &vec![100; n], 0, 0);
    match mode {
        Mode::Chain19 => {
            let reqs = chain(r, 19)?;
            r.push_tx(&reqs)?;
            Outcome::statuses(r, vec![NETIF_RSP_OKAY; 19])
        }
        Mode::Chain20 | Mode::Chain21 => {
            let n = if mode == Mode::Chain20 { 20 } else { 21 };
            let reqs = chain(r, n)?;
            r.push_tx(&reqs)?;
            Outcome::statuses(r, errors(n))
        }
        Mode::Chain22 => {
            let reqs = chain(r, 22)?;
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::ChainUnterminated => {
            let mut reqs = chain(r, 4)?;
            reqs[3].flags |= NETTXF_MORE_DATA;
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::CrossPage => {
            nf.write_tx_buf(0, 4000, &frame(nf, cfg, 0, 96))?;
            let req = TxRequest { gref: nf.tx_gref(0), offset: 4000, flags: 0, id: 0, size: 200 };
            r.push_tx(&[req])?;
            Ok(Outcome::default())
        }
        Mode::Runt => {
            // A 10-byte frame; and 60 bytes with only 10 in the first slot (Linux checks
            // the first slot's own bytes against ETH_HLEN).
            let mut reqs = r.chain(&[0x02; 10], &[10], 0, 0)?;
            reqs.extend(r.chain(&frame(nf, cfg, 0, 60), &[10, 50], 1, 0)?);
            r.push_tx(&reqs)?;
            Outcome::statuses(r, errors(3))
        }
        Mode::SizeMismatch => {
            let mut reqs = r.chain(&frame(nf, cfg, 0, 300), &[100, 200], 0, 0)?;
            reqs[0].size = 100;
            r.push_tx(&reqs)?;
            Outcome::statuses(r, errors(2))
        }
        Mode::ZeroSizeFrags | Mode::SplitHeaders => {
            let layouts: [&[usize]; 3] = if mode == Mode::ZeroSizeFrags {
                [&[100, 0, 100, 0, 0, 100], &[14, 0, 286], &[300, 0]]
            } else {
                // The Ethernet header alone in the first slot (Linux needs it there), the
                // IP header and beyond in slivers.
                const SLIVERS: [usize; 18] = [14, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 270];
                [&SLIVERS, &[14, 3, 3, 3, 3, 3, 3, 268], &[20, 1, 0, 1, 278]]
            };
            let mut all = Outcome { ok: true, ..Outcome::default() };
            for (seq, sizes) in layouts.iter().enumerate() {
                let data = frame(nf, cfg, seq as u64, sizes.iter().sum());
                let reqs = r.chain(&data, sizes, 0, 0)?;
                r.push_tx(&reqs)?;
                // One frame at a time: every frame reuses buffers 0.. .
                let part = Outcome::statuses(r, vec![NETIF_RSP_OKAY; sizes.len()])?;
                all.statuses.extend(part.statuses);
                all.want.extend(part.want);
                all.ok &= part.ok;
            }
            Ok(all)
        }
        Mode::ExtraMissing => {
            let reqs = with_extras(chain(r, 1)?, &[]);
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::ExtraType0 | Mode::ExtraTypeMax => {
            let ty = if mode == Mode::ExtraType0 { 0 } else { XEN_NETIF_EXTRA_TYPE_MAX };
            let reqs = with_extras(chain(r, 1)?, &[extra(ty, 0, [0; 6])]);
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::ExtraEndless => {
            let more = extra(XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_FLAG_MORE, [0x01, 0, 0x5e, 0, 0, 1]);
            let extras = vec![more; TxRing::SIZE as usize - 1];
            let reqs = with_extras(chain(r, 1)?, &extras);
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::GsoSize0 | Mode::GsoBadType => {
            let extra = if mode == Mode::GsoSize0 { gso(0, XEN_NETIF_GSO_TYPE_TCPV4) } else { gso(1400, 3) };
            let reqs = with_extras(chain(r, 2)?, &[extra]);
            r.push_tx(&reqs)?;
            Ok(Outcome::default())
        }
        Mode::GsoNoCsum => {
            // A blank TCP checksum without NETTXF_csum_blank: the backend must treat the
            // GSO frame's checksum as partial anyway (Linux forces CHECKSUM_PARTIAL).
            let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
            let data = build_tcp_frame_blank_checksum(nf.info.mac, cfg.to, false, 1, &payload);
            let first = data.len() - 1000;
            let reqs = with_extras(r.chain(&data, &[first, 1000], 0, 0)?, &[gso(1000, XEN_NETIF_GSO_TYPE_TCPV4)]);
            r.push_tx(&reqs)?;
            Outcome::statuses(r, vec![NETIF_RSP_OKAY, NETIF_RSP_NULL, NETIF_RSP_OKAY])
        }
        Mode::RevokedTxGref => {
            let page = domain
                .share(nf.info.backend_id, 1, Access::ReadOnly)
                .map_err(|source| XenbusError::ShareBuffers { pool: "revoked", pages: 1, source })?;
            let gref = page.grefs()[0];
            page.page(0)
                .expect("one page")
                .write_slice(&frame(nf, cfg, 0, 60), 0)
                .map_err(|source| HostileError::Buffer { index: 0, source })?;
            // Revoked: the backend must fail its copy.
            drop(page);
            r.push_tx(&[TxRequest { gref, offset: 0, flags: 0, id: 0, size: 60 }])?;
            Outcome::statuses(r, errors(1))
        }
        Mode::RoRxGrant => ro_rx_grant(r, cfg),
        Mode::RxNone | Mode::RxOneShort => {
            hello(r, cfg)?;
            if mode == Mode::RxOneShort {
                r.post_rx(&nf.rx_bufs.grefs()[..1])?;
            }
            let deadline = Instant::now() + cfg.hold;
            while Instant::now() < deadline {
                nf.wait(deadline.saturating_duration_since(Instant::now()))?;
            }
            let got = r.rx_responses(usize::MAX, Duration::ZERO)?;
            Ok(Outcome { ok: got.is_empty(), detail: format!("{} RX responses", got.len()), ..Outcome::default() })
        }
        Mode::NotifyStorm => {
            let deadline = Instant::now() + cfg.hold;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    nf.notify()?;
                }
                sent += 1000;
            }
            Ok(Outcome { ok: true, detail: format!("{sent} notifications"), ..Outcome::default() })
        }
        Mode::DoubleFetch => double_fetch(r, cfg),
        Mode::UngrantedRing | Mode::RingOverflow | Mode::BadTxGref | Mode::AttachOverflow => {
            unreachable!("handled by run")
        }
    }
}

/// One frame from us to us: the switch learns our MAC (and drops the frame as a hairpin),
/// so frames for us queue at our port rather than being flooded.
fn hello<C: EventChannel>(r: &mut Rings<'_, C>, cfg: &HostileConfig) -> Result<(), HostileError> {
    let me = r.front.info.mac;
    let reqs = r.chain(&build_frame(me, me, cfg.flow, 0, 60), &[60], 0, 0)?;
    r.push_tx(&reqs)?;
    let got = r.tx_responses(1, r.front.timeout)?;
    if got.len() != 1 {
        tracing::warn!("the backend did not answer our hello");
    }
    Ok(())
}

/// [`Mode::RoRxGrant`]: RX buffers granted read-only, then an ARP request to
/// `cfg.peer_ip` at `cfg.to`; the reply's copy must fail (ERROR) and the vif live on.
fn ro_rx_grant<C: EventChannel>(r: &mut Rings<'_, C>, cfg: &HostileConfig) -> Result<Outcome, HostileError> {
    let nf = r.front;
    let Some(peer) = cfg.peer_ip else {
        return Ok(Outcome { ok: false, detail: "no peer IP to ask".into(), ..Outcome::default() });
    };
    // Our TX buffers are granted read-only: post four of them (buffers 8..12) as RX buffers.
    let ro: Vec<_> = (8..12).map(|i| nf.tx_gref(i)).collect();
    r.post_rx(&ro)?;
    let mut ask = arp_request(nf.info.mac, cfg.ip, peer);
    ask[..6].copy_from_slice(&cfg.to);
    let reqs = r.chain(&ask, &[ask.len()], 0, 0)?;
    r.push_tx(&reqs)?;
    let tx = r.tx_responses(1, nf.timeout)?;
    let rx = r.rx_responses(1, nf.timeout)?;
    let statuses: Vec<i16> = tx.iter().map(|s| s.status).chain(rx.iter().map(|s| s.status)).collect();
    let want = vec![NETIF_RSP_OKAY, NETIF_RSP_ERROR];
    Ok(Outcome { ok: statuses == want, statuses, want, detail: "TX ARP request, then the RX reply".into() })
}

/// [`Mode::DoubleFetch`]: single-slot frames to ourselves (hairpin, dropped by the switch),
/// 16 per millisecond, for `cfg.hold`, while a second thread rewrites the size (60 or 1514), offset (0 or 2048)
/// and flags (none, csum_blank, data_validated) of every ring slot in a loop. Every value
/// it writes is valid, so whichever the backend reads, copied once, each slot must be
/// answered exactly once, OKAY, and the vif kept.
fn double_fetch<C: EventChannel>(r: &mut Rings<'_, C>, cfg: &HostileConfig) -> Result<Outcome, HostileError> {
    const BATCH: usize = 16;
    let nf = r.front;
    let me = nf.info.mac;
    let data = build_frame(me, me, cfg.flow, 0, 1514);
    for buf in 0..BATCH {
        nf.write_tx_buf(buf, 0, &data)?;
        nf.write_tx_buf(buf, 2048, &data)?;
    }
    let stop = AtomicBool::new(false);
    let region = nf.tx_ring_page();
    let (mut pushed, mut answered, mut bad) = (0usize, 0usize, 0usize);
    let result = std::thread::scope(|scope| {
        let flipper = scope.spawn(|| {
            let page = region.as_volatile_slice();
            let mut flips = 0u64;
            let entry = TxRing::ENTRY_SIZE;
            while !stop.load(Ordering::Relaxed) {
                for slot in 0..TxRing::SIZE as usize {
                    let at = SRING_HEADER_SIZE + slot * entry;
                    let k = flips as usize + slot;
                    let offset: u16 = if k.is_multiple_of(2) { 0 } else { 2048 };
                    let flags: u16 = [0, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED][k % 3];
                    let size: u16 = if k % 5 < 2 { 60 } else { 1514 };
                    // Bytes 4..8 and 10..12 of a TX slot: a response (bytes 0..4) is never touched.
                    let _ = page.write_obj(offset, at + 4);
                    let _ = page.write_obj(flags, at + 6);
                    let _ = page.write_obj(size, at + 10);
                }
                flips += 1;
                // Leave the other guests some CPU on a small host.
                std::thread::sleep(Duration::from_micros(200));
            }
            flips
        });
        let deadline = Instant::now() + cfg.hold;
        let run = (|| -> Result<(), HostileError> {
            while Instant::now() < deadline {
                let reqs: Vec<TxRequest> = (0..BATCH)
                    .map(|i| TxRequest { gref: nf.tx_gref(i), offset: 0, flags: 0, id: i as u16, size: 1514 })
                    .collect();
                r.push_tx(&reqs)?;
                pushed += BATCH;
                let got = r.tx_responses(BATCH, nf.timeout)?;
                answered += got.len();
                bad += got.iter().filter(|g| g.status != NETIF_RSP_OKAY).count();
                if got.len() < BATCH {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap_or(0);
        run.map(|()| flips)
    });
    let flips = result?;
    let ok = pushed > 0 && answered == pushed && bad == 0;
    let detail = format!("{pushed} slots pushed, {answered} answered, {bad} not OKAY, {flips} rewrites of the ring");
    Ok(Outcome { ok, detail, ..Outcome::default() })
}
