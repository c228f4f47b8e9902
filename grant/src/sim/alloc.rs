//! Sharing our own pages (the sim's gntalloc): a free-frame and free-gref allocator over
//! our domain's memory and grant table, with gntalloc's deferred free.
//!
//! Invariants:
//! * a frame is free iff no grant entry we wrote names it and no [`SharedPages`] maps it;
//! * a gref is free iff its entry is `GTF_invalid` and we own it (never below
//!   [`GNTTAB_NR_RESERVED_ENTRIES`]);
//! * a grant whose revocation failed (the peer still has it pinned) is *parked* with its
//!   frame: neither is reused until a later revocation attempt succeeds.

use super::gnttab::{GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS, GTF_READONLY, GTF_TYPE_MASK, GrantEntryV1};
use super::memory::{DomainMemory, map_shared, punch_hole};
use crate::{Access, DomId, GrantError, GrantRef, GrantStatus, PAGE_SIZE, SharedPages, Unmap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One granted page: its gref and the frame it names.
type Grant = (GrantRef, u32);

struct State {
    /// `true` where the frame is in use (shared or parked).
    used_frames: Vec<bool>,
    /// Where the next search for free frames starts (next fit).
    hint: usize,
    free_grefs: Vec<GrantRef>,
    parked: Vec<Grant>,
}

/// The allocator of one domain process. `claim` obtains the host's permission to allocate
/// (one process per domain may); until it succeeded the state is `None`.
pub(crate) struct Allocator {
    own: Arc<DomainMemory>,
    state: Mutex<Option<State>>,
    claim: Box<dyn Fn() -> io::Result<()> + Send + Sync>,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator").field("domid", &self.own.domid()).finish_non_exhaustive()
    }
}

impl Allocator {
    pub(crate) fn new(own: Arc<DomainMemory>, claim: Box<dyn Fn() -> io::Result<()> + Send + Sync>) -> Self {
        Self { own, state: Mutex::new(None), claim }
    }

    /// Locks the state, claiming the allocator on first use. Entries left in the table by a
    /// previous holder (a dom0 process that died) are adopted as parked grants.
    fn lock(&self) -> io::Result<MutexGuard<'_, Option<State>>> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            (self.claim)()?;
            let mut state = State {
                used_frames: vec![false; self.own.mem_pages() as usize],
                hint: 0,
                free_grefs: Vec::new(),
                parked: Vec::new(),
            };
            let table = &self.own.table;
            // Reverse order so that `pop` hands out the lowest grefs first.
            for gref in (GNTTAB_NR_RESERVED_ENTRIES..table.entries()).rev() {
                let entry = table.read(gref).unwrap_or_default();
                if entry.flags == 0 {
                    state.free_grefs.push(gref);
                } else {
                    if entry.flags & GTF_TYPE_MASK == GTF_PERMIT_ACCESS
                        && let Some(used) = state.used_frames.get_mut(entry.frame as usize)
                    {
                        *used = true;
                    }
                    state.parked.push((gref, entry.frame));
                }
            }
            *guard = Some(state);
        }
        Ok(guard)
    }

    /// `GrantAlloc::share`: `pages` contiguous zeroed frames granted to `domid`.
    pub(crate) fn share(
        self: &Arc<Self>,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<SharedPages, GrantError> {
        let refused = |status| GrantError::Share { domid, pages, status };
        if !self.own.alive() {
            return Err(refused(GrantStatus::BadDomain));
        }
        if pages == 0 {
            return Err(refused(GrantStatus::GeneralError));
        }
        let mut guard = self
            .lock()
            .map_err(|source| GrantError::Hypervisor { context: "claiming the allocator".into(), source })?;
        let state = guard.as_mut().expect("lock() initialises the state");
        self.retry_parked(state);
        if state.free_grefs.len() < pages {
            return Err(refused(GrantStatus::NoSpace));
        }
        let first = find_run(&state.used_frames, state.hint, pages).ok_or(refused(GrantStatus::NoSpace))?;
        let region =
            map_shared(self.own.mem_file(), first * PAGE_SIZE, pages * PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE)
                .map_err(|source| GrantError::Hypervisor { context: format!("mapping {pages} of our pages"), source })?;
        let flags = match access {
            Access::ReadOnly => GTF_PERMIT_ACCESS | GTF_READONLY,
            Access::ReadWrite => GTF_PERMIT_ACCESS,
        };
        let mut grants = Vec::with_capacity(pages);
        for (i, used) in state.used_frames[first..first + pages].iter_mut().enumerate() {
            *used = true;
            let gref = state.free_grefs.pop().expect("counted above");
            let frame = u32::try_from(first + i).expect("frames are bounded by mem_pages: u32");
            // Published only after the mapping exists: nothing to undo once the peer can map.
            self.own.table.publish(gref, GrantEntryV1 { flags, domid, frame });
            grants.push((gref, frame));
        }
        state.hint = first + pages;
        let grefs = grants.iter().map(|g| g.0).collect();
        let release = Box::new(Release { alloc: self.clone(), grants });
        Ok(SharedPages::new(region, grefs, domid, access, release))
    }

    /// Revokes each grant; parks those still pinned by the peer.
    fn release(&self, grants: &[Grant]) {
        let Ok(mut guard) = self.lock() else { return };
        let state = guard.as_mut().expect("lock() initialises the state");
        state.parked.extend_from_slice(grants);
        self.retry_parked(state);
    }

    /// Retries every parked revocation; returns how many remain parked.
    pub(crate) fn retry(&self) -> usize {
        // Without a claim nothing was ever shared: do not claim just to find that out.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map_or(0, |state| {
            self.retry_parked(state);
            state.parked.len()
        })
    }

    fn retry_parked(&self, state: &mut State) {
        let table = &self.own.table;
        state.parked.retain(|&(gref, frame)| {
            if !table.try_revoke(gref) {
                return true;
            }
            state.free_grefs.push(gref);
            if let Some(used) = state.used_frames.get_mut(frame as usize) {
                // Zero the page for its next user; the hole also returns the memory.
                if let Err(e) = punch_hole(self.own.mem_file(), frame as usize * PAGE_SIZE, PAGE_SIZE) {
                    tracing::warn!(frame, error = %e, "could not zero a freed frame; leaking it");
                    return false;
                }
                *used = false;
                state.hint = state.hint.min(frame as usize);
            }
            false
        });
    }
}

/// First index of `n` consecutive `false` in `used`, searching from `hint` and wrapping.
fn find_run(used: &[bool], hint: usize, n: usize) -> Option<usize> {
    let search = |from: usize, to: usize| {
        let mut run = 0;
        for (i, &u) in used.iter().enumerate().take(to).skip(from) {
            run = if u { 0 } else { run + 1 };
            if run == n {
                return Some(i + 1 - n);
            }
        }
        None
    };
    let hint = hint.min(used.len());
    search(hint, used.len()).or_else(|| search(0, (hint + n).min(used.len())))
}

/// Revokes a [`SharedPages`]' grants once its region is unmapped.
struct Release {
    alloc: Arc<Allocator>,
    grants: Vec<Grant>,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release").field("grants", &self.grants).finish()
    }
}

impl Unmap for Release {
    fn unmap(&mut self) {
        let grants = std::mem::take(&mut self.grants);
        self.alloc.release(&grants);
    }
}

#[cfg(test)]
mod tests {
    use super::find_run;

    #[test]
    fn find_run_next_fit_and_wrap() {
        let used = [true, false, false, true, false, false, false];
        assert_eq!(find_run(&used, 0, 2), Some(1));
        assert_eq!(find_run(&used, 3, 2), Some(4));
        assert_eq!(find_run(&used, 5, 2), Some(5));
        assert_eq!(find_run(&used, 6, 2), Some(1));
        assert_eq!(find_run(&used, 0, 3), Some(4));
        assert_eq!(find_run(&used, 0, 4), None);
        assert_eq!(find_run(&used, 99, 1), Some(1));
    }
}
