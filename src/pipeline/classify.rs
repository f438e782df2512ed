//! Land-cover classification on BigEarthNet geometry.
//!
//! The granule is cut into `patch`×`patch` patches on the 10 m grid (120 px: 60 px at
//! 20 m, 20 px at 60 m). Each patch's status is decided before inference:
//! `edge` (partial, with `edge_patches = "skip"`), `nodata` (touches nodata), `saturated`
//! (half or more of the pixels of some input band are DN 65535: the spectrum is clipped,
//! so scores would be noise), `cloudy` (cloud/snow fraction from the granule's own mask
//! above `max_cloud_fraction`), else `ok`. Only `ok` patches are inferred, in batches.
//! Classifiers output probabilities (the sigmoid is inside the graph); the pipeline never
//! applies another one.

use std::collections::{BTreeMap, VecDeque};

use ndarray::{s, Array4, ArrayViewMut2, Axis};
use serde::Serialize;

use crate::config::{ClassifyInput, EdgePatches};
use crate::granule::{Band, CloudMask, GeoRef, NODATA_DN, SATURATED_DN};
use crate::raster::tiling::Rect;
use crate::raster::Raster;

use super::scene::Scene;
use super::tensor::{fill_channel, input_layouts, Channel};
use super::{Infer, Pending, PipelineError};
use crate::model::manifest::ClassifySpec;

/// Why a patch was or was not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchStatus {
    /// Classified.
    Ok,
    /// Touches nodata.
    Nodata,
    /// Half or more of some input band's pixels are saturated (DN 65535).
    Saturated,
    /// Too cloudy or snowy (BigEarthNet excluded such patches).
    Cloudy,
    /// A partial patch at the right or bottom edge, skipped.
    Edge,
}

/// The result for one patch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchResult {
    /// Patch row.
    pub row: usize,
    /// Patch column.
    pub col: usize,
    /// Its 10 m-grid window (partial patches are clipped to the image).
    #[serde(skip)]
    pub rect: Rect,
    /// Status.
    pub status: PatchStatus,
    /// Cloud/snow fraction, when the granule carries a mask.
    pub cloud_fraction: Option<f64>,
    /// One probability per class for `ok` patches.
    pub scores: Option<Vec<f32>>,
    /// Classes whose score reaches their threshold.
    pub labels: Vec<String>,
}

/// What the classifier stage produces.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Class names in output order.
    pub classes: Vec<String>,
    /// Patch side on the 10 m grid.
    pub patch: usize,
    /// Patch columns.
    pub cols: usize,
    /// Patch rows.
    pub rows: usize,
    /// One pixel per patch: the grid of `classification.tif`.
    pub grid: GeoRef,
    /// All patches, row-major.
    pub patches: Vec<PatchResult>,
}

impl Classification {
    /// Patches with the given status.
    pub fn count(&self, status: PatchStatus) -> usize {
        self.patches.iter().filter(|p| p.status == status).count()
    }

    /// One raster per class, −1 where the patch was not classified.
    pub fn score_rasters(&self) -> Vec<Raster<f32>> {
        (0..self.classes.len())
            .map(|k| {
                let data = self
                    .patches
                    .iter()
                    .map(|p| {
                        p.scores
                            .as_ref()
                            .and_then(|s| s.get(k).copied())
                            .unwrap_or(-1.0)
                    })
                    .collect();
                Raster {
                    width: self.cols,
                    height: self.rows,
                    data,
                }
            })
            .collect()
    }
}

/// Options of the classifier stage.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyOptions {
    /// Partial edge patches.
    pub edge_patches: EdgePatches,
    /// Cloud/snow fraction above which a patch is `cloudy`.
    pub max_cloud_fraction: f64,
    /// Resampled or super-resolved 20 m / 60 m bands.
    pub input: ClassifyInput,
    /// Patches per inference batch.
    pub batch: usize,
}

/// Classifies every patch of `scene` (a whole granule). `superres` holds the
/// super-resolved bands on the 10 m grid when `options.input` is `Superres`.
///
/// # Errors
/// A missing band, an inference failure, or an output that is not probabilities.
pub fn classify(
    scene: &Scene,
    model: &mut dyn Infer,
    id: &str,
    options: ClassifyOptions,
    superres: Option<&BTreeMap<Band, Raster<u16>>>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Classification, PipelineError> {
    let mut c = Classifier::new(model, scene, id, options, superres.is_some())?;
    c.feed(scene, superres, scene.grid10.height, progress)?;
    c.finish(progress)
}

/// The classifier stage run incrementally, patch row by patch row, as the streaming
/// window passes down the granule ([`super::window`]). Batches are the same as for a
/// whole scene: consecutive `ok` patches in row-major order, `batch` at a time, so the
/// scores do not depend on how the granule was windowed.
pub struct Classifier<'m> {
    model: &'m mut dyn Infer,
    spec: crate::model::manifest::ModelSpec,
    cls: ClassifySpec,
    layouts: Vec<super::tensor::InputLayout>,
    id: String,
    options: ClassifyOptions,
    patch: usize,
    cols: usize,
    rows: usize,
    grid10: GeoRef,
    patches: Vec<PatchResult>,
    /// Patch rows whose statuses are decided.
    statused_rows: usize,
    /// The `ok` patches in order, and how many of them were submitted.
    todo: Vec<usize>,
    submitted: usize,
    inflight: VecDeque<(Pending, Vec<usize>)>,
    done: usize,
}

impl<'m> Classifier<'m> {
    /// Checks the model and the scene's bands (`scene` may be a window: only its band
    /// list and grid are read here).
    ///
    /// # Errors
    /// A model without `[classify]` or with a patch size that is not a multiple of 6, a
    /// missing band, or `Superres` input without super-resolution.
    pub fn new(
        model: &'m mut dyn Infer,
        scene: &Scene,
        id: &str,
        options: ClassifyOptions,
        have_superres: bool,
    ) -> Result<Classifier<'m>, PipelineError> {
        let spec = model.spec().clone();
        let cls = spec.classify.clone().ok_or_else(|| {
            PipelineError::Options(format!("model {} has no [classify] section", spec.name))
        })?;
        let patch = cls.patch as usize;
        if patch == 0 || patch % 6 != 0 {
            return Err(PipelineError::Options(format!(
                "model {}: patch size {patch} must be a positive multiple of 6",
                spec.name
            )));
        }
        if options.input == ClassifyInput::Superres && !have_superres {
            return Err(PipelineError::Options(
                "classify_input = \"superres\" needs super-resolution enabled".into(),
            ));
        }
        let layouts = input_layouts(&spec);
        for l in &layouts {
            for ch in &l.channels {
                scene.band(ch.band, &spec.name, id)?;
            }
        }
        let (w, h) = (scene.grid10.width, scene.grid10.height);
        let (cols, rows) = (w.div_ceil(patch), h.div_ceil(patch));
        Ok(Classifier {
            model,
            spec,
            cls,
            layouts,
            id: id.to_string(),
            options,
            patch,
            cols,
            rows,
            grid10: scene.grid10,
            patches: Vec::with_capacity(cols * rows),
            statused_rows: 0,
            todo: Vec::new(),
            submitted: 0,
            inflight: VecDeque::new(),
            done: 0,
        })
    }

    /// The first 10 m row that the classifier still needs from the window.
    pub fn needs_from(&self) -> usize {
        match self.todo.get(self.submitted) {
            Some(&p) => self.patches[p].rect.row,
            None => self.statused_rows * self.patch,
        }
    }

    /// Decides the statuses of every patch row that lies inside `scene`'s rows and above
    /// `limit` (10 m rows), and submits every full batch of them. `superres` (the
    /// super-resolved bands, whole, with `classify_input = "superres"`) must hold the
    /// rows up to `limit`.
    ///
    /// # Errors
    /// As [`classify`].
    pub fn feed(
        &mut self,
        scene: &Scene,
        superres: Option<&BTreeMap<Band, Raster<u16>>>,
        limit: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), PipelineError> {
        let (w, h) = (self.grid10.width, self.grid10.height);
        let limit = limit.min(h);
        let patch = self.patch;
        while self.statused_rows < self.rows {
            let r0 = self.statused_rows * patch;
            let bottom = (r0 + patch).min(h);
            if bottom > limit || !holds(scene, r0, bottom) {
                break;
            }
            for col in 0..self.cols {
                let c0 = col * patch;
                let rect = Rect {
                    col: c0,
                    row: r0,
                    width: patch.min(w - c0),
                    height: bottom - r0,
                };
                let status = self.status(scene, rect);
                if status.0 == PatchStatus::Ok {
                    self.todo.push(self.patches.len());
                }
                self.patches.push(PatchResult {
                    row: self.statused_rows,
                    col,
                    rect,
                    status: status.0,
                    cloud_fraction: status.1,
                    scores: None,
                    labels: Vec::new(),
                });
            }
            self.statused_rows += 1;
        }
        let batch = self.options.batch.max(1);
        let all_statused = self.statused_rows == self.rows;
        while self.todo.len() - self.submitted >= batch
            || (all_statused && self.submitted < self.todo.len())
        {
            let end = (self.submitted + batch).min(self.todo.len());
            let chunk = self.todo[self.submitted..end].to_vec();
            self.submit(scene, superres, chunk, progress)?;
            self.submitted = end;
        }
        Ok(())
    }

    /// The patch's status and cloud fraction.
    fn status(&self, scene: &Scene, rect: Rect) -> (PatchStatus, Option<f64>) {
        let partial = rect.width < self.patch || rect.height < self.patch;
        let cloud_fraction = scene
            .cloud
            .as_ref()
            .map(|m| cloud_fraction(m, &self.grid10, rect));
        let local = scene.local(rect);
        let channels = || self.layouts.iter().flat_map(|l| l.channels.iter());
        let status = if partial && self.options.edge_patches == EdgePatches::Skip {
            PatchStatus::Edge
        } else if channels()
            .any(|ch| touches_nodata(&scene.bands[&ch.band], ch.band.resolution().factor(), local))
        {
            PatchStatus::Nodata
        } else if channels().any(|ch| {
            mostly_saturated(&scene.bands[&ch.band], ch.band.resolution().factor(), local)
        }) {
            PatchStatus::Saturated
        } else if cloud_fraction.is_some_and(|f| f > self.options.max_cloud_fraction) {
            PatchStatus::Cloudy
        } else {
            PatchStatus::Ok
        };
        (status, cloud_fraction)
    }

    /// Builds and submits one batch; drains what exceeds the model's depth.
    fn submit(
        &mut self,
        scene: &Scene,
        superres: Option<&BTreeMap<Band, Raster<u16>>>,
        chunk: Vec<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), PipelineError> {
        let patch = self.patch;
        let mut inputs = Vec::with_capacity(self.layouts.len());
        for layout in &self.layouts {
            let mut batch =
                Array4::<f32>::zeros((chunk.len(), layout.channels.len(), patch, patch));
            for (i, &p) in chunk.iter().enumerate() {
                let rect = self.patches[p].rect;
                let local = scene.local(rect);
                for (c, ch) in layout.channels.iter().enumerate() {
                    let factor = ch.band.resolution().factor();
                    let sr = superres.and_then(|s| s.get(&ch.band));
                    // A window on the 10 m grid (a 10 m band, or a super-resolved one)
                    // is normalised straight into the batch: no per-patch temporaries.
                    // Super-resolved bands are whole; the scene's are the rows held.
                    let direct = match (self.options.input, sr) {
                        (ClassifyInput::Superres, Some(sr)) if factor > 1 => Some((sr, rect)),
                        _ if factor == 1 => Some((&scene.bands[&ch.band], local)),
                        _ => None,
                    };
                    match direct {
                        Some((band, at)) => {
                            fill_window(batch.slice_mut(s![i, c, .., ..]), band, at.col, at.row, ch)
                        }
                        None => {
                            let window = Scene::patch_10m(
                                &scene.bands[&ch.band],
                                factor,
                                ch.kernel,
                                local,
                                patch,
                            );
                            fill_channel(&mut batch, i, c, ch, &window);
                        }
                    }
                }
            }
            inputs.push((layout.name.clone(), batch));
        }
        self.inflight.push_back((self.model.submit(inputs), chunk));
        let depth = self.model.depth();
        while self.inflight.len() > depth {
            self.drain_one(progress)?;
        }
        Ok(())
    }

    fn drain_one(&mut self, progress: &mut dyn FnMut(usize, usize)) -> Result<(), PipelineError> {
        if let Some((pending, chunk)) = self.inflight.pop_front() {
            apply_scores(
                &mut self.patches,
                &chunk,
                pending,
                &self.spec.name,
                &self.cls,
            )?;
            self.done += chunk.len();
            progress(self.done, self.todo.len());
        }
        Ok(())
    }

    /// Waits for the batches in flight and returns the result.
    ///
    /// # Errors
    /// An inference failure, or [`PipelineError::Options`] when some patch rows were
    /// never fed (a caller bug).
    pub fn finish(
        mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Classification, PipelineError> {
        while !self.inflight.is_empty() {
            self.drain_one(progress)?;
        }
        if self.statused_rows < self.rows || self.submitted < self.todo.len() {
            return Err(PipelineError::Options(format!(
                "internal: {} of {} patch rows of {} were classified",
                self.statused_rows, self.rows, self.id
            )));
        }
        let patch = self.patch;
        let grid = GeoRef {
            transform: self.grid10.transform.coarsened(patch),
            width: self.cols,
            height: self.rows,
            ..self.grid10
        };
        Ok(Classification {
            classes: self.cls.classes.clone(),
            patch,
            cols: self.cols,
            rows: self.rows,
            grid,
            patches: self.patches,
        })
    }
}

/// Whether `scene` holds 10 m rows `top..bottom` of every band.
fn holds(scene: &Scene, top: usize, bottom: usize) -> bool {
    top >= scene.row0
        && scene.bands.iter().all(|(b, r)| {
            let f = b.resolution().factor();
            scene.row0 / f + r.height >= bottom.div_ceil(f).min(scene.grid10.height / f)
        })
}

/// Waits for one batch and records its scores and labels on its patches.
fn apply_scores(
    patches: &mut [PatchResult],
    chunk: &[usize],
    pending: Pending,
    model: &str,
    cls: &ClassifySpec,
) -> Result<(), PipelineError> {
    let outputs = pending.wait()?;
    let (out_name, probs) = outputs.first().ok_or_else(|| PipelineError::BadOutput {
        model: model.to_string(),
        output: "-".into(),
        reason: "the session returned no output".into(),
    })?;
    if probs.shape() != [chunk.len(), cls.classes.len()] {
        return Err(PipelineError::BadOutput {
            model: model.to_string(),
            output: out_name.clone(),
            reason: format!(
                "shape {:?}, expected [{}, {}]",
                probs.shape(),
                chunk.len(),
                cls.classes.len()
            ),
        });
    }
    for (i, &p) in chunk.iter().enumerate() {
        let scores: Vec<f32> = probs.index_axis(Axis(0), i).iter().copied().collect();
        if let Some(bad) = scores.iter().find(|s| !(0.0..=1.0).contains(*s)) {
            return Err(PipelineError::BadOutput {
                model: model.to_string(),
                output: out_name.clone(),
                reason: format!(
                    "score {bad} is not a probability; classifiers must end in a sigmoid \
                     (output_kind = \"probabilities\")"
                ),
            });
        }
        patches[p].labels = scores
            .iter()
            .zip(cls.classes.iter().zip(cls.thresholds.iter()))
            .filter(|(s, (_, t))| **s >= **t)
            .map(|(_, (name, _))| name.clone())
            .collect();
        patches[p].scores = Some(scores);
    }
    Ok(())
}

/// Fills `plane` with the normalised window of `band` whose top-left pixel is
/// (`col`, `row`), replicating the band's edge samples beyond its right and bottom
/// sides: exactly `fill_channel` of `to_f32(band.window_clamped(..))`, without the two
/// temporary rasters per patch and channel (which, allocated and freed by the
/// thousand, fragment the heap between batches).
fn fill_window(
    mut plane: ArrayViewMut2<'_, f32>,
    band: &Raster<u16>,
    col: usize,
    row: usize,
    ch: &Channel,
) {
    if band.width == 0 || band.height == 0 {
        // Nothing to replicate: all nodata, which normalises to 0.
        plane.fill(0.0);
        return;
    }
    let (max_c, max_r) = (band.width - 1, band.height - 1);
    for (r, mut dst) in plane.rows_mut().into_iter().enumerate() {
        let src = band.row((row + r).min(max_r));
        for (c, d) in dst.iter_mut().enumerate() {
            let v = src[(col + c).min(max_c)];
            // `to_f32` then `normalise`: nodata is NaN, which normalises to 0.
            *d = if v == NODATA_DN {
                0.0
            } else {
                ch.normalise(f32::from(v))
            };
        }
    }
}

/// The rows of the band's own-grid block under the 10 m `rect` (`factor` = the band's
/// pixel size in 10 m pixels), clipped to the band.
fn block_rows(band: &Raster<u16>, factor: usize, rect: Rect) -> impl Iterator<Item = &[u16]> {
    let c0 = rect.col / factor;
    let r0 = rect.row / factor;
    let c1 = (rect.col + rect.width).div_ceil(factor).min(band.width);
    let r1 = (rect.row + rect.height).div_ceil(factor).min(band.height);
    (r0..r1).map(move |r| &band.row(r)[c0.min(c1)..c1])
}

/// True when the band's own-grid block under `rect` holds a nodata pixel.
fn touches_nodata(band: &Raster<u16>, factor: usize, rect: Rect) -> bool {
    block_rows(band, factor, rect).any(|row| row.contains(&NODATA_DN))
}

/// True when half or more of the band's own-grid block under `rect` is saturated.
fn mostly_saturated(band: &Raster<u16>, factor: usize, rect: Rect) -> bool {
    let (mut pixels, mut saturated) = (0, 0);
    for row in block_rows(band, factor, rect) {
        pixels += row.len();
        saturated += row.iter().filter(|&&v| v == SATURATED_DN).count();
    }
    pixels > 0 && 2 * saturated >= pixels
}

/// Fraction of flagged mask pixels under `rect` (10 m grid), through map coordinates
/// since the mask has its own grid.
fn cloud_fraction(mask: &CloudMask, grid10: &GeoRef, rect: Rect) -> f64 {
    let t = &grid10.transform;
    let (x0, y0) = t.apply(rect.col as f64, rect.row as f64);
    let (x1, y1) = t.apply(
        (rect.col + rect.width) as f64,
        (rect.row + rect.height) as f64,
    );
    let m = &mask.georef.transform;
    let to_col = |x: f64| ((x - m.origin_x) / m.pixel_width).round().max(0.0) as usize;
    let to_row = |y: f64| ((y - m.origin_y) / m.pixel_height).round().max(0.0) as usize;
    let (c0, c1) = (
        to_col(x0).min(mask.flagged.width),
        to_col(x1).min(mask.flagged.width),
    );
    let (r0, r1) = (
        to_row(y0).min(mask.flagged.height),
        to_row(y1).min(mask.flagged.height),
    );
    let mut n = 0usize;
    let mut flagged = 0usize;
    for r in r0..r1 {
        for c in c0..c1 {
            n += 1;
            flagged += usize::from(mask.flagged.get(c, r) != 0);
        }
    }
    if n == 0 {
        0.0
    } else {
        flagged as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::radiometry::to_f32;
    use crate::raster::resample::Kernel;

    #[test]
    fn a_patch_is_saturated_from_half_its_pixels_on_the_band_grid() {
        // 20 m band, 6×6 px: the 10 m patch (0,0,6,6) covers its 3×3 block (9 px).
        let mut band = Raster::from_vec(6, 6, vec![1000u16; 36]).unwrap();
        let rect = Rect {
            col: 0,
            row: 0,
            width: 6,
            height: 6,
        };
        for i in [0, 1, 2, 6] {
            band.data[i] = SATURATED_DN;
        }
        assert!(!mostly_saturated(&band, 2, rect), "4 of 9");
        band.data[7] = SATURATED_DN;
        assert!(mostly_saturated(&band, 2, rect), "5 of 9");
        // Saturation outside the block does not count.
        let other = Rect { col: 6, ..rect };
        assert!(!mostly_saturated(&band, 2, other));
    }

    #[test]
    fn fill_window_matches_fill_channel_of_a_clamped_window() {
        let band = Raster::from_vec(7, 5, (0..35u16).map(|v| v * 100 % 700).collect()).unwrap();
        assert!(band.data.contains(&NODATA_DN));
        let ch = Channel {
            band: Band::B02,
            mean: 250.0,
            std: 3.0,
            kernel: Kernel::Bilinear,
        };
        // Inside, and reaching past the right and bottom edges.
        for (col, row) in [(0, 0), (2, 1), (5, 4)] {
            let mut direct = Array4::<f32>::from_elem((1, 2, 4, 4), f32::NAN);
            fill_window(direct.slice_mut(s![0, 1, .., ..]), &band, col, row, &ch);
            let mut reference = Array4::<f32>::from_elem((1, 2, 4, 4), f32::NAN);
            let window = to_f32(&band.window_clamped(col as isize, row as isize, 4, 4));
            fill_channel(&mut reference, 0, 1, &ch, &window);
            assert_eq!(
                direct.slice(s![0, 1, .., ..]),
                reference.slice(s![0, 1, .., ..]),
                "window at ({col}, {row})"
            );
            assert!(direct.slice(s![0, 0, .., ..]).iter().all(|v| v.is_nan()));
        }
    }
}
