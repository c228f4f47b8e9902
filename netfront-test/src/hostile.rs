//! Hostile frontend modes: a frontend that grants nonsense, to check that a backend disables
//! only the offending vif (an `error` node in its backend directory, state Closing) and
//! stays alive, as Linux netback does.
//!
//! * [`Mode::UngrantedRing`]: the handshake of [`Netfront::connect`], but `tx-ring-ref`
//!   names [`UNGRANTED_REF`], a grant we never made; every other key is good;
//! * [`Mode::RingOverflow`]: a proper connection, then a TX `req_prod` [`OVERFLOW_RINGS`]
//!   rings beyond `rsp_prod`, and a notification;
//! * [`Mode::BadTxGref`]: a proper connection, then one TX request naming
//!   [`UNGRANTED_REF`]; the backend must answer it `NETIF_RSP_ERROR` and keep the vif.
//!
//! What the backend did is read from its directory (the path in our `backend` key, which
//! the toolstack lets the frontend domain read) into a [`BackendView`].

use crate::device::{DeviceError, Netfront};
use crate::xenbus::{self, XenbusError, XenbusState};
use grant::{Access, EventChannel, EventChannels, GrantAlloc, GrantRef};
use netif::abi::{NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY};
use netif::{FrontRing, RingKind, RxRing, TxRing};
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
    #[error("unknown hostile mode {name:?} (known: ungranted-ring, ring-overflow, bad-tx-gref)")]
    UnknownMode { name: String },
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

/// What the hostile frontend does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Publish a `tx-ring-ref` we never granted, go Connected.
    UngrantedRing,
    /// Connect, then publish a TX `req_prod` far beyond what the ring holds.
    RingOverflow,
    /// Connect, then post one TX request naming a grant we never made.
    BadTxGref,
}

impl Mode {
    /// Every mode, in the order the lab runs them.
    pub const ALL: [Mode; 3] = [Mode::UngrantedRing, Mode::RingOverflow, Mode::BadTxGref];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::UngrantedRing => "ungranted-ring",
            Mode::RingOverflow => "ring-overflow",
            Mode::BadTxGref => "bad-tx-gref",
        }
    }

    /// Whether the backend must disable the vif (otherwise it must keep it Connected).
    pub fn expects_disabled(self) -> bool {
        !matches!(self, Mode::BadTxGref)
    }
}

impl FromStr for Mode {
    type Err = HostileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| HostileError::UnknownMode { name: s.to_owned() })
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
}

impl Report {
    /// The backend did what Linux netback does: disabled the vif with an error, or (for a
    /// bad TX grant) answered `NETIF_RSP_ERROR` and kept the vif Connected without error.
    pub fn passed(&self) -> bool {
        if self.mode.expects_disabled() {
            self.view.disabled()
        } else {
            self.tx_status == Some(NETIF_RSP_ERROR)
                && self.view.state == Some(XenbusState::Connected)
                && self.view.error.is_none()
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostile {}: ", self.mode)?;
        if let Some(status) = self.tx_status {
            write!(f, "TX status {status}, ")?;
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
    Ok(Report { mode: Mode::UngrantedRing, view, tx_status: None })
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
    Ok(Report { mode: Mode::RingOverflow, view, tx_status: None })
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
    Ok(Report { mode: Mode::BadTxGref, view, tx_status: Some(status) })
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
        for mode in Mode::ALL {
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
        let report = |mode, view: &BackendView, tx_status| Report { mode, view: view.clone(), tx_status };

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
    }
}
