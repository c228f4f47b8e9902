//! Benchmarks of the grant sim: one copy batch, and one cross-process event round trip.
//!
//! The bench process runs the hypervisor in-process and acts as dom0. For the ping-pong it
//! re-executes itself as a guest (selected by an environment variable checked before
//! criterion starts) that answers every event on `ping` with a notify on `pong`.

use criterion::{Criterion, Throughput, criterion_group};
use grant::sim::{Credentials, DomainConfig, Hypervisor, HypervisorHandle, SimDomain};
use grant::{Access, CopyPtr, CopySegment, EventChannel, EventChannels, GrantAlloc, GrantOps, GrantStatus, PAGE_SIZE};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use vm_memory::VolatileSlice;

const ENV_SOCKET: &str = "GRANT_BENCH_SOCKET";
const ENV_TOKEN: &str = "GRANT_BENCH_TOKEN";
const SEGMENTS: usize = 64;
const FRAME: u16 = 1514;

fn host() -> (Hypervisor, HypervisorHandle) {
    let path = format!("/tmp/grant-sim-bench-{}.sock", std::process::id());
    let hv = Hypervisor::new().expect("hypervisor");
    let handle = hv.serve(&path).expect("serve");
    (hv, handle)
}

/// 64 × 1514 B from 64 granted guest pages into local buffers, as a netback TX batch does.
fn copy_batch(c: &mut Criterion) {
    let (hv, handle) = host();
    let dom0 = SimDomain::connect(handle.path(), Credentials::Dom0).unwrap();
    let (_, token) = hv.create_domain(DomainConfig::default()).unwrap();
    let guest = SimDomain::connect(handle.path(), Credentials::Guest { token }).unwrap();
    let pages = guest.share(0, SEGMENTS, Access::ReadOnly).unwrap();
    for i in 0..SEGMENTS {
        pages.page(i).unwrap().copy_from(&[i as u8; PAGE_SIZE]);
    }
    let mut bufs = vec![[0u8; 2048]; SEGMENTS];
    let mut segs: Vec<CopySegment<'_>> = bufs
        .iter_mut()
        .zip(pages.grefs())
        .map(|(buf, &gref)| {
            let source = CopyPtr::Grant { domid: guest.domid(), gref, offset: 64 };
            CopySegment::new(source, CopyPtr::Local(VolatileSlice::from(&mut buf[..])), FRAME)
        })
        .collect();
    // One checked copy first: criterion may skip the measurement (a name filter), and the
    // checks below must still see a completed batch.
    dom0.copy(&mut segs).unwrap();
    let mut group = c.benchmark_group("sim_grant_copy");
    group.throughput(Throughput::Bytes(SEGMENTS as u64 * u64::from(FRAME)));
    group.bench_function("batch_64x1514_grant_to_local", |b| {
        b.iter(|| {
            dom0.copy(&mut segs).unwrap();
            debug_assert!(segs.iter().all(|s| s.status == GrantStatus::Okay));
        })
    });
    group.finish();
    assert!(segs.iter().all(|s| s.status == GrantStatus::Okay));
    drop(segs);
    assert!(bufs.iter().enumerate().all(|(i, b)| b[..usize::from(FRAME)].iter().all(|&x| x == i as u8)));
}

fn wait(fd: &impl AsFd) {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::NONE).expect("poll");
}

/// notify → other process wakes on its fd → notify back → we wake: one round trip.
fn notify_round_trip(c: &mut Criterion) {
    let (hv, handle) = host();
    let dom0 = SimDomain::connect(handle.path(), Credentials::Dom0).unwrap();
    let (domid, token) = hv.create_domain(DomainConfig { mem_pages: 16, grant_frames: 1 }).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ENV_SOCKET, handle.path())
        .env(ENV_TOKEN, token.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the guest");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ports: Vec<u32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let ping = dom0.bind_interdomain(domid, ports[0]).unwrap();
    let pong = dom0.bind_interdomain(domid, ports[1]).unwrap();
    // Freshly bound ports start pending.
    ping.take_pending().unwrap();
    pong.take_pending().unwrap();

    let mut group = c.benchmark_group("sim_evtchn");
    group.bench_function("notify_round_trip_cross_process", |b| {
        b.iter(|| {
            ping.notify().unwrap();
            wait(&pong);
            assert!(pong.take_pending().unwrap());
        })
    });
    group.finish();
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The guest side of the ping-pong; exits when its stdin closes.
fn pong_child(socket: &str, token: &str) {
    let dom = SimDomain::connect(socket, Credentials::Guest { token: token.parse().unwrap() }).unwrap();
    let ping = dom.alloc_unbound(0).unwrap();
    let pong = dom.alloc_unbound(0).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "{} {}", ping.port(), pong.port()).unwrap();
    out.flush().unwrap();
    let stdin = std::io::stdin();
    loop {
        let mut fds = [PollFd::new(ping.as_fd(), PollFlags::POLLIN), PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::NONE).unwrap();
        if fds[1].any().unwrap_or(true) {
            return; // the bench closed our stdin
        }
        if ping.take_pending().unwrap() {
            pong.notify().unwrap();
        }
    }
}

criterion_group!(benches, copy_batch, notify_round_trip);

fn main() {
    if let (Ok(socket), Ok(token)) = (std::env::var(ENV_SOCKET), std::env::var(ENV_TOKEN)) {
        pong_child(&socket, &token);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
