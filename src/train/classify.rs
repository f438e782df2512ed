//! The `classify` task: ResNet50 on BigEarthNet v1 patch folders, weighted binary
//! cross-entropy, micro/macro F1 and AP, export as `probs` with the sigmoid inside.
//!
//! Invariants:
//! - every rank lists the patches (cheap), then opens only its own shard (patch `i` goes
//!   to rank `i mod size`), reading pixels lazily per step, so memory does not grow with
//!   the dataset;
//! - a patch missing a band is an error (agreed by all ranks); a patch whose pixels cannot
//!   be read is skipped and counted;
//! - inputs are harmonised DN, coarse bands upsampled bilinearly patch by patch (as the
//!   pipeline's classifier input), normalised with BigEarthNet's per-band mean/std —
//!   exactly what the manifest records;
//! - BatchNorm running statistics are averaged over the ranks before every checkpoint, so
//!   the exported model does not depend on rank 0's shard alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use crate::granule::bigearthnet::is_patch_folder;
use crate::granule::labels::NAMES_19;
use crate::granule::{Band, GranuleSource};
use crate::model::manifest::{
    ClassifySpec, InputSpec, IoMap, Normalisation, OutputKind, OutputSpec, ProductLevel, Task,
    TrainingInfo, TrainingStatus, UpsampleKernel, SUPPORTED_SCHEMA,
};
use crate::model::provider::ProviderOptions;
use crate::model::session::LoadedModel;
use crate::model::ModelSpec;
use crate::pipeline::scene::Scene;
use crate::pipeline::superres::{superres, SrTiling};
use crate::raster::radiometry::{harmonise, to_f32};
use crate::raster::resample::{upsample, Kernel};
use crate::raster::Raster;

use super::checkpoint::{self, CheckpointState, NetState};
use super::data::{epoch_order, Rng};
use super::dist::{stop_requested, Dist};
use super::params::{buffer_mask, flatten, flatten_grads, unflatten, unflatten_grads};
use super::resnet::ResNet50;
use super::sr::{dump_weights, make_optim};
use super::{TrainConfig, TrainError};

/// BigEarthNet's 12 bands in official order: the products' band order.
pub const BEN_BANDS: [Band; 12] = Band::PRODUCT;

/// BigEarthNet's official per-band mean (DN), in [`BEN_BANDS`] order (as published;
/// `f64` keeps every published digit, the network sees them as `f32`).
pub const BEN_MEAN: [f64; 12] = [
    340.76769, 429.94302, 614.21682, 590.2357, 950.68368, 1792.4629, 2075.46795, 2218.94553,
    2266.46037, 2246.06055, 1594.42695, 1009.32729,
];
/// BigEarthNet's official per-band standard deviation (DN).
pub const BEN_STD: [f64; 12] = [
    554.81259, 572.41639, 582.87946, 675.88747, 729.89828, 1096.01481, 1273.45393, 1365.4559,
    1356.13789, 1302.32929, 1079.19066, 818.86747,
];

/// Patch side on the 10 m grid.
pub const PATCH: usize = 120;
/// Classes.
pub const CLASSES: usize = 19;

/// The configured bands (default all 12), validated.
///
/// # Errors
/// [`TrainError::Config`] for an unknown band or one BigEarthNet lacks.
pub fn bands_of(cfg: &TrainConfig) -> Result<Vec<Band>, TrainError> {
    match &cfg.bands {
        None => Ok(BEN_BANDS.to_vec()),
        Some(list) => list
            .iter()
            .map(|s| {
                BEN_BANDS
                    .iter()
                    .copied()
                    .find(|b| b.to_string() == s.trim())
                    .ok_or_else(|| {
                        TrainError::Config(format!("band {s:?} is not a BigEarthNet band"))
                    })
            })
            .collect(),
    }
}

/// Patch folders under the configured data paths (a patch folder itself, or a folder of
/// them), filtered by the split CSV when given, sorted by name.
///
/// # Errors
/// [`TrainError::Dataset`] for a missing path, an unreadable directory or an empty result.
pub fn list_patches(
    data: &[PathBuf],
    split_csv: Option<&Path>,
) -> Result<Vec<PathBuf>, TrainError> {
    let mut out = Vec::new();
    for p in data {
        if is_patch_folder(p) {
            out.push(p.clone());
            continue;
        }
        let rd = std::fs::read_dir(p).map_err(|e| TrainError::Dataset {
            path: p.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file or directory".into()
            } else {
                e.to_string()
            },
        })?;
        for entry in rd.flatten() {
            let q = entry.path();
            if is_patch_folder(&q) {
                out.push(q);
            }
        }
    }
    if let Some(csv) = split_csv {
        let text = std::fs::read_to_string(csv).map_err(|e| TrainError::Dataset {
            path: csv.to_path_buf(),
            reason: e.to_string(),
        })?;
        let names: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        out.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| names.contains(n))
        });
    }
    out.sort();
    if out.is_empty() {
        return Err(TrainError::Dataset {
            path: data.first().cloned().unwrap_or_default(),
            reason: "no BigEarthNet patch folders found (<patch>/<patch>_labels_metadata.json)"
                .into(),
        });
    }
    Ok(out)
}

/// One decoded patch: normalised `[bands, 120, 120]` and the 19-class target.
#[derive(Debug, Clone)]
pub struct Patch {
    /// Values, band-major.
    pub x: Vec<f32>,
    /// Multi-hot target.
    pub y: [f32; CLASSES],
}

/// Reads one patch. `sr`: a super-resolution model whose output bands replace their
/// bilinear upsampling.
///
/// # Errors
/// [`TrainError::MissingBand`] (an error for the run), anything else (the caller skips the
/// patch and counts it).
pub fn read_patch(
    path: &Path,
    bands: &[Band],
    sr: Option<&mut LoadedModel>,
) -> Result<Patch, TrainError> {
    let source = GranuleSource::open(path).map_err(|source| TrainError::Granule {
        path: path.to_path_buf(),
        source,
    })?;
    for &b in bands {
        if !source.bands.contains_key(&b) {
            return Err(TrainError::MissingBand {
                path: path.to_path_buf(),
                band: b,
            });
        }
    }
    let mut y = [0f32; CLASSES];
    if let Some(l) = &source.metadata.labels {
        for &c in &l.classes_19 {
            if let Some(v) = y.get_mut(c as usize) {
                *v = 1.0;
            }
        }
    }
    let mut srs: Vec<(Band, Raster<f32>)> = Vec::new();
    if let Some(model) = sr {
        let needed: Vec<Band> = model
            .spec
            .inputs
            .iter()
            .flat_map(|(_, i)| i.bands.iter().copied())
            .collect();
        let scene = Scene::load(&source, &needed)?;
        let id = source.id.to_string();
        let out = superres(
            &scene,
            model,
            &id,
            SrTiling {
                tile: PATCH,
                batch: 1,
            },
            &mut |_, _| {},
        )?;
        srs = out.into_iter().map(|(b, r)| (b, to_f32(&r))).collect();
    }
    let mut x = Vec::with_capacity(bands.len() * PATCH * PATCH);
    for &b in bands {
        let idx = BEN_BANDS.iter().position(|x| *x == b).unwrap_or(0);
        let r = match srs.iter().find(|(sb, _)| *sb == b) {
            Some((_, r)) => r.clone(),
            None => {
                let data = source.read_band(b).map_err(|source| TrainError::Granule {
                    path: path.to_path_buf(),
                    source,
                })?;
                let f = to_f32(&harmonise(&data.dn, source.metadata.offset(b)));
                let factor = b.resolution().factor();
                if factor == 1 {
                    f
                } else {
                    upsample(&f, factor, Kernel::Bilinear)
                }
            }
        };
        if r.width != PATCH || r.height != PATCH {
            return Err(TrainError::TooSmall {
                path: path.to_path_buf(),
                reason: format!(
                    "band {b} is {}×{} at 10 m, expected {PATCH}×{PATCH}",
                    r.width, r.height
                ),
            });
        }
        // Nodata (NaN) becomes the band mean: 0 after normalisation.
        x.extend(r.data.iter().map(|v| {
            if v.is_finite() {
                (v - BEN_MEAN[idx] as f32) / BEN_STD[idx] as f32
            } else {
                0.0
            }
        }));
    }
    Ok(Patch { x, y })
}

/// Weighted BCE on logits: `mean(w·y·softplus(−z) + (1−y)·softplus(z))`.
fn weighted_bce(logits: Tensor<2>, y: Tensor<2>, pos_weight: Tensor<2>) -> Tensor<1> {
    let sp = |t: Tensor<2>| {
        burn::tensor::activation::relu(t.clone()) + t.abs().neg().exp().add_scalar(1.0).log()
    };
    let pos = sp(logits.clone().neg()) * y.clone() * pos_weight;
    let neg = sp(logits) * y.neg().add_scalar(1.0);
    (pos + neg).mean()
}

/// Micro/macro F1 at the manifest thresholds (0.5) and micro/macro average precision.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClassifyScores {
    /// Micro F1.
    pub micro_f1: f64,
    /// Macro F1 over classes present in the targets.
    pub macro_f1: f64,
    /// Micro AP.
    pub micro_ap: f64,
    /// Macro AP over classes present in the targets.
    pub macro_ap: f64,
}

fn average_precision(mut pairs: Vec<(f32, bool)>) -> Option<f64> {
    let positives = pairs.iter().filter(|p| p.1).count();
    if positives == 0 {
        return None;
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut sum) = (0usize, 0f64);
    for (i, (_, pos)) in pairs.iter().enumerate() {
        if *pos {
            tp += 1;
            sum += tp as f64 / (i + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// Scores `probs` (`[n][19]`) against `targets`.
pub fn scores(probs: &[[f32; CLASSES]], targets: &[[f32; CLASSES]]) -> ClassifyScores {
    let (mut tp, mut fp, mut fnn) = ([0f64; CLASSES], [0f64; CLASSES], [0f64; CLASSES]);
    let mut all = Vec::new();
    let mut per: Vec<Vec<(f32, bool)>> = vec![Vec::new(); CLASSES];
    for (p, t) in probs.iter().zip(targets) {
        for c in 0..CLASSES {
            let pos = t[c] > 0.5;
            let pred = p[c] >= 0.5;
            match (pred, pos) {
                (true, true) => tp[c] += 1.0,
                (true, false) => fp[c] += 1.0,
                (false, true) => fnn[c] += 1.0,
                _ => {}
            }
            all.push((p[c], pos));
            per[c].push((p[c], pos));
        }
    }
    let f1 = |tp: f64, fp: f64, fnn: f64| {
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fnn)
        }
    };
    let present: Vec<usize> = (0..CLASSES).filter(|&c| tp[c] + fnn[c] > 0.0).collect();
    let macro_f1 = present
        .iter()
        .map(|&c| f1(tp[c], fp[c], fnn[c]))
        .sum::<f64>()
        / present.len().max(1) as f64;
    let aps: Vec<f64> = per.into_iter().filter_map(average_precision).collect();
    ClassifyScores {
        micro_f1: f1(tp.iter().sum(), fp.iter().sum(), fnn.iter().sum()),
        macro_f1,
        micro_ap: average_precision(all).unwrap_or(0.0),
        macro_ap: aps.iter().sum::<f64>() / aps.len().max(1) as f64,
    }
}

/// Averages the BatchNorm running statistics over the ranks (trainable weights are
/// identical already and stay bit-identical).
fn sync_buffers(dist: &Dist, model: ResNet50) -> Result<ResNet50, TrainError> {
    if dist.size == 1 {
        return Ok(model);
    }
    let mask = buffer_mask(&model);
    let local = flatten(&model)?;
    let mut avg = local.clone();
    dist.allreduce_mean(&mut avg);
    let merged: Vec<f32> = local
        .iter()
        .zip(&avg)
        .zip(&mask)
        .map(|((l, a), m)| if *m { *a } else { *l })
        .collect();
    unflatten(model, &merged)
}

fn batch_tensor(patches: &[Patch], nb: usize, device: &Device) -> (Tensor<4>, Tensor<2>) {
    let n = patches.len();
    let x: Vec<f32> = patches.iter().flat_map(|p| p.x.iter().copied()).collect();
    let y: Vec<f32> = patches.iter().flat_map(|p| p.y.iter().copied()).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, nb, PATCH, PATCH]), device),
        Tensor::from_data(TensorData::new(y, [n, CLASSES]), device),
    )
}

/// Trains the classifier per `cfg` (see the module docs).
///
/// # Errors
/// Data errors (agreed across ranks), [`TrainError::EmptyShard`], checkpoint errors.
pub fn train(
    cfg: &TrainConfig,
    dist: &Dist,
    resume: bool,
) -> Result<super::sr::TrainOutcome, TrainError> {
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let bands = bands_of(cfg)?;
    let local_batch = cfg.local_batch(dist.size)?;
    let all = dist.agree(list_patches(&cfg.data, cfg.split_csv.as_deref()))?;
    let shard: Vec<PathBuf> = all
        .iter()
        .skip(dist.rank)
        .step_by(dist.size)
        .cloned()
        .collect();
    let smallest = all.len() / dist.size;
    if smallest < local_batch {
        return Err(TrainError::EmptyShard {
            samples: all.len(),
            ranks: dist.size,
            local_batch,
        });
    }
    let mut sr = match &cfg.superres_model {
        Some(dir) => Some(dist.agree(
            LoadedModel::load(dir, &ProviderOptions::default()).map_err(TrainError::from),
        )?),
        None => None,
    };
    // Open the shard once: missing bands are errors, unreadable patches are skipped; count
    // the positives for the class weights.
    let mut readable = Vec::new();
    let mut skipped = 0usize;
    let mut first_error: Option<TrainError> = None;
    let mut counts = vec![0f32; CLASSES + 1];
    for p in &shard {
        match read_patch(p, &bands, sr.as_mut()) {
            Ok(patch) => {
                for (c, v) in patch.y.iter().enumerate() {
                    counts[c] += v;
                }
                counts[CLASSES] += 1.0;
                readable.push(p.clone());
            }
            Err(e @ TrainError::MissingBand { .. }) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                skipped += 1;
                eprintln!(
                    "s2edge-train[rank {}]: skipping corrupt patch: {e}",
                    dist.rank
                );
            }
        }
    }
    dist.agree(first_error.map_or(Ok(()), Err))?;
    dist.allreduce_sum(&mut counts);
    // The smallest readable shard decides the epoch length (all ranks step together).
    let min_len = min_over_ranks(dist, readable.len());
    if min_len < local_batch {
        return Err(TrainError::EmptyShard {
            samples: min_len * dist.size,
            ranks: dist.size,
            local_batch,
        });
    }
    let total = counts[CLASSES].max(1.0);
    let pos_weight: Vec<f32> = counts[..CLASSES]
        .iter()
        .map(|&p| ((total - p) / p.max(1.0)).clamp(1.0, 50.0))
        .collect();
    let pw = Tensor::<2>::from_data(TensorData::new(pos_weight.clone(), [1, CLASSES]), &device);
    if dist.is_root() {
        eprintln!(
            "s2edge-train: {} patches ({} readable on rank 0, {skipped} skipped there), bands {:?}",
            all.len(),
            readable.len(),
            bands.iter().map(|b| b.to_string()).collect::<Vec<_>>()
        );
    }

    let mut model = {
        let m = ResNet50::new(bands.len(), CLASSES, &device);
        let mut flat = flatten(&m)?;
        dist.broadcast(&mut flat);
        unflatten(m, &flat)?
    };
    let mut optim = make_optim(cfg);
    let mut start = 0;
    let ckdir = checkpoint::latest(&cfg.checkpoint_dir);
    if resume {
        let loaded = (|| -> Result<_, TrainError> {
            let st = checkpoint::load_state(&ckdir)?;
            Ok((
                st.step,
                checkpoint::load_weights(&ckdir, "model")?,
                checkpoint::load_optim(&ckdir, "model", make_optim(cfg))?,
            ))
        })();
        let (s, w, o) = dist.agree(loaded)?;
        model = unflatten(model, &w)?;
        optim = o;
        start = s;
    }
    let steps_per_epoch = (min_len / local_batch).max(1);
    let t_run = Instant::now();
    let mut window = Instant::now();
    let mut reduce_time = 0f64;
    let mut step = start;
    let mut last_loss = f32::NAN;
    let mut interrupted = false;
    let mut last_ckpt = None;
    let mut corrupt = 0usize;
    while step < cfg.steps {
        let epoch = step / steps_per_epoch as u64;
        let order = epoch_order(
            readable.len(),
            cfg.seed ^ dist.rank as u64,
            epoch,
            cfg.shuffle,
        );
        let k = (step % steps_per_epoch as u64) as usize;
        let mut patches = Vec::with_capacity(local_batch);
        for &i in &order[k * local_batch..(k + 1) * local_batch] {
            match read_patch(&readable[i], &bands, sr.as_mut()) {
                Ok(mut p) => {
                    if cfg.augment {
                        let code = Rng::new(cfg.seed ^ step ^ ((i as u64) << 8)).below(4);
                        flip(&mut p.x, bands.len(), code);
                    }
                    patches.push(p)
                }
                Err(_) => corrupt += 1,
            }
        }
        // A patch that became unreadable mid-run: repeat a readable one so the batch keeps
        // its size (all ranks must average equal-sized batches).
        while patches.len() < local_batch {
            match patches.first().cloned() {
                Some(p) => patches.push(p),
                None => break,
            }
        }
        let loss = if patches.len() == local_batch {
            let (x, y) = batch_tensor(&patches, bands.len(), &device);
            let l = weighted_bce(model.logits(x), y, pw.clone());
            Some(l)
        } else {
            None
        };
        let (lv, gp) = match loss {
            Some(l) => {
                let v = l
                    .clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .ok()
                    .and_then(|v| v.first().copied())
                    .unwrap_or(f32::NAN);
                (v, GradientsParams::from_grads(l.backward(), &model))
            }
            None => (f32::NAN, GradientsParams::new()),
        };
        let mut buf = flatten_grads(&model, &gp)?;
        let n = buf.len();
        buf.push(lv);
        buf.push(if stop_requested() { 1.0 } else { 0.0 });
        let t = Instant::now();
        dist.allreduce_sum(&mut buf);
        reduce_time += t.elapsed().as_secs_f64();
        let size = dist.size as f32;
        for v in buf[..n].iter_mut() {
            *v /= size;
        }
        let stop = buf[n + 1] > 0.0;
        last_loss = buf[n] / size;
        buf.truncate(n);
        let gp = unflatten_grads(&model, gp, &buf)?;
        model = optim.step(cfg.lr, model, gp);
        step += 1;
        if step % cfg.log_every.max(1) == 0 || step == cfg.steps || stop {
            let dt = window.elapsed().as_secs_f64();
            super::dist::log_line(&format!(
                "s2edge-train[rank {}/{}] step {step}/{} loss {last_loss:.5} ({:.3} steps/s, {:.3} s/sample fwd+bwd, allreduce {:.1}% of step time)",
                dist.rank,
                dist.size,
                cfg.steps,
                cfg.log_every.max(1) as f64 / dt.max(1e-9),
                dt / (cfg.log_every.max(1) as f64 * local_batch as f64),
                100.0 * reduce_time / t_run.elapsed().as_secs_f64().max(1e-9)
            ));
            window = Instant::now();
        }
        let interval = cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0;
        if stop || interval || step == cfg.steps {
            model = sync_buffers(dist, model)?;
            if dist.is_root() {
                last_ckpt = Some(save(cfg, dist, step, last_loss, &model, &optim, &bands)?);
            }
            dist.barrier();
        }
        if stop {
            interrupted = true;
            break;
        }
    }
    if corrupt > 0 {
        eprintln!(
            "s2edge-train[rank {}]: {corrupt} corrupt patches skipped during training",
            dist.rank
        );
    }
    if cfg.dump_weights {
        dump_weights(&cfg.checkpoint_dir, dist.rank, &flatten(&model)?)?;
    }
    let secs = t_run.elapsed().as_secs_f64();
    Ok(super::sr::TrainOutcome {
        steps: step,
        loss: last_loss,
        steps_per_s: (step - start) as f64 / secs.max(1e-9),
        allreduce_fraction: reduce_time / secs.max(1e-9),
        interrupted,
        checkpoint: last_ckpt,
    })
}

/// The smallest `len` over the ranks.
fn min_over_ranks(dist: &Dist, len: usize) -> usize {
    // max(−len) through a sum-based all-reduce is not available; use a float max instead.
    let mut v = vec![0f32; dist.size];
    if let Some(slot) = v.get_mut(dist.rank) {
        *slot = len as f32;
    }
    dist.allreduce_sum(&mut v);
    v.iter().map(|x| *x as usize).min().unwrap_or(len)
}

/// Horizontal/vertical flips of every band of a `[bands, 120, 120]` patch (`code` bit 0:
/// columns, bit 1: rows).
fn flip(x: &mut [f32], nb: usize, code: usize) {
    for b in 0..nb {
        let plane = &mut x[b * PATCH * PATCH..(b + 1) * PATCH * PATCH];
        if code & 1 != 0 {
            for row in plane.chunks_exact_mut(PATCH) {
                row.reverse();
            }
        }
        if code & 2 != 0 {
            for r in 0..PATCH / 2 {
                let (top, bottom) = plane.split_at_mut((PATCH - 1 - r) * PATCH);
                top[r * PATCH..(r + 1) * PATCH].swap_with_slice(&mut bottom[..PATCH]);
            }
        }
    }
}

fn save(
    cfg: &TrainConfig,
    dist: &Dist,
    step: u64,
    loss: f32,
    model: &ResNet50,
    optim: &ModuleOptimizer,
    bands: &[Band],
) -> Result<PathBuf, TrainError> {
    let state = CheckpointState {
        step,
        task: "classify".into(),
        name: cfg.name.clone(),
        scale: 0,
        blocks: 0,
        features: 0,
        ranks: dist.size,
        batch: cfg.batch,
        loss,
        data: cfg.data.iter().map(|p| p.display().to_string()).collect(),
        bands: bands.iter().map(|b| b.to_string()).collect(),
    };
    let w = flatten(model)?;
    checkpoint::save(
        &cfg.checkpoint_dir,
        &state,
        &[NetState {
            name: "model",
            weights: &w,
            optim,
        }],
    )
}

/// Rebuilds the classifier of checkpoint `ckpt` (inference mode).
///
/// # Errors
/// [`TrainError::Checkpoint`].
pub fn load_model(
    ckpt: &Path,
    device: &Device,
) -> Result<(CheckpointState, Vec<Band>, ResNet50), TrainError> {
    let st = checkpoint::load_state(ckpt)?;
    if st.task != "classify" {
        return Err(TrainError::Checkpoint {
            path: ckpt.to_path_buf(),
            reason: format!("task {} is not a classify checkpoint", st.task),
        });
    }
    let bands: Vec<Band> = st
        .bands
        .iter()
        .filter_map(|s| BEN_BANDS.iter().copied().find(|b| b.to_string() == *s))
        .collect();
    let m = ResNet50::new(bands.len(), CLASSES, device);
    let w = checkpoint::load_weights(ckpt, "model")?;
    let m = unflatten(m, &w).map_err(|e| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((st, bands, m.valid()))
}

/// The classifier manifest.
pub fn manifest(
    name: &str,
    version: u32,
    sha: &str,
    bands: &[Band],
    training: TrainingInfo,
) -> ModelSpec {
    let (mean, std): (Vec<f32>, Vec<f32>) = bands
        .iter()
        .map(|b| {
            let i = BEN_BANDS.iter().position(|x| x == b).unwrap_or(0);
            (BEN_MEAN[i] as f32, BEN_STD[i] as f32)
        })
        .unzip();
    ModelSpec {
        schema: SUPPORTED_SCHEMA,
        name: name.to_string(),
        version,
        task: Task::Classify,
        onnx_sha256: sha.to_string(),
        product_level: ProductLevel::L2A,
        inputs: IoMap(vec![(
            "x".into(),
            InputSpec {
                bands: bands.to_vec(),
                grid: crate::granule::Resolution::R10,
                upsample: bands
                    .iter()
                    .any(|b| b.resolution().factor() > 1)
                    .then_some(UpsampleKernel::Bilinear),
            },
        )]),
        outputs: IoMap(vec![("probs".into(), OutputSpec::default())]),
        normalisation: Normalisation { mean, std },
        superres: None,
        classify: Some(ClassifySpec {
            patch: PATCH as u32,
            classes: NAMES_19.iter().map(|s| s.to_string()).collect(),
            thresholds: vec![0.5; CLASSES],
            output_kind: OutputKind::Probabilities,
        }),
        training,
    }
}

/// The classifier as ONNX bytes: input `x` `[batch, bands, 120, 120]` (dynamic batch),
/// output `probs` `[batch, 19]`.
///
/// # Errors
/// [`TrainError::Export`].
pub fn export_onnx(model: &ResNet50, nbands: usize, name: &str) -> Result<Vec<u8>, TrainError> {
    use burn_onnx::export::{AxisSpec, InputSpec as AxisInputSpec, OnnxExporter};
    let device = Device::flex();
    let model = model.valid();
    let spec = AxisInputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::Static,
        AxisSpec::Static,
    ]);
    let a = Tensor::<4>::zeros([1, nbands, PATCH, PATCH], &device);
    let b = Tensor::<4>::zeros([2, nbands, PATCH, PATCH], &device);
    let onnx = OnnxExporter::new()
        .export_dynamic(&model, a, b, &[spec], |m: &ResNet50, x| m.forward(x))
        .map_err(|e| TrainError::Export {
            model: name.to_string(),
            reason: e.to_string(),
        })?;
    super::export::rename_io(onnx.as_bytes(), &["x"], &["probs"], name)
}

/// Exports the classify checkpoint `ckpt`; with `eval`, scores the patches listed there
/// through ONNX Runtime first and records the metrics. `status` says honestly how trained
/// it is.
///
/// # Errors
/// Checkpoint, export and I/O errors.
pub fn export(
    cfg: &TrainConfig,
    ckpt: &Path,
    status: TrainingStatus,
    notes: Option<String>,
) -> Result<PathBuf, TrainError> {
    let device = Device::flex();
    let (st, bands, model) = load_model(ckpt, &device)?;
    let bytes = export_onnx(&model, bands.len(), &cfg.name)?;
    let sha = super::export::sha256_hex(&bytes);
    let stage = super::export::Staging::new(&cfg.models_dir, &cfg.name, cfg.version)?;
    stage.write_onnx(&bytes)?;
    let mut info = super::export::training_info(&st, notes);
    info.status = status;
    let mut spec = manifest(&cfg.name, cfg.version, &sha, &bands, info);
    stage.write_manifest(&spec)?;
    // Score the training patches through ONNX Runtime (the only labelled data at hand
    // unless a split was configured).
    let patches = list_patches(&cfg.data, cfg.split_csv.as_deref())?;
    let mut loaded = LoadedModel::load(&stage.dir, &ProviderOptions::default())?;
    let (mut probs, mut targets) = (Vec::new(), Vec::new());
    for p in &patches {
        let Ok(patch) = read_patch(p, &bands, None) else {
            continue;
        };
        let arr = ndarray::Array4::from_shape_vec((1, bands.len(), PATCH, PATCH), patch.x)
            .map_err(|e| TrainError::Tensor(e.to_string()))?;
        let out = loaded.run(vec![("x".into(), arr)])?;
        let mut row = [0f32; CLASSES];
        if let Some((_, a)) = out.iter().find(|(n, _)| n == "probs") {
            for (c, v) in a.iter().take(CLASSES).enumerate() {
                row[c] = *v;
            }
        }
        probs.push(row);
        targets.push(patch.y);
    }
    let s = scores(&probs, &targets);
    let mut t = toml::Table::new();
    t.insert("eval_patches".into(), (probs.len() as i64).into());
    t.insert(
        "eval_set".into(),
        "the training patches (no held-out split given)".into(),
    );
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    t.insert("micro_f1".into(), r(s.micro_f1).into());
    t.insert("macro_f1".into(), r(s.macro_f1).into());
    t.insert("micro_ap".into(), r(s.micro_ap).into());
    t.insert("macro_ap".into(), r(s.macro_ap).into());
    spec.training.metrics = t;
    stage.write_manifest(&spec)?;
    stage.publish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_scores_are_one() {
        let mut t = [[0f32; CLASSES]; 3];
        t[0][1] = 1.0;
        t[1][2] = 1.0;
        t[2][1] = 1.0;
        let s = scores(&t, &t);
        assert_eq!(
            (s.micro_f1, s.macro_f1, s.micro_ap, s.macro_ap),
            (1.0, 1.0, 1.0, 1.0)
        );
        let mut wrong = [[0f32; CLASSES]; 3];
        wrong[0][5] = 0.9;
        let s = scores(&wrong, &t);
        assert_eq!(s.micro_f1, 0.0);
        assert!(s.micro_ap < 0.5);
    }

    #[test]
    fn flip_twice_is_identity() {
        let x: Vec<f32> = (0..2 * PATCH * PATCH).map(|v| v as f32).collect();
        for code in 0..4 {
            let mut y = x.clone();
            flip(&mut y, 2, code);
            if code != 0 {
                assert_ne!(y, x);
            }
            flip(&mut y, 2, code);
            assert_eq!(y, x);
        }
    }
}
