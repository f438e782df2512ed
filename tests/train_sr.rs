//! Super-resolution with the in-graph back-projection layer (feature `train`, issue 13):
//! the exported ONNX graph computes what burn computes, tiled runs through the pipeline
//! equal a whole-image run, the exported output agrees with the observation far better
//! than without the layer, and `s2edge-train eval` scores an unseen scene with the
//! baseline fitted on another one and a blur mismatch.

#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Distribution, Tensor};
use ndarray::Array4;
use onnx_ir::Message;
use s2edge::granule::{Band, GeoRef, GeoTransform};
use s2edge::model::session::LoadedModel;
use s2edge::pipeline::scene::Scene;
use s2edge::pipeline::superres::{superres, SrTiling};
use s2edge::raster::degrade::wald_degrade;
use s2edge::raster::radiometry::to_f32;
use s2edge::raster::Raster;
use s2edge::train::backproject::BackProjection;
use s2edge::train::checkpoint::{save_with, NetState, SrArch};
use s2edge::train::data::SrBands;
use s2edge::train::dsen2::Dsen2;
use s2edge::train::TrainConfig;

use crate::util;

/// A random-weight network with `steps` back-projection steps, checkpointed and exported
/// with `s2edge-train`'s own export; returns the burn network and the version directory.
fn exported(scale: usize, steps: usize, dir: &Path) -> (Dsen2, PathBuf) {
    let device = Device::flex();
    device.seed(11);
    let bands = SrBands::for_scale(scale);
    let model = Dsen2::new(&bands.channels(), 2, 8, 0.0, &device).with_backprojection(scale, steps);
    // Small random weights everywhere (the zero tail would hide the network).
    let n = s2edge::train::params::count(&model);
    let mut rng = s2edge::train::data::Rng::new(5);
    let w: Vec<f32> = (0..n)
        .map(|_| (rng.below(2001) as f32 - 1000.0) / 20000.0)
        .collect();
    let model = s2edge::train::params::unflatten(model, &w).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let cfg_path = dir.join("train.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "task = \"superres\"\nname = \"bp-{scale}x\"\nversion = 1\ndata = [\"synthetic\"]\nholdout = \"none\"\nscale = {scale}\npatch = 24\nblocks = 2\nfeatures = 8\nsteps = 0\nbatch = 1\nbackprojection_steps = {steps}\ncheckpoint_dir = {:?}\nmodels_dir = {:?}\n",
            dir.join("ckpt").display().to_string(),
            dir.join("models").display().to_string()
        ),
    )
    .unwrap();
    let cfg = TrainConfig::load(&cfg_path).unwrap();
    let state = s2edge::train::checkpoint::CheckpointState {
        step: 0,
        task: "superres".into(),
        name: cfg.name.clone(),
        scale,
        blocks: 2,
        features: 8,
        ranks: 1,
        batch: 1,
        loss: 0.0,
        data: vec!["synthetic".into()],
        bands: vec![],
    };
    let optim = s2edge::train::sr::make_optim(&cfg);
    let flat = s2edge::train::params::flatten(&model).unwrap();
    let ck = save_with(
        &cfg.checkpoint_dir,
        &state,
        &[NetState {
            name: "model",
            weights: &flat,
            optim: &optim,
        }],
        Some(&SrArch {
            backprojection_steps: steps,
            generator_slope: None,
        }),
    )
    .unwrap();
    let (vdir, _) = s2edge::train::export::export_superres(&cfg, &ck, None, None).unwrap();
    (model, vdir)
}

fn parity(scale: usize, steps: usize) {
    let test = format!("backprojection_export_matches_burn_{scale}x");
    if !util::runtime(&test) {
        return;
    }
    let dir = util::tempdir();
    let (model, vdir) = exported(scale, steps, dir.path());
    let mut loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
    let bp = BackProjection::new(scale, steps);
    assert!(bp.radius() > 0);
    assert_eq!(
        loaded.spec.superres.as_ref().unwrap().receptive_radius,
        Some(6 + bp.radius()),
        "the manifest's radius includes the layer"
    );
    // The layer is exported as grouped ops over all output bands at once (one Resize
    // per step), not per band: ONNX Runtime pads single-channel maps to 16 channels.
    let bytes = std::fs::read(vdir.join("model.onnx")).unwrap();
    let graph = onnx_ir::ModelProto::parse_from_bytes(&bytes)
        .unwrap()
        .graph
        .unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count("Resize"), steps, "one upsampling per step");
    assert_eq!(
        count("Pad"),
        steps + 1,
        "one edge pad per degradation and the recovery"
    );
    assert_eq!(
        count("Reshape"),
        0,
        "no per-band nearest-neighbour reshapes"
    );
    let bands = SrBands::for_scale(scale);
    // A non-square size and batch the exporter never traced: every axis is dynamic.
    let (h, w) = (42usize, 54usize);
    let device = Device::flex();
    let mut feeds = Vec::new();
    let mut tensors = Vec::new();
    for ((name, _), c) in bands.inputs.iter().zip(bands.channels()) {
        let t = Tensor::<4>::random([4, c, h, w], Distribution::Uniform(0.0, 1.5), &device);
        let v = t.to_data().try_into_vec::<f32>().unwrap();
        feeds.push((
            name.to_string(),
            Array4::from_shape_vec((4, c, h, w), v).unwrap(),
        ));
        tensors.push(t);
    }
    let want = model
        .forward(tensors)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let got = loaded.run(feeds).unwrap();
    let y = &got.iter().find(|(n, _)| n == "y").unwrap().1;
    assert_eq!(y.shape(), &[4, bands.outputs.len(), h, w]);
    let d = y
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "{scale}×: max |onnx − burn| = {d}");
}

#[test]
fn backprojection_export_matches_burn_2x() {
    parity(2, 3);
}

#[test]
fn backprojection_export_matches_burn_6x() {
    parity(6, 2);
}

/// A textured 10 m scene of `size`² px in harmonised DN (every band on its own grid).
fn scene(size: usize) -> Scene {
    let mut bands = std::collections::BTreeMap::new();
    for band in Band::PRODUCT {
        let f = band.resolution().factor();
        let n = size / f;
        let k = band as usize as f32;
        let data = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n * f) as f32, (i / n * f) as f32);
                let v = 1500.0
                    + 600.0 * (x * 0.05 + k).sin() * (y * 0.031).cos()
                    + 250.0 * ((x * 0.37 + y * 0.23 + k).sin());
                v as u16
            })
            .collect();
        bands.insert(band, Raster::from_vec(n, n, data).unwrap());
    }
    Scene {
        row0: 0,
        col0: 0,
        grid10: GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300000.0,
                origin_y: 6200040.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: size,
            height: size,
        },
        bands,
        cloud: None,
        offsets: Band::PRODUCT.iter().map(|b| (*b, 0.0)).collect(),
    }
}

fn sr(scene: &Scene, model: &mut LoadedModel, tile: usize) -> Vec<(Band, Raster<u16>)> {
    superres(
        scene,
        model,
        "test",
        SrTiling {
            cores: tile.into(),
            batch: 2,
        },
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn backprojection_models_tile_exactly_and_agree_with_the_observation() {
    const TEST: &str = "backprojection_models_tile_exactly_and_agree_with_the_observation";
    if !util::runtime(TEST) {
        return;
    }
    let sc = scene(216);
    for (scale, steps) in [(2usize, 3usize), (6, 2)] {
        let dir = util::tempdir();
        let (_, vdir) = exported(scale, steps, dir.path());
        let mut model = LoadedModel::load(&vdir, &Default::default()).unwrap();
        let whole = sr(&sc, &mut model, 216);
        let tiled = sr(&sc, &mut model, 36);
        for ((band, a), (_, b)) in whole.iter().zip(&tiled) {
            let worst = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap();
            assert!(worst <= 1, "{scale}× {band}: tiled differs by {worst} DN");
        }
        // Without the halo the same tiling is wrong: the check above can fail.
        let mut no_halo = LoadedModel::load(&vdir, &Default::default()).unwrap();
        no_halo.spec.superres.as_mut().unwrap().receptive_radius = Some(0);
        let bad = sr(&sc, &mut no_halo, 36);
        let worst = whole
            .iter()
            .zip(&bad)
            .flat_map(|((_, a), (_, b))| a.data.iter().zip(&b.data).map(|(x, y)| x.abs_diff(*y)))
            .max()
            .unwrap();
        assert!(worst > 1, "{scale}×: without a halo tiles still agree");

        // The layer pulls the output towards the observation: D(y) is closer to the
        // observed coarse band than D of the same network without the layer.
        let (_, plain_dir) = exported(scale, 0, &dir.path().join("plain"));
        let mut plain = LoadedModel::load(&plain_dir, &Default::default()).unwrap();
        let without = sr(&sc, &mut plain, 216);
        for ((band, with), (_, wo)) in whole.iter().zip(&without) {
            let obs = to_f32(&sc.bands[band]);
            let err = |y: &Raster<u16>| {
                let d = wald_degrade(&to_f32(y), scale);
                let n = d.data.len() as f64;
                (d.data
                    .iter()
                    .zip(&obs.data)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt()
            };
            let (e_with, e_without) = (err(with), err(wo));
            assert!(
                e_with < 0.9 * e_without,
                "{scale}× {band}: RMS |D(y) − x_obs| {e_with:.2} with the layer, {e_without:.2} without"
            );
        }
    }
}

#[test]
fn eval_scores_an_unseen_scene_with_the_baseline_fitted_elsewhere_and_a_blur_mismatch() {
    const TEST: &str =
        "eval_scores_an_unseen_scene_with_the_baseline_fitted_elsewhere_and_a_blur_mismatch";
    if !util::runtime(TEST) {
        return;
    }
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    let uub = data.join("s2-crops/S2A_33UUB_20170527_0_L1C");
    let nza = data.join("s2-crops/S2A_33NZA_20220706_N0400_L2A");
    if !uub.is_dir() || !nza.is_dir() {
        eprintln!("SKIP {TEST}: the two s2-crops scenes are absent");
        return;
    }
    let dir = util::tempdir();
    let (_, vdir) = exported(2, 2, dir.path());
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_s2edge-train"))
            .args(["eval", "--model"])
            .arg(&vdir)
            .arg("--data")
            .arg(&uub)
            .args(["--holdout", "none", "--fit-data"])
            .arg(&nza)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let standard = run(&[]);
    let blurry = run(&["--blur-factor", "1.4"]);
    assert!(standard["linear_fit"]
        .as_str()
        .unwrap()
        .contains("S2A_33NZA_20220706_N0400_L2A"));
    assert!(standard["region"]
        .as_str()
        .unwrap()
        .contains("whole granule"));
    assert!((blurry["blur_factor"].as_f64().unwrap() - 1.4).abs() < 1e-6);
    for r in [&standard, &blurry] {
        for m in ["model_scores", "bicubic", "linear_guided"] {
            let rmse = r[m]["rmse"].as_f64().unwrap();
            assert!(rmse.is_finite() && rmse > 0.0, "{m}: {r}");
        }
    }
    // A blurrier sensor than assumed makes the classical baselines worse.
    assert!(
        blurry["bicubic"]["rmse"].as_f64().unwrap() > standard["bicubic"]["rmse"].as_f64().unwrap()
    );
    // A bad factor is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_s2edge-train"))
        .args(["eval", "--model"])
        .arg(&vdir)
        .arg("--data")
        .arg(&uub)
        .args(["--blur-factor", "-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `s2edge-train variant` scores the shipped int8 graph of dsen2-6x@4 beside its float
/// graph on the unseen 33NZA scene and writes the section that the shipped manifest
/// carries: the same digest, cost and scores (the evaluation is deterministic), and a
/// cost that is the float graph's SRE minus the int8 graph's in the same run.
#[test]
fn variant_records_the_shipped_int8_graph_with_its_measured_cost() {
    const TEST: &str = "variant_records_the_shipped_int8_graph_with_its_measured_cost";
    if !util::runtime(TEST) {
        return;
    }
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    let nza = data.join("s2-crops/S2A_33NZA_20220706_N0400_L2A");
    let shipped_dir = util::root().join("models/dsen2-6x/4");
    let shipped = s2edge::model::ModelSpec::load(&shipped_dir.join("model.toml")).unwrap();
    let Some(section) = shipped.precision.int8.clone() else {
        panic!("{TEST}: dsen2-6x@4 ships no [precision.int8]");
    };
    let tmp = util::tempdir();
    let vdir = tmp.path().join("dsen2-6x/4");
    std::fs::create_dir_all(&vdir).unwrap();
    for f in ["model.onnx", section.onnx.as_str()] {
        std::fs::copy(shipped_dir.join(f), vdir.join(f)).unwrap();
    }
    let mut bare = shipped.clone();
    bare.precision.int8 = None;
    std::fs::write(vdir.join("model.toml"), toml::to_string(&bare).unwrap()).unwrap();
    let variant = |graph: &str| {
        Command::new(env!("CARGO_BIN_EXE_s2edge-train"))
            .args(["variant", "--model"])
            .arg(&vdir)
            .args(["--graph", graph, "--method", &section.method, "--data"])
            .arg(&nza)
            .args(["--holdout", "none"])
            .output()
            .unwrap()
    };
    let out = variant(&section.onnx);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sre = |k: &str| report[k]["model_scores"]["sre_db"].as_f64().unwrap();
    let cost = report["cost_db"].as_f64().unwrap();
    assert!(
        (cost - (sre("float32") - sre("int8"))).abs() < 1e-9,
        "{report}"
    );
    let written = s2edge::model::ModelSpec::load(&vdir.join("model.toml")).unwrap();
    let v = written.precision.int8.as_ref().unwrap();
    assert_eq!(
        v.onnx_sha256,
        s2edge::model::registry::sha256_file(&vdir.join(&section.onnx)).unwrap()
    );
    // The graph and how it was made are the shipped ones exactly. Its measured cost
    // depends on the CPU's integer kernels (ONNX Runtime picks u8s8 code paths by
    // instruction set, VNNI or not), so the recorded cost must hold within 0.1 dB.
    assert_eq!(
        (&v.onnx, &v.onnx_sha256, &v.method),
        (&section.onnx, &section.onnx_sha256, &section.method),
        "the shipped section names another graph"
    );
    assert!(
        (v.cost_db - section.cost_db).abs() <= 0.1,
        "the shipped cost {} dB is not what the evaluator measures here: {} dB",
        section.cost_db,
        v.cost_db
    );
    // The float graph's scores are the manifest's own held-out scores.
    assert_eq!(
        written.training.metrics["rmse"].as_float(),
        Some(
            (report["float32"]["model_scores"]["rmse"].as_f64().unwrap() * 1000.0).round() / 1000.0
        )
    );
    // The float graph is not a variant of itself: a usage error, manifest untouched.
    let out = variant("model.onnx");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("other than model.onnx"));
    assert_eq!(
        s2edge::model::ModelSpec::load(&vdir.join("model.toml")).unwrap(),
        written
    );
}
