//! `s2edge-train`: the MPI trainer (DESIGN.md "Training"). Thin: parses the command
//! line, runs the library, maps errors to exit codes (1 failure, 2 usage/configuration).
//!
//! ```text
//! mpirun -n 2 s2edge-train train --config train.toml [--resume]
//! s2edge-train export --config train.toml [--eval-data GRANULE]
//! s2edge-train eval --model models/dsen2-2x/2 --data GRANULE [--holdout none]
//!     [--fit-data OTHER_GRANULE,…] [--blur-factor 1.4]
//! s2edge-train variant --model models/dsen2-2x/5 --graph model.int8.onnx --method "…"
//!     --data GRANULE [--holdout none]
//! s2edge-train study --config config/train/ben19-bandstats.toml [--seeds 3] [--superres-model DIR]...
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use s2edge::model::TrainingStatus;
use s2edge::train::config::{Holdout, TaskKind};
use s2edge::train::dist::{install_stop_handler, Dist};
use s2edge::train::{TrainConfig, TrainError};

#[derive(Parser)]
#[command(
    name = "s2edge-train",
    version,
    about = "Data-parallel (MPI) trainer for s2edge's models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum HoldoutArg {
    None,
    BottomThird,
}

impl From<HoldoutArg> for Holdout {
    fn from(h: HoldoutArg) -> Holdout {
        match h {
            HoldoutArg::None => Holdout::None,
            HoldoutArg::BottomThird => Holdout::BottomThird,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Trains the task of the configuration (run under `mpirun -n N`).
    Train {
        /// The TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Continue from `<checkpoint_dir>/latest`.
        #[arg(long)]
        resume: bool,
        /// classify: train on this band subset (e.g. `B02,B03,B04`); overrides `bands`.
        #[arg(long, value_delimiter = ',')]
        bands: Option<Vec<String>>,
        /// classify: train on patches whose coarse bands this super-resolution model
        /// (`models/<name>/<version>`) super-resolved; overrides `superres_model`.
        #[arg(long)]
        superres_model: Option<PathBuf>,
    },
    /// Exports the latest checkpoint to `<models_dir>/<name>/<version>/`.
    Export {
        /// The TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Score the export on this granule's held-out region and record the metrics.
        #[arg(long)]
        eval_data: Option<PathBuf>,
        /// A note for the manifest's `[training] notes`.
        #[arg(long)]
        notes: Option<String>,
        /// superres: fit the linear baseline on these whole granules instead of the
        /// evaluated granule's training region (scoring a scene the model never saw).
        #[arg(long, value_delimiter = ',')]
        fit_data: Vec<PathBuf>,
        /// Record the model as untrained (classify: e.g. a few steps on example patches).
        #[arg(long)]
        untrained: bool,
    },
    /// classify: trains the configured architecture on RGB, the 10 m bands, all 12 bands
    /// and all 12 with super-resolved 20/60 m bands, over seeds; prints one table.
    Study {
        /// The TOML configuration (a `classify` task).
        #[arg(long)]
        config: PathBuf,
        /// Seeds per variant.
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Super-resolution model directories for the super-resolved variant (repeat for
        /// the 2x and 6x models); without any, that variant is left out.
        #[arg(long)]
        superres_model: Vec<PathBuf>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Scores a super-resolution model through the pipeline next to both baselines.
    Eval {
        /// The model version directory (`models/<name>/<version>`).
        #[arg(long)]
        model: PathBuf,
        /// The granule.
        #[arg(long)]
        data: PathBuf,
        /// Which region to score (the linear baseline is fitted on the rest).
        #[arg(long, value_enum, default_value = "bottom-third")]
        holdout: HoldoutArg,
        /// Pipeline tile size.
        #[arg(long, default_value_t = 512)]
        tile: usize,
        /// Fit the linear baseline on these whole granules instead of the evaluated
        /// granule's training region (a scene the model never saw: `--holdout none`).
        #[arg(long, value_delimiter = ',')]
        fit_data: Vec<PathBuf>,
        /// Blur mismatch: degrade the scored scene with σ = this × scale/2 while the models
        /// and the baseline fit assume the standard σ (e.g. 0.7 or 1.4).
        #[arg(long, default_value_t = 1.0)]
        blur_factor: f32,
    },
    /// Scores an int8 graph of a super-resolution model beside its float graph (the
    /// `eval` scores, one run) and records it as `[precision.int8]` in the manifest.
    Variant {
        /// The model version directory (`models/<name>/<version>`).
        #[arg(long)]
        model: PathBuf,
        /// The int8 graph's file name in that directory (`scripts/quantise_int8.py`).
        #[arg(long, default_value = "model.int8.onnx")]
        graph: String,
        /// How the graph was made, for the manifest.
        #[arg(long)]
        method: String,
        /// The granule to score on (a scene the model never saw).
        #[arg(long)]
        data: PathBuf,
        /// Which region to score.
        #[arg(long, value_enum, default_value = "bottom-third")]
        holdout: HoldoutArg,
        /// Pipeline tile size.
        #[arg(long, default_value_t = 512)]
        tile: usize,
    },
}

fn exit_code(e: &TrainError) -> u8 {
    match e {
        TrainError::Config(_) => 2,
        _ => 1,
    }
}

fn run_train(
    config: PathBuf,
    resume: bool,
    bands: Option<Vec<String>>,
    superres_model: Option<PathBuf>,
) -> Result<(), TrainError> {
    let dist = Dist::init()?;
    install_stop_handler();
    // Every rank reads the same file, so a configuration error is the same on every rank
    // and each exits with 2 (no collective needed).
    let mut cfg = TrainConfig::load(&config).map_err(|e| quiet_unless_root(&dist, e))?;
    if bands.is_some() {
        cfg.bands = bands;
    }
    if superres_model.is_some() {
        cfg.superres_model = superres_model;
    }
    let res = match cfg.task {
        TaskKind::Superres | TaskKind::Gan => s2edge::train::sr::train(&cfg, &dist, resume),
        TaskKind::Classify => s2edge::train::classify::train(&cfg, &dist, resume),
    };
    match res {
        Ok(out) => {
            if dist.is_root() {
                eprintln!(
                    "s2edge-train: {} steps, loss {:.5}, {:.2} steps/s on {} rank(s), allreduce {:.1}% of step time{}",
                    out.steps,
                    out.loss,
                    out.steps_per_s,
                    dist.size,
                    100.0 * out.allreduce_fraction,
                    out.checkpoint
                        .map(|p| format!(", checkpoint {}", p.display()))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Err(e) => Err(quiet_unless_root(&dist, e)),
    }
}

fn run_study(
    config: PathBuf,
    seeds: usize,
    superres: Vec<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), TrainError> {
    let dist = Dist::init()?;
    let cfg = TrainConfig::load(&config)?;
    if cfg.task != TaskKind::Classify {
        return Err(TrainError::Config(
            "study needs a classify configuration".into(),
        ));
    }
    let report = s2edge::train::study::run(&cfg, &dist, seeds, &superres, &mut |l| {
        eprintln!("s2edge-train: {l}")
    })?;
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))?;
    }
    print!("{}", report.markdown());
    Ok(())
}

/// Errors every rank meets alike (configuration, data, an empty shard) are reported
/// once, by rank 0; another rank prints only an error of its own. A silenced error keeps
/// its exit code (an empty message marks it silent).
fn quiet_unless_root(dist: &Dist, e: TrainError) -> TrainError {
    if dist.is_root() {
        return e;
    }
    match e {
        TrainError::Config(_) => TrainError::Config(String::new()),
        TrainError::Remote { .. } | TrainError::EmptyShard { .. } => TrainError::Remote {
            rank: dist.rank,
            reason: String::new(),
        },
        other => other,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Train {
            config,
            resume,
            bands,
            superres_model,
        } => run_train(config, resume, bands, superres_model),
        Cmd::Export {
            config,
            eval_data,
            notes,
            fit_data,
            untrained,
        } => TrainConfig::load(&config).and_then(|cfg| {
            let ckpt = s2edge::train::checkpoint::latest(&cfg.checkpoint_dir);
            if cfg.task == TaskKind::Classify {
                let status = if untrained {
                    TrainingStatus::Untrained
                } else {
                    TrainingStatus::Trained
                };
                let dir = s2edge::train::classify::export(&cfg, &ckpt, status, notes)?;
                println!("{}", dir.display());
                return Ok(());
            }
            let opts = s2edge::train::eval::EvalOptions {
                fit: fit_data,
                ..Default::default()
            };
            let (dir, report) = s2edge::train::export::export_superres_with(
                &cfg,
                &ckpt,
                eval_data.as_deref(),
                notes,
                &opts,
            )?;
            println!("{}", dir.display());
            if let Some(r) = report {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            }
            Ok(())
        }),
        Cmd::Study {
            config,
            seeds,
            superres_model,
            json,
        } => run_study(config, seeds, superres_model, json),
        Cmd::Eval {
            model,
            data,
            holdout,
            tile,
            fit_data,
            blur_factor,
        } => {
            let h = holdout.into();
            if !(blur_factor.is_finite() && blur_factor > 0.0) {
                eprintln!("s2edge-train: error: --blur-factor must be positive, got {blur_factor}");
                return ExitCode::from(2);
            }
            let opts = s2edge::train::eval::EvalOptions {
                fit: fit_data,
                blur_factor,
            };
            s2edge::train::eval::evaluate_with(&model, &data, h, tile, &opts).map(|r| {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            })
        }
        Cmd::Variant {
            model,
            graph,
            method,
            data,
            holdout,
            tile,
        } => s2edge::train::variant::record_int8(
            &model,
            &graph,
            &method,
            &data,
            holdout.into(),
            tile,
            &s2edge::train::eval::EvalOptions::default(),
        )
        .map(|r| {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(TrainError::Remote { reason, .. }) if reason.is_empty() => ExitCode::from(1),
        Err(TrainError::Config(m)) if m.is_empty() => ExitCode::from(2),
        Err(e) => {
            eprintln!("s2edge-train: error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
