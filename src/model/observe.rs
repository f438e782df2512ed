//! A process-wide observer of inference batches, for metrics (`/metrics`: inference
//! count and batch latency per model, version and execution provider).
//!
//! Every batch through [`super::LoadedModel::run`] is reported here, whichever thread
//! or pool ran it, so the pipeline and the inference workers need no metrics handle. The
//! daemon installs one observer at start ([`set_observer`]); the CLI installs none, and
//! then a report costs one uncontended read lock.
//!
//! A std `RwLock` is right: the observer is set once and read by every inference thread;
//! nothing here ever awaits.

use std::sync::{Arc, RwLock};

use super::ExecutionProvider;

/// One finished batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchEvent<'a> {
    /// The model name.
    pub model: &'a str,
    /// Its version.
    pub version: u32,
    /// The execution provider the session runs on.
    pub provider: ExecutionProvider,
    /// Samples in the batch (the leading dimension).
    pub size: usize,
    /// Wall time of the ONNX Runtime call.
    pub seconds: f64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Receives every batch.
pub trait InferenceObserver: Send + Sync {
    /// Called after each batch, on the thread that ran it; keep it short.
    fn batch_done(&self, event: &BatchEvent<'_>);
}

static OBSERVER: RwLock<Option<Arc<dyn InferenceObserver>>> = RwLock::new(None);

/// Installs (or with `None` removes) the process's observer.
pub fn set_observer(observer: Option<Arc<dyn InferenceObserver>>) {
    // A poisoned lock only means a panic while swapping an Arc: the value is intact.
    *OBSERVER.write().unwrap_or_else(|p| p.into_inner()) = observer;
}

/// Reports a batch to the observer, if one is installed.
pub fn notify(event: &BatchEvent<'_>) {
    let guard = OBSERVER.read().unwrap_or_else(|p| p.into_inner());
    if let Some(o) = guard.as_ref() {
        o.batch_done(event);
    }
}
