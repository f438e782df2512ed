//! Typed configuration, loaded in layers (DESIGN.md "Configuration"):
//! 1. the embedded defaults (`config/s2edge.toml`, compiled in);
//! 2. `/etc/s2edge/s2edge.toml`, or the file given with `--config`;
//! 3. environment variables `S2EDGE__SECTION__KEY`.
//!
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! [`Settings::validate`] checks what can be checked without running anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::provider::{ExecutionProvider, ProviderOptions};
use crate::model::registry::ModelRef;
use crate::model::set::ModelSelection;
use crate::model::{Arena, EnvOptions, Precision, ThreadPool};
use crate::raster::resample::Kernel;

/// The embedded defaults, annotated: the same file ships as the packaged config.
pub const DEFAULTS: &str = include_str!("../config/s2edge.toml");

/// The system-wide configuration file, used when no `--config` is given.
pub const SYSTEM_CONFIG: &str = "/etc/s2edge/s2edge.toml";

/// Why a configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer does not parse, or a key is unknown or of the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// The file named with `--config` does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// A value parses but cannot work.
    #[error("configuration key {key}: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directories.
    pub paths: PathsConfig,
    /// Readiness rules of the ingest directory.
    pub ingest: IngestConfig,
    /// ONNX Runtime and execution providers.
    pub runtime: RuntimeConfig,
    /// Which models run.
    pub models: ModelsConfig,
    /// What the pipeline produces.
    pub pipeline: PipelineConfig,
    /// Daemon behaviour.
    pub service: ServiceConfig,
    /// The metrics and health endpoint.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[paths]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Where granules are dropped.
    pub ingest: PathBuf,
    /// Claimed granules; on the ingest filesystem since claims are renames.
    pub work: PathBuf,
    /// Published products, `<output>/<granule-id>/`.
    pub output: PathBuf,
    /// Bad granules, each with a `reason.txt`.
    pub quarantine: PathBuf,
    /// Inputs after success when `[ingest] after = "archive"`.
    pub archive: PathBuf,
    /// The model registry, `models/<name>/<version>/`.
    pub models: PathBuf,
    /// The SQLite ledger; a local disk, since WAL does not work on network filesystems.
    pub state: PathBuf,
}

/// How the daemon decides that a granule in the ingest directory is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// A sibling `<entry>.ready` file.
    Marker,
    /// Every file `manifest.safe` lists is present with its listed size.
    Manifest,
    /// Total size and newest mtime unchanged for `quiet_period`.
    Quiet,
}

/// What happens to an input after its product is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterSuccess {
    /// Remove it.
    Delete,
    /// Move it to `[paths] archive`.
    Archive,
}

/// `[ingest]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The readiness rule.
    pub ready: Readiness,
    /// For `quiet`: how long size and mtime must stay unchanged.
    #[serde(with = "humantime_serde")]
    pub quiet_period: Duration,
    /// Periodic rescan, so nothing is missed after an inotify overflow or a restart.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// An input still incomplete after this long is quarantined.
    #[serde(with = "humantime_serde")]
    pub incomplete_timeout: Duration,
    /// Delete or archive inputs after success.
    pub after: AfterSuccess,
    /// For `manifest`: also verify the listed MD5 checksums.
    pub verify_checksums: bool,
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so`; searched when absent (see `model::runtime`).
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers in order of preference.
    pub providers: Vec<ExecutionProvider>,
    /// Refuse to start when no accelerator registers.
    pub require_accelerator: bool,
    /// ONNX Runtime intra-op threads (0 = its default): of the shared pool, or of each
    /// session's with `thread_pool = "per_session"`.
    pub intra_threads: usize,
    /// `"shared"` (one pool for every session) or `"per_session"`; fixed at start-up.
    pub thread_pool: ThreadPool,
    /// `"shared"` (one arena for every CPU session, so models that run in turn reuse the
    /// same memory; sessions on an accelerator keep their own) or `"per_session"` (ONNX
    /// Runtime's default: one each); fixed at start-up.
    pub arena: Arena,
    /// The shared arena's first region, reserved when the runtime loads (at most
    /// 2 GiB − 1 B; only with `arena = "shared"`). Absent: 1.25 GiB
    /// ([`crate::model::DEFAULT_ARENA_INITIAL_CHUNK`]), which holds the shipped models'
    /// working set, so the peak stays flat from 2196² to a full tile (BENCHMARKS.md,
    /// "Capped tiles and one arena region"). `"1MiB"` is ONNX Runtime's own default: a
    /// region of 1 MiB and then regions that double as the arena grows. The reservation
    /// is address space: only the pages used count. Fixed at start-up.
    #[serde(default)]
    pub arena_initial_chunk: Option<ByteSize>,
    /// Let ONNX Runtime's intra-op threads busy-wait between operators (its default);
    /// `false` makes them block, yielding the cores to the pipeline's reader and writer.
    pub spinning: bool,
    /// ONNX Runtime's memory-pattern optimisation: it plans one block per input shape on
    /// the first run of that shape. Off by default: super-resolution tiles come in several
    /// shapes per granule and a first run with the pattern on is slower (BENCHMARKS.md,
    /// "Memory pattern and the tile").
    pub memory_pattern: bool,
    /// Inference worker threads; each owns its sessions.
    pub inference_workers: usize,
    /// Patches or tiles per inference batch: an upper bound; super-resolution batches
    /// are sized from `memory_budget` below it.
    pub batch_size: usize,
    /// Memory one super-resolution batch may take in the inference runtime (its input,
    /// output and activation tensors), e.g. `"1GiB"` or a number of bytes. The batch size
    /// (at most `batch_size`), and the tile if even one tile does not fit, are derived
    /// from it, the model's feature width and the tile area (`pipeline::budget`).
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// TensorRT engine cache directory (engines take minutes to build).
    #[serde(default)]
    pub tensorrt_cache: Option<PathBuf>,
    /// Let TensorRT use fp16 kernels.
    pub tensorrt_fp16: bool,
    /// CUDA device ordinal.
    pub cuda_device: i32,
    /// CUDA memory arena limit in bytes.
    #[serde(default)]
    pub cuda_mem_limit: Option<usize>,
    /// `"float32"` (the trained graphs) or `"int8"`: run a model's int8 graph where its
    /// manifest ships one whose measured cost is within `precision_tolerance_db`, on the
    /// CPU provider (`model::precision`); every other model runs float32, and the log and
    /// the product's warnings say why.
    #[serde(default)]
    pub precision: Precision,
    /// The most SRE, in dB against the float graph on the held-out scene, that an int8
    /// graph may cost to be used.
    #[serde(default = "default_precision_tolerance")]
    pub precision_tolerance_db: f64,
}

/// `[models]`: models by name, optionally pinned as `name@version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// The land-cover classifier.
    pub classifier: String,
    /// The 2× super-resolution model (20 m → 10 m): `dsen2-2x` or `srgan-2x`.
    pub superres_2x: String,
    /// The 6× super-resolution model (60 m → 10 m).
    pub superres_6x: String,
    /// Reprocess `done` granules when a model version changes.
    pub reprocess_on_model_change: bool,
}

/// Which bands the classifier reads for the 20 m and 60 m groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifyInput {
    /// Bicubic-resampled bands, patch by patch, as BigEarthNet's patches were made.
    Resampled,
    /// The super-resolved bands.
    Superres,
}

/// What to do with partial patches at the right and bottom edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgePatches {
    /// Report them with status `edge` and nodata scores.
    Skip,
    /// Classify them, padded by edge replication.
    Pad,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Run the classifier.
    pub classify: bool,
    /// Run super-resolution.
    pub superres: bool,
    /// The classifier's 20 m / 60 m input.
    pub classify_input: ClassifyInput,
    /// Partial edge patches.
    pub edge_patches: EdgePatches,
    /// Patches whose cloud/snow fraction exceeds this are `cloudy` and not classified.
    pub max_cloud_fraction: f64,
    /// Output-grid size of a super-resolution tile at the image edges (before the halo).
    /// Interior tiles are smaller by the widest halo of the models that run
    /// ([`crate::raster::tiling::Cores::capped`]), so that every padded window is at most
    /// `sr_tile` plus one halo, on any size of granule.
    pub sr_tile: usize,
    /// Which super-resolution models run when `superres` is on: any of `2` (20 m → 10 m)
    /// and `6` (60 m → 10 m). The configuration equivalent of `--only superres2x` /
    /// `--only superres6x`; a model that does not run is not loaded, and `superres.tif`
    /// then holds the 10 m bands and the bands of the models that ran.
    #[serde(default = "default_superres_scales")]
    pub superres_scales: Vec<u32>,
    /// Longest side of `quicklook.png`.
    pub quicklook_size: usize,
}

/// `[service]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Granules claimed at once: one is processed while the next waits in the worker,
    /// opened ahead (its reader decodes its first strip meanwhile).
    pub max_in_flight: usize,
    /// SIGTERM drain deadline.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Transient failures retried this many times before quarantine.
    pub retry_limit: u32,
    /// The first retry waits this long; each further one twice as long.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Command and arguments run after each publish, `{product}` replaced; no shell.
    pub on_publish: Vec<String>,
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics` and `/healthz` (loopback by default).
    pub listen: std::net::SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line (for journald / log shippers).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Default filter (`RUST_LOG` overrides it).
    pub level: String,
}

fn default_memory_budget() -> ByteSize {
    ByteSize(1 << 30)
}

fn default_precision_tolerance() -> f64 {
    crate::model::precision::DEFAULT_TOLERANCE_DB
}

/// A size in bytes, written as a number of bytes or a string with a binary or decimal
/// suffix: `"512MiB"`, `"1.5GiB"`, `"2GB"`, `"1048576"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. \"1GiB\", \"512MiB\")"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kib" | "k" => 1024.0,
            "mib" | "m" => 1024.0 * 1024.0,
            "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
                ))
            }
        };
        Ok(ByteSize((value * mult) as u64))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0}MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"1GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn default_superres_scales() -> Vec<u32> {
    vec![2, 6]
}

impl PipelineConfig {
    /// Whether the super-resolution model of `scale` (2 or 6) runs.
    pub fn runs_superres(&self, scale: u32) -> bool {
        self.superres && self.superres_scales.contains(&scale)
    }
}

impl RuntimeConfig {
    /// What these keys fix when the runtime loads (for [`crate::model::init_runtime`]).
    pub fn env_options(&self) -> EnvOptions {
        EnvOptions {
            pool: self.thread_pool,
            intra: self.intra_threads,
            spinning: self.spinning,
            arena: self.arena,
            arena_initial_chunk: match (self.arena_initial_chunk, self.arena) {
                (Some(b), _) => Some(b.0),
                (None, Arena::Shared) => Some(crate::model::DEFAULT_ARENA_INITIAL_CHUNK),
                (None, Arena::PerSession) => None,
            },
        }
    }

    /// The execution-provider policy these keys describe.
    pub fn provider_options(&self) -> ProviderOptions {
        ProviderOptions {
            order: self.providers.clone(),
            require_accelerator: self.require_accelerator,
            intra_threads: self.intra_threads,
            spinning: self.spinning,
            memory_pattern: self.memory_pattern,
            tensorrt_cache: self.tensorrt_cache.clone(),
            tensorrt_fp16: self.tensorrt_fp16,
            cuda_device: self.cuda_device,
            cuda_mem_limit: self.cuda_mem_limit,
            precision: self.precision,
            precision_tolerance_db: self.precision_tolerance_db,
        }
    }
}

impl Settings {
    /// The models the configured stages need.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a model reference that does not parse.
    pub fn model_selection(&self) -> Result<ModelSelection, ConfigError> {
        let parse = |key: &str, value: &str| {
            value
                .parse::<ModelRef>()
                .map_err(|reason| ConfigError::Invalid {
                    key: format!("models.{key}"),
                    reason,
                })
        };
        Ok(ModelSelection {
            classifier: if self.pipeline.classify {
                Some(parse("classifier", &self.models.classifier)?)
            } else {
                None
            },
            superres_2x: if self.pipeline.runs_superres(2) {
                Some(parse("superres_2x", &self.models.superres_2x)?)
            } else {
                None
            },
            superres_6x: if self.pipeline.runs_superres(6) {
                Some(parse("superres_6x", &self.models.superres_6x)?)
            } else {
                None
            },
        })
    }

    /// Loads the layers: defaults, then `file` (or [`SYSTEM_CONFIG`] when `file` is
    /// `None` and it exists), then the environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad key or file.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// Like [`Settings::load`], with the environment given explicitly (tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad key or file.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        match file {
            Some(f) => {
                if !f.is_file() {
                    return Err(ConfigError::Missing(f.to_path_buf()));
                }
                builder = builder.add_source(File::from(f).format(FileFormat::Toml));
            }
            None => {
                if Path::new(SYSTEM_CONFIG).is_file() {
                    builder =
                        builder.add_source(File::with_name(SYSTEM_CONFIG).format(FileFormat::Toml));
                }
            }
        }
        let mut environment = Environment::with_prefix("S2EDGE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("runtime.providers")
            .with_list_parse_key("service.on_publish");
        if let Some(vars) = env {
            environment = environment.source(Some(vars));
        }
        let settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        Ok(settings)
    }

    /// Checks values that parse but cannot work. Filesystem checks (permissions, the
    /// ingest/work filesystem) belong to `s2edge validate`, which runs them on top.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        if self.runtime.providers.is_empty() {
            return Err(invalid(
                "runtime.providers",
                "must list at least one provider, e.g. [\"cpu\"]",
            ));
        }
        if self.runtime.batch_size == 0 {
            return Err(invalid("runtime.batch_size", "must be at least 1"));
        }
        if !(self.runtime.precision_tolerance_db.is_finite()
            && self.runtime.precision_tolerance_db >= 0.0)
        {
            return Err(invalid(
                "runtime.precision_tolerance_db",
                "must be a finite number of dB, 0 or more",
            ));
        }
        if self.runtime.inference_workers == 0 {
            return Err(invalid("runtime.inference_workers", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.pipeline.max_cloud_fraction) {
            return Err(invalid("pipeline.max_cloud_fraction", "must lie in [0, 1]"));
        }
        if self.pipeline.sr_tile < 64 || self.pipeline.sr_tile % 6 != 0 {
            return Err(invalid(
                "pipeline.sr_tile",
                "must be at least 64 and a multiple of 6 (so the 20 m and 60 m grids align)",
            ));
        }
        if self.service.max_in_flight == 0 {
            return Err(invalid("service.max_in_flight", "must be at least 1"));
        }
        if self.pipeline.superres
            && (self.pipeline.superres_scales.is_empty()
                || self
                    .pipeline
                    .superres_scales
                    .iter()
                    .any(|s| *s != 2 && *s != 6))
        {
            return Err(invalid(
                "pipeline.superres_scales",
                "must list 2, 6 or both (the 20 m and 60 m super-resolution models)",
            ));
        }
        if self.runtime.memory_budget.0 < 64 << 20 {
            return Err(invalid(
                "runtime.memory_budget",
                "must be at least 64MiB (the activations of one small tile)",
            ));
        }
        if let Some(chunk) = self.runtime.arena_initial_chunk {
            if self.runtime.arena != Arena::Shared {
                return Err(invalid(
                    "runtime.arena_initial_chunk",
                    "sizes the shared arena: it needs arena = \"shared\"",
                ));
            }
            let max = crate::model::MAX_ARENA_INITIAL_CHUNK;
            if chunk.0 < 1 << 20 || chunk.0 > max {
                return Err(invalid(
                    "runtime.arena_initial_chunk",
                    &format!("must be from 1MiB to {max} bytes (ONNX Runtime takes a C int)"),
                ));
            }
        }
        if !self.pipeline.classify && !self.pipeline.superres {
            return Err(invalid(
                "pipeline",
                "classify and superres are both off: nothing to do",
            ));
        }
        Ok(())
    }

    /// The kernel used for the classifier's 20 m / 60 m bands when they are resampled.
    pub fn classify_kernel(&self) -> Kernel {
        Kernel::Bicubic
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn embedded_defaults_load_and_validate() {
        let s = Settings::load_with_env(None, Some(HashMap::new())).unwrap();
        assert_eq!(s.models.classifier, "ben19-bandstats");
        assert_eq!(s.runtime.providers, vec![ExecutionProvider::Cpu]);
        assert_eq!(s.ingest.quiet_period, Duration::from_secs(30));
        s.validate().unwrap();
    }

    #[test]
    fn environment_overrides_file_and_parses_lists() {
        let env = HashMap::from([
            (
                "S2EDGE__RUNTIME__PROVIDERS".to_string(),
                "cuda,cpu".to_string(),
            ),
            (
                "S2EDGE__PIPELINE__MAX_CLOUD_FRACTION".to_string(),
                "0.5".to_string(),
            ),
            (
                "S2EDGE__MODELS__SUPERRES_2X".to_string(),
                "srgan-2x@3".to_string(),
            ),
        ]);
        let s = Settings::load_with_env(None, Some(env)).unwrap();
        assert_eq!(
            s.runtime.providers,
            vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu]
        );
        assert_eq!(s.pipeline.max_cloud_fraction, 0.5);
        assert_eq!(s.models.superres_2x, "srgan-2x@3");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[pipeline]\nclasify = true\n").unwrap();
        let err = Settings::load_with_env(Some(&f), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("clasify"), "{err}");
    }

    #[test]
    fn thread_pool_and_arena_default_and_parse_their_two_kinds() {
        let s = Settings::load_with_env(None, Some(HashMap::new())).unwrap();
        assert_eq!(
            s.runtime.env_options(),
            EnvOptions {
                pool: ThreadPool::PerSession,
                intra: 0,
                spinning: true,
                arena: Arena::Shared,
                arena_initial_chunk: Some(crate::model::DEFAULT_ARENA_INITIAL_CHUNK),
            }
        );
        let env = HashMap::from([
            (
                "S2EDGE__RUNTIME__THREAD_POOL".to_string(),
                "shared".to_string(),
            ),
            (
                "S2EDGE__RUNTIME__INTRA_THREADS".to_string(),
                "2".to_string(),
            ),
            ("S2EDGE__RUNTIME__SPINNING".to_string(), "false".to_string()),
            (
                "S2EDGE__RUNTIME__ARENA".to_string(),
                "per_session".to_string(),
            ),
        ]);
        let s = Settings::load_with_env(None, Some(env)).unwrap();
        assert_eq!(s.runtime.thread_pool, ThreadPool::Shared);
        assert_eq!(s.runtime.env_options().arena, Arena::PerSession);
        assert_eq!(
            s.runtime.env_options().arena_initial_chunk,
            None,
            "per-session arenas keep ONNX Runtime's own regions"
        );
        assert_eq!(s.runtime.env_options().intra, 2);
        assert!(!s.runtime.env_options().spinning);
        assert!(!s.runtime.provider_options().spinning);
        assert!(
            !s.runtime.provider_options().memory_pattern,
            "off by default"
        );
        let env = HashMap::from([(
            "S2EDGE__RUNTIME__MEMORY_PATTERN".to_string(),
            "true".to_string(),
        )]);
        let s = Settings::load_with_env(None, Some(env)).unwrap();
        assert!(s.runtime.provider_options().memory_pattern);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[runtime]\nthread_pool = \"global\"\n").unwrap();
        let err = Settings::load_with_env(Some(&f), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("global"), "{err}");
        std::fs::write(&f, "[runtime]\narena = \"pooled\"\n").unwrap();
        let err = Settings::load_with_env(Some(&f), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("pooled"), "{err}");
    }

    #[test]
    fn precision_defaults_to_float32_and_parses_int8_with_its_tolerance() {
        let s = Settings::load_with_env(None, Some(HashMap::new())).unwrap();
        let o = s.runtime.provider_options();
        assert_eq!(
            (o.precision, o.precision_tolerance_db),
            (Precision::Float32, 0.25)
        );
        let env = HashMap::from([
            ("S2EDGE__RUNTIME__PRECISION".to_string(), "int8".to_string()),
            (
                "S2EDGE__RUNTIME__PRECISION_TOLERANCE_DB".to_string(),
                "0.5".to_string(),
            ),
        ]);
        let o = Settings::load_with_env(None, Some(env))
            .unwrap()
            .runtime
            .provider_options();
        assert_eq!(
            (o.precision, o.precision_tolerance_db),
            (Precision::Int8, 0.5)
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[runtime]\nprecision = \"fp16\"\n").unwrap();
        let err = Settings::load_with_env(Some(&f), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("fp16"), "{err}");
        std::fs::write(&f, "[runtime]\nprecision_tolerance_db = -1.0\n").unwrap();
        let err = Settings::load_with_env(Some(&f), Some(HashMap::new()))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("precision_tolerance_db"), "{err}");
    }

    #[test]
    fn arena_initial_chunk_parses_a_size_and_needs_the_shared_arena() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[runtime]\narena_initial_chunk = \"1.25GiB\"\n").unwrap();
        let s = Settings::load_with_env(Some(&f), Some(HashMap::new())).unwrap();
        s.validate().unwrap();
        assert_eq!(
            s.runtime.env_options().arena_initial_chunk,
            Some(1_342_177_280)
        );
        for (toml, why) in [
            (
                "arena = \"per_session\"\narena_initial_chunk = \"1GiB\"",
                "needs arena",
            ),
            ("arena_initial_chunk = \"2GiB\"", "C int"),
            ("arena_initial_chunk = 4096", "from 1MiB"),
        ] {
            std::fs::write(&f, format!("[runtime]\n{toml}\n")).unwrap();
            let err = Settings::load_with_env(Some(&f), Some(HashMap::new()))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("arena_initial_chunk") && err.contains(why),
                "{toml}: {err}"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let mut s = Settings::load_with_env(None, Some(HashMap::new())).unwrap();
        s.pipeline.max_cloud_fraction = 1.5;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_cloud_fraction"));
        let err =
            Settings::load_with_env(Some(Path::new("/nonexistent.toml")), Some(HashMap::new()))
                .unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)));
    }
}
