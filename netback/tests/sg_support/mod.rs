//! Helpers of the scatter-gather / offload data-path tests: multi-slot TX chains written by a
//! hand-driven frontend, a switch port popped directly, and IPv4 frames with checksums
//! checked independently of `netback::offload`.

use crate::datapath_support::HandFront;
use anyhow::{Context, ensure};
use netback::frame::Frame;
use netback::port::Uplink;
use netback::switch::SwitchPort;
use netif::TxRequest;
use netif::abi::NETTXF_MORE_DATA;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::time::{Duration, Instant};

/// A frame of `len` bytes from `src` to `dst` whose payload bytes all differ from their
/// neighbours (so a misplaced slot shows).
pub fn patterned(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 8) as u8)).collect();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Splits `frame` over TX buffers `0..pieces.len()`: piece `i` is `(offset, len)`, written at
/// `offset` of buffer `i`. The first request carries the total size and `first_flags`; every
/// request but the last has `NETTXF_more_data`. The lengths must sum to `frame.len()`.
pub fn chain(h: &HandFront, frame: &[u8], pieces: &[(u16, usize)], first_flags: u16) -> Vec<TxRequest> {
    assert_eq!(pieces.iter().map(|p| p.1).sum::<usize>(), frame.len());
    let mut at = 0;
    let mut reqs = Vec::new();
    for (i, &(offset, len)) in pieces.iter().enumerate() {
        let more = if i + 1 < pieces.len() { NETTXF_MORE_DATA } else { 0 };
        let flags = more | if i == 0 { first_flags } else { 0 };
        reqs.push(h.tx_request(i, offset, &frame[at..at + len], flags));
        at += len;
    }
    reqs[0].size = frame.len() as u16;
    reqs
}

/// Pops the next frame from `port`, waiting up to `wait`.
pub fn pop(port: &SwitchPort, wait: Duration) -> anyhow::Result<Frame> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(frame) = port.pop() {
            return Ok(frame);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "no frame on port {}", port.name());
        let mut fds = [PollFd::new(port.ready_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX))?;
    }
}

/// An Ethernet + IPv4 frame carrying `l4` (TCP 6 or UDP 17 header and payload, checksum
/// field as given).
pub fn ipv4(dst: [u8; 6], src: [u8; 6], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let csum = !fold(sum(&ip));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + total as usize);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// A TCP header (20 bytes, ACK|PSH, checksum 0) followed by `payload`.
pub fn tcp(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

/// A UDP header (checksum 0) followed by `payload`.
pub fn udp(payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = vec![0x13, 0x88, 0x13, 0x89, 0, 0, 0, 0];
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u.extend_from_slice(payload);
    u
}

fn sum(bytes: &[u8]) -> u32 {
    bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checks an Ethernet + IPv4 (no options) frame: header checksum, total length, and the
/// TCP/UDP checksum over the pseudo-header. Returns the L4 bytes.
pub fn check_ipv4(frame: &[u8]) -> anyhow::Result<&[u8]> {
    ensure!(frame.len() >= 34 && frame[12..14] == [0x08, 0x00] && frame[14] == 0x45, "not IPv4 without options");
    let ip = &frame[14..34];
    ensure!(fold(sum(ip)) == 0xffff, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = frame.get(34..14 + total).context("IPv4 total length beyond the frame")?;
    let pseudo = sum(&ip[12..20]) + u32::from(ip[9]) + l4.len() as u32;
    ensure!(fold(pseudo + sum(l4)) == 0xffff, "L4 checksum of a {}-byte segment", l4.len());
    Ok(l4)
}
