//! Control-plane messages between a domain process and the sim host.
//!
//! One message per `SOCK_SEQPACKET` datagram: a tag byte, then fixed-size little-endian
//! fields, nothing else. Descriptors ride on the same datagram as `SCM_RIGHTS`; how many a
//! reply carries is fixed by its tag. Decoding is total: any byte string either decodes to
//! exactly one message or yields a [`DecodeError`], never a panic.

use super::{Credentials, SimToken};
use crate::{DomId, EvtchnPort};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram either side sends; anything longer is garbage.
pub(crate) const MAX_MSG: usize = 64;
/// The kernel's `SCM_MAX_FD`: a receive buffer this large never truncates descriptors, so
/// every descriptor a peer sends is adopted (and closed if unwanted), never leaked.
const SCM_MAX_FD: usize = 253;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed control message: {0}")]
pub(crate) struct DecodeError(pub &'static str);

/// What a domain asks the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// First message of every connection.
    Hello(Credentials),
    /// Descriptors of a domain's memory and tables (`DOMID_SELF` allowed).
    GetDomain(DomId),
    /// `EVTCHNOP_alloc_unbound` for `remote`.
    AllocUnbound(DomId),
    /// `EVTCHNOP_bind_interdomain`.
    BindInterdomain(DomId, EvtchnPort),
    /// `EVTCHNOP_close` of one of our ports.
    Close(EvtchnPort),
    /// Exclusive use of our domain's frame and gref allocator by this process.
    ClaimAllocator,
    /// Toolstack: create a guest (`mem_pages`, `grant_frames`).
    CreateDomain(u32, u32),
    /// Toolstack: destroy a guest.
    DestroyDomain(DomId),
}

/// Descriptors carried by [`Reply::Hello`] and [`Reply::Domain`], in this order:
/// memory, grant table, active table, status page.
pub(crate) const DOMAIN_FDS: usize = 4;

/// What the host answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Connected as `domid`; carries [`DOMAIN_FDS`] of our own domain, then the pin ledger
    /// of this connection (`ledger_slots` slots; our lock owner ids carry `ledger_token`),
    /// then the xenstore stream if `xenstore`.
    Hello { domid: DomId, mem_pages: u32, grant_frames: u32, ledger_slots: u32, ledger_token: u16, xenstore: bool },
    /// Carries [`DOMAIN_FDS`] of `domid`.
    Domain { domid: DomId, mem_pages: u32, grant_frames: u32 },
    /// A port bound or allocated; carries our inbox eventfd, then the peer's.
    Port(EvtchnPort),
    /// A guest was created.
    Created(DomId, SimToken),
    /// Done, nothing to return.
    Ok,
    /// Refused with this errno.
    Error(i32),
}

impl Reply {
    /// How many descriptors must accompany this reply.
    pub(crate) fn fd_count(&self) -> usize {
        match self {
            Self::Hello { xenstore, .. } => DOMAIN_FDS + 1 + usize::from(*xenstore),
            Self::Domain { .. } => DOMAIN_FDS,
            Self::Port(_) => 2,
            Self::Created(..) | Self::Ok | Self::Error(_) => 0,
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(DecodeError("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad boolean")),
        }
    }
    fn end<T>(self, value: T) -> Result<T, DecodeError> {
        if self.0.is_empty() { Ok(value) } else { Err(DecodeError("trailing bytes")) }
    }
}

mod tag {
    pub const HELLO: u8 = 1;
    pub const GET_DOMAIN: u8 = 2;
    pub const ALLOC_UNBOUND: u8 = 3;
    pub const BIND: u8 = 4;
    pub const CLOSE: u8 = 5;
    pub const CLAIM_ALLOCATOR: u8 = 6;
    pub const CREATE: u8 = 7;
    pub const DESTROY: u8 = 8;

    pub const R_HELLO: u8 = 0x81;
    pub const R_DOMAIN: u8 = 0x82;
    pub const R_PORT: u8 = 0x83;
    pub const R_CREATED: u8 = 0x84;
    pub const R_OK: u8 = 0x85;
    pub const R_ERROR: u8 = 0x86;
}

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        match self {
            Self::Hello(Credentials::Dom0) => out.extend([tag::HELLO, 0]),
            Self::Hello(Credentials::Guest { token }) => {
                out.extend([tag::HELLO, 1]);
                out.extend(token.0);
            }
            Self::GetDomain(d) => {
                out.push(tag::GET_DOMAIN);
                out.extend(d.to_le_bytes());
            }
            Self::AllocUnbound(d) => {
                out.push(tag::ALLOC_UNBOUND);
                out.extend(d.to_le_bytes());
            }
            Self::BindInterdomain(d, p) => {
                out.push(tag::BIND);
                out.extend(d.to_le_bytes());
                out.extend(p.to_le_bytes());
            }
            Self::Close(p) => {
                out.push(tag::CLOSE);
                out.extend(p.to_le_bytes());
            }
            Self::ClaimAllocator => out.push(tag::CLAIM_ALLOCATOR),
            Self::CreateDomain(pages, frames) => {
                out.push(tag::CREATE);
                out.extend(pages.to_le_bytes());
                out.extend(frames.to_le_bytes());
            }
            Self::DestroyDomain(d) => {
                out.push(tag::DESTROY);
                out.extend(d.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let msg = match r.u8()? {
            tag::HELLO => match r.u8()? {
                0 => Self::Hello(Credentials::Dom0),
                1 => Self::Hello(Credentials::Guest { token: SimToken(r.take()?) }),
                _ => return Err(DecodeError("bad credentials kind")),
            },
            tag::GET_DOMAIN => Self::GetDomain(r.u16()?),
            tag::ALLOC_UNBOUND => Self::AllocUnbound(r.u16()?),
            tag::BIND => Self::BindInterdomain(r.u16()?, r.u32()?),
            tag::CLOSE => Self::Close(r.u32()?),
            tag::CLAIM_ALLOCATOR => Self::ClaimAllocator,
            tag::CREATE => Self::CreateDomain(r.u32()?, r.u32()?),
            tag::DESTROY => Self::DestroyDomain(r.u16()?),
            _ => return Err(DecodeError("unknown request tag")),
        };
        r.end(msg)
    }

    /// A short name for errors and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::GetDomain(_) => "get-domain",
            Self::AllocUnbound(_) => "alloc-unbound",
            Self::BindInterdomain(..) => "bind-interdomain",
            Self::Close(_) => "close",
            Self::ClaimAllocator => "claim-allocator",
            Self::CreateDomain(..) => "create-domain",
            Self::DestroyDomain(_) => "destroy-domain",
        }
    }
}

impl Reply {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        match self {
            Self::Hello { domid, mem_pages, grant_frames, ledger_slots, ledger_token, xenstore } => {
                out.push(tag::R_HELLO);
                out.extend(domid.to_le_bytes());
                out.extend(mem_pages.to_le_bytes());
                out.extend(grant_frames.to_le_bytes());
                out.extend(ledger_slots.to_le_bytes());
                out.extend(ledger_token.to_le_bytes());
                out.push(u8::from(*xenstore));
            }
            Self::Domain { domid, mem_pages, grant_frames } => {
                out.push(tag::R_DOMAIN);
                out.extend(domid.to_le_bytes());
                out.extend(mem_pages.to_le_bytes());
                out.extend(grant_frames.to_le_bytes());
            }
            Self::Port(p) => {
                out.push(tag::R_PORT);
                out.extend(p.to_le_bytes());
            }
            Self::Created(d, token) => {
                out.push(tag::R_CREATED);
                out.extend(d.to_le_bytes());
                out.extend(token.0);
            }
            Self::Ok => out.push(tag::R_OK),
            Self::Error(errno) => {
                out.push(tag::R_ERROR);
                out.extend(errno.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let msg = match r.u8()? {
            tag::R_HELLO => Self::Hello {
                domid: r.u16()?,
                mem_pages: r.u32()?,
                grant_frames: r.u32()?,
                ledger_slots: r.u32()?,
                ledger_token: r.u16()?,
                xenstore: r.bool()?,
            },
            tag::R_DOMAIN => Self::Domain { domid: r.u16()?, mem_pages: r.u32()?, grant_frames: r.u32()? },
            tag::R_PORT => Self::Port(r.u32()?),
            tag::R_CREATED => Self::Created(r.u16()?, SimToken(r.take()?)),
            tag::R_OK => Self::Ok,
            tag::R_ERROR => Self::Error(r.i32()?),
            _ => return Err(DecodeError("unknown reply tag")),
        };
        r.end(msg)
    }
}

/// One received datagram.
#[derive(Debug)]
pub(crate) struct Datagram {
    /// Its bytes; longer than [`MAX_MSG`] only if it was truncated (then it is garbage).
    pub bytes: Vec<u8>,
    /// Descriptors that came with it, already owned (closed on drop).
    pub fds: Vec<OwnedFd>,
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Sends one datagram with `fds`. `dontwait` makes a full socket buffer an error
/// (`EAGAIN`) instead of blocking: the host never waits on a client that stopped reading.
pub(crate) fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>], dontwait: bool) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &[ControlMessage::ScmRights(&raw)] };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if dontwait {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let iov = [IoSlice::new(bytes)];
    let sent = retry_eintr(|| sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None))?;
    if sent != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram send"));
    }
    Ok(())
}

/// Receives one datagram, blocking. `Ok(None)` at end of stream (an empty datagram counts
/// as end of stream too). Every descriptor received is owned by the result.
pub(crate) fn recv(sock: BorrowedFd<'_>) -> io::Result<Option<Datagram>> {
    let mut buf = [0u8; MAX_MSG + 1];
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let (len, truncated, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let mut raw_fds = Vec::new();
        // MSG_CTRUNC cannot happen with a buffer for SCM_MAX_FD descriptors.
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw_fds.extend(fds);
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), raw_fds)
    };
    let fds = raw_fds
        .into_iter()
        // SAFETY: each descriptor was just installed in this process by recvmsg's
        // SCM_RIGHTS and nothing else refers to it, so we are its sole owner.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect::<Vec<_>>();
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    let mut bytes = buf[..len.min(buf.len())].to_vec();
    if truncated {
        bytes.resize(MAX_MSG + 1, 0);
    }
    Ok(Some(Datagram { bytes, fds }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello(Credentials::Dom0),
            Request::Hello(Credentials::Guest { token: SimToken([7; 16]) }),
            Request::GetDomain(3),
            Request::AllocUnbound(0),
            Request::BindInterdomain(5, 9),
            Request::Close(1),
            Request::ClaimAllocator,
            Request::CreateDomain(16384, 16),
            Request::DestroyDomain(4),
        ]
    }

    #[test]
    fn request_roundtrip_and_truncation() {
        for req in requests() {
            let bytes = req.encode();
            assert!(bytes.len() <= MAX_MSG);
            assert_eq!(Request::decode(&bytes), Ok(req.clone()));
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err(), "{req:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(DecodeError("trailing bytes")));
        }
    }

    #[test]
    fn reply_roundtrip() {
        let replies = [
            Reply::Hello { domid: 1, mem_pages: 2, grant_frames: 3, ledger_slots: 4, ledger_token: 5, xenstore: true },
            Reply::Domain { domid: 1, mem_pages: 2, grant_frames: 3 },
            Reply::Port(7),
            Reply::Created(9, SimToken([1; 16])),
            Reply::Ok,
            Reply::Error(-22),
        ];
        for reply in replies {
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply.clone()));
        }
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(req) = Request::decode(&bytes) {
                prop_assert_eq!(req.encode(), bytes.clone());
            }
            if let Ok(reply) = Reply::decode(&bytes) {
                prop_assert_eq!(reply.encode(), bytes);
            }
        }
    }
}
