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

/// Pages another domain granted to us, mapped contiguously into this process: one page
/// for [`GrantOps::map`](crate::GrantOps::map), `grefs().len()` pages for
/// [`GrantOps::map_many`](crate::GrantOps::map_many), page `i` being `grefs()[i]`.
///
/// Invariant: the region is unmapped before the release hook runs, so the hypervisor never
/// sees a grant released while we can still touch its page.
pub struct GrantMapping {
    region: Option<MmapRegion>,
    domid: DomId,
    grefs: Vec<GrantRef>,
    access: Access,
    release: Option<Box<dyn Unmap>>,
}

impl GrantMapping {
    /// Wraps a one-page `region` mapped from `domid`'s grant `gref`; `release` runs after
    /// the region is unmapped.
    pub fn new(region: MmapRegion, domid: DomId, gref: GrantRef, access: Access, release: Box<dyn Unmap>) -> Self {
        Self::new_many(region, domid, vec![gref], access, release)
    }

    /// Wraps `region` (at least `grefs.len()` pages; `grefs` not empty), page `i` mapped
    /// from `domid`'s grant `grefs[i]`; `release` runs after the region is dropped, and must
    /// unmap it first if the region does not own its mapping.
    pub fn new_many(
        region: MmapRegion,
        domid: DomId,
        grefs: Vec<GrantRef>,
        access: Access,
        release: Box<dyn Unmap>,
    ) -> Self {
        debug_assert!(!grefs.is_empty() && region.len() >= grefs.len() * PAGE_SIZE);
        Self { region: Some(region), domid, grefs, access, release: Some(release) }
    }

    /// Every page as one volatile slice (one page for a [`GrantOps::map`](crate::GrantOps::map)).
    pub fn slice(&self) -> VolatileSlice<'_> {
        // The constructor guarantees a region of at least `grefs.len()` pages.
        self.get_slice(0, self.grefs.len() * PAGE_SIZE).expect("grant mapping spans its pages")
    }

    /// Page `index` as volatile memory, or `None` past the last page.
    pub fn page(&self, index: usize) -> Option<VolatileSlice<'_>> {
        if index >= self.grefs.len() {
            return None;
        }
        self.get_slice(index * PAGE_SIZE, PAGE_SIZE).ok()
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.grefs.len()
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The grant reference the (first) page was mapped from.
    pub fn gref(&self) -> GrantRef {
        self.grefs[0]
    }

    /// The grant reference of each page, in order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
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
            .field("grefs", &self.grefs)
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
