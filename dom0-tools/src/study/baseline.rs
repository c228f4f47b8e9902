//! The bare baseline of `nbctl study`: the same generator and verifying receiver as the
//! guests (`netfront_test::traffic`), in two processes, moving frames through a ring of
//! frame slots in a shared memfd with no backend in between.
//!
//! Why this is the honest limit: both ends pay exactly what a guest pays to make and to
//! check a frame, and each frame is copied once in and once out (netback copies it twice by
//! grant copy, plus the switch queue); nothing is notified (both ends poll the indices), so
//! no backend between the same two processes can move frames faster.

use anyhow::{Context, bail};
use netfront_test::RxMeta;
use netfront_test::session::{TcpReceiver, TcpSender};
use netfront_test::traffic::{FrameSize, Generator, GeneratorConfig, Next, Receiver};
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

const PROD: usize = 0;
const CONS: usize = 64;
const DONE: usize = 128;
const SLOTS: u64 = 256;
/// One slot: a length word and a frame of up to 64 KiB (17 pages).
const SLOT_SIZE: usize = 17 * 4096;
const FIRST_SLOT: usize = 4096;
const LEN: usize = FIRST_SLOT + SLOTS as usize * SLOT_SIZE;
/// Bit of a slot's length word that carries `csum_blank` (TCP mode).
const BLANK_BIT: u32 = 63;

/// Options of the hidden `study-ring` role.
#[derive(Debug, Clone, clap::Args)]
pub struct RingArgs {
    /// `send` or `recv`.
    #[arg(long)]
    pub role: String,
    /// The shared file (`/proc/<pid>/fd/<n>` of the study's memfd).
    #[arg(long)]
    pub path: String,
    /// Frame size in bytes.
    #[arg(long)]
    pub size: usize,
    /// Seconds of warm-up, then of measurement.
    #[arg(long)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long)]
    pub duration: f64,
    /// Move the frames of a TCP stream instead of test frames.
    #[arg(long)]
    pub tcp: bool,
    /// With `--tcp`: GSO super-frames (else MSS-sized segments).
    #[arg(long)]
    pub gso: bool,
}

/// What the receiving end measured.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct RingResult {
    /// Frames per second in the measured window.
    pub frames_per_sec: f64,
    /// Frames the receiver found missing or corrupt over the whole run (TCP: payload
    /// bytes in gaps plus corrupt frames).
    pub lost: u64,
    /// TCP payload Gbit/s in the measured window (0 for test frames).
    #[serde(default)]
    pub payload_gbit_per_sec: f64,
}

fn map(path: &str) -> anyhow::Result<MmapRegion> {
    let file = OpenOptions::new().read(true).write(true).open(path).with_context(|| format!("opening {path}"))?;
    MmapRegion::from_file(FileOffset::new(file, 0), LEN).map_err(|e| anyhow::anyhow!("mapping {path}: {e}"))
}

fn slot(mem: &MmapRegion, i: u64) -> anyhow::Result<VolatileSlice<'_>> {
    let off = FIRST_SLOT + (i % SLOTS) as usize * SLOT_SIZE;
    mem.get_slice(off, SLOT_SIZE).map_err(|e| anyhow::anyhow!("slot: {e}"))
}

/// Waits politely (two processes may share one CPU).
fn pause(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 { std::hint::spin_loop() } else { std::thread::yield_now() }
}

/// The `study-ring` role.
pub fn run_role(args: &RingArgs) -> anyhow::Result<()> {
    let mem = map(&args.path)?;
    let sl = mem.get_slice(0, FIRST_SLOT).map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = Duration::from_secs_f64(args.warmup + args.duration);
    match args.role.as_str() {
        "send" if args.tcp => {
            // Checksums blank, as the TCP guests (checksum offload in effect) send them.
            let mut sender = TcpSender::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], args.gso, true);
            let (start, mut prod) = (Instant::now(), 0u64);
            while start.elapsed() < total {
                for (frame, meta) in sender.frames(args.size) {
                    let mut spins = 0;
                    while prod - sl.load::<u64>(CONS, Ordering::Acquire)? >= SLOTS {
                        pause(&mut spins);
                    }
                    let s = slot(&mem, prod)?;
                    s.write_slice(&frame, 8)?;
                    s.store(frame.len() as u64 | u64::from(meta.csum_blank) << BLANK_BIT, 0, Ordering::Relaxed)?;
                    prod += 1;
                    sl.store(prod, PROD, Ordering::Release)?;
                }
            }
            sl.store(1u64, DONE, Ordering::Release)?;
        }
        "send" => {
            let cfg = GeneratorConfig {
                size: FrameSize::Fixed(args.size),
                duration: Some(total),
                count: None,
                ..GeneratorConfig::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 0)
            };
            let mut generator = Generator::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut prod = 0u64;
            while let Next::Frame(frame) = generator.next(Instant::now()) {
                let mut spins = 0;
                while prod - sl.load::<u64>(CONS, Ordering::Acquire)? >= SLOTS {
                    pause(&mut spins);
                }
                let s = slot(&mem, prod)?;
                s.write_slice(&frame, 8)?;
                s.store(frame.len() as u64, 0, Ordering::Relaxed)?;
                prod += 1;
                sl.store(prod, PROD, Ordering::Release)?;
            }
            sl.store(1u64, DONE, Ordering::Release)?;
        }
        "recv" => {
            let mut receiver = Receiver::new();
            let mut tcp = TcpReceiver::new();
            let (mut cons, mut buf) = (0u64, vec![0u8; SLOT_SIZE]);
            let mut window: (Option<Instant>, u64, u64) = (None, 0, 0);
            let mut payload_window = (0u64, 0u64);
            let (warmup, duration) = (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.duration));
            loop {
                let mut spins = 0;
                while sl.load::<u64>(PROD, Ordering::Acquire)? == cons {
                    if sl.load::<u64>(DONE, Ordering::Acquire)? == 1 && sl.load::<u64>(PROD, Ordering::Acquire)? == cons
                    {
                        break;
                    }
                    pause(&mut spins);
                }
                if sl.load::<u64>(PROD, Ordering::Acquire)? == cons {
                    break;
                }
                let s = slot(&mem, cons)?;
                let word = s.load::<u64>(0, Ordering::Relaxed)?;
                let len = ((word & !(1 << BLANK_BIT)) as usize).min(SLOT_SIZE - 8);
                s.read_slice(&mut buf[..len], 8)?;
                if args.tcp {
                    let meta = RxMeta { csum_blank: word >> BLANK_BIT == 1, ..RxMeta::default() };
                    let _ = tcp.receive(&buf[..len], &meta);
                } else {
                    let _ = receiver.receive(&buf[..len]);
                }
                cons += 1;
                sl.store(cons, CONS, Ordering::Release)?;
                let start = *window.0.get_or_insert_with(Instant::now);
                let t = start.elapsed();
                if t < warmup {
                    window.1 = cons;
                    payload_window.0 = tcp.counts().received_bytes;
                } else if t < warmup + duration {
                    window.2 = cons;
                    payload_window.1 = tcp.counts().received_bytes;
                }
            }
            let report = receiver.report();
            let c = tcp.counts();
            let lost = report.total().lost + report.corrupt + c.lost_bytes + c.corrupt;
            let frames_per_sec = window.2.saturating_sub(window.1) as f64 / args.duration;
            let payload_gbit_per_sec =
                payload_window.1.saturating_sub(payload_window.0) as f64 * 8.0 / args.duration / 1e9;
            println!("{}", serde_json::to_string(&RingResult { frames_per_sec, lost, payload_gbit_per_sec })?);
        }
        other => bail!("unknown role {other:?}"),
    }
    Ok(())
}

/// Runs one baseline measurement of `size`-byte frames: a memfd and two child processes.
/// `tcp`: `Some(gso)` moves the frames of a TCP stream (super-frames with GSO, segments
/// without) instead of test frames.
pub fn measure(size: usize, tcp: Option<bool>, warmup: f64, duration: f64) -> anyhow::Result<RingResult> {
    let fd = memfd_create(c"netback-study-ring", MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    let file = File::from(fd);
    file.set_len(LEN as u64)?;
    let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    let exe = std::env::current_exe()?;
    let spawn = |role: &str, out: Stdio| {
        Command::new(&exe)
            .args(["study-ring", "--role", role, "--path", &path, "--size", &size.to_string()])
            .args(["--warmup", &warmup.to_string(), "--duration", &duration.to_string()])
            .args(tcp.map(|_| "--tcp"))
            .args((tcp == Some(true)).then_some("--gso"))
            .stdin(Stdio::null())
            .stdout(out)
            .spawn()
            .with_context(|| format!("starting the baseline {role} process"))
    };
    let recv = spawn("recv", Stdio::piped())?;
    let mut send = spawn("send", Stdio::null())?;
    let out = recv.wait_with_output()?;
    let sent = send.wait()?;
    if !out.status.success() || !sent.success() {
        bail!("the baseline processes failed ({}, {sent})", out.status);
    }
    drop(file);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("baseline report {text:?}"))
}
