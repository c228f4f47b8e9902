//! `nbctl sim`: the simulated host with one guest granting a frame and a backend copying it.
//!
//! Three processes: this one (the host: hypervisor, xenstored, toolstack), a guest and a
//! backend (dom0). The guest shares a page read-only with dom0, writes an Ethernet frame
//! into it and publishes the grant and an unbound event channel in its xenstore `data`
//! directory; the backend grant-copies the frame out in one batch (together with segments
//! Xen must refuse), verifies it, and notifies the guest over the event channel.

use anyhow::{Context, bail, ensure};
use grant::sim::DomainConfig;
use grant::{Access, CopyPtr, CopySegment, DomId, EventChannel, EventChannels, GrantAlloc, GrantOps, GrantStatus};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use simhost::{ENV_SIM_DIR, SimHost};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, VolatileSlice};

/// How long any step may wait for the other process.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Size of the demo frame: a full standard Ethernet frame without FCS.
const FRAME_LEN: usize = 1514;
/// IEEE 802 local experimental EtherType.
const ETHERTYPE_EXPERIMENTAL: u16 = 0x88B5;

/// Options of `nbctl sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// The host process: starts the sim host, creates the guest, runs both roles, reports.
pub fn run_host(_args: &SimArgs) -> anyhow::Result<()> {
    let host = SimHost::start_temp().context("starting the simulated Xen host")?;
    println!("[host]    simulated Xen host up: hypervisor and xenstored in {}", host.dir().display());
    let release = host.toolstack().watch("@releaseDomain", None).context("watching @releaseDomain")?;
    release.recv_timeout(STEP_TIMEOUT)?.context("no initial @releaseDomain event")?;

    let guest = host.create_domain("guest1", DomainConfig::default()).context("creating the guest")?;
    println!("[host]    created domain {} ({}), /local/domain/{} written", guest.domid, guest.name, guest.domid);

    let exe = std::env::current_exe().context("locating nbctl")?;
    let guest_proc =
        Command::new(&exe).arg("sim-guest").envs(guest.env()).spawn().context("starting the guest process")?;
    let backend_proc = Command::new(&exe)
        .args(["sim-backend", "--guest", &guest.domid.to_string()])
        .env(ENV_SIM_DIR, host.dir())
        .env_remove(simhost::ENV_SIM_TOKEN)
        .spawn()
        .context("starting the backend process")?;
    println!("[host]    guest process pid {}, backend process pid {}", guest_proc.id(), backend_proc.id());

    let backend_status = wait_with_timeout(backend_proc, "backend")?;
    let guest_status = wait_with_timeout(guest_proc, "guest")?;
    let released = release.recv_timeout(STEP_TIMEOUT)?.is_some() && !host.xenstored().is_domain_introduced(guest.domid);
    println!(
        "[host]    guest exited ({guest_status}), backend exited ({backend_status}); @releaseDomain {}",
        if released { "fired and the domain is gone" } else { "did NOT fire" }
    );
    ensure!(guest_status.success() && backend_status.success() && released, "the simulated exchange failed");
    println!("[host]    OK: a frame crossed from guest {} to dom0 through a grant copy", guest.domid);
    Ok(())
}

fn wait_with_timeout(mut child: Child, role: &str) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + STEP_TIMEOUT * 2;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the {role} process did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo frame of `domid`: broadcast, source MAC `00:16:3e:00:00:<domid>`, a text
/// header then a byte pattern.
fn demo_frame(domid: DomId) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_LEN);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, (domid >> 8) as u8, domid as u8]);
    frame.extend_from_slice(&ETHERTYPE_EXPERIMENTAL.to_be_bytes());
    frame.extend_from_slice(format!("netback sim frame from domain {domid};").as_bytes());
    while frame.len() < FRAME_LEN {
        frame.push((frame.len() * 7 % 251) as u8);
    }
    frame
}

/// FNV-1a, 64 bit: enough to tell a faithful copy from a damaged one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn wait_readable(fd: impl AsFd, what: &str) -> anyhow::Result<()> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(STEP_TIMEOUT).expect("timeout fits");
    ensure!(poll(&mut fds, timeout).context("poll")? == 1, "timed out waiting for {what}");
    Ok(())
}

/// The guest process: grant a frame to dom0 and wait for the backend's notification.
pub fn run_guest() -> anyhow::Result<()> {
    let session = simhost::join_from_env().context("joining the sim host as a guest")?;
    let domid = session.domid();
    let pages = session.domain.share(0, 1, Access::ReadOnly).context("granting a page to dom0")?;
    let frame = demo_frame(domid);
    pages.page(0).context("page 0")?.write_slice(&frame, 0).context("writing the frame")?;
    let channel = session.domain.alloc_unbound(0).context("allocating an event channel for dom0")?;
    let gref = pages.grefs()[0];
    session
        .xenstore
        .transaction(|tx| {
            tx.write("data/demo/gref", gref.to_string())?;
            tx.write("data/demo/len", frame.len().to_string())?;
            tx.write("data/demo/fnv1a", format!("{:016x}", fnv1a(&frame)))?;
            tx.write("data/demo/event-channel", channel.port().to_string())
        })
        .context("publishing the grant in xenstore")?;
    println!(
        "[guest {domid}] granted gref {gref} (read-only) holding a {}-byte frame; event channel port {}",
        frame.len(),
        channel.port()
    );
    wait_readable(&channel, "the backend's notification")?;
    ensure!(channel.take_pending()?, "woken without a pending event");
    channel.unmask()?;
    println!("[guest {domid}] notified by the backend on port {}; exiting", channel.port());
    Ok(())
}

/// The backend process: copy the guest's frame out through the grant, show Xen's checks.
pub fn run_backend(guest: DomId) -> anyhow::Result<()> {
    let session = simhost::join_from_env().context("joining the sim host as dom0")?;
    let xs = &session.xenstore;
    let base = format!("/local/domain/{guest}/data/demo");
    let watch = xs.watch(&format!("{base}/event-channel"), None).context("watching the guest's data dir")?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !xs.exists(&format!("{base}/event-channel"))? {
        ensure!(Instant::now() < deadline, "the guest never published its grant");
        watch.recv_timeout(Duration::from_millis(200))?;
    }
    let read_num = |key: &str| -> anyhow::Result<u64> {
        let text = xs.read_string(&format!("{base}/{key}"))?;
        text.trim().parse().with_context(|| format!("{base}/{key} = {text:?} is not a number"))
    };
    let gref = u32::try_from(read_num("gref")?)?;
    let len = u16::try_from(read_num("len")?)?;
    let port = u32::try_from(read_num("event-channel")?)?;
    let expected = xs.read_string(&format!("{base}/fnv1a"))?;

    let mut frame = vec![0u8; usize::from(len)];
    let mut scratch = [0u8; 256];
    let (scratch_a, scratch_b) = scratch.split_at_mut(128);
    let mut segments = [
        CopySegment::new(
            CopyPtr::Grant { domid: guest, gref, offset: 0 },
            CopyPtr::Local(VolatileSlice::from(frame.as_mut_slice())),
            len,
        ),
        // Past the end of the guest's grant table.
        CopySegment::new(
            CopyPtr::Grant { domid: guest, gref: 1 << 30, offset: 0 },
            CopyPtr::Local(VolatileSlice::from(&mut scratch_a[..])),
            64,
        ),
        // Into a read-only grant.
        CopySegment::new(
            CopyPtr::Local(VolatileSlice::from(&mut scratch_b[..])),
            CopyPtr::Grant { domid: guest, gref, offset: 0 },
            64,
        ),
    ];
    let started = Instant::now();
    session.domain.copy(&mut segments).context("submitting the grant-copy batch")?;
    let elapsed = started.elapsed();
    let statuses: Vec<GrantStatus> = segments.iter().map(|s| s.status).collect();
    // A segment crossing the page end, in a batch of its own.
    let mut crossing = [CopySegment::new(
        CopyPtr::Grant { domid: guest, gref, offset: 4000 },
        CopyPtr::Local(VolatileSlice::from(&mut scratch[..])),
        200,
    )];
    session.domain.copy(&mut crossing).context("submitting the page-crossing copy")?;

    let got = format!("{:016x}", fnv1a(&frame));
    let text = frame.get(14..).unwrap_or_default();
    let header = String::from_utf8_lossy(&text[..text.iter().position(|&b| b == b';').unwrap_or(0)]).into_owned();
    println!(
        "[backend] grant copy batch of 3 segments in {} us: frame {} ({} bytes), bogus gref {}, write into read-only grant {}",
        elapsed.as_micros(),
        statuses[0],
        len,
        statuses[1],
        statuses[2]
    );
    println!("[backend] segment crossing the page end: {}", crossing[0].status);
    println!("[backend] frame payload starts {header:?}; fnv1a {got} (guest said {expected})");
    ensure!(statuses[0].is_ok() && got == expected.trim(), "the frame did not arrive intact");
    ensure!(
        statuses[1] == GrantStatus::BadGntref
            && statuses[2] == GrantStatus::GeneralError
            && crossing[0].status == GrantStatus::BadCopyArg,
        "the sim hypervisor accepted an operation Xen refuses"
    );
    let channel = session.domain.bind_interdomain(guest, port).context("binding the guest's event channel")?;
    channel.notify().context("notifying the guest")?;
    println!("[backend] bound port {} to guest port {port} and notified the guest", channel.port());
    Ok(())
}
