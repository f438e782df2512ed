//! Whole-granule inference (issue 3): the one-shot pipeline end to end through the real
//! `s2edge` binary, and its stages through the library, with the real ONNX Runtime.
//!
//! Products are checked with GDAL (`gdalinfo -json`, `gdal_translate -of ENVI` for
//! pixels) and `rio cogeo validate`. Tests use the tiny fixture models in
//! `tests/fixtures/models/` (random non-zero weights, `receptive_radius` 4) on small
//! synthetic scenes so they stay fast; the README job uses the shipped `models/`.
//! Tests that need `../shared/data`, GDAL or ONNX Runtime print SKIP and return when it
//! is absent (and fail under CI for the tools, see `util::tool`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use s2edge::config::{ClassifyInput, EdgePatches};
use s2edge::granule::{Band, CloudMask, GeoRef, GeoTransform, SATURATED_DN};
use s2edge::model::{LoadedModel, ModelSpec, ProviderOptions};
use s2edge::pipeline::classify::{classify, Classification, ClassifyOptions, PatchStatus};
use s2edge::pipeline::scene::Scene;
use s2edge::pipeline::superres::{run_tiled, superres, SrTiling};
use s2edge::product::cog::{write_cog, CogBand};
use s2edge::raster::Raster;

use crate::util;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A fixture model on one CPU thread (the machine is shared; results do not depend on it).
pub(crate) fn load_fixture(name: &str) -> LoadedModel {
    let opts = ProviderOptions {
        intra_threads: 1,
        ..ProviderOptions::default()
    };
    LoadedModel::load(&util::fixtures().join(name).join("1"), &opts).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The outcome of one CLI run.
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn context(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `s2edge args` with a clean environment for its configuration and logging
/// (no inherited `S2EDGE__*` or `RUST_LOG`, no colours) plus `env`.
pub(crate) fn s2edge<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Run {
    let mut cmd = util::s2edge();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("S2EDGE__") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A configuration selecting the tiny fixture models, with extra `[pipeline]` keys
/// (values in TOML syntax). `sr_tile` defaults to 300.
pub(crate) fn tiny_config(dir: &Path, pipeline: &[(&str, &str)]) -> PathBuf {
    let mut s = String::from(
        "[models]\nclassifier = \"tiny-ben19\"\nsuperres_2x = \"tiny-dsen2-2x\"\n\
         superres_6x = \"tiny-dsen2-6x\"\n\n[runtime]\nintra_threads = 1\n\n[pipeline]\n",
    );
    if !pipeline.iter().any(|(k, _)| *k == "sr_tile") {
        s.push_str("sr_tile = 300\n");
    }
    for (k, v) in pipeline {
        s.push_str(&format!("{k} = {v}\n"));
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("s2edge-{n}.toml"));
    std::fs::write(&path, s).unwrap();
    path
}

/// `s2edge process GRANULE --out OUT --models tests/fixtures/models --config CONFIG [extra]`.
pub(crate) fn process_tiny(
    granule: &Path,
    out: &Path,
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("process"),
        granule.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--models"),
    ];
    let models = util::fixtures();
    args.push(models.as_os_str());
    args.push(OsStr::new("--config"));
    args.push(config.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    s2edge(&args, env)
}

/// One band of a raster as raw little-endian bytes via `gdal_translate -of ENVI`.
fn envi_band(path: &Path, band: usize, test: &str) -> Option<Vec<u8>> {
    let gt = util::tool("gdal_translate", test)?;
    let dir = util::tempdir();
    let out = dir.path().join("band.bin");
    let st = Command::new(gt)
        .args(["-q", "-of", "ENVI", "-b", &band.to_string()])
        .arg(path)
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "gdal_translate {} band {band} failed",
        path.display()
    );
    Some(std::fs::read(out).unwrap())
}

pub(crate) fn envi_u16(path: &Path, band: usize, test: &str) -> Option<Vec<u16>> {
    let b = envi_band(path, band, test)?;
    Some(
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

fn envi_f32(path: &Path, band: usize, test: &str) -> Option<Vec<f32>> {
    let b = envi_band(path, band, test)?;
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// All (lon, lat) positions of a GeoJSON Polygon or MultiPolygon.
fn positions(geom: &Value) -> Vec<(f64, f64)> {
    fn walk(v: &Value, out: &mut Vec<(f64, f64)>) {
        if let Some(a) = v.as_array() {
            if a.len() >= 2 && a[0].is_number() {
                out.push((a[0].as_f64().unwrap(), a[1].as_f64().unwrap()));
            } else {
                a.iter().for_each(|x| walk(x, out));
            }
        }
    }
    let mut out = Vec::new();
    walk(&geom["coordinates"], &mut out);
    out
}

pub(crate) fn band_names(info: &Value) -> Vec<String> {
    info["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["description"].as_str().unwrap_or("").to_string())
        .collect()
}

fn epsg_of(info: &Value) -> String {
    info["coordinateSystem"]["wkt"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_epsg(info: &Value, epsg: u32) {
    let wkt = epsg_of(info);
    assert!(
        wkt.trim_end().ends_with(&format!("ID[\"EPSG\",{epsg}]]")),
        "CRS is not EPSG:{epsg}: {wkt}"
    );
}

fn geotransform(info: &Value) -> Vec<f64> {
    info["geoTransform"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// A UTM 33N 10 m grid of `w`×`h` pixels.
pub(crate) fn grid(w: usize, h: usize) -> GeoRef {
    GeoRef {
        epsg: 32633,
        transform: GeoTransform {
            origin_x: 499_980.0,
            origin_y: 6_000_000.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        },
        width: w,
        height: h,
    }
}

/// A deterministic hash of (x, y, salt) to [0, 1).
pub(crate) fn hash01(x: usize, y: usize, salt: usize) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (salt as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Texture on a band's own grid: smooth structure plus pixel noise, in 500..3000 DN.
pub(crate) fn texture(band: Band, col: usize, row: usize) -> u16 {
    let k = Band::PRODUCT.iter().position(|b| *b == band).unwrap() as f32;
    let f = band.resolution().factor() as f32;
    let (x, y) = (col as f32 * f, row as f32 * f);
    let smooth = 1500.0 + 500.0 * (x * 0.045 + k).sin() * (y * 0.031 - 0.3 * k).cos();
    (smooth + 600.0 * hash01(col, row, k as usize + 1)).round() as u16
}

/// A scene of all 12 product bands on a `w`×`h` 10 m grid, `value(band, col, row)` on
/// each band's own grid, offsets 0.
pub(crate) fn scene_with(w: usize, h: usize, value: impl Fn(Band, usize, usize) -> u16) -> Scene {
    let mut bands = BTreeMap::new();
    for b in Band::PRODUCT {
        let f = b.resolution().factor();
        let (bw, bh) = (w.div_ceil(f), h.div_ceil(f));
        let data = (0..bw * bh).map(|i| value(b, i % bw, i / bw)).collect();
        bands.insert(b, Raster::from_vec(bw, bh, data).unwrap());
    }
    Scene {
        row0: 0,
        col0: 0,
        grid10: grid(w, h),
        bands,
        cloud: None,
        offsets: Band::PRODUCT.iter().map(|b| (*b, 0.0)).collect(),
    }
}

/// Writes `scene` as a per-band GeoTIFF folder `dir/name/B??.tif` (no STAC Item, so the
/// reader assumes offset 0).
pub(crate) fn write_folder(dir: &Path, name: &str, scene: &Scene) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for (band, data) in &scene.bands {
        let f = band.resolution().factor();
        let georef = GeoRef {
            transform: scene.grid10.transform.coarsened(f),
            width: data.width,
            height: data.height,
            ..scene.grid10
        };
        let cog = [CogBand {
            description: band.name(),
            data,
        }];
        write_cog(
            &folder.join(format!("{}.tif", band.name())),
            &georef,
            &cog,
            Some(0.0),
        )
        .unwrap();
    }
    folder
}

/// Super-resolution through `run_tiled`: one float raster (normalised output units) per
/// output channel, and the number of tiles.
fn tiled_f32(scene: &Scene, model: &mut LoadedModel, tile: usize) -> (Vec<Raster<f32>>, usize) {
    let channels = model.spec.outputs.iter().next().unwrap().1.bands.len();
    let (w, h) = (scene.grid10.width, scene.grid10.height);
    let mut out: Vec<Raster<f32>> = (0..channels)
        .map(|_| Raster::filled(w, h, f32::NAN))
        .collect();
    let mut seen = std::collections::HashSet::new();
    run_tiled(
        scene,
        model,
        "test",
        SrTiling {
            cores: tile.into(),
            batch: 4,
        },
        &mut |_, _| {},
        &mut |c, rect, values| {
            assert_eq!((values.width, values.height), (rect.width, rect.height));
            seen.insert((rect.col, rect.row));
            out[c].paste(values, rect.col, rect.row);
        },
    )
    .unwrap();
    for r in &out {
        assert!(
            r.data.iter().all(|v| v.is_finite()),
            "a pixel was not written or is not finite"
        );
    }
    (out, seen.len())
}

fn max_abs_diff(a: &[Raster<f32>], b: &[Raster<f32>]) -> (f32, usize, usize) {
    let mut worst = (0.0f32, 0, 0);
    for (ra, rb) in a.iter().zip(b) {
        for (i, (x, y)) in ra.data.iter().zip(&rb.data).enumerate() {
            let d = (x - y).abs();
            if d > worst.0 {
                worst = (d, i % ra.width, i / ra.width);
            }
        }
    }
    worst
}

fn sr_u16(scene: &Scene, model: &mut LoadedModel, tile: usize) -> BTreeMap<Band, Raster<u16>> {
    superres(
        scene,
        model,
        "test",
        SrTiling {
            cores: tile.into(),
            batch: 4,
        },
        &mut |_, _| {},
    )
    .unwrap()
    .into_iter()
    .collect()
}

// ---------------------------------------------------------------------------------
// 1. End to end on the real crop
// ---------------------------------------------------------------------------------

#[test]
fn real_crop_end_to_end_products() {
    const TEST: &str = "real_crop_end_to_end_products";
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    if !util::runtime(TEST) || util::tool("gdalinfo", TEST).is_none() {
        return;
    }
    let crop = data.join("s2-crops/S2A_33UUB_20170527_0_L1C");
    let tmp = util::tempdir();
    let config = tiny_config(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let run = process_tiny(&crop, &out, &config, &[], &[]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let product = out.join("S2A_33UUB_20170527_0_L1C");
    assert_eq!(
        run.stdout.lines().last(),
        Some(product.to_str().unwrap()),
        "{}",
        run.context()
    );
    for f in [
        "superres.tif",
        "classification.tif",
        "labels.geojson",
        "item.json",
        "quicklook.png",
    ] {
        assert!(product.join(f).is_file(), "{f} missing");
    }

    // superres.tif: 12 bands, the 10 m grid, DESIGN band order.
    let sr = product.join("superres.tif");
    let info = util::gdalinfo(&sr).unwrap();
    assert_eq!(info["size"], serde_json::json!([600, 600]));
    assert_epsg(&info, 32633);
    assert_eq!(
        geotransform(&info),
        vec![300000.0, 10.0, 0.0, 6200040.0, 0.0, -10.0]
    );
    let names: Vec<&str> = Band::PRODUCT.iter().map(|b| b.name()).collect();
    assert_eq!(
        names,
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    );
    assert_eq!(band_names(&info), names);
    for b in info["bands"].as_array().unwrap() {
        assert_eq!(b["type"], "UInt16");
        assert_eq!(b["noDataValue"].as_f64(), Some(0.0));
    }
    // The 10 m bands pass through pixel-identical (offset 0: harmonised = DN).
    for (i, band) in Band::PRODUCT.iter().enumerate() {
        let out_px = envi_u16(&sr, i + 1, TEST).unwrap();
        let input = crop.join(format!("{}.tif", band.name()));
        let in_px = envi_u16(&input, 1, TEST).unwrap();
        let f = band.resolution().factor();
        if f == 1 {
            assert!(out_px == in_px, "{band} is not passed through unchanged");
        } else {
            // Super-resolved: data wherever the input has data, and texture (not a
            // constant). The tiny models' random weights shift the values, so nothing
            // more is asserted about them here (the seam and radiometry tests do).
            let w = 600 / f;
            let mut zeros = 0;
            for (k, v) in out_px.iter().enumerate() {
                let low = in_px[(k / 600 / f) * w + (k % 600) / f];
                if low != 0 && *v == 0 {
                    zeros += 1;
                }
            }
            assert_eq!(zeros, 0, "{band}: nodata where the input has data");
            let distinct: std::collections::BTreeSet<u16> = out_px.iter().copied().collect();
            assert!(
                distinct.len() > 100,
                "{band}: only {} distinct values",
                distinct.len()
            );
        }
    }

    // classification.tif: 19 float32 bands, one 1200 m pixel per patch.
    let cls = product.join("classification.tif");
    let info = util::gdalinfo(&cls).unwrap();
    assert_eq!(info["size"], serde_json::json!([5, 5]));
    assert_epsg(&info, 32633);
    assert_eq!(
        geotransform(&info),
        vec![300000.0, 1200.0, 0.0, 6200040.0, 0.0, -1200.0]
    );
    let spec = ModelSpec::load(&util::fixtures().join("tiny-ben19/1/model.toml")).unwrap();
    let classes = &spec.classify.as_ref().unwrap().classes;
    assert_eq!(classes.len(), 19);
    assert_eq!(&band_names(&info), classes);
    for b in info["bands"].as_array().unwrap() {
        assert_eq!(b["type"], "Float32");
        assert_eq!(b["noDataValue"].as_f64(), Some(-1.0));
    }
    let first = envi_f32(&cls, 1, TEST).unwrap();
    assert_eq!(first.len(), 25);
    assert!(first.iter().all(|v| (0.0..=1.0).contains(v)), "{first:?}");

    // labels.geojson: 25 patches, lon/lat around the crop.
    let labels = read_json(&product.join("labels.geojson"));
    let features = labels["features"].as_array().unwrap();
    assert_eq!(features.len(), 25);
    let corners = util::gdaltransform(
        32633,
        &[
            (300000.0, 6200040.0),
            (306000.0, 6200040.0),
            (306000.0, 6194040.0),
            (300000.0, 6194040.0),
        ],
        TEST,
    )
    .unwrap();
    let (lon0, lat0) = corners[0];
    let lon_min = corners.iter().map(|c| c.0).fold(f64::MAX, f64::min) - 1e-6;
    let lon_max = corners.iter().map(|c| c.0).fold(f64::MIN, f64::max) + 1e-6;
    let lat_min = corners.iter().map(|c| c.1).fold(f64::MAX, f64::min) - 1e-6;
    let lat_max = corners.iter().map(|c| c.1).fold(f64::MIN, f64::max) + 1e-6;
    let mut cells = std::collections::BTreeSet::new();
    let mut ul_found = false;
    for f in features {
        let p = &f["properties"];
        assert_eq!(p["status"], "ok", "{p}");
        let (row, col) = (p["row"].as_u64().unwrap(), p["col"].as_u64().unwrap());
        cells.insert((row, col));
        let scores = p["scores"].as_object().unwrap();
        assert_eq!(scores.len(), 19);
        for c in classes {
            let s = scores[c].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&s), "{c}: {s}");
        }
        for (lon, lat) in positions(&f["geometry"]) {
            assert!(
                (lon_min..=lon_max).contains(&lon) && (lat_min..=lat_max).contains(&lat),
                "({lon}, {lat})"
            );
            if (row, col) == (0, 0) && (lon - lon0).abs() < 1e-6 && (lat - lat0).abs() < 1e-6 {
                ul_found = true;
            }
        }
    }
    assert_eq!(cells.len(), 25, "rows/cols do not cover the 5x5 patch grid");
    assert!(
        ul_found,
        "patch (0, 0) has no vertex at the granule's UL corner ({lon0}, {lat0})"
    );

    // item.json: projection, models with sha256 and status, provider, offsets, warnings.
    let item = read_json(&product.join("item.json"));
    let p = &item["properties"];
    assert_eq!(p["proj:code"], "EPSG:32633");
    assert_eq!(p["proj:shape"], serde_json::json!([600, 600]));
    let models = p["s2edge:models"].as_array().unwrap();
    let mut names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["tiny-ben19", "tiny-dsen2-2x", "tiny-dsen2-6x"]);
    for m in models {
        let name = m["name"].as_str().unwrap();
        let onnx = util::fixtures().join(name).join("1/model.onnx");
        assert_eq!(m["sha256"].as_str().unwrap(), sha256_hex(&onnx), "{name}");
        // The default precision: the float graph ran, and no note.
        assert_eq!(m["precision"], "float32", "{name}");
        assert_eq!(m["graph_sha256"], m["sha256"], "{name}");
        assert!(m.get("precision_note").is_none(), "{name}");
        assert_eq!(m["status"], "untrained", "{name}");
        assert_eq!(m["provider"], "cpu", "{name}");
        assert_eq!(m["version"], 1, "{name}");
    }
    for (_, provider) in p["s2edge:execution_providers"].as_object().unwrap() {
        assert_eq!(provider, "cpu");
    }
    let offsets = p["s2edge:offsets_applied"].as_object().unwrap();
    assert_eq!(offsets.len(), 12);
    assert!(
        offsets.values().all(|v| v.as_f64() == Some(0.0)),
        "{offsets:?}"
    );
    assert_eq!(p["s2edge:offsets_known"], false);
    let warnings: Vec<&str> = p["s2edge:warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.contains(&"offset unknown, assumed 0"),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("UNTRAINED")),
        "{warnings:?}"
    );

    util::rio_validate(&sr, TEST);
    util::rio_validate(&cls, TEST);
}

// ---------------------------------------------------------------------------------
// 2. BigEarthNet patches
// ---------------------------------------------------------------------------------

#[test]
fn bigearthnet_patches_classify_as_one_patch() {
    const TEST: &str = "bigearthnet_patches_classify_as_one_patch";
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    if !util::runtime(TEST) || util::tool("gdalinfo", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    let config = tiny_config(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let mut patches: Vec<PathBuf> = std::fs::read_dir(data.join("bigearthnet-v1-examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    patches.sort();
    assert_eq!(patches.len(), 6);
    for patch in &patches {
        let name = patch.file_name().unwrap().to_str().unwrap();
        let run = process_tiny(patch, &out, &config, &["--only", "classify"], &[]);
        assert_eq!(run.code, Some(0), "{name}: {}", run.context());
        let product = out.join(name);
        assert!(
            !product.join("superres.tif").exists(),
            "{name}: --only classify wrote superres.tif"
        );
        let info = util::gdalinfo(&product.join("classification.tif")).unwrap();
        assert_eq!(info["size"], serde_json::json!([1, 1]), "{name}");
        assert_eq!(info["bands"].as_array().unwrap().len(), 19, "{name}");
        // The patch pixel sits on the patch itself.
        let b02 = util::gdalinfo(&patch.join(format!("{name}_B02.tif"))).unwrap();
        let (g, gb) = (geotransform(&info), geotransform(&b02));
        assert_eq!((g[0], g[3]), (gb[0], gb[3]), "{name}: origin");
        assert_eq!(g[1], 1200.0, "{name}");
        let labels = read_json(&product.join("labels.geojson"));
        let features = labels["features"].as_array().unwrap();
        assert_eq!(features.len(), 1, "{name}");
        let p = &features[0]["properties"];
        assert_eq!(p["status"], "ok", "{name}");
        let scores = p["scores"].as_object().unwrap();
        assert_eq!(scores.len(), 19, "{name}");
        assert!(
            scores
                .values()
                .all(|s| (0.0..=1.0).contains(&s.as_f64().unwrap())),
            "{name}: {scores:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// 3. Tiling correctness
// ---------------------------------------------------------------------------------

#[test]
fn tiled_superres_equals_whole_image_and_needs_the_halo() {
    const TEST: &str = "tiled_superres_equals_whole_image_and_needs_the_halo";
    if !util::runtime(TEST) {
        return;
    }
    let scene = scene_with(300, 300, texture);
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        let mut model = load_fixture(name);
        let radius = model
            .spec
            .superres
            .as_ref()
            .unwrap()
            .receptive_radius
            .unwrap();
        assert_eq!(radius, 4, "{name}: the fixture's manifest changed");

        let (whole, n_whole) = tiled_f32(&scene, &mut model, 300);
        assert_eq!(n_whole, 1, "{name}: tile 300 must cover the image");
        let (tiled, n_tiled) = tiled_f32(&scene, &mut model, 60);
        assert_eq!(n_tiled, 25, "{name}: 60 px tiles over 300 px");
        let (d, c, r) = max_abs_diff(&whole, &tiled);
        assert!(
            d <= 1e-4,
            "{name}: tiled differs from whole by {d} (normalised) at ({c}, {r})"
        );

        let a = sr_u16(&scene, &mut model, 300);
        let b = sr_u16(&scene, &mut model, 60);
        assert_eq!(
            a.len(),
            model.spec.outputs.iter().next().unwrap().1.bands.len()
        );
        for (band, ra) in &a {
            let rb = &b[band];
            let worst = ra
                .data
                .iter()
                .zip(&rb.data)
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap();
            assert!(worst <= 1, "{name} {band}: tiled u16 differs by {worst} DN");
        }

        // The same tiling without a halo is wrong at the seams: the check above can fail.
        model.spec.superres.as_mut().unwrap().receptive_radius = Some(0);
        let (no_halo, _) = tiled_f32(&scene, &mut model, 60);
        let (d0, c0, r0) = max_abs_diff(&whole, &no_halo);
        eprintln!("{name}: max |whole - tiled| = {d:e} with halo, {d0:e} without");
        assert!(
            d0 > 1e-3,
            "{name}: without a halo the tiles still agree ({d0}): the test cannot fail"
        );
        // ... and only near the seams (tile cores are 60 px): the interior is exact.
        let near_seam = |x: usize| x % 60 < radius as usize || x % 60 >= 60 - radius as usize;
        assert!(
            near_seam(c0) || near_seam(r0),
            "{name}: worst difference at ({c0}, {r0}), not at a seam"
        );
        for (ra, rb) in whole.iter().zip(&no_halo) {
            for (i, (x, y)) in ra.data.iter().zip(&rb.data).enumerate() {
                let (c, r) = (i % 300, i / 300);
                if !near_seam(c) && !near_seam(r) {
                    assert!(
                        (x - y).abs() <= 1e-4,
                        "{name}: interior pixel ({c}, {r}) differs"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// 4. Nodata and saturation
// ---------------------------------------------------------------------------------

/// 180×180 scene: a nodata block on 10 m cols/rows 60..120 in every band, an isolated
/// nodata B05 pixel at 20 m (70, 20), an isolated nodata B09 pixel at 60 m (25, 3), a
/// saturated B06 pixel at 20 m (10, 70), a saturated B01 pixel at 60 m (2, 27) and a
/// saturated B03 pixel at 10 m (5, 5).
fn nodata_scene() -> Scene {
    scene_with(180, 180, |band, c, r| {
        let f = band.resolution().factor();
        let (x, y) = (c * f, r * f);
        if (60..120).contains(&x) && (60..120).contains(&y) {
            return 0;
        }
        match (band, c, r) {
            (Band::B05, 70, 20) | (Band::B09, 25, 3) => 0,
            (Band::B06, 10, 70) | (Band::B01, 2, 27) | (Band::B03, 5, 5) => SATURATED_DN,
            _ => texture(band, c, r),
        }
    })
}

/// The 10 m pixels where `band`'s super-resolved output must be nodata in [`nodata_scene`].
fn expected_nodata(band: Band, x: usize, y: usize) -> bool {
    let block = (60..120).contains(&x) && (60..120).contains(&y);
    block
        || (band == Band::B05 && x / 2 == 70 && y / 2 == 20)
        || (band == Band::B09 && x / 6 == 25 && y / 6 == 3)
}

fn expected_saturated(band: Band, x: usize, y: usize) -> bool {
    (band == Band::B06 && x / 2 == 10 && y / 2 == 70)
        || (band == Band::B01 && x / 6 == 2 && y / 6 == 27)
}

#[test]
fn nodata_stays_on_its_footprint_and_saturation_is_kept() {
    const TEST: &str = "nodata_stays_on_its_footprint_and_saturation_is_kept";
    if !util::runtime(TEST) {
        return;
    }
    let scene = nodata_scene();
    let mut checked = 0;
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        let mut model = load_fixture(name);
        // Model outputs are finite everywhere, nodata included (nodata enters as the mean).
        let _ = tiled_f32(&scene, &mut model, 66);
        // Nodata and saturation near tile seams do not break tiling correctness.
        let whole = sr_u16(&scene, &mut model, 180);
        for (band, out) in sr_u16(&scene, &mut model, 66) {
            let worst = out
                .data
                .iter()
                .zip(&whole[&band].data)
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert!(
                worst <= Some(1),
                "{name} {band}: tiled differs from whole by {worst:?} DN"
            );
            for y in 0..180 {
                for x in 0..180 {
                    let v = out.get(x, y);
                    if expected_nodata(band, x, y) {
                        assert_eq!(v, 0, "{band} ({x}, {y}) must be nodata");
                    } else if expected_saturated(band, x, y) {
                        assert_eq!(v, SATURATED_DN, "{band} ({x}, {y}) must be saturated");
                    } else {
                        assert!(
                            v != 0,
                            "{band} ({x}, {y}): nodata spread beyond its footprint"
                        );
                        assert!(v != SATURATED_DN, "{band} ({x}, {y}): saturation spread");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "every 20 m and 60 m band is checked");
}

#[test]
fn nodata_and_saturation_in_the_product() {
    const TEST: &str = "nodata_and_saturation_in_the_product";
    if !util::runtime(TEST) || util::tool("gdal_translate", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    let scene = nodata_scene();
    let folder = write_folder(tmp.path(), "NODATA_SCENE", &scene);
    let config = tiny_config(tmp.path(), &[("sr_tile", "66")]);
    let out = tmp.path().join("out");
    let run = process_tiny(&folder, &out, &config, &["--only", "superres"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let sr = out.join("NODATA_SCENE/superres.tif");
    // The library with the same tiling gives the same pixels as the product.
    let mut lib = BTreeMap::new();
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        lib.extend(sr_u16(&scene, &mut load_fixture(name), 66));
    }
    for (i, band) in Band::PRODUCT.iter().enumerate() {
        let px = envi_u16(&sr, i + 1, TEST).unwrap();
        if band.resolution().factor() == 1 {
            // 10 m bands pass through: nodata block, the saturated B03 pixel, all values.
            assert!(px == scene.bands[band].data, "{band} not passed through");
            if *band == Band::B03 {
                assert_eq!(px[5 * 180 + 5], SATURATED_DN);
            }
        } else {
            assert!(
                px == lib[band].data,
                "{band}: product differs from the library run"
            );
            for (k, v) in px.iter().enumerate() {
                let (x, y) = (k % 180, k / 180);
                assert_eq!(
                    *v == 0,
                    expected_nodata(*band, x, y),
                    "{band} ({x}, {y}) = {v}"
                );
                assert_eq!(
                    *v == SATURATED_DN,
                    expected_saturated(*band, x, y),
                    "{band} ({x}, {y}) = {v}"
                );
            }
        }
    }
}

#[test]
fn very_high_reflectance_clamps_without_wrapping() {
    const TEST: &str = "very_high_reflectance_clamps_without_wrapping";
    if !util::runtime(TEST) {
        return;
    }
    let scene = scene_with(120, 120, |band, c, r| 60_000 + (texture(band, c, r) % 5000));
    let mut n_clamped = 0;
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        let mut model = load_fixture(name);
        let bands = model.spec.outputs.iter().next().unwrap().1.bands.clone();
        // What the model says in DN before conversion (normalisation: mean 0, std 2000),
        // with the same (whole-image) tiling as the u16 run below.
        let (raw, _) = tiled_f32(&scene, &mut model, 120);
        let out = sr_u16(&scene, &mut model, 120);
        for (band, raw) in bands.iter().zip(&raw) {
            for (k, (&v, &r)) in out[band].data.iter().zip(&raw.data).enumerate() {
                let dn = f64::from(r) * 2000.0;
                assert!(
                    v <= 65534,
                    "{band} pixel {k}: {v} is reserved for saturation"
                );
                if dn >= 65534.0 {
                    assert_eq!(v, 65534, "{band} pixel {k}: {dn} DN did not clamp");
                    n_clamped += 1;
                } else {
                    assert!(
                        (f64::from(v) - dn).abs() <= 1.0,
                        "{band} pixel {k}: {v} for {dn} DN"
                    );
                }
            }
        }
    }
    assert!(
        n_clamped > 0,
        "no model output reached 65534 DN: the clamp is not exercised"
    );
}

// ---------------------------------------------------------------------------------
// 5. Classification status
// ---------------------------------------------------------------------------------

fn statuses(labels: &Value) -> BTreeMap<(u64, u64), String> {
    labels["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p = &f["properties"];
            (
                (p["row"].as_u64().unwrap(), p["col"].as_u64().unwrap()),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks classification.tif against the statuses: −1 in all 19 bands exactly where the
/// patch was not classified, a probability elsewhere.
fn check_scores_raster(cls: &Path, status: &BTreeMap<(u64, u64), String>, cols: u64, test: &str) {
    for band in 1..=19 {
        let px = envi_f32(cls, band, test).unwrap();
        assert_eq!(px.len(), status.len());
        for (&(row, col), s) in status {
            let v = px[(row * cols + col) as usize];
            if s == "ok" {
                assert!(
                    (0.0..=1.0).contains(&v),
                    "band {band} patch ({row}, {col}) = {v}"
                );
            } else {
                assert_eq!(v, -1.0, "band {band} patch ({row}, {col}) is {s}");
            }
        }
    }
}

#[test]
fn patch_touching_nodata_is_nodata_in_the_product() {
    const TEST: &str = "patch_touching_nodata_is_nodata_in_the_product";
    if !util::runtime(TEST) || util::tool("gdal_translate", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    // One nodata 10 m pixel in B02 inside patch (row 0, col 1).
    let scene = scene_with(240, 240, |band, c, r| {
        if band == Band::B02 && (c, r) == (130, 10) {
            0
        } else {
            texture(band, c, r)
        }
    });
    let folder = write_folder(tmp.path(), "NODATA_PATCH", &scene);
    let config = tiny_config(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let run = process_tiny(&folder, &out, &config, &["--only", "classify"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let product = out.join("NODATA_PATCH");
    let labels = read_json(&product.join("labels.geojson"));
    let status = statuses(&labels);
    let expected: BTreeMap<(u64, u64), String> = [
        ((0, 0), "ok"),
        ((0, 1), "nodata"),
        ((1, 0), "ok"),
        ((1, 1), "ok"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(status, expected);
    for f in labels["features"].as_array().unwrap() {
        let p = &f["properties"];
        assert_eq!(p["scores"].is_null(), p["status"] != "ok", "{p}");
    }
    check_scores_raster(&product.join("classification.tif"), &status, 2, TEST);
    let item = read_json(&product.join("item.json"));
    assert_eq!(item["properties"]["s2edge:patches"]["nodata"], 1);
    assert_eq!(item["properties"]["s2edge:patches"]["ok"], 3);
}

#[test]
fn edge_patches_skip_or_pad_from_the_config() {
    const TEST: &str = "edge_patches_skip_or_pad_from_the_config";
    if !util::runtime(TEST) || util::tool("gdal_translate", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "EDGE_SCENE", &scene_with(250, 250, texture));
    for (mode, edge_status) in [("skip", "edge"), ("pad", "ok")] {
        let config = tiny_config(tmp.path(), &[("edge_patches", &format!("\"{mode}\""))]);
        let out = tmp.path().join(format!("out-{mode}"));
        let run = process_tiny(&folder, &out, &config, &["--only", "classify"], &[]);
        assert_eq!(run.code, Some(0), "{mode}: {}", run.context());
        let product = out.join("EDGE_SCENE");
        let info = util::gdalinfo(&product.join("classification.tif")).unwrap();
        assert_eq!(info["size"], serde_json::json!([3, 3]), "{mode}");
        let status = statuses(&read_json(&product.join("labels.geojson")));
        assert_eq!(status.len(), 9, "{mode}");
        for (&(row, col), s) in &status {
            let expected = if row == 2 || col == 2 {
                edge_status
            } else {
                "ok"
            };
            assert_eq!(s, expected, "{mode}: patch ({row}, {col})");
        }
        check_scores_raster(&product.join("classification.tif"), &status, 3, TEST);
    }
}

fn classify_options(input: ClassifyInput) -> ClassifyOptions {
    ClassifyOptions {
        edge_patches: EdgePatches::Skip,
        max_cloud_fraction: 0.3,
        input,
        batch: 4,
    }
}

#[test]
fn cloudy_patch_is_not_classified() {
    const TEST: &str = "cloudy_patch_is_not_classified";
    if !util::runtime(TEST) {
        return;
    }
    let mut scene = scene_with(240, 240, texture);
    // A 20 m mask flagging exactly patch (row 0, col 1): 20 m cols 60..120, rows 0..60,
    // plus a few flagged pixels in patch (1, 1) below the threshold.
    let mut flagged = Raster::filled(120, 120, 0u8);
    for r in 0..60 {
        for c in 60..120 {
            *flagged.get_mut(c, r) = 1;
        }
    }
    for c in 60..70 {
        *flagged.get_mut(c, 100) = 1;
    }
    scene.cloud = Some(CloudMask {
        georef: GeoRef {
            transform: scene.grid10.transform.coarsened(2),
            width: 120,
            height: 120,
            ..scene.grid10
        },
        flagged,
    });
    let mut model = load_fixture("tiny-ben19");
    let result: Classification = classify(
        &scene,
        &mut model,
        "test",
        classify_options(ClassifyInput::Resampled),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((result.cols, result.rows), (2, 2));
    let by_cell: BTreeMap<(usize, usize), _> =
        result.patches.iter().map(|p| ((p.row, p.col), p)).collect();
    assert_eq!(by_cell[&(0, 1)].status, PatchStatus::Cloudy);
    assert_eq!(by_cell[&(0, 1)].cloud_fraction, Some(1.0));
    assert!(by_cell[&(0, 1)].scores.is_none());
    let f11 = by_cell[&(1, 1)].cloud_fraction.unwrap();
    assert!((f11 - 10.0 / 3600.0).abs() < 1e-9, "{f11}");
    for cell in [(0, 0), (1, 0), (1, 1)] {
        assert_eq!(by_cell[&cell].status, PatchStatus::Ok, "{cell:?}");
        assert_eq!(by_cell[&cell].scores.as_ref().unwrap().len(), 19);
    }
    assert_eq!(by_cell[&(0, 0)].cloud_fraction, Some(0.0));
    let rasters = result.score_rasters();
    assert_eq!(rasters.len(), 19);
    assert!(rasters.iter().all(|r| r.get(1, 0) == -1.0));
}

#[test]
fn classify_input_superres_uses_the_superresolved_bands() {
    const TEST: &str = "classify_input_superres_uses_the_superresolved_bands";
    if !util::runtime(TEST) || util::tool("gdalinfo", TEST).is_none() {
        return;
    }
    let scene = scene_with(240, 240, texture);
    // Library: the scores change when the classifier reads the super-resolved bands.
    let mut sr = BTreeMap::new();
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        sr.extend(sr_u16(&scene, &mut load_fixture(name), 120));
    }
    let mut classifier = load_fixture("tiny-ben19");
    let resampled = classify(
        &scene,
        &mut classifier,
        "t",
        classify_options(ClassifyInput::Resampled),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let superres_in = classify(
        &scene,
        &mut classifier,
        "t",
        classify_options(ClassifyInput::Superres),
        Some(&sr),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(superres_in.count(PatchStatus::Ok), 4);
    let diff: f32 = resampled
        .patches
        .iter()
        .zip(&superres_in.patches)
        .flat_map(|(a, b)| {
            a.scores
                .as_ref()
                .unwrap()
                .iter()
                .zip(b.scores.as_ref().unwrap())
        })
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 1e-6,
        "classify_input = superres gave the resampled scores"
    );
    // Without super-resolved bands the option is refused, not silently ignored.
    assert!(classify(
        &scene,
        &mut classifier,
        "t",
        classify_options(ClassifyInput::Superres),
        None,
        &mut |_, _| {}
    )
    .is_err());

    // CLI: the option from the config runs and publishes both rasters.
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "SR_INPUT", &scene);
    let config = tiny_config(
        tmp.path(),
        &[("classify_input", "\"superres\""), ("sr_tile", "120")],
    );
    let out = tmp.path().join("out");
    let run = process_tiny(&folder, &out, &config, &[], &[]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let product = out.join("SR_INPUT");
    let info = util::gdalinfo(&product.join("classification.tif")).unwrap();
    assert_eq!(info["size"], serde_json::json!([2, 2]));
    let info = util::gdalinfo(&product.join("superres.tif")).unwrap();
    assert_eq!(info["size"], serde_json::json!([240, 240]));
    let labels = read_json(&product.join("labels.geojson"));
    // The product's scores are the library's superres-input scores.
    for f in labels["features"].as_array().unwrap() {
        let p = &f["properties"];
        let (row, col) = (
            p["row"].as_u64().unwrap() as usize,
            p["col"].as_u64().unwrap() as usize,
        );
        let lib = superres_in
            .patches
            .iter()
            .find(|q| (q.row, q.col) == (row, col))
            .unwrap();
        let first = &superres_in.classes[0];
        let v = p["scores"][first].as_f64().unwrap() as f32;
        assert!(
            (v - lib.scores.as_ref().unwrap()[0]).abs() < 1e-5,
            "patch ({row}, {col})"
        );
    }
}

// ---------------------------------------------------------------------------------
// 6. Execution providers
// ---------------------------------------------------------------------------------

#[test]
fn unavailable_accelerator_warns_or_fails_as_configured() {
    const TEST: &str = "unavailable_accelerator_warns_or_fails_as_configured";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "PROVIDERS", &scene_with(120, 120, texture));
    let config = tiny_config(tmp.path(), &[]);
    let out = tmp.path().join("out");
    let env = [("S2EDGE__RUNTIME__PROVIDERS", "cuda,cpu")];
    let run = process_tiny(&folder, &out, &config, &["--only", "classify"], &env);
    assert_eq!(run.code, Some(0), "{}", run.context());
    if run.stderr.contains("session on accelerator") {
        eprintln!("SKIP {TEST}: CUDA is available here, nothing falls back");
        return;
    }
    let warn = run
        .stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("cuda") && l.contains("unavailable"))
        .unwrap_or_else(|| panic!("no WARN line naming cuda: {}", run.context()));
    assert!(
        warn.contains("reason="),
        "the warning gives no cause: {warn}"
    );
    let item = read_json(&out.join("PROVIDERS/item.json"));
    assert_eq!(
        item["properties"]["s2edge:execution_providers"]["tiny-ben19"],
        "cpu"
    );

    let env = [
        ("S2EDGE__RUNTIME__PROVIDERS", "cuda,cpu"),
        ("S2EDGE__RUNTIME__REQUIRE_ACCELERATOR", "true"),
    ];
    let out2 = tmp.path().join("out2");
    let run = process_tiny(&folder, &out2, &config, &["--only", "classify"], &env);
    assert_eq!(run.code, Some(1), "{}", run.context());
    let err = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        err.contains("cuda") && err.contains("require_accelerator"),
        "{}",
        run.context()
    );
    assert!(!out2.join("PROVIDERS").exists(), "a product was published");
}

// ---------------------------------------------------------------------------------
// 7. Bad models
// ---------------------------------------------------------------------------------

#[test]
fn bad_models_are_refused_with_the_reason() {
    const TEST: &str = "bad_models_are_refused_with_the_reason";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "BAD_MODELS", &scene_with(120, 120, texture));
    let out = tmp.path().join("out");

    // broken-sha is a superres (2x) model whose manifest has the wrong sha256.
    let spec = ModelSpec::load(&util::fixtures().join("broken-sha/1/model.toml")).unwrap();
    assert!(spec.superres.as_ref().is_some_and(|s| s.scale == 2));
    let actual = sha256_hex(&util::fixtures().join("broken-sha/1/model.onnx"));
    assert_ne!(actual, spec.onnx_sha256);
    let config = tiny_config(tmp.path(), &[]);
    let run = process_tiny(
        &folder,
        &out,
        &config,
        &["--only", "superres"],
        &[("S2EDGE__MODELS__SUPERRES_2X", "broken-sha")],
    );
    assert_eq!(run.code, Some(1), "{}", run.context());
    let err = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        err.contains(&spec.onnx_sha256) && err.contains(&actual),
        "{}",
        run.context()
    );

    // broken-io names an input (x20m) that the graph lacks.
    let spec = ModelSpec::load(&util::fixtures().join("broken-io/1/model.toml")).unwrap();
    assert!(spec.inputs.get("x20m").is_some());
    let run = process_tiny(
        &folder,
        &out,
        &config,
        &["--only", "superres"],
        &[("S2EDGE__MODELS__SUPERRES_2X", "broken-io")],
    );
    assert_eq!(run.code, Some(1), "{}", run.context());
    let err = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        err.contains("x20m") && err.contains("broken-io"),
        "{}",
        run.context()
    );
    assert!(!out.join("BAD_MODELS").exists(), "a product was published");
}

// ---------------------------------------------------------------------------------
// 8. Bad input, bad configuration, `s2edge info`
// ---------------------------------------------------------------------------------

#[test]
fn bad_input_and_bad_config_exit_codes() {
    let tmp = util::tempdir();
    let config = tiny_config(tmp.path(), &[]);
    let out = tmp.path().join("out");

    let folder = tmp.path().join("GARBAGE");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("B02.tif"), b"this is not a TIFF").unwrap();
    let run = process_tiny(&folder, &out, &config, &[], &[]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    let err = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        err.contains(folder.join("B02.tif").to_str().unwrap()),
        "{}",
        run.context()
    );

    let missing = tmp.path().join("does-not-exist");
    let run = process_tiny(&missing, &out, &config, &[], &[]);
    assert_eq!(run.code, Some(1), "{}", run.context());
    assert!(
        run.stderr.contains(missing.to_str().unwrap()),
        "{}",
        run.context()
    );

    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[pipeline]\nedge_patchez = \"pad\"\n").unwrap();
    let run = process_tiny(&folder, &out, &bad, &[], &[]);
    assert_eq!(run.code, Some(2), "{}", run.context());
    assert!(run.stderr.contains("edge_patchez"), "{}", run.context());
    assert!(!out.exists(), "nothing is written on a configuration error");
}

/// The EPSG code in a tile's `MTD_TL.xml` (`<HORIZONTAL_CS_CODE>EPSG:n</...>`).
fn mtd_tl_epsg(safe: &Path) -> u32 {
    let granule = std::fs::read_dir(safe.join("GRANULE"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let xml = std::fs::read_to_string(granule.join("MTD_TL.xml")).unwrap();
    let tag = "<HORIZONTAL_CS_CODE>";
    let start = xml.find(tag).unwrap() + tag.len();
    let rest = &xml[start..];
    let code = &rest[..rest.find('<').unwrap()];
    code.trim().strip_prefix("EPSG:").unwrap().parse().unwrap()
}

#[test]
fn info_on_metadata_only_safes() {
    const TEST: &str = "info_on_metadata_only_safes";
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    let mut safes: Vec<PathBuf> = std::fs::read_dir(data.join("s2-safe-metadata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    safes.sort();
    assert_eq!(safes.len(), 4);
    for safe in &safes {
        let run = s2edge(&[OsStr::new("info"), safe.as_os_str()], &[]);
        assert_eq!(run.code, Some(0), "{}: {}", safe.display(), run.context());
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        let id = safe.file_stem().unwrap().to_str().unwrap();
        assert_eq!(json["id"], id);
        let expected = mtd_tl_epsg(safe);
        assert_eq!(
            json["metadata"]["epsg"].as_u64(),
            Some(u64::from(expected)),
            "{id}"
        );
        let warnings: Vec<&str> = json["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        for band in Band::PRODUCT {
            let prefix = format!("band {}: ", band.name());
            assert!(
                warnings
                    .iter()
                    .any(|w| w.starts_with(&prefix) && w.contains("missing")),
                "{id}: no warning for the missing {band}: {warnings:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// 9. The README main job
// ---------------------------------------------------------------------------------

#[test]
fn readme_sample_job_with_shipped_models() {
    const TEST: &str = "readme_sample_job_with_shipped_models";
    if !util::runtime(TEST) || util::tool("gdalinfo", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    let run = s2edge(&[OsStr::new("sample"), tmp.path().as_os_str()], &[]);
    assert_eq!(run.code, Some(0), "{}", run.context());
    let granule = PathBuf::from(run.stdout.lines().last().unwrap());
    assert!(granule.is_dir());
    let out = tmp.path().join("out");
    let models = util::root().join("models");
    let config = util::root().join("config/demo.toml");
    let run = s2edge(
        &[
            OsStr::new("process"),
            granule.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--models"),
            models.as_os_str(),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.context());
    let product = PathBuf::from(run.stdout.lines().last().unwrap());
    assert_eq!(product, out.join(granule.file_name().unwrap()));
    let sr = util::gdalinfo(&product.join("superres.tif")).unwrap();
    assert_eq!(sr["size"], serde_json::json!([1200, 1200]));
    assert_eq!(sr["bands"].as_array().unwrap().len(), 12);
    assert_epsg(&sr, 32633);
    let cls = util::gdalinfo(&product.join("classification.tif")).unwrap();
    assert_eq!(cls["size"], serde_json::json!([10, 10]));
    assert_eq!(cls["bands"].as_array().unwrap().len(), 19);
    assert_epsg(&cls, 32633);
    // The sample declares offset −1000: harmonised values are DN − 1000.
    let item = read_json(&product.join("item.json"));
    let offsets = item["properties"]["s2edge:offsets_applied"]
        .as_object()
        .unwrap();
    assert!(
        offsets.values().all(|v| v.as_f64() == Some(-1000.0)),
        "{offsets:?}"
    );
}
