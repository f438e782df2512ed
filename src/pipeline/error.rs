//! Typed errors of the pipeline stages: each wraps the domain error it came from, so
//! the daemon can tell transient from permanent failures.

use crate::granule::{Band, GranuleError};
use crate::model::ModelError;
use crate::product::ProductError;

/// Why processing a granule failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be read.
    #[error(transparent)]
    Granule(#[from] GranuleError),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A product could not be written or published.
    #[error(transparent)]
    Product(#[from] ProductError),
    /// The granule lacks a band a model needs.
    #[error("granule {id}: model {model} needs band {band}, which the granule lacks")]
    MissingBand {
        /// Granule id.
        id: String,
        /// Model name.
        model: String,
        /// The band.
        band: Band,
    },
    /// A model's output does not have the shape its manifest promises.
    #[error("model {model}: output {output}: {reason}")]
    BadOutput {
        /// Model name.
        model: String,
        /// Output name.
        output: String,
        /// What is wrong.
        reason: String,
    },
    /// A band holds no measurement: every pixel is nodata (DN 0) or saturated (DN 65535).
    /// Refused as soon as the band is decoded, before any stage runs.
    #[error("granule {id}: band {band} holds no valid pixel (every pixel is {what}); nothing to process")]
    NoValidPixels {
        /// Granule id.
        id: String,
        /// The band.
        band: Band,
        /// "nodata (DN 0)", "saturated (DN 65535)" or both.
        what: &'static str,
    },
    /// The options ask for something that cannot work together.
    #[error("pipeline: {0}")]
    Options(String),
}

impl PipelineError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Granule(e) => e.is_transient(),
            PipelineError::Model(e) => e.is_transient(),
            PipelineError::Product(e) => e.is_transient(),
            _ => false,
        }
    }
}
