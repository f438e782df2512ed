//! Reduced-precision graphs: `[runtime] precision` and the manifest's `[precision.int8]`.
//!
//! A model version may ship a second graph of the same model, quantised to int8
//! (`scripts/quantise_int8.py`), beside `model.onnx`. Its manifest section
//! ([`GraphVariant`]) names the file, its sha256, and what it costs: the drop in SRE
//! (dB) against the float graph, both scored by the project's own evaluator on the same
//! held-out scene (`s2edge-train variant`), with the variant's full metrics.
//!
//! [`choose`] decides which graph a session loads. With `precision = "float32"` (the
//! default) it is always `model.onnx`. With `"int8"` it is the int8 graph when the model
//! has one, its measured cost is at most `precision_tolerance_db`, and every listed
//! execution provider is the CPU one; otherwise the float graph, with a note saying why
//! (logged, and recorded in the product's warnings). A refused variant never fails a
//! load: the float graph is always there and always correct. Nor does an int8 graph that
//! fails its digest check: the session loads the float graph of the same version and says
//! why ([`super::session::load`]); only a `model.onnx` that fails its check passes the
//! version over.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::manifest::{is_sha256_hex, ModelSpec};
use super::provider::{ExecutionProvider, ProviderOptions};
use super::registry::ONNX_FILE;

/// The numeric precision of the graph a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The trained float graph, `model.onnx`.
    #[default]
    Float32,
    /// The int8 (QDQ) graph of `[precision.int8]`, where its cost is tolerated.
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Float32 => "float32",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "float32" => Ok(Precision::Float32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision {other:?} (expected \"float32\" or \"int8\")"
            )),
        }
    }
}

/// The default `[runtime] precision_tolerance_db`: the most SRE an int8 graph may lose
/// against its float graph on the held-out scene.
pub const DEFAULT_TOLERANCE_DB: f64 = 0.25;

/// `[precision.int8]`: a reduced-precision graph of the same model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphVariant {
    /// The graph's file in the version directory (a plain `*.onnx` name, not
    /// `model.onnx`).
    pub onnx: String,
    /// Lower-case hex SHA-256 of that file.
    pub onnx_sha256: String,
    /// SRE lost against the float graph, dB (float − variant, mean over bands), on the
    /// scene of `metrics.eval_region`; negative when the variant scored better.
    pub cost_db: f64,
    /// How the graph was made (quantisation method, calibration data).
    pub method: String,
    /// The variant's own scores from the same evaluation as the float graph's
    /// `[training.metrics]` (`rmse`, `sre_db`, ..., and what was evaluated).
    #[serde(default)]
    pub metrics: toml::Table,
}

impl GraphVariant {
    /// Checks the file name, the digest and the cost.
    ///
    /// # Errors
    /// The reason, for [`super::ManifestError::Invalid`] on field `precision.int8`.
    pub fn validate(&self) -> Result<(), String> {
        let plain = !self.onnx.contains(['/', '\\']) && !self.onnx.starts_with('.');
        if !plain || !self.onnx.ends_with(".onnx") || self.onnx == ONNX_FILE {
            return Err(format!(
                "onnx = {:?} must be a plain *.onnx file name in the version directory, \
                 other than {ONNX_FILE}",
                self.onnx
            ));
        }
        if !is_sha256_hex(&self.onnx_sha256) {
            return Err("onnx_sha256 must be 64 lower-case hex digits".into());
        }
        if !self.cost_db.is_finite() {
            return Err(format!("cost_db must be finite, got {}", self.cost_db));
        }
        Ok(())
    }
}

/// The manifest's `[precision]` table: the reduced-precision graphs shipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variants {
    /// The int8 graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<GraphVariant>,
}

impl Variants {
    /// No variant shipped (the table is then left out of the manifest).
    pub fn is_empty(&self) -> bool {
        self.int8.is_none()
    }
}

/// The graph a session loads, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphChoice {
    /// The file in the version directory.
    pub file: String,
    /// Its digest from the manifest (checked on the bytes read).
    pub sha256: String,
    /// Its precision.
    pub precision: Precision,
    /// Why the precision asked for is not the one loaded; `None` when it is.
    pub note: Option<String>,
}

impl GraphChoice {
    /// `model.onnx` of `spec`, with `note` saying why when another graph was asked for.
    pub fn float32(spec: &ModelSpec, note: Option<String>) -> GraphChoice {
        GraphChoice {
            file: ONNX_FILE.to_string(),
            sha256: spec.onnx_sha256.clone(),
            precision: Precision::Float32,
            note,
        }
    }
}

/// Which graph of `spec` a session with `opts` loads (module docs).
pub fn choose(spec: &ModelSpec, opts: &ProviderOptions) -> GraphChoice {
    let float = |note| GraphChoice::float32(spec, note);
    if opts.precision == Precision::Float32 {
        return float(None);
    }
    let label = spec.label();
    let Some(v) = spec.precision.int8.as_ref() else {
        return float(Some(format!(
            "{label} ships no int8 graph; running float32"
        )));
    };
    if opts.order.iter().any(|p| *p != ExecutionProvider::Cpu) {
        return float(Some(format!(
            "{label}: int8 graphs are checked on the CPU provider only and an accelerator \
             is listed in [runtime] providers; running float32 (tensorrt_fp16 is the \
             reduced precision for TensorRT)"
        )));
    }
    // `cost_db` is finite (validated) and the tolerance is not NaN (validated, or
    // infinite from the trainer), so `>` is the exact complement of "tolerated".
    if v.cost_db > opts.precision_tolerance_db {
        return float(Some(format!(
            "{label}: its int8 graph costs {:.3} dB of SRE, above [runtime] \
             precision_tolerance_db = {}; running float32",
            v.cost_db, opts.precision_tolerance_db
        )));
    }
    GraphChoice {
        file: v.onnx.clone(),
        sha256: v.onnx_sha256.clone(),
        precision: Precision::Int8,
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(variant: Option<GraphVariant>) -> ModelSpec {
        let mut s = ModelSpec::parse(crate::model::manifest::EXAMPLE_SUPERRES).unwrap();
        s.precision.int8 = variant;
        s
    }

    fn variant(cost_db: f64) -> GraphVariant {
        GraphVariant {
            onnx: "model.int8.onnx".into(),
            onnx_sha256: "ab".repeat(32),
            cost_db,
            method: "test".into(),
            metrics: toml::Table::new(),
        }
    }

    fn opts(precision: Precision, tolerance: f64) -> ProviderOptions {
        ProviderOptions {
            precision,
            precision_tolerance_db: tolerance,
            ..ProviderOptions::default()
        }
    }

    #[test]
    fn float32_always_loads_model_onnx() {
        let c = choose(&spec(Some(variant(0.0))), &opts(Precision::Float32, 1.0));
        assert_eq!(
            (c.file.as_str(), c.precision, c.note),
            (ONNX_FILE, Precision::Float32, None)
        );
    }

    #[test]
    fn int8_loads_the_variant_within_the_tolerance_and_says_why_not_otherwise() {
        let s = spec(Some(variant(0.2)));
        let c = choose(&s, &opts(Precision::Int8, 0.25));
        assert_eq!(
            (c.file.as_str(), c.precision, &c.note),
            ("model.int8.onnx", Precision::Int8, &None)
        );
        assert_eq!(c.sha256, "ab".repeat(32));
        // Exactly at the tolerance is accepted; above it is refused.
        assert_eq!(
            choose(&s, &opts(Precision::Int8, 0.2)).precision,
            Precision::Int8
        );
        let refused = choose(&s, &opts(Precision::Int8, 0.1));
        assert_eq!(
            (refused.file.as_str(), refused.precision),
            (ONNX_FILE, Precision::Float32)
        );
        assert!(refused.note.unwrap().contains("0.200 dB"));
        let none = choose(&spec(None), &opts(Precision::Int8, 1.0));
        assert!(none.note.unwrap().contains("no int8 graph"));
        let mut gpu = opts(Precision::Int8, 1.0);
        gpu.order = vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu];
        let on_gpu = choose(&s, &gpu);
        assert_eq!(on_gpu.precision, Precision::Float32);
        assert!(on_gpu.note.unwrap().contains("CPU provider only"));
    }

    #[test]
    fn variant_validation_names_the_problem() {
        assert!(variant(0.1).validate().is_ok());
        for (onnx, what) in [
            ("model.onnx", "other than"),
            ("../x.onnx", "plain"),
            ("model.int8.bin", "plain"),
        ] {
            let mut v = variant(0.1);
            v.onnx = onnx.into();
            assert!(v.validate().unwrap_err().contains(what), "{onnx}");
        }
        let mut v = variant(f64::NAN);
        assert!(v.validate().unwrap_err().contains("finite"));
        v = variant(0.1);
        v.onnx_sha256 = "AB".repeat(32);
        assert!(v.validate().unwrap_err().contains("hex"));
        assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
        assert!("fp16".parse::<Precision>().unwrap_err().contains("fp16"));
    }
}
