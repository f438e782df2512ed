//! The band-set study (`s2edge-train study --config …`): the same architecture trained on
//! RGB (B02 B03 B04), the four 10 m bands, all 12 bands resampled, and all 12 with the
//! 20 m / 60 m bands super-resolved by the shipped SR models, over several seeds, scored
//! on the evaluation split; one table with the mean and the spread.
//!
//! Invariants: each variant decodes its patches once (through the same per-patch code path
//! as training, [`super::classify::patch_from_scene`]) and every seed trains on exactly
//! those; seeds change initialisation, shuffling and augmentation only; F1 is
//! cross-validated over the evaluation set as in `export`, AP is threshold-free; the
//! two classical baselines are scored on each variant's bands the same way.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use burn::tensor::Device;

use crate::granule::Band;
use crate::model::provider::ProviderOptions;
use crate::model::session::LoadedModel;

use super::classify::{burn_probs, decode_all, evaluate, load_model, Samples};
use super::dist::Dist;
use super::multilabel::ClassifyScores;
use super::{checkpoint, TrainConfig, TrainError};

/// One input variant of the study.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Row label.
    pub name: String,
    /// Input bands.
    pub bands: Vec<Band>,
    /// Whether the coarse bands are super-resolved.
    pub superres: bool,
}

/// The four variants (the last only with super-resolution models given).
pub fn variants(with_superres: bool) -> Vec<Variant> {
    let mut v = vec![
        Variant {
            name: "RGB (B02 B03 B04)".into(),
            bands: vec![Band::B02, Band::B03, Band::B04],
            superres: false,
        },
        Variant {
            name: "10 m (B02 B03 B04 B08)".into(),
            bands: vec![Band::B02, Band::B03, Band::B04, Band::B08],
            superres: false,
        },
        Variant {
            name: "12 bands, resampled".into(),
            bands: Band::PRODUCT.to_vec(),
            superres: false,
        },
    ];
    if with_superres {
        v.push(Variant {
            name: "12 bands, 20/60 m super-resolved".into(),
            bands: Band::PRODUCT.to_vec(),
            superres: true,
        });
    }
    v
}

/// Mean and sample standard deviation of one metric over seeds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub std: f64,
}

fn spread(v: &[f64]) -> Spread {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Spread {
        mean,
        std: var.sqrt(),
    }
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Variant name.
    pub name: String,
    /// Seeds trained.
    pub seeds: usize,
    /// Per-seed scores.
    pub runs: Vec<ClassifyScores>,
    /// Micro F1 over seeds.
    pub micro_f1: Spread,
    /// Macro F1 over seeds.
    pub macro_f1: Spread,
    /// Micro AP over seeds.
    pub micro_ap: Spread,
    /// Macro AP over seeds.
    pub macro_ap: Spread,
    /// Logistic regression on this variant's band mean/std.
    pub logistic: ClassifyScores,
    /// The training-set prior.
    pub prior: ClassifyScores,
}

/// The study's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Training patches.
    pub train_patches: usize,
    /// Evaluation patches.
    pub eval_patches: usize,
    /// Rows, in variant order.
    pub rows: Vec<Row>,
}

impl Report {
    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let f = |s: Spread| format!("{:.3} ± {:.3}", s.mean, s.std);
        let g = |v: f64| format!("{v:.3}");
        let mut out = format!(
            "| input ({} train / {} eval patches) | seeds | micro-F1 | macro-F1 | micro-AP | macro-AP | band-stats logistic micro-F1 / macro-AP |\n| --- | --- | --- | --- | --- | --- | --- |\n",
            self.train_patches, self.eval_patches
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} / {} |\n",
                r.name,
                r.seeds,
                f(r.micro_f1),
                f(r.macro_f1),
                f(r.micro_ap),
                f(r.macro_ap),
                g(r.logistic.micro_f1),
                g(r.logistic.macro_ap),
            ));
        }
        if let Some(r) = self.rows.first() {
            out.push_str(&format!(
                "| training-set prior | – | {} | {} | {} | {} | |\n",
                g(r.prior.micro_f1),
                g(r.prior.macro_f1),
                g(r.prior.micro_ap),
                g(r.prior.macro_ap)
            ));
        }
        out
    }
}

/// Runs the study for `cfg` (its architecture, steps, learning rate and data), `seeds`
/// seeds from `cfg.seed` on, with `superres` models (`models/<name>/<version>`) for the
/// super-resolved variant (omitted when empty). Checkpoints go under
/// `<checkpoint_dir>/study/`. `progress` gets one line per finished run.
///
/// # Errors
/// Data, training and model errors.
pub fn run(
    cfg: &TrainConfig,
    dist: &Dist,
    seeds: usize,
    superres: &[PathBuf],
    progress: &mut dyn FnMut(&str),
) -> Result<Report, TrainError> {
    let train_samples = Samples::open(cfg, cfg.classify.split)?;
    let eval_samples = Samples::open(cfg, cfg.classify.eval_split)?;
    let sr_models: Vec<Mutex<LoadedModel>> = superres
        .iter()
        .map(|d| LoadedModel::load(d, &ProviderOptions::default()).map(Mutex::new))
        .collect::<Result<_, _>>()?;
    let sr_models = Arc::new(sr_models);
    let none = Arc::new(Vec::new());
    let workers = cfg.classify.loader_workers;
    let mut rows = Vec::new();
    let (mut n_train, mut n_eval) = (0, 0);
    for v in variants(!superres.is_empty()) {
        let sr = if v.superres { &sr_models } else { &none };
        let train = decode_all(&train_samples, &v.bands, sr, workers)?;
        let eval = decode_all(&eval_samples, &v.bands, sr, workers)?;
        (n_train, n_eval) = (train.len(), eval.len());
        let decoded = Samples::Decoded(Arc::new(train.clone()));
        let mut runs = Vec::new();
        let mut baselines = None;
        for s in 0..seeds.max(1) {
            let mut c = cfg.clone();
            c.bands = Some(v.bands.iter().map(|b| b.to_string()).collect());
            c.superres_model = None;
            c.seed = cfg.seed + s as u64;
            c.checkpoint_dir =
                cfg.checkpoint_dir
                    .join("study")
                    .join(format!("{}-{}", slug(&v.name), c.seed));
            c.dump_weights = false;
            super::classify::train_on(&c, dist, false, &decoded, Vec::new())?;
            let (_, _, model) =
                load_model(&checkpoint::latest(&c.checkpoint_dir), &Device::flex())?;
            let probs = burn_probs(&model, &eval, v.bands.len());
            let ev = evaluate(
                &probs,
                &eval,
                &train,
                v.bands.len(),
                cfg.classify.threshold_shrink,
            );
            progress(&format!(
                "study: {} seed {}: micro-F1 {:.3} macro-F1 {:.3} micro-AP {:.3} macro-AP {:.3}",
                v.name,
                c.seed,
                ev.model.micro_f1,
                ev.model.macro_f1,
                ev.model.micro_ap,
                ev.model.macro_ap
            ));
            runs.push(ev.model);
            baselines.get_or_insert((ev.logistic, ev.prior));
        }
        let pick = |f: fn(&ClassifyScores) -> f64| spread(&runs.iter().map(f).collect::<Vec<_>>());
        let (logistic, prior) = baselines.unwrap_or((runs[0], runs[0]));
        rows.push(Row {
            name: v.name.clone(),
            seeds: runs.len(),
            micro_f1: pick(|s| s.micro_f1),
            macro_f1: pick(|s| s.macro_f1),
            micro_ap: pick(|s| s.micro_ap),
            macro_ap: pick(|s| s.macro_ap),
            runs,
            logistic,
            prior,
        });
    }
    Ok(Report {
        train_patches: n_train,
        eval_patches: n_eval,
        rows,
    })
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_mean_and_sample_std() {
        let s = spread(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
        assert_eq!(spread(&[0.5]).std, 0.0);
        assert_eq!(variants(false).len(), 3);
        assert!(variants(true)[3].superres);
    }
}
