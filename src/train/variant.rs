//! `variant`: records a reduced-precision graph in its model's manifest
//! (`[precision.int8]`, [`crate::model::precision`]).
//!
//! The int8 graph (written beside `model.onnx` by `scripts/quantise_int8.py`) and the
//! float graph are scored by the same evaluation ([`super::eval`]: the same scene,
//! region, degradation, tile and metrics, in one run), and the manifest gets the
//! variant's file, digest, method, its own scores and its cost: the float graph's SRE
//! minus the variant's. The daemon then uses the graph only where that cost is within
//! `[runtime] precision_tolerance_db`.
//!
//! The manifest is rewritten in place through a temporary file and a rename, so a daemon
//! reading it sees either the old or the new one.

use std::path::Path;

use crate::model::precision::{GraphVariant, Precision};
use crate::model::provider::ProviderOptions;
use crate::model::registry::{sha256_file, MANIFEST_FILE};
use crate::model::session::load_spec;
use crate::model::ModelSpec;

use super::config::Holdout;
use super::data::SrBands;
use super::eval::{evaluate_loaded_with, EvalOptions, EvalReport};
use super::export::write_manifest_in;
use super::TrainError;

/// What [`record_int8`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantReport {
    /// The float graph's evaluation.
    pub float32: EvalReport,
    /// The int8 graph's, on the same pixels.
    pub int8: EvalReport,
    /// float32 SRE − int8 SRE, dB (what the manifest records as `cost_db`).
    pub cost_db: f64,
}

/// Scores `graph` (a file in the version directory `dir`) as the int8 graph of that
/// model version beside its float graph, and writes `[precision.int8]` into the manifest.
///
/// # Errors
/// [`TrainError::Config`] for a model that is not super-resolution or a graph name the
/// manifest would refuse; the model's load errors (for the int8 graph too: its inputs and
/// outputs must agree with the manifest); the evaluation's errors; manifest write errors.
pub fn record_int8(
    dir: &Path,
    graph: &str,
    method: &str,
    data: &Path,
    holdout: Holdout,
    tile: usize,
    opts: &EvalOptions,
) -> Result<VariantReport, TrainError> {
    let spec = ModelSpec::load(&dir.join(MANIFEST_FILE))?;
    let Some(sr) = spec.superres.as_ref() else {
        return Err(TrainError::Config(format!(
            "{} is not a super-resolution model: only those are scored by `eval`",
            spec.label()
        )));
    };
    let bands = SrBands::for_scale(sr.scale as usize);
    let mut variant = GraphVariant {
        onnx: graph.to_string(),
        onnx_sha256: sha256_file(&dir.join(graph))?,
        cost_db: 0.0,
        method: method.to_string(),
        metrics: toml::Table::new(),
    };
    variant
        .validate()
        .map_err(|r| TrainError::Config(format!("--graph {graph}: {r}")))?;

    // Both graphs load from the manifest read above.
    let mut float = load_spec(spec.clone(), dir, &ProviderOptions::default())?;
    let float_report = evaluate_loaded_with(&mut float, &bands, data, holdout, tile, opts)?;
    drop(float);

    // The candidate manifest, for loading the int8 graph before the section is written.
    let mut candidate = spec.clone();
    candidate.precision.int8 = Some(variant.clone());
    let int8_opts = ProviderOptions {
        precision: Precision::Int8,
        precision_tolerance_db: f64::INFINITY,
        ..ProviderOptions::default()
    };
    let mut int8 = load_spec(candidate, dir, &int8_opts)?;
    if int8.graph.precision != Precision::Int8 {
        return Err(TrainError::Config(format!(
            "{} did not load its int8 graph: {}",
            spec.label(),
            int8.graph.note.clone().unwrap_or_default()
        )));
    }
    let int8_report = evaluate_loaded_with(&mut int8, &bands, data, holdout, tile, opts)?;
    drop(int8);

    let cost = float_report.model_scores.sre_db - int8_report.model_scores.sre_db;
    variant.cost_db = (cost * 1000.0).round() / 1000.0;
    variant.metrics = int8_report.to_table();
    let mut updated = spec;
    updated.precision.int8 = Some(variant);
    write_manifest_in(dir, &updated)?;
    tracing::info!(model = %updated.label(), graph, cost_db = cost, "int8 graph recorded");
    Ok(VariantReport {
        float32: float_report,
        int8: int8_report,
        cost_db: cost,
    })
}
