//! Resampling throughput: bilinear and bicubic ×2 (and ×6) of a 1024² float32 band, the
//! inner loop of whole-granule super-resolution input preparation (a 20 m band of a full
//! tile is 5490²). Throughput is reported in output pixels.
//!
//! Run: `cargo bench --bench resample` (numbers in BENCHMARKS.md, "Resampling").

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s2edge::raster::degrade::wald_degrade;
use s2edge::raster::resample::{upsample, upsample_blocks, Kernel};
use s2edge::raster::Raster;

/// A deterministic textured band with a sprinkle of nodata (1 pixel in 997), so the
/// nodata-aware path is exercised as in real granules.
fn band(side: usize) -> Raster<f32> {
    let data = (0..side * side)
        .map(|i| {
            if i % 997 == 0 {
                f32::NAN
            } else {
                1000.0 + ((i * 7919) % 4001) as f32
            }
        })
        .collect();
    Raster {
        width: side,
        height: side,
        data,
    }
}

fn bench(c: &mut Criterion) {
    let src = band(1024);
    let mut g = c.benchmark_group("upsample_1024");
    g.sample_size(10);
    for factor in [2usize, 6] {
        g.throughput(Throughput::Elements((1024 * factor * 1024 * factor) as u64));
        for kernel in [Kernel::Bilinear, Kernel::Bicubic] {
            g.bench_with_input(
                BenchmarkId::new(kernel.name(), format!("x{factor}")),
                &factor,
                |b, &f| b.iter(|| upsample(black_box(&src), f, kernel)),
            );
        }
    }
    g.throughput(Throughput::Elements((2048 * 2048) as u64));
    g.bench_function("bilinear_blocks60/x2", |b| {
        b.iter(|| upsample_blocks(black_box(&src), 2, 60, Kernel::Bilinear))
    });
    g.finish();

    let mut g = c.benchmark_group("wald_1024");
    g.sample_size(10);
    g.throughput(Throughput::Elements((1024 * 1024) as u64));
    g.bench_function("x2", |b| b.iter(|| wald_degrade(black_box(&src), 2)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
