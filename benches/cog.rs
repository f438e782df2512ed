//! COG writing throughput (MB/s of uncompressed input), recorded in BENCHMARKS.md
//! "COG writing".
//!
//! Input: 2048² × 4 bands of uint16. The pixels are the real 10 m bands (B02 B03 B04
//! B08) of the shared 33UUB crop, mirrored to size, when `../shared/data` is present
//! (real imagery compresses very differently from noise), otherwise a synthetic texture.
//! `S2EDGE_BENCH_FULL=1` adds one full-tile run (10980² × 12 bands, 2.9 GB of input).

use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s2edge::granule::{GeoRef, GeoTransform};
use s2edge::product::cog::{write_cog_with, CogBand, CogOptions};
use s2edge::raster::Raster;

fn crop_band(name: &str) -> Option<Raster<u16>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C")
        .join(format!("{name}.tif"));
    let mut dec = tiff::decoder::Decoder::new(std::fs::File::open(path).ok()?).ok()?;
    let (w, h) = dec.dimensions().ok()?;
    match dec.read_image().ok()? {
        tiff::decoder::DecodingResult::U16(v) => Raster::from_vec(w as usize, h as usize, v),
        _ => None,
    }
}

/// `src` mirrored (reflected at its edges) to `w`×`h`.
fn mirrored(src: &Raster<u16>, w: usize, h: usize) -> Raster<u16> {
    let reflect = |i: usize, n: usize| {
        let p = i % (2 * n);
        if p < n {
            p
        } else {
            2 * n - 1 - p
        }
    };
    let mut data = Vec::with_capacity(w * h);
    for r in 0..h {
        let rr = reflect(r, src.height);
        for c in 0..w {
            data.push(src.get(reflect(c, src.width), rr));
        }
    }
    Raster {
        width: w,
        height: h,
        data,
    }
}

fn synthetic(w: usize, h: usize, b: usize) -> Raster<u16> {
    let mut data = Vec::with_capacity(w * h);
    let mut s: u64 = 0x2545_F491_4F6C_DD1D ^ b as u64;
    for r in 0..h {
        for c in 0..w {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            data.push((800 + (r / 7 + c / 11) % 900 + (s % 64) as usize) as u16);
        }
    }
    Raster {
        width: w,
        height: h,
        data,
    }
}

fn bands(w: usize, h: usize, n: usize) -> (Vec<Raster<u16>>, &'static str) {
    let names = ["B02", "B03", "B04", "B08"];
    let crop: Option<Vec<Raster<u16>>> = names.iter().map(|b| crop_band(b)).collect();
    match crop {
        Some(c) => (
            (0..n).map(|i| mirrored(&c[i % c.len()], w, h)).collect(),
            "33UUB crop, mirrored",
        ),
        None => ((0..n).map(|i| synthetic(w, h, i)).collect(), "synthetic"),
    }
}

fn georef(w: usize, h: usize) -> GeoRef {
    GeoRef {
        epsg: 32633,
        transform: GeoTransform {
            origin_x: 300000.0,
            origin_y: 6200040.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: w,
        height: h,
    }
}

fn bench_cog(c: &mut Criterion) {
    let (w, h, n) = (2048, 2048, 4);
    let (rasters, source) = bands(w, h, n);
    let names = ["B02", "B03", "B04", "B08"];
    let cog: Vec<CogBand<'_, u16>> = rasters
        .iter()
        .zip(names)
        .map(|(data, description)| CogBand { description, data })
        .collect();
    let g = georef(w, h);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("bench.tif");
    let raw = (w * h * n * 2) as u64;
    println!("input: {source}, {} MB uncompressed", raw / 1_000_000);

    let mut group = c.benchmark_group("cog_u16_2048x2048x4");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(raw));
    for level in [1, 3, 9] {
        let options = CogOptions {
            zstd_level: level,
            ..CogOptions::default()
        };
        group.bench_with_input(BenchmarkId::new("zstd", level), &options, |b, o| {
            b.iter(|| {
                write_cog_with(&path, &g, &cog, Some(0.0), o).unwrap_or_else(|e| panic!("{e}"))
            })
        });
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "zstd {level}: file {:.1} MB, ratio {:.2}",
            size as f64 / 1e6,
            raw as f64 / size as f64
        );
    }
    group.finish();

    if std::env::var_os("S2EDGE_BENCH_FULL").is_some() {
        let (w, h, n) = (10980, 10980, 12);
        let (rasters, source) = bands(w, h, n);
        let cog: Vec<CogBand<'_, u16>> = rasters
            .iter()
            .map(|data| CogBand {
                description: "B",
                data,
            })
            .collect();
        let start = Instant::now();
        write_cog_with(
            &path,
            &georef(w, h),
            &cog,
            Some(0.0),
            &CogOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let secs = start.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let raw = (w * h * n * 2) as f64;
        println!(
            "full tile 10980²×12 ({source}): {secs:.1} s, {:.0} MB/s, file {:.0} MB",
            raw / secs / 1e6,
            size as f64 / 1e6
        );
    }
}

criterion_group!(benches, bench_cog);
criterion_main!(benches);
