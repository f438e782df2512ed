//! `TrainConfig`: the trainer's TOML configuration, read with the `config` crate (file,
//! then `S2EDGE_TRAIN__KEY` environment overrides).
//!
//! Invariants: unknown keys are errors (`deny_unknown_fields`); [`TrainConfig::validate`]
//! rejects values that would only fail later inside a tensor operation (zero batch, a patch
//! smaller than the receptive field, a global batch that does not split evenly over the
//! ranks).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// DSen2 super-resolution under Wald's protocol, L1 loss.
    Superres,
    /// SRGAN-style: DSen2-like generator with LeakyReLU plus a discriminator.
    Gan,
    /// ResNet50 multi-label classification on BigEarthNet patches.
    Classify,
}

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (β = 0.9, 0.999).
    Adam,
    /// Plain SGD (used by the equivalence test: no per-parameter normalisation).
    Sgd,
}

/// Which rows of each granule are held out from training (and scored by `eval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holdout {
    /// Train on everything.
    None,
    /// Train on the top two thirds, hold out the bottom third.
    BottomThird,
}

/// How the learning rate moves over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `lr` throughout.
    #[default]
    Constant,
    /// Half a cosine from `lr` at step 0 to `lr_min` at `steps`.
    Cosine,
}

/// A split of reBEN's `metadata.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSplit {
    /// `train`.
    Train,
    /// `validation`.
    Validation,
    /// `test`.
    Test,
}

impl std::fmt::Display for DataSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataSplit::Train => "train",
            DataSplit::Validation => "validation",
            DataSplit::Test => "test",
        })
    }
}

/// The classifier architecture (`classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierArch {
    /// ResNet50 (23.5 M parameters).
    #[default]
    Resnet50,
    /// Band statistics (+ `hidden` spectral indicators) into a linear layer.
    Bandstats,
}

/// `[classify]`: the classifier task's own keys (reBEN data, architecture, class
/// imbalance, thresholds, loader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// reBEN's `metadata.parquet`. `data` is then the LMDB folder
    /// (`BigEarthNet-S2-LMDB/`, opened read-only without a lock file).
    #[serde(default)]
    pub metadata: Option<PathBuf>,
    /// The reBEN split trained on.
    #[serde(default = "default_split")]
    pub split: DataSplit,
    /// The reBEN split `export` scores and tunes the thresholds on.
    #[serde(default = "default_eval_split")]
    pub eval_split: DataSplit,
    /// The architecture.
    #[serde(default)]
    pub arch: ClassifierArch,
    /// `bandstats`: learned spectral indicators (0: logistic regression on band mean/std).
    #[serde(default)]
    pub hidden: usize,
    /// Loader threads per rank (decoding ahead of the step).
    #[serde(default = "default_loader_workers")]
    pub loader_workers: usize,
    /// Decoded patches in flight per rank (bounds the loader's memory).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Exponent `p` of the positive weight `(negatives/positives)^p` of the weighted BCE,
    /// frequencies from the training split (1: balanced, 0: plain BCE).
    #[serde(default = "default_pos_weight_power")]
    pub pos_weight_power: f64,
    /// Decoupled L2 weight decay of the optimiser (0: none).
    #[serde(default)]
    pub weight_decay: f64,
    /// Pseudo-count shrinking each class's tuned threshold toward the global one
    /// (`t = (n·t_class + k·t_global)/(n + k)`, `n` validation positives).
    #[serde(default = "default_threshold_shrink")]
    pub threshold_shrink: f64,
}

impl Default for ClassifyConfig {
    fn default() -> ClassifyConfig {
        ClassifyConfig {
            metadata: None,
            split: default_split(),
            eval_split: default_eval_split(),
            arch: ClassifierArch::default(),
            hidden: 0,
            loader_workers: default_loader_workers(),
            prefetch: default_prefetch(),
            pos_weight_power: default_pos_weight_power(),
            weight_decay: 0.0,
            threshold_shrink: default_threshold_shrink(),
        }
    }
}

fn default_split() -> DataSplit {
    DataSplit::Train
}
fn default_eval_split() -> DataSplit {
    DataSplit::Validation
}
fn default_loader_workers() -> usize {
    2
}
fn default_prefetch() -> usize {
    16
}
fn default_pos_weight_power() -> f64 {
    1.0
}
fn default_threshold_shrink() -> f64 {
    5.0
}

/// The trainer configuration (one TOML file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// What is trained.
    pub task: TaskKind,
    /// The exported model's name (`models/<name>/<version>/`).
    pub name: String,
    /// The exported version.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Granules (any readable form) or BigEarthNet patch folders / their parent folder.
    pub data: Vec<PathBuf>,
    /// Rows held out of training.
    #[serde(default = "default_holdout")]
    pub holdout: Holdout,
    /// Super-resolution scale: 2 (20 m bands) or 6 (60 m bands).
    #[serde(default = "default_scale")]
    pub scale: usize,
    /// Patch side at the degraded 10 m grid (superres/gan) in pixels.
    #[serde(default = "default_patch")]
    pub patch: usize,
    /// Residual blocks of the DSen2 body.
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    /// Feature maps of the DSen2 body.
    #[serde(default = "default_features")]
    pub features: usize,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Global batch (split evenly over the ranks).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// The optimiser.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// Shuffle the sample order each epoch (same permutation on every rank).
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Random flips and 90° rotations.
    #[serde(default = "default_true")]
    pub augment: bool,
    /// Seed of initialisation, shuffling and augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where checkpoints go (rank 0 writes them).
    pub checkpoint_dir: PathBuf,
    /// Checkpoint every this many steps (0: only at the end and on SIGTERM).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Where `export` writes `<name>/<version>/`.
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// Log every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Weight of the adversarial loss (gan).
    #[serde(default = "default_adv_weight")]
    pub adversarial_weight: f32,
    /// Band subset for `classify` (default: all 12 BigEarthNet bands).
    #[serde(default)]
    pub bands: Option<Vec<String>>,
    /// Official split CSV for `classify` (patch names, one per line).
    #[serde(default)]
    pub split_csv: Option<PathBuf>,
    /// `classify`: train on patches whose 20/60 m bands were super-resolved by this model
    /// directory (a `models/<name>/<version>` path) instead of resampled.
    #[serde(default)]
    pub superres_model: Option<PathBuf>,
    /// `[classify]`: the classifier task's own keys.
    #[serde(default)]
    pub classify: ClassifyConfig,
    /// Every rank writes its final weights to `<checkpoint_dir>/weights.rank<r>.f32`
    /// (tests compare them).
    #[serde(default)]
    pub dump_weights: bool,
    /// superres/gan: back-projection steps inside the graph after the residual
    /// (`train::backproject`; 0: plain DSen2, as versions 1 and 2).
    #[serde(default)]
    pub backprojection_steps: usize,
    /// superres/gan: blur augmentation. Each training region is degraded once per factor,
    /// with σ = factor × scale/2 instead of the standard σ (empty: the standard only), so
    /// the network holds when the real sensor blur is not the assumed one.
    #[serde(default)]
    pub blur_factors: Vec<f32>,
    /// superres/gan: start the network (the GAN's generator) from the weights of this
    /// super-resolution checkpoint directory (a `latest/` of the same scale, blocks and
    /// features), e.g. a GAN from a trained DSen2. Ignored with `--resume`.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// gan: the generator's LeakyReLU slope (default 0.2). 0 makes the generator the
    /// DSen2 network itself, so it can start from a trained dsen2 (`init_from`), the
    /// SRGAN recipe: a content-loss network first, adversarial fine-tuning after.
    #[serde(default)]
    pub generator_slope: Option<f32>,
    /// The learning-rate schedule over `steps`.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The final learning rate of the `cosine` schedule.
    #[serde(default)]
    pub lr_min: f64,
    /// superres/gan: reBEN's `metadata.parquet`, needed when a `data` entry is a reBEN
    /// LMDB folder (`BigEarthNet-S2-LMDB/`): the patches of `reben_split` listed there
    /// are read from it, each as a whole 1.2 km scene.
    #[serde(default)]
    pub reben_metadata: Option<PathBuf>,
    /// superres/gan: the reBEN split read from an LMDB `data` entry.
    #[serde(default = "default_split")]
    pub reben_split: DataSplit,
}

fn default_version() -> u32 {
    1
}
fn default_holdout() -> Holdout {
    Holdout::BottomThird
}
fn default_scale() -> usize {
    2
}
fn default_patch() -> usize {
    32
}
fn default_blocks() -> usize {
    6
}
fn default_features() -> usize {
    32
}
fn default_lr() -> f64 {
    1e-3
}
fn default_batch() -> usize {
    8
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adam
}
fn default_true() -> bool {
    true
}
fn default_seed() -> u64 {
    42
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_log_every() -> u64 {
    10
}
fn default_adv_weight() -> f32 {
    1e-3
}

impl TrainConfig {
    /// The learning rate of optimiser step `step` (0-based) under `lr_schedule`.
    pub fn lr_at(&self, step: u64) -> f64 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let t = step as f64 / self.steps.max(1) as f64;
                self.lr_min
                    + 0.5 * (self.lr - self.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }

    /// Reads `path` (TOML) plus `S2EDGE_TRAIN__KEY` environment overrides and validates.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<TrainConfig, TrainError> {
        if !path.is_file() {
            return Err(TrainError::Config(format!(
                "{}: no such configuration file",
                path.display()
            )));
        }
        let cfg: TrainConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("S2EDGE_TRAIN")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that would otherwise fail deep inside training.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch == 0 {
            return bad("batch must be at least 1".into());
        }
        if self.data.is_empty() {
            return bad("data lists no dataset".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if matches!(self.task, TaskKind::Superres | TaskKind::Gan) {
            if self.scale != 2 && self.scale != 6 {
                return bad(format!("scale must be 2 or 6, got {}", self.scale));
            }
            if self.patch < 8 {
                return bad(format!("patch must be at least 8 px, got {}", self.patch));
            }
            if self.blocks == 0 || self.features == 0 {
                return bad("blocks and features must be at least 1".into());
            }
            if let Some(f) = self
                .blur_factors
                .iter()
                .find(|f| !(f.is_finite() && **f > 0.0))
            {
                return bad(format!("blur_factors must be positive, got {f}"));
            }
            if self.backprojection_steps > 0 && self.patch % self.scale != 0 {
                return bad(format!(
                    "patch {} must be a multiple of scale {} with back-projection (it runs on the coarse grid)",
                    self.patch, self.scale
                ));
            }
            if self.backprojection_steps > 20 {
                return bad(format!(
                    "backprojection_steps {} is more than 20 (each step widens the tiling halo)",
                    self.backprojection_steps
                ));
            }
        }
        Ok(())
    }

    /// The per-rank batch for `ranks` ranks.
    ///
    /// # Errors
    /// [`TrainError::Config`] when the global batch does not split evenly: unequal local
    /// batches would weight the ranks' gradients unequally in the average.
    pub fn local_batch(&self, ranks: usize) -> Result<usize, TrainError> {
        if ranks == 0 || self.batch % ranks != 0 || self.batch < ranks {
            return Err(TrainError::Config(format!(
                "batch {} does not split evenly over {ranks} ranks",
                self.batch
            )));
        }
        Ok(self.batch / ranks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_runs_from_lr_to_lr_min() {
        let text = "task = \"superres\"\nname = \"m\"\ndata = []\nsteps = 100\nlr = 0.001\ncheckpoint_dir = \"c\"\n";
        let constant: TrainConfig = toml::from_str(text).unwrap();
        assert_eq!(constant.lr_schedule, LrSchedule::Constant);
        assert_eq!(constant.lr_at(0), 0.001);
        assert_eq!(constant.lr_at(99), 0.001);
        let cosine: TrainConfig = toml::from_str(&format!(
            "{text}lr_schedule = \"cosine\"\nlr_min = 0.0001\n"
        ))
        .unwrap();
        assert!((cosine.lr_at(0) - 0.001).abs() < 1e-12);
        assert!(
            (cosine.lr_at(50) - 0.00055).abs() < 1e-12,
            "midway: the mean"
        );
        assert!((cosine.lr_at(100) - 0.0001).abs() < 1e-12);
        assert!(cosine.lr_at(30) > cosine.lr_at(31), "decreasing");
    }
}
