//! [`Tap::set_carrier`]: the TAP's carrier (`TUNSETCARRIER`, Linux 4.20+). A vif whose guest
//! stopped taking frames turns it off, as Linux netback does with `netif_carrier_off`: the
//! kernel then stops queueing frames for the device and a bridge stops forwarding to it.
//! One `unsafe` block: the ioctl, whose argument is a live local `c_int`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::Tap;

nix::ioctl_write_ptr_bad!(tunsetcarrier, libc::TUNSETCARRIER, libc::c_int);

impl Tap {
    /// Turns the device's carrier on or off (`/sys/class/net/<name>/carrier` shows it while
    /// the device is up). A new TAP's carrier is on.
    ///
    /// # Errors
    /// The ioctl's error (`EINVAL` from a kernel without `TUNSETCARRIER`).
    pub fn set_carrier(&self, on: bool) -> io::Result<()> {
        let value = libc::c_int::from(on);
        // SAFETY: the descriptor is this TAP's open /dev/net/tun file; `value` is a c_int
        // that lives across the call, which only reads it.
        unsafe { tunsetcarrier(self.as_fd().as_raw_fd(), &value) }.map(drop).map_err(io::Error::from)
    }
}
