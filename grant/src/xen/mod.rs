//! The real-Xen implementation of the grant traits, over Linux's Xen devices.
//!
//! [`XenHost`] opens `/dev/xen/gntdev` and checks `/dev/xen/evtchn` up front; it opens
//! `/dev/xen/gntalloc` on the first [`GrantAlloc::share`], so a backend never needs it.
//! Binaries pick it or the sim at run time with [`available`].
//!
//! How each call maps to the devices:
//!
//! * [`GrantOps::map`]: gntdev `IOCTL_GNTDEV_MAP_GRANT_REF` with one ref returns an mmap
//!   offset `index`; `mmap(4096, PROT_READ[|PROT_WRITE], MAP_SHARED, gntdev, index)` is
//!   where Xen maps the grant (`GNTMAP_readonly` when the mapping is not writable). Drop:
//!   `munmap`, then `IOCTL_GNTDEV_UNMAP_GRANT_REF {index, count: 1}`.
//! * [`GrantOps::map_many`]: the same with `count = n` refs in one variable-length request
//!   (built in a `u64` buffer, so the header's `index` is aligned), one `mmap` of `n`
//!   pages; drop: `munmap` of the `n` pages, one `IOCTL_GNTDEV_UNMAP_GRANT_REF {index, count: n}`.
//! * [`GrantOps::copy`]: one gntdev `IOCTL_GNTDEV_GRANT_COPY` over the batch; local ends
//!   are `virt` pointers, grant ends carry `GNTCOPY_source_gref`/`GNTCOPY_dest_gref`; each
//!   segment's `status` is read back as a [`GrantStatus`](crate::GrantStatus). gntdev fails
//!   a whole batch for a grant end that crosses its page and for local-to-local segments,
//!   so those are settled here instead: `GNTST_bad_copy_arg` for the first (as Xen and
//!   the sim do), an in-process copy for the second.
//! * [`GrantAlloc::share`]: gntalloc `IOCTL_GNTALLOC_ALLOC_GREF {domid, flags:
//!   GNTALLOC_FLAG_WRITABLE if read-write, count}` returns `index` and `gref_ids[count]`;
//!   `mmap(count * 4096, PROT_READ|PROT_WRITE, MAP_SHARED, gntalloc, index)`. Drop:
//!   `munmap`, then `IOCTL_GNTALLOC_DEALLOC_GREF {index, count}`.
//! * [`EventChannels::alloc_unbound`] / [`EventChannels::bind_interdomain`]: a new
//!   `/dev/xen/evtchn` file per channel (`O_RDWR|O_NONBLOCK|O_CLOEXEC`, so every channel
//!   has its own pollable descriptor), then `IOCTL_EVTCHN_BIND_UNBOUND_PORT` /
//!   `IOCTL_EVTCHN_BIND_INTERDOMAIN`, which return the local port.
//! * [`EventChannel::notify`](crate::EventChannel::notify): `IOCTL_EVTCHN_NOTIFY {port}`.
//! * [`EventChannel::take_pending`](crate::EventChannel::take_pending): a nonblocking
//!   `read` of `u32` ports (`EAGAIN`: nothing pending). The driver masks the port as it
//!   queues it.
//! * [`EventChannel::unmask`](crate::EventChannel::unmask): a `write` of the `u32` port.
//! * Drop of a [`XenEventChannel`]: `IOCTL_EVTCHN_UNBIND {port}`, then the file closes.
//!
//! Errors keep the errno and the device path: the crate's [`GrantError`]/[`EvtchnError`]
//! carry this module's [`GntdevError`], [`GntallocError`], [`EvtchnDeviceError`] or
//! [`XenOpenError`] inside their `io::Error` source (`get_ref()` + `downcast_ref` reads
//! them back); a refused bind carries Xen's errno in its `errno` field and the ioctl and
//! path in its `reason`.
//!
//! Differences from the sim that callers may see: a refused map is [`GrantError::Mmap`]
//! with `EINVAL` (gntdev reports no `GNTST_*` code for maps), and a refused share for want
//! of pages is `GNTST_no_space` when gntalloc's system-wide limit is reached.

mod abi;
mod device;
mod evtchn;
mod gntalloc;
mod gntdev;

pub use device::XenOpenError;
pub use evtchn::{EvtchnDeviceError, XenEventChannel};
pub use gntalloc::GntallocError;
pub use gntdev::GntdevError;

use crate::{
    Access, CopySegment, DomId, EventChannels, EvtchnError, EvtchnPort, GrantAlloc, GrantError, GrantMapping, GrantOps,
    GrantRef, SharedPages,
};
use device::{Device, Node};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Where Linux puts the Xen devices.
const XEN_DEV_DIR: &str = "/dev/xen";

/// `true` when `/dev/xen/gntdev` exists, i.e. this looks like a Xen dom0 (or domU) with
/// gntdev loaded. Whether it can be opened is [`XenHost::open`]'s to say.
pub fn available() -> bool {
    available_at(Path::new(XEN_DEV_DIR))
}

fn available_at(dir: &Path) -> bool {
    dir.join("gntdev").exists()
}

/// This domain's view of the real hypervisor: grant map and copy (gntdev), grant
/// allocation (gntalloc) and event channels (evtchn). Cheap to clone; usable from any
/// number of threads.
#[derive(Debug, Clone)]
pub struct XenHost {
    dir: Arc<Path>,
    gntdev: Device,
    /// Opened on the first `share`. A lost race opens a second file that is dropped unused.
    gntalloc: Arc<OnceLock<Device>>,
}

impl XenHost {
    /// Opens `/dev/xen/gntdev` and checks that `/dev/xen/evtchn` opens.
    pub fn open() -> Result<Self, XenOpenError> {
        Self::open_at(Path::new(XEN_DEV_DIR))
    }

    /// As [`XenHost::open`], with the devices under `dir` instead of `/dev/xen`.
    pub fn open_at(dir: &Path) -> Result<Self, XenOpenError> {
        let gntdev = Device::open(dir, Node::Gntdev, false)?;
        // Every channel opens its own file; this one only proves that they will open.
        drop(Device::open(dir, Node::Evtchn, true)?);
        Ok(Self { dir: dir.into(), gntdev, gntalloc: Arc::default() })
    }

    fn gntalloc(&self) -> Result<&Device, GrantError> {
        if let Some(dev) = self.gntalloc.get() {
            return Ok(dev);
        }
        let dev = Device::open(&self.dir, Node::Gntalloc, false)
            .map_err(|e| GrantError::Hypervisor { context: "opening gntalloc".into(), source: e.into_io() })?;
        Ok(self.gntalloc.get_or_init(|| dev))
    }
}

impl GrantOps for XenHost {
    fn map(&self, domid: DomId, gref: GrantRef, access: Access) -> Result<GrantMapping, GrantError> {
        gntdev::map(&self.gntdev, domid, gref, access)
    }

    fn map_many(&self, domid: DomId, grefs: &[GrantRef], access: Access) -> Result<GrantMapping, GrantError> {
        gntdev::map_many(&self.gntdev, domid, grefs, access)
    }

    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Result<(), GrantError> {
        gntdev::copy(&self.gntdev, segments)
    }
}

impl GrantAlloc for XenHost {
    fn share(&self, domid: DomId, pages: usize, access: Access) -> Result<SharedPages, GrantError> {
        gntalloc::share(self.gntalloc()?, domid, pages, access)
    }
}

impl EventChannels for XenHost {
    type Channel = XenEventChannel;

    fn alloc_unbound(&self, remote: DomId) -> Result<XenEventChannel, EvtchnError> {
        XenEventChannel::alloc_unbound(&self.dir, remote)
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: EvtchnPort) -> Result<XenEventChannel, EvtchnError> {
        XenEventChannel::bind_interdomain(&self.dir, remote, remote_port)
    }
}

#[cfg(test)]
mod tests;
