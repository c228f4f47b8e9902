//! Host lifecycle (events, xenstore streams, destroy, toolstack requests, shutdown) and
//! robustness against garbage on the control socket.

mod common;

use common::{Host, wait_until};
use grant::sim::{Credentials, DomainConfig, DomainEvent, SimDomain, SimError};
use grant::{Access, GrantAlloc, GrantError, GrantOps, GrantStatus};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, sendmsg, socket,
};
use std::collections::HashMap;
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

#[test]
#[ignore = "child process of the other tests"]
fn child_guest() {
    common::child_main();
}

#[test]
fn events_and_xenstore_streams() {
    let host = Host::start();
    let ends: Arc<Mutex<HashMap<u16, UnixStream>>> = Arc::default();
    let keep = ends.clone();
    host.hv.set_xenstore_connector(move |domid| {
        let (ours, theirs) = UnixStream::pair()?;
        keep.lock().unwrap().insert(domid, ours);
        Ok(theirs)
    });
    let dom0 = host.dom0();
    assert!(dom0.take_xenstore_stream().is_some());
    assert!(dom0.take_xenstore_stream().is_none(), "handed out once");

    let mut guest = host.guest();
    let d = guest.domid;
    host.wait_event(DomainEvent::Introduced(d));
    guest.cmd("xs-write hello");
    let mut got = [0u8; 5];
    ends.lock().unwrap().get_mut(&d).unwrap().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    guest.exit();
    host.wait_event(DomainEvent::Released(d));
    assert_eq!(*host.events.lock().unwrap(), vec![DomainEvent::Introduced(d), DomainEvent::Released(d)]);
}

#[test]
fn destroy_kills_a_running_guest() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let d = guest.domid;
    let (_, g) = guest.share(0, 1, "rw");
    let _port = guest.cmd("alloc 0");
    let mapped = dom0.map(d, g[0], Access::ReadOnly).unwrap();
    host.hv.destroy_domain(d).unwrap();
    host.wait_event(DomainEvent::Released(d));
    assert!(!dom0.domain_alive(d).unwrap());
    assert!(matches!(dom0.map(d, g[0], Access::ReadOnly), Err(GrantError::Map { status: GrantStatus::BadDomain, .. })));
    drop(mapped);
    // The guest's process lost its connection and its domain.
    assert!(guest.try_cmd("alloc 0").is_err());
    assert!(guest.try_cmd("share 0 1 rw").is_err());
    assert!(matches!(host.hv.destroy_domain(d), Err(SimError::NoSuchDomain(_))));
}

#[test]
fn toolstack_requests_and_one_time_tokens() {
    let host = Host::start();
    let toolstack = host.dom0();
    let (d, token) = toolstack.create_domain(DomainConfig { mem_pages: 64, grant_frames: 1 }).unwrap();
    let guest = SimDomain::connect(&host.path, Credentials::Guest { token }).unwrap();
    assert_eq!(guest.domid(), d);
    let err = SimDomain::connect(&host.path, Credentials::Guest { token }).unwrap_err();
    assert_eq!(err.errno(), Errno::EACCES, "a token connects once");
    assert_eq!(guest.create_domain(DomainConfig::default()).unwrap_err().errno(), Errno::EPERM);
    assert_eq!(toolstack.destroy_domain(0).unwrap_err().errno(), Errno::EPERM);
    let bad = DomainConfig { mem_pages: 0, grant_frames: 1 };
    assert_eq!(toolstack.create_domain(bad).unwrap_err().errno(), Errno::EINVAL);
    // A one-frame table has 512 entries; a 64-page domain runs out of frames.
    let pages = guest.share(0, 64, Access::ReadWrite).unwrap();
    assert!(matches!(
        guest.share(0, 1, Access::ReadWrite),
        Err(GrantError::Share { status: GrantStatus::NoSpace, .. })
    ));
    drop(pages);
    assert!(guest.share(0, 64, Access::ReadWrite).is_ok());
    // Only one dom0 process allocates dom0's frames at a time.
    let _mine = toolstack.share(d, 1, Access::ReadOnly).unwrap();
    let other = host.dom0();
    assert!(matches!(other.share(d, 1, Access::ReadOnly), Err(GrantError::Hypervisor { .. })));
    drop(guest);
    host.wait_event(DomainEvent::Released(d));
    assert!(matches!(toolstack.destroy_domain(d), Err(SimError::Refused { errno: Errno::ESRCH, .. })));
}

fn raw_connect(host: &Host) -> OwnedFd {
    let sock = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    connect(sock.as_raw_fd(), &UnixAddr::new(&host.path).unwrap()).unwrap();
    sock
}

fn raw_send(sock: &OwnedFd, bytes: &[u8], fds: &[i32]) {
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(bytes)], cmsgs, MsgFlags::empty(), None).unwrap();
}

/// The next datagram (descriptors that come with it are dropped by the kernel here).
fn raw_recv(sock: &OwnedFd) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    buf[..n].to_vec()
}

#[test]
fn garbage_on_the_control_socket() {
    let host = Host::start();
    let dom0 = host.dom0();
    let mut guest = host.guest();
    let (_, g) = guest.share(0, 1, "rw");
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();

    // Before a hello, anything else closes the connection (also with descriptors attached,
    // oversized, or a hello with a bad token, which is refused first).
    let garbage: [&[u8]; 5] = [b"\xff\x00garbage", &[], &[2, 0], &[1, 7], &[0x55; 300]];
    for bytes in garbage {
        let sock = raw_connect(&host);
        raw_send(&sock, bytes, &[r.as_raw_fd(), w.as_raw_fd()]);
        assert!(raw_recv(&sock).is_empty(), "{bytes:?} must close the connection");
    }
    let sock = raw_connect(&host);
    raw_send(&sock, &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(raw_recv(&sock), [0x86, 13, 0, 0, 0], "bad token: EACCES");
    assert!(raw_recv(&sock).is_empty());

    // After a hello (tag 1, dom0), garbage gets an EBADMSG reply and the connection stays.
    let sock = raw_connect(&host);
    raw_send(&sock, &[1, 0], &[]);
    assert_eq!(raw_recv(&sock)[0], 0x81);
    for bytes in [&b"\x02"[..], &[0x42; 20], &[3, 0, 0, 0, 0, 0]] {
        raw_send(&sock, bytes, &[w.as_raw_fd()]);
        assert_eq!(raw_recv(&sock), [0x86, 74, 0, 0, 0], "EBADMSG for {bytes:?}");
    }
    raw_send(&sock, &[2, 0, 0], &[]);
    assert_eq!(raw_recv(&sock)[0], 0x82, "get-domain 0 still answered");
    drop(sock);

    // Everyone else was served throughout.
    let mut buf = [0u8; 8];
    let mut segs = [grant::CopySegment::new(
        grant::CopyPtr::Grant { domid: guest.domid, gref: g[0], offset: 0 },
        grant::CopyPtr::Local(vm_memory::VolatileSlice::from(&mut buf[..])),
        8,
    )];
    dom0.copy(&mut segs).unwrap();
    assert_eq!(segs[0].status, GrantStatus::Okay);
    assert!(guest.try_cmd("alloc 0").is_ok());
    assert!(host.dom0().domain_alive(guest.domid).unwrap());
    // The pipe's write end went to the host and was closed there: only ours remains.
    drop(w);
    let mut rest = Vec::new();
    std::fs::File::from(r).read_to_end(&mut rest).unwrap();
}

#[test]
fn shutdown_disconnects_everyone() {
    let mut host = Host::start();
    let dom0 = host.dom0();
    let guest = host.guest();
    let d = guest.domid;
    host.handle.take().unwrap().shutdown();
    host.wait_event(DomainEvent::Released(d));
    assert!(!host.path.exists());
    assert!(dom0.create_domain(DomainConfig::default()).is_err());
    wait_until(|| dom0.domain_alive(d).map_or(true, |alive| !alive));
}
