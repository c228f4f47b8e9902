//! The per-vif state file of a hitless restart (`docs/restart.md`): the private ring indices
//! (`req_cons`, `rsp_prod_pvt`) that the shared ring page does not hold, and for every
//! consumed, not yet answered slot the response it gets if the process dies before
//! answering it. A new daemon process adopts the vif from this file and the shared rings.
//!
//! The file is one page on a tmpfs (`/run/netback/vifs/<domid>.<handle>`), mapped
//! `MAP_SHARED`; the worker updates it with plain atomic stores, no syscall. Stores of a
//! process killed by a signal are not lost: the page belongs to the file.
//!
//! Invariants the data path keeps, per ring (ring arithmetic):
//! * `fallback[i & mask]` is written for every slot `i` before `req_cons` covers it, so the
//!   file's `[rsp_prod_pvt, req_cons)` all have a fallback of this connection;
//! * the file's `req_cons` covers a slot before any response is written into it, so a slot
//!   the file calls unconsumed still holds the frontend's request;
//! * the file's `rsp_prod_pvt` is stored after the responses it covers are written and
//!   before the shared `rsp_prod` is pushed past them, so `rsp_prod ≤ rsp_prod_pvt ≤
//!   req_cons` and the slots `< rsp_prod_pvt` hold their final responses.
//!
//! A fallback needs only what survives in the journal itself (the request's `id` and the
//! status to give), never the slot: a slot being answered may hold half a response.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use netif::{RingKind, RxRing, TxRing};
use vm_memory::{FileOffset, MmapRegion, VolatileMemory};

use super::{EventChannelSpec, RingParams, VifId};

/// "NBJ1", little end first.
const MAGIC: u32 = u32::from_le_bytes(*b"NBJ1");
const VERSION: u32 = 1;
/// The file's size: one page.
const FILE_LEN: usize = 4096;
/// Slots per ring: both netif rings hold 256 entries in one page.
const SLOTS: usize = 256;
const _: () = assert!(TxRing::SIZE as usize == SLOTS && RxRing::SIZE as usize == SLOTS);

// Header words (byte offsets).
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 4;
const DOMID_AT: usize = 8;
const HANDLE_AT: usize = 12;
const TX_REF_AT: usize = 16;
const RX_REF_AT: usize = 20;
const TX_PORT_AT: usize = 24;
/// The RX port when split, [`SHARED_PORT`] otherwise.
const RX_PORT_AT: usize = 28;
const SHARED_PORT: u32 = u32::MAX;
/// Each ring's part: `req_cons`, `rsp_prod_pvt`, then `SLOTS` fallback words.
const TX_AT: usize = 64;
const RX_AT: usize = TX_AT + RING_LEN;
const RING_LEN: usize = 8 + SLOTS * 4;
const _: () = assert!(RX_AT + RING_LEN <= FILE_LEN);

/// Which ring of the vif.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The TX ring (guest → backend).
    Tx,
    /// The RX ring (backend → guest).
    Rx,
}

impl Side {
    fn base(self) -> usize {
        match self {
            Side::Tx => TX_AT,
            Side::Rx => RX_AT,
        }
    }
}

/// Failures creating or reading a state file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Creating the state directory.
    #[error("creating the state directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating, sizing or renaming the file.
    #[error("writing the state file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Opening an existing file.
    #[error("opening the state file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Mapping the file.
    #[error("mapping the state file {path}")]
    Map {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The file is not a state file of this version, or not of this vif.
    #[error("the state file {path} is not a version {VERSION} state file of {id}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The vif it was opened for.
        id: VifId,
    },
}

/// What a ring's part of the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedIndices {
    /// Requests consumed.
    pub req_cons: u32,
    /// Responses written (published or not).
    pub rsp_prod_pvt: u32,
}

/// One vif's state file, mapped.
#[derive(Debug)]
pub struct VifJournal {
    region: MmapRegion,
    path: PathBuf,
    id: VifId,
}

impl VifJournal {
    /// Where the state file of `id` lives in `dir`.
    pub fn path_in(dir: &Path, id: VifId) -> PathBuf {
        dir.join(format!("{}.{}", id.domid, id.handle))
    }

    /// Creates (or replaces) the state file of `id` for `rings`, with both rings at the
    /// given indices and no slot pending. The file appears complete or not at all.
    ///
    /// # Errors
    /// [`JournalError::CreateDir`], [`JournalError::Write`], [`JournalError::Map`].
    pub fn create(
        dir: &Path,
        id: VifId,
        rings: &RingParams,
        tx: SavedIndices,
        rx: SavedIndices,
    ) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir { path: dir.to_owned(), source })?;
        let path = Self::path_in(dir, id);
        let fresh = dir.join(format!(".{}.{}.new", id.domid, id.handle));
        let write_err = |source| JournalError::Write { path: path.clone(), source };
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh).map_err(write_err)?;
        file.set_len(FILE_LEN as u64).map_err(write_err)?;
        let region = map(&file, &fresh)?;
        let journal = Self { region, path: path.clone(), id };
        let (tx_port, rx_port) = match rings.event_channels {
            EventChannelSpec::Shared(port) => (port, SHARED_PORT),
            EventChannelSpec::Split { tx, rx } => (tx, rx),
        };
        for (at, value) in [
            (VERSION_AT, VERSION),
            (DOMID_AT, u32::from(id.domid)),
            (HANDLE_AT, id.handle),
            (TX_REF_AT, rings.tx_ring_ref),
            (RX_REF_AT, rings.rx_ring_ref),
            (TX_PORT_AT, tx_port),
            (RX_PORT_AT, rx_port),
        ] {
            journal.word(at).store(value, Ordering::Relaxed);
        }
        for (side, saved) in [(Side::Tx, tx), (Side::Rx, rx)] {
            journal.word(side.base()).store(saved.req_cons, Ordering::Relaxed);
            journal.word(side.base() + 4).store(saved.rsp_prod_pvt, Ordering::Relaxed);
        }
        journal.word(MAGIC_AT).store(MAGIC, Ordering::Release);
        std::fs::rename(&fresh, &path).map_err(write_err)?;
        Ok(journal)
    }

    /// Opens the state file of `id` in `dir`; `Ok(None)` if there is none.
    ///
    /// # Errors
    /// [`JournalError::Open`], [`JournalError::Map`], and [`JournalError::Foreign`] for a
    /// file of another size, version or vif.
    pub fn open(dir: &Path, id: VifId) -> Result<Option<Self>, JournalError> {
        let path = Self::path_in(dir, id);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JournalError::Open { path, source }),
        };
        let len = file.metadata().map_err(|source| JournalError::Open { path: path.clone(), source })?.len();
        if len != FILE_LEN as u64 {
            return Err(JournalError::Foreign { path, id });
        }
        let region = map(&file, &path)?;
        let journal = Self { region, path, id };
        let load = |at| journal.word(at).load(Ordering::Acquire);
        if load(MAGIC_AT) != MAGIC
            || load(VERSION_AT) != VERSION
            || load(DOMID_AT) != u32::from(id.domid)
            || load(HANDLE_AT) != id.handle
        {
            return Err(JournalError::Foreign { path: journal.path.clone(), id });
        }
        Ok(Some(journal))
    }

    /// The rings and event channels the file was made for.
    pub fn rings(&self) -> RingParams {
        let load = |at| self.word(at).load(Ordering::Relaxed);
        let (tx_port, rx_port) = (load(TX_PORT_AT), load(RX_PORT_AT));
        RingParams {
            tx_ring_ref: load(TX_REF_AT),
            rx_ring_ref: load(RX_REF_AT),
            event_channels: if rx_port == SHARED_PORT {
                EventChannelSpec::Shared(tx_port)
            } else {
                EventChannelSpec::Split { tx: tx_port, rx: rx_port }
            },
        }
    }

    /// What the file says of `side`'s private indices.
    pub fn saved(&self, side: Side) -> SavedIndices {
        let base = side.base();
        SavedIndices {
            req_cons: self.word(base).load(Ordering::Acquire),
            rsp_prod_pvt: self.word(base + 4).load(Ordering::Acquire),
        }
    }

    /// The response slot `idx` of `side` gets if it is consumed and not answered: the
    /// request's `id` and a `NETIF_RSP_*` status.
    pub fn fallback(&self, side: Side, idx: u32) -> (u16, i16) {
        let word = self.word(fallback_at(side, idx)).load(Ordering::Relaxed);
        (word as u16, (word >> 16) as u16 as i16)
    }

    /// Records that slot `idx` of `side` was consumed, and the response it gets should the
    /// process die before answering it. Call [`VifJournal::consumed_to`] after the slots of
    /// a drain are recorded.
    pub fn record(&self, side: Side, idx: u32, id: u16, status: i16) {
        let word = u32::from(id) | u32::from(status as u16) << 16;
        self.word(fallback_at(side, idx)).store(word, Ordering::Relaxed);
    }

    /// Stores `side`'s `req_cons` (after the fallbacks of the slots it covers, and before
    /// any of them is answered).
    pub fn consumed_to(&self, side: Side, req_cons: u32) {
        self.word(side.base()).store(req_cons, Ordering::Release);
    }

    /// Stores `side`'s `rsp_prod_pvt` (after the responses it covers are written, before
    /// they are pushed).
    pub fn answered_to(&self, side: Side, rsp_prod_pvt: u32) {
        self.word(side.base() + 4).store(rsp_prod_pvt, Ordering::Release);
    }

    /// Deletes the file: the vif is no longer served (a restart must not adopt it).
    pub fn remove(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "{}: removing the state file {}", self.id, self.path.display()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        self.region.get_atomic_ref::<AtomicU32>(at).expect("every word lies in the page and is aligned")
    }
}

fn fallback_at(side: Side, idx: u32) -> usize {
    side.base() + 8 + (idx as usize % SLOTS) * 4
}

fn map(file: &File, path: &Path) -> Result<MmapRegion, JournalError> {
    let file = file.try_clone().map_err(|source| JournalError::Open { path: path.to_owned(), source })?;
    MmapRegion::from_file(FileOffset::new(file, 0), FILE_LEN)
        .map_err(|source| JournalError::Map { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netback-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn rings() -> RingParams {
        RingParams { tx_ring_ref: 9, rx_ring_ref: 10, event_channels: EventChannelSpec::Split { tx: 3, rx: 4 } }
    }

    #[test]
    fn a_file_survives_its_writer_and_names_its_vif() {
        let dir = test_dir("survives");
        let id = VifId { domid: 7, handle: 1 };
        let start = SavedIndices { req_cons: 250, rsp_prod_pvt: 250 };
        let j = VifJournal::create(dir.as_path(), id, &rings(), start, start).unwrap();
        j.record(Side::Tx, 255, 17, -1);
        j.record(Side::Tx, 256, 18, 1);
        j.consumed_to(Side::Tx, 257);
        j.answered_to(Side::Tx, 255);
        j.record(Side::Rx, 250, 250, -1);
        drop(j);
        let j = VifJournal::open(dir.as_path(), id).unwrap().expect("the file");
        assert_eq!(j.rings(), rings());
        assert_eq!(j.saved(Side::Tx), SavedIndices { req_cons: 257, rsp_prod_pvt: 255 });
        assert_eq!(j.saved(Side::Rx), start);
        assert_eq!(j.fallback(Side::Tx, 255), (17, -1));
        // Index 256 wraps onto slot 0.
        assert_eq!(j.fallback(Side::Tx, 0), (18, 1));
        assert_eq!(j.fallback(Side::Rx, 250), (250, -1));
        assert!(matches!(VifJournal::open(dir.as_path(), VifId { domid: 7, handle: 2 }), Ok(None)));
        std::fs::copy(j.path(), VifJournal::path_in(dir.as_path(), VifId { domid: 8, handle: 1 })).unwrap();
        assert!(matches!(
            VifJournal::open(dir.as_path(), VifId { domid: 8, handle: 1 }),
            Err(JournalError::Foreign { .. })
        ));
        j.remove();
        assert!(VifJournal::open(dir.as_path(), id).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shared_channel_round_trips() {
        let dir = test_dir("shared");
        let id = VifId { domid: 1, handle: 0 };
        let shared = RingParams { event_channels: EventChannelSpec::Shared(5), ..rings() };
        let zero = SavedIndices { req_cons: 0, rsp_prod_pvt: 0 };
        VifJournal::create(dir.as_path(), id, &shared, zero, zero).unwrap();
        assert_eq!(VifJournal::open(dir.as_path(), id).unwrap().unwrap().rings(), shared);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
