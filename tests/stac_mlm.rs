//! STAC for models (issue 10 §3): `s2edge models stac` writes MLM Items; products link
//! to the model Items they used; product Items, model Items and batch collections
//! validate against the JSON Schemas committed in `tests/fixtures/schemas/` (offline,
//! Python `jsonschema`; see SOURCES.md there).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{run, sample, tiny_config};
use crate::util;

/// Schemas that are referenced but not committed (SOURCES.md); `validate` asserts the
/// validator reports no others.
const UNCHECKED: &[&str] = &[
    "https://geojson.org/schema/Feature.json",
    "https://schemas.stacspec.org/v1.0.0/collection-spec/json-schema/collection.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
];

/// Runs `validate.py kind files…`; `None` (after SKIP) without Python `jsonschema`.
/// Returns whether all were valid, with the output.
pub fn validate(kind: &str, files: &[PathBuf], test: &str) -> Option<(bool, String)> {
    let python = util::tool("python", test)?;
    let has = Command::new(&python)
        .args(["-c", "import jsonschema, referencing"])
        .status()
        .unwrap()
        .success();
    if !has {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: Python jsonschema is required in CI (run scripts/setup.sh)");
        }
        eprintln!("SKIP {test}: Python jsonschema not installed (run scripts/setup.sh)");
        return None;
    }
    let out = Command::new(&python)
        .arg(util::root().join("tests/fixtures/schemas/validate.py"))
        .arg(kind)
        .args(files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in stderr.lines() {
        if let Some(url) = line.strip_prefix("unchecked: ") {
            assert!(
                UNCHECKED.contains(&url),
                "an unexpected schema went unchecked: {url}"
            );
        } else {
            panic!("validate.py: {stderr}");
        }
    }
    Some((
        out.status.success(),
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
    ))
}

fn models_stac(model: &str, models: &Path, out: &Path) -> serde_json::Value {
    let r = run(
        &[
            OsStr::new("models"),
            OsStr::new("stac"),
            OsStr::new(model),
            OsStr::new("--models"),
            models.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn shipped_models_export_valid_mlm_items_that_match_their_manifests() {
    let tmp = util::tempdir();
    let models = util::root().join("models");
    let mut files = Vec::new();
    for (name, version) in [
        ("resnet50-ben19", "2"),
        ("ben19-bandstats", "1"),
        ("dsen2-2x", "2"),
        ("dsen2-6x", "2"),
        ("srgan-2x", "2"),
        ("dsen2-2x", "1"),
        ("dsen2-2x", "5"),
    ] {
        let label = format!("{name}@{version}");
        let path = tmp.path().join(format!("{name}-{version}.json"));
        let item = models_stac(&label, &models, &path);
        let spec =
            s2edge::model::ModelSpec::load(&models.join(name).join(version).join("model.toml"))
                .unwrap();
        let p = &item["properties"];
        assert_eq!(item["id"], format!("{name}-v{version}"));
        assert_eq!(item["geometry"], serde_json::Value::Null);
        assert_eq!(p["mlm:framework"], "ONNX");
        assert_eq!(p["mlm:name"], name);
        assert_eq!(p["mlm:accelerator"], "amd64");
        assert_eq!(
            p["s2edge:training"]["status"],
            spec.training.status.to_string()
        );
        assert_eq!(p["s2edge:training"]["steps"], spec.training.steps);
        // Inputs: the manifest's bands in order, one z-score scaling per channel.
        let inputs = p["mlm:input"].as_array().unwrap();
        assert_eq!(inputs.len(), spec.inputs.len());
        let mut channel = 0;
        for ((iname, ispec), j) in spec.inputs.iter().zip(inputs) {
            assert_eq!(j["name"], iname);
            let bands: Vec<&str> = ispec.bands.iter().map(|b| b.name()).collect();
            assert_eq!(j["bands"], serde_json::json!(bands));
            let scaling = j["value_scaling"].as_array().unwrap();
            assert_eq!(scaling.len(), bands.len());
            for s in scaling {
                assert_eq!(s["type"], "z-score");
                assert_eq!(
                    s["mean"].as_f64().unwrap() as f32,
                    spec.normalisation.mean[channel]
                );
                assert_eq!(
                    s["stddev"].as_f64().unwrap() as f32,
                    spec.normalisation.std[channel]
                );
                channel += 1;
            }
        }
        let outputs = p["mlm:output"].as_array().unwrap();
        match &spec.classify {
            Some(c) => {
                let classes = outputs[0]["classification:classes"].as_array().unwrap();
                assert_eq!(classes.len(), 19);
                assert_eq!(classes[9]["name"], "Coniferous forest");
                // The manifest's f32 thresholds, whatever f64 spelling the JSON took.
                let t: Vec<f32> = outputs[0]["s2edge:thresholds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert_eq!(t, c.thresholds);
                assert_eq!(outputs[0]["tasks"], serde_json::json!(["classification"]));
            }
            None => {
                let (_, o) = spec.outputs.iter().next().unwrap();
                let bands: Vec<&str> = o.bands.iter().map(|b| b.name()).collect();
                assert_eq!(outputs[0]["s2edge:bands"], serde_json::json!(bands));
                assert_eq!(outputs[0]["tasks"], serde_json::json!(["super-resolution"]));
            }
        }
        let asset = &item["assets"]["model"];
        assert!(asset["roles"]
            .as_array()
            .unwrap()
            .contains(&"mlm:model".into()));
        assert!(Path::new(asset["href"].as_str().unwrap()).is_file());
        // The int8 graph, where the manifest ships one, with its digest and cost.
        let int8 = &item["assets"]["model_int8"];
        match &spec.precision.int8 {
            Some(v) => {
                assert_eq!(int8["s2edge:sha256"].as_str(), Some(v.onnx_sha256.as_str()));
                assert_eq!(int8["s2edge:cost_db"].as_f64(), Some(v.cost_db));
                assert_eq!(
                    int8["roles"],
                    serde_json::json!(["data"]),
                    "one mlm:model asset"
                );
                let href = int8["href"].as_str().unwrap();
                assert!(href.ends_with(&v.onnx) && Path::new(href).is_file());
            }
            None => assert!(int8.is_null(), "{label}: an int8 asset without a graph"),
        }
        files.push(path);
    }
    let Some((ok, out)) = validate(
        "item",
        &files,
        "shipped_models_export_valid_mlm_items_that_match_their_manifests",
    ) else {
        return;
    };
    assert!(ok, "{out}");

    // The validator can fail: an Item without inputs, or with a bad framework, does.
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    bad["properties"]
        .as_object_mut()
        .unwrap()
        .remove("mlm:input");
    let bad1 = tmp.path().join("bad1.json");
    std::fs::write(&bad1, bad.to_string()).unwrap();
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    bad["properties"]["mlm:tasks"] = serde_json::json!(["upscaling"]);
    let bad2 = tmp.path().join("bad2.json");
    std::fs::write(&bad2, bad.to_string()).unwrap();
    for f in [bad1, bad2] {
        let (ok, out) = validate("item", std::slice::from_ref(&f), "negative").unwrap();
        assert!(!ok, "{} should be invalid: {out}", f.display());
    }
}

#[test]
fn an_unknown_model_is_a_clear_error() {
    let r = run(
        &[
            OsStr::new("models"),
            OsStr::new("stac"),
            OsStr::new("no-such-model"),
            OsStr::new("--models"),
            util::fixtures().as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(1), "{}", r.context());
    assert!(
        r.stderr.contains("no-such-model not found"),
        "{}",
        r.context()
    );
}

#[test]
fn product_items_link_to_valid_model_items_and_validate() {
    if !util::runtime("product_items_link_to_valid_model_items_and_validate") {
        return;
    }
    let tmp = util::tempdir();
    let cfg = tiny_config(tmp.path(), "[pipeline]\nsr_tile = 300\n");
    let out = tmp.path().join("out");
    let fixtures = util::fixtures();
    let r = run(
        &[
            OsStr::new("process"),
            sample().as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--models"),
            fixtures.as_os_str(),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    let product = out.join(s2edge::sample::SAMPLE_ID);
    let item: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(product.join("item.json")).unwrap()).unwrap();
    let mut linked: Vec<PathBuf> = item["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "derived_from")
        .map(|l| product.join(l["href"].as_str().unwrap()))
        .collect();
    linked.sort();
    let names: Vec<String> = linked
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "tiny-ben19-v1.json",
            "tiny-dsen2-2x-v1.json",
            "tiny-dsen2-6x-v1.json"
        ]
    );
    for l in &linked {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(l).unwrap()).unwrap();
        let sha = m["assets"]["model"]["s2edge:sha256"].as_str().unwrap();
        let used = item["properties"]["s2edge:models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| {
                u["sha256"] == sha
                    && format!("{}-v{}.json", u["name"].as_str().unwrap(), u["version"])
                        == l.file_name().unwrap().to_string_lossy()
            });
        assert!(used, "{} describes a model the product used", l.display());
    }
    let test = "product_items_link_to_valid_model_items_and_validate";
    let Some((ok, outp)) = validate("item", &[product.join("item.json")], test) else {
        return;
    };
    assert!(ok, "{outp}");
    let (ok, outp) = validate("item", &linked, test).unwrap();
    assert!(ok, "{outp}");
}
