//! The hot kernels of the streaming pipeline (issue 9), BENCHMARKS.md "Streaming
//! pipeline": harmonise + normalise, window resampling (20 m → 10 m bilinear, as a tile
//! input is cut), tile planning + stitching, COG encoding (the row-streaming writer
//! against the whole-raster writer, ZSTD levels 1 and 3), and JPEG 2000 decoding of one
//! band (a lossless GeoJP2 made by GDAL from the crop's B02 when `gdal_translate` and
//! `../shared/data` are present; skipped otherwise).

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array4;

use s2edge::granule::{Band, GeoRef, GeoTransform};
use s2edge::pipeline::scene::Scene;
use s2edge::pipeline::tensor::{fill_channel, Channel};
use s2edge::product::cog::{write_cog_with, CogBand, CogBlockWriter, CogOptions};
use s2edge::raster::radiometry::harmonise;
use s2edge::raster::resample::Kernel;
use s2edge::raster::tiling::{plan, Mosaic, Rect};
use s2edge::raster::Raster;

fn texture(w: usize, h: usize, salt: usize) -> Raster<u16> {
    let data = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let s = 1500.0 + 500.0 * (x * 0.045 + salt as f32).sin() * (y * 0.031).cos();
            (s + ((i * 2_654_435_761 + salt) % 600) as f32) as u16
        })
        .collect();
    Raster {
        width: w,
        height: h,
        data,
    }
}

fn georef(w: usize, h: usize) -> GeoRef {
    GeoRef {
        epsg: 32633,
        transform: GeoTransform {
            origin_x: 300_000.0,
            origin_y: 5_000_000.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: w,
        height: h,
    }
}

fn bench(c: &mut Criterion) {
    let side = 1098;
    let dn = texture(side, side, 1);

    let mut g = c.benchmark_group("radiometry_1098");
    g.throughput(Throughput::Elements((side * side) as u64));
    g.bench_function("harmonise_offset-1000", |b| {
        b.iter(|| harmonise(black_box(&dn), -1000.0))
    });
    let ch = Channel {
        band: Band::B02,
        mean: 0.0,
        std: 2000.0,
        kernel: Kernel::Bilinear,
    };
    let window = s2edge::raster::radiometry::to_f32(&dn);
    let mut batch = Array4::<f32>::zeros((1, 1, side, side));
    g.bench_function("to_f32+normalise", |b| {
        b.iter(|| {
            let w = s2edge::raster::radiometry::to_f32(black_box(&dn));
            fill_channel(&mut batch, 0, 0, &ch, &w);
        })
    });
    drop(window);
    g.finish();

    // A 540² tile input from a 20 m band (the 2x model's x20 channels).
    let low = texture(side / 2, side / 2, 2);
    let rect = Rect {
        col: 498,
        row: 498,
        width: 540,
        height: 540,
    };
    let mut g = c.benchmark_group("window_10m_540");
    g.throughput(Throughput::Elements((540 * 540) as u64));
    g.bench_function("bilinear_x2", |b| {
        b.iter(|| Scene::window_10m(black_box(&low), 2, Kernel::Bilinear, rect))
    });
    g.bench_function("bilinear_x6", |b| {
        let low6 = texture(side / 6, side / 6, 3);
        b.iter(|| Scene::window_10m(black_box(&low6), 6, Kernel::Bilinear, rect))
    });
    g.finish();

    let mut g = c.benchmark_group("tiling_2196");
    let big = 2196;
    g.throughput(Throughput::Elements((big * big) as u64));
    let tiles = plan(big, big, 504, 14, 6);
    let results: Vec<Raster<f32>> = tiles
        .iter()
        .map(|t| Raster::filled(t.padded.width, t.padded.height, 1.0f32))
        .collect();
    g.bench_function("plan+stitch", |b| {
        b.iter(|| {
            let tiles = plan(big, big, 504, 14, 6);
            let mut m = Mosaic::new(big, big, 0.0f32);
            for (t, r) in tiles.iter().zip(&results) {
                m.place(t, r).unwrap_or_else(|e| panic!("{e}"));
            }
            m.finish().unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.finish();

    let (w, h, n) = (1024, 1024, 4);
    let bands: Vec<Raster<u16>> = (0..n).map(|i| texture(w, h, i + 5)).collect();
    let names = ["B02", "B03", "B04", "B08"];
    let gr = georef(w, h);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("bench.tif");
    let mut g = c.benchmark_group("cog_u16_1024x1024x4");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((w * h * n * 2) as u64));
    for level in [1, 3] {
        let o = CogOptions {
            zstd_level: level,
            ..CogOptions::default()
        };
        let cog: Vec<CogBand<'_, u16>> = bands
            .iter()
            .zip(names)
            .map(|(data, description)| CogBand { description, data })
            .collect();
        g.bench_function(format!("whole/zstd{level}"), |b| {
            b.iter(|| {
                write_cog_with(&path, &gr, &cog, Some(0.0), &o).unwrap_or_else(|e| panic!("{e}"))
            })
        });
        g.bench_function(format!("streamed_strips_504/zstd{level}"), |b| {
            b.iter(|| {
                let mut wr = CogBlockWriter::<u16>::new(&path, &gr, &names, Some(0.0), &o)
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut row = 0;
                while row < h {
                    let k = 504.min(h - row);
                    let s: Vec<&[u16]> = bands
                        .iter()
                        .map(|b| &b.data[row * w..(row + k) * w])
                        .collect();
                    wr.push_rows(&s).unwrap_or_else(|e| panic!("{e}"));
                    row += k;
                }
                wr.finish().unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();

    jp2(c, dir.path());
}

fn jp2(c: &mut Criterion, dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/s2-crops/S2A_33UUB_20170527_0_L1C/B02.tif");
    let out = dir.join("B02.jp2");
    let made = src.is_file()
        && std::process::Command::new("gdal_translate")
            .args([
                "-q",
                "-of",
                "JP2OpenJPEG",
                "-co",
                "REVERSIBLE=YES",
                "-co",
                "QUALITY=100",
            ])
            .arg(&src)
            .arg(&out)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !made {
        println!("SKIP jp2 decode: needs gdal_translate and ../shared/data");
        return;
    }
    let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("jp2_decode_600");
    g.throughput(Throughput::Elements(600 * 600));
    g.bench_function("B02_lossless", |b| {
        b.iter(|| {
            s2edge::granule::jp2::decode_u16(black_box(&bytes), &out)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
