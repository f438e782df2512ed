//! The set of models a run uses (classifier, 2× and 6× super-resolution), resolved in
//! a registry and loaded with one provider policy. Shared by `s2edge process`,
//! `s2edge models verify` and the daemon.

use super::registry::{ModelRef, Registry};
use super::session::LoadedModel;
use super::{ModelError, ProviderOptions};

/// Which models to load; `None` for a stage that is off.
#[derive(Debug, Clone, Default)]
pub struct ModelSelection {
    /// The classifier.
    pub classifier: Option<ModelRef>,
    /// 20 m → 10 m.
    pub superres_2x: Option<ModelRef>,
    /// 60 m → 10 m.
    pub superres_6x: Option<ModelRef>,
}

/// Loaded models, each owning its session.
#[derive(Debug, Default)]
pub struct ModelSet {
    /// The classifier.
    pub classifier: Option<LoadedModel>,
    /// 20 m → 10 m.
    pub superres_2x: Option<LoadedModel>,
    /// 60 m → 10 m.
    pub superres_6x: Option<LoadedModel>,
    /// Versions skipped during selection, as `name@version: reason`.
    pub skipped: Vec<String>,
}

impl ModelSet {
    /// Resolves and loads every selected model.
    ///
    /// # Errors
    /// The first model that cannot be resolved or loaded, naming it.
    pub fn load(
        registry: &Registry,
        selection: &ModelSelection,
        providers: &ProviderOptions,
    ) -> Result<ModelSet, ModelError> {
        Self::load_checked(registry, selection, providers, |_| Ok(()))
    }

    /// As [`ModelSet::load`], with `check` run on each loaded model (the daemon's test
    /// inference). An unpinned model whose selected version fails to load or to pass
    /// `check` (a graph that disagrees with its manifest, a corrupt protobuf) falls back
    /// to the next lower version that works; the refused versions are listed in
    /// [`ModelSet::skipped`]. A pinned version has no fallback.
    ///
    /// # Errors
    /// The first model with no version that resolves, loads and passes `check`: the
    /// highest version's error.
    pub fn load_checked(
        registry: &Registry,
        selection: &ModelSelection,
        providers: &ProviderOptions,
        mut check: impl FnMut(&mut LoadedModel) -> Result<(), ModelError>,
    ) -> Result<ModelSet, ModelError> {
        let mut set = ModelSet::default();
        let mut load = |r: &Option<ModelRef>| -> Result<Option<LoadedModel>, ModelError> {
            let Some(r) = r else { return Ok(None) };
            let (m, _, skipped) = registry.load_with_fallback(r, |resolved| {
                let mut m = LoadedModel::load(&resolved.dir, providers)?;
                check(&mut m)?;
                Ok(m)
            })?;
            for line in skipped {
                tracing::warn!("skipped model version {line}");
                set.skipped.push(line);
            }
            Ok(Some(m))
        };
        let classifier = load(&selection.classifier)?;
        let superres_2x = load(&selection.superres_2x)?;
        let superres_6x = load(&selection.superres_6x)?;
        set.classifier = classifier;
        set.superres_2x = superres_2x;
        set.superres_6x = superres_6x;
        Ok(set)
    }

    /// The loaded models, in stage order.
    pub fn iter(&self) -> impl Iterator<Item = &LoadedModel> {
        [&self.superres_2x, &self.superres_6x, &self.classifier]
            .into_iter()
            .flatten()
    }

    /// The loaded models, in stage order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut LoadedModel> {
        [
            &mut self.superres_2x,
            &mut self.superres_6x,
            &mut self.classifier,
        ]
        .into_iter()
        .flatten()
    }
}
