//! The MPI trainer (feature `train`): datasets, burn models, Horovod-style data
//! parallelism, checkpoints, ONNX export and evaluation.
//!
//! | module | role |
//! | --- | --- |
//! | [`config`] | `TrainConfig`, the TOML configuration |
//! | [`data`] | Wald-protocol super-resolution data, sharding, augmentation |
//! | [`dsen2`] | DSen2 network (and GAN generator), GAN discriminator |
//! | [`params`] | parameters and gradients as one flat buffer |
//! | [`dist`] | MPI world: broadcast, gradient all-reduce, collective errors, SIGTERM |
//! | [`sr`] | the `superres` and `gan` training loops |
//! | [`checkpoint`] | atomic checkpoints and `--resume` |
//! | [`export`] | checkpoint → `models/<name>/<version>/` (ONNX + manifest) |
//! | [`resnet`] | ResNet50 with a sigmoid head |
//! | [`bandstats`] | the small classifier: band statistics (+ spectral indicators) → linear |
//! | [`classify`] | the `classify` task: BigEarthNet patches, weighted BCE, F1/AP, export |
//! | [`reben`] | the reBEN encoding: read-only LMDB of safetensors + `metadata.parquet` |
//! | [`prefetch`] | bounded, ordered prefetch pool of loader threads |
//! | [`multilabel`] | multi-label metrics, threshold tuning, the two classical baselines |
//! | [`study`] | the band-set study: RGB, 10 m, 12 bands, 12 with super-resolved bands |
//! | [`eval`] | scores through the inference pipeline next to two baselines |
//! | [`variant`] | an int8 graph scored beside its float graph and recorded in the manifest |
//!
//! Invariants shared by all: only rank 0 writes files (checkpoints, exports); every rank
//! takes part in every collective, including error agreement, so no rank hangs.

pub mod backproject;
pub mod bandstats;
pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod data;
pub mod dist;
pub mod dsen2;
pub mod error;
pub mod eval;
pub mod export;
pub mod multilabel;
pub mod params;
pub mod prefetch;
pub mod reben;
pub mod resnet;
pub mod sr;
pub mod study;
pub mod variant;

pub use config::TrainConfig;
pub use error::TrainError;
