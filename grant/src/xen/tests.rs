//! What can be tested without Xen: opening (missing nodes, a regular file in place of a
//! device, lazy gntalloc), and the error plumbing of every call against `/dev/null`
//! standing in for each device (its ioctls fail with `ENOTTY`), including the copy
//! segments settled without the kernel.

use super::*;
use crate::{CopyPtr, GrantStatus};
use nix::errno::Errno;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use vm_memory::VolatileSlice;

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("grant-xen-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A `name` that opens as a character device (`/dev/null`).
    fn fake_device(&self, name: &str) -> &Self {
        std::os::unix::fs::symlink("/dev/null", self.0.join(name)).unwrap();
        self
    }

    fn regular_file(&self, name: &str) -> &Self {
        std::fs::write(self.0.join(name), b"").unwrap();
        self
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host whose three devices are all `/dev/null`.
fn null_host() -> (Scratch, XenHost) {
    let dir = Scratch::new();
    dir.fake_device("gntdev").fake_device("evtchn").fake_device("gntalloc");
    let host = XenHost::open_at(&dir.0).unwrap();
    (dir, host)
}

/// The module error inside an `io::Error` source.
fn inner<E: Error + 'static>(source: &std::io::Error) -> &E {
    source.get_ref().and_then(|e| e.downcast_ref::<E>()).unwrap_or_else(|| panic!("unexpected source {source:?}"))
}

#[test]
fn available_follows_the_gntdev_node() {
    let dir = Scratch::new();
    assert!(!available_at(&dir.0));
    dir.regular_file("evtchn");
    assert!(!available_at(&dir.0));
    dir.regular_file("gntdev");
    assert!(available_at(&dir.0));
}

#[test]
fn open_in_an_empty_dir_says_gntdev_is_missing() {
    let dir = Scratch::new();
    let e = XenHost::open_at(&dir.0).unwrap_err();
    assert!(matches!(e, XenOpenError::Missing { errno: Errno::ENOENT, module: "xen-gntdev", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{} is missing: this is not a Xen dom0, or the xen-gntdev module is not loaded (modprobe xen-gntdev)",
            dir.path("gntdev")
        )
    );
}

#[test]
fn open_refuses_a_regular_file_in_place_of_a_device() {
    let dir = Scratch::new();
    dir.regular_file("gntdev").regular_file("evtchn");
    let e = XenHost::open_at(&dir.0).unwrap_err();
    assert!(matches!(e, XenOpenError::NotADevice { module: "xen-gntdev", .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{} is not a character device", dir.path("gntdev"))), "{e}");

    let dir = Scratch::new();
    dir.fake_device("gntdev").regular_file("evtchn");
    let e = XenHost::open_at(&dir.0).unwrap_err();
    assert!(matches!(e, XenOpenError::NotADevice { module: "xen-evtchn", .. }), "{e:?}");
    assert!(e.to_string().ends_with("(modprobe xen-evtchn)"), "{e}");
}

#[test]
fn open_needs_evtchn_but_not_gntalloc() {
    let dir = Scratch::new();
    dir.fake_device("gntdev");
    let e = XenHost::open_at(&dir.0).unwrap_err();
    assert!(matches!(e, XenOpenError::Missing { module: "xen-evtchn", .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{} is missing", dir.path("evtchn"))), "{e}");

    dir.fake_device("evtchn");
    let host = XenHost::open_at(&dir.0).expect("gntalloc is opened on first use only");
    let Err(GrantError::Hypervisor { source, .. }) = host.share(1, 1, Access::ReadWrite) else {
        panic!("share without gntalloc succeeded or failed otherwise")
    };
    assert!(matches!(inner::<XenOpenError>(&source), XenOpenError::Missing { module: "xen-gntalloc", .. }));
    assert!(source.to_string().ends_with("(modprobe xen-gntalloc)"), "{source}");
}

#[test]
fn map_failure_carries_the_ioctl_errno_and_path() {
    let (dir, host) = null_host();
    let Err(GrantError::Hypervisor { context, source }) = host.map(5, 77, Access::ReadOnly) else {
        panic!("map on /dev/null succeeded or failed otherwise")
    };
    assert_eq!(context, "adding grant 77 of domain 5");
    let GntdevError::MapGrantRef { path, errno } = inner::<GntdevError>(&source) else { panic!("{source:?}") };
    assert_eq!((path.display().to_string(), *errno), (dir.path("gntdev"), Errno::ENOTTY));
}

#[test]
fn map_many_failure_carries_the_ioctl_errno_and_an_empty_list_is_refused() {
    let (dir, host) = null_host();
    let Err(GrantError::Hypervisor { context, source }) = host.map_many(5, &[77, 78, 79], Access::ReadOnly) else {
        panic!("map_many on /dev/null succeeded or failed otherwise")
    };
    assert_eq!(context, "adding 3 grants of domain 5 (first 77)");
    let GntdevError::MapGrantRef { path, errno } = inner::<GntdevError>(&source) else { panic!("{source:?}") };
    assert_eq!((path.display().to_string(), *errno), (dir.path("gntdev"), Errno::ENOTTY));
    let Err(GrantError::Hypervisor { source, .. }) = host.map_many(5, &[], Access::ReadOnly) else {
        panic!("an empty map_many succeeded or failed otherwise")
    };
    assert_eq!(inner::<GntdevError>(&source).errno(), Errno::EINVAL);
}

#[test]
fn copy_settles_refused_and_local_segments_without_the_kernel() {
    let (_dir, host) = null_host();
    let mut src = *b"0123456789abcdef";
    let mut dst = [0u8; 16];
    let mut other = [0u8; 16];
    let mut segs = vec![
        CopySegment::new(
            CopyPtr::Grant { domid: 1, gref: 8, offset: 4090 },
            CopyPtr::Local(VolatileSlice::from(&mut other[..])),
            7,
        ),
        CopySegment::new(CopyPtr::Local(VolatileSlice::from(&mut src[..])), CopyPtr::Local((&mut dst[..]).into()), 10),
    ];
    host.copy(&mut segs).expect("nothing reached /dev/null");
    assert_eq!(segs[0].status, GrantStatus::BadCopyArg);
    assert_eq!(segs[1].status, GrantStatus::Okay);
    drop(segs);
    assert_eq!(&dst, b"0123456789\0\0\0\0\0\0");
    host.copy(&mut []).expect("an empty batch is no ioctl");
}

#[test]
fn copy_failure_carries_the_ioctl_errno_and_short_buffers_fail_first() {
    let (_dir, host) = null_host();
    let mut buf = [0u8; 32];
    let grant = CopyPtr::Grant { domid: 1, gref: 8, offset: 0 };
    let mut segs = [CopySegment::new(grant, CopyPtr::Local(VolatileSlice::from(&mut buf[..])), 32)];
    let Err(GrantError::CopyBatch { segments: 1, source }) = host.copy(&mut segs) else {
        panic!("copy on /dev/null succeeded or failed otherwise")
    };
    assert!(matches!(inner::<GntdevError>(&source), GntdevError::GrantCopy { errno: Errno::ENOTTY, segments: 1, .. }));

    let grant = CopyPtr::Grant { domid: 1, gref: 8, offset: 0 };
    let mut segs = [CopySegment::new(grant, CopyPtr::Local(VolatileSlice::from(&mut buf[..])), 33)];
    assert!(matches!(host.copy(&mut segs), Err(GrantError::LocalBufferTooShort { have: 32, len: 33 })));
}

#[test]
fn share_failures() {
    let (dir, host) = null_host();
    assert!(matches!(
        host.share(2, 0, Access::ReadOnly),
        Err(GrantError::Share { domid: 2, pages: 0, status: GrantStatus::GeneralError })
    ));
    let Err(GrantError::Hypervisor { source, .. }) = host.share(2, 3, Access::ReadWrite) else {
        panic!("share on /dev/null succeeded or failed otherwise")
    };
    let GntallocError::AllocGref { path, pages: 3, errno } = inner::<GntallocError>(&source) else {
        panic!("{source:?}")
    };
    assert_eq!((path.display().to_string(), *errno), (dir.path("gntalloc"), Errno::ENOTTY));
}

#[test]
fn bind_failures_carry_the_errno_and_say_which_ioctl() {
    let (dir, host) = null_host();
    match host.alloc_unbound(4) {
        Err(EvtchnError::AllocUnbound { remote: 4, errno: Errno::ENOTTY, reason }) => {
            assert!(reason.starts_with(&format!("IOCTL_EVTCHN_BIND_UNBOUND_PORT on {} failed", dir.path("evtchn"))));
        }
        other => panic!("unexpected {other:?}"),
    }
    match host.bind_interdomain(4, 12) {
        Err(EvtchnError::Bind { remote: 4, remote_port: 12, errno: Errno::ENOTTY, reason }) => {
            assert!(reason.starts_with("IOCTL_EVTCHN_BIND_INTERDOMAIN on "), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn host_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + std::fmt::Debug + GrantOps + GrantAlloc + EventChannels>() {}
    check::<XenHost>();
    let (_dir, host) = null_host();
    let copy = host.clone();
    assert!(Arc::ptr_eq(&host.gntdev.file, &copy.gntdev.file), "clones share the open gntdev");
}
