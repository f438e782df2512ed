//! Models served by inference worker threads ([`InferencePool`]): each worker owns its
//! session, and the stage that feeds them keeps batches in flight, so the next batch is
//! prepared while the current one runs. This is how `s2edge process` runs models; the
//! `[runtime] inference_workers` key sets the number of workers per model.

use crate::model::registry::{ModelRef, Registry};
use crate::model::session::{graph_feature_width, LoadedModel};
use crate::model::worker::InferencePool;
use crate::model::{ModelError, ModelSelection, ModelSpec, ProviderOptions};

use super::{Infer, ModelInfo, Pending};

/// One model behind a pool of workers.
pub struct PooledModel {
    spec: ModelSpec,
    feature_width: Option<usize>,
    info: ModelInfo,
    pool: InferencePool,
}

impl PooledModel {
    /// Resolves `model` in `registry` and starts `workers` threads, each loading it.
    ///
    /// # Errors
    /// The registry's or the first worker's load error.
    pub fn start(
        registry: &Registry,
        model: &ModelRef,
        providers: &ProviderOptions,
        workers: usize,
    ) -> Result<(PooledModel, Vec<String>), ModelError> {
        let workers = workers.max(1);
        // Two batches queued per worker keep each busy while the stage prepares more.
        // A version that verifies but does not load is passed over for a lower one.
        let (pool, resolved, skipped) = registry.load_with_fallback(model, |resolved| {
            let (dir, opts) = (resolved.dir.clone(), providers.clone());
            InferencePool::spawn(workers, move || LoadedModel::load(&dir, &opts), 2 * workers)
        })?;
        let feature_width = (resolved.spec.task == crate::model::manifest::Task::Superres)
            .then(|| std::fs::read(resolved.dir.join(crate::model::registry::ONNX_FILE)).ok())
            .flatten()
            .and_then(|b| graph_feature_width(&b));
        let report = pool.provider();
        for (p, why) in &report.failures {
            tracing::warn!(model = %pool.label(), provider = %p, "execution provider unavailable: {why}");
        }
        // The graph the workers loaded (the choice, or float32 where the int8 graph
        // failed its check).
        let graph = pool
            .graph()
            .cloned()
            .unwrap_or_else(|| crate::model::precision::choose(&resolved.spec, providers));
        let info = ModelInfo::new(&resolved.spec, &graph, report.used.to_string());
        Ok((
            PooledModel {
                spec: resolved.spec,
                feature_width,
                info,
                pool,
            },
            skipped,
        ))
    }
}

impl PooledModel {
    /// Serves an already loaded model from `workers` threads: the first owns `model`,
    /// the others load their own session of the same version with the same provider
    /// policy (so does a worker reloading after a panic). This is how the daemon, which
    /// loads and swaps [`crate::model::ModelSet`]s, honours `inference_workers`.
    ///
    /// # Errors
    /// A further worker's load error, or a thread that cannot be spawned.
    pub fn from_loaded(model: LoadedModel, workers: usize) -> Result<PooledModel, ModelError> {
        let workers = workers.max(1);
        let spec = model.spec.clone();
        let info = model.info();
        let feature_width = model.feature_width;
        let dir = model.dir.clone();
        let opts = model.options.clone();
        let first = std::sync::Mutex::new(Some(model));
        let pool = InferencePool::spawn(
            workers,
            move || {
                let taken = first
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                match taken {
                    Some(m) => Ok(m),
                    None => LoadedModel::load(&dir, &opts),
                }
            },
            2 * workers,
        )?;
        Ok(PooledModel {
            spec,
            feature_width,
            info,
            pool,
        })
    }
}

impl Infer for PooledModel {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }
    fn infer(
        &mut self,
        inputs: Vec<(String, ndarray::Array4<f32>)>,
    ) -> Result<crate::model::worker::Outputs, ModelError> {
        self.pool.run(inputs)
    }
    fn submit(&mut self, inputs: Vec<(String, ndarray::Array4<f32>)>) -> Pending {
        match self.pool.submit(inputs) {
            Ok(reply) => Pending::Waiting {
                model: self.pool.label().to_string(),
                reply,
            },
            Err(e) => Pending::Ready(Err(e)),
        }
    }
    fn depth(&self) -> usize {
        self.pool.workers()
    }
    fn feature_width(&self) -> Option<usize> {
        self.feature_width
    }
}

/// The models of a run, each behind its own pool.
#[derive(Default)]
pub struct PooledSet {
    /// The classifier.
    pub classifier: Option<PooledModel>,
    /// 20 m → 10 m.
    pub superres_2x: Option<PooledModel>,
    /// 60 m → 10 m.
    pub superres_6x: Option<PooledModel>,
    /// Versions skipped during selection, as `name@version: reason`.
    pub skipped: Vec<String>,
}

impl PooledSet {
    /// Puts each model of `set` behind `workers` threads ([`PooledModel::from_loaded`]).
    ///
    /// # Errors
    /// As [`PooledModel::from_loaded`].
    pub fn from_set(set: crate::model::ModelSet, workers: usize) -> Result<PooledSet, ModelError> {
        let pool =
            |m: Option<LoadedModel>| m.map(|m| PooledModel::from_loaded(m, workers)).transpose();
        Ok(PooledSet {
            classifier: pool(set.classifier)?,
            superres_2x: pool(set.superres_2x)?,
            superres_6x: pool(set.superres_6x)?,
            skipped: set.skipped,
        })
    }

    /// The models as the pipeline takes them.
    pub fn models(&mut self) -> super::process::Models<'_> {
        super::process::Models {
            classifier: self.classifier.as_mut().map(|m| m as &mut dyn Infer),
            superres_2x: self.superres_2x.as_mut().map(|m| m as &mut dyn Infer),
            superres_6x: self.superres_6x.as_mut().map(|m| m as &mut dyn Infer),
        }
    }

    /// Starts a pool for every selected model.
    ///
    /// # Errors
    /// The first model that cannot be resolved or loaded.
    pub fn start(
        registry: &Registry,
        selection: &ModelSelection,
        providers: &ProviderOptions,
        workers: usize,
    ) -> Result<PooledSet, ModelError> {
        let mut set = PooledSet::default();
        let mut start = |r: &Option<ModelRef>| -> Result<Option<PooledModel>, ModelError> {
            let Some(r) = r else { return Ok(None) };
            let (m, skipped) = PooledModel::start(registry, r, providers, workers)?;
            set.skipped.extend(skipped);
            Ok(Some(m))
        };
        let classifier = start(&selection.classifier)?;
        let superres_2x = start(&selection.superres_2x)?;
        let superres_6x = start(&selection.superres_6x)?;
        set.classifier = classifier;
        set.superres_2x = superres_2x;
        set.superres_6x = superres_6x;
        Ok(set)
    }
}
