//! The streaming whole-tile pipeline (issue 9): `process_granule` super-resolves strip by
//! strip and streams `superres.tif`; its file must equal, byte for byte, the whole-raster
//! path (every band super-resolved whole by `pipeline::superres::superres`, then written
//! by `product::cog::write_cog`), and agree within 1 DN with a whole-image run (one tile
//! covering the image). Also: `--only superres2x|superres6x` and `[pipeline]
//! superres_scales` run one model without the other loaded, and `[runtime]
//! memory_budget` changes batch sizes, never pixels. Real ONNX Runtime, tiny fixture
//! models, synthetic scenes with nodata and saturated pixels.

use std::collections::BTreeMap;
use std::path::Path;

use s2edge::granule::{Band, GranuleSource, Resolution, NODATA_DN, SATURATED_DN};
use s2edge::pipeline::process::{process_granule, Models, NoProgress, ProcessOptions};
use s2edge::pipeline::scene::Scene;
use s2edge::pipeline::stream::{plan_models, StripOptions};
use s2edge::pipeline::superres::{superres, SrTiling};
use s2edge::pipeline::Infer;
use s2edge::product::cog::{write_cog, CogBand};
use s2edge::raster::tiling::{plan, Cores};
use s2edge::raster::Raster;

use crate::pipeline::{
    band_names, load_fixture, read_json, s2edge, scene_with, texture, write_folder,
};
use crate::util;

/// A textured scene with nodata and saturated pixels on every band's own grid.
fn test_scene(w: usize, h: usize) -> Scene {
    scene_with(w, h, |band, col, row| {
        let f = band.resolution().factor();
        if (col * f + 7) % 97 == 0 && (row * f) % 5 == 0 {
            NODATA_DN
        } else if (col * f) % 131 == 3 && (row * f + 11) % 89 == 0 {
            SATURATED_DN
        } else {
            texture(band, col, row)
        }
    })
}

fn options(tile: usize, batch: usize, budget: u64) -> ProcessOptions {
    ProcessOptions {
        classify: false,
        superres: true,
        classify_input: s2edge::config::ClassifyInput::Resampled,
        edge_patches: s2edge::config::EdgePatches::Skip,
        max_cloud_fraction: 0.3,
        sr_tile: tile,
        batch,
        memory_budget: budget,
        inference_workers: 1,
        quicklook_size: 256,
    }
}

/// The whole-raster reference file: each model's bands super-resolved whole with
/// `superres` (same tile), the 10 m bands passed through, written by `write_cog`.
fn reference_file(scene: &Scene, path: &Path, tile: usize) {
    let mut sr: BTreeMap<Band, Raster<u16>> = BTreeMap::new();
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        let mut m = load_fixture(name);
        let out = superres(
            scene,
            &mut m,
            "ref",
            SrTiling {
                cores: tile.into(),
                batch: 3,
            },
            &mut |_, _| {},
        )
        .unwrap();
        sr.extend(out);
    }
    let bands: Vec<CogBand<'_, u16>> = Band::PRODUCT
        .iter()
        .map(|b| CogBand {
            description: b.name(),
            data: if b.resolution() == Resolution::R10 {
                &scene.bands[b]
            } else {
                &sr[b]
            },
        })
        .collect();
    write_cog(path, &scene.grid10, &bands, Some(0.0)).unwrap();
}

/// Runs `process_granule` on the folder with the tiny 2× and 6× models.
fn process(
    folder: &Path,
    out: &Path,
    opts: &ProcessOptions,
) -> s2edge::pipeline::process::ProcessReport {
    let source = GranuleSource::open(folder).unwrap();
    let mut m2 = load_fixture("tiny-dsen2-2x");
    let mut m6 = load_fixture("tiny-dsen2-6x");
    let mut models = Models {
        classifier: None,
        superres_2x: Some(&mut m2 as &mut dyn Infer),
        superres_6x: Some(&mut m6 as &mut dyn Infer),
    };
    process_granule(&source, &mut models, opts, out, &mut NoProgress).unwrap()
}

#[test]
fn streamed_superres_tif_equals_the_whole_raster_path() {
    const TEST: &str = "streamed_superres_tif_equals_the_whole_raster_path";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    // 618 x 540: strips of 120 rows (the last one shorter), tiles of 120 with a 240
    // remainder column... and a COG of 3 x 3 tiles with two overview levels.
    let scene = test_scene(618, 546);
    let folder = write_folder(tmp.path(), "S2_STREAM", &scene);
    let loaded = Scene::load(&GranuleSource::open(&folder).unwrap(), &Band::PRODUCT).unwrap();
    assert_eq!(loaded.bands, scene.bands, "the folder round-trips");

    // The reference runs a uniform grid of 120 px tiles; the pipeline's plan has interior
    // tiles smaller by the widest halo, so equal files also show that the grid does not
    // change the pixels.
    {
        let (m2, m6) = (load_fixture("tiny-dsen2-2x"), load_fixture("tiny-dsen2-6x"));
        let plans = plan_models(
            &[&m2 as &dyn Infer, &m6 as &dyn Infer],
            StripOptions {
                tile: 120,
                max_batch: 8,
                memory_budget: 1 << 30,
            },
        )
        .unwrap();
        assert_eq!(plans.cores(), Cores::capped(120, 4, 6));
        assert_ne!(
            plan(618, 546, plans.cores(), 4, 6),
            plan(618, 546, 120, 4, 6)
        );
    }
    let reference = tmp.path().join("reference.tif");
    reference_file(&scene, &reference, 120);

    // Default budget (batch 8 at most) and a budget so small that batches hold one tile
    // and the tile shrinks: the same pixels either way.
    let out = tmp.path().join("out");
    let report = process(&folder, &out, &options(120, 8, 1 << 30));
    let product = out.join("S2_STREAM").join("superres.tif");
    let a = std::fs::read(&reference).unwrap();
    let b = std::fs::read(&product).unwrap();
    assert_eq!(a.len(), b.len(), "file sizes differ");
    assert!(
        a == b,
        "the streamed superres.tif differs from the whole-raster path"
    );
    assert_eq!(report.superres_pixels, (618 * 546 * 8) as u64);
    assert!(
        report.timings.contains_key("superres 2x"),
        "{:?}",
        report.timings
    );

    let out_small = tmp.path().join("out-small");
    process(&folder, &out_small, &options(120, 8, 64 << 20));
    let c = std::fs::read(out_small.join("S2_STREAM").join("superres.tif")).unwrap();
    assert!(a == c, "a smaller memory budget changed the pixels");

    // Against a whole-image run (one tile covering the image): within 1 DN (DESIGN.md
    // "Tiling correctness"), nodata and saturation identical.
    let mut whole: BTreeMap<Band, Raster<u16>> = BTreeMap::new();
    for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
        let mut m = load_fixture(name);
        whole.extend(
            superres(
                &scene,
                &mut m,
                "whole",
                SrTiling {
                    cores: 1200.into(),
                    batch: 1,
                },
                &mut |_, _| {},
            )
            .unwrap(),
        );
    }
    let tiled: BTreeMap<Band, Raster<u16>> = {
        let mut t = BTreeMap::new();
        for name in ["tiny-dsen2-2x", "tiny-dsen2-6x"] {
            let mut m = load_fixture(name);
            t.extend(
                superres(
                    &scene,
                    &mut m,
                    "t",
                    SrTiling {
                        cores: 120.into(),
                        batch: 4,
                    },
                    &mut |_, _| {},
                )
                .unwrap(),
            );
        }
        t
    };
    let mut nodata = 0;
    let mut saturated = 0;
    for (band, w) in &whole {
        let t = &tiled[band];
        for (i, (x, y)) in w.data.iter().zip(&t.data).enumerate() {
            if *x == NODATA_DN || *x == SATURATED_DN || *y == NODATA_DN || *y == SATURATED_DN {
                assert_eq!(x, y, "{band} pixel {i}: nodata/saturation differs");
                nodata += usize::from(*x == NODATA_DN);
                saturated += usize::from(*x == SATURATED_DN);
            } else {
                assert!(x.abs_diff(*y) <= 1, "{band} pixel {i}: {x} vs {y}");
            }
        }
    }
    assert!(
        nodata > 0 && saturated > 0,
        "the scene exercises nodata and saturation"
    );
}

/// A configuration with the tiny models and extra `[section] key = value` lines.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("s2edge.toml");
    std::fs::write(
        &p,
        format!(
            "[models]\nclassifier = \"tiny-ben19\"\nsuperres_2x = \"tiny-dsen2-2x\"\n\
             superres_6x = \"tiny-dsen2-6x\"\n\n[runtime]\nintra_threads = 1\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn run_cli(folder: &Path, out: &Path, cfg: &Path, extra: &[&str]) -> crate::pipeline::Run {
    let mut args: Vec<String> = vec![
        "--config".into(),
        cfg.display().to_string(),
        "process".into(),
        folder.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--models".into(),
        util::fixtures().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    s2edge(&args, &[])
}

/// Runs `process` on `folder` with [`config`]`(dir, extra)`, which must be refused as a
/// configuration error (exit 2); the run, for the caller to check what stderr names.
fn refused(folder: &Path, dir: &Path, extra: &str, args: &[&str]) -> crate::pipeline::Run {
    let cfg = config(dir, extra);
    let run = run_cli(folder, &dir.join("bad"), &cfg, args);
    assert_eq!(run.code, Some(2), "{}", run.context());
    run
}

#[test]
fn only_one_superres_model_runs_without_the_other() {
    const TEST: &str = "only_one_superres_model_runs_without_the_other";
    if !util::runtime(TEST) || util::tool("gdalinfo", TEST).is_none() {
        return;
    }
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "S2_ONLY", &test_scene(240, 240));
    // The 6x model name points nowhere: --only superres2x must not load it.
    let cfg = tmp.path().join("bad6.toml");
    std::fs::write(
        &cfg,
        "[models]\nclassifier = \"tiny-ben19\"\nsuperres_2x = \"tiny-dsen2-2x\"\n\
         superres_6x = \"no-such-model\"\n\n[runtime]\nintra_threads = 1\n\
         [pipeline]\nsr_tile = 120\n",
    )
    .unwrap();
    let cases: [(&str, Option<&str>, &[Band]); 2] = [
        (
            "superres2x",
            None,
            &[
                Band::B05,
                Band::B06,
                Band::B07,
                Band::B8A,
                Band::B11,
                Band::B12,
            ],
        ),
        (
            "superres6x",
            Some("superres_scales = [6]"),
            &[Band::B01, Band::B09],
        ),
    ];
    for (only, key, coarse) in cases {
        let out = tmp.path().join(format!("out-{only}"));
        let run = match key {
            // --only superres2x with the broken 6x name
            None => run_cli(&folder, &out, &cfg, &["--only", only]),
            // the configuration equivalent, superres_scales = [6], classify off
            Some(k) => {
                let c = config(
                    tmp.path(),
                    &format!("[pipeline]\nclassify = false\nsr_tile = 120\n{k}\n"),
                );
                run_cli(&folder, &out, &c, &[])
            }
        };
        assert_eq!(run.code, Some(0), "{only}: {}", run.context());
        let product = out.join("S2_ONLY");
        let info = util::gdalinfo(&product.join("superres.tif")).unwrap();
        let expected: Vec<String> = Band::PRODUCT
            .iter()
            .filter(|b| b.resolution() == Resolution::R10 || coarse.contains(b))
            .map(|b| b.name().to_string())
            .collect();
        assert_eq!(band_names(&info), expected, "{only}");
        let item = read_json(&product.join("item.json"));
        let rb = item["assets"]["superres"]["raster:bands"]
            .as_array()
            .unwrap();
        assert_eq!(rb.len(), expected.len(), "{only}: raster:bands");
        assert!(!product.join("classification.tif").exists(), "{only}");
        util::rio_validate(&product.join("superres.tif"), TEST);
    }
    // A scale that does not exist is a configuration error (exit 2).
    let run = refused(
        &folder,
        tmp.path(),
        "[pipeline]\nsuperres_scales = [3]\n",
        &["--only", "superres"],
    );
    assert!(run.stderr.contains("superres_scales"), "{}", run.context());
    let run = refused(&folder, tmp.path(), "memory_budget = \"12 parsecs\"\n", &[]);
    assert!(
        run.stderr.contains("memory_budget") || run.stderr.contains("parsecs"),
        "{}",
        run.context()
    );
}

/// A tall granule whose left third is outside the swath (nodata in every band): the
/// window holds a few strips, never the granule; the tiles without valid pixels are not
/// inferred; and the file still equals the whole-raster path byte for byte.
#[test]
fn the_window_holds_a_few_strips_and_skips_tiles_outside_the_swath() {
    const TEST: &str = "the_window_holds_a_few_strips_and_skips_tiles_outside_the_swath";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    let (w, h) = (360, 1098);
    let base = test_scene(w, h);
    let scene = scene_with(w, h, |band, col, row| {
        let f = band.resolution().factor();
        if col * f < 120 {
            NODATA_DN
        } else {
            base.bands[&band].data[row * (w / f) + col]
        }
    });
    let folder = write_folder(tmp.path(), "S2_SWATH", &scene);
    let reference = tmp.path().join("reference.tif");
    reference_file(&scene, &reference, 120);
    let out = tmp.path().join("out");
    let report = process(&folder, &out, &options(120, 4, 1 << 30));
    let a = std::fs::read(&reference).unwrap();
    let b = std::fs::read(out.join("S2_SWATH").join("superres.tif")).unwrap();
    assert!(a == b, "skipping empty tiles changed the file");
    // 10 strips of 120 rows; each model skips the strip's left tile.
    assert_eq!(report.tiles_skipped, 2 * h.div_ceil(120), "{report:?}");
    assert!(
        report.window_rows > 120 && report.window_rows <= 2 * 120 + 2 * 120,
        "the window held {} of {h} rows",
        report.window_rows
    );
}

/// The classifier and the quicklook read the moving window too: their products equal a
/// whole-scene classification (same batches) and a whole-raster quicklook, with
/// super-resolution on (the window follows the strips) and off (it moves by itself).
#[test]
fn streamed_classification_and_quicklook_equal_the_whole_scene() {
    const TEST: &str = "streamed_classification_and_quicklook_equal_the_whole_scene";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    // Texture, with nodata in the top-left corner (two patches) only.
    let scene = scene_with(618, 546, |band, col, row| {
        let f = band.resolution().factor();
        if col * f < 200 && row * f < 100 {
            NODATA_DN
        } else {
            texture(band, col, row)
        }
    });
    let folder = write_folder(tmp.path(), "S2_CLS", &scene);
    let source = GranuleSource::open(&folder).unwrap();
    let loaded = Scene::load(&source, &Band::PRODUCT).unwrap();
    let mut opts = options(120, 4, 1 << 30);
    opts.classify = true;
    opts.edge_patches = s2edge::config::EdgePatches::Pad;
    let mut cls = load_fixture("tiny-ben19");
    let direct = s2edge::pipeline::classify::classify(
        &loaded,
        &mut cls,
        "S2_CLS",
        s2edge::pipeline::classify::ClassifyOptions {
            edge_patches: opts.edge_patches,
            max_cloud_fraction: opts.max_cloud_fraction,
            input: opts.classify_input,
            batch: opts.batch,
        },
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(direct.count(s2edge::pipeline::classify::PatchStatus::Ok) > 8);
    assert!(direct.count(s2edge::pipeline::classify::PatchStatus::Nodata) >= 2);
    let quicklook = tmp.path().join("quicklook.png");
    s2edge::product::write_quicklook(
        &quicklook,
        &loaded.bands[&Band::B04],
        &loaded.bands[&Band::B03],
        &loaded.bands[&Band::B02],
        opts.quicklook_size,
    )
    .unwrap();
    for superres_on in [true, false] {
        opts.superres = superres_on;
        let out = tmp.path().join(format!("out-{superres_on}"));
        let mut m2 = load_fixture("tiny-dsen2-2x");
        let mut m6 = load_fixture("tiny-dsen2-6x");
        let mut cls = load_fixture("tiny-ben19");
        let mut models = Models {
            classifier: Some(&mut cls as &mut dyn Infer),
            superres_2x: Some(&mut m2 as &mut dyn Infer),
            superres_6x: Some(&mut m6 as &mut dyn Infer),
        };
        process_granule(&source, &mut models, &opts, &out, &mut NoProgress).unwrap();
        let product = out.join("S2_CLS");
        let labels = read_json(&product.join("labels.geojson"));
        let features = labels["features"].as_array().unwrap();
        assert_eq!(features.len(), direct.patches.len());
        for (f, p) in features.iter().zip(&direct.patches) {
            let props = &f["properties"];
            assert_eq!(props["row"], p.row, "superres {superres_on}");
            assert_eq!(props["col"], p.col);
            assert_eq!(props["status"], serde_json::to_value(p.status).unwrap());
            match &p.scores {
                Some(s) => {
                    // labels.geojson writes each f32 score in its shortest form.
                    let got: Vec<f32> = direct
                        .classes
                        .iter()
                        .map(|c| props["scores"][c].as_f64().unwrap() as f32)
                        .collect();
                    assert_eq!(&got, s, "patch {} {}", p.row, p.col);
                }
                None => assert!(props["scores"].is_null()),
            }
        }
        assert!(
            std::fs::read(product.join("quicklook.png")).unwrap()
                == std::fs::read(&quicklook).unwrap(),
            "superres {superres_on}: the quicklook differs from the whole-raster one"
        );
    }
}

/// `[runtime] thread_pool`, `spinning` and `arena`: one shared pool of blocking threads
/// and a pool of spinning threads per session (each with two threads), with one CPU arena
/// per session or one for all, are ways to schedule and place the same kernels, so the
/// product is the same file byte for byte; and the runtime says which it loaded with.
#[test]
fn thread_pools_and_arenas_write_the_same_product() {
    const TEST: &str = "thread_pools_and_arenas_write_the_same_product";
    if !util::runtime(TEST) {
        return;
    }
    let tmp = util::tempdir();
    let folder = write_folder(tmp.path(), "S2_POOL", &test_scene(240, 240));
    let mut files = Vec::new();
    // The third run reserves the shared arena's first region up front.
    for (pool, spinning, arena, chunk) in [
        ("shared", false, "per_session", ""),
        ("per_session", true, "shared", ""),
        (
            "per_session",
            true,
            "shared",
            "arena_initial_chunk = \"64MiB\"\n",
        ),
    ] {
        let dir = tmp.path().join(format!("{pool}-{}", files.len()));
        std::fs::create_dir(&dir).unwrap();
        let cfg = dir.join("s2edge.toml");
        std::fs::write(
            &cfg,
            format!(
                "[models]\nsuperres_2x = \"tiny-dsen2-2x\"\nsuperres_6x = \"tiny-dsen2-6x\"\n\
                 [runtime]\nintra_threads = 2\nthread_pool = \"{pool}\"\nspinning = {spinning}\n\
                 arena = \"{arena}\"\n{chunk}\
                 [pipeline]\nclassify = false\nsr_tile = 120\n"
            ),
        )
        .unwrap();
        let out = dir.join("out");
        let run = run_cli(&folder, &out, &cfg, &["--only", "superres"]);
        assert_eq!(run.code, Some(0), "{pool}: {}", run.context());
        let kind = |k: &str| {
            if k == "shared" {
                "Shared"
            } else {
                "PerSession"
            }
        };
        let (logged_pool, logged_arena) = (kind(pool), kind(arena));
        // Absent, the shared arena reserves its default first region; per-session arenas
        // keep ONNX Runtime's own.
        let logged_chunk = if !chunk.is_empty() {
            format!("Some({})", 64u64 << 20)
        } else if arena == "shared" {
            format!("Some({})", s2edge::model::DEFAULT_ARENA_INITIAL_CHUNK)
        } else {
            "None".to_string()
        };
        assert!(
            run.stderr.contains(&format!(
                "pool: {logged_pool}, intra: 2, spinning: {spinning}, arena: {logged_arena}, \
                 arena_initial_chunk: {logged_chunk}"
            )),
            "{pool}: the runtime does not say which pool and arena it loaded: {}",
            run.context()
        );
        files.push(std::fs::read(out.join("S2_POOL").join("superres.tif")).unwrap());
    }
    assert!(
        files[0] == files[1] && files[1] == files[2],
        "the thread pool or the arena changed the product"
    );
    // A pool kind that does not exist is a configuration error (exit 2) naming the key.
    let run = refused(
        &folder,
        tmp.path(),
        "thread_pool = \"global\"\n",
        &["--only", "superres"],
    );
    assert!(run.stderr.contains("thread_pool"), "{}", run.context());
    let run = refused(
        &folder,
        tmp.path(),
        "arena = \"pooled\"\n",
        &["--only", "superres"],
    );
    assert!(run.stderr.contains("arena"), "{}", run.context());
}

/// Panels read through every reader: the real L1C crop as a SAFE of JPEG 2000 bands
/// (directory and zip; OpenJPEG decode areas over each panel's columns) and as its
/// GeoTIFF folder (tiles of those columns) give the same `superres.tif` pixels, with
/// tiles of 120 px so the 600 px wide crop is cut into three panels; again with
/// JPEG 2000 bands of 128 px codestream tiles, whose windows skip tiles (the `jpeg2k`
/// memory stream failed there, so zip entries are unpacked to files).
#[test]
fn jpeg2000_and_geotiff_panels_write_the_same_superres_tif() {
    const TEST: &str = "jpeg2000_and_geotiff_panels_write_the_same_superres_tif";
    if !util::runtime(TEST) {
        return;
    }
    let Some(fx) = crate::safe_fixture::build_l1c(TEST) else {
        return;
    };
    let tmp = util::tempdir();
    let opts = options(120, 8, 1 << 30);
    let zip = tmp.path().join("granule.zip");
    crate::safe_fixture::zip_safe(&fx.safe, &zip);
    let superres_tif = |input: &Path, name: &str| -> Vec<u8> {
        let report = process(input, &tmp.path().join(name), &opts);
        std::fs::read(report.product.join("superres.tif")).unwrap()
    };
    // Same pixels on the same grid: the same file, byte for byte.
    let from_tif = superres_tif(&fx.crop, "tif");
    assert!(
        superres_tif(&fx.safe, "safe") == from_tif,
        "the SAFE (JPEG 2000) panels wrote another superres.tif than the GeoTIFF panels"
    );
    assert!(
        superres_tif(&zip, "zip") == from_tif,
        "the zipped SAFE panels wrote another superres.tif than the GeoTIFF panels"
    );
    let Some(tiled) = crate::safe_fixture::build_l1c_tiled(TEST, 128) else {
        return;
    };
    let tiled_zip = tmp.path().join("tiled.zip");
    crate::safe_fixture::zip_safe(&tiled.safe, &tiled_zip);
    assert!(
        superres_tif(&tiled.safe, "tiled-safe") == from_tif,
        "the SAFE of 128 px JPEG 2000 tiles wrote another superres.tif"
    );
    assert!(
        superres_tif(&tiled_zip, "tiled-zip") == from_tif,
        "the zipped SAFE of 128 px JPEG 2000 tiles wrote another superres.tif"
    );
}
