//! The classifier trainer on the reBEN encoding (feature `train`): a real LMDB +
//! safetensors + parquet fixture built here (with a corrupt value, a missing key and an
//! unknown label name), `mpirun -n 2` sharding with identical weights, burn/ONNX parity of
//! the small classifier, the shared 67-patch release, and every shipped classifier
//! re-scored through ONNX Runtime against the metrics its manifest records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use s2edge::granule::Band;
use s2edge::model::session::LoadedModel;
use s2edge::raster::Raster;
use s2edge::train::classify::{self, Samples};
use s2edge::train::config::DataSplit;
use s2edge::train::reben;

use crate::util;

fn train_bin() -> &'static str {
    env!("CARGO_BIN_EXE_s2edge-train")
}

/// A synthetic patch whose radiometry depends on `class` (so a model can learn it): water
/// dark in the NIR, vegetation bright, plus texture.
fn patch_bands(class: usize, seed: u64) -> BTreeMap<Band, Raster<u16>> {
    let mut rng = s2edge::train::data::Rng::new(seed);
    Band::PRODUCT
        .iter()
        .map(|&b| {
            let s = 120 / b.resolution().factor();
            let base: u16 = match (class, b) {
                (0, Band::B08 | Band::B8A | Band::B07) => 3000,
                (0, _) => 600,
                (_, Band::B08 | Band::B8A | Band::B07) => 200,
                _ => 400,
            };
            let data = (0..s * s)
                .map(|_| base + rng.below(200) as u16 + 1)
                .collect();
            (
                b,
                Raster {
                    width: s,
                    height: s,
                    data,
                },
            )
        })
        .collect()
}

const FOREST: &str = "Broad-leaved forest";
const WATER: &str = "Inland waters";

/// Writes an LMDB of `n_ok` good patches (alternating forest / water) plus one corrupt
/// value, and a metadata.parquet listing them plus one key that is not in the LMDB.
/// `extra_label` is added to the first row's labels. Returns (lmdb dir, metadata path).
fn fixture(dir: &Path, n_ok: usize, eval: usize, extra_label: Option<&str>) -> (PathBuf, PathBuf) {
    let lmdb = dir.join("BigEarthNet-S2-LMDB");
    let mut entries = Vec::new();
    let mut rows = Vec::new();
    for i in 0..n_ok + eval {
        let class = i % 2;
        let key = format!(
            "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i:02}_{:02}",
            40 + i
        );
        entries.push((
            key.clone(),
            reben::encode_s2(&key, &patch_bands(class, i as u64)).unwrap(),
        ));
        let mut labels = vec![if class == 0 { FOREST } else { WATER }.to_string()];
        if i == 0 {
            if let Some(l) = extra_label {
                labels.push(l.to_string());
            }
        }
        let split = if i < n_ok { "train" } else { "validation" };
        rows.push((
            key,
            labels,
            split.to_string(),
            "Austria".to_string(),
            String::new(),
        ));
    }
    // A value that is not a safetensors dict, and a row whose key the LMDB lacks.
    entries.push((
        "S2B_corrupt_value".into(),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"B01\":".to_vec(),
    ));
    rows.push((
        "S2B_corrupt_value".into(),
        vec![FOREST.into()],
        "train".into(),
        "Serbia".into(),
        String::new(),
    ));
    rows.push((
        "S2B_missing_key".into(),
        vec![WATER.into()],
        "train".into(),
        "Serbia".into(),
        String::new(),
    ));
    reben::write_lmdb(&lmdb, &entries).unwrap();
    let meta = dir.join("metadata.parquet");
    reben::write_metadata(&meta, &rows).unwrap();
    // The reader must never need write access (the shared release is read-only).
    for p in [&lmdb.join("data.mdb"), &meta] {
        let mut perm = std::fs::metadata(p).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(p, perm).unwrap();
    }
    let _ = std::fs::remove_file(lmdb.join("lock.mdb"));
    let mut perm = std::fs::metadata(&lmdb).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&lmdb, perm).unwrap();
    (lmdb, meta)
}

/// A small band-statistics classify configuration over the fixture.
fn config(dir: &Path, lmdb: &Path, meta: &Path, batch: usize, steps: u64, extra: &str) -> PathBuf {
    let text = format!(
        "task = \"classify\"\nname = \"ben19-test\"\nversion = 1\ndata = [{:?}]\nbatch = {batch}\nlr = 0.05\nsteps = {steps}\noptimizer = \"adam\"\nshuffle = true\naugment = true\nseed = 7\ncheckpoint_dir = {:?}\nmodels_dir = {:?}\nlog_every = 1\n{extra}\n[classify]\nmetadata = {:?}\narch = \"bandstats\"\nhidden = 4\nloader_workers = 2\nprefetch = 3\n",
        lmdb.display().to_string(),
        dir.join("ckpt").display().to_string(),
        dir.join("models").display().to_string(),
        meta.display().to_string(),
    );
    let p = dir.join("classify.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(train_bin())
        .env("RAYON_NUM_THREADS", "1")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn reben_reader_opens_read_only_and_skips_missing_and_corrupt() {
    let dir = util::tempdir();
    let (lmdb, meta) = fixture(dir.path(), 6, 4, None);
    let db = reben::Lmdb::open(&lmdb).unwrap();
    assert!(
        !lmdb.join("lock.mdb").exists(),
        "no lock file may be created"
    );
    assert_eq!(db.entries().unwrap(), 11);
    let rows = reben::read_metadata(&meta).unwrap();
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[1].classes, vec![17]);
    assert_eq!(rows[0].classes, vec![8]);
    let cfg =
        s2edge::train::TrainConfig::load(&config(dir.path(), &lmdb, &meta, 2, 1, "")).unwrap();
    let train = Samples::open(&cfg, DataSplit::Train).unwrap();
    assert_eq!(train.len(), 8, "6 good + corrupt + missing rows");
    let rep = classify::scan(
        &train,
        &Band::PRODUCT,
        &std::sync::Arc::new(Vec::new()),
        2,
        2,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((rep.readable.len(), rep.missing, rep.corrupt), (6, 1, 1));
    assert_eq!(rep.counts[8], 3.0);
    assert_eq!(rep.counts[17], 3.0);
    // Each rank reads only its shard.
    let s0 = train.shard(0, 2);
    let s1 = train.shard(1, 2);
    assert_eq!(s0.len() + s1.len(), 8);
    assert_eq!(s0.name(1), train.name(2));
    assert_eq!(s1.name(0), train.name(1));
}

#[test]
fn unknown_label_name_is_an_error_naming_it() {
    let dir = util::tempdir();
    let (lmdb, meta) = fixture(dir.path(), 4, 2, Some("Broadleaf forest"));
    let e = reben::read_metadata(&meta).unwrap_err();
    assert!(e.to_string().contains("\"Broadleaf forest\""), "{e}");
    let cfg = config(dir.path(), &lmdb, &meta, 2, 1, "");
    let out = run(&["train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown label \"Broadleaf forest\""), "{err}");
}

#[test]
fn trains_exports_and_onnx_matches_burn_on_the_fixture() {
    let dir = util::tempdir();
    let (lmdb, meta) = fixture(dir.path(), 6, 6, None);
    let cfg = config(dir.path(), &lmdb, &meta, 6, 25, "");
    let out = run(&["train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 missing keys, 1 corrupt values skipped"),
        "{err}"
    );
    assert!(
        err.contains("8 patches (6 readable on rank 0, 2 skipped there)"),
        "{err}"
    );
    assert!(err.contains("loader alone: 8 patches"), "{err}");
    assert!(err.contains("step 25/25"), "{err}");
    let out = run(&["export", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let vdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
    let spec = loaded.spec.clone();
    let cls = spec.classify.as_ref().unwrap();
    assert_eq!(cls.thresholds.len(), 19);
    let m = &spec.training.metrics;
    assert_eq!(m["eval_patches"].as_integer(), Some(6));
    assert_eq!(m["train_patches"].as_integer(), Some(6));
    assert!(m.contains_key("baseline_prior") && m.contains_key("baseline_band_stats_logistic"));
    // Separable synthetic classes: the small model learns them.
    assert!(m["macro_ap"].as_float().unwrap() > 0.9, "{m:?}");
    assert!(
        spec.training
            .data
            .contains("12 patches: 6 train, 6 validation"),
        "{}",
        spec.training.data
    );
    // burn and ONNX Runtime agree on the validation patches.
    let c = s2edge::train::TrainConfig::load(&cfg).unwrap();
    let eval = classify::decode_all(
        &Samples::open(&c, DataSplit::Validation).unwrap(),
        &Band::PRODUCT,
        &std::sync::Arc::new(Vec::new()),
        1,
    )
    .unwrap();
    let (_, _, net) = classify::load_model(
        &s2edge::train::checkpoint::latest(&dir.path().join("ckpt")),
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    let want = classify::burn_probs(&net, &eval, 12);
    let got = classify::onnx_probs(&mut loaded, &eval, 12).unwrap();
    let d = want
        .iter()
        .flatten()
        .zip(got.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-4, "max |onnx - burn| = {d}");
}

#[test]
fn two_ranks_read_their_shards_and_keep_identical_weights() {
    let Some(mpirun) = util::tool("mpirun", "two_ranks_read_their_shards") else {
        return;
    };
    let dir = util::tempdir();
    let (lmdb, meta) = fixture(dir.path(), 8, 2, None);
    let cfg = config(dir.path(), &lmdb, &meta, 4, 3, "dump_weights = true");
    let out = Command::new(mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-n",
            "2",
            "-x",
            "RAYON_NUM_THREADS=1",
        ])
        .arg(train_bin())
        .args(["train", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // 10 train rows (8 good, corrupt, missing): 5 per rank, each rank scans only its own.
    assert!(err.contains("[rank 0/2]: loader alone: 5 patches"), "{err}");
    assert!(err.contains("[rank 1/2]: loader alone: 5 patches"), "{err}");
    assert!(
        err.contains("10 patches (4 readable on rank 0, 1 skipped there)"),
        "{err}"
    );
    let w0 = std::fs::read(dir.path().join("ckpt/weights.rank0.f32")).unwrap();
    let w1 = std::fs::read(dir.path().join("ckpt/weights.rank1.f32")).unwrap();
    assert!(!w0.is_empty());
    assert_eq!(w0, w1, "weights differ between the ranks");
}

/// The shared reBEN release, or `None` (skipped).
fn shared_reben(test: &str) -> Option<(PathBuf, PathBuf)> {
    let base = util::shared_data(test)?.join("bigearthnet-lmdb");
    let (lmdb, meta) = (
        base.join("BigEarthNet-S2-LMDB"),
        base.join("metadata.parquet"),
    );
    if !lmdb.join("data.mdb").is_file() || !meta.is_file() {
        eprintln!("SKIP {test}: {} is absent", base.display());
        return None;
    }
    Some((lmdb, meta))
}

#[test]
fn shared_reben_release_reads_completely() {
    let Some((lmdb, meta)) = shared_reben("shared_reben_release_reads_completely") else {
        return;
    };
    let rows = reben::read_metadata(&meta).unwrap();
    assert_eq!(rows.len(), 67);
    assert_eq!(
        rows.iter().filter(|r| r.split == DataSplit::Train).count(),
        40
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.split == DataSplit::Validation)
            .count(),
        27
    );
    assert!(rows.iter().all(|r| !r.classes.is_empty()));
    let db = reben::Lmdb::open(&lmdb).unwrap();
    // Every row names its Sentinel-1 patch; 17 of them are in this LMDB.
    let with_s1 = rows
        .iter()
        .filter(|r| {
            r.s1_name
                .as_ref()
                .is_some_and(|k| db.get(k).unwrap().is_some())
        })
        .count();
    assert_eq!(with_s1, 17);
    for r in &rows {
        let b = db.s2_patch(&r.patch_id, &Band::PRODUCT).unwrap();
        assert_eq!(b[&Band::B02].width, 120);
        assert_eq!(b[&Band::B05].width, 60);
        assert_eq!(b[&Band::B09].width, 20);
        assert!(b[&Band::B04].data.iter().any(|v| *v > 0));
    }
    // The whole split through the loader pool: nothing skipped.
    let dir = util::tempdir();
    let cfg =
        s2edge::train::TrainConfig::load(&config(dir.path(), &lmdb, &meta, 2, 1, "")).unwrap();
    let val = Samples::open(&cfg, DataSplit::Validation).unwrap();
    let rep = classify::scan(
        &val,
        &Band::PRODUCT,
        &std::sync::Arc::new(Vec::new()),
        2,
        4,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((rep.readable.len(), rep.missing, rep.corrupt), (27, 0, 0));
    eprintln!(
        "shared validation split: {:.1} patches/s through the loader",
        rep.patches_per_s()
    );
}

/// Every shipped classifier that says it is trained on the shared release: its ONNX graph,
/// run through ONNX Runtime on the validation split, reproduces the metrics its manifest
/// records (AP exactly to the recorded 3 decimals).
#[test]
fn shipped_classifiers_reproduce_their_recorded_metrics() {
    let Some((lmdb, meta)) = shared_reben("shipped_classifiers_reproduce_their_recorded_metrics")
    else {
        return;
    };
    if !util::runtime("shipped_classifiers_reproduce_their_recorded_metrics") {
        return;
    }
    let models = util::root().join("models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let name_dir = entry.unwrap().path();
        for v in std::fs::read_dir(&name_dir).unwrap() {
            let vdir = v.unwrap().path();
            let Ok(text) = std::fs::read_to_string(vdir.join("model.toml")) else {
                continue;
            };
            if !text.contains("task = \"classify\"") || !text.contains("bigearthnet-lmdb") {
                continue;
            }
            let mut loaded = LoadedModel::load(&vdir, &Default::default()).unwrap();
            let spec = loaded.spec.clone();
            let bands = spec.inputs.iter().next().unwrap().1.bands.clone();
            let dir = util::tempdir();
            let cfg = s2edge::train::TrainConfig::load(&config(dir.path(), &lmdb, &meta, 2, 1, ""))
                .unwrap();
            let eval = classify::decode_all(
                &Samples::open(&cfg, DataSplit::Validation).unwrap(),
                &bands,
                &std::sync::Arc::new(Vec::new()),
                2,
            )
            .unwrap();
            let probs = classify::onnx_probs(&mut loaded, &eval, bands.len()).unwrap();
            let targets: Vec<[f32; 19]> = eval.iter().map(|p| p.y).collect();
            let s = classify::scores(&probs, &targets);
            let m = &spec.training.metrics;
            let r = |v: f64| (v * 1000.0).round() / 1000.0;
            assert_eq!(
                r(s.macro_ap),
                m["macro_ap"].as_float().unwrap(),
                "{}",
                vdir.display()
            );
            assert_eq!(
                r(s.micro_ap),
                m["micro_ap"].as_float().unwrap(),
                "{}",
                vdir.display()
            );
            let half = m["at_0_5"].as_table().unwrap();
            assert_eq!(
                r(s.micro_f1),
                half["micro_f1"].as_float().unwrap(),
                "{}",
                vdir.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "no shipped classifier trained on the shared release"
    );
}
