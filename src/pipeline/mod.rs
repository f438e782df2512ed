//! The processing stages, as synchronous functions over rasters:
//! [`scene`] (harmonised input), [`superres`] (tiled super-resolution), [`classify`]
//! (patch classification), and [`process`] (one granule in, one published product out).
//!
//! Models are reached through the [`Infer`] trait, so a stage runs the same on a
//! session owned by the calling thread or on an inference worker.

pub mod classify;
pub mod error;
pub mod process;
pub mod scene;
pub mod superres;
pub mod tensor;

use ndarray::{Array4, ArrayD};
use serde::Serialize;

pub use error::PipelineError;

use crate::model::manifest::{ModelSpec, TrainingStatus};
use crate::model::session::LoadedModel;
use crate::model::ModelError;

/// What a product's provenance records about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// SHA-256 of `model.onnx`.
    pub sha256: String,
    /// Trained or untrained.
    pub status: TrainingStatus,
    /// The execution provider in use.
    pub provider: String,
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
}

impl Infer for LoadedModel {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.spec.name.clone(),
            version: self.spec.version,
            sha256: self.sha256.clone(),
            status: self.spec.training.status,
            provider: self.provider.to_string(),
        }
    }
    fn infer(
        &mut self,
        inputs: Vec<(String, Array4<f32>)>,
    ) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
        self.run(inputs)
    }
}
