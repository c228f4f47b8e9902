//! Owned views of shared pages: a mapped foreign grant, and pages we granted away.

use crate::{Access, DomId, GrantRef, PAGE_SIZE};
use std::fmt;
use std::ops::Deref;
use vm_memory::{MmapRegion, VolatileMemory, VolatileSlice};

/// What must happen after the memory of a [`GrantMapping`] or [`SharedPages`] is unmapped
/// from our address space: `UNMAP_GRANT_REF`, ending foreign access, or their sim twins.
pub trait Unmap: Send + Sync + fmt::Debug {
    /// Runs once, after the region has been unmapped.
    fn unmap(&mut self);
}

/// One page another domain granted to us, mapped into this process.
///
/// Invariant: the region is unmapped before the release hook runs, so the hypervisor never
/// sees the grant released while we can still touch the page.
pub struct GrantMapping {
    region: Option<MmapRegion>,
    domid: DomId,
    gref: GrantRef,
    access: Access,
    release: Option<Box<dyn Unmap>>,
}

impl GrantMapping {
    /// Wraps a one-page `region` mapped from `domid`'s grant `gref`; `release` runs after
    /// the region is unmapped.
    pub fn new(region: MmapRegion, domid: DomId, gref: GrantRef, access: Access, release: Box<dyn Unmap>) -> Self {
        debug_assert!(region.len() >= PAGE_SIZE);
        Self { region: Some(region), domid, gref, access, release: Some(release) }
    }

    /// The whole page as volatile memory.
    pub fn slice(&self) -> VolatileSlice<'_> {
        // The constructor guarantees a region of at least one page.
        self.get_slice(0, PAGE_SIZE).expect("grant mapping is one page")
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The grant reference this page was mapped from.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Whether we may write the page.
    pub fn access(&self) -> Access {
        self.access
    }
}

impl Deref for GrantMapping {
    type Target = MmapRegion;
    fn deref(&self) -> &MmapRegion {
        self.region.as_ref().expect("region lives until drop")
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        drop(self.region.take());
        if let Some(mut release) = self.release.take() {
            release.unmap();
        }
    }
}

impl fmt::Debug for GrantMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantMapping")
            .field("domid", &self.domid)
            .field("gref", &self.gref)
            .field("access", &self.access)
            .finish()
    }
}

/// Pages of our own memory granted to another domain, mapped contiguously in this process.
///
/// Page `i` of the region is granted as `grefs()[i]`. Dropping unmaps the region and then
/// revokes the grants.
pub struct SharedPages {
    region: Option<MmapRegion>,
    grefs: Vec<GrantRef>,
    domid: DomId,
    access: Access,
    release: Option<Box<dyn Unmap>>,
}

impl SharedPages {
    /// Wraps `region` (exactly `grefs.len()` pages) granted to `domid`.
    pub fn new(
        region: MmapRegion,
        grefs: Vec<GrantRef>,
        domid: DomId,
        access: Access,
        release: Box<dyn Unmap>,
    ) -> Self {
        debug_assert_eq!(region.len(), grefs.len() * PAGE_SIZE);
        Self { region: Some(region), grefs, domid, access, release: Some(release) }
    }

    /// The grant reference of each page, in order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.grefs.len()
    }

    /// Page `index` as volatile memory, or `None` past the end.
    pub fn page(&self, index: usize) -> Option<VolatileSlice<'_>> {
        if index >= self.grefs.len() {
            return None;
        }
        self.get_slice(index * PAGE_SIZE, PAGE_SIZE).ok()
    }

    /// The domain the pages are granted to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// What the peer may do with the pages.
    pub fn access(&self) -> Access {
        self.access
    }
}

impl Deref for SharedPages {
    type Target = MmapRegion;
    fn deref(&self) -> &MmapRegion {
        self.region.as_ref().expect("region lives until drop")
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        drop(self.region.take());
        if let Some(mut release) = self.release.take() {
            release.unmap();
        }
    }
}

impl fmt::Debug for SharedPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPages")
            .field("domid", &self.domid)
            .field("grefs", &self.grefs)
            .field("access", &self.access)
            .finish()
    }
}
