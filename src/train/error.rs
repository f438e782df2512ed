//! `TrainError`: everything the trainer can fail with, with the context an operator needs
//! (path, band, rank, step).
//!
//! Invariant: every error that can reach the binary is a variant here; burn's panicking
//! paths are kept away from input by validating shapes and data before they reach a tensor.

use std::path::PathBuf;

use crate::granule::{Band, GranuleError};
use crate::model::ModelError;
use crate::pipeline::PipelineError;
use crate::raster::metrics::MetricError;

/// A trainer failure.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration file is missing, unparsable or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A dataset path that does not exist or cannot be read.
    #[error("dataset {path}: {reason}")]
    Dataset {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A granule could not be read.
    #[error("granule {path}: {source}")]
    Granule {
        /// The granule path.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: GranuleError,
    },
    /// A granule or patch lacks a band the task needs.
    #[error("{path}: band {band} is missing")]
    MissingBand {
        /// The granule or patch.
        path: PathBuf,
        /// The missing band.
        band: Band,
    },
    /// A granule too small for the task (after the held-out split and the crop).
    #[error("{path}: {reason}")]
    TooSmall {
        /// The granule.
        path: PathBuf,
        /// Sizes involved.
        reason: String,
    },
    /// More ranks than samples: some rank would train on nothing.
    #[error("empty shard: {samples} training samples for {ranks} ranks (each rank needs at least one batch of {local_batch})")]
    EmptyShard {
        /// Samples available.
        samples: usize,
        /// World size.
        ranks: usize,
        /// Per-rank batch.
        local_batch: usize,
    },
    /// Another rank failed; rank 0 reports the first failure it was told about.
    #[error("rank {rank} failed: {reason}")]
    Remote {
        /// The failing rank.
        rank: usize,
        /// Its error message.
        reason: String,
    },
    /// MPI could not be initialised (already initialised, or no MPI runtime).
    #[error("MPI: {0}")]
    Mpi(String),
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// ONNX export failed.
    #[error("ONNX export of {model}: {reason}")]
    Export {
        /// The model name.
        model: String,
        /// The exporter's message.
        reason: String,
    },
    /// Loading or running an exported model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The inference pipeline failed during evaluation.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A metric could not be computed.
    #[error("metric: {0}")]
    Metric(#[from] MetricError),
    /// A tensor operation returned unusable data.
    #[error("tensor: {0}")]
    Tensor(String),
    /// Training diverged (non-finite loss).
    #[error("step {step}: loss is not finite ({loss})")]
    Diverged {
        /// The step.
        step: u64,
        /// The loss.
        loss: f32,
    },
}

impl TrainError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
