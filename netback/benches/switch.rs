//! Switch forwarding cost, 64-byte frames, one thread:
//! `unicast_64` is a transmit to a learned MAC plus the receiver's pop
//! (`unicast_64_batch32`: 32 of each, one at a time; `unicast_64_fastpath32`: 32 through
//! `transmit_batch` and `pop_batch`, as the vif workers do: forwarding cache, one queue lock
//! and at most one wake-up per batch);
//! `flood_64_to_4` is a broadcast from a fifth port plus the four pops. Both
//! include allocating the frame (as a TX copy out of a grant would).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netback::frame::{BROADCAST_MAC, Frame};
use netback::port::Uplink;
use netback::switch::{Switch, SwitchConfig};

const A: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xa];
const B: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 0xb];

fn frame(dst: [u8; 6], src: [u8; 6]) -> Frame {
    let mut d = vec![0u8; 64];
    d[..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    Frame::new(d)
}

fn unicast(c: &mut Criterion) {
    let sw = Switch::new(SwitchConfig::default());
    let (pa, pb) = (sw.add_port("a").unwrap(), sw.add_port("b").unwrap());
    pb.transmit(frame(BROADCAST_MAC, B));
    while pa.pop().is_some() {}
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("unicast_64", |b| {
        b.iter(|| {
            pa.transmit(frame(B, A));
            black_box(pb.pop().unwrap());
        })
    });
    // A worker drains in batches: the eventfd write/read pair (one each per
    // empty -> non-empty -> empty cycle) is then paid once per batch.
    g.throughput(Throughput::Elements(32));
    g.bench_function("unicast_64_batch32", |b| {
        b.iter(|| {
            for _ in 0..32 {
                pa.transmit(frame(B, A));
            }
            while let Some(f) = pb.pop() {
                black_box(f);
            }
        })
    });
    let mut batch = Vec::with_capacity(32);
    let mut out = Vec::with_capacity(32);
    g.bench_function("unicast_64_fastpath32", |b| {
        b.iter(|| {
            batch.extend((0..32).map(|_| frame(B, A)));
            pa.transmit_batch(&mut batch);
            pb.pop_batch(32, &mut out);
            black_box(out.drain(..).count());
        })
    });
    g.finish();
}

fn flood(c: &mut Criterion) {
    let sw = Switch::new(SwitchConfig::default());
    let src = sw.add_port("src").unwrap();
    let dsts: Vec<_> = (0..4).map(|i| sw.add_port(&format!("d{i}")).unwrap()).collect();
    let mut g = c.benchmark_group("switch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("flood_64_to_4", |b| {
        b.iter(|| {
            src.transmit(frame(BROADCAST_MAC, A));
            for d in &dsts {
                black_box(d.pop().unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, unicast, flood);
criterion_main!(benches);
