//! ONNX Runtime for s2edge: the runtime library, execution-provider policy, model
//! manifests, the on-disk registry, sessions and inference workers.
//!
//! | module | role |
//! | --- | --- |
//! | [`runtime`] | finds `libonnxruntime.so` (config, `ORT_DYLIB_PATH`, setup.sh's location, Python) and loads it once per process |
//! | [`provider`] | `ExecutionProvider` (tensorrt, cuda, cpu), `[runtime]` options, the fallback policy and its `ProviderReport` |
//! | [`observe`] | the process-wide observer of inference batches (metrics) |
//! | [`manifest`] | `ModelSpec`, the typed and validated `model.toml` (schema 1) |
//! | [`precision`] | `[runtime] precision`: which graph (float32, or the manifest's int8 one) a session loads |
//! | [`registry`] | `models/<name>/<version>/`: complete versions, `name@version` pins, highest valid version, listings |
//! | [`session`] | `LoadedModel`: sha256 and graph-vs-manifest checks, `run`, `smoke_test` |
//! | [`stac`] | a manifest as a STAC Item with the Machine Learning Model extension (MLM) |
//! | [`worker`] | `InferencePool`: OS threads that own their sessions behind a bounded queue |
//! | [`error`] | `ModelError`, with transient/permanent classification |
//!
//! Typical use: [`init_runtime`] with the configured library, [`Registry::resolve`] the
//! configured model, then [`InferencePool::spawn`] workers whose loader calls [`load`]
//! on the resolved directory.
//!
//! Everything here is synchronous; the daemon runs it on dedicated threads.

pub mod error;
pub mod manifest;
pub mod observe;
pub mod precision;
pub mod provider;
pub mod registry;
pub mod runtime;
pub mod session;
pub mod set;
pub mod stac;
pub mod worker;

pub use error::ModelError;
pub use manifest::{ManifestError, ModelSpec, Task, TrainingStatus};
pub use precision::Precision;
pub use provider::{ExecutionProvider, ProviderOptions, ProviderReport};
pub use registry::{ModelListing, ModelRef, Registry, Resolved};
pub use runtime::{
    init_runtime, resolve_library, runtime_info, Arena, EnvOptions, LibrarySearch, RuntimeInfo,
    ThreadPool, DEFAULT_ARENA_INITIAL_CHUNK, MAX_ARENA_INITIAL_CHUNK,
};
pub use session::{load, LoadedModel, TensorInfo};
pub use set::{ModelSelection, ModelSet};
pub use worker::{Batch, InferencePool, Outputs};
