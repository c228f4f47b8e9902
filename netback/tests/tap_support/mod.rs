//! Helpers for the TAP tests: a network namespace of the test's own, a TAP port in it, a
//! "wire" that plays the hosts on the far side of the TAP (answering ARP for them), and
//! TCP/UDP frame builders and a parser (etherparse, independent of netback's offload code).
//!
//! Everything here runs in a child process that called [`enter_netns`] first: namespaces
//! belong to the calling thread, and threads and processes started afterwards inherit it.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use netback::frame::{Frame, Offload};
use netback::offload;
use netback::port::{TransmitOutcome, Uplink};
use netback::tap::{Tap, TapPort};
use netfront_test::stack::Responder;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long any exchange may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Environment variable forcing the TAP tests to run (and fail) without root.
pub const ENV_FORCE: &str = "NETBACK_TAP_TESTS";

/// Whether this process may create a network namespace and a TAP: root, or forced.
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root() || std::env::var_os(ENV_FORCE).is_some()
}

/// Moves the calling thread (and whatever it starts from now on) into a new, empty network
/// namespace, with `lo` up and, if `ipv6` is false, IPv6 off (so the kernel sends nothing
/// unasked: no router or neighbour solicitations, no MLD reports).
pub fn enter_netns(ipv6: bool) -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    ip(&["link", "set", "lo", "up"])?;
    if !ipv6 {
        for conf in ["all", "default"] {
            sysctl(&format!("net/ipv6/conf/{conf}/disable_ipv6"), "1")?;
        }
    }
    Ok(())
}

/// Writes a sysctl of the current network namespace.
pub fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value).with_context(|| format!("sysctl {path}={value}"))
}

/// Runs `ip` (iproute2) in the current namespace; its standard output.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates TAP `name`, gives it `cidr` (e.g. `10.77.0.1/24`), brings it up with
/// [`Tap::set_up`], and wraps it in a port.
pub fn tap_port(name: &str, cidr: &str) -> anyhow::Result<TapPort> {
    let tap = Tap::create(name)?;
    ip(&["addr", "add", cidr, "dev", name])?;
    tap.set_up(true)?;
    Ok(TapPort::new(std::sync::Arc::new(tap)))
}

/// A counter of `/proc/net/snmp` for this thread's namespace, e.g. `("Udp", "InCsumErrors")`.
pub fn snmp(group: &str, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
    let (names, values) = (lines.next().context("no header")?, lines.next().context("no values")?);
    let at = names.split_whitespace().position(|n| n == field).with_context(|| format!("no {group} {field}"))?;
    Ok(values.split_whitespace().nth(at).context("short line")?.parse()?)
}

/// The far side of a TAP: sends frames into it and receives what the kernel sends out,
/// answering ARP requests (and pings) for the simulated hosts on the way.
pub struct Wire<'a> {
    pub port: &'a TapPort,
    hosts: Vec<Responder>,
}

impl<'a> Wire<'a> {
    /// A wire simulating `hosts` (MAC, IPv4) behind `port`.
    pub fn new(port: &'a TapPort, hosts: &[([u8; 6], Ipv4Addr)]) -> Wire<'a> {
        Wire { port, hosts: hosts.iter().map(|&(mac, ip)| Responder::new(mac, ip)).collect() }
    }

    /// Sends a frame into the kernel; the port must take it.
    pub fn send(&self, data: Vec<u8>, offload: Offload) -> anyhow::Result<()> {
        let outcome = self.port.transmit(Frame::with_offload(data, offload));
        ensure!(outcome == TransmitOutcome::Sent, "the TAP port refused a frame: {outcome:?}");
        Ok(())
    }

    /// Whether the port's descriptor polls readable within `timeout`.
    pub fn readable(&self, timeout: Duration) -> anyhow::Result<bool> {
        let mut fds = [PollFd::new(self.port.ready_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        Ok(poll(&mut fds, timeout)? == 1)
    }

    /// The next frame from the kernel that no simulated host answered, if one comes
    /// within `timeout`.
    pub fn next(&self, timeout: Duration) -> anyhow::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(frame) = self.port.pop() {
                match self.hosts.iter().find_map(|h| h.respond(frame.data())) {
                    Some(reply) => self.send(reply, Offload::default())?,
                    None => return Ok(Some(frame)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.readable(left)? {
                return Ok(None);
            }
        }
    }

    /// The first frame from the kernel that `want` accepts (others are skipped).
    pub fn recv(&self, what: &str, mut want: impl FnMut(&Frame) -> bool) -> anyhow::Result<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(frame) if want(&frame) => return Ok(frame),
                Some(_) => continue,
                None => bail!("no {what} from the kernel within {WAIT:?}"),
            }
        }
    }

    /// Takes whatever the kernel has queued, without waiting.
    pub fn drain(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        while self.next(Duration::ZERO)?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// One end of an IPv4 conversation.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// TCP flags of a built segment (ACK is set whenever `ack` is given).
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub syn: bool,
    pub psh: bool,
}

/// An IPv4 TCP frame with a correct checksum (etherparse computes it).
pub fn tcp_frame(
    from: Endpoint,
    to: Endpoint,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(from.mac, to.mac).ipv4(from.ip.octets(), to.ip.octets(), 64);
    let mut b = ip.tcp(from.port, to.port, seq, u16::MAX);
    if flags.syn {
        b = b.syn();
    }
    if let Some(ack) = ack {
        b = b.ack(ack);
    }
    if flags.psh {
        b = b.psh();
    }
    let b = b.options_raw(options).expect("TCP options of a multiple of 4 bytes, at most 40");
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("frame fits");
    out
}

/// An IPv4 UDP frame with a correct checksum.
pub fn udp_frame(from: Endpoint, to: Endpoint, payload: &[u8]) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(from.mac, to.mac).ipv4(from.ip.octets(), to.ip.octets(), 64).udp(from.port, to.port);
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("frame fits");
    out
}

/// An IPv6 UDP frame with a correct checksum.
pub fn udp6_frame(from: ([u8; 6], [u8; 16], u16), to: ([u8; 6], [u8; 16], u16), payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(from.0, to.0).ipv6(from.1, to.1, 64).udp(from.2, to.2);
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("frame fits");
    out
}

/// `frame` with its TCP/UDP checksum replaced by the partial (pseudo-header) sum, as a
/// guest with checksum offload sends it.
pub fn partial(mut frame: Vec<u8>) -> Vec<u8> {
    offload::set_partial_checksum(&mut frame).expect("a TCP or UDP frame");
    frame
}

/// Completes a blank checksum the way a NIC does (sum from the L4 header to the end of the
/// datagram, complement, store) and checks the result, all without netback's checksum code.
/// IPv4 without a VLAN tag only. `Ok(false)`: the partial sum in the field was wrong.
pub fn partial_checksum_completes(frame: &[u8]) -> anyhow::Result<bool> {
    let l4 = offload::locate_l4(frame)?;
    // The end of the IPv4 datagram: Ethernet padding is not summed.
    let end = (14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]))).min(frame.len());
    let mut f = frame[..end].to_vec();
    let at = l4.start + l4.csum_offset;
    let check = !fold(sum(&f[l4.start..]));
    f[at..at + 2].copy_from_slice(&check.to_be_bytes());
    // Verify: pseudo-header + segment must sum to 0xffff.
    let seg = &f[l4.start..];
    let pseudo = sum(&f[26..34]) + u64::from(f[23]) + seg.len() as u64;
    Ok(fold(pseudo + sum(seg)) == 0xffff)
}

fn sum(data: &[u8]) -> u64 {
    data.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A TCP segment as parsed from a frame.
#[derive(Debug, Clone)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub window: u16,
    pub payload: Vec<u8>,
}

/// Parses an IPv4 TCP frame (checksums are not looked at).
pub fn parse_tcp(frame: &[u8]) -> Option<Segment> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { return None };
    let Some(TransportSlice::Tcp(tcp)) = p.transport else { return None };
    Some(Segment {
        src: ip.header().source_addr(),
        dst: ip.header().destination_addr(),
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        window: tcp.window_size(),
        payload: tcp.payload().to_vec(),
    })
}

/// Deterministic test data: byte `i` of stream `stream`.
pub fn pattern(stream: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add((i >> 8) as u8) ^ stream).collect()
}
