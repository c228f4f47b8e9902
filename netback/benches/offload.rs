//! Software offload cost, one thread: `fill_checksum` on a full-size 1514-byte TCPv4 frame
//! and on a 64 KiB TCPv4 GSO super-frame; `segment_tcp` of that super-frame at MSS 1448
//! (45 segments, allocation and checksums included). Throughput is in frame bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use netback::frame::GsoKind;
use netback::offload::{fill_checksum, segment_tcp};

/// A TCPv4 frame with `payload` bytes of TCP payload (Ethernet 14 + IP 20 + TCP 20).
fn tcp_v4(payload: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(|i| (i * 7 + 3) as u8).collect();
    let mut out = Vec::new();
    PacketBuilder::ethernet2([0, 0x16, 0x3e, 0, 0, 1], [0, 0x16, 0x3e, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 5201, 1, 65535)
        .ack(1)
        .write(&mut out, &data)
        .unwrap();
    out
}

fn offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    // 1514: the largest standard frame; 65535 - 40: the largest IPv4 TCP payload.
    for (name, payload) in [("fill_checksum_1514", 1460), ("fill_checksum_64k", 65_495)] {
        let mut frame = tcp_v4(payload);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| b.iter(|| fill_checksum(black_box(&mut frame)).unwrap()));
    }
    let frame = tcp_v4(65_495);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("segment_tcp_64k_mss1448", |b| {
        b.iter(|| black_box(segment_tcp(black_box(&frame), GsoKind::TcpV4, 1448).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
