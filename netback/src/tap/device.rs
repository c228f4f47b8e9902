//! [`Tap`]: one TAP device from `/dev/net/tun`, created with a `virtio_net_hdr_v1` before
//! every frame and checksum/TSO offload on. With `carrier.rs`, the only file of the crate
//! with `unsafe`: each block is one ioctl (or a zeroed `ifreq`), or the `writev(2)` of a frame whose pieces
//! lie in guest memory; every buffer handed to the kernel is a live, correctly typed local
//! or a borrowed `VolatileSlice`.
//!
//! A device made by [`Tap::create`] exists while its file descriptor is open, so it
//! disappears (and leaves any bridge) when the [`Tap`] is dropped. One made by
//! [`Tap::create_persistent`] (`TUNSETPERSIST`) outlives a process killed with it open, so
//! a restarted daemon finds it, still on its bridge, and attaches to it by name; dropping
//! the [`Tap`] clears the flag, and the device goes with the descriptor.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use vm_memory::VolatileSlice;

use super::TapError;
use super::vnet::VNET_HDR_LEN;

/// The MAC address of every vif TAP, as Linux netback gives its vifs: the highest unicast
/// address, so a bridge (which takes the lowest port MAC) never adopts it.
pub const VIF_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

const TUN_PATH: &str = "/dev/net/tun";
/// Longest interface name: `IFNAMSIZ` less the terminating NUL.
const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;
/// What `TUNSETOFFLOAD` enables: the kernel may hand us (and accepts from us) partial
/// checksums and TCP super-frames over IPv4 and IPv6.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_ptr_bad!(tunsetvnethdrsz, libc::TUNSETVNETHDRSZ, libc::c_int);
nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
nix::ioctl_write_int_bad!(tunsetpersist, libc::TUNSETPERSIST);
nix::ioctl_write_ptr_bad!(siocsifhwaddr, libc::SIOCSIFHWADDR, libc::ifreq);
nix::ioctl_readwrite_bad!(siocgifflags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifflags, libc::SIOCSIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifmtu, libc::SIOCSIFMTU, libc::ifreq);

/// A TAP device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`). Every read returns, and every
/// write must carry, one [`VNET_HDR_LEN`]-byte header then one Ethernet frame. The file
/// descriptor is non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Tap {
    file: File,
    /// The name the kernel gave the device.
    name: String,
    /// `TUNSETPERSIST` is set, and is cleared on drop unless [`Tap::keep_after_exit`] said
    /// otherwise.
    persistent: bool,
    clear_on_drop: AtomicBool,
}

impl Tap {
    /// Creates the TAP device `name` (at most 15 bytes, e.g. `vif3.0`) in the caller's
    /// network namespace, with 12-byte vnet headers, checksum and TSO offload, and the MAC
    /// [`VIF_MAC`]. The device starts down.
    pub fn create(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(TUN_PATH).map_err(
            |source| match source.kind() {
                io::ErrorKind::NotFound => TapError::NoTunDevice { name: name.to_string(), source },
                _ => TapError::Open { name: name.to_string(), source },
            },
        )?;
        let fd = file.as_raw_fd();
        let mut req = ifreq(name);
        // IFF_* flags of if_tun.h fit the short the kernel reads.
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: `fd` is an open /dev/net/tun; `req` is a valid ifreq that lives across the
        // call, and the kernel writes back into it (the final name).
        unsafe { tunsetiff(fd, &mut req) }
            .map_err(|e| TapError::SetIff { name: name.to_string(), source: e.into() })?;
        let name = name_of(&req);
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: `fd` is the TAP; `hdr_len` is a c_int that lives across the call.
        unsafe { tunsetvnethdrsz(fd, &hdr_len) }
            .map_err(|e| TapError::SetVnetHdrSize { name: name.clone(), source: e.into() })?;
        // SAFETY: `fd` is the TAP; TUNSETOFFLOAD takes its argument by value.
        unsafe { tunsetoffload(fd, OFFLOADS as libc::c_int) }
            .map_err(|e| TapError::SetOffload { name: name.clone(), source: e.into() })?;
        let tap = Tap { file, name, persistent: false, clear_on_drop: AtomicBool::new(true) };
        tap.set_mac(VIF_MAC)?;
        Ok(tap)
    }

    /// As [`Tap::create`], and the device persists if the process dies with it open (see
    /// the module docs). If a persistent device of that name exists (left by a killed
    /// daemon), this attaches to it: it keeps its state (up, addresses, bridge port).
    pub fn create_persistent(name: &str) -> Result<Tap, TapError> {
        let mut tap = Tap::create(name)?;
        // SAFETY: `file` is the TAP; TUNSETPERSIST takes its argument by value.
        unsafe { tunsetpersist(tap.file.as_raw_fd(), 1) }
            .map_err(|e| TapError::SetPersist { name: tap.name.clone(), source: e.into() })?;
        tap.persistent = true;
        Ok(tap)
    }

    /// A persistent device stays after this [`Tap`] is dropped (the daemon exits leaving its
    /// vifs to the next process). No effect on a device that is not persistent.
    pub fn keep_after_exit(&self) {
        self.clear_on_drop.store(false, Ordering::Relaxed);
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Brings the device up or down (`IFF_UP`), leaving its other flags alone.
    pub fn set_up(&self, up: bool) -> Result<(), TapError> {
        let sock = self.control_socket()?;
        let mut req = ifreq(&self.name);
        // SAFETY: `sock` is an open socket; `req` is a valid ifreq that lives across the call.
        unsafe { siocgifflags(sock.as_raw_fd(), &mut req) }
            .map_err(|e| TapError::GetFlags { name: self.name.clone(), source: e.into() })?;
        // SAFETY: SIOCGIFFLAGS filled `ifru_flags` (a plain short: any value is valid).
        let mut flags = unsafe { req.ifr_ifru.ifru_flags };
        // IFF_UP is bit 0: it fits a short.
        let bit = libc::IFF_UP as libc::c_short;
        flags = if up { flags | bit } else { flags & !bit };
        req.ifr_ifru.ifru_flags = flags;
        // SAFETY: as above; the kernel only reads `req`.
        unsafe { siocsifflags(sock.as_raw_fd(), &req) }
            .map_err(|e| TapError::SetFlags { name: self.name.clone(), source: e.into() })?;
        Ok(())
    }

    /// Sets the device's MTU (the largest IP datagram the kernel sends without GSO).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TapError> {
        let mtu = libc::c_int::try_from(mtu).map_err(|_| TapError::SetMtu {
            name: self.name.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "MTU beyond i32"),
        })?;
        let sock = self.control_socket()?;
        let mut req = ifreq(&self.name);
        req.ifr_ifru.ifru_mtu = mtu;
        // SAFETY: `sock` is an open socket; `req` is a valid ifreq that lives across the call.
        unsafe { siocsifmtu(sock.as_raw_fd(), &req) }
            .map_err(|e| TapError::SetMtu { name: self.name.clone(), source: e.into() })?;
        Ok(())
    }

    /// Sets the device's MAC address.
    fn set_mac(&self, mac: [u8; 6]) -> Result<(), TapError> {
        let sock = self.control_socket()?;
        let mut req = ifreq(&self.name);
        let mut addr = libc::sockaddr { sa_family: libc::ARPHRD_ETHER, sa_data: [0; 14] };
        for (dst, src) in addr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_hwaddr = addr;
        // SAFETY: `sock` is an open socket; `req` is a valid ifreq that lives across the call.
        unsafe { siocsifhwaddr(sock.as_raw_fd(), &req) }
            .map_err(|e| TapError::SetMac { name: self.name.clone(), source: e.into() })?;
        Ok(())
    }

    /// The socket the `SIOC*` ioctls go through; it works in the caller's namespace.
    fn control_socket(&self) -> Result<OwnedFd, TapError> {
        socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| TapError::Socket { name: self.name.clone(), source: e.into() })
    }

    /// Writes one frame: `hdr` then `frame` in one `writev(2)`. The TAP takes a frame
    /// whole or not at all (`EAGAIN` when its socket buffer is full).
    pub(super) fn write_frame(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        (&self.file).write_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])
    }

    /// Writes one frame given in pieces: `hdr`, then `head`, then every slice of `rest`
    /// (guest memory), in one `writev(2)`. The kernel copies the bytes during the call; no
    /// Rust reference to the volatile memory is ever made.
    pub(super) fn write_gather(
        &self,
        hdr: &[u8; VNET_HDR_LEN],
        head: &[u8],
        rest: &[VolatileSlice<'_>],
    ) -> io::Result<usize> {
        let iovec = |ptr: *const u8, len: usize| libc::iovec { iov_base: ptr.cast_mut().cast(), iov_len: len };
        // Keeps every slice's pointer guard alive until the call returned.
        let guards: Vec<_> = rest.iter().map(|s| s.ptr_guard()).collect();
        let mut iov = Vec::with_capacity(2 + rest.len());
        iov.push(iovec(hdr.as_ptr(), hdr.len()));
        iov.push(iovec(head.as_ptr(), head.len()));
        iov.extend(guards.iter().zip(rest).map(|(guard, slice)| iovec(guard.as_ptr(), slice.len())));
        let count = libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: every iovec describes live memory of its length that the kernel only
        // reads: `hdr` and `head` are borrowed for the call, and each slice of `rest` is a
        // `VolatileSlice` borrowed for the call with its pointer guard held in `guards`.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), count) };
        let written = usize::try_from(n).map_err(|_| io::Error::last_os_error());
        drop(guards);
        written
    }

    /// Reads one frame in one `readv(2)`: its vnet header into `hdr`, its bytes into
    /// `data`'s spare capacity (`data` is cleared first and holds them afterwards, without
    /// being zeroed beforehand). Returns the length the kernel reported, header included,
    /// which exceeds `VNET_HDR_LEN + data.capacity()` only if the frame was cut.
    pub(super) fn read_frame_into(&self, hdr: &mut [u8; VNET_HDR_LEN], data: &mut Vec<u8>) -> io::Result<usize> {
        data.clear();
        let spare = data.spare_capacity_mut();
        let iov = [
            libc::iovec { iov_base: hdr.as_mut_ptr().cast(), iov_len: hdr.len() },
            libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() },
        ];
        // SAFETY: both iovecs describe memory we exclusively borrow for the call (`hdr`, and
        // the spare capacity of `data`, which is allocated though uninitialized); the
        // kernel only writes into them, at most their lengths.
        let n = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let written = n.saturating_sub(VNET_HDR_LEN);
        if written <= data.capacity() {
            // SAFETY: readv filled the header first, then `written` bytes of the spare
            // capacity, so they are initialized. (A frame reported longer than the buffer
            // leaves `data` empty: how much of it was written is unknown.)
            unsafe { data.set_len(written) };
        }
        Ok(n)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.persistent && self.clear_on_drop.load(Ordering::Relaxed) {
            // SAFETY: `file` is the TAP, still open; TUNSETPERSIST takes its argument by value.
            if let Err(e) = unsafe { tunsetpersist(self.file.as_raw_fd(), 0) } {
                tracing::warn!(error = %e, "TAP {}: clearing TUNSETPERSIST; the device stays", self.name);
            }
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Checks `name` as the kernel's `dev_valid_name` does (so the error says why), except
/// that `%d` templates are refused too: a vif's name is chosen, not allocated.
fn check_name(name: &str) -> Result<(), TapError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 15 bytes (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b == b'%' || b == 0 || b.is_ascii_whitespace()) {
        Some("contains '/', ':', '%', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TapError::InvalidName { name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// A zeroed `ifreq` naming `name` (checked to be at most 15 bytes, so NUL-terminated).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data (integers, byte arrays, a raw pointer); all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().take(MAX_NAME_LEN).zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// The NUL-terminated name in `req`.
fn name_of(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for (name, why) in [
            ("", "empty"),
            ("vif12345.123456", ""),
            ("vif123456.123456", "longer"),
            (".", "'.'"),
            ("vif1/0", "contains"),
            ("vif1:0", "contains"),
            ("vif%d", "contains"),
            ("vif 1", "contains"),
        ] {
            match check_name(name) {
                Ok(()) => assert!(why.is_empty(), "{name:?} accepted"),
                Err(TapError::InvalidName { reason, .. }) => assert!(reason.starts_with(why), "{name:?}: {reason}"),
                Err(e) => panic!("{name:?}: {e}"),
            }
        }
        let e = Tap::create("a-name-of-sixteen").unwrap_err();
        assert!(e.to_string().contains("a-name-of-sixteen") && e.to_string().contains("15 bytes"), "{e}");
    }

    #[test]
    fn a_missing_tun_node_says_how_to_get_it() {
        let source = io::Error::from(io::ErrorKind::NotFound);
        let e = TapError::NoTunDevice { name: "vif1.0".into(), source };
        assert!(e.to_string().contains("vif1.0") && e.to_string().contains("modprobe tun"), "{e}");
    }

    #[test]
    fn ifreq_name_round_trip() {
        let req = ifreq("vif12345.12345");
        assert_eq!(name_of(&req), "vif12345.12345");
        assert_eq!(req.ifr_name[MAX_NAME_LEN], 0, "NUL-terminated");
    }
}
