//! The TAP vif against the real kernel. Each test runs its body in a child process (an
//! `#[ignore]`d test started by `netback_e2e::spawn_child`) that first moves into a network
//! namespace of its own, so no frame reaches the host's namespace and tests running in
//! parallel cannot collide (each has its own `vif77.0`). The far side of the TAP is played
//! by the test through the [`TapPort`]: it sends frames as a guest would and reads what the
//! kernel sends to the guest.
//!
//! Needs root (`CAP_NET_ADMIN` for the namespace and the TAP) and `ip` from iproute2;
//! without root the tests say so and pass, unless `NETBACK_TAP_TESTS` is set.

mod tap_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use netback::frame::{Frame, Gso, GsoKind, Offload};
use netback::offload;
use netback::port::{DropReason, TransmitOutcome, Uplink};
use netback::tap::{Tap, TapError, TapPort, VIF_MAC};
use netfront_test::stack::{arp_request, echo_request, parse_arp, parse_echo};
use tap_support::*;

const TAP: &str = "vif77.0";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The simulated guest behind the TAP.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0x77, 0, 2];
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const HOST: Endpoint = Endpoint { mac: VIF_MAC, ip: HOST_IP, port: 5001 };
const PEER: Endpoint = Endpoint { mac: PEER_MAC, ip: PEER_IP, port: 40000 };
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Runs the `#[ignore]`d test `role` in a child process and requires it to pass.
fn in_child(role: &str) {
    if !privileged() {
        eprintln!("skipping {role}: a network namespace and a TAP need root (set {ENV_FORCE}=1 to run anyway)");
        return;
    }
    let mut child = netback_e2e::spawn_child(role, []).expect("spawn the child");
    let status = netback_e2e::wait_child(&mut child, CHILD_LIMIT).expect("wait for the child");
    assert!(status.success(), "{role} failed ({status}); its output is above");
}

/// Declares a test that runs `$body` (a `fn() -> anyhow::Result<()>`) in a child process.
macro_rules! netns_test {
    ($name:ident, $child:ident, $body:path) => {
        #[test]
        fn $name() {
            in_child(stringify!($child));
        }

        #[test]
        #[ignore = "child process of a TAP test"]
        fn $child() {
            if netback_e2e::is_child() {
                $body().unwrap();
            }
        }
    };
}

netns_test!(tap_device_arp_and_ping, child_arp_and_ping, arp_and_ping);
netns_test!(tap_blank_udp_checksum, child_udp_blank_checksum, udp_blank_checksum);
netns_test!(tap_tcp_gso_both_ways, child_tcp_gso, tcp_gso_both_ways);
netns_test!(tap_forwarded_gso_checksums, child_forwarded_gso, forwarded_gso_checksums);
netns_test!(tap_read_budget, child_read_budget, read_budget);
netns_test!(tap_gathered_frames, child_gathered_frames, gathered_frames);
netns_test!(tap_carrier, child_carrier, carrier);

/// `Uplink::set_carrier` on a TAP (`TUNSETCARRIER`), as a stalled guest's vif uses it: the
/// kernel sees the carrier go (no `LOWER_UP`, operational state down) and sends the device
/// nothing while it is off; once it is back, the kernel sends again.
fn carrier() -> anyhow::Result<()> {
    enter_netns(false)?;
    let port = tap_port(TAP, "10.77.0.1/24")?;
    let wait_link = |want: &str, shown: bool| -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let link = ip(&["-o", "link", "show", "dev", TAP])?;
            if link.contains(want) == shown {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "`ip link` shows {want:?}: {}, wanted {shown}: {link}", !shown);
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_link("LOWER_UP", true)?;
    let wire = Wire::new(&port, &[]);
    wire.drain()?;
    port.set_carrier(false);
    wait_link("LOWER_UP", false)?;
    // The operational state follows through the kernel's link watch, which also stops the
    // device's queue.
    wait_link("state DOWN", true)?;
    let sock = UdpSocket::bind((HOST_IP, 0))?;
    // Needs an ARP request first; with the carrier off it must not reach the TAP. (The
    // send itself may fail or succeed: either way nothing is sent on the wire.)
    let _ = sock.send_to(b"carrier off", (PEER_IP, 9));
    ensure!(!wire.readable(Duration::from_millis(300))?, "the kernel sent to a TAP without carrier");
    port.tap().set_carrier(true)?;
    wait_link("LOWER_UP", true)?;
    // A neighbour not tried before: its ARP request goes out at once.
    let other = Ipv4Addr::new(10, 77, 0, 3);
    sock.send_to(b"carrier on", (other, 9))?;
    wire.recv("ARP request", |f| parse_arp(f.data()).is_some_and(|a| a.op == 1 && a.target_ip == other))?;
    Ok(())
}

/// The device as created, `ready_fd` readable exactly while a frame waits, ARP and ICMP
/// echo through the port, refused frames counted, and the device gone with the port.
fn arp_and_ping() -> anyhow::Result<()> {
    enter_netns(false)?;
    let tap = Tap::create(TAP)?;
    assert_eq!(tap.name(), TAP);
    let link = ip(&["-d", "-o", "link", "show", "dev", TAP])?;
    for want in ["link/ether fe:ff:ff:ff:ff:ff", "tun type tap pi off vnet_hdr on", "persist off", "mtu 1500"] {
        ensure!(link.contains(want), "`ip -d link` lacks {want:?}: {link}");
    }
    ensure!(!link.contains(",UP"), "a new TAP is down: {link}");
    tap.set_mtu(9000)?;
    ensure!(ip(&["-o", "link", "show", "dev", TAP])?.contains("mtu 9000"), "set_mtu");
    // A second open of the same name is refused, naming the device.
    match Tap::create(TAP) {
        Err(e @ TapError::SetIff { .. }) => ensure!(e.to_string().contains(TAP), "{e}"),
        other => anyhow::bail!("a second {TAP}: {other:?}"),
    }

    let port = TapPort::new(std::sync::Arc::new(tap));
    let wire = Wire::new(&port, &[]);
    ensure!(!wire.readable(Duration::ZERO)? && port.pop().is_none(), "a down TAP has nothing");
    ip(&["addr", "add", "10.77.0.1/24", "dev", TAP])?;
    port.tap().set_up(true)?;
    ensure!(ip(&["-o", "link", "show", "dev", TAP])?.contains(",UP"), "set_up(true)");

    // (1) ARP: the kernel answers for its address with the vif MAC.
    let request = arp_request(PEER_MAC, PEER_IP, HOST_IP);
    let request_len = request.len();
    wire.send(request, Offload::default())?;
    let reply = wire.recv("ARP reply", |f| parse_arp(f.data()).is_some_and(|a| a.op == 2))?;
    let arp = parse_arp(reply.data()).context("ARP")?;
    assert_eq!((arp.sender_mac, arp.sender_ip, arp.target_mac, arp.target_ip), (VIF_MAC, HOST_IP, PEER_MAC, PEER_IP));
    assert_eq!(reply.dst_mac(), Some(PEER_MAC));
    assert_eq!(*reply.offload(), Offload::default());

    // (2) ICMP echo: the reply's IPv4 and ICMP checksums verify (parse_echo checks both).
    let data: Vec<u8> = pattern(3, 1200);
    let ping = echo_request(PEER_MAC, VIF_MAC, PEER_IP, HOST_IP, 0x77, 1, &data);
    let ping_len = ping.len();
    wire.send(ping, Offload::default())?;
    let pong = wire.recv("echo reply", |f| parse_echo(f.data()).is_some_and(|e| !e.request))?;
    let echo = parse_echo(pong.data()).context("the echo reply's checksums do not verify")?;
    assert_eq!((echo.src_ip, echo.dst_ip, echo.ident, echo.seq), (HOST_IP, PEER_IP, 0x77, 1));
    assert_eq!((echo.src_mac, echo.dst_mac), (VIF_MAC, PEER_MAC));
    assert_eq!(echo.payload, data);

    // ready_fd: nothing left means not readable.
    wire.drain()?;
    ensure!(!wire.readable(Duration::ZERO)? && port.pop().is_none(), "readable with nothing queued");
    let stats = port.stats();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (2, (request_len + ping_len) as u64));
    ensure!(stats.rx_frames >= 2 && stats.rx_bytes >= (reply.len() + pong.len()) as u64, "{stats:?}");

    // Refused frames: a runt, and a blank checksum on a frame without TCP/UDP.
    assert_eq!(port.transmit(Frame::new(vec![0; 13])), TransmitOutcome::Dropped(DropReason::Runt));
    let blank_arp = Frame::with_offload(
        arp_request(PEER_MAC, PEER_IP, HOST_IP),
        Offload { csum_blank: true, ..Offload::default() },
    );
    assert_eq!(port.transmit(blank_arp), TransmitOutcome::Dropped(DropReason::QueueFull));
    let all = port.tap_stats();
    assert_eq!((all.port.dropped_runt, all.port.dropped_queue_full, all.tx_dropped_offload), (1, 1, 1));
    assert_eq!((all.port.tx_frames, all.tx_errors, all.tx_dropped_full), (4, 0, 0));

    port.tap().set_up(false)?;
    ensure!(!ip(&["-o", "link", "show", "dev", TAP])?.contains(",UP"), "set_up(false)");
    drop(port);
    ensure!(ip(&["link", "show", "dev", TAP]).is_err(), "the TAP outlived its port");
    Ok(())
}

/// `pop_batch` reads at most its budget: 1 after batches that found the TAP empty, doubling
/// while batches end with frames still queued; frames left behind keep the descriptor
/// readable and come out in order.
fn read_budget() -> anyhow::Result<()> {
    enter_netns(false)?;
    let port = tap_port(TAP, "10.77.0.1/24")?;
    let wire = Wire::new(&port, &[]);
    // The kernel learns the peer from its ARP request, so it can answer pings.
    wire.send(arp_request(PEER_MAC, PEER_IP, HOST_IP), Offload::default())?;
    wire.recv("ARP reply", |f| parse_arp(f.data()).is_some_and(|a| a.op == 2))?;
    wire.drain()?;
    let mut out = Vec::new();
    // Seven batches that find nothing bring any budget (at most 64) down to 1.
    for _ in 0..7 {
        port.pop_batch(64, &mut out);
    }
    ensure!(out.is_empty(), "frames from an idle TAP: {}", out.len());
    for seq in 1..=7 {
        wire.send(echo_request(PEER_MAC, VIF_MAC, PEER_IP, HOST_IP, 0x78, seq, &[seq as u8; 64]), Offload::default())?;
    }
    // The kernel answers each request as it is written; let the last one settle.
    ensure!(wire.readable(Duration::from_secs(2))?, "no echo reply queued");
    std::thread::sleep(Duration::from_millis(200));
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let before = out.len();
        port.pop_batch(64, &mut out);
        sizes.push(out.len() - before);
        ensure!(wire.readable(Duration::ZERO)? == (out.len() < 7), "readable exactly while replies wait");
    }
    assert_eq!(sizes, [1, 2, 4], "budget 1, then doubling");
    let seqs: Vec<u16> =
        out.iter().map(|f| parse_echo(f.data()).context("echo reply").map(|e| e.seq)).collect::<Result<_, _>>()?;
    assert_eq!(seqs, (1..=7).collect::<Vec<u16>>());
    // `max` bounds a batch as well: one reply more, asked for one at most.
    wire.send(echo_request(PEER_MAC, VIF_MAC, PEER_IP, HOST_IP, 0x78, 8, &[8; 64]), Offload::default())?;
    wire.send(echo_request(PEER_MAC, VIF_MAC, PEER_IP, HOST_IP, 0x78, 9, &[9; 64]), Offload::default())?;
    ensure!(wire.readable(Duration::from_secs(2))?, "no reply to 8");
    std::thread::sleep(Duration::from_millis(100));
    out.clear();
    port.pop_batch(1, &mut out);
    assert_eq!(out.len(), 1);
    port.pop_batch(64, &mut out);
    let seqs: Vec<u16> = out.iter().filter_map(|f| parse_echo(f.data()).map(|e| e.seq)).collect();
    assert_eq!(seqs, [8, 9], "the second reply comes with the next batch");
    Ok(())
}

/// (3) A UDP datagram with a blank (partial) checksum reaches a kernel socket intact when
/// sent with `csum_blank`, and the same bytes without it are dropped for a bad checksum:
/// it is NEEDS_CSUM, with the right offsets, that makes the kernel accept it. IPv4 and IPv6.
fn udp_blank_checksum() -> anyhow::Result<()> {
    enter_netns(true)?;
    let port = tap_port(TAP, "10.77.0.1/24")?;
    ip(&["-6", "addr", "add", "fd77::1/64", "dev", TAP, "nodad"])?;
    // The kernel adds the address's local route from a work item, after `ip` returns;
    // until then a datagram for it is not delivered.
    let deadline = std::time::Instant::now() + WAIT;
    while ip(&["-6", "route", "show", "table", "local", "fd77::1"])?.trim().is_empty() {
        ensure!(std::time::Instant::now() < deadline, "fd77::1 never got its local route");
        std::thread::sleep(Duration::from_millis(5));
    }
    let wire = Wire::new(&port, &[(PEER_MAC, PEER_IP)]);
    let blank = Offload { csum_blank: true, ..Offload::default() };
    let v6_host: [u8; 16] = "fd77::1".parse::<std::net::Ipv6Addr>()?.octets();
    let v6_peer: [u8; 16] = "fd77::2".parse::<std::net::Ipv6Addr>()?.octets();

    for v6 in [false, true] {
        let sock = if v6 { UdpSocket::bind("[fd77::1]:5001")? } else { UdpSocket::bind("10.77.0.1:5001")? };
        sock.set_read_timeout(Some(WAIT))?;
        let build = |payload: &[u8]| match v6 {
            false => udp_frame(PEER, HOST, payload),
            true => udp6_frame((PEER_MAC, v6_peer, 40000), (VIF_MAC, v6_host, 5001), payload),
        };
        let errors = || if v6 { snmp6("Udp6InCsumErrors") } else { snmp("Udp", "InCsumErrors") };
        let before = errors()?;
        let (control, good, full) = (pattern(1, 700), pattern(2, 1400), pattern(3, 100));
        // Same partial-checksum bytes, once without the offload: a bad checksum to the kernel.
        wire.send(partial(build(&control)), Offload::default())?;
        wire.send(partial(build(&good)), blank)?;
        wire.send(build(&full), Offload::default())?;
        let mut buf = vec![0u8; 2000];
        let n = sock.recv(&mut buf).with_context(|| format!("v6 {v6}: the blank-checksum datagram"))?;
        assert_eq!(&buf[..n], &good[..], "v6 {v6}: the blank-checksum datagram first, intact");
        let n = sock.recv(&mut buf).with_context(|| format!("v6 {v6}: the checksummed datagram"))?;
        assert_eq!(&buf[..n], &full[..], "v6 {v6}: then the fully checksummed one");
        sock.set_nonblocking(true)?;
        let e = sock.recv(&mut buf).expect_err("the control datagram must not arrive");
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        assert_eq!(errors()?, before + 1, "v6 {v6}: the control was dropped for its checksum");
    }
    let stats = port.tap_stats();
    assert_eq!((stats.port.dropped_queue_full, stats.tx_errors), (0, 0));
    Ok(())
}

/// (4) A kernel TCP connection to a peer simulated over the TAP: the kernel hands us TCP
/// super-frames unsegmented (GSO TCPv4, longer than 1514 bytes, partial checksums that
/// complete correctly), and takes our GSO super-frames, with and without a blank
/// checksum, into its socket whole.
fn tcp_gso_both_ways() -> anyhow::Result<()> {
    const DOWN: usize = 512 * 1024;
    const UP: usize = 300 * 1024;
    enter_netns(false)?;
    let port = tap_port(TAP, "10.77.0.1/24")?;
    let listener = TcpListener::bind((HOST_IP, HOST.port))?;
    // The kernel's end, on a thread (which shares the namespace): send DOWN bytes, then
    // read UP bytes.
    let kernel = std::thread::spawn(move || -> anyhow::Result<Vec<u8>> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        stream.write_all(&pattern(1, DOWN))?;
        let mut got = vec![0u8; UP];
        stream.read_exact(&mut got)?;
        Ok(got)
    });

    let mut tcp = TcpPeer::connect(Wire::new(&port, &[(PEER_MAC, PEER_IP)]))?;
    let Received { data: down, frames } = tcp.receive(DOWN)?;
    assert!(down == pattern(1, DOWN), "the kernel's stream arrived corrupted");
    let big: Vec<&(usize, Offload)> = frames.iter().filter(|(len, o)| o.gso.is_some() && *len > 1514).collect();
    ensure!(!big.is_empty(), "no GSO super-frame from the kernel in {} frames", frames.len());
    for (len, o) in &frames {
        let gso = o.gso.map(|g| (g.kind, g.size > 0 && g.size <= 1460));
        ensure!(gso.is_none() || gso == Some((GsoKind::TcpV4, true)), "{len} bytes: {o:?}");
    }
    eprintln!(
        "kernel → peer: {} data frames, {} GSO super-frames, largest {} bytes",
        frames.len(),
        big.len(),
        frames.iter().map(|f| f.0).max().unwrap_or(0)
    );

    let sent = tcp.send(&pattern(2, UP))?;
    let got = kernel.join().expect("kernel thread")?;
    assert!(got == pattern(2, UP), "the kernel socket read corrupted data");
    ensure!(sent.gso_frames >= 2, "too few GSO frames sent: {sent:?}");
    let stats = port.tap_stats();
    ensure!(stats.tx_gso_checksum_fixups >= 1, "no GSO frame went without csum_blank: {stats:?}");
    assert_eq!((stats.port.dropped_queue_full, stats.rx_dropped_offload, stats.rx_errors), (0, 0, 0));
    Ok(())
}

/// Routed through the kernel from one TAP to another, our GSO frames (with a blank checksum,
/// and without one so the port rewrites the field) and a blank-checksum UDP datagram come
/// out with checksums that verify: the kernel builds every segment's checksum from the
/// partial sum we wrote, so this checks `csum_start`/`csum_offset` and the rewrite.
fn forwarded_gso_checksums() -> anyhow::Result<()> {
    const FAR_MAC: [u8; 6] = [0x02, 0, 0, 0x78, 0, 2];
    const FAR: Endpoint = Endpoint { mac: FAR_MAC, ip: Ipv4Addr::new(10, 78, 0, 2), port: 6000 };
    enter_netns(false)?;
    sysctl("net/ipv4/ip_forward", "1")?;
    let near = tap_port(TAP, "10.77.0.1/24")?;
    let far = tap_port("vif77.1", "10.78.0.1/24")?;
    let (near_wire, far_wire) = (Wire::new(&near, &[(PEER_MAC, PEER_IP)]), Wire::new(&far, &[(FAR_MAC, FAR.ip)]));
    let to_far = Endpoint { mac: VIF_MAC, ..FAR };
    let gso =
        |csum_blank| Offload { csum_blank, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV4, size: 1448 }) };

    for (i, csum_blank) in [true, false].into_iter().enumerate() {
        let data = pattern(i as u8, 20_000);
        let seq = 1_000_000 * (i as u32 + 1);
        let frame = tcp_frame(PEER, to_far, seq, Some(1), Flags { psh: true, ..Flags::default() }, &[], &data);
        near_wire.send(if csum_blank { partial(frame) } else { frame }, gso(csum_blank))?;
        let mut got = Vec::new();
        while got.len() < data.len() {
            let f = far_wire.recv("forwarded TCP", |f| parse_tcp(f.data()).is_some_and(|s| s.dst_port == FAR.port))?;
            check_l4_checksum(&f)?;
            let s = parse_tcp(f.data()).context("TCP")?;
            ensure!(s.seq == seq + got.len() as u32, "segment out of order: {s:?}");
            got.extend_from_slice(&s.payload);
        }
        assert!(got == data, "csum_blank {csum_blank}: payload corrupted");
    }
    assert_eq!(near.tap_stats().tx_gso_checksum_fixups, 1);

    // Within the far link's MTU: a forwarded datagram is not segmented.
    let data = pattern(9, 1000);
    near_wire.send(partial(udp_frame(PEER, to_far, &data)), Offload { csum_blank: true, ..Offload::default() })?;
    let f = far_wire.recv("forwarded UDP", |f| f.len() > 1000 && f.data().ends_with(&data))?;
    check_l4_checksum(&f)?;
    Ok(())
}

/// Sends `frame` as [`Uplink::transmit_gather`] gets it from a vif with mapped pages: its
/// first `head` bytes private, the rest as slices of another buffer cut at `cuts`.
fn send_gathered(port: &TapPort, frame: &[u8], head: usize, cuts: &[usize], offload: Offload) -> TransmitOutcome {
    let mut rest = frame[head..].to_vec();
    let mut slices = Vec::new();
    let mut tail = &mut rest[..];
    let mut at = head;
    for &cut in cuts.iter().chain(std::iter::once(&frame.len())) {
        let (piece, more) = std::mem::take(&mut tail).split_at_mut(cut - at);
        slices.push(vm_memory::VolatileSlice::from(piece));
        tail = more;
        at = cut;
    }
    port.transmit_gather(Frame::with_offload(frame[..head].to_vec(), offload), &slices)
}

/// Frames handed to the TAP in pieces (a private head, then slices) are written in one
/// `writev` and routed to a second TAP intact: GSO with a blank checksum and without one
/// (the fix-up written into the head only), a blank-checksum UDP datagram; a frame whose
/// TCP header is not all in its head is joined first and still arrives intact.
fn gathered_frames() -> anyhow::Result<()> {
    const FAR_MAC: [u8; 6] = [0x02, 0, 0, 0x78, 0, 2];
    const FAR: Endpoint = Endpoint { mac: FAR_MAC, ip: Ipv4Addr::new(10, 78, 0, 2), port: 6000 };
    enter_netns(false)?;
    sysctl("net/ipv4/ip_forward", "1")?;
    let near = tap_port(TAP, "10.77.0.1/24")?;
    let far = tap_port("vif77.1", "10.78.0.1/24")?;
    let far_wire = Wire::new(&far, &[(FAR_MAC, FAR.ip)]);
    let _near_wire = Wire::new(&near, &[(PEER_MAC, PEER_IP)]);
    let to_far = Endpoint { mac: VIF_MAC, ..FAR };
    ensure!(near.gathers(), "a TAP gathers");
    let gso =
        |csum_blank| Offload { csum_blank, data_validated: false, gso: Some(Gso { kind: GsoKind::TcpV4, size: 1448 }) };

    // (head length, csum_blank): 54 bytes of headers, 128 as the vif copies, and a head
    // that cuts the TCP header (joined).
    for (i, (head, csum_blank)) in [(128, true), (128, false), (54, true), (40, true)].into_iter().enumerate() {
        let data = pattern(i as u8, 20_000);
        let seq = 1_000_000 * (i as u32 + 1);
        let frame = tcp_frame(PEER, to_far, seq, Some(1), Flags { psh: true, ..Flags::default() }, &[], &data);
        let frame = if csum_blank { partial(frame) } else { frame };
        let cuts = [head + 3000, head + 7000, head + 7001];
        let outcome = send_gathered(&near, &frame, head, &cuts, gso(csum_blank));
        ensure!(outcome == TransmitOutcome::Sent, "head {head}: {outcome:?}");
        let mut got = Vec::new();
        while got.len() < data.len() {
            let f = far_wire.recv("forwarded TCP", |f| parse_tcp(f.data()).is_some_and(|s| s.dst_port == FAR.port))?;
            check_l4_checksum(&f)?;
            let s = parse_tcp(f.data()).context("TCP")?;
            ensure!(s.seq == seq + got.len() as u32, "head {head}: segment out of order: {s:?}");
            got.extend_from_slice(&s.payload);
        }
        assert!(got == data, "head {head}, csum_blank {csum_blank}: payload corrupted");
    }
    let data = pattern(9, 1000);
    let frame = partial(udp_frame(PEER, to_far, &data));
    let outcome = send_gathered(&near, &frame, 128, &[500], Offload { csum_blank: true, ..Offload::default() });
    ensure!(outcome == TransmitOutcome::Sent, "UDP: {outcome:?}");
    let f = far_wire.recv("forwarded UDP", |f| f.len() > 1000 && f.data().ends_with(&data))?;
    check_l4_checksum(&f)?;

    let stats = near.tap_stats();
    assert_eq!((stats.tx_gathered, stats.tx_gather_joined, stats.tx_gso_checksum_fixups), (4, 1, 1), "{stats:?}");
    assert_eq!((stats.port.tx_frames, stats.port.dropped_queue_full), (5, 0));
    Ok(())
}

/// A frame from the kernel carries a correct TCP/UDP checksum: complete (if blank) or
/// completing to a correct one.
fn check_l4_checksum(f: &Frame) -> anyhow::Result<()> {
    let ok = if f.offload().csum_blank {
        partial_checksum_completes(f.data())?
    } else {
        offload::l4_checksum_is_valid(f.data())?
    };
    ensure!(ok, "bad checksum on a {}-byte frame with {:?}", f.len(), f.offload());
    Ok(())
}

/// A counter of `/proc/net/snmp6` for this thread's namespace.
fn snmp6(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp6")?;
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(field)).context(field.to_string())?;
    Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
}

/// What [`TcpPeer::send`] did.
#[derive(Debug, Default)]
struct Sent {
    frames: usize,
    gso_frames: usize,
    retransmits: usize,
}

/// What [`TcpPeer::receive`] got: the stream, and the length and offload of every data frame.
struct Received {
    data: Vec<u8>,
    frames: Vec<(usize, Offload)>,
}

/// The simulated guest's end of one TCP connection to the kernel (10.77.0.2:40000 →
/// 10.77.0.1:5001): enough TCP for in-order data both ways, go-back-N on a timeout.
struct TcpPeer<'a> {
    wire: Wire<'a>,
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    rcv_nxt: u32,
}

const ISS: u32 = 1000;
/// MSS option: 1460.
const MSS_OPTION: [u8; 4] = [2, 4, 0x05, 0xb4];
const MSS: usize = 1460;

impl<'a> TcpPeer<'a> {
    fn connect(wire: Wire<'a>) -> anyhow::Result<TcpPeer<'a>> {
        let syn = tcp_frame(PEER, HOST, ISS, None, Flags { syn: true, ..Flags::default() }, &MSS_OPTION, &[]);
        wire.send(syn, Offload::default())?;
        let f = wire.recv("SYN-ACK", |f| parse_tcp(f.data()).is_some_and(|s| s.syn && s.ack == Some(ISS + 1)))?;
        let synack = parse_tcp(f.data()).context("TCP")?;
        let peer = TcpPeer {
            wire,
            snd_una: ISS + 1,
            snd_nxt: ISS + 1,
            snd_wnd: u32::from(synack.window),
            rcv_nxt: synack.seq.wrapping_add(1),
        };
        peer.ack()?;
        Ok(peer)
    }

    fn ack(&self) -> anyhow::Result<()> {
        let f = tcp_frame(PEER, HOST, self.snd_nxt, Some(self.rcv_nxt), Flags::default(), &[], &[]);
        self.wire.send(f, Offload::default())
    }

    fn from_kernel(s: &Segment) -> bool {
        s.src == HOST_IP && s.src_port == HOST.port && s.dst_port == PEER.port
    }

    /// Takes the acknowledgment and window of a segment from the kernel.
    fn update(&mut self, s: &Segment) {
        if let Some(ack) = s.ack.filter(|&a| a.wrapping_sub(self.snd_una) as i32 > 0) {
            self.snd_una = ack;
        }
        self.snd_wnd = u32::from(s.window);
    }

    /// Receives `len` bytes in order, acknowledging every segment.
    fn receive(&mut self, len: usize) -> anyhow::Result<Received> {
        let (mut data, mut frames) = (Vec::with_capacity(len), Vec::new());
        while data.len() < len {
            let f = self.wire.recv("TCP data", |f| parse_tcp(f.data()).is_some_and(|s| Self::from_kernel(&s)))?;
            let s = parse_tcp(f.data()).context("TCP")?;
            ensure!(!s.rst, "the kernel reset the connection");
            self.update(&s);
            if s.payload.is_empty() {
                continue;
            }
            check_l4_checksum(&f)?;
            ensure!(f.offload().csum_blank, "kernel TCP data without a blank checksum: {:?}", f.offload());
            frames.push((f.len(), *f.offload()));
            if s.seq == self.rcv_nxt {
                data.extend_from_slice(&s.payload);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(s.payload.len() as u32);
            }
            self.ack()?;
        }
        Ok(Received { data, frames })
    }

    /// Sends `data` within the kernel's window, as GSO super-frames (MSS 1460) whenever
    /// more than one segment fits; every other frame goes without `csum_blank` (full
    /// checksum) so the port's rewrite to a partial one is exercised.
    fn send(&mut self, data: &[u8]) -> anyhow::Result<Sent> {
        let end = self.snd_una.wrapping_add(data.len() as u32);
        let base = self.snd_una;
        let mut sent = Sent::default();
        while self.snd_una != end {
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
            let room = (self.snd_wnd.saturating_sub(in_flight) as usize).min(60_000);
            let left = end.wrapping_sub(self.snd_nxt) as usize;
            if left > 0 && room >= left.min(MSS) {
                let off = self.snd_nxt.wrapping_sub(base) as usize;
                let chunk = &data[off..off + left.min(room)];
                let flags = Flags { psh: true, ..Flags::default() };
                let frame = tcp_frame(PEER, HOST, self.snd_nxt, Some(self.rcv_nxt), flags, &[], chunk);
                let blank = sent.frames % 2 == 0;
                let gso = (chunk.len() > MSS).then_some(Gso { kind: GsoKind::TcpV4, size: MSS as u16 });
                let offload = Offload { csum_blank: blank, data_validated: false, gso };
                self.wire.send(if blank { partial(frame) } else { frame }, offload)?;
                sent.frames += 1;
                sent.gso_frames += usize::from(gso.is_some());
                self.snd_nxt = self.snd_nxt.wrapping_add(chunk.len() as u32);
                continue;
            }
            match self.wire.next(Duration::from_millis(300))? {
                Some(f) => {
                    if let Some(s) = parse_tcp(f.data()).filter(Self::from_kernel) {
                        ensure!(!s.rst, "the kernel reset the connection");
                        self.update(&s);
                    }
                }
                None => {
                    // Nothing acknowledged for a while: go back to the first unacknowledged byte.
                    ensure!(sent.retransmits < 20, "no progress: {sent:?}");
                    sent.retransmits += 1;
                    self.snd_nxt = self.snd_una;
                }
            }
        }
        Ok(sent)
    }
}
