//! Model hot swap: the models directory is polled (on the rescan interval, and at once
//! after a SIGHUP); a new complete version of a selected model is loaded and validated
//! off the worker (sha256 and graph I/O by [`ModelSet::load`], then one test inference
//! per model) and only then swapped in, between granules.
//!
//! A version that fails any check is refused: logged, counted and reported on
//! `/healthz` as degraded, while the models in use keep running. A poll only resolves a
//! model again when its versions changed: the list of complete versions, or the size or
//! mtime of a version's `model.toml` or `model.onnx`. So a refused version is not
//! retried (nor its sha256 recomputed) on every poll, but it is retried once its files
//! change (a `model.onnx` that finished copying after its `model.toml`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use crate::config::Settings;
use crate::model::registry::{Registry, MANIFEST_FILE, ONNX_FILE};
use crate::model::set::ModelSet;
use crate::model::stac;

use super::error::DaemonError;

use super::health::ModelInUse;
use super::worker::error_chain;

/// Loads the configured models and runs one test inference on each.
///
/// # Errors
/// [`DaemonError::Config`] for a model reference that does not parse;
/// [`DaemonError::Models`] for the first model that fails to resolve, load or run.
pub fn load_validated(settings: &Settings) -> Result<ModelSet, DaemonError> {
    let selection = settings.model_selection()?;
    let registry = Registry::new(&settings.paths.models);
    ModelSet::load_checked(
        &registry,
        &selection,
        &settings.runtime.provider_options(),
        |m| {
            let t = m.smoke_test()?;
            tracing::info!(model = %m.label(), ms = t.as_secs_f64() * 1e3, "test inference passed");
            Ok(())
        },
    )
    .map_err(DaemonError::Models)
    .and_then(|set| {
        publish_items(settings, &set)?;
        Ok(set)
    })
}

/// Writes the MLM Item of every model in `set` into `<output>/models/`, so that the
/// `derived_from` links of the products it makes resolve.
fn publish_items(settings: &Settings, set: &ModelSet) -> Result<(), DaemonError> {
    let providers = settings.runtime.provider_options().order;
    for m in set.iter() {
        let path = stac::publish_model_item(
            &settings.paths.output,
            &m.spec,
            &m.spec.onnx_sha256,
            &m.dir,
            &providers,
        )
        .map_err(DaemonError::Models)?;
        tracing::debug!(model = %m.label(), item = %path.display(), "model Item written");
    }
    Ok(())
}

/// What one poll found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// Versions refused, as `name@version: reason` (each reported once).
    pub refused: Vec<String>,
    /// A selected model now resolves to a version other than the one in use.
    pub reload: bool,
    /// Every selected model's directory was read, nothing was refused in this poll, and
    /// no refused version is still present: a "models" degradation can be lifted.
    pub healthy: bool,
}

/// Memory between polls; see the module docs.
#[derive(Debug, Default)]
pub struct ModelWatch {
    versions: BTreeMap<String, Vec<(u32, Fingerprint)>>,
    reported: BTreeSet<String>,
    /// Loading the versions last seen failed; forgotten when a listing changes.
    load_failed: bool,
}

/// Size and mtime of a version's manifest and graph (`None` when absent).
type Fingerprint = [Option<(u64, SystemTime)>; 2];

fn fingerprint(dir: &Path) -> Fingerprint {
    let stat = |f: &str| {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    [stat(MANIFEST_FILE), stat(ONNX_FILE)]
}

impl ModelWatch {
    /// Forgets what earlier polls saw, so the next one resolves every model again (after
    /// a configuration reload).
    pub fn reset(&mut self) {
        self.versions.clear();
    }

    /// Records that loading the versions this watch last saw failed, so that polls do
    /// not report the models healthy until a listing changes.
    pub fn load_failed(&mut self) {
        self.load_failed = true;
    }

    /// Looks for new versions of the models `settings` selects (blocking file I/O).
    pub fn poll(&mut self, settings: &Settings, in_use: &[ModelInUse]) -> PollOutcome {
        let mut out = PollOutcome::default();
        let selection = match settings.model_selection() {
            Ok(s) => s,
            Err(e) => {
                out.refused.push(e.to_string());
                return out;
            }
        };
        let registry = Registry::new(&settings.paths.models);
        for (role, r) in [
            ("classifier", &selection.classifier),
            ("superres_2x", &selection.superres_2x),
            ("superres_6x", &selection.superres_6x),
        ] {
            let Some(r) = r else { continue };
            let current = in_use
                .iter()
                .find(|m| m.role == role)
                .map(|m| m.model.clone());
            let versions = match registry.versions(&r.name) {
                Ok(v) => v,
                Err(e) => {
                    out.refused.push(format!("{r}: {}", error_chain(&e)));
                    continue;
                }
            };
            let model_dir = settings.paths.models.join(&r.name);
            let versions: Vec<(u32, Fingerprint)> = versions
                .into_iter()
                .map(|v| (v, fingerprint(&model_dir.join(v.to_string()))))
                .collect();
            let changed = self.versions.get(&r.name) != Some(&versions);
            if changed {
                self.load_failed = false;
                // A changed version may be refused again: report it again.
                let prefix = format!("{}@", r.name);
                self.reported.retain(|l| !l.starts_with(&prefix));
            }
            self.versions.insert(r.name.clone(), versions);
            if !changed && current.is_some() {
                continue;
            }
            match registry.resolve(r) {
                Ok(res) => {
                    for s in &res.skipped {
                        let label = format!("{}@{}", r.name, s.version);
                        if self.reported.insert(label.clone()) {
                            out.refused
                                .push(format!("{label}: {}", error_chain(&s.error)));
                        }
                    }
                    if current.as_deref() != Some(res.spec.label().as_str()) {
                        out.reload = true;
                    }
                }
                Err(e) => out.refused.push(format!("{r}: {}", error_chain(&e))),
            }
        }
        out.healthy = out.refused.is_empty() && self.reported.is_empty() && !self.load_failed;
        out
    }
}
