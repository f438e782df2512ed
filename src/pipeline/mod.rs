//! The processing stages, as synchronous functions over rasters:
//! [`scene`] (harmonised input), [`window`] (the streaming input, whole width or one
//! panel's columns), [`superres`] (tiled super-resolution), [`stream`] (the same, panel
//! by panel and strip by strip, as `process` runs it), [`superres_tif`] (those strips
//! streamed into `superres.tif`), [`budget`] (batch sizes from a memory budget),
//! [`classify`] (patch classification), and [`process`] (one granule in, one published
//! product out: THE entry point of `s2edge process` and the daemon).
//!
//! Models are reached through the [`Infer`] trait, so a stage runs the same on a
//! session owned by the calling thread or on an inference worker.

pub mod budget;
pub mod classify;
pub mod error;
pub mod pooled;
pub mod process;
pub mod scene;
pub mod stream;
pub mod superres;
pub mod superres_tif;
pub mod tensor;
pub mod window;

use ndarray::{Array4, ArrayD};
use serde::Serialize;

pub use error::PipelineError;

use crate::model::manifest::{ModelSpec, TrainingStatus};
use crate::model::precision::{GraphChoice, Precision};
use crate::model::session::LoadedModel;
use crate::model::worker::{Outputs, Reply};
use crate::model::ModelError;

/// Buffers at least this large are mapped from, and returned to, the operating system
/// one by one ([`return_large_buffers`]): glibc's own starting threshold, held there.
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Makes glibc's allocator map every allocation of [`MMAP_THRESHOLD`] bytes or more on
/// its own, so that freeing it gives the memory back at once. By default glibc raises
/// that threshold to the largest block freed so far (up to 32 MiB): a granule's strip
/// buffers then come from the heap, where freed blocks stay resident and fragment
/// between strips and granules. Measured on a 4392² granule: 1583 against 1714 MiB
/// peak at a threshold of 4 MiB, same wall time (BENCHMARKS.md, "One CPU arena"). At
/// 4 MiB the streaming pipeline's mid-sized buffers (reader blocks of a few hundred KiB,
/// COG tiles of 128 KiB) still came from per-thread heaps, whose fragmentation crept up
/// strip by strip; at 128 KiB the full tile peaks lower at the same speed
/// (BENCHMARKS.md, "Flatter memory"). Call it once, first thing in `main`, before other
/// threads start; elsewhere than glibc it does nothing.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; called before other threads.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
        if ok != 1 {
            eprintln!("warning: glibc refused M_MMAP_THRESHOLD = {MMAP_THRESHOLD}");
        }
    }
}

/// A batch submitted to a model: answered already, or on its way from a worker.
pub enum Pending {
    /// Run synchronously; here is the answer.
    Ready(Result<Outputs, ModelError>),
    /// Queued on an inference worker.
    Waiting {
        /// The model, for error messages.
        model: String,
        /// Where the answer arrives.
        reply: Reply,
    },
}

impl Pending {
    /// The batch's outputs, waiting for them if needed.
    ///
    /// # Errors
    /// The run's error, or [`ModelError::Inference`] when the worker exited unanswered.
    pub fn wait(self) -> Result<Outputs, ModelError> {
        match self {
            Pending::Ready(r) => r,
            Pending::Waiting { model, reply } => {
                reply.recv().map_err(|_| ModelError::Inference {
                    model,
                    reason: "the inference worker exited without answering".into(),
                })?
            }
        }
    }
}

/// What a product's provenance records about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// SHA-256 of `model.onnx` (the version's identity).
    pub sha256: String,
    /// Trained or untrained.
    pub status: TrainingStatus,
    /// The execution provider in use.
    pub provider: String,
    /// The precision of the graph that ran (`float32`, or `int8`).
    pub precision: Precision,
    /// SHA-256 of the graph that ran (`sha256` for float32).
    pub graph_sha256: String,
    /// Why the precision asked for did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision_note: Option<String>,
}

impl ModelInfo {
    /// The provenance of `spec` run with `graph` on `provider`.
    pub fn new(spec: &ModelSpec, graph: &GraphChoice, provider: String) -> ModelInfo {
        ModelInfo {
            name: spec.name.clone(),
            version: spec.version,
            sha256: spec.onnx_sha256.clone(),
            status: spec.training.status,
            provider,
            precision: graph.precision,
            graph_sha256: graph.sha256.clone(),
            precision_note: graph.note.clone(),
        }
    }
}

/// Something that runs a model: its manifest plus batched inference.
pub trait Infer {
    /// The model's manifest.
    fn spec(&self) -> &ModelSpec;
    /// Provenance of the model and where it runs.
    fn info(&self) -> ModelInfo;
    /// Runs one batch; inputs are named graph inputs in manifest order.
    ///
    /// # Errors
    /// [`ModelError::Inference`] (or another model error) when the run fails.
    fn infer(
        &mut self,
        inputs: Vec<(String, Array4<f32>)>,
    ) -> Result<Vec<(String, ArrayD<f32>)>, ModelError>;
    /// Submits one batch without waiting for it, so the caller can prepare the next batch
    /// while this one runs. The default runs it now.
    fn submit(&mut self, inputs: Vec<(String, Array4<f32>)>) -> Pending {
        Pending::Ready(self.infer(inputs))
    }
    /// How many batches a caller should keep in flight beyond the one it is preparing
    /// (0 for a synchronous model).
    fn depth(&self) -> usize {
        0
    }
    /// The graph's widest feature map, which sizes super-resolution batches
    /// ([`budget`]); `None` when unknown.
    fn feature_width(&self) -> Option<usize> {
        None
    }
}

impl Infer for LoadedModel {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn info(&self) -> ModelInfo {
        ModelInfo::new(&self.spec, &self.graph, self.provider.to_string())
    }
    fn infer(
        &mut self,
        inputs: Vec<(String, Array4<f32>)>,
    ) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
        self.run(inputs)
    }
    fn feature_width(&self) -> Option<usize> {
        self.feature_width
    }
}
