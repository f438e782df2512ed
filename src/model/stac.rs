//! A model manifest as a STAC Item with the Machine Learning Model extension (MLM
//! v1.3.0), as `s2edge models stac NAME[@VERSION]` prints it and as products link to it.
//!
//! What the Item records, from `model.toml`:
//! - `mlm:input`: one entry per graph input, with its bands, shape `[-1, C, -1, -1]`
//!   (`batch, channel, height, width`, float32), one `z-score` `value_scaling` per
//!   channel (mean/std on harmonised DN), the band grid under `s2edge:grid` and the
//!   upsampling kernel as `resize_type`;
//! - `mlm:output`: super-resolution outputs with their bands and grid, or the classifier's
//!   classes (`classification:classes`) with their thresholds (`s2edge:thresholds`);
//! - `mlm:framework = "ONNX"`, `mlm:accelerator` from the first configured execution
//!   provider (`cuda` for TensorRT and CUDA, `amd64` for CPU), not constrained: the same
//!   graph runs on every provider;
//! - training metadata: `mlm:pretrained`, `mlm:hyperparameters` and `s2edge:training`
//!   (status, data, steps, ranks, metrics, notes);
//! - the `model.onnx` asset (role `mlm:model`) with its sha256 and the `eo:bands` the
//!   inputs and outputs name.
//!
//! A model Item has no footprint: `geometry` is null and there is no `bbox`, as STAC
//! allows. Its `datetime` is the modification time of `model.toml`.
//!
//! Products find the model Items beside them: `<out>/models/<name>-v<version>.json`
//! ([`MODELS_DIR`], [`item_file`]), linked from each `item.json` with `rel = "derived_from"`
//! ([`product_link`]).

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::manifest::{ModelSpec, Task, TrainingStatus};
use super::{ExecutionProvider, ModelError};
use crate::granule::Band;

/// Schema URL of the MLM extension written.
pub const MLM_EXT: &str = "https://stac-extensions.github.io/mlm/v1.3.0/schema.json";
/// Schema URL of the eo extension (band descriptions the MLM inputs refer to).
pub const EO_EXT: &str = "https://stac-extensions.github.io/eo/v1.1.0/schema.json";
/// The directory, beside the product directories, that holds the model Items.
pub const MODELS_DIR: &str = "models";

/// The id of the model Item of `name` version `version`.
pub fn item_id(name: &str, version: u32) -> String {
    format!("{name}-v{version}")
}

/// The model Item's file name under [`MODELS_DIR`].
pub fn item_file(name: &str, version: u32) -> String {
    format!("{}.json", item_id(name, version))
}

/// The link a product's `item.json` carries to a model Item it used (relative to the
/// product directory `<out>/<id>/`).
pub fn product_link(name: &str, version: u32) -> crate::product::stac::Link {
    crate::product::stac::Link {
        rel: "derived_from".into(),
        href: format!("../{MODELS_DIR}/{}", item_file(name, version)),
        media_type: Some("application/json".into()),
        title: Some(format!("model {name}@{version} (STAC MLM Item)")),
    }
}

/// The eo extension's common name of a Sentinel-2 band.
pub fn common_name(band: Band) -> &'static str {
    match band {
        Band::B01 => "coastal",
        Band::B02 => "blue",
        Band::B03 => "green",
        Band::B04 => "red",
        Band::B05 | Band::B06 | Band::B07 => "rededge",
        Band::B08 => "nir",
        Band::B8A => "nir08",
        Band::B09 => "nir09",
        Band::B10 => "cirrus",
        Band::B11 => "swir16",
        Band::B12 => "swir22",
    }
}

/// The MLM accelerator name of the first provider in `providers` (`amd64` when empty).
pub fn accelerator(providers: &[ExecutionProvider]) -> &'static str {
    match providers.first() {
        Some(ExecutionProvider::TensorRt | ExecutionProvider::Cuda) => "cuda",
        Some(ExecutionProvider::Cpu) | None => "amd64",
    }
}

/// What the Item says about one model version besides its manifest.
#[derive(Debug, Clone)]
pub struct ModelFacts<'a> {
    /// The manifest.
    pub spec: &'a ModelSpec,
    /// The verified sha256 of `model.onnx`.
    pub sha256: &'a str,
    /// Where `model.onnx` is (the asset href).
    pub onnx_href: String,
    /// Size of `model.onnx` in bytes, when known.
    pub size: Option<u64>,
    /// Where the manifest's int8 graph is (`[precision.int8]`), when it ships one.
    pub int8_href: Option<String>,
    /// The configured execution providers, in order.
    pub providers: &'a [ExecutionProvider],
    /// The Item's `datetime`.
    pub datetime: DateTime<Utc>,
}

impl<'a> ModelFacts<'a> {
    /// The facts of the version in `dir` (`model.toml` + `model.onnx`), with `spec` and
    /// `sha256` as the registry resolved them.
    pub fn from_dir(
        spec: &'a ModelSpec,
        sha256: &'a str,
        dir: &Path,
        providers: &'a [ExecutionProvider],
    ) -> Self {
        let onnx = dir.join("model.onnx");
        let onnx = std::path::absolute(&onnx).unwrap_or(onnx);
        let datetime = std::fs::metadata(dir.join("model.toml"))
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now());
        let int8_href = spec.precision.int8.as_ref().map(|v| {
            let p = dir.join(&v.onnx);
            std::path::absolute(&p)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        });
        ModelFacts {
            spec,
            sha256,
            int8_href,
            size: std::fs::metadata(&onnx).ok().map(|m| m.len()),
            onnx_href: onnx.to_string_lossy().into_owned(),
            providers,
            datetime,
        }
    }
}

fn toml_to_json(t: &toml::Table) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The MLM Item of a model version (see the module docs).
pub fn model_item(f: &ModelFacts<'_>) -> Value {
    let spec = f.spec;
    let task = match spec.task {
        Task::Superres => "super-resolution",
        Task::Classify => "classification",
    };
    let mut channel = 0usize;
    let mut all_bands: Vec<Band> = Vec::new();
    let inputs: Vec<Value> = spec
        .inputs
        .iter()
        .map(|(name, input)| {
            let n = input.bands.len();
            let mean = spec
                .normalisation
                .mean
                .get(channel..channel + n)
                .unwrap_or(&[]);
            let std = spec
                .normalisation
                .std
                .get(channel..channel + n)
                .unwrap_or(&[]);
            channel += n;
            all_bands.extend(input.bands.iter().copied());
            let resize = match input.upsample {
                Some(crate::raster::resample::Kernel::Bilinear) => json!("interpolation-linear"),
                Some(crate::raster::resample::Kernel::Bicubic) => json!("interpolation-cubic"),
                None => Value::Null,
            };
            json!({
                "name": name,
                "bands": input.bands.iter().map(|b| b.name()).collect::<Vec<_>>(),
                "input": {
                    "shape": [-1, n, -1, -1],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "value_scaling": mean.iter().zip(std).map(|(m, s)| json!({
                    "type": "z-score", "mean": m, "stddev": s,
                })).collect::<Vec<_>>(),
                "resize_type": resize,
                "s2edge:grid": input.grid,
                "s2edge:units": "harmonised DN (reflectance x 10000)",
            })
        })
        .collect();
    let outputs: Vec<Value> = spec
        .outputs
        .iter()
        .map(|(name, output)| match (&spec.classify, spec.task) {
            (Some(c), Task::Classify) => {
                let classes: Vec<Value> = c
                    .classes
                    .iter()
                    .enumerate()
                    .map(|(k, class)| {
                        json!({
                            "value": k,
                            "name": class,
                            "description": class,
                            "color_hint": crate::product::classmap::class_rgb(class)
                                .iter()
                                .map(|v| format!("{v:02X}"))
                                .collect::<String>(),
                        })
                    })
                    .collect();
                json!({
                    "name": name,
                    "tasks": [task],
                    "result": {
                        "shape": [-1, c.classes.len()],
                        "dim_order": ["batch", "class"],
                        "data_type": "float32",
                    },
                    "classification:classes": classes,
                    "s2edge:thresholds": c.thresholds,
                    "s2edge:output_kind": "probabilities (the sigmoid is inside the graph)",
                    "s2edge:patch_px": c.patch,
                })
            }
            _ => {
                all_bands.extend(output.bands.iter().copied());
                json!({
                    "name": name,
                    "tasks": [task],
                    "result": {
                        "shape": [-1, output.bands.len(), -1, -1],
                        "dim_order": ["batch", "channel", "height", "width"],
                        "data_type": "float32",
                    },
                    "s2edge:bands": output.bands.iter().map(|b| b.name()).collect::<Vec<_>>(),
                    "s2edge:grid": output.grid,
                    "s2edge:scale": spec.superres.as_ref().map(|s| s.scale),
                    "s2edge:receptive_radius": spec.superres.as_ref().and_then(|s| s.receptive_radius),
                    "s2edge:units": "same as the input of the same band (de-normalised with its mean/std)",
                })
            }
        })
        .collect();
    all_bands.sort();
    all_bands.dedup();
    let eo_bands: Vec<Value> = all_bands
        .iter()
        .map(|b| {
            json!({
                "name": b.name(),
                "common_name": common_name(*b),
                "center_wavelength": f64::from(b.centre_wavelength_nm()) / 1000.0,
            })
        })
        .collect();
    let architecture = match spec.task {
        Task::Classify if spec.name.contains("resnet50") => "ResNet-50",
        Task::Classify => "CNN classifier",
        Task::Superres if spec.name.starts_with("srgan") => "GAN generator (DSen2-like)",
        Task::Superres => "DSen2",
    };
    let t = &spec.training;
    let mut hyper = Map::new();
    hyper.insert("steps".into(), json!(t.steps));
    hyper.insert("ranks".into(), json!(t.ranks));
    let mut properties = Map::new();
    let stamp = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Secs, true);
    properties.insert("datetime".into(), json!(stamp(f.datetime)));
    properties.insert(
        "description".into(),
        json!(format!(
            "s2edge {task} model {}, trained on {:?} products",
            spec.label(),
            spec.product_level
        )),
    );
    properties.insert("mlm:name".into(), json!(spec.name));
    properties.insert("mlm:architecture".into(), json!(architecture));
    properties.insert("mlm:tasks".into(), json!([task]));
    properties.insert("mlm:framework".into(), json!("ONNX"));
    properties.insert("mlm:accelerator".into(), json!(accelerator(f.providers)));
    properties.insert("mlm:accelerator_constrained".into(), json!(false));
    properties.insert(
        "mlm:accelerator_summary".into(),
        json!(format!(
            "ONNX Runtime; configured execution providers: {}",
            f.providers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    properties.insert("mlm:pretrained".into(), json!(false));
    properties.insert("mlm:pretrained_source".into(), Value::Null);
    properties.insert("mlm:input".into(), Value::Array(inputs));
    properties.insert("mlm:output".into(), Value::Array(outputs));
    properties.insert("mlm:hyperparameters".into(), Value::Object(hyper));
    properties.insert(
        "s2edge:training".into(),
        json!({
            "status": t.status,
            "trained": t.status == TrainingStatus::Trained,
            "data": t.data,
            "steps": t.steps,
            "ranks": t.ranks,
            "metrics": toml_to_json(&t.metrics),
            "notes": t.notes,
        }),
    );
    properties.insert("s2edge:version".into(), json!(spec.version));
    properties.insert("s2edge:product_level".into(), json!(spec.product_level));
    let mut asset = json!({
        "href": f.onnx_href,
        "type": "application/octet-stream; application=onnx",
        "title": format!("{} ONNX graph", spec.label()),
        "roles": ["mlm:model", "data"],
        "eo:bands": eo_bands,
        "s2edge:sha256": f.sha256,
    });
    if let (Some(size), Some(obj)) = (f.size, asset.as_object_mut()) {
        obj.insert("s2edge:size_bytes".into(), json!(size));
    }
    let mut assets = serde_json::Map::new();
    assets.insert("model".into(), asset);
    if let (Some(v), Some(href)) = (&spec.precision.int8, &f.int8_href) {
        // Not a second `mlm:model`: the same model, another graph of it, used only with
        // `[runtime] precision = "int8"` and within the tolerance.
        assets.insert(
            "model_int8".into(),
            json!({
                "href": href,
                "type": "application/octet-stream; application=onnx",
                "title": format!("{} int8 graph ([runtime] precision = \"int8\")", spec.label()),
                "roles": ["data"],
                "s2edge:sha256": v.onnx_sha256,
                "s2edge:precision": "int8",
                "s2edge:cost_db": v.cost_db,
                "s2edge:method": v.method,
                "s2edge:metrics": toml_to_json(&v.metrics),
            }),
        );
    }
    json!({
        "type": "Feature",
        "stac_version": crate::product::stac::STAC_VERSION,
        "stac_extensions": [MLM_EXT, EO_EXT],
        "id": item_id(&spec.name, spec.version),
        "geometry": Value::Null,
        "properties": properties,
        "links": [],
        "assets": assets,
    })
}

/// Writes `item` as `<out>/models/<name>-v<version>.json`, atomically (temp file, fsync,
/// rename), so that concurrent writers of the same model Item never leave a torn file.
///
/// # Errors
/// [`ModelError::Io`] with the path.
pub fn write_model_item(out: &Path, item: &Value) -> Result<std::path::PathBuf, ModelError> {
    use std::io::Write;
    let dir = out.join(MODELS_DIR);
    let io = |path: &Path, e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let id = item.get("id").and_then(Value::as_str).unwrap_or("model");
    let path = dir.join(format!("{id}.json"));
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| io(&dir, e))?;
    let text = serde_json::to_string_pretty(item).unwrap_or_else(|_| "{}".into());
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io(&path, e))?;
    tmp.persist(&path).map_err(|e| io(&path, e.error))?;
    Ok(path)
}

/// Writes the MLM Item of the version in `dir` (manifest `spec`, verified `sha256`) into
/// `<out>/models/`, where the products' `derived_from` links point. The CLI calls it for
/// the models a run used, the daemon for every model set it loads.
///
/// # Errors
/// As [`write_model_item`].
pub fn publish_model_item(
    out: &Path,
    spec: &ModelSpec,
    sha256: &str,
    dir: &Path,
    providers: &[ExecutionProvider],
) -> Result<std::path::PathBuf, ModelError> {
    let facts = ModelFacts::from_dir(spec, sha256, dir, providers);
    write_model_item(out, &model_item(&facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_links_and_accelerators() {
        assert_eq!(item_id("dsen2-2x", 2), "dsen2-2x-v2");
        let l = product_link("dsen2-2x", 2);
        assert_eq!(l.href, "../models/dsen2-2x-v2.json");
        assert_eq!(l.rel, "derived_from");
        assert_eq!(accelerator(&[ExecutionProvider::Cuda]), "cuda");
        assert_eq!(accelerator(&[]), "amd64");
        assert_eq!(common_name(Band::B8A), "nir08");
    }
}
