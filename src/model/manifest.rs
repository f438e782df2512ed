//! `ModelSpec`: the typed `model.toml` manifest (DESIGN.md "Models", schema 1).
//!
//! A manifest says what a graph expects and produces, in domain terms: which bands each
//! graph input carries and on which grid, how inputs are normalised, and the task's
//! parameters (super-resolution scale and receptive radius; classifier classes and
//! thresholds), plus how the model was trained.
//!
//! Invariants:
//! - parsing is strict (`deny_unknown_fields` everywhere): a typo is an error, not a
//!   silently ignored key;
//! - `[inputs]` and `[outputs]` keep their document order ([`IoMap`]), because the
//!   normalisation vectors follow the inputs in order, then each input's bands in order;
//! - [`ModelSpec::validate`] checks everything that can be checked without the graph; the
//!   graph itself is checked against the manifest when a session is built.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ModelError;
use super::precision::Variants;
use crate::granule::{Band, Resolution};

/// The manifest schema this build reads.
pub const SUPPORTED_SCHEMA: u32 = 1;

/// What is wrong with a manifest.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// TOML syntax, a wrong type, a missing or unknown key.
    #[error("{0}")]
    Parse(String),
    /// A schema this build does not read.
    #[error("schema {found} is not supported (this build reads schema {SUPPORTED_SCHEMA})")]
    UnsupportedSchema {
        /// The manifest's `schema`.
        found: u32,
    },
    /// A field with an invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending key (`onnx_sha256`, `inputs.x20`, ...).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Two lists that must have the same length do not.
    #[error("{field} has {found} entries but {expected} are required ({why})")]
    Length {
        /// The offending key.
        field: String,
        /// The length it must have.
        expected: usize,
        /// Its length.
        found: usize,
        /// What fixes the required length.
        why: String,
    },
    /// A section the task needs is absent, or one it must not have is present.
    #[error("task {task}: {problem}")]
    Section {
        /// The manifest's task.
        task: Task,
        /// What is missing or extra.
        problem: String,
    },
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Super-resolution of 20 m / 60 m bands to 10 m.
    Superres,
    /// Multi-label land-cover classification of 120×120 patches.
    Classify,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Superres => "superres",
            Task::Classify => "classify",
        })
    }
}

/// The product level a model was trained on. Running on another level is allowed but
/// recorded as a provenance warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ProductLevel {
    /// Top-of-atmosphere reflectance.
    L1C,
    /// Bottom-of-atmosphere reflectance.
    L2A,
    /// Trained on both, or level-agnostic.
    #[default]
    #[serde(rename = "any")]
    Any,
}

/// The kernel that brings an input's bands to the graph's grid (DESIGN.md "Radiometry":
/// area-aligned, edge-replicated, nodata-aware): the raster module's kernel, so the
/// manifest names exactly what the pipeline runs.
pub use crate::raster::resample::Kernel as UpsampleKernel;

/// One graph input: the bands it carries, in channel order, and their grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The bands, one channel each, in this order.
    pub bands: Vec<Band>,
    /// The bands' grid: their native grid, or `10m` for a mixed set delivered on the
    /// 10 m grid (a classifier's 12 bands).
    pub grid: Resolution,
    /// How the pipeline brings coarser bands to the 10 m grid before the graph sees them;
    /// absent when no upsampling happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsample: Option<UpsampleKernel>,
}

/// One graph output.
///
/// Super-resolution outputs list their bands and grid; a classifier's single output has
/// neither (its channels are `[classify] classes`): `probs = {}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The bands, one channel each, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<Band>,
    /// The grid the output is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Resolution>,
}

/// An order-preserving map of graph tensor name → spec (`[inputs]`, `[outputs]`).
///
/// A `Vec` of pairs rather than a hash map: the order of the TOML document is part of the
/// contract (normalisation vectors follow it). Duplicate names are rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct IoMap<T>(pub Vec<(String, T)>);

impl<T> IoMap<T> {
    /// Entries in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The spec of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tensor names in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for IoMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = IoMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of graph tensor name -> { bands, grid, ... }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("duplicate tensor {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(IoMap(out))
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for IoMap<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Per-channel normalisation `(x - mean) / std` on harmonised DN, channels in input order
/// then band order. Super-resolved outputs come out in the normalised units of the input
/// of the same band and are de-normalised with its mean/std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (positive).
    pub std: Vec<f32>,
}

/// `[superres]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperresSpec {
    /// Resolution ratio between the coarsest output band's native grid and the output
    /// grid (2 for 20 m → 10 m, 6 for 60 m → 10 m).
    pub scale: u32,
    /// How far (in output-grid pixels) an output pixel sees: the number of stacked 3×3
    /// convolutions. The tiling halo must be at least this, or tiles disagree at seams.
    /// Optional in the syntax only so that its absence gets a precise error.
    #[serde(default)]
    pub receptive_radius: Option<u32>,
}

/// What a classifier outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Per-class probabilities: the sigmoid is inside the graph.
    Probabilities,
}

/// `[classify]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySpec {
    /// Patch side in pixels on the 10 m grid (120 for BigEarthNet).
    pub patch: u32,
    /// Class names in output-channel order.
    pub classes: Vec<String>,
    /// Per-class decision thresholds on the probabilities.
    pub thresholds: Vec<f32>,
    /// Always `probabilities`: the pipeline never applies a second sigmoid.
    pub output_kind: OutputKind,
}

/// Whether the weights were trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainingStatus {
    /// Trained; `data`, `steps` and `metrics` say how.
    Trained,
    /// Not trained: outputs are placeholders. Loading warns loudly and the provenance
    /// says so.
    Untrained,
}

impl fmt::Display for TrainingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrainingStatus::Trained => "trained",
            TrainingStatus::Untrained => "untrained",
        })
    }
}

/// `[training]`: provenance of the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// Trained or not.
    pub status: TrainingStatus,
    /// The training data (dataset, split, tiles).
    pub data: String,
    /// Optimiser steps.
    #[serde(default)]
    pub steps: u64,
    /// MPI ranks used.
    #[serde(default = "one")]
    pub ranks: u32,
    /// Evaluation metrics (`micro_f1 = 0.7`, or nested tables per split).
    #[serde(default)]
    pub metrics: toml::Table,
    /// Free-form note on how the model was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Whether `s` is a SHA-256 digest as manifests write it: 64 lower-case hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn one() -> u32 {
    1
}

/// A parsed `model.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Manifest schema; must be [`SUPPORTED_SCHEMA`].
    pub schema: u32,
    /// The model's name; equals its directory name.
    pub name: String,
    /// The version; equals its directory name.
    pub version: u32,
    /// What the model does.
    pub task: Task,
    /// Lower-case hex SHA-256 of `model.onnx`.
    pub onnx_sha256: String,
    /// The level the model was trained on.
    #[serde(default)]
    pub product_level: ProductLevel,
    /// Graph inputs in document order.
    pub inputs: IoMap<InputSpec>,
    /// Graph outputs in document order.
    pub outputs: IoMap<OutputSpec>,
    /// Input normalisation.
    pub normalisation: Normalisation,
    /// Super-resolution parameters (task `superres` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superres: Option<SuperresSpec>,
    /// Classifier parameters (task `classify` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classify: Option<ClassifySpec>,
    /// Training provenance.
    pub training: TrainingInfo,
    /// Reduced-precision graphs of the same version (`[precision.int8]`).
    #[serde(default, skip_serializing_if = "Variants::is_empty")]
    pub precision: Variants,
}

impl ModelSpec {
    /// Parses and validates manifest text.
    ///
    /// # Errors
    /// [`ManifestError::Parse`] for syntax, types, missing or unknown keys; any
    /// [`ModelSpec::validate`] error.
    pub fn parse(text: &str) -> Result<ModelSpec, ManifestError> {
        let spec: ModelSpec =
            toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads, parses and validates `path`.
    ///
    /// # Errors
    /// [`ModelError::Io`] when unreadable, [`ModelError::Manifest`] when invalid.
    pub fn load(path: &Path) -> Result<ModelSpec, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ModelSpec::parse(&text).map_err(|reason| ModelError::Manifest {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// `name@version`, the model's label in logs, errors and provenance.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Total input channels (the length of the normalisation vectors).
    pub fn input_channels(&self) -> usize {
        self.inputs.iter().map(|(_, i)| i.bands.len()).sum()
    }

    /// The normalisation `(mean, std)` of every input channel, with its input and band.
    pub fn channel_normalisation(&self) -> Vec<(&str, Band, f32, f32)> {
        let chans = self
            .inputs
            .iter()
            .flat_map(|(n, i)| i.bands.iter().map(move |b| (n, *b)));
        chans
            .zip(self.normalisation.mean.iter().zip(&self.normalisation.std))
            .map(|((n, b), (m, s))| (n, b, *m, *s))
            .collect()
    }

    /// The `(mean, std)` that de-normalises output band `band`: that of the first input
    /// channel carrying the same band.
    pub fn output_normalisation(&self, band: Band) -> Option<(f32, f32)> {
        self.channel_normalisation()
            .into_iter()
            .find(|(_, b, _, _)| *b == band)
            .map(|(_, _, m, s)| (m, s))
    }

    /// Whether the weights are untrained (placeholder outputs).
    pub fn is_untrained(&self) -> bool {
        self.training.status == TrainingStatus::Untrained
    }

    /// Checks everything that does not need the graph.
    ///
    /// # Errors
    /// The first problem found: unsupported schema, malformed name or checksum, empty or
    /// inconsistent inputs/outputs, normalisation lengths, missing or extra task sections,
    /// class/threshold lengths.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |field: &str, reason: String| ManifestError::Invalid {
            field: field.to_string(),
            reason,
        };
        if self.schema != SUPPORTED_SCHEMA {
            return Err(ManifestError::UnsupportedSchema { found: self.schema });
        }
        validate_name(&self.name).map_err(|r| invalid("name", r))?;
        if self.version == 0 {
            return Err(invalid("version", "versions start at 1".into()));
        }
        if !is_sha256_hex(&self.onnx_sha256) {
            return Err(invalid(
                "onnx_sha256",
                "must be 64 lower-case hex digits".into(),
            ));
        }
        self.validate_inputs()?;
        self.validate_normalisation()?;
        if let Some(v) = &self.precision.int8 {
            v.validate().map_err(|r| invalid("precision.int8", r))?;
        }
        match self.task {
            Task::Superres => self.validate_superres(),
            Task::Classify => self.validate_classify(),
        }
    }

    fn validate_inputs(&self) -> Result<(), ManifestError> {
        if self.inputs.is_empty() {
            return Err(ManifestError::Invalid {
                field: "inputs".into(),
                reason: "at least one graph input is required".into(),
            });
        }
        if self.outputs.is_empty() {
            return Err(ManifestError::Invalid {
                field: "outputs".into(),
                reason: "at least one graph output is required".into(),
            });
        }
        for (name, input) in self.inputs.iter() {
            let field = format!("inputs.{name}");
            let invalid = |reason: String| ManifestError::Invalid {
                field: field.clone(),
                reason,
            };
            if input.bands.is_empty() {
                return Err(invalid("lists no bands".into()));
            }
            let mut seen = HashSet::new();
            for band in &input.bands {
                if !seen.insert(band) {
                    return Err(invalid(format!("lists {band} twice")));
                }
                if *band == Band::B10 {
                    return Err(invalid("B10 (cirrus) is not a product band".into()));
                }
                // A non-10 m grid means the bands arrive on their native grid.
                if input.grid != Resolution::R10 && band.resolution() != input.grid {
                    return Err(invalid(format!(
                        "{band} is a {} band but the input's grid is {}",
                        band.resolution(),
                        input.grid
                    )));
                }
                // Coarser bands on the 10 m grid must say how they were upsampled.
                if input.grid == Resolution::R10
                    && band.resolution() != Resolution::R10
                    && input.upsample.is_none()
                {
                    return Err(invalid(format!(
                        "{band} is a {} band delivered on the 10m grid: `upsample` is required",
                        band.resolution()
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_normalisation(&self) -> Result<(), ManifestError> {
        let n = self.input_channels();
        let why = "one per input channel, inputs in order, then bands in order".to_string();
        for (field, v) in [
            ("normalisation.mean", &self.normalisation.mean),
            ("normalisation.std", &self.normalisation.std),
        ] {
            if v.len() != n {
                return Err(ManifestError::Length {
                    field: field.into(),
                    expected: n,
                    found: v.len(),
                    why: why.clone(),
                });
            }
        }
        if let Some(bad) = self.normalisation.mean.iter().find(|m| !m.is_finite()) {
            return Err(ManifestError::Invalid {
                field: "normalisation.mean".into(),
                reason: format!("{bad} is not finite"),
            });
        }
        if let Some(bad) = self
            .normalisation
            .std
            .iter()
            .find(|s| !(s.is_finite() && **s > 0.0))
        {
            return Err(ManifestError::Invalid {
                field: "normalisation.std".into(),
                reason: format!("{bad} is not a positive finite number"),
            });
        }
        Ok(())
    }

    fn validate_superres(&self) -> Result<(), ManifestError> {
        let section = |problem: &str| ManifestError::Section {
            task: self.task,
            problem: problem.to_string(),
        };
        let sr = self
            .superres
            .as_ref()
            .ok_or_else(|| section("a [superres] section (scale, receptive_radius) is required"))?;
        if self.classify.is_some() {
            return Err(section("a [classify] section is not allowed"));
        }
        if sr.receptive_radius.is_none() {
            return Err(section(
                "[superres] receptive_radius is required: the tiling halo must cover it, \
                 or tiles disagree at their seams",
            ));
        }
        if sr.scale < 2 {
            return Err(ManifestError::Invalid {
                field: "superres.scale".into(),
                reason: format!("{} is not an upsampling factor (2 or more)", sr.scale),
            });
        }
        for (name, out) in self.outputs.iter() {
            let field = format!("outputs.{name}");
            let invalid = |reason: String| ManifestError::Invalid {
                field: field.clone(),
                reason,
            };
            if out.bands.is_empty() {
                return Err(invalid("a super-resolution output lists its bands".into()));
            }
            let grid = out
                .grid
                .ok_or_else(|| invalid("a super-resolution output names its grid".into()))?;
            for band in &out.bands {
                if self.output_normalisation(*band).is_none() {
                    return Err(invalid(format!(
                        "{band} is not an input band, so it cannot be de-normalised"
                    )));
                }
                let ratio = band.resolution().factor() / grid.factor();
                if ratio as u32 != sr.scale {
                    return Err(invalid(format!(
                        "{band} ({}) on the {grid} grid is a {ratio}x upsampling, but scale = {}",
                        band.resolution(),
                        sr.scale
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_classify(&self) -> Result<(), ManifestError> {
        let section = |problem: &str| ManifestError::Section {
            task: self.task,
            problem: problem.to_string(),
        };
        let cl = self.classify.as_ref().ok_or_else(|| {
            section("a [classify] section (patch, classes, thresholds, output_kind) is required")
        })?;
        if self.superres.is_some() {
            return Err(section("a [superres] section is not allowed"));
        }
        if self.outputs.len() != 1 {
            return Err(ManifestError::Invalid {
                field: "outputs".into(),
                reason: format!(
                    "a classifier has exactly one output (probabilities), found {}",
                    self.outputs.len()
                ),
            });
        }
        if cl.patch == 0 {
            return Err(ManifestError::Invalid {
                field: "classify.patch".into(),
                reason: "must be positive".into(),
            });
        }
        if cl.classes.is_empty() {
            return Err(ManifestError::Invalid {
                field: "classify.classes".into(),
                reason: "lists no classes".into(),
            });
        }
        if cl.thresholds.len() != cl.classes.len() {
            return Err(ManifestError::Length {
                field: "classify.thresholds".into(),
                expected: cl.classes.len(),
                found: cl.thresholds.len(),
                why: "one per class".into(),
            });
        }
        if let Some(t) = cl.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(ManifestError::Invalid {
                field: "classify.thresholds".into(),
                reason: format!("{t} is not a probability in [0, 1]"),
            });
        }
        Ok(())
    }
}

/// Names are directory names and appear in `name@version` pins: lower-case ASCII letters,
/// digits, `-`, `_` and `.`, not starting with `.`.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a model name (lower-case letters, digits, '-', '_', '.')"
        ))
    }
}

/// A valid super-resolution manifest, for tests across the crate.
#[cfg(test)]
pub(crate) const EXAMPLE_SUPERRES: &str = r#"
schema = 1
name = "dsen2-2x"
version = 1
task = "superres"
onnx_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
product_level = "L1C"
[inputs]
x20 = { bands = ["B05","B06","B07","B8A","B11","B12"], grid = "20m", upsample = "bilinear" }
x10 = { bands = ["B02","B03","B04","B08"], grid = "10m" }
[outputs]
y = { bands = ["B05","B06","B07","B8A","B11","B12"], grid = "10m" }
[normalisation]
mean = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
std  = [2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0]
[superres]
scale = 2
receptive_radius = 14
[training]
status = "trained"
data = "33UUB crop"
steps = 100
ranks = 2
metrics = { val = { rmse = 60.5, sre = 31.0 }, steps_per_s = 3.0 }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    use super::EXAMPLE_SUPERRES as SR;

    #[test]
    fn parses_and_keeps_input_order() {
        let s = ModelSpec::parse(SR).unwrap();
        assert_eq!(s.inputs.names().collect::<Vec<_>>(), ["x20", "x10"]);
        assert_eq!(s.input_channels(), 10);
        let norm = s.channel_normalisation();
        // x20 comes first in the document, so channel 0 is B05 with mean 1.
        assert_eq!(norm[0], ("x20", Band::B05, 1.0, 2000.0));
        assert_eq!(norm[6], ("x10", Band::B02, 7.0, 2000.0));
        assert_eq!(s.output_normalisation(Band::B8A), Some((4.0, 2000.0)));
        assert_eq!(s.label(), "dsen2-2x@1");
        assert_eq!(s.superres.as_ref().unwrap().receptive_radius, Some(14));
        assert!(s.training.metrics.contains_key("val"));
        assert!(!s.is_untrained());
    }

    #[test]
    fn round_trips_through_toml() {
        let s = ModelSpec::parse(SR).unwrap();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(ModelSpec::parse(&text).unwrap(), s);
        assert!(!text.contains("[precision"), "no variant, no table");
    }

    #[test]
    fn an_int8_graph_section_parses_round_trips_and_is_validated() {
        let section = r#"
[precision.int8]
onnx = "model.int8.onnx"
onnx_sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
cost_db = 0.12
method = "QDQ"
metrics = { sre_db = 30.9, eval_region = "33NZA" }
"#;
        let s = ModelSpec::parse(&format!("{SR}{section}")).unwrap();
        let v = s.precision.int8.as_ref().unwrap();
        assert_eq!((v.onnx.as_str(), v.cost_db), ("model.int8.onnx", 0.12));
        assert_eq!(v.metrics["sre_db"].as_float(), Some(30.9));
        assert_eq!(ModelSpec::parse(&toml::to_string(&s).unwrap()).unwrap(), s);
        let bad = section.replace("model.int8.onnx", "../elsewhere.onnx");
        match ModelSpec::parse(&format!("{SR}{bad}")) {
            Err(ManifestError::Invalid { field, reason }) => {
                assert_eq!(field, "precision.int8");
                assert!(reason.contains("plain"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let typo = section.replace("[precision.int8]", "[precision.int4]");
        assert!(matches!(
            ModelSpec::parse(&format!("{SR}{typo}")),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let bad = SR.replace("product_level", "level = 1\nproduct_level");
        assert!(matches!(
            ModelSpec::parse(&bad),
            Err(ManifestError::Parse(_))
        ));
        let bad = SR.replace("grid = \"10m\" }", "grid = \"10m\", colour = 1 }");
        assert!(matches!(
            ModelSpec::parse(&bad),
            Err(ManifestError::Parse(_))
        ));
    }

    #[test]
    fn schema_two_names_the_supported_schema() {
        let e = ModelSpec::parse(&SR.replace("schema = 1", "schema = 2")).unwrap_err();
        assert_eq!(e, ManifestError::UnsupportedSchema { found: 2 });
        assert!(e.to_string().contains("schema 1"));
    }

    #[test]
    fn normalisation_length_must_match_channels() {
        let e = ModelSpec::parse(&SR.replace("mean = [1.0, ", "mean = [")).unwrap_err();
        assert!(
            matches!(
                e,
                ManifestError::Length {
                    expected: 10,
                    found: 9,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn superres_needs_its_section_and_radius() {
        let no_section = SR.replace("[superres]\nscale = 2\nreceptive_radius = 14\n", "");
        let e = ModelSpec::parse(&no_section).unwrap_err();
        assert!(
            matches!(
                e,
                ManifestError::Section {
                    task: Task::Superres,
                    ..
                }
            ),
            "{e}"
        );
        let no_radius = SR.replace("receptive_radius = 14\n", "");
        let e = ModelSpec::parse(&no_radius).unwrap_err();
        assert!(e.to_string().contains("receptive_radius"), "{e}");
        let wrong_scale = SR.replace("scale = 2", "scale = 6");
        let e = ModelSpec::parse(&wrong_scale).unwrap_err();
        assert!(e.to_string().contains("scale = 6"), "{e}");
    }

    #[test]
    fn band_grid_consistency() {
        let e = ModelSpec::parse(&SR.replace("grid = \"20m\"", "grid = \"60m\"")).unwrap_err();
        assert!(e.to_string().contains("inputs.x20"), "{e}");
        let mixed = SR.replace("grid = \"20m\", upsample = \"bilinear\"", "grid = \"10m\"");
        let e = ModelSpec::parse(&mixed).unwrap_err();
        assert!(e.to_string().contains("upsample"), "{e}");
    }

    #[test]
    fn bad_checksum_text_is_refused() {
        let e = ModelSpec::parse(&SR.replace("\"0000", "\"ABCD")).unwrap_err();
        assert!(e.to_string().contains("onnx_sha256"));
    }

    const CLS: &str = r#"
schema = 1
name = "ben"
version = 3
task = "classify"
onnx_sha256 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
[inputs]
x = { bands = ["B02","B05","B01"], grid = "10m", upsample = "bicubic" }
[outputs]
probs = {}
[normalisation]
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[classify]
patch = 120
classes = ["a", "b"]
thresholds = [0.5, 0.4]
output_kind = "probabilities"
[training]
status = "untrained"
data = "none"
"#;

    #[test]
    fn classifier_manifest() {
        let s = ModelSpec::parse(CLS).unwrap();
        assert_eq!(s.product_level, ProductLevel::Any);
        assert_eq!(s.training.ranks, 1);
        assert!(s.is_untrained());
        assert_eq!(
            s.inputs.get("x").unwrap().upsample,
            Some(UpsampleKernel::Bicubic)
        );
        let e = ModelSpec::parse(&CLS.replace("[0.5, 0.4]", "[0.5]")).unwrap_err();
        assert!(
            matches!(
                e,
                ManifestError::Length {
                    expected: 2,
                    found: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = ModelSpec::parse(&CLS.replace("[0.5, 0.4]", "[0.5, 1.5]")).unwrap_err();
        assert!(e.to_string().contains("1.5"), "{e}");
        let e = ModelSpec::parse(&CLS.replace(
            "output_kind = \"probabilities\"",
            "output_kind = \"logits\"",
        ))
        .unwrap_err();
        assert!(matches!(e, ManifestError::Parse(_)));
        let e = ModelSpec::parse(&CLS.replace("patch = 120\n", "")).unwrap_err();
        assert!(e.to_string().contains("patch"), "{e}");
    }

    #[test]
    fn duplicate_tensor_names_are_refused() {
        // TOML itself rejects duplicate keys; the map visitor double-checks.
        let e = ModelSpec::parse(&CLS.replace("probs = {}", "probs = {}\nprobs = {}")).unwrap_err();
        assert!(matches!(e, ManifestError::Parse(_)));
    }

    #[test]
    fn names_are_directory_safe() {
        assert!(validate_name("dsen2-2x").is_ok());
        assert!(validate_name("resnet50-ben19").is_ok());
        for bad in ["", ".hidden", "a/b", "a@1", "Upper"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
