//! `[runtime] precision`: the shipped models' int8 graphs run where their measured cost is
//! within the tolerance, the float graphs everywhere else, and the provenance says which
//! graph ran and why (`model::precision`).

use std::ffi::OsStr;
use std::path::Path;

use s2edge::granule::Band;
use s2edge::model::precision::Precision;
use s2edge::model::{ModelRef, ProviderOptions, Registry};
use serde_json::Value;

use crate::pipeline::{envi_u16, read_json, s2edge};
use crate::util;

/// Runs `process --only superres` on `crop` with the shipped models and `runtime` keys;
/// returns the product directory.
fn run(crop: &Path, dir: &Path, runtime: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("s2edge.toml");
    std::fs::write(
        &cfg,
        format!("[runtime]\nintra_threads = 2\n{runtime}\n[pipeline]\nclassify = false\n"),
    )
    .unwrap();
    let out = dir.join("out");
    let models = util::root().join("models");
    let r = s2edge(
        &[
            OsStr::new("process"),
            crop.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--models"),
            models.as_os_str(),
            OsStr::new("--config"),
            cfg.as_os_str(),
            OsStr::new("--only"),
            OsStr::new("superres"),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{runtime}: {}", r.context());
    out.join(crop.file_name().unwrap())
}

/// The provenance entry of model `name`.
fn entry<'a>(item: &'a Value, name: &str) -> &'a Value {
    item["properties"]["s2edge:models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the provenance"))
}

#[test]
fn int8_graphs_run_within_the_tolerance_and_float32_otherwise() {
    const TEST: &str = "int8_graphs_run_within_the_tolerance_and_float32_otherwise";
    let Some(data) = util::shared_data(TEST) else {
        return;
    };
    if !util::runtime(TEST) || util::tool("gdal_translate", TEST).is_none() {
        return;
    }
    let crop = data.join("s2-crops/S2A_33UUB_20170527_0_L1C");
    let registry = Registry::new(util::root().join("models"));
    let mut models = Vec::new();
    for name in ["dsen2-2x", "dsen2-6x"] {
        let spec = registry
            .resolve(&name.parse::<ModelRef>().unwrap())
            .unwrap()
            .spec;
        let v = spec
            .precision
            .int8
            .clone()
            .unwrap_or_else(|| panic!("{name}: the shipped version has no int8 graph"));
        models.push((name, spec, v));
    }
    let tmp = util::tempdir();
    let bands = |product: &Path| -> Vec<Vec<u16>> {
        (1..=Band::PRODUCT.len())
            .map(|i| envi_u16(&product.join("superres.tif"), i, TEST).unwrap())
            .collect()
    };
    let float = run(&crop, &tmp.path().join("float"), "");
    let float_px = bands(&float);
    let float_item = read_json(&float.join("item.json"));
    for (name, spec, _) in &models {
        let e = entry(&float_item, name);
        assert_eq!(e["precision"], "float32");
        assert_eq!(e["graph_sha256"].as_str(), Some(spec.onnx_sha256.as_str()));
    }

    // A tolerance every shipped int8 graph meets, then none with a positive cost.
    for (tolerance, label) in [(10.0, "loose"), (0.0, "strict")] {
        let product = run(
            &crop,
            &tmp.path().join(label),
            &format!("precision = \"int8\"\nprecision_tolerance_db = {tolerance}"),
        );
        let item = read_json(&product.join("item.json"));
        let warnings = item["properties"]["s2edge:warnings"].to_string();
        let px = bands(&product);
        for (name, spec, v) in &models {
            let e = entry(&item, name);
            let int8 = v.cost_db <= tolerance;
            let expected = if int8 {
                (Precision::Int8.to_string(), &v.onnx_sha256)
            } else {
                (Precision::Float32.to_string(), &spec.onnx_sha256)
            };
            assert_eq!(
                (
                    e["precision"].as_str().unwrap(),
                    e["graph_sha256"].as_str().unwrap()
                ),
                (expected.0.as_str(), expected.1.as_str()),
                "{label}: {name} (cost {} dB)",
                v.cost_db
            );
            assert_eq!(
                e["sha256"].as_str(),
                Some(spec.onnx_sha256.as_str()),
                "the version's identity"
            );
            assert_eq!(
                warnings.contains(&format!(
                    "{}@{}: its int8 graph costs",
                    spec.name, spec.version
                )),
                !int8,
                "{label}: {name}: {warnings}"
            );
            for ob in spec.outputs.iter().flat_map(|(_, o)| o.bands.iter()) {
                let i = Band::PRODUCT.iter().position(|b| b == ob).unwrap();
                let (a, b) = (&float_px[i], &px[i]);
                if !int8 {
                    assert!(
                        a == b,
                        "{label}: {name} {ob}: the float graph changed the band"
                    );
                    continue;
                }
                // Another graph: not the same pixels, but the same image within the
                // quantisation error (float − int8 moved ~20-75 DN RMS in the probe).
                assert!(a != b, "{label}: {name} {ob}: identical to the float graph");
                let n = a.len() as f64;
                let mse = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                    .sum::<f64>()
                    / n;
                let mean = a.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
                assert!(
                    mse.sqrt() < 0.1 * mean,
                    "{label}: {name} {ob}: int8 moves the band {:.1} DN RMS (mean {mean:.0})",
                    mse.sqrt()
                );
            }
        }
        for (i, b) in Band::PRODUCT.iter().enumerate() {
            if b.resolution().factor() == 1 {
                assert!(
                    float_px[i] == px[i],
                    "{label}: {b} is a 10 m band, passed through"
                );
            }
        }
    }
}

#[test]
fn a_changed_int8_graph_fails_its_digest_and_the_float_graph_runs() {
    const TEST: &str = "a_changed_int8_graph_fails_its_digest_and_the_float_graph_runs";
    let tmp = util::tempdir();
    let src = Registry::new(util::root().join("models"))
        .resolve(&"dsen2-2x".parse::<ModelRef>().unwrap())
        .unwrap();
    let Some(v) = src.spec.precision.int8.clone() else {
        panic!("{TEST}: the shipped dsen2-2x has no int8 graph");
    };
    let dir = tmp
        .path()
        .join("dsen2-2x")
        .join(src.spec.version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.onnx", "model.toml", v.onnx.as_str()] {
        std::fs::copy(src.dir.join(f), dir.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(dir.join(&v.onnx)).unwrap();
    bytes.push(0);
    std::fs::write(dir.join(&v.onnx), bytes).unwrap();
    let opts = ProviderOptions {
        precision: Precision::Int8,
        precision_tolerance_db: 10.0,
        ..ProviderOptions::default()
    };
    // The version stays: its float graph runs, and the note says why.
    if !util::runtime(TEST) {
        return;
    }
    let m = s2edge::model::load(&dir, &opts).unwrap();
    assert_eq!(m.graph.precision, Precision::Float32);
    assert_eq!(m.graph.sha256, src.spec.onnx_sha256);
    let note = m.graph.note.clone().unwrap_or_default();
    assert!(note.contains(&v.onnx) && note.contains("sha256"), "{note}");
    // A `model.onnx` that fails its check is still refused.
    let mut bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    bytes.push(0);
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let err = s2edge::model::load(&dir, &opts).unwrap_err().to_string();
    assert!(
        err.contains("model.onnx") && err.contains("sha256"),
        "{err}"
    );
}

/// `s2edge models list` shows each shipped int8 graph with its cost, and one that fails its
/// digest as unusable, naming the file.
#[test]
fn models_list_shows_the_int8_graphs_and_a_broken_one() {
    let tmp = util::tempdir();
    let root = util::root().join("models");
    let list = |models: &Path| -> Value {
        let r = s2edge(
            &[
                OsStr::new("models"),
                OsStr::new("list"),
                OsStr::new("--json"),
                OsStr::new("--models"),
                models.as_os_str(),
            ],
            &[],
        );
        assert_eq!(r.code, Some(0), "{}", r.context());
        serde_json::from_str(&r.stdout).unwrap()
    };
    let find = |v: &Value, name: &str, version: u64| -> Value {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name && e["version"] == version)
            .unwrap_or_else(|| panic!("{name}@{version} not listed"))
            .clone()
    };
    let shipped = list(&root);
    let src = Registry::new(&root)
        .resolve(&"dsen2-2x@5".parse::<ModelRef>().unwrap())
        .unwrap();
    let v = src.spec.precision.int8.clone().unwrap();
    let e = find(&shipped, "dsen2-2x", 5);
    assert_eq!(e["int8"]["cost_db"].as_f64(), Some(v.cost_db));
    assert_eq!(e["int8"]["usable"], true);
    assert!(find(&shipped, "dsen2-2x", 4).get("int8").is_none());
    let dir = tmp.path().join("dsen2-2x/5");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.onnx", "model.toml", v.onnx.as_str()] {
        std::fs::copy(src.dir.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join(&v.onnx), b"not a graph").unwrap();
    let e = find(&list(tmp.path()), "dsen2-2x", 5);
    assert_eq!(e["usable"], true, "the float graph is intact");
    assert_eq!(e["int8"]["usable"], false);
    assert!(e["int8"]["problem"].as_str().unwrap().contains(&v.onnx));
}
