//! The model layer against the real ONNX Runtime library and the committed fixture models.
//!
//! Fixtures live in `tests/fixtures/models/` and come from `scripts/gen_models.py` (run
//! with `.venv/bin/python scripts/gen_models.py`; `--check` verifies the committed files
//! match). Like ort's own `tests/upsample.rs`, each test asserts the fixture's metadata
//! and shapes before it runs anything. `tiny-dsen2-2x/1/reference/` holds an input/output
//! pair computed by numpy (float64 convolutions), so ONNX Runtime's numbers are checked
//! against an independent implementation.
//!
//! ONNX Runtime is loaded once per process; tests that need it call `runtime()`, which
//! skips (or fails under CI) when the library is not installed.

use std::path::{Path, PathBuf};

use ndarray::{Array4, ArrayD, Axis};
use s2edge::model::{
    init_runtime, load, ExecutionProvider, InferencePool, ModelError, ModelRef, ProviderOptions,
    Registry, Task, TrainingStatus,
};

use crate::util;

fn shipped() -> PathBuf {
    util::root().join("models")
}

fn cpu() -> ProviderOptions {
    ProviderOptions {
        intra_threads: 1,
        ..ProviderOptions::default()
    }
}

/// A deterministic, non-trivial `[n, c, h, w]` input.
fn pattern(n: usize, c: usize, h: usize, w: usize, seed: f32) -> Array4<f32> {
    Array4::from_shape_fn((n, c, h, w), |(b, ch, y, x)| {
        ((b as f32 + 1.0) * 0.37 + ch as f32 * 1.3 + y as f32 * 0.11 + x as f32 * 0.07 + seed).sin()
    })
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn output<'a>(outs: &'a [(String, ArrayD<f32>)], name: &str) -> &'a ArrayD<f32> {
    &outs.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn tiny_dsen2_metadata_then_numbers_match_the_numpy_reference() {
    if !util::runtime("tiny_dsen2_metadata_then_numbers_match_the_numpy_reference") {
        return;
    }
    let dir = util::fixtures().join("tiny-dsen2-2x/1");
    let mut m = load(&dir, &cpu()).unwrap();

    // Metadata first: names, element types, dynamic batch and spatial dims.
    let ins = m.graph_inputs();
    assert_eq!(ins.len(), 2);
    assert_eq!(
        (ins[0].name.as_str(), ins[0].shape.clone()),
        ("x10", Some(vec![-1, 4, -1, -1]))
    );
    assert_eq!(
        (ins[1].name.as_str(), ins[1].shape.clone()),
        ("x20", Some(vec![-1, 6, -1, -1]))
    );
    assert!(ins.iter().all(|t| t.is_f32));
    let outs = m.graph_outputs();
    assert_eq!(outs.len(), 1);
    assert_eq!(
        (outs[0].name.as_str(), outs[0].shape.clone()),
        ("y", Some(vec![-1, 6, -1, -1]))
    );
    assert_eq!(m.spec.task, Task::Superres);
    assert_eq!(m.spec.superres.as_ref().unwrap().receptive_radius, Some(4));
    assert_eq!(m.spec.training.status, TrainingStatus::Untrained);
    assert_eq!(m.provider, ExecutionProvider::Cpu);
    assert_eq!(m.graph.sha256, m.spec.onnx_sha256);

    // The numpy reference pair.
    let refdir = dir.join("reference");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(refdir.join("reference.json")).unwrap())
            .unwrap();
    let load_ref = |kind: &str, name: &str| {
        let e = &index[kind][name];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let data = read_f32(&refdir.join(e["file"].as_str().unwrap()));
        ArrayD::from_shape_vec(shape, data).unwrap()
    };
    let x10 = load_ref("inputs", "x10").into_dimensionality().unwrap();
    let x20: Array4<f32> = load_ref("inputs", "x20").into_dimensionality().unwrap();
    let expected = load_ref("outputs", "y");
    let got = m
        .run(vec![("x10".into(), x10), ("x20".into(), x20.clone())])
        .unwrap();
    let y = output(&got, "y");
    assert_eq!(y.shape(), expected.shape());
    let max_diff = y
        .iter()
        .zip(expected.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 1e-4,
        "ONNX Runtime vs numpy reference: max |diff| = {max_diff}"
    );
    // The residual is the network's contribution on top of x20: present, but bounded.
    let residual = (y - &x20.into_dyn()).mapv(f32::abs);
    let max_residual = residual.fold(0.0f32, |a, b| a.max(*b));
    assert!(
        max_residual > 1e-3 && max_residual < 5.0,
        "residual {max_residual}"
    );

    // A 2×64×64 batch: right shape, finite, deterministic.
    let batch = || {
        vec![
            ("x10".to_string(), pattern(2, 4, 64, 64, 0.0)),
            ("x20".to_string(), pattern(2, 6, 64, 64, 0.5)),
        ]
    };
    let a = m.run(batch()).unwrap();
    let b = m.run(batch()).unwrap();
    let ya = output(&a, "y");
    assert_eq!(ya.shape(), &[2, 6, 64, 64]);
    assert!(ya.iter().all(|v| v.is_finite()));
    assert_eq!(ya, output(&b, "y"), "two runs of the same batch differ");
    // Batch items are independent: item 1 alone gives item 1 of the batch.
    let single = m
        .run(vec![
            (
                "x10".to_string(),
                pattern(2, 4, 64, 64, 0.0)
                    .index_axis(Axis(0), 1)
                    .insert_axis(Axis(0))
                    .to_owned(),
            ),
            (
                "x20".to_string(),
                pattern(2, 6, 64, 64, 0.5)
                    .index_axis(Axis(0), 1)
                    .insert_axis(Axis(0))
                    .to_owned(),
            ),
        ])
        .unwrap();
    let diff = (&ya.index_axis(Axis(0), 1) - &output(&single, "y").index_axis(Axis(0), 0))
        .mapv(f32::abs)
        .fold(0.0f32, |a, b| a.max(*b));
    assert!(diff < 1e-5, "batch item 1 vs alone: {diff}");
}

#[test]
fn classifier_outputs_are_probabilities() {
    if !util::runtime("classifier_outputs_are_probabilities") {
        return;
    }
    for dir in [
        util::fixtures().join("tiny-ben19/1"),
        shipped().join("ben19-tiny/1"),
    ] {
        let mut m = load(&dir, &cpu()).unwrap();
        let ins = m.graph_inputs();
        assert_eq!(ins.len(), 1);
        assert_eq!(ins[0].name, "x");
        assert_eq!(ins[0].shape, Some(vec![-1, 12, 120, 120]));
        assert_eq!(m.graph_outputs()[0].shape, Some(vec![-1, 19]));
        let cl = m.spec.classify.clone().unwrap();
        assert_eq!(cl.classes.len(), 19);
        assert_eq!(cl.classes[6], "Land principally occupied by agriculture, with significant areas of natural vegetation");
        assert_eq!(
            m.spec.inputs.get("x").unwrap().bands,
            s2edge::granule::Band::PRODUCT.to_vec()
        );
        // Scaled like harmonised DN after normalisation: anything from -3 to 3 sigma.
        let x = pattern(3, 12, 120, 120, 0.0).mapv(|v| v * 3.0);
        let out = m.run(vec![("x".into(), x)]).unwrap();
        let p = output(&out, "probs");
        assert_eq!(p.shape(), &[3, 19]);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "{p:?}");
        // Not a constant: the sigmoid sees different logits per class.
        let (lo, hi) = p
            .iter()
            .fold((1.0f32, 0.0f32), |(l, h), v| (l.min(*v), h.max(*v)));
        assert!(hi - lo > 1e-3, "{dir:?}: constant output {lo}");
        let t = m.smoke_test().unwrap();
        assert!(t.as_secs() < 60);
    }
}

#[test]
fn shipped_superres_models_output_exactly_the_upsampled_input() {
    if !util::runtime("shipped_superres_models_output_exactly_the_upsampled_input") {
        return;
    }
    for (name, target, radius, scale) in [
        ("dsen2-2x", "x20", 14, 2),
        ("srgan-2x", "x20", 14, 2),
        ("dsen2-6x", "x60", 14, 6),
    ] {
        let mut m = load(&shipped().join(name).join("1"), &cpu()).unwrap();
        let sr = m.spec.superres.clone().unwrap();
        assert_eq!(
            (sr.receptive_radius, sr.scale),
            (Some(radius), scale),
            "{name}"
        );
        assert!(m.spec.is_untrained(), "{name} is declared untrained");
        let inputs: Vec<(String, Array4<f32>)> = m
            .spec
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (n, s))| (n.to_string(), pattern(1, s.bands.len(), 36, 30, i as f32)))
            .collect();
        let expected = inputs
            .iter()
            .find(|(n, _)| n == target)
            .unwrap()
            .1
            .clone()
            .into_dyn();
        let out = m.run(inputs).unwrap();
        // The final conv is zero: the model adds nothing to the bilinear input.
        assert_eq!(output(&out, "y"), &expected, "{name}");
        m.smoke_test().unwrap();
    }
}

#[test]
fn registry_lists_and_verifies_the_shipped_models() {
    let reg = Registry::new(shipped());
    let list = reg.list().unwrap();
    let names: Vec<String> = list
        .iter()
        .map(|l| format!("{}@{}", l.name, l.version))
        .collect();
    assert_eq!(
        names,
        [
            "ben19-bandstats@1",
            "ben19-tiny@1",
            "dsen2-2x@1",
            "dsen2-2x@2",
            "dsen2-2x@3",
            "dsen2-2x@4",
            "dsen2-2x@5",
            "dsen2-6x@1",
            "dsen2-6x@2",
            "dsen2-6x@3",
            "dsen2-6x@4",
            "resnet50-ben19@2",
            "srgan-2x@1",
            "srgan-2x@2",
            "srgan-2x@3",
            "srgan-2x@4",
            "srgan-2x@5",
            "srgan-2x@6",
        ]
    );
    for l in &list {
        assert!(l.sha_ok, "{}: {:?}", l.name, l.problem);
        assert!(l.size.unwrap() > 1000);
        // Versions 2 and 3 of the super-resolution models, resnet50-ben19@2 and
        // ben19-bandstats come from s2edge-train; the placeholders (version 1 of the SR
        // models, ben19-tiny) ship honestly untrained.
        let trained = (l.version >= 2 && l.name != "ben19-tiny") || l.name == "ben19-bandstats";
        let expected = if trained {
            TrainingStatus::Trained
        } else {
            TrainingStatus::Untrained
        };
        assert_eq!(l.status, Some(expected), "{}@{}", l.name, l.version);
    }
    // Issue 4: models/ stays under 120 MB.
    let total: u64 = list.iter().filter_map(|l| l.size).sum();
    assert!(total < 120 << 20, "shipped models are {total} bytes");
}

#[test]
fn wrong_sha256_is_refused_naming_both_digests() {
    let dir = util::fixtures().join("broken-sha/1");
    let expected = s2edge::model::ModelSpec::load(&dir.join("model.toml"))
        .unwrap()
        .onnx_sha256;
    let actual = s2edge::model::registry::sha256_file(&dir.join("model.onnx")).unwrap();
    // Refused before ONNX Runtime is involved, so this runs without the library too.
    let e = load(&dir, &cpu()).unwrap_err();
    assert!(matches!(e, ModelError::ShaMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&expected) && msg.contains(&actual), "{msg}");
    assert!(!e.is_transient());
    let reg = Registry::new(util::fixtures());
    let e = reg.resolve(&"broken-sha".parse().unwrap()).unwrap_err();
    assert!(matches!(e, ModelError::ShaMismatch { .. }), "{e}");
    let row = reg
        .list()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "broken-sha")
        .unwrap();
    assert!(!row.sha_ok);
}

#[test]
fn input_name_mismatch_is_refused_naming_the_input() {
    if !util::runtime("input_name_mismatch_is_refused_naming_the_input") {
        return;
    }
    let e = load(&util::fixtures().join("broken-io/1"), &cpu()).unwrap_err();
    assert!(matches!(e, ModelError::IoMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("\"x20m\""), "{msg}");
    assert!(msg.contains("x20"), "{msg}");
}

#[test]
fn incomplete_version_is_invisible_and_pins_select() {
    let reg = Registry::new(util::fixtures());
    // tiny-dsen2-2x/2 holds model.onnx but no model.toml: a half-copied version.
    assert!(util::fixtures()
        .join("tiny-dsen2-2x/2/model.onnx")
        .is_file());
    assert_eq!(reg.versions("tiny-dsen2-2x").unwrap(), vec![1]);
    let r = reg.resolve(&"tiny-dsen2-2x".parse().unwrap()).unwrap();
    assert_eq!(r.spec.version, 1);
    assert!(
        r.skipped.is_empty(),
        "an incomplete version is not a skipped one"
    );
    let r = reg.resolve(&"tiny-dsen2-2x@1".parse().unwrap()).unwrap();
    assert_eq!(r.dir, util::fixtures().join("tiny-dsen2-2x/1"));
    let e = reg
        .resolve(&"tiny-dsen2-2x@2".parse().unwrap())
        .unwrap_err();
    match &e {
        ModelError::NotFound { available, .. } => {
            assert!(available.contains(&"tiny-dsen2-2x@1".to_string()));
            assert!(!available.contains(&"tiny-dsen2-2x@2".to_string()));
        }
        other => panic!("expected NotFound, got {other}"),
    }
    let e = reg.resolve(&"no-such-model".parse().unwrap()).unwrap_err();
    assert!(e.to_string().contains("tiny-ben19@1"), "{e}");
    assert!(!reg
        .list()
        .unwrap()
        .iter()
        .any(|l| l.name == "tiny-dsen2-2x" && l.version == 2));
}

/// Copies a fixture version into `root/<name>/<version>`, rewriting the manifest's name
/// and version.
fn install(src: &Path, root: &Path, name: &str, version: u32) -> PathBuf {
    let dst = root.join(name).join(version.to_string());
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("model.onnx"), dst.join("model.onnx")).unwrap();
    let text = std::fs::read_to_string(src.join("model.toml")).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("name = ") {
                format!("name = \"{name}\"")
            } else if l.starts_with("version = ") {
                format!("version = {version}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dst.join("model.toml"), text).unwrap();
    dst
}

#[test]
fn a_broken_higher_version_falls_back_with_a_report() {
    let t = util::tempdir();
    let src = util::fixtures().join("tiny-dsen2-2x/1");
    install(&src, t.path(), "sr", 1);
    let v3 = install(&src, t.path(), "sr", 3);
    // Corrupt version 3's graph after its manifest was written.
    let mut bytes = std::fs::read(v3.join("model.onnx")).unwrap();
    bytes.push(0);
    std::fs::write(v3.join("model.onnx"), bytes).unwrap();
    // Version 4 is half-copied: invisible.
    std::fs::create_dir_all(t.path().join("sr/4")).unwrap();
    std::fs::copy(src.join("model.onnx"), t.path().join("sr/4/model.onnx")).unwrap();

    let reg = Registry::new(t.path());
    let r = reg.resolve(&"sr".parse().unwrap()).unwrap();
    assert_eq!(r.spec.version, 1);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].version, 3);
    assert!(matches!(r.skipped[0].error, ModelError::ShaMismatch { .. }));
    // Pinning the broken version is an error, not a fallback.
    let e = reg.resolve(&"sr@3".parse().unwrap()).unwrap_err();
    assert!(matches!(e, ModelError::ShaMismatch { .. }), "{e}");

    // A manifest whose name disagrees with its directory is refused.
    let other = install(&src, t.path(), "other", 1);
    let text = std::fs::read_to_string(other.join("model.toml")).unwrap();
    std::fs::write(
        other.join("model.toml"),
        text.replace("name = \"other\"", "name = \"sr\""),
    )
    .unwrap();
    let e = reg.resolve(&"other".parse().unwrap()).unwrap_err();
    assert!(matches!(e, ModelError::Manifest { .. }), "{e}");
    assert!(e.to_string().contains("directory"), "{e}");
}

#[test]
fn cuda_on_the_cpu_library_falls_back_with_its_reason() {
    if !util::runtime("cuda_on_the_cpu_library_falls_back_with_its_reason") {
        return;
    }
    let info = s2edge::model::runtime_info().unwrap();
    if info
        .compiled_accelerators
        .contains(&ExecutionProvider::Cuda)
    {
        eprintln!(
            "SKIP cuda_on_the_cpu_library_falls_back_with_its_reason: this ONNX Runtime has CUDA"
        );
        return;
    }
    let dir = util::fixtures().join("tiny-dsen2-2x/1");
    let opts = ProviderOptions {
        order: vec![
            ExecutionProvider::TensorRt,
            ExecutionProvider::Cuda,
            ExecutionProvider::Cpu,
        ],
        ..cpu()
    };
    let mut m = load(&dir, &opts).unwrap();
    assert_eq!(m.provider, ExecutionProvider::Cpu);
    let failed: Vec<ExecutionProvider> =
        m.provider_report.failures.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        failed,
        [ExecutionProvider::TensorRt, ExecutionProvider::Cuda]
    );
    for (p, why) in &m.provider_report.failures {
        eprintln!("{p} failed: {why}");
        assert!(why.contains("CPU-only build"), "{p}: {why}");
    }
    m.smoke_test().unwrap();

    let strict = ProviderOptions {
        order: vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu],
        require_accelerator: true,
        ..cpu()
    };
    let e = load(&dir, &strict).unwrap_err();
    match &e {
        ModelError::AcceleratorRequired { reasons } => {
            assert_eq!(reasons.len(), 1);
            assert_eq!(reasons[0].0, ExecutionProvider::Cuda);
        }
        other => panic!("expected AcceleratorRequired, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("cuda:") && msg.contains("registration failed"),
        "{msg}"
    );
}

#[test]
fn runtime_reports_its_library_and_refuses_another() {
    if !util::runtime("runtime_reports_its_library_and_refuses_another") {
        return;
    }
    let info = init_runtime(None, Default::default()).unwrap();
    assert!(info.path.is_file(), "{:?}", info.path);
    assert!(
        info.version.starts_with("1."),
        "{} / {}",
        info.version,
        info.build_info
    );
    let bogus = util::root().join("no/such/libonnxruntime.so");
    let e = init_runtime(Some(&bogus), Default::default()).unwrap_err();
    assert!(matches!(e, ModelError::RuntimeInit { .. }), "{e}");
    assert!(e.to_string().contains("no/such/libonnxruntime.so"), "{e}");
    // The loaded library itself is accepted again.
    assert_eq!(
        init_runtime(Some(&info.path), Default::default()).unwrap(),
        info
    );
}

#[test]
fn bogus_configured_library_is_named() {
    use s2edge::model::{resolve_library, LibrarySearch};
    let bogus = util::root().join("not-a-dir/libonnxruntime.so");
    let mut search = LibrarySearch::from_process(Some(&bogus));
    search.python_packages = Box::new(Vec::new);
    let e = resolve_library(&search).unwrap_err();
    assert!(matches!(e, ModelError::RuntimeMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("not-a-dir/libonnxruntime.so"), "{msg}");
    assert!(msg.contains("scripts/setup.sh"), "{msg}");
}

#[test]
fn worker_pool_answers_every_request_and_joins() {
    if !util::runtime("worker_pool_answers_every_request_and_joins") {
        return;
    }
    let dir = util::fixtures().join("tiny-dsen2-2x/1");
    let mut direct = load(&dir, &cpu()).unwrap();
    let loader_dir = dir.clone();
    let pool = InferencePool::spawn(2, move || load(&loader_dir, &cpu()), 2).unwrap();
    assert_eq!(pool.workers(), 2);
    assert_eq!(pool.label(), "tiny-dsen2-2x@1");
    assert_eq!(pool.provider().used, ExecutionProvider::Cpu);
    let batch = |i: usize| {
        vec![
            ("x10".to_string(), pattern(1, 4, 16, 16, i as f32)),
            ("x20".to_string(), pattern(1, 6, 16, 16, i as f32 * 0.3)),
        ]
    };
    let replies: Vec<_> = (0..8).map(|i| pool.submit(batch(i)).unwrap()).collect();
    for (i, reply) in replies.into_iter().enumerate() {
        let got = reply.recv().unwrap().unwrap();
        let want = direct.run(batch(i)).unwrap();
        assert_eq!(output(&got, "y"), output(&want, "y"), "request {i}");
    }
    // A bad request is answered with an error and the pool keeps serving.
    let bad = vec![("x10".to_string(), pattern(1, 3, 16, 16, 0.0))];
    let e = pool.run(bad).unwrap_err();
    assert!(matches!(e, ModelError::Inference { .. }), "{e}");
    assert!(pool.run(batch(0)).is_ok());
    drop(pool); // joins both workers; hangs (and the test times out) if they do not stop
}

#[test]
fn worker_pool_reports_load_failures_and_panics() {
    let dir = util::fixtures().join("broken-sha/1");
    let e = InferencePool::spawn(2, move || load(&dir, &cpu()), 1)
        .err()
        .expect("a pool whose model is refused must not start");
    assert!(matches!(e, ModelError::ShaMismatch { .. }), "{e}");
    let e = InferencePool::spawn(
        1,
        || -> Result<s2edge::model::LoadedModel, ModelError> { panic!("loader exploded") },
        1,
    )
    .err()
    .expect("a panicking loader must not start a pool");
    assert!(e.to_string().contains("loader exploded"), "{e}");
}

#[test]
fn model_refs_in_config_syntax() {
    let r: ModelRef = "dsen2-2x@1".parse().unwrap();
    let reg = Registry::new(shipped());
    assert_eq!(reg.resolve(&r).unwrap().dir, shipped().join("dsen2-2x/1"));
}

#[test]
fn committed_models_match_the_generator() {
    // The fixtures and shipped models are regenerable: rerunning the documented generator
    // reproduces every committed byte.
    let Some(python) = util::tool("python", "committed_models_match_the_generator") else {
        return;
    };
    let ok = std::process::Command::new(python)
        .arg("-c")
        .arg("import onnx, numpy")
        .status()
        .unwrap()
        .success();
    if !ok {
        eprintln!("SKIP committed_models_match_the_generator: onnx/numpy not installed (scripts/setup.sh)");
        return;
    }
    let out = std::process::Command::new(util::tool("python", "gen").unwrap())
        .arg(util::root().join("scripts/gen_models.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen_models.py --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
