//! Super-resolution data under Wald's protocol (DESIGN.md "Reference facts", DSen2).
//!
//! A granule region is degraded by the scale factor with the project's standard
//! `raster::degrade::wald_degrade` (every band at its own resolution); the degraded 10 m
//! bands and the degraded coarse bands, upsampled bilinearly to the degraded 10 m grid
//! with `raster::resample::upsample` (exactly what the inference pipeline feeds), form the
//! input; the original output bands, at that same grid, are the target.
//!
//! Invariants:
//! - values are harmonised DN normalised as the manifest records: `(x − 0) / 2000`;
//! - a region's side at 10 m is a multiple of `scale × coarsest factor`, so every band
//!   degrades to whole pixels (6×: the 33UUB crop's 100² at 60 m becomes 96²);
//! - training and held-out regions are cut from the granule *before* degradation, so no
//!   held-out pixel leaks into a training input through the blur;
//! - the sample order is one permutation shared by all ranks; rank `r` takes the blocks
//!   `r, r + size, …` of `local_batch` consecutive samples, so 2 ranks × b/2 see exactly
//!   the samples 1 rank × b sees in the same step.

use std::path::{Path, PathBuf};

use crate::granule::{Band, GranuleSource};
use crate::raster::degrade::{wald_degrade, wald_degrade_sigma};
use crate::raster::radiometry::{harmonise, to_f32};
use crate::raster::resample::{upsample, Kernel};
use crate::raster::Raster;

use super::config::{DataSplit, Holdout};
use super::reben;
use super::TrainError;

/// The normalisation of every super-resolution channel: `(x − MEAN) / STD` on harmonised
/// DN, as DSen2.
pub const NORM_MEAN: f32 = 0.0;
/// See [`NORM_MEAN`].
pub const NORM_STD: f32 = 2000.0;

/// Which bands go where for one scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrBands {
    /// The scale (2 or 6).
    pub scale: usize,
    /// Graph inputs in order: name and bands (`x10`, `x20`, and `x60` for 6×).
    pub inputs: Vec<(&'static str, Vec<Band>)>,
    /// The output bands (`y`), which are the last input's bands: the residual adds it.
    pub outputs: Vec<Band>,
}

impl SrBands {
    /// The DSen2 band layout for `scale` (2: 20 m bands; 6: 60 m bands).
    pub fn for_scale(scale: usize) -> SrBands {
        let x10 = vec![Band::B02, Band::B03, Band::B04, Band::B08];
        let x20 = vec![
            Band::B05,
            Band::B06,
            Band::B07,
            Band::B8A,
            Band::B11,
            Band::B12,
        ];
        if scale == 6 {
            let x60 = vec![Band::B01, Band::B09];
            SrBands {
                scale,
                inputs: vec![("x10", x10), ("x20", x20), ("x60", x60.clone())],
                outputs: x60,
            }
        } else {
            SrBands {
                scale,
                inputs: vec![("x10", x10), ("x20", x20.clone())],
                outputs: x20,
            }
        }
    }

    /// The coarsest native factor among the inputs (2 or 6).
    pub fn coarsest(&self) -> usize {
        self.inputs
            .iter()
            .flat_map(|(_, b)| b.iter())
            .map(|b| b.resolution().factor())
            .max()
            .unwrap_or(1)
    }

    /// Region sides at 10 m must be multiples of this.
    pub fn unit(&self) -> usize {
        self.scale * self.coarsest()
    }

    /// Channels per input, in order.
    pub fn channels(&self) -> Vec<usize> {
        self.inputs.iter().map(|(_, b)| b.len()).collect()
    }

    /// Every band read.
    pub fn all_bands(&self) -> Vec<Band> {
        self.inputs
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }
}

/// A rectangle of the 10 m grid (pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub col: usize,
    /// First row.
    pub row: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Harmonised native-resolution bands of one granule, as `f32` (NaN = nodata).
#[derive(Debug, Clone)]
pub struct NativeBands {
    /// The granule path (for errors).
    pub path: PathBuf,
    /// The granule id.
    pub id: String,
    /// 10 m grid width.
    pub width10: usize,
    /// 10 m grid height.
    pub height10: usize,
    /// Per band, harmonised DN on its native grid.
    pub bands: Vec<(Band, Raster<f32>)>,
}

impl NativeBands {
    /// Reads and harmonises `bands` of the granule at `path` (SAFE, GeoTIFF folder or
    /// BigEarthNet patch: anything `GranuleSource::open` reads).
    ///
    /// # Errors
    /// [`TrainError::Dataset`] for a missing path, [`TrainError::Granule`] for a reader
    /// error, [`TrainError::MissingBand`], [`TrainError::TooSmall`] for inconsistent
    /// band sizes.
    pub fn read(path: &Path, bands: &[Band]) -> Result<NativeBands, TrainError> {
        if !path.exists() {
            return Err(TrainError::Dataset {
                path: path.to_path_buf(),
                reason: "no such file or directory".into(),
            });
        }
        let source = GranuleSource::open(path).map_err(|source| TrainError::Granule {
            path: path.to_path_buf(),
            source,
        })?;
        let id = source.id.to_string();
        let mut out = Vec::new();
        let mut size10: Option<(usize, usize)> = None;
        for &band in bands {
            if !source.bands.contains_key(&band) {
                return Err(TrainError::MissingBand {
                    path: path.to_path_buf(),
                    band,
                });
            }
            let data = source
                .read_band(band)
                .map_err(|source| TrainError::Granule {
                    path: path.to_path_buf(),
                    source,
                })?;
            same_grid(path, &id, band, &data.dn, &mut size10)?;
            let h = harmonise(&data.dn, source.metadata.offset(band));
            out.push((band, to_f32(&h)));
        }
        let (width10, height10) = size10.unwrap_or((0, 0));
        Ok(NativeBands {
            path: path.to_path_buf(),
            id,
            width10,
            height10,
            bands: out,
        })
    }

    /// A decoded patch (harmonised DN on native grids, as reBEN stores them) as one
    /// scene; `path` and `id` name it in errors and logs.
    ///
    /// # Errors
    /// [`TrainError::TooSmall`] for bands whose sizes disagree, [`TrainError::MissingBand`]
    /// when `bands` asks for one the patch lacks.
    pub fn from_patch(
        path: &Path,
        id: &str,
        patch: &std::collections::BTreeMap<Band, Raster<u16>>,
        bands: &[Band],
    ) -> Result<NativeBands, TrainError> {
        let mut out = Vec::with_capacity(bands.len());
        let mut size10: Option<(usize, usize)> = None;
        for &band in bands {
            let dn = patch.get(&band).ok_or_else(|| TrainError::MissingBand {
                path: path.to_path_buf(),
                band,
            })?;
            same_grid(path, id, band, dn, &mut size10)?;
            out.push((band, to_f32(dn)));
        }
        let (width10, height10) = size10.unwrap_or((0, 0));
        Ok(NativeBands {
            path: path.to_path_buf(),
            id: id.to_string(),
            width10,
            height10,
            bands: out,
        })
    }

    /// The native raster of `band`.
    ///
    /// # Errors
    /// [`TrainError::MissingBand`].
    pub fn band(&self, band: Band) -> Result<&Raster<f32>, TrainError> {
        self.bands
            .iter()
            .find(|(b, _)| *b == band)
            .map(|(_, r)| r)
            .ok_or_else(|| TrainError::MissingBand {
                path: self.path.clone(),
                band,
            })
    }

    /// `region` (10 m pixels) of `band` on its native grid.
    ///
    /// # Errors
    /// [`TrainError::MissingBand`].
    pub fn cut(&self, band: Band, region: Region) -> Result<Raster<f32>, TrainError> {
        let f = band.resolution().factor();
        let r = self.band(band)?;
        Ok(r.window(
            region.col / f,
            region.row / f,
            region.width / f,
            region.height / f,
        ))
    }
}

/// Checks that `band`'s raster `dn` of scene `id` covers the same 10 m grid as the bands
/// before it (`size10`, set by the first).
///
/// # Errors
/// [`TrainError::TooSmall`] naming both sizes.
fn same_grid(
    path: &Path,
    id: &str,
    band: Band,
    dn: &Raster<u16>,
    size10: &mut Option<(usize, usize)>,
) -> Result<(), TrainError> {
    let f = band.resolution().factor();
    let s = (dn.width * f, dn.height * f);
    match *size10 {
        Some(prev) if prev != s => Err(TrainError::TooSmall {
            path: path.to_path_buf(),
            reason: format!(
                "{id}: band {band} covers {}×{} px at 10 m, earlier bands {}×{}",
                s.0, s.1, prev.0, prev.1
            ),
        }),
        _ => {
            *size10 = Some(s);
            Ok(())
        }
    }
}

/// Reads `bands` of every scene in `paths`: a granule (anything [`NativeBands::read`]
/// reads) or a reBEN LMDB folder, whose patches of `split` (listed in `metadata`, by
/// default reBEN's `metadata.parquet` beside the folder) are each a whole scene. Keys
/// absent from the LMDB and values that do not decode are skipped and counted (second
/// return value).
///
/// # Errors
/// [`NativeBands::read`]'s errors; [`TrainError::Dataset`] for an LMDB without metadata;
/// reBEN errors other than per-patch ones.
pub fn read_scenes(
    paths: &[PathBuf],
    metadata: Option<&Path>,
    split: DataSplit,
    bands: &[Band],
) -> Result<(Vec<NativeBands>, usize), TrainError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for path in paths {
        if !reben::is_lmdb(path) {
            out.push(NativeBands::read(path, bands)?);
            continue;
        }
        let beside = path.parent().map(|p| p.join("metadata.parquet"));
        let meta = metadata
            .map(Path::to_path_buf)
            .or(beside)
            .filter(|m| m.is_file())
            .ok_or_else(|| TrainError::Dataset {
                path: path.clone(),
                reason: "a reBEN LMDB needs its metadata.parquet (reben_metadata, or beside \
                         the LMDB folder)"
                    .into(),
            })?;
        let lmdb = reben::Lmdb::open(path)?;
        let rows = reben::rows_of_split(&reben::read_metadata(&meta)?, split);
        let before = out.len();
        for row in &rows {
            match lmdb.s2_patch(&row.patch_id, bands) {
                Ok(patch) => out.push(NativeBands::from_patch(path, &row.patch_id, &patch, bands)?),
                Err(e) if e.is_per_patch() => {
                    super::dist::log_line(&format!(
                        "s2edge-train: reBEN patch {} skipped: {e}",
                        row.patch_id
                    ));
                    skipped += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        super::dist::log_line(&format!(
            "s2edge-train: {} reBEN {split} patches from {}",
            out.len() - before,
            path.display()
        ));
    }
    Ok((out, skipped))
}

/// The training and held-out regions of a `width10 × height10` granule for `bands`.
///
/// # Errors
/// [`TrainError::TooSmall`] when a region would be smaller than one unit.
pub fn split_regions(
    path: &Path,
    width10: usize,
    height10: usize,
    bands: &SrBands,
    holdout: Holdout,
) -> Result<(Region, Option<Region>), TrainError> {
    let u = bands.unit();
    let w = width10 / u * u;
    let h = height10 / u * u;
    let units = h / u;
    let too_small = |what: &str| {
        TrainError::TooSmall {
        path: path.to_path_buf(),
        reason: format!(
            "{width10}×{height10} px at 10 m leaves no {what} region for scale {} (regions are multiples of {u} px)",
            bands.scale
        ),
    }
    };
    if w == 0 || units == 0 {
        return Err(too_small("training"));
    }
    match holdout {
        Holdout::None => Ok((
            Region {
                col: 0,
                row: 0,
                width: w,
                height: h,
            },
            None,
        )),
        Holdout::BottomThird => {
            let train_units = (units * 2).div_ceil(3);
            if train_units == 0 || train_units >= units {
                return Err(too_small("held-out"));
            }
            let split = train_units * u;
            Ok((
                Region {
                    col: 0,
                    row: 0,
                    width: w,
                    height: split,
                },
                Some(Region {
                    col: 0,
                    row: split,
                    width: w,
                    height: h - split,
                }),
            ))
        }
    }
}

/// One region after Wald degradation, normalised: model inputs and target on the degraded
/// 10 m grid.
#[derive(Debug, Clone)]
pub struct SrScene {
    /// Degraded-grid width.
    pub width: usize,
    /// Degraded-grid height.
    pub height: usize,
    /// Per graph input, per band: normalised values (coarse bands bilinearly upsampled).
    pub inputs: Vec<Vec<Raster<f32>>>,
    /// Per output band: the original (normalised).
    pub target: Vec<Raster<f32>>,
}

/// Per graph input, per band: the degraded band on its own degraded grid.
pub type DegradedNative = Vec<Vec<Raster<f32>>>;

/// Degrades `region` of `native` by the scale (Wald's protocol): the model's view and the
/// degraded bands on their own grids.
///
/// # Errors
/// [`TrainError::MissingBand`].
pub fn degrade_region(
    native: &NativeBands,
    region: Region,
    bands: &SrBands,
) -> Result<(SrScene, DegradedNative), TrainError> {
    degrade_region_blur(native, region, bands, 1.0)
}

/// The Wald degradation of one band by `scale` with σ = `blur_factor` × scale/2 (1: the
/// standard [`wald_degrade`]).
pub fn degrade_band(band: &Raster<f32>, scale: usize, blur_factor: f32) -> Raster<f32> {
    if blur_factor == 1.0 {
        wald_degrade(band, scale)
    } else {
        wald_degrade_sigma(band, scale, blur_factor * scale as f32 / 2.0)
    }
}

/// [`degrade_region`] with the blur σ = `blur_factor` × scale/2 instead of the standard
/// (blur augmentation, blur-mismatch evaluation).
///
/// # Errors
/// [`TrainError::MissingBand`].
pub fn degrade_region_blur(
    native: &NativeBands,
    region: Region,
    bands: &SrBands,
    blur_factor: f32,
) -> Result<(SrScene, DegradedNative), TrainError> {
    let s = bands.scale;
    let (w, h) = (region.width / s, region.height / s);
    let norm = |r: &Raster<f32>| r.map(|v| (v - NORM_MEAN) / NORM_STD);
    let mut inputs = Vec::new();
    // The degraded bands on their own (degraded) grids, in harmonised DN: eval builds a
    // pipeline scene from them.
    let mut degraded_native = Vec::new();
    for (_, group) in &bands.inputs {
        let mut chans = Vec::new();
        let mut natives = Vec::new();
        for &band in group {
            let f = band.resolution().factor();
            let d = degrade_band(&native.cut(band, region)?, s, blur_factor);
            let up = if f == 1 {
                d.clone()
            } else {
                upsample(&d, f, Kernel::Bilinear)
            };
            chans.push(norm(&up));
            natives.push(d);
        }
        inputs.push(chans);
        degraded_native.push(natives);
    }
    let mut target = Vec::new();
    for &band in &bands.outputs {
        target.push(norm(&native.cut(band, region)?));
    }
    Ok((
        SrScene {
            width: w,
            height: h,
            inputs,
            target,
        },
        degraded_native,
    ))
}

/// Where a training sample sits: scene index and patch origin on the degraded grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Index into the scenes.
    pub scene: usize,
    /// Patch column.
    pub col: usize,
    /// Patch row.
    pub row: usize,
}

/// Patches of side `patch` at a stride of `patch / 4` over each scene, skipping any that
/// touches nodata (counted in the second return value).
pub fn enumerate_samples(scenes: &[SrScene], patch: usize) -> (Vec<Sample>, usize) {
    enumerate_samples_aligned(scenes, patch, 1)
}

/// [`enumerate_samples`] with every patch origin a multiple of `align`: the
/// back-projection layer needs patches on the coarse grid (its observation recovery and
/// degradation are strided by the scale).
pub fn enumerate_samples_aligned(
    scenes: &[SrScene],
    patch: usize,
    align: usize,
) -> (Vec<Sample>, usize) {
    let align = align.max(1);
    let stride = ((patch / 4).max(1)).div_ceil(align) * align;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (i, sc) in scenes.iter().enumerate() {
        if sc.width < patch || sc.height < patch {
            continue;
        }
        let (last_row, last_col) = (
            (sc.height - patch) / align * align,
            (sc.width - patch) / align * align,
        );
        let mut rows: Vec<usize> = (0..=last_row).step_by(stride).collect();
        let mut cols: Vec<usize> = (0..=last_col).step_by(stride).collect();
        // Always include the last row/column so the scene edge is trained on.
        if rows.last() != Some(&last_row) {
            rows.push(last_row);
        }
        if cols.last() != Some(&last_col) {
            cols.push(last_col);
        }
        for &row in &rows {
            for &col in &cols {
                let finite = sc.inputs.iter().flatten().chain(sc.target.iter()).all(|r| {
                    (row..row + patch)
                        .all(|y| r.row(y)[col..col + patch].iter().all(|v| v.is_finite()))
                });
                if finite {
                    out.push(Sample { scene: i, col, row });
                } else {
                    skipped += 1;
                }
            }
        }
    }
    (out, skipped)
}

/// SplitMix64: a tiny deterministic generator, identical on every rank.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The sample order of `epoch`: a permutation shared by every rank (or the identity).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F));
        for i in (1..n).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    order
}

/// The positions (into an epoch order) of rank `rank`'s `step_in_epoch`-th local batch.
pub fn local_positions(
    step_in_epoch: usize,
    rank: usize,
    size: usize,
    local_batch: usize,
) -> std::ops::Range<usize> {
    let start = (step_in_epoch * size + rank) * local_batch;
    start..start + local_batch
}

/// One of the 8 symmetries of the square: bit 0 flips columns, bit 1 flips rows, bit 2
/// transposes.
fn dihedral(src: &[f32], p: usize, code: u8, out: &mut Vec<f32>) {
    for y in 0..p {
        for x in 0..p {
            let (mut sx, mut sy) = if code & 4 != 0 { (y, x) } else { (x, y) };
            if code & 1 != 0 {
                sx = p - 1 - sx;
            }
            if code & 2 != 0 {
                sy = p - 1 - sy;
            }
            out.push(src[sy * p + sx]);
        }
    }
}

/// A batch: per graph input `[n, c, p, p]` row-major, and the target.
#[derive(Debug, Clone, Default)]
pub struct SrBatch {
    /// Samples.
    pub n: usize,
    /// Patch side.
    pub patch: usize,
    /// Per input: channel count and values.
    pub inputs: Vec<(usize, Vec<f32>)>,
    /// Output channel count and target values.
    pub target: (usize, Vec<f32>),
}

/// Assembles `samples` into a batch; `augment[i]` is the dihedral code of sample `i`.
pub fn make_batch(scenes: &[SrScene], samples: &[Sample], augment: &[u8], patch: usize) -> SrBatch {
    let Some(first) = scenes.first() else {
        return SrBatch::default();
    };
    let mut inputs: Vec<(usize, Vec<f32>)> =
        first.inputs.iter().map(|g| (g.len(), Vec::new())).collect();
    let mut target = (first.target.len(), Vec::new());
    let mut buf = Vec::with_capacity(patch * patch);
    let mut cut = |r: &Raster<f32>, s: &Sample, code: u8, out: &mut Vec<f32>| {
        buf.clear();
        for y in s.row..s.row + patch {
            buf.extend_from_slice(&r.row(y)[s.col..s.col + patch]);
        }
        dihedral(&buf, patch, code, out);
    };
    for (i, s) in samples.iter().enumerate() {
        let sc = &scenes[s.scene];
        let code = augment.get(i).copied().unwrap_or(0);
        for (g, (_, out)) in sc.inputs.iter().zip(inputs.iter_mut()) {
            for r in g {
                cut(r, s, code, out);
            }
        }
        for r in &sc.target {
            cut(r, s, code, &mut target.1);
        }
    }
    SrBatch {
        n: samples.len(),
        patch,
        inputs,
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reben_patches_of_the_split_are_whole_scenes() {
        let dir = tempfile::tempdir().unwrap();
        let lmdb = dir.path().join("BigEarthNet-S2-LMDB");
        let patch = |v: u16| -> std::collections::BTreeMap<Band, Raster<u16>> {
            Band::PRODUCT
                .iter()
                .map(|&b| {
                    let n = 120 / b.resolution().factor();
                    let data = (0..n * n).map(|i| v + (i % 7) as u16).collect();
                    (b, Raster::from_vec(n, n, data).unwrap())
                })
                .collect()
        };
        let entries: Vec<(String, Vec<u8>)> = [("a", 100), ("b", 200), ("v", 300)]
            .iter()
            .map(|(k, v)| (k.to_string(), reben::encode_s2(k, &patch(*v)).unwrap()))
            .chain([("bad".to_string(), b"not safetensors".to_vec())])
            .collect();
        reben::write_lmdb(&lmdb, &entries).unwrap();
        let paths = vec![lmdb.clone()];
        let bands = SrBands::for_scale(2).all_bands();
        let e = read_scenes(&paths, None, DataSplit::Train, &bands).unwrap_err();
        assert!(e.to_string().contains("metadata.parquet"), "{e}");
        let row = |k: &str, split: &str| {
            (
                k.to_string(),
                vec!["Arable land".to_string()],
                split.to_string(),
                "Austria".to_string(),
                String::new(),
            )
        };
        reben::write_metadata(
            &dir.path().join("metadata.parquet"),
            &[
                row("a", "train"),
                row("b", "train"),
                row("v", "validation"),
                row("bad", "train"),
                row("absent", "train"),
            ],
        )
        .unwrap();
        let (scenes, skipped) = read_scenes(&paths, None, DataSplit::Train, &bands).unwrap();
        assert_eq!(skipped, 2, "the corrupt value and the absent key");
        let ids: Vec<&str> = scenes.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let b = &scenes[1];
        assert_eq!((b.width10, b.height10), (120, 120));
        assert_eq!(b.band(Band::B05).unwrap().width, 60);
        assert_eq!(b.band(Band::B02).unwrap().data[3], 203.0);
        let (val, _) = read_scenes(&paths, None, DataSplit::Validation, &bands).unwrap();
        assert_eq!(val.len(), 1);
        assert_eq!(val[0].band(Band::B12).unwrap().data[0], 300.0);
    }

    #[test]
    fn shards_of_two_ranks_cover_one_rank_batch() {
        // 1 rank × 4 at step 3 == ranks 0 and 1 × 2 at step 3, in order.
        let one = local_positions(3, 0, 1, 4);
        let a = local_positions(3, 0, 2, 2);
        let b = local_positions(3, 1, 2, 2);
        let joined: Vec<usize> = a.chain(b).collect();
        assert_eq!(joined, one.collect::<Vec<_>>());
    }

    #[test]
    fn dihedral_codes_are_distinct_permutations() {
        let p = 3;
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut seen = Vec::new();
        for code in 0..8u8 {
            let mut out = Vec::new();
            dihedral(&src, p, code, &mut out);
            let mut sorted = out.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, src);
            assert!(!seen.contains(&out), "code {code} repeats a transform");
            seen.push(out);
        }
    }

    #[test]
    fn split_keeps_units_and_holds_out_a_third() {
        let b6 = SrBands::for_scale(6);
        let (tr, ho) = split_regions(Path::new("x"), 600, 600, &b6, Holdout::BottomThird).unwrap();
        let ho = ho.unwrap();
        assert_eq!(tr.width, 576);
        assert_eq!(tr.height % 36, 0);
        assert_eq!(ho.height % 36, 0);
        assert_eq!(tr.height + ho.height, 576);
        assert_eq!(ho.row, tr.height);
        let b2 = SrBands::for_scale(2);
        let (tr, ho) = split_regions(Path::new("x"), 600, 600, &b2, Holdout::BottomThird).unwrap();
        assert_eq!((tr.height, ho.unwrap().height), (400, 200));
        assert!(split_regions(Path::new("x"), 30, 30, &b6, Holdout::None).is_err());
    }

    #[test]
    fn epoch_order_is_a_shared_permutation() {
        let a = epoch_order(50, 7, 3, true);
        let b = epoch_order(50, 7, 3, true);
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(50, 7, 4, true));
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }
}
