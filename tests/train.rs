//! The MPI trainer end to end (feature `train`): `mpirun -n 2` keeps weights bit-identical,
//! 2 ranks × b/2 equal 1 rank × b, bad input fails cleanly on every rank, checkpoints
//! resume, and exported ONNX models match the burn forward pass through `LoadedModel`.

#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use s2edge::model::session::LoadedModel;
use s2edge::train::data::SrBands;
use s2edge::train::dsen2::Dsen2;

use crate::util;

/// The synthetic sample granule, written once per test run.
fn sample_granule() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = util::tempdir();
        let p = s2edge::sample::write_sample(d.path()).unwrap();
        (d, p)
    })
    .1
    .clone()
}

fn train_bin() -> &'static str {
    env!("CARGO_BIN_EXE_s2edge-train")
}

/// A small superres configuration in `dir`; `extra` TOML lines (`key = value`) replace
/// the defaults of the same key.
fn write_config(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let base = format!(
        "task = \"superres\"\nname = \"dsen2-test\"\nversion = 1\ndata = [{:?}]\nscale = 2\npatch = 16\nblocks = 1\nfeatures = 8\nbatch = 4\nsteps = 3\nlog_every = 1\nlr = 0.001\ncheckpoint_dir = {:?}\nmodels_dir = {:?}",
        data.display().to_string(),
        dir.join("ckpt").display().to_string(),
        dir.join("models").display().to_string(),
    );
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let mut cfg: Vec<&str> = base
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .collect();
    cfg.extend(extra.lines());
    let p = dir.join("train.toml");
    std::fs::write(&p, cfg.join("\n") + "\n").unwrap();
    p
}

fn mpirun(n: usize, args: &[&str], test: &str) -> Option<Output> {
    let mpirun = util::tool("mpirun", test)?;
    let out = Command::new(mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-n",
            &n.to_string(),
        ])
        .args(["-x", "RAYON_NUM_THREADS=1"])
        .arg(train_bin())
        .args(args)
        .output()
        .unwrap();
    Some(out)
}

fn floats(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn two_ranks_keep_weights_bit_identical() {
    let dir = util::tempdir();
    let cfg = write_config(
        dir.path(),
        &sample_granule(),
        "dump_weights = true\nsteps = 4",
    );
    let Some(out) = mpirun(
        2,
        &["train", "--config", cfg.to_str().unwrap()],
        "two_ranks_keep_weights_bit_identical",
    ) else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpirun failed: {err}");
    // Every rank reports progress.
    assert!(err.contains("[rank 0/2] step 4/4"), "{err}");
    assert!(err.contains("[rank 1/2] step 4/4"), "{err}");
    let w0 = std::fs::read(dir.path().join("ckpt/weights.rank0.f32")).unwrap();
    let w1 = std::fs::read(dir.path().join("ckpt/weights.rank1.f32")).unwrap();
    assert!(!w0.is_empty());
    assert_eq!(w0, w1, "weights differ across ranks after 4 steps");
    // The final checkpoint, written by rank 0 alone, holds exactly these weights.
    let ck = std::fs::read(dir.path().join("ckpt/latest/model.f32")).unwrap();
    assert_eq!(ck, w0);
}

#[test]
fn two_half_batches_equal_one_full_batch() {
    let extra = "dump_weights = true\nshuffle = false\naugment = false\noptimizer = \"sgd\"\nlr = 0.05\nsteps = 3";
    let d1 = util::tempdir();
    let d2 = util::tempdir();
    let c1 = write_config(d1.path(), &sample_granule(), extra);
    let c2 = write_config(d2.path(), &sample_granule(), extra);
    let Some(o1) = mpirun(
        1,
        &["train", "--config", c1.to_str().unwrap()],
        "two_half_batches_equal_one_full_batch",
    ) else {
        return;
    };
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    let o2 = mpirun(
        2,
        &["train", "--config", c2.to_str().unwrap()],
        "two_half_batches",
    )
    .unwrap();
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let a = floats(&d1.path().join("ckpt/weights.rank0.f32"));
    let b = floats(&d2.path().join("ckpt/weights.rank0.f32"));
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    for (x, y) in a.iter().zip(&b) {
        max = max.max((x - y).abs() / x.abs().max(1e-3));
    }
    assert!(
        max < 1e-3,
        "1 rank × 4 and 2 ranks × 2 differ by {max} (relative)"
    );
    // And the run did train: the zero-initialised last convolution has moved.
    assert!(a.iter().any(|v| *v != 0.0));
}

#[test]
fn missing_dataset_fails_cleanly_on_all_ranks() {
    let dir = util::tempdir();
    let cfg = write_config(dir.path(), &dir.path().join("no-such-granule"), "");
    let Some(out) = mpirun(
        2,
        &["train", "--config", cfg.to_str().unwrap()],
        "missing_dataset",
    ) else {
        return;
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-granule") && err.contains("no such file"),
        "{err}"
    );
    // Reported once, by rank 0.
    assert_eq!(err.matches("s2edge-train: error").count(), 1, "{err}");
}

#[test]
fn empty_shard_and_uneven_batch_are_errors() {
    let dir = util::tempdir();
    let cfg = write_config(dir.path(), &sample_granule(), "batch = 1000000");
    let Some(out) = mpirun(
        2,
        &["train", "--config", cfg.to_str().unwrap()],
        "empty_shard",
    ) else {
        return;
    };
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty shard"));
    let cfg = write_config(dir.path(), &sample_granule(), "batch = 3");
    let out = mpirun(2, &["train", "--config", cfg.to_str().unwrap()], "uneven").unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not split evenly"));
}

#[test]
fn checkpoint_resumes_where_it_stopped() {
    let dir = util::tempdir();
    let cfg = write_config(
        dir.path(),
        &sample_granule(),
        "checkpoint_every = 1\nsteps = 2",
    );
    let bin = train_bin();
    let out = Command::new(bin)
        .args(["train", "--config", cfg.to_str().unwrap()])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = std::fs::read_to_string(dir.path().join("ckpt/latest/state.toml")).unwrap();
    assert!(state.contains("step = 2"), "{state}");
    let out = Command::new(bin)
        .args(["train", "--config", cfg.to_str().unwrap(), "--resume"])
        .env("RAYON_NUM_THREADS", "1")
        .env("S2EDGE_TRAIN__STEPS", "4")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("resumed from") && err.contains("at step 2"),
        "{err}"
    );
    assert!(
        err.contains("step 3/4") && !err.contains("step 1/4"),
        "{err}"
    );
    let state = std::fs::read_to_string(dir.path().join("ckpt/latest/state.toml")).unwrap();
    assert!(state.contains("step = 4"), "{state}");
}

#[test]
fn sigterm_checkpoints_and_exits() {
    let dir = util::tempdir();
    let cfg = write_config(
        dir.path(),
        &sample_granule(),
        "steps = 100000\nlog_every = 1",
    );
    let child = Command::new(train_bin())
        .args(["train", "--config", cfg.to_str().unwrap()])
        .env("RAYON_NUM_THREADS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first steps, then ask it to stop.
    let log = dir.path().join("ckpt");
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(120));
    assert!(err.contains("stop requested"), "{err}");
    let state = std::fs::read_to_string(log.join("latest/state.toml")).unwrap();
    assert!(!state.contains("step = 100000"), "{state}");
}

/// Max |ONNX Runtime − burn| of an exported checkpoint with random weights.
fn parity(scale: usize, task: &str) -> f32 {
    use burn::tensor::{Device, Distribution, Tensor};
    let dir = util::tempdir();
    let device = Device::flex();
    device.seed(7);
    let bands = SrBands::for_scale(scale);
    let slope = if task == "gan" {
        s2edge::train::sr::GAN_SLOPE
    } else {
        0.0
    };
    let model = Dsen2::new(&bands.channels(), 2, 8, slope, &device);
    // Random weights everywhere (the zero-initialised tail would make the test trivial).
    let n = s2edge::train::params::count(&model);
    let mut rng = s2edge::train::data::Rng::new(3);
    let w: Vec<f32> = (0..n)
        .map(|_| (rng.below(2001) as f32 - 1000.0) / 5000.0)
        .collect();
    let model = s2edge::train::params::unflatten(model, &w).unwrap();
    let cfg = s2edge::train::TrainConfig {
        task: if task == "gan" {
            s2edge::train::config::TaskKind::Gan
        } else {
            s2edge::train::config::TaskKind::Superres
        },
        name: format!("parity-{task}-{scale}"),
        version: 1,
        data: vec![PathBuf::from("synthetic")],
        holdout: s2edge::train::config::Holdout::None,
        scale,
        patch: 16,
        blocks: 2,
        features: 8,
        lr: 1e-3,
        batch: 1,
        steps: 0,
        optimizer: s2edge::train::config::OptimizerKind::Adam,
        shuffle: false,
        augment: false,
        seed: 1,
        checkpoint_dir: dir.path().join("ckpt"),
        checkpoint_every: 0,
        models_dir: dir.path().join("models"),
        log_every: 1,
        adversarial_weight: 0.0,
        bands: None,
        split_csv: None,
        superres_model: None,
        classify: Default::default(),
        dump_weights: false,
        backprojection_steps: 0,
        blur_factors: vec![],
        init_from: None,
        generator_slope: None,
        lr_schedule: Default::default(),
        lr_min: 0.0,
        reben_metadata: None,
        reben_split: s2edge::train::config::DataSplit::Train,
    };
    let optim = s2edge::train::sr::make_optim(&cfg);
    let state = s2edge::train::checkpoint::CheckpointState {
        step: 0,
        task: task.to_string(),
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
    let flat = s2edge::train::params::flatten(&model).unwrap();
    let ck = s2edge::train::checkpoint::save(
        &cfg.checkpoint_dir,
        &state,
        &[s2edge::train::checkpoint::NetState {
            name: if task == "gan" { "generator" } else { "model" },
            weights: &flat,
            optim: &optim,
        }],
    )
    .unwrap();
    let (vdir, _) = s2edge::train::export::export_superres(&cfg, &ck, None, None).unwrap();
    let mut loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
    assert_eq!(
        loaded.spec.superres.as_ref().unwrap().receptive_radius,
        Some(6)
    );
    // A non-square size the exporter never saw: the axes are dynamic.
    let (h, wd) = (37usize, 29usize);
    let mut feeds = Vec::new();
    let mut tensors = Vec::new();
    for ((name, _), c) in bands.inputs.iter().zip(bands.channels()) {
        let t = Tensor::<4>::random([2, c, h, wd], Distribution::Uniform(0.0, 1.5), &device);
        let v = t.to_data().try_into_vec::<f32>().unwrap();
        feeds.push((
            name.to_string(),
            ndarray::Array4::from_shape_vec((2, c, h, wd), v).unwrap(),
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
    assert_eq!(y.shape(), &[2, bands.outputs.len(), h, wd]);
    y.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

#[test]
fn exported_dsen2_2x_matches_burn() {
    let d = parity(2, "superres");
    assert!(d < 1e-4, "max |onnx - burn| = {d}");
}

#[test]
fn exported_dsen2_6x_matches_burn() {
    let d = parity(6, "superres");
    assert!(d < 1e-4, "max |onnx - burn| = {d}");
}

#[test]
fn exported_gan_generator_matches_burn() {
    let d = parity(2, "gan");
    assert!(d < 1e-4, "max |onnx - burn| = {d}");
}

#[test]
fn exported_resnet50_matches_burn() {
    use burn::module::Module;
    use burn::tensor::{Device, Distribution, Tensor};
    use s2edge::granule::Band;
    use s2edge::model::manifest::{TrainingInfo, TrainingStatus};
    use s2edge::train::classify::{export_onnx, manifest, PATCH};
    use s2edge::train::export::{sha256_hex, Staging};
    let dir = util::tempdir();
    let device = Device::flex();
    device.seed(11);
    let bands = [Band::B02, Band::B03, Band::B04];
    let model = s2edge::train::resnet::ResNet50::new(bands.len(), 19, &device);
    let bytes = export_onnx(&model, bands.len(), "resnet-parity").unwrap();
    let stage = Staging::new(dir.path(), "resnet-parity", 1).unwrap();
    stage.write_onnx(&bytes).unwrap();
    let info = TrainingInfo {
        status: TrainingStatus::Untrained,
        data: "none".into(),
        steps: 0,
        ranks: 1,
        metrics: toml::Table::new(),
        notes: None,
    };
    stage
        .write_manifest(&manifest(
            "resnet-parity",
            1,
            &sha256_hex(&bytes),
            &bands,
            info,
        ))
        .unwrap();
    let vdir = stage.publish().unwrap();
    let mut loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
    let x = Tensor::<4>::random(
        [2, 3, PATCH, PATCH],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let v = x.to_data().try_into_vec::<f32>().unwrap();
    let want = model
        .valid()
        .forward(x)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let got = loaded
        .run(vec![(
            "x".into(),
            ndarray::Array4::from_shape_vec((2, 3, PATCH, PATCH), v).unwrap(),
        )])
        .unwrap();
    let p = &got.iter().find(|(n, _)| n == "probs").unwrap().1;
    assert_eq!(p.shape(), &[2, 19]);
    let d = p
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "max |onnx - burn| = {d}");
    // Probabilities: the sigmoid is inside the graph.
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// The six BigEarthNet v1 example patches copied into a fresh temp dir (the shared copy is
/// read-only), or `None` (skipped) when the shared data is absent.
fn ben_examples(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let src = util::shared_data(test)?.join("bigearthnet-v1-examples");
    if !src.is_dir() {
        eprintln!("SKIP {test}: {} is absent", src.display());
        return None;
    }
    let dir = util::tempdir();
    let data = dir.path().join("patches");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let to = data.join(p.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    Some((dir, data))
}

/// The sorted patch folders under `data`.
fn patch_dirs(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A one-step, batch-2 classify configuration in `dir` over `data`.
fn write_classify_config(dir: &Path, data: &Path) -> PathBuf {
    let cfg = format!(
        "task = \"classify\"\nname = \"resnet50-test\"\nversion = 1\ndata = [{:?}]\nbatch = 2\nlr = 0.0001\nsteps = 1\noptimizer = \"adam\"\nshuffle = false\naugment = false\nseed = 42\ncheckpoint_dir = {:?}\ncheckpoint_every = 0\nmodels_dir = {:?}\nlog_every = 1\n",
        data.display().to_string(),
        dir.join("ckpt").display().to_string(),
        dir.join("models").display().to_string(),
    );
    let p = dir.join("classify.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn band_file(patch: &Path, band: &str) -> PathBuf {
    let name = patch.file_name().unwrap().to_str().unwrap();
    patch.join(format!("{name}_{band}.tif"))
}

#[test]
fn classify_skips_corrupt_patch_and_rejects_missing_band() {
    let Some((dir, data)) = ben_examples("classify_skips_corrupt_patch_and_rejects_missing_band")
    else {
        return;
    };
    let patches = patch_dirs(&data);
    assert_eq!(patches.len(), 6);
    // Unreadable pixels: skipped, counted, and the run still trains on the other five.
    let corrupt = &patches[1];
    let corrupt_name = corrupt.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::write(band_file(corrupt, "B02"), b"this is not a GeoTIFF at all").unwrap();
    let cfg = write_classify_config(dir.path(), &data);
    let out = Command::new(train_bin())
        .args(["train", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipping corrupt patch") && err.contains(&corrupt_name),
        "{err}"
    );
    assert!(
        err.contains("6 patches (5 readable on rank 0, 1 skipped there)"),
        "{err}"
    );
    assert!(err.contains("step 1/1"), "{err}");
    assert_eq!(err.matches("skipping corrupt patch").count(), 1, "{err}");
    // A missing band is an error for the whole run, naming the patch and the band.
    let missing = &patches[3];
    let missing_name = missing.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(band_file(missing, "B03")).unwrap();
    let mut child = Command::new(train_bin())
        .args(["train", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("s2edge-train hangs on a patch with a missing band");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("s2edge-train: error")
            && err.contains(&missing_name)
            && err.contains("band B03 is missing"),
        "{err}"
    );
    // It failed before training.
    assert!(!err.contains("step 1/1"), "{err}");
}

#[test]
fn classify_band_subset_exports_three_band_model() {
    let Some((dir, data)) = ben_examples("classify_band_subset_exports_three_band_model") else {
        return;
    };
    let cfg = write_classify_config(dir.path(), &data);
    let out = Command::new(train_bin())
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--bands",
            "B02,B03,B04",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(r#"bands ["B02", "B03", "B04"]"#), "{err}");
    let state = std::fs::read_to_string(dir.path().join("ckpt/latest/state.toml")).unwrap();
    assert!(state.contains("step = 1"), "{state}");
    // The export takes its bands from the checkpoint (the config has none).
    let out = Command::new(train_bin())
        .args(["export", "--config", cfg.to_str().unwrap(), "--untrained"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(vdir, dir.path().join("models/resnet50-test/1"));
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(vdir.join("model.toml")).unwrap()).unwrap();
    let text = manifest.to_string();
    assert!(text.contains("B02") && text.contains("B04"), "{text}");
    assert!(!text.contains("B08") && !text.contains("B11"), "{text}");
    let loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
    let x = loaded.spec.inputs.get("x").unwrap();
    assert_eq!(
        x.bands.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        ["B02", "B03", "B04"]
    );
    assert_eq!(loaded.spec.normalisation.mean.len(), 3);
    let graph = loaded.graph_inputs();
    assert_eq!(graph.len(), 1);
    assert_eq!(graph[0].name, "x");
    let shape = graph[0].shape.clone().unwrap();
    assert_eq!(shape.len(), 4);
    assert_eq!(&shape[1..], &[3, 120, 120]);
}
