//! Hostile frontend modes: a frontend that produces, on demand, each bad input of the
//! catalogue in `netif.md` §4.2, to check that a backend reacts as Linux netback does:
//! disables only the offending vif (an `error` node in its backend directory, state
//! Closing), or answers the packet `NETIF_RSP_ERROR` and drops it, or serves it, and stays
//! alive. [`Mode::expect`] says which; [`Mode::EVERY`] lists them (item of §4.2 in brackets):
//!
//! * disabled: [`Mode::UngrantedRing`] (a `tx-ring-ref` naming [`UNGRANTED_REF`]),
//!   [`Mode::RingOverflow`] (TX `req_prod` [`OVERFLOW_RINGS`] rings beyond `rsp_prod`, [1]),
//!   [`Mode::AttachOverflow`] (the ring attached with `req_prod − rsp_prod > 256`, [1]),
//!   [`Mode::Chain22`] and [`Mode::ChainUnterminated`] ([3]), [`Mode::CrossPage`] ([4]),
//!   [`Mode::ExtraMissing`], [`Mode::ExtraType0`], [`Mode::ExtraTypeMax`],
//!   [`Mode::ExtraEndless`], [`Mode::GsoSize0`], [`Mode::GsoBadType`] ([6]);
//! * dropped (every data slot `NETIF_RSP_ERROR`, extras `NETIF_RSP_NULL`, vif kept):
//!   [`Mode::Chain20`], [`Mode::Chain21`] ([3]), [`Mode::Runt`], [`Mode::SizeMismatch`] ([4]),
//!   [`Mode::BadTxGref`] and [`Mode::RevokedTxGref`] ([7]);
//! * served (every slot OKAY, the frames sent to [`HostileConfig::to`] as test frames of
//!   [`HostileConfig::flow`]): [`Mode::Chain19`] ([3]), [`Mode::ZeroSizeFrags`],
//!   [`Mode::SplitHeaders`] ([5]), [`Mode::GsoNoCsum`] (a TCP GSO frame, [6]);
//! * survived (vif kept, no error): [`Mode::DoubleFetch`] ([2]: a thread rewrites size,
//!   offset and flags of posted slots while good frames flow), [`Mode::RoRxGrant`] ([7]:
//!   read-only RX buffers; an ARP request to [`HostileConfig::peer_ip`] brings a reply that
//!   must be answered ERROR), [`Mode::RxNone`] and [`Mode::RxOneShort`] ([8]: no RX buffer,
//!   or one while every frame needs two), [`Mode::NotifyStorm`] ([11]).
//!
//! Not here: the control ring ([9]; the backend implements none) and xenstore garbage
//! ([10]; toolstack-side, played by the tests themselves).
//!
//! What the backend did is read from its directory (the path in our `backend` key, which
//! the toolstack lets the frontend domain read) into a [`BackendView`].

mod modes;
pub mod raw;

pub use modes::{HostileConfig, run};

use crate::device::{DeviceError, Netfront};
use crate::xenbus::{self, XenbusError, XenbusState};
use grant::{Access, EventChannel, EventChannels, GrantAlloc, GrantRef};
use netif::abi::{NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY};
use netif::{FrontRing, RingError, RingKind, RxRing, TxRing};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};
use xenstore::{Client, XsError};

/// A grant reference no guest has: Xen 4.17 gives a guest at most 64 grant-table frames
/// of 512 v1 entries (32768 refs), so the hypervisor answers `GNTST_bad_gntref`.
pub const UNGRANTED_REF: GrantRef = 0x000f_fff0;
/// How many rings beyond `rsp_prod` the overflowing `req_prod` claims.
pub const OVERFLOW_RINGS: u32 = 10;
/// Size of the frame [`Mode::BadTxGref`] claims to send (a minimal Ethernet frame).
const BAD_FRAME_LEN: u16 = 60;
/// Longest sleep between two looks at the backend directory (watches may coalesce).
const POLL: Duration = Duration::from_millis(200);

/// Failures of a hostile run (not the verdict: see [`Report::passed`]).
#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    /// The mode name is not one of [`Mode::ALL`].
    #[error("unknown hostile mode {name:?} (known: {})", Mode::EVERY.map(Mode::name).join(", "))]
    UnknownMode { name: String },
    /// A hand-written ring operation failed.
    #[error("{ring} ring")]
    Ring {
        ring: &'static str,
        #[source]
        source: RingError,
    },
    /// Writing a buffer page.
    #[error("writing TX buffer {index}")]
    Buffer {
        index: usize,
        #[source]
        source: vm_memory::VolatileMemoryError,
    },
    /// Waiting on the event channel.
    #[error("waiting for the event channel")]
    Wait(#[source] std::io::Error),
    /// A handshake step failed.
    #[error("handshake")]
    Xenbus(#[from] XenbusError),
    /// A data-path step failed.
    #[error("data path")]
    Device(#[from] DeviceError),
    /// Reading a node of the backend directory.
    #[error("reading {path}")]
    ReadBackend {
        path: String,
        #[source]
        source: XsError,
    },
    /// Watching the backend directory.
    #[error("watching {path}")]
    WatchBackend {
        path: String,
        #[source]
        source: XsError,
    },
}

/// What the hostile frontend does (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Publish a `tx-ring-ref` we never granted, go Connected.
    UngrantedRing,
    /// Connect, then publish a TX `req_prod` far beyond what the ring holds.
    RingOverflow,
    /// Connect, then post one TX request naming a grant we never made.
    BadTxGref,
    /// Publish a TX ring whose `req_prod` is 266 ahead of `rsp_prod` at attach.
    AttachOverflow,
    /// Rewrite size, offset and flags of posted TX slots from a second thread.
    DoubleFetch,
    /// A `more_data` chain of 19 slots (the longest served).
    Chain19,
    /// A chain of 20 slots (dropped).
    Chain20,
    /// A chain of 21 slots (dropped).
    Chain21,
    /// A chain of 22 slots (fatal).
    Chain22,
    /// A chain whose last produced slot still says `more_data` (fatal, as in Linux).
    ChainUnterminated,
    /// A slot with `offset + size > 4096` (fatal).
    CrossPage,
    /// A 10-byte frame, and a 60-byte frame with 10 bytes in its first slot (dropped).
    Runt,
    /// A follow-on slot larger than the packet's total (dropped).
    SizeMismatch,
    /// Frames with zero-size follow-on slots (served).
    ZeroSizeFrags,
    /// Frames whose IP header is cut over 1- to 3-byte slots (served).
    SplitHeaders,
    /// `NETTXF_extra_info` and no extra slot produced (fatal).
    ExtraMissing,
    /// An extra of type 0 (fatal).
    ExtraType0,
    /// An extra of type `XEN_NETIF_EXTRA_TYPE_MAX` (fatal).
    ExtraTypeMax,
    /// Extras with `FLAG_MORE` filling the ring (fatal).
    ExtraEndless,
    /// A GSO extra with MSS 0 (fatal).
    GsoSize0,
    /// A GSO extra of unknown type (fatal).
    GsoBadType,
    /// A TCP GSO frame without `csum_blank` (served, its checksum completed).
    GsoNoCsum,
    /// A TX request naming a grant we revoked (ERROR).
    RevokedTxGref,
    /// RX buffers granted read-only (the copy fails: ERROR, frame dropped, vif kept).
    RoRxGrant,
    /// No RX buffer posted, ever.
    RxNone,
    /// One RX buffer posted while every frame for us needs two.
    RxOneShort,
    /// Notifications in a tight loop, with no work.
    NotifyStorm,
}

/// How the backend must react to a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Error node and Closing.
    Disabled,
    /// Every data slot ERROR (extras NULL), the vif kept without error.
    Dropped,
    /// Every slot OKAY (extras NULL), the vif kept without error.
    Served,
    /// The vif kept without error, and the mode's own check passed.
    Survives,
}

impl Mode {
    /// The modes the Xen lab runs, in its order.
    pub const ALL: [Mode; 3] = [Mode::UngrantedRing, Mode::RingOverflow, Mode::BadTxGref];

    /// Every mode.
    pub const EVERY: [Mode; 27] = [
        Mode::UngrantedRing,
        Mode::RingOverflow,
        Mode::BadTxGref,
        Mode::AttachOverflow,
        Mode::DoubleFetch,
        Mode::Chain19,
        Mode::Chain20,
        Mode::Chain21,
        Mode::Chain22,
        Mode::ChainUnterminated,
        Mode::CrossPage,
        Mode::Runt,
        Mode::SizeMismatch,
        Mode::ZeroSizeFrags,
        Mode::SplitHeaders,
        Mode::ExtraMissing,
        Mode::ExtraType0,
        Mode::ExtraTypeMax,
        Mode::ExtraEndless,
        Mode::GsoSize0,
        Mode::GsoBadType,
        Mode::GsoNoCsum,
        Mode::RevokedTxGref,
        Mode::RoRxGrant,
        Mode::RxNone,
        Mode::RxOneShort,
        Mode::NotifyStorm,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::UngrantedRing => "ungranted-ring",
            Mode::RingOverflow => "ring-overflow",
            Mode::BadTxGref => "bad-tx-gref",
            Mode::AttachOverflow => "attach-overflow",
            Mode::DoubleFetch => "double-fetch",
            Mode::Chain19 => "chain-19",
            Mode::Chain20 => "chain-20",
            Mode::Chain21 => "chain-21",
            Mode::Chain22 => "chain-22",
            Mode::ChainUnterminated => "chain-unterminated",
            Mode::CrossPage => "cross-page",
            Mode::Runt => "runt",
            Mode::SizeMismatch => "size-mismatch",
            Mode::ZeroSizeFrags => "zero-size-frags",
            Mode::SplitHeaders => "split-headers",
            Mode::ExtraMissing => "extra-missing",
            Mode::ExtraType0 => "extra-type-0",
            Mode::ExtraTypeMax => "extra-type-max",
            Mode::ExtraEndless => "extra-endless",
            Mode::GsoSize0 => "gso-size-0",
            Mode::GsoBadType => "gso-bad-type",
            Mode::GsoNoCsum => "gso-no-csum",
            Mode::RevokedTxGref => "revoked-tx-gref",
            Mode::RoRxGrant => "ro-rx-grant",
            Mode::RxNone => "rx-none",
            Mode::RxOneShort => "rx-one-short",
            Mode::NotifyStorm => "notify-storm",
        }
    }

    /// How the backend must react.
    pub fn expect(self) -> Expect {
        use Mode::*;
        match self {
            UngrantedRing | RingOverflow | AttachOverflow | Chain22 | ChainUnterminated | CrossPage | ExtraMissing
            | ExtraType0 | ExtraTypeMax | ExtraEndless | GsoSize0 | GsoBadType => Expect::Disabled,
            BadTxGref | RevokedTxGref | Chain20 | Chain21 | Runt | SizeMismatch => Expect::Dropped,
            Chain19 | ZeroSizeFrags | SplitHeaders | GsoNoCsum => Expect::Served,
            DoubleFetch | RoRxGrant | RxNone | RxOneShort | NotifyStorm => Expect::Survives,
        }
    }

    /// Whether the backend must disable the vif (otherwise it must keep it Connected).
    pub fn expects_disabled(self) -> bool {
        self.expect() == Expect::Disabled
    }

    /// How many frames a served mode sends to [`HostileConfig::to`] (test frames of
    /// [`HostileConfig::flow`], sequence 0, 1, …; for [`Mode::GsoNoCsum`] one TCP frame).
    pub fn served_frames(self) -> u64 {
        match self {
            Mode::Chain19 | Mode::GsoNoCsum => 1,
            Mode::ZeroSizeFrags | Mode::SplitHeaders => 3,
            _ => 0,
        }
    }
}

impl FromStr for Mode {
    type Err = HostileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::EVERY.into_iter().find(|m| m.name() == s).ok_or_else(|| HostileError::UnknownMode { name: s.to_owned() })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend directory's `state` and `error` nodes (`None`: missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendView {
    pub state: Option<XenbusState>,
    pub error: Option<String>,
}

impl BackendView {
    /// Reads `<backend>/state` and `<backend>/error`.
    pub fn read(xs: &Client, backend: &str) -> Result<Self, HostileError> {
        let state = xenbus::read_state(xs, backend)
            .map_err(|source| HostileError::ReadBackend { path: format!("{backend}/state"), source })?;
        let path = format!("{backend}/error");
        let error = match xs.read_string(&path) {
            Ok(v) => Some(v),
            Err(e) if e.is_enoent() => None,
            Err(source) => return Err(HostileError::ReadBackend { path, source }),
        };
        Ok(Self { state, error })
    }

    /// The backend disabled the vif: Closing or Closed, with an error node.
    pub fn disabled(&self) -> bool {
        matches!(self.state, Some(XenbusState::Closing | XenbusState::Closed)) && self.error.is_some()
    }
}

impl fmt::Display for BackendView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            Some(s) => write!(f, "backend state {} ({s:?})", s as u32)?,
            None => f.write_str("backend state none")?,
        }
        match &self.error {
            Some(e) => write!(f, ", error {e:?}"),
            None => f.write_str(", no error"),
        }
    }
}

/// What a hostile run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub mode: Mode,
    /// The backend directory at the end.
    pub view: BackendView,
    /// [`Mode::BadTxGref`]: the status of the bad request's response.
    pub tx_status: Option<i16>,
    /// The statuses of the responses to the hostile slots, in ring order.
    pub statuses: Vec<i16>,
    /// The statuses Linux netback would give them.
    pub want: Vec<i16>,
    /// The mode's own check (a [`Expect::Survives`] mode's, and the statuses).
    pub ok: bool,
    /// What else the mode saw, for the report line.
    pub detail: String,
}

impl Report {
    /// A report with nothing but the mode and the view.
    pub fn new(mode: Mode, view: BackendView) -> Self {
        Report { mode, view, tx_status: None, statuses: Vec::new(), want: Vec::new(), ok: true, detail: String::new() }
    }

    /// The backend did what Linux netback does: disabled the vif with an error, or kept it
    /// Connected without error with every status as Linux would give it (and the mode's
    /// own check passed).
    pub fn passed(&self) -> bool {
        match self.mode.expect() {
            Expect::Disabled => self.view.disabled(),
            _ => {
                let statuses = match self.mode {
                    Mode::BadTxGref => self.tx_status == Some(NETIF_RSP_ERROR),
                    _ => self.statuses == self.want,
                };
                statuses && self.ok && self.view.state == Some(XenbusState::Connected) && self.view.error.is_none()
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostile {}: ", self.mode)?;
        if let Some(status) = self.tx_status {
            write!(f, "TX status {status}, ")?;
        }
        if !self.statuses.is_empty() || !self.want.is_empty() {
            write!(f, "statuses {:?} (want {:?}), ", self.statuses, self.want)?;
        }
        if !self.detail.is_empty() {
            write!(f, "{}, ", self.detail)?;
        }
        write!(f, "{}", self.view)
    }
}

/// [`Mode::UngrantedRing`] on `device/vif/<handle>`: publishes good keys but a `tx-ring-ref`
/// of [`UNGRANTED_REF`], waits up to `timeout` for the backend to disable the vif, then
/// closes like Linux netfront.
pub fn ungranted_ring<G>(domain: &G, xs: &Client, handle: u32, timeout: Duration) -> Result<Report, HostileError>
where
    G: GrantAlloc + EventChannels,
{
    let info = xenbus::read_frontend(xs, handle)?;
    if xenbus::read_state(xs, &info.dir).ok().flatten() != Some(XenbusState::Initialising) {
        xenbus::write_state(xs, &info.dir, XenbusState::Initialising)?;
    }
    xenbus::wait_backend_state(xs, &info.backend, XenbusState::InitWait, timeout, |s| {
        matches!(s, Some(XenbusState::InitWait | XenbusState::Initialised))
    })?;
    // Real ring pages and a real channel: only the TX ref is a lie.
    let dom = info.backend_id;
    let share_ring =
        |ring| domain.share(dom, 1, Access::ReadWrite).map_err(|source| XenbusError::ShareRing { ring, source });
    let (tx_page, rx_page) = (share_ring("TX")?, share_ring("RX")?);
    let rx_ref = rx_page.grefs()[0];
    let _tx = FrontRing::<TxRing, _>::init(tx_page).map_err(|source| XenbusError::InitRing { ring: "TX", source })?;
    let _rx = FrontRing::<RxRing, _>::init(rx_page).map_err(|source| XenbusError::InitRing { ring: "RX", source })?;
    let channel =
        domain.alloc_unbound(dom).map_err(|source| XenbusError::AllocEventChannel { backend_id: dom, source })?;
    xenbus::publish_rings(xs, &info.dir, UNGRANTED_REF, rx_ref, channel.port())?;
    tracing::info!(dir = %info.dir, tx_ring_ref = UNGRANTED_REF, rx_ref, port = channel.port(), "published an ungranted tx-ring-ref");
    let view = wait_disabled(xs, &info.backend, timeout)?;
    if let Err(e) = xenbus::close(xs, &info.dir, &info.backend, timeout) {
        tracing::warn!(error = %e, "closing after the hostile handshake");
    }
    Ok(Report::new(Mode::UngrantedRing, view))
}

/// [`Mode::RingOverflow`] on a connected `nf`: publishes a TX `req_prod` of `rsp_prod` +
/// [`OVERFLOW_RINGS`] × ring size, notifies, and waits up to `timeout` for the backend to
/// disable the vif. The ring is unusable afterwards; disconnect `nf`.
pub fn ring_overflow<C: EventChannel>(nf: &mut Netfront<C>, timeout: Duration) -> Result<Report, HostileError> {
    let rsp_prod = nf.tx_rsp_prod()?;
    let req_prod = rsp_prod.wrapping_add(OVERFLOW_RINGS * TxRing::SIZE);
    nf.publish_tx_req_prod(req_prod)?;
    tracing::info!(rsp_prod, req_prod, "published an overflowing TX req_prod");
    let view = wait_disabled(nf.xenstore(), &nf.info().backend, timeout)?;
    Ok(Report::new(Mode::RingOverflow, view))
}

/// [`Mode::BadTxGref`] on a connected `nf`: posts one TX request naming [`UNGRANTED_REF`]
/// and waits for its response (up to the device's timeout). The vif stays usable.
pub fn bad_tx_gref<C: EventChannel>(nf: &mut Netfront<C>) -> Result<Report, HostileError> {
    // Nothing else in flight, so the counters tell this response's status.
    nf.wait_tx_idle()?;
    let before = nf.stats();
    nf.send_with_gref(BAD_FRAME_LEN, UNGRANTED_REF)?;
    nf.wait_tx_idle()?;
    let after = nf.stats();
    let status = if after.tx_errors > before.tx_errors {
        NETIF_RSP_ERROR
    } else if after.tx_dropped > before.tx_dropped {
        NETIF_RSP_DROPPED
    } else {
        NETIF_RSP_OKAY
    };
    tracing::info!(gref = UNGRANTED_REF, status, "TX request with an ungranted gref answered");
    let view = BackendView::read(nf.xenstore(), &nf.info().backend)?;
    Ok(Report { tx_status: Some(status), ..Report::new(Mode::BadTxGref, view) })
}

/// Waits (watch on the backend directory, at most `timeout`) until the backend disabled
/// the vif ([`BackendView::disabled`]); returns the last view either way.
pub fn wait_disabled(xs: &Client, backend: &str, timeout: Duration) -> Result<BackendView, HostileError> {
    let watch =
        xs.watch(backend, None).map_err(|source| HostileError::WatchBackend { path: backend.to_owned(), source })?;
    let deadline = Instant::now() + timeout;
    loop {
        // Read after the watch is registered, so no change between read and wait is lost.
        let view = BackendView::read(xs, backend)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if view.disabled() || left.is_zero() {
            return Ok(view);
        }
        // A timeout or a broken watch only means: look again.
        let _ = watch.recv_timeout(left.min(POLL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in Mode::EVERY {
            assert_eq!(mode.name().parse::<Mode>().unwrap(), mode);
            assert_eq!(mode.to_string(), mode.name());
        }
        let err = "ring_overflow".parse::<Mode>().unwrap_err();
        assert!(err.to_string().contains("ring-overflow"), "{err}");
    }

    fn view(state: Option<XenbusState>, error: Option<&str>) -> BackendView {
        BackendView { state, error: error.map(str::to_owned) }
    }

    #[test]
    fn disabled_needs_closing_or_closed_and_an_error() {
        use XenbusState::*;
        assert!(view(Some(Closing), Some("mapping tx-ring-ref")).disabled());
        assert!(view(Some(Closed), Some("x")).disabled());
        assert!(!view(Some(Closing), None).disabled());
        assert!(!view(Some(Connected), Some("x")).disabled());
        assert!(!view(None, Some("x")).disabled());
    }

    #[test]
    fn verdicts_and_lines() {
        let disabled = view(Some(XenbusState::Closing), Some("mapping the TX ring"));
        let connected = view(Some(XenbusState::Connected), None);
        let report = |mode, view: &BackendView, tx_status| Report { tx_status, ..Report::new(mode, view.clone()) };

        let r = report(Mode::RingOverflow, &disabled, None);
        assert!(r.passed());
        assert_eq!(r.to_string(), r#"hostile ring-overflow: backend state 5 (Closing), error "mapping the TX ring""#);
        assert!(!report(Mode::UngrantedRing, &connected, None).passed());

        let r = report(Mode::BadTxGref, &connected, Some(NETIF_RSP_ERROR));
        assert!(r.passed());
        assert_eq!(r.to_string(), "hostile bad-tx-gref: TX status -1, backend state 4 (Connected), no error");
        assert!(!report(Mode::BadTxGref, &connected, Some(NETIF_RSP_OKAY)).passed());
        assert!(!report(Mode::BadTxGref, &connected, Some(NETIF_RSP_DROPPED)).passed());
        assert!(!report(Mode::BadTxGref, &disabled, Some(NETIF_RSP_ERROR)).passed());

        let dropped = |statuses: Vec<i16>| Report {
            statuses,
            want: vec![NETIF_RSP_ERROR; 2],
            ..Report::new(Mode::Chain20, connected.clone())
        };
        assert!(dropped(vec![NETIF_RSP_ERROR; 2]).passed());
        assert!(!dropped(vec![NETIF_RSP_ERROR]).passed());
        assert!(!dropped(vec![NETIF_RSP_OKAY; 2]).passed());
        let r = Report { ok: false, ..Report::new(Mode::NotifyStorm, connected.clone()) };
        assert!(!r.passed());
        assert!(Report::new(Mode::NotifyStorm, connected).passed());
    }

    #[test]
    fn every_mode_is_listed_once() {
        let mut names: Vec<_> = Mode::EVERY.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mode::EVERY.len());
        assert!(Mode::ALL.iter().all(|m| Mode::EVERY.contains(m)));
    }
}
