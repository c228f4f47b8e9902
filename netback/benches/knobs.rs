//! Hot paths added by the knobs: recording into a batch histogram and reading the live
//! knobs once per worker pass.

use criterion::{Criterion, criterion_group, criterion_main};
use netback::vif::{Histogram, Knobs};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let h = Histogram::default();
    let mut n = 0u64;
    c.bench_function("histogram_record", |b| {
        b.iter(|| {
            n = (n + 7) & 255;
            h.record(black_box(n));
        })
    });
    let knobs = Knobs::default();
    c.bench_function("knobs_get", |b| b.iter(|| black_box(knobs.get())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
