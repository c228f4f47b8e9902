//! Starting on a real Xen host: the checks that turn a missing piece into a one-line error
//! that says what to do, and the handles the daemon runs on.

use std::path::Path;

use anyhow::{Context, bail};
use grant::xen::XenHost;
use xenstore::Client;

/// Present while Linux's own netback is loaded: it claims every `backend/vif` device.
const KERNEL_NETBACK: &str = "/sys/module/xen_netback";

/// Opens the grant and event-channel devices and xenstore, after checking that the kernel's
/// netback is not loaded.
pub fn open() -> anyhow::Result<(XenHost, Client)> {
    if Path::new(KERNEL_NETBACK).exists() {
        bail!(
            "the kernel's xen-netback module is loaded and would claim every vif: \
             unload it first (rmmod xen-netback)"
        );
    }
    let grants = XenHost::open()?;
    let xs = Client::open_default().context(
        "cannot reach xenstored (/run/xenstored/socket or /dev/xen/xenbus): start it first \
         (systemctl start xenstored, or /etc/init.d/xencommons start)",
    )?;
    Ok((grants, xs))
}

/// Our domain id as xenstore says (`domid`, relative to our own home); dom0 if unreadable.
pub fn own_domid(xs: &Client) -> u16 {
    xs.read_string("domid").ok().and_then(|d| d.trim().parse().ok()).unwrap_or(0)
}

/// Creates the socket's directory (mode 0700: the control socket can reconfigure every vif).
pub fn prepare_socket_dir(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the control socket's directory {}", dir.display()))
}
