//! Opening the Xen device files, with errors that say what to do about a failure.

use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{FileOffset, MmapRegion};

/// One of the Xen device nodes, with the kernel module that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    /// `gntdev`: mapping and copying grants of other domains.
    Gntdev,
    /// `gntalloc`: granting our pages to other domains.
    Gntalloc,
    /// `evtchn`: event channels.
    Evtchn,
}

impl Node {
    fn file_name(self) -> &'static str {
        match self {
            Self::Gntdev => "gntdev",
            Self::Gntalloc => "gntalloc",
            Self::Evtchn => "evtchn",
        }
    }

    fn module(self) -> &'static str {
        match self {
            Self::Gntdev => "xen-gntdev",
            Self::Gntalloc => "xen-gntalloc",
            Self::Evtchn => "xen-evtchn",
        }
    }
}

/// Why a Xen device file could not be opened. Each message is one line ending in what to do.
#[derive(Debug, thiserror::Error)]
pub enum XenOpenError {
    /// The node does not exist (or its driver is not there behind it).
    #[error(
        "{} is missing: this is not a Xen dom0, or the {module} module is not loaded (modprobe {module})",
        path.display()
    )]
    Missing {
        /// The device path.
        path: PathBuf,
        /// The kernel module that provides it.
        module: &'static str,
        /// What `open(2)` said.
        errno: Errno,
    },
    /// Something other than a character device sits at the path.
    #[error(
        "{} is not a character device: this is not a Xen dom0, or the {module} module is not loaded \
         (modprobe {module})",
        path.display()
    )]
    NotADevice {
        /// The device path.
        path: PathBuf,
        /// The kernel module that provides it.
        module: &'static str,
    },
    /// We may not open it.
    #[error("{}: permission denied: run as root", path.display())]
    PermissionDenied {
        /// The device path.
        path: PathBuf,
        /// `EACCES` or `EPERM`.
        errno: Errno,
    },
    /// Any other failure of `open(2)` or `fstat(2)`.
    #[error("opening {} failed: {errno}", path.display())]
    Open {
        /// The device path.
        path: PathBuf,
        /// What the kernel said.
        errno: Errno,
    },
}

impl XenOpenError {
    /// The errno behind the failure (`ENODEV` for something that is not a device).
    pub fn errno(&self) -> Errno {
        match self {
            Self::Missing { errno, .. } | Self::PermissionDenied { errno, .. } | Self::Open { errno, .. } => *errno,
            Self::NotADevice { .. } => Errno::ENODEV,
        }
    }

    /// As an `io::Error` of the matching kind, keeping this error as its message and source.
    pub(super) fn into_io(self) -> io::Error {
        io::Error::new(io::Error::from(self.errno()).kind(), self)
    }

    /// Sorts a failed `open(2)` of `node` at `path`.
    fn classify(node: Node, path: PathBuf, errno: Errno) -> Self {
        match errno {
            // ENODEV/ENXIO: a stale node whose driver is gone; ENOTDIR: no `xen` directory.
            Errno::ENOENT | Errno::ENODEV | Errno::ENXIO | Errno::ENOTDIR => {
                Self::Missing { path, module: node.module(), errno }
            }
            Errno::EACCES | Errno::EPERM => Self::PermissionDenied { path, errno },
            errno => Self::Open { path, errno },
        }
    }
}

/// An open device file and its path (for messages). Cloning shares the open file.
#[derive(Debug, Clone)]
pub(super) struct Device {
    pub file: Arc<File>,
    pub path: Arc<Path>,
}

impl Device {
    /// Opens `dir/<node>` read-write and close-on-exec (and nonblocking if asked), and
    /// checks that it is a character device.
    pub(super) fn open(dir: &Path, node: Node, nonblocking: bool) -> Result<Self, XenOpenError> {
        let path = dir.join(node.file_name());
        let errno_of = |e: io::Error| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
        let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
        let file = match OpenOptions::new().read(true).write(true).custom_flags(flags).open(&path) {
            Ok(file) => file,
            Err(e) => return Err(XenOpenError::classify(node, path, errno_of(e))),
        };
        match file.metadata() {
            Ok(meta) if meta.file_type().is_char_device() => {}
            Ok(_) => return Err(XenOpenError::NotADevice { path, module: node.module() }),
            Err(e) => return Err(XenOpenError::Open { path, errno: errno_of(e) }),
        }
        tracing::debug!(path = %path.display(), "opened Xen device");
        Ok(Self { file: Arc::new(file), path: path.into() })
    }

    /// The path, for messages.
    pub(super) fn path(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    /// Maps `len` bytes at mmap offset `index` (`MAP_SHARED`), as the driver handed it out.
    pub(super) fn mmap(&self, index: u64, len: usize, prot: i32) -> Result<MmapRegion, Errno> {
        MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(self.file.clone(), index))
            .with_mmap_prot(prot)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| match e {
                MmapRegionError::Mmap(e) => e.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
                // The builder refuses only what we never ask for (MAP_FIXED, raw pointers).
                _ => Errno::EINVAL,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_are_sorted_by_errno() {
        let path = || PathBuf::from("/dev/xen/evtchn");
        for errno in [Errno::ENOENT, Errno::ENODEV, Errno::ENXIO, Errno::ENOTDIR] {
            let e = XenOpenError::classify(Node::Evtchn, path(), errno);
            assert!(matches!(e, XenOpenError::Missing { .. }), "{errno}: {e:?}");
            assert_eq!(e.errno(), errno);
        }
        for errno in [Errno::EACCES, Errno::EPERM] {
            let e = XenOpenError::classify(Node::Gntdev, path(), errno);
            assert!(matches!(e, XenOpenError::PermissionDenied { .. }), "{errno}: {e:?}");
        }
        let e = XenOpenError::classify(Node::Gntdev, path(), Errno::EMFILE);
        assert!(matches!(e, XenOpenError::Open { errno: Errno::EMFILE, .. }), "{e:?}");
    }

    #[test]
    fn messages_say_what_to_do() {
        let path = PathBuf::from("/dev/xen/gntdev");
        let e = XenOpenError::classify(Node::Gntdev, path.clone(), Errno::ENOENT);
        assert_eq!(
            e.to_string(),
            "/dev/xen/gntdev is missing: this is not a Xen dom0, or the xen-gntdev module is not loaded \
             (modprobe xen-gntdev)"
        );
        let e = XenOpenError::classify(Node::Evtchn, PathBuf::from("/dev/xen/evtchn"), Errno::EACCES);
        assert_eq!(e.to_string(), "/dev/xen/evtchn: permission denied: run as root");
        let e = XenOpenError::NotADevice { path, module: Node::Gntalloc.module() };
        assert!(e.to_string().ends_with("(modprobe xen-gntalloc)"), "{e}");
        let io = XenOpenError::classify(Node::Evtchn, PathBuf::from("/x"), Errno::EACCES).into_io();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(io.to_string(), "/x: permission denied: run as root");
    }
}
