//! `ModelError`: everything that can go wrong between finding the ONNX Runtime library and
//! getting numbers out of a model.
//!
//! Every variant carries its context (the path, the model, the provider) so a log line or a
//! quarantine reason is actionable on its own. [`ModelError::is_transient`] splits the
//! variants into "retry later" (an inference that ran out of memory, an I/O hiccup) and
//! "permanent until someone changes something" (a wrong checksum, a graph that disagrees
//! with its manifest, a missing runtime).

use std::path::PathBuf;

use super::manifest::ManifestError;
use super::provider::ExecutionProvider;

/// How to get the ONNX Runtime library; part of [`ModelError::RuntimeMissing`].
pub const INSTALL_HINT: &str = "run scripts/setup.sh, or `pip install onnxruntime==1.32.0` \
     and set [runtime] onnxruntime / ORT_DYLIB_PATH to its capi/libonnxruntime.so*";

/// An error of the model layer (runtime, manifests, registry, sessions, workers).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No ONNX Runtime shared library was found in any of the places looked at.
    #[error("ONNX Runtime library not found; looked for: {}; to install: {hint}", searched.join(", "))]
    RuntimeMissing {
        /// Every candidate that was tried, in order, with why it did not qualify.
        searched: Vec<String>,
        /// How to install the library.
        hint: String,
    },
    /// A library was found but could not be loaded or initialised.
    #[error(
        "cannot initialise ONNX Runtime from {}: {reason} (s2edge needs ONNX Runtime 1.32, API 31; to install: {})",
        path.display(),
        INSTALL_HINT
    )]
    RuntimeInit {
        /// The library that failed.
        path: PathBuf,
        /// The loader's or the runtime's message.
        reason: String,
    },
    /// A `model.toml` that does not parse or does not validate.
    #[error("bad model manifest {}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: ManifestError,
    },
    /// A graph file (`model.onnx`, or an int8 graph) is not the file the manifest
    /// describes.
    #[error("model {model}: {file} sha256 is {actual} but the manifest says {expected}")]
    ShaMismatch {
        /// `name@version`.
        model: String,
        /// The graph's file name.
        file: String,
        /// The manifest's `onnx_sha256`.
        expected: String,
        /// The digest of the file on disk.
        actual: String,
    },
    /// The graph's inputs or outputs disagree with the manifest.
    #[error("model {model}: graph and manifest disagree: {reason}")]
    IoMismatch {
        /// `name@version`.
        model: String,
        /// Which input or output, and what differs.
        reason: String,
    },
    /// No usable version of the requested model.
    #[error("model {name} not found in {}; available: {}", searched_dir.display(),
        if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NotFound {
        /// The requested name (or `name@version`).
        name: String,
        /// The models directory that was scanned.
        searched_dir: PathBuf,
        /// The complete versions that exist there, as `name@version`.
        available: Vec<String>,
    },
    /// An execution provider could not be used.
    #[error("execution provider {provider}: {reason}")]
    Provider {
        /// The provider.
        provider: ExecutionProvider,
        /// ONNX Runtime's reason.
        reason: String,
    },
    /// `require_accelerator = true` and every accelerator failed.
    #[error(
        "an accelerator is required (require_accelerator = true) but none could be used: {}",
        accelerator_failures(reasons)
    )]
    AcceleratorRequired {
        /// Each accelerator that was tried with the reason it failed.
        reasons: Vec<(ExecutionProvider, String)>,
    },
    /// A session could not be created from a model file that passed its checksum.
    #[error("model {model}: cannot create an ONNX Runtime session: {reason}")]
    Session {
        /// `name@version`.
        model: String,
        /// ONNX Runtime's reason.
        reason: String,
    },
    /// A run failed.
    #[error("model {model}: inference failed: {reason}")]
    Inference {
        /// `name@version`.
        model: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    /// Whether retrying the same work later may succeed.
    ///
    /// An inference that ran out of (device) memory is transient: a smaller batch or a
    /// quieter moment succeeds. So is an I/O error other than "not found". Checksums,
    /// manifests, graph mismatches and missing runtimes are permanent: retrying changes
    /// nothing until someone fixes the installation.
    pub fn is_transient(&self) -> bool {
        match self {
            ModelError::Inference { reason, .. } => is_out_of_memory(reason),
            ModelError::Io { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

fn accelerator_failures(reasons: &[(ExecutionProvider, String)]) -> String {
    if reasons.is_empty() {
        return "[runtime] providers lists no accelerator before cpu".into();
    }
    reasons
        .iter()
        .map(|(p, r)| format!("{p}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether an ONNX Runtime message reports an allocation failure (CPU `bad_alloc`, CUDA or
/// TensorRT out of memory).
fn is_out_of_memory(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "out of memory",
        "bad_alloc",
        "failed to allocate",
        "cudaerrormemoryallocation",
    ]
    .iter()
    .any(|needle| r.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_is_transient_and_checksums_are_not() {
        let oom = ModelError::Inference {
            model: "m@1".into(),
            reason: "CUDA failure 2: out of memory".into(),
        };
        assert!(oom.is_transient());
        let other = ModelError::Inference {
            model: "m@1".into(),
            reason: "Invalid rank for input".into(),
        };
        assert!(!other.is_transient());
        let sha = ModelError::ShaMismatch {
            model: "m@1".into(),
            file: "model.onnx".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert!(!sha.is_transient());
        assert!(sha.to_string().contains("aa") && sha.to_string().contains("bb"));
    }

    #[test]
    fn accelerator_required_lists_each_failure() {
        let e = ModelError::AcceleratorRequired {
            reasons: vec![
                (ExecutionProvider::TensorRt, "no libnvinfer.so.10".into()),
                (ExecutionProvider::Cuda, "no libcublasLt.so.13".into()),
            ],
        };
        let msg = e.to_string();
        assert!(
            msg.contains("tensorrt: no libnvinfer.so.10; cuda: no libcublasLt.so.13"),
            "{msg}"
        );
        let none = ModelError::AcceleratorRequired { reasons: vec![] };
        assert!(none.to_string().contains("lists no accelerator"));
    }

    #[test]
    fn runtime_missing_says_how_to_install() {
        let e = ModelError::RuntimeMissing {
            searched: vec!["/x/libonnxruntime.so (absent)".into()],
            hint: INSTALL_HINT.into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("/x/libonnxruntime.so"));
        assert!(msg.contains("scripts/setup.sh"));
        assert!(msg.contains("pip install onnxruntime==1.32.0"));
        assert!(msg.contains("ORT_DYLIB_PATH"));
    }
}
