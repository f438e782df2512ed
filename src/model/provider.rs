//! Execution providers (TensorRT, CUDA, CPU) and the policy that picks one per session.
//!
//! Policy (DESIGN.md "EP policy"): the configured providers are tried in order, each
//! registered explicitly on its own session builder so its failure has a real cause
//! (ONNX Runtime says e.g. which `libcublasLt` or `libnvinfer` is missing, or that the
//! build has no such provider). Every failure is logged with `tracing::warn!` and kept in a
//! [`ProviderReport`]. The first provider whose session builds wins; CPU always works and
//! is implicitly last. With `require_accelerator = true`, reaching CPU is an error
//! ([`ModelError::AcceleratorRequired`]) listing every accelerator's failure: a silent CPU
//! fallback on a GPU station is a misconfiguration, not a degraded mode.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ort::ep::ExecutionProvider as OrtExecutionProvider;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::precision::{Precision, DEFAULT_TOLERANCE_DB};

/// An ONNX Runtime execution provider s2edge knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// NVIDIA TensorRT (needs `libnvinfer` on the host and the `onnxruntime-gpu` build).
    #[serde(rename = "tensorrt")]
    TensorRt,
    /// NVIDIA CUDA (needs the CUDA and cuDNN libraries and the `onnxruntime-gpu` build).
    Cuda,
    /// The default CPU provider; always available.
    Cpu,
}

impl ExecutionProvider {
    /// The configuration spelling: `tensorrt`, `cuda`, `cpu`.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::TensorRt => "tensorrt",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Cpu => "cpu",
        }
    }

    /// Whether this is a GPU provider (anything but CPU).
    pub fn is_accelerator(self) -> bool {
        self != ExecutionProvider::Cpu
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(ExecutionProvider::TensorRt),
            "cuda" => Ok(ExecutionProvider::Cuda),
            "cpu" => Ok(ExecutionProvider::Cpu),
            _ => Err(format!(
                "unknown execution provider {s:?}: expected tensorrt, cuda or cpu"
            )),
        }
    }
}

/// Execution-provider settings; the `[runtime]` keys of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderOptions {
    /// Providers to try, in order (`providers = ["tensorrt", "cuda", "cpu"]`). CPU is
    /// implicitly last when absent. Defaults to `["cpu"]` so a CPU host logs no failures.
    #[serde(rename = "providers")]
    pub order: Vec<ExecutionProvider>,
    /// Refuse to run on CPU when every listed accelerator fails.
    pub require_accelerator: bool,
    /// ONNX Runtime intra-op threads per session; 0 keeps ONNX Runtime's default (one per
    /// core). Several inference workers on a small host want 1 or 2 each.
    pub intra_threads: usize,
    /// Let the intra-op threads busy-wait for work between operators (ONNX Runtime's
    /// default); `false` makes them block, which yields the cores to other threads.
    pub spinning: bool,
    /// ONNX Runtime's memory-pattern optimisation (one planned block per input shape,
    /// made on the first run of each shape); off by default, as input shapes vary.
    pub memory_pattern: bool,
    /// TensorRT engine cache directory: building an engine takes minutes, the cache makes
    /// the second start fast.
    pub tensorrt_cache: Option<PathBuf>,
    /// Let TensorRT use fp16 kernels.
    pub tensorrt_fp16: bool,
    /// The GPU to use (CUDA and TensorRT).
    pub cuda_device: i32,
    /// CUDA arena limit in bytes; `None` lets the arena grow.
    pub cuda_mem_limit: Option<usize>,
    /// The graph precision asked for ([`super::precision::choose`]).
    pub precision: Precision,
    /// The most SRE (dB) a reduced-precision graph may cost to be used.
    pub precision_tolerance_db: f64,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            order: vec![ExecutionProvider::Cpu],
            require_accelerator: false,
            intra_threads: 0,
            spinning: true,
            memory_pattern: false,
            tensorrt_cache: None,
            tensorrt_fp16: false,
            cuda_device: 0,
            cuda_mem_limit: None,
            precision: Precision::Float32,
            precision_tolerance_db: DEFAULT_TOLERANCE_DB,
        }
    }
}

impl ProviderOptions {
    /// The providers to try: the configured order up to and including the first `cpu`,
    /// with `cpu` appended when absent (duplicates dropped).
    pub fn effective_order(&self) -> Vec<ExecutionProvider> {
        let mut out = Vec::new();
        for &p in &self.order {
            if !out.contains(&p) {
                out.push(p);
            }
            if p == ExecutionProvider::Cpu {
                return out;
            }
        }
        out.push(ExecutionProvider::Cpu);
        out
    }
}

/// Which provider a session runs on, and why the ones before it were not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReport {
    /// The provider the session was built with.
    pub used: ExecutionProvider,
    /// Each provider tried before `used`, with ONNX Runtime's reason for failing.
    pub failures: Vec<(ExecutionProvider, String)>,
}

impl fmt::Display for ProviderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.used)?;
        for (p, why) in &self.failures {
            write!(f, "; {p} failed: {why}")?;
        }
        Ok(())
    }
}

/// Builds a session from `model` (the verified bytes of `model.onnx`) with the first
/// provider that works.
///
/// `label` names the model (`name@version`) in logs and errors.
///
/// # Errors
/// [`ModelError::AcceleratorRequired`] when `require_accelerator` is set and every
/// accelerator failed; [`ModelError::Session`] when even the CPU session cannot be built
/// (a corrupt graph, an unsupported operator).
pub(crate) fn build_session(
    env: &ort::environment::Environment,
    model: &[u8],
    label: &str,
    opts: &ProviderOptions,
) -> Result<(Session, ProviderReport), ModelError> {
    let mut failures = Vec::new();
    for provider in opts.effective_order() {
        if provider == ExecutionProvider::Cpu && opts.require_accelerator {
            return Err(ModelError::AcceleratorRequired { reasons: failures });
        }
        match try_provider(env, model, provider, opts) {
            Ok(session) => {
                if provider.is_accelerator() {
                    tracing::info!(model = label, %provider, "session on accelerator");
                } else if !failures.is_empty() {
                    tracing::warn!(
                        model = label,
                        "running on CPU: every configured accelerator failed"
                    );
                }
                let report = ProviderReport {
                    used: provider,
                    failures,
                };
                return Ok((session, report));
            }
            Err(reason) if provider.is_accelerator() => {
                tracing::warn!(model = label, %provider, %reason, "execution provider unavailable");
                failures.push((provider, reason));
            }
            Err(reason) => {
                return Err(ModelError::Session {
                    model: label.to_string(),
                    reason,
                })
            }
        }
    }
    // effective_order always ends with Cpu, which returns above.
    Err(ModelError::Session {
        model: label.to_string(),
        reason: "no execution provider configured".into(),
    })
}

/// One attempt: a fresh builder, one provider registered explicitly, the session
/// committed. The reason says which step failed.
fn try_provider(
    env: &ort::environment::Environment,
    model: &[u8],
    provider: ExecutionProvider,
    opts: &ProviderOptions,
) -> Result<Session, String> {
    let mut builder = new_builder(env, opts, provider)
        .map_err(|e| format!("cannot create a session builder: {e}"))?;
    register(&mut builder, provider, opts).map_err(|e| {
        let mut reason = format!("registration failed: {e}");
        if !compiled_in(provider) {
            reason.push_str(&format!(
                " (this ONNX Runtime build has no {} provider: it is a CPU-only build; \
                 GPU hosts need the onnxruntime-gpu library)",
                provider
            ));
        }
        reason
    })?;
    builder
        .commit_from_memory(model)
        .map_err(|e| format!("session creation failed: {e}"))
}

/// A session builder with the per-session keys of `opts`. A CPU session on a runtime
/// loaded with [`super::runtime::Arena::Shared`] takes the environment's arena; sessions
/// on an accelerator keep their own allocators (ONNX Runtime's pinned-memory allocators
/// have had bugs with shared environment allocators, and no GPU host has checked it).
fn new_builder(
    env: &ort::environment::Environment,
    opts: &ProviderOptions,
    provider: ExecutionProvider,
) -> ort::Result<SessionBuilder> {
    let mut builder = Session::builder(env)?.with_memory_pattern(opts.memory_pattern)?;
    if provider == ExecutionProvider::Cpu
        && super::runtime::loaded_arena() == Some(super::runtime::Arena::Shared)
    {
        builder = builder.with_env_allocators()?;
    }
    if !opts.spinning {
        builder = builder.with_intra_op_spinning(false)?;
    }
    if opts.intra_threads > 0 {
        Ok(builder.with_intra_threads(opts.intra_threads)?)
    } else {
        Ok(builder)
    }
}

fn register(
    builder: &mut SessionBuilder,
    provider: ExecutionProvider,
    opts: &ProviderOptions,
) -> ort::Result<()> {
    match provider {
        ExecutionProvider::TensorRt => {
            let mut ep = ort::ep::TensorRT::default()
                .with_device_id(opts.cuda_device)
                .with_fp16(opts.tensorrt_fp16);
            if let Some(cache) = &opts.tensorrt_cache {
                ep = ep
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(cache.display());
            }
            ep.register(builder)
        }
        ExecutionProvider::Cuda => {
            let mut ep = ort::ep::CUDA::default().with_device_id(opts.cuda_device);
            if let Some(limit) = opts.cuda_mem_limit {
                ep = ep.with_memory_limit(limit);
            }
            ep.register(builder)
        }
        // ONNX Runtime's own arena for the CPU provider: `ort::ep::CPU::default()` turns it
        // off, and then every run mallocs its activations afresh (above 32 MiB glibc maps
        // them, so each run page-faults them in and unmaps them again: 40 % of the
        // inference thread's time, BENCHMARKS.md "Profile of the 2× stage").
        ExecutionProvider::Cpu => ort::ep::CPU::default()
            .with_arena_allocator(true)
            .register(builder),
    }
}

/// Whether the loaded ONNX Runtime build lists `provider` at all.
fn compiled_in(provider: ExecutionProvider) -> bool {
    match provider {
        ExecutionProvider::TensorRt => ort::ep::TensorRT::is_available().unwrap_or(false),
        ExecutionProvider::Cuda => ort::ep::CUDA::is_available().unwrap_or(false),
        ExecutionProvider::Cpu => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [
            ExecutionProvider::TensorRt,
            ExecutionProvider::Cuda,
            ExecutionProvider::Cpu,
        ] {
            assert_eq!(p.to_string().parse::<ExecutionProvider>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        assert!("gpu".parse::<ExecutionProvider>().is_err());
    }

    #[test]
    fn options_deserialise_with_defaults_and_config_names() {
        let o: ProviderOptions = toml::from_str(
            r#"providers = ["tensorrt", "cuda", "cpu"]
               require_accelerator = true
               tensorrt_cache = "/var/cache/s2edge/trt"
               cuda_mem_limit = 1073741824"#,
        )
        .unwrap();
        assert_eq!(
            o.order,
            vec![
                ExecutionProvider::TensorRt,
                ExecutionProvider::Cuda,
                ExecutionProvider::Cpu
            ]
        );
        assert!(o.require_accelerator);
        assert_eq!(o.intra_threads, 0);
        assert_eq!(o.cuda_mem_limit, Some(1 << 30));
        let d: ProviderOptions = toml::from_str("").unwrap();
        assert_eq!(d, ProviderOptions::default());
        assert!(toml::from_str::<ProviderOptions>(r#"providers = ["gpu"]"#).is_err());
    }

    #[test]
    fn effective_order_ends_at_cpu() {
        let mut o = ProviderOptions {
            order: vec![ExecutionProvider::Cuda],
            ..Default::default()
        };
        assert_eq!(
            o.effective_order(),
            vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu]
        );
        o.order = vec![
            ExecutionProvider::Cpu,
            ExecutionProvider::Cuda,
            ExecutionProvider::Cuda,
        ];
        assert_eq!(o.effective_order(), vec![ExecutionProvider::Cpu]);
        o.order = vec![];
        assert_eq!(o.effective_order(), vec![ExecutionProvider::Cpu]);
    }
}
