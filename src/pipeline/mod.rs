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

pub use error::PipelineError;

use crate::model::manifest::ModelSpec;
use crate::model::session::LoadedModel;
use crate::model::ModelError;

/// Something that runs a model: its manifest plus batched inference.
pub trait Infer {
    /// The model's manifest.
    fn spec(&self) -> &ModelSpec;
    /// Runs one batch; inputs are named graph inputs in manifest order.
    ///
    /// # Errors
    /// [`ModelError::Inference`] (or another model error) when the run fails.
    fn infer(&mut self, inputs: Vec<(String, Array4<f32>)>) -> Result<Vec<(String, ArrayD<f32>)>, ModelError>;
}

impl Infer for LoadedModel {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn infer(&mut self, inputs: Vec<(String, Array4<f32>)>) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
        self.run(inputs)
    }
}
