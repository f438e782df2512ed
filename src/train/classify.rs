//! The `classify` task: a multi-label classifier (ResNet50, or the small band-statistics
//! model) on BigEarthNet patches read from v1 patch folders or from the reBEN encoding
//! (LMDB + `metadata.parquet`), weighted binary cross-entropy, micro/macro F1 and AP,
//! per-class thresholds tuned on the validation split, export as `probs` with the sigmoid
//! inside.
//!
//! Invariants:
//! - every rank lists the samples (folder names, or metadata rows: cheap), then reads only
//!   its own shard (sample `i` goes to rank `i mod size`), decoding pixels lazily in a
//!   bounded prefetch pool ([`super::prefetch`]), so memory does not grow with the dataset;
//! - a v1 patch missing a band is an error (agreed by all ranks); a patch whose pixels
//!   cannot be read, a reBEN key absent from the LMDB and a value that does not decode are
//!   skipped and counted;
//! - pixels reach the network through one code path for both encodings
//!   ([`patch_from_scene`]): harmonised DN, coarse bands upsampled bilinearly patch by
//!   patch with the pipeline's own [`Scene::patch_10m`], normalised with BigEarthNet's
//!   per-band mean/std by the pipeline's [`Channel`] — exactly what the manifest records
//!   and what `s2edge process` feeds the exported graph;
//! - BatchNorm running statistics are averaged over the ranks before every checkpoint, so
//!   the exported model does not depend on rank 0's shard alone.
//!
//! Checkpoints record the architecture in `state.toml`'s `blocks` (0: ResNet50,
//! 1: band statistics) and `features` (its spectral indicators).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};

use crate::granule::bigearthnet::is_patch_folder;
use crate::granule::labels::NAMES_19;
use crate::granule::{Band, GeoRef, GeoTransform, GranuleSource};
use crate::model::manifest::{
    ClassifySpec, InputSpec, IoMap, Normalisation, OutputKind, OutputSpec, ProductLevel, Task,
    TrainingInfo, TrainingStatus, UpsampleKernel, SUPPORTED_SCHEMA,
};
use crate::model::provider::ProviderOptions;
use crate::model::session::LoadedModel;
use crate::model::ModelSpec;
use crate::pipeline::scene::Scene;
use crate::pipeline::superres::{superres, SrTiling};
use crate::pipeline::tensor::Channel;
use crate::raster::resample::Kernel;
use crate::raster::tiling::Rect;
use crate::raster::Raster;

use super::bandstats::BandStats;
use super::checkpoint::{self, CheckpointState, NetState};
use super::config::{ClassifierArch, DataSplit, OptimizerKind};
use super::data::{epoch_order, Rng};
use super::dist::{stop_requested, Dist};
use super::multilabel::{self, band_stats, cross_validated, fit_logistic, tune_thresholds};
use super::params::{buffer_mask, flatten, flatten_grads, unflatten, unflatten_grads};
use super::prefetch::{Loader, Prefetcher};
use super::reben::{self, Lmdb, MetaRow, RebenError};
use super::resnet::ResNet50;
use super::sr::dump_weights;
use super::{TrainConfig, TrainError};

pub use super::multilabel::{scores, scores_at, ClassifyScores, CLASSES};

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

/// Folds of the cross-validated F1 reported for a validation set.
pub const CV_FOLDS: usize = 3;

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

/// The classifier input of one 120×120 patch held in `scene`: for each band, the
/// pipeline's per-patch upsampling ([`Scene::patch_10m`], bilinear, the block's own edges
/// replicated) or, when `superres` holds the band, its super-resolved 10 m window; then the
/// pipeline's normalisation ([`Channel::normalise`], nodata → 0) with BigEarthNet's
/// mean/std. This is the one code path of both encodings.
///
/// # Errors
/// [`TrainError::TooSmall`] when a band does not cover a whole patch.
pub fn patch_from_scene(
    scene: &Scene,
    bands: &[Band],
    superres: Option<&BTreeMap<Band, Raster<u16>>>,
    id: &str,
) -> Result<Vec<f32>, TrainError> {
    let rect = Rect {
        col: 0,
        row: 0,
        width: PATCH,
        height: PATCH,
    };
    let mut x = Vec::with_capacity(bands.len() * PATCH * PATCH);
    for &b in bands {
        let idx = BEN_BANDS.iter().position(|x| *x == b).unwrap_or(0);
        let ch = Channel {
            band: b,
            mean: BEN_MEAN[idx] as f32,
            std: BEN_STD[idx] as f32,
            kernel: Kernel::Bilinear,
        };
        let factor = b.resolution().factor();
        let native = scene.bands.get(&b).ok_or_else(|| TrainError::MissingBand {
            path: PathBuf::from(id),
            band: b,
        })?;
        let too_small = |w: usize, h: usize| TrainError::TooSmall {
            path: PathBuf::from(id),
            reason: format!("band {b} is {w}×{h} at 10 m, expected {PATCH}×{PATCH}"),
        };
        if native.width * factor < PATCH || native.height * factor < PATCH {
            return Err(too_small(native.width * factor, native.height * factor));
        }
        let window = match superres.and_then(|s| s.get(&b)) {
            Some(sr) if factor > 1 => {
                if sr.width < PATCH || sr.height < PATCH {
                    return Err(too_small(sr.width, sr.height));
                }
                crate::raster::radiometry::to_f32(&sr.window(0, 0, PATCH, PATCH))
            }
            _ => Scene::patch_10m(native, factor, ch.kernel, rect, PATCH),
        };
        x.extend(window.data.iter().map(|v| ch.normalise(*v)));
    }
    Ok(x)
}

/// Runs the super-resolution models over `scene`, returning their output bands (on the
/// 10 m grid, harmonised DN).
fn superresolve(
    scene: &Scene,
    models: &[Mutex<LoadedModel>],
    id: &str,
) -> Result<BTreeMap<Band, Raster<u16>>, TrainError> {
    let mut out = BTreeMap::new();
    for m in models {
        let mut model = m
            .lock()
            .map_err(|_| TrainError::Tensor("a loader thread panicked".into()))?;
        let bands = superres(
            scene,
            &mut *model,
            id,
            SrTiling {
                cores: PATCH.into(),
                batch: 1,
            },
            &mut |_, _| {},
        )?;
        out.extend(bands);
    }
    Ok(out)
}

/// The bands the super-resolution models read.
fn sr_inputs(models: &[Mutex<LoadedModel>]) -> Vec<Band> {
    models
        .iter()
        .filter_map(|m| m.lock().ok())
        .flat_map(|m| {
            m.spec
                .inputs
                .iter()
                .flat_map(|(_, i)| i.bands.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Reads one BigEarthNet v1 patch folder. `sr`: super-resolution models whose output
/// bands replace their bilinear upsampling.
///
/// # Errors
/// [`TrainError::MissingBand`] (an error for the run), anything else (the caller skips the
/// patch and counts it).
pub fn read_patch(
    path: &Path,
    bands: &[Band],
    sr: &[Mutex<LoadedModel>],
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
    let mut needed = bands.to_vec();
    needed.extend(sr_inputs(sr));
    needed.sort();
    needed.dedup();
    let scene = Scene::load(&source, &needed).map_err(|e| match e {
        crate::pipeline::PipelineError::Granule(source) => TrainError::Granule {
            path: path.to_path_buf(),
            source,
        },
        other => TrainError::Pipeline(other),
    })?;
    let id = source.id.to_string();
    let srs = if sr.is_empty() {
        None
    } else {
        Some(superresolve(&scene, sr, &id)?)
    };
    let x = patch_from_scene(&scene, bands, srs.as_ref(), &path.display().to_string())?;
    Ok(Patch { x, y })
}

/// A scene holding one reBEN patch: its bands on their native grids (harmonised DN = DN:
/// reBEN's L2A patches carry no offset) on a nominal 120×120 10 m grid (the encoding
/// stores no georeference; nothing downstream of the patch needs one).
pub fn reben_scene(bands: BTreeMap<Band, Raster<u16>>) -> Scene {
    Scene {
        row0: 0,
        col0: 0,
        grid10: GeoRef {
            epsg: 32632,
            transform: GeoTransform {
                origin_x: 0.0,
                origin_y: 0.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: PATCH,
            height: PATCH,
        },
        offsets: bands.keys().map(|b| (*b, 0.0)).collect(),
        bands,
        cloud: None,
    }
}

/// Reads one reBEN patch by key.
///
/// # Errors
/// [`TrainError::Dataset`] wrapping a [`RebenError`] (missing key and corrupt value are
/// per-patch: [`RebenError::is_per_patch`]), or a super-resolution error.
pub fn read_reben(
    lmdb: &Lmdb,
    row: &MetaRow,
    bands: &[Band],
    sr: &[Mutex<LoadedModel>],
) -> Result<Patch, LoadError> {
    let mut needed = bands.to_vec();
    needed.extend(sr_inputs(sr));
    needed.sort();
    needed.dedup();
    let raw = lmdb
        .s2_patch(&row.patch_id, &needed)
        .map_err(LoadError::Reben)?;
    let scene = reben_scene(raw);
    let srs = if sr.is_empty() {
        None
    } else {
        Some(superresolve(&scene, sr, &row.patch_id).map_err(LoadError::Train)?)
    };
    let x =
        patch_from_scene(&scene, bands, srs.as_ref(), &row.patch_id).map_err(LoadError::Train)?;
    Ok(Patch { x, y: row.target() })
}

/// Why a sample did not load.
#[derive(Debug)]
pub enum LoadError {
    /// A reBEN lookup or decode failure.
    Reben(RebenError),
    /// Anything else.
    Train(TrainError),
}

impl LoadError {
    /// True when the run must stop (a v1 patch missing a band, an unreadable LMDB).
    fn is_fatal(&self) -> bool {
        match self {
            LoadError::Reben(e) => !e.is_per_patch(),
            LoadError::Train(TrainError::MissingBand { .. }) => true,
            LoadError::Train(_) => false,
        }
    }

    /// Whether it is a reBEN key absent from the LMDB.
    fn is_missing_key(&self) -> bool {
        matches!(self, LoadError::Reben(RebenError::Missing { .. }))
    }

    fn into_train(self) -> TrainError {
        match self {
            LoadError::Reben(e) => e.into(),
            LoadError::Train(e) => e,
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Reben(e) => e.fmt(f),
            LoadError::Train(e) => e.fmt(f),
        }
    }
}

/// Where samples come from: a list the ranks share, read lazily by index.
#[derive(Clone)]
pub enum Samples {
    /// BigEarthNet v1 patch folders.
    Folders(Arc<Vec<PathBuf>>),
    /// reBEN rows of one split and the LMDB that holds their pixels.
    Reben {
        /// The LMDB (opened read-only, without a lock file).
        lmdb: Lmdb,
        /// The rows, in file order.
        rows: Arc<Vec<MetaRow>>,
    },
    /// Already decoded patches (the study decodes each patch once for all its runs).
    Decoded(Arc<Vec<Patch>>),
}

impl Samples {
    /// Opens the samples of `split` that `cfg` names: reBEN when `[classify] metadata` is
    /// set (then `data` is the LMDB folder), else v1 patch folders (`split_csv` filters).
    ///
    /// # Errors
    /// [`TrainError::Dataset`] or [`TrainError::Config`].
    pub fn open(cfg: &TrainConfig, split: DataSplit) -> Result<Samples, TrainError> {
        match &cfg.classify.metadata {
            Some(meta) => {
                let [dir] = cfg.data.as_slice() else {
                    return Err(TrainError::Config(
                        "with [classify] metadata, data must name exactly one LMDB folder".into(),
                    ));
                };
                let lmdb = Lmdb::open(dir)?;
                let rows = reben::rows_of_split(&reben::read_metadata(meta)?, split);
                if rows.is_empty() {
                    return Err(TrainError::Dataset {
                        path: meta.clone(),
                        reason: format!("no rows in split {split}"),
                    });
                }
                Ok(Samples::Reben {
                    lmdb,
                    rows: Arc::new(rows),
                })
            }
            None => Ok(Samples::Folders(Arc::new(list_patches(
                &cfg.data,
                cfg.split_csv.as_deref(),
            )?))),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Samples::Folders(v) => v.len(),
            Samples::Reben { rows, .. } => rows.len(),
            Samples::Decoded(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of rank `rank` of `size` (sample `i` goes to rank `i mod size`).
    pub fn shard(&self, rank: usize, size: usize) -> Samples {
        fn pick<T: Clone>(v: &[T], rank: usize, size: usize) -> Arc<Vec<T>> {
            Arc::new(v.iter().skip(rank).step_by(size.max(1)).cloned().collect())
        }
        match self {
            Samples::Folders(v) => Samples::Folders(pick(v, rank, size)),
            Samples::Reben { lmdb, rows } => Samples::Reben {
                lmdb: lmdb.clone(),
                rows: pick(rows, rank, size),
            },
            Samples::Decoded(v) => Samples::Decoded(pick(v, rank, size)),
        }
    }

    /// Only the samples at `keep` (positions into this list).
    pub fn select(&self, keep: &[usize]) -> Samples {
        fn pick<T: Clone>(v: &[T], keep: &[usize]) -> Arc<Vec<T>> {
            Arc::new(keep.iter().filter_map(|&i| v.get(i).cloned()).collect())
        }
        match self {
            Samples::Folders(v) => Samples::Folders(pick(v, keep)),
            Samples::Reben { lmdb, rows } => Samples::Reben {
                lmdb: lmdb.clone(),
                rows: pick(rows, keep),
            },
            Samples::Decoded(v) => Samples::Decoded(pick(v, keep)),
        }
    }

    /// A name for sample `i` (folder path or patch id).
    pub fn name(&self, i: usize) -> String {
        match self {
            Samples::Folders(v) => v.get(i).map(|p| p.display().to_string()),
            Samples::Reben { rows, .. } => rows.get(i).map(|r| r.patch_id.clone()),
            Samples::Decoded(_) => Some(format!("decoded patch {i}")),
        }
        .unwrap_or_default()
    }

    /// Decodes sample `i`.
    ///
    /// # Errors
    /// See [`LoadError`].
    pub fn load(
        &self,
        i: usize,
        bands: &[Band],
        sr: &[Mutex<LoadedModel>],
    ) -> Result<Patch, LoadError> {
        match self {
            Samples::Folders(v) => match v.get(i) {
                Some(p) => read_patch(p, bands, sr).map_err(LoadError::Train),
                None => Err(LoadError::Train(TrainError::Tensor(format!(
                    "sample {i} out of range"
                )))),
            },
            Samples::Reben { lmdb, rows } => match rows.get(i) {
                Some(r) => read_reben(lmdb, r, bands, sr),
                None => Err(LoadError::Train(TrainError::Tensor(format!(
                    "sample {i} out of range"
                )))),
            },
            Samples::Decoded(v) => v.get(i).cloned().ok_or_else(|| {
                LoadError::Train(TrainError::Tensor(format!("sample {i} out of range")))
            }),
        }
    }

    /// A prefetch pool decoding the samples of `schedule` (see [`super::prefetch`]).
    pub fn prefetch(
        &self,
        bands: &[Band],
        sr: &Arc<Vec<Mutex<LoadedModel>>>,
        workers: usize,
        depth: usize,
        schedule: Box<dyn Iterator<Item = usize> + Send>,
    ) -> Prefetcher<Result<Patch, LoadError>> {
        let (me, bands, sr) = (self.clone(), bands.to_vec(), Arc::clone(sr));
        let load: Loader<Result<Patch, LoadError>> = Arc::new(move |i| me.load(i, &bands, &sr));
        Prefetcher::new(workers, depth, schedule, load)
    }
}

/// What a pass of the loader alone over a shard found.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Positions (into the shard) of the samples that decoded.
    pub readable: Vec<usize>,
    /// reBEN keys absent from the LMDB.
    pub missing: usize,
    /// Values or files that did not decode.
    pub corrupt: usize,
    /// Positive counts per class, then the number of readable samples.
    pub counts: Vec<f32>,
    /// Seconds the pass took.
    pub seconds: f64,
}

impl ScanReport {
    /// Patches per second of the loader alone.
    pub fn patches_per_s(&self) -> f64 {
        (self.readable.len() + self.missing + self.corrupt) as f64 / self.seconds.max(1e-9)
    }
}

/// Decodes every sample of `shard` once through the prefetch pool: which are readable,
/// the class frequencies, and the loader's throughput alone. `log` receives one line per
/// skipped sample.
///
/// # Errors
/// The first fatal [`LoadError`] (see [`LoadError::is_fatal`]).
pub fn scan(
    shard: &Samples,
    bands: &[Band],
    sr: &Arc<Vec<Mutex<LoadedModel>>>,
    workers: usize,
    depth: usize,
    log: &mut dyn FnMut(&str),
) -> Result<ScanReport, TrainError> {
    let t = Instant::now();
    let mut rep = ScanReport {
        counts: vec![0f32; CLASSES + 1],
        ..ScanReport::default()
    };
    let mut fatal = None;
    let pool = shard.prefetch(bands, sr, workers, depth, Box::new(0..shard.len()));
    for (i, res) in pool {
        match res {
            Ok(p) => {
                for (c, v) in p.y.iter().enumerate() {
                    rep.counts[c] += v;
                }
                rep.counts[CLASSES] += 1.0;
                rep.readable.push(i);
            }
            Err(e) if e.is_fatal() => {
                fatal.get_or_insert(e);
            }
            Err(e) if e.is_missing_key() => {
                rep.missing += 1;
                log(&format!("skipping missing patch {}: {e}", shard.name(i)));
            }
            Err(e) => {
                rep.corrupt += 1;
                log(&format!("skipping corrupt patch {}: {e}", shard.name(i)));
            }
        }
    }
    rep.seconds = t.elapsed().as_secs_f64();
    match fatal {
        Some(e) => Err(e.into_train()),
        None => Ok(rep),
    }
}

/// The network of the `classify` task.
#[derive(Module, Debug)]
// One `Net` per training process, moved rarely: boxing the ResNet50 buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    /// ResNet50 with a sigmoid head.
    ResNet50(ResNet50),
    /// Band statistics (+ spectral indicators) → linear → sigmoid.
    BandStats(BandStats),
}

impl Net {
    /// A fresh network of `arch` for `bands` input channels.
    pub fn new(arch: ClassifierArch, hidden: usize, bands: usize, device: &Device) -> Net {
        match arch {
            ClassifierArch::Resnet50 => Net::ResNet50(ResNet50::new(bands, CLASSES, device)),
            ClassifierArch::Bandstats => {
                Net::BandStats(BandStats::new(bands, hidden, CLASSES, device))
            }
        }
    }

    /// Logits `[n, 19]`.
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Net::ResNet50(m) => m.logits(x),
            Net::BandStats(m) => m.logits(x),
        }
    }

    /// Probabilities `[n, 19]` (the exported graph).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Net::ResNet50(m) => m.forward(x),
            Net::BandStats(m) => m.forward(x),
        }
    }

    /// `(blocks, features)` as the checkpoint records the architecture.
    fn arch_code(arch: ClassifierArch, hidden: usize) -> (usize, usize) {
        match arch {
            ClassifierArch::Resnet50 => (0, 0),
            ClassifierArch::Bandstats => (1, hidden),
        }
    }
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

/// The positive-class weights `((n − p)/p)^power`, clamped to `[1, 50]`, from the class
/// counts of the training split (`counts[19]` = patches).
pub fn pos_weights(counts: &[f32], power: f64) -> Vec<f32> {
    let total = counts.get(CLASSES).copied().unwrap_or(0.0).max(1.0);
    counts[..CLASSES]
        .iter()
        .map(|&p| {
            (((total - p) / p.max(1.0)).max(1.0) as f64)
                .powf(power)
                .clamp(1.0, 50.0) as f32
        })
        .collect()
}

/// Averages the BatchNorm running statistics over the ranks (trainable weights are
/// identical already and stay bit-identical).
fn sync_buffers(dist: &Dist, model: Net) -> Result<Net, TrainError> {
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

/// The optimiser, with decoupled weight decay when configured.
fn make_optim(cfg: &TrainConfig) -> ModuleOptimizer {
    let wd = cfg.classify.weight_decay;
    let decay = (wd > 0.0).then(|| WeightDecayConfig::new(wd as f32));
    match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        OptimizerKind::Sgd => SgdConfig::new().with_weight_decay(decay).init(),
    }
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
    let all = dist.agree(Samples::open(cfg, cfg.classify.split))?;
    let sr = match &cfg.superres_model {
        Some(dir) => vec![dist.agree(
            LoadedModel::load(dir, &ProviderOptions::default()).map_err(TrainError::from),
        )?],
        None => Vec::new(),
    };
    train_on(cfg, dist, resume, &all, sr)
}

/// Trains on `all` (every rank reads only its shard of it), with `sr` super-resolving the
/// coarse bands when not empty.
///
/// # Errors
/// As [`train`].
pub fn train_on(
    cfg: &TrainConfig,
    dist: &Dist,
    resume: bool,
    all: &Samples,
    sr: Vec<LoadedModel>,
) -> Result<super::sr::TrainOutcome, TrainError> {
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let bands = bands_of(cfg)?;
    let local_batch = cfg.local_batch(dist.size)?;
    let smallest = all.len() / dist.size;
    if smallest < local_batch {
        return Err(TrainError::EmptyShard {
            samples: all.len(),
            ranks: dist.size,
            local_batch,
        });
    }
    let shard = all.shard(dist.rank, dist.size);
    let sr = Arc::new(sr.into_iter().map(Mutex::new).collect::<Vec<_>>());
    let (workers, depth) = (cfg.classify.loader_workers, cfg.classify.prefetch);
    // The loader alone, once over the shard: readable samples, class counts, throughput.
    let rank = dist.rank;
    let report = scan(&shard, &bands, &sr, workers, depth, &mut |l| {
        super::dist::log_line(&format!("s2edge-train[rank {rank}]: {l}"));
    });
    let report = dist.agree(report)?;
    let mut counts = report.counts.clone();
    dist.allreduce_sum(&mut counts);
    let skipped = report.missing + report.corrupt;
    // The smallest readable shard decides the epoch length (all ranks step together).
    let min_len = min_over_ranks(dist, report.readable.len());
    if min_len < local_batch {
        return Err(TrainError::EmptyShard {
            samples: min_len * dist.size,
            ranks: dist.size,
            local_batch,
        });
    }
    let pos_weight = pos_weights(&counts, cfg.classify.pos_weight_power);
    let pw = Tensor::<2>::from_data(TensorData::new(pos_weight.clone(), [1, CLASSES]), &device);
    super::dist::log_line(&format!(
        "s2edge-train[rank {}/{}]: loader alone: {} patches in {:.2} s ({:.1} patches/s, {workers} workers, prefetch {depth}); {} missing keys, {} corrupt values skipped",
        dist.rank,
        dist.size,
        report.readable.len() + skipped,
        report.seconds,
        report.patches_per_s(),
        report.missing,
        report.corrupt
    ));
    if dist.is_root() {
        super::dist::log_line(&format!(
            "s2edge-train: {} patches ({} readable on rank 0, {skipped} skipped there), bands {:?}",
            all.len(),
            report.readable.len(),
            bands.iter().map(|b| b.to_string()).collect::<Vec<_>>()
        ));
    }
    let readable = shard.select(&report.readable);
    let (arch, hidden) = (cfg.classify.arch, cfg.classify.hidden);
    let mut model = {
        let m = Net::new(arch, hidden, bands.len(), &device);
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
    // The whole run's sample order, generated lazily for the prefetch pool.
    let (n_read, seed, shuffle, total_steps) = (
        readable.len(),
        cfg.seed ^ dist.rank as u64,
        cfg.shuffle,
        cfg.steps,
    );
    let schedule = (start..total_steps).flat_map(move |step| {
        let epoch = step / steps_per_epoch as u64;
        let k = (step % steps_per_epoch as u64) as usize;
        let order = epoch_order(n_read, seed, epoch, shuffle);
        order[k * local_batch..(k + 1) * local_batch].to_vec()
    });
    let mut pool = readable.prefetch(&bands, &sr, workers, depth, Box::new(schedule));
    let t_run = Instant::now();
    let mut window = Instant::now();
    let (mut reduce_time, mut wait_time) = (0f64, 0f64);
    let mut step = start;
    let mut last_loss = f32::NAN;
    let mut interrupted = false;
    let mut last_ckpt = None;
    let mut corrupt = 0usize;
    while step < cfg.steps {
        let mut patches = Vec::with_capacity(local_batch);
        let t_wait = Instant::now();
        for _ in 0..local_batch {
            match pool.next_sample() {
                Some((i, Ok(mut p))) => {
                    if cfg.augment {
                        let code = Rng::new(cfg.seed ^ step ^ ((i as u64) << 8)).below(4);
                        flip(&mut p.x, bands.len(), code);
                    }
                    patches.push(p);
                }
                _ => corrupt += 1,
            }
        }
        wait_time += t_wait.elapsed().as_secs_f64();
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
            Some(weighted_bce(model.logits(x), y, pw.clone()))
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
        model = optim.step(cfg.lr_at(step), model, gp);
        step += 1;
        if step % cfg.log_every.max(1) == 0 || step == cfg.steps || stop {
            let dt = window.elapsed().as_secs_f64();
            let elapsed = t_run.elapsed().as_secs_f64().max(1e-9);
            super::dist::log_line(&format!(
                "s2edge-train[rank {}/{}] step {step}/{} loss {last_loss:.5} ({:.3} steps/s, {:.3} s/sample fwd+bwd, allreduce {:.1}%, loader wait {:.1}% of step time)",
                dist.rank,
                dist.size,
                cfg.steps,
                cfg.log_every.max(1) as f64 / dt.max(1e-9),
                dt / (cfg.log_every.max(1) as f64 * local_batch as f64),
                100.0 * reduce_time / elapsed,
                100.0 * wait_time / elapsed,
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
    drop(pool);
    if corrupt > 0 {
        super::dist::log_line(&format!(
            "s2edge-train[rank {}]: {corrupt} corrupt patches skipped during training",
            dist.rank
        ));
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
    model: &Net,
    optim: &ModuleOptimizer,
    bands: &[Band],
) -> Result<PathBuf, TrainError> {
    let (blocks, features) = Net::arch_code(cfg.classify.arch, cfg.classify.hidden);
    let mut data: Vec<String> = cfg.data.iter().map(|p| p.display().to_string()).collect();
    if let Some(m) = &cfg.classify.metadata {
        data.push(format!("{} (split {})", m.display(), cfg.classify.split));
    }
    let state = CheckpointState {
        step,
        task: "classify".into(),
        name: cfg.name.clone(),
        scale: 0,
        blocks,
        features,
        ranks: dist.size,
        batch: cfg.batch,
        loss,
        data,
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
) -> Result<(CheckpointState, Vec<Band>, Net), TrainError> {
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
    let arch = match st.blocks {
        0 => ClassifierArch::Resnet50,
        1 => ClassifierArch::Bandstats,
        other => {
            return Err(TrainError::Checkpoint {
                path: ckpt.to_path_buf(),
                reason: format!("unknown classifier architecture code {other}"),
            })
        }
    };
    let m = Net::new(arch, st.features, bands.len(), device);
    let w = checkpoint::load_weights(ckpt, "model")?;
    let m = unflatten(m, &w).map_err(|e| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((st, bands, m.valid()))
}

/// The classifier manifest (thresholds 0.5 until [`export`] tunes them).
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
        precision: Default::default(),
    }
}

/// A classifier as ONNX bytes: input `x` `[batch, bands, 120, 120]` (dynamic batch),
/// output `probs` `[batch, 19]`.
///
/// # Errors
/// [`TrainError::Export`].
pub fn export_net(model: &Net, nbands: usize, name: &str) -> Result<Vec<u8>, TrainError> {
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
        .export_dynamic(&model, a, b, &[spec], |m: &Net, x| m.forward(x))
        .map_err(|e| TrainError::Export {
            model: name.to_string(),
            reason: e.to_string(),
        })?;
    super::export::rename_io(onnx.as_bytes(), &["x"], &["probs"], name)
}

/// [`export_net`] of a ResNet50.
///
/// # Errors
/// [`TrainError::Export`].
pub fn export_onnx(model: &ResNet50, nbands: usize, name: &str) -> Result<Vec<u8>, TrainError> {
    export_net(&Net::ResNet50(model.clone()), nbands, name)
}

/// Decodes every readable sample of `samples` (in order), skipping per-patch failures.
///
/// # Errors
/// A fatal load error.
pub fn decode_all(
    samples: &Samples,
    bands: &[Band],
    sr: &Arc<Vec<Mutex<LoadedModel>>>,
    workers: usize,
) -> Result<Vec<Patch>, TrainError> {
    let mut out = Vec::with_capacity(samples.len());
    for (_, r) in samples.prefetch(
        bands,
        sr,
        workers,
        2 * workers.max(1),
        Box::new(0..samples.len()),
    ) {
        match r {
            Ok(p) => out.push(p),
            Err(e) if e.is_fatal() => return Err(e.into_train()),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Probabilities of `patches` through an ONNX Runtime session (input `x`, output `probs`).
///
/// # Errors
/// Inference errors.
pub fn onnx_probs(
    model: &mut LoadedModel,
    patches: &[Patch],
    nbands: usize,
) -> Result<Vec<[f32; CLASSES]>, TrainError> {
    let mut out = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(8) {
        let x: Vec<f32> = chunk.iter().flat_map(|p| p.x.iter().copied()).collect();
        let arr = ndarray::Array4::from_shape_vec((chunk.len(), nbands, PATCH, PATCH), x)
            .map_err(|e| TrainError::Tensor(e.to_string()))?;
        let res = model.run(vec![("x".into(), arr)])?;
        let probs = res
            .iter()
            .find(|(n, _)| n == "probs")
            .map(|(_, a)| a)
            .ok_or_else(|| TrainError::Tensor("the graph has no output probs".into()))?;
        let flat: Vec<f32> = probs.iter().copied().collect();
        for row in flat.chunks(CLASSES) {
            let mut r = [0f32; CLASSES];
            r.copy_from_slice(row);
            out.push(r);
        }
    }
    Ok(out)
}

/// Probabilities of `patches` through the burn network (inference mode).
pub fn burn_probs(model: &Net, patches: &[Patch], nbands: usize) -> Vec<[f32; CLASSES]> {
    let device = Device::flex();
    let mut out = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(8) {
        let (x, _) = batch_tensor(chunk, nbands, &device);
        let v = model
            .forward(x)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        for row in v.chunks(CLASSES) {
            let mut r = [0f32; CLASSES];
            r.copy_from_slice(row);
            out.push(r);
        }
    }
    out
}

/// How a classifier did on an evaluation set, next to the two baselines scored the same
/// way.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Patches scored.
    pub patches: usize,
    /// Shipped thresholds: tuned on the whole evaluation set, shrunk.
    pub thresholds: Vec<f32>,
    /// F1 with cross-validated thresholds, AP.
    pub model: ClassifyScores,
    /// F1 at the shipped thresholds on the same set (optimistic: in-sample).
    pub model_in_sample: ClassifyScores,
    /// F1 at 0.5 everywhere.
    pub model_at_half: ClassifyScores,
    /// The training-set prior, scored the same way.
    pub prior: ClassifyScores,
    /// Logistic regression on band mean/std (fitted on the training patches), same way.
    pub logistic: ClassifyScores,
}

/// Scores `probs` on `eval` next to the baselines fitted on `train` (both decoded with the
/// same bands), thresholds by the same procedure for all three.
pub fn evaluate(
    probs: &[[f32; CLASSES]],
    eval: &[Patch],
    train: &[Patch],
    nbands: usize,
    shrink: f64,
) -> Evaluation {
    let targets: Vec<[f32; CLASSES]> = eval.iter().map(|p| p.y).collect();
    let train_targets: Vec<[f32; CLASSES]> = train.iter().map(|p| p.y).collect();
    let thresholds = tune_thresholds(probs, &targets, shrink);
    let p = multilabel::prior(&train_targets);
    let prior_probs = vec![p; eval.len()];
    let feats: Vec<Vec<f32>> = train.iter().map(|p| band_stats(&p.x, nbands)).collect();
    let lr = fit_logistic(&feats, &train_targets, 1.0, 2000);
    let lr_probs: Vec<[f32; CLASSES]> =
        eval.iter().map(|p| lr(&band_stats(&p.x, nbands))).collect();
    Evaluation {
        patches: eval.len(),
        model: cross_validated(probs, &targets, shrink, CV_FOLDS),
        model_in_sample: scores_at(probs, &targets, &thresholds),
        model_at_half: scores(probs, &targets),
        prior: cross_validated(&prior_probs, &targets, shrink, CV_FOLDS),
        logistic: cross_validated(&lr_probs, &targets, shrink, CV_FOLDS),
        thresholds,
    }
}

/// Exports the classify checkpoint `ckpt`, scores it through ONNX Runtime on the
/// evaluation set (reBEN: `[classify] eval_split`; v1 folders: the training patches),
/// tunes and writes the per-class thresholds, and records the metrics with both
/// baselines. `status` says honestly how trained it is.
///
/// # Errors
/// Checkpoint, export, data and I/O errors.
pub fn export(
    cfg: &TrainConfig,
    ckpt: &Path,
    status: TrainingStatus,
    notes: Option<String>,
) -> Result<PathBuf, TrainError> {
    let device = Device::flex();
    let (st, bands, model) = load_model(ckpt, &device)?;
    let bytes = export_net(&model, bands.len(), &cfg.name)?;
    let sha = super::export::sha256_hex(&bytes);
    let stage = super::export::Staging::new(&cfg.models_dir, &cfg.name, cfg.version)?;
    stage.write_onnx(&bytes)?;
    let mut info = super::export::training_info(&st, notes);
    info.status = status;
    let mut spec = manifest(&cfg.name, cfg.version, &sha, &bands, info);
    stage.write_manifest(&spec)?;
    let sr = Arc::new(match &cfg.superres_model {
        Some(dir) => vec![Mutex::new(LoadedModel::load(
            dir,
            &ProviderOptions::default(),
        )?)],
        None => Vec::new(),
    });
    let workers = cfg.classify.loader_workers;
    let (eval_samples, eval_set) = match cfg.classify.metadata {
        Some(_) => (
            Samples::open(cfg, cfg.classify.eval_split)?,
            format!("reBEN split {}", cfg.classify.eval_split),
        ),
        None => (
            Samples::open(cfg, cfg.classify.split)?,
            "the training patches (no held-out split given)".to_string(),
        ),
    };
    let eval = decode_all(&eval_samples, &bands, &sr, workers)?;
    let train = match cfg.classify.metadata {
        Some(_) => decode_all(
            &Samples::open(cfg, cfg.classify.split)?,
            &bands,
            &sr,
            workers,
        )?,
        None => eval.clone(),
    };
    let mut loaded = LoadedModel::load(&stage.dir, &ProviderOptions::default())?;
    let probs = onnx_probs(&mut loaded, &eval, bands.len())?;
    let ev = evaluate(
        &probs,
        &eval,
        &train,
        bands.len(),
        cfg.classify.threshold_shrink,
    );
    if let Some(c) = spec.classify.as_mut() {
        c.thresholds = ev
            .thresholds
            .iter()
            .map(|t| (t * 1000.0).round() / 1000.0)
            .collect();
    }
    spec.training.metrics =
        metrics_table(&ev, &eval_set, train.len(), cfg.classify.threshold_shrink);
    if cfg.classify.metadata.is_some() {
        spec.training.data = format!(
            "{} ({} patches: {} {}, {} {}); metadata {}",
            cfg.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            train.len() + eval.len(),
            train.len(),
            cfg.classify.split,
            eval.len(),
            cfg.classify.eval_split,
            cfg.classify
                .metadata
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    stage.write_manifest(&spec)?;
    stage.publish()
}

/// The manifest's `[training.metrics]` for an evaluation.
pub fn metrics_table(
    ev: &Evaluation,
    eval_set: &str,
    train_patches: usize,
    shrink: f64,
) -> toml::Table {
    let mut t = ev.model.to_table();
    t.insert("eval_set".into(), eval_set.into());
    t.insert("eval_patches".into(), (ev.patches as i64).into());
    t.insert("train_patches".into(), (train_patches as i64).into());
    t.insert(
        "f1_thresholds".into(),
        format!("per-class, tuned on the eval set and shrunk toward one global threshold (pseudo-count {shrink}); F1 above cross-validated over {CV_FOLDS} folds of the eval set").into(),
    );
    t.insert("in_sample".into(), ev.model_in_sample.to_table().into());
    t.insert("at_0_5".into(), ev.model_at_half.to_table().into());
    t.insert("baseline_prior".into(), ev.prior.to_table().into());
    t.insert(
        "baseline_band_stats_logistic".into(),
        ev.logistic.to_table().into(),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pos_weights_follow_frequencies() {
        let mut counts = vec![0f32; CLASSES + 1];
        counts[0] = 10.0;
        counts[1] = 2.0;
        counts[CLASSES] = 40.0;
        let w = pos_weights(&counts, 1.0);
        assert_eq!(w[0], 3.0);
        assert_eq!(w[1], 19.0);
        assert_eq!(w[2], 40.0, "an absent class divides by 1");
        let s = pos_weights(&counts, 0.5);
        assert!((s[1] - 19f32.sqrt()).abs() < 1e-5);
        assert_eq!(pos_weights(&counts, 0.0), vec![1.0; CLASSES]);
    }

    #[test]
    fn reben_patch_goes_through_the_pipeline_upsampling() {
        // A reBEN patch and the same pixels through the pipeline's per-patch path agree.
        let mut bands = BTreeMap::new();
        for &b in &BEN_BANDS {
            let s = PATCH / b.resolution().factor();
            bands.insert(
                b,
                Raster {
                    width: s,
                    height: s,
                    data: (0..s * s).map(|i| 500 + (i % 97) as u16).collect(),
                },
            );
        }
        let scene = reben_scene(bands.clone());
        let x = patch_from_scene(&scene, &[Band::B05], None, "t").unwrap();
        let want = Scene::patch_10m(
            &bands[&Band::B05],
            2,
            Kernel::Bilinear,
            Rect {
                col: 0,
                row: 0,
                width: PATCH,
                height: PATCH,
            },
            PATCH,
        );
        let idx = BEN_BANDS.iter().position(|b| *b == Band::B05).unwrap();
        for (a, w) in x.iter().zip(&want.data) {
            assert_eq!(*a, (w - BEN_MEAN[idx] as f32) / BEN_STD[idx] as f32);
        }
    }
}
