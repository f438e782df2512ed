//! Super-resolution of the 20 m and 60 m bands to 10 m, tiled with a halo.
//!
//! Tiles are planned on the 10 m grid with a halo of at least the manifest's
//! `receptive_radius`, so each tile's core sees exactly the context a whole-image run
//! would (DESIGN.md "Tiling correctness"). Tiles of equal padded shape are batched.
//!
//! Radiometry (DESIGN.md "Radiometry"): outputs are de-normalised with the mean/std of
//! the input channel of the same band, converted to harmonised DN `u16` without
//! wrap-around, nodata where the band's own low-resolution pixel (or a 10 m guide band)
//! is nodata, and 65535 on the whole block a saturated low-resolution pixel covers.

use std::collections::{BTreeMap, VecDeque};

use ndarray::{Array4, ArrayD, Axis};

use crate::granule::{Band, NODATA_DN, SATURATED_DN};
use crate::raster::radiometry::to_u16;
use crate::raster::tiling::{plan, Cores, Rect, Tile};
use crate::raster::Raster;

use super::scene::Scene;
use super::tensor::{fill_channel, input_layouts, Channel, InputLayout};
use super::{Infer, Pending, PipelineError};

/// How super-resolution is tiled and batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrTiling {
    /// The tile cores on the 10 m grid (a `usize` converts to a uniform grid).
    pub cores: Cores,
    /// Tiles per inference batch.
    pub batch: usize,
}

/// One output band of a super-resolution model: the band, the channel it is
/// de-normalised with, and its native factor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutBand {
    pub(crate) band: Band,
    pub(crate) channel: Channel,
    pub(crate) factor: usize,
}

/// The product value of one super-resolved pixel (DESIGN.md "Radiometry"): nodata where
/// the band's own low-resolution pixel `low` or a 10 m guide band is nodata, 65535 where
/// `low` is saturated, else the de-normalised model output `value` as harmonised DN.
#[inline]
pub(crate) fn product_dn(low: u16, guide_nodata: bool, value: f32, channel: &Channel) -> u16 {
    if low == NODATA_DN || guide_nodata {
        NODATA_DN
    } else if low == SATURATED_DN {
        SATURATED_DN
    } else {
        to_u16(channel.denormalise(value))
    }
}

/// The output bands of the model, in output order, resolved against its inputs.
pub(crate) fn output_bands(model: &dyn Infer) -> Result<(String, Vec<OutBand>), PipelineError> {
    let spec = model.spec();
    let inputs = input_layouts(spec);
    let (name, out) = spec
        .outputs
        .iter()
        .next()
        .ok_or_else(|| PipelineError::BadOutput {
            model: spec.name.clone(),
            output: "-".into(),
            reason: "the manifest lists no output".into(),
        })?;
    let mut bands = Vec::new();
    for &band in &out.bands {
        let channel = inputs
            .iter()
            .flat_map(|i| i.channels.iter())
            .find(|c| c.band == band)
            .copied()
            .ok_or_else(|| PipelineError::BadOutput {
                model: spec.name.clone(),
                output: name.to_string(),
                reason: format!(
                    "output band {band} is not among the inputs, so it has no normalisation"
                ),
            })?;
        bands.push(OutBand {
            band,
            channel,
            factor: band.resolution().factor(),
        });
    }
    Ok((name.to_string(), bands))
}

/// The tile plan for `model` on `scene`.
///
/// # Errors
/// [`PipelineError::Options`] when the manifest has no `[superres]` section.
pub fn tile_plan(
    scene: &Scene,
    model: &dyn Infer,
    tiling: SrTiling,
) -> Result<Vec<Tile>, PipelineError> {
    let spec = model.spec();
    let sr = spec.superres.as_ref().ok_or_else(|| {
        PipelineError::Options(format!("model {} has no [superres] section", spec.name))
    })?;
    Ok(plan(
        scene.grid10.width,
        scene.grid10.height,
        tiling.cores,
        sr.receptive_radius.unwrap_or(0) as usize,
        6,
    ))
}

/// Runs `model` tile by tile and hands each tile's core, in normalised output units, to
/// `sink(output_channel, core_rect, values)`. `progress(done, total)` after each batch.
///
/// # Errors
/// A missing band, an inference failure, or an output of the wrong shape.
pub fn run_tiled(
    scene: &Scene,
    model: &mut dyn Infer,
    id: &str,
    tiling: SrTiling,
    progress: &mut dyn FnMut(usize, usize),
    sink: &mut dyn FnMut(usize, Rect, &Raster<f32>),
) -> Result<(), PipelineError> {
    let layouts = input_layouts(model.spec());
    let (out_name, out_bands) = output_bands(model)?;
    let model_name = model.spec().name.clone();
    for layout in &layouts {
        for ch in &layout.channels {
            scene.band(ch.band, &model_name, id)?;
        }
    }
    let tiles = tile_plan(scene, model, tiling)?;
    // Batch tiles of the same padded shape together.
    let mut groups: BTreeMap<(usize, usize), Vec<Tile>> = BTreeMap::new();
    for t in &tiles {
        groups
            .entry((t.padded.width, t.padded.height))
            .or_default()
            .push(*t);
    }
    let total = tiles.len();
    let mut done = 0;
    let depth = model.depth();
    // Batches in flight, oldest first: while a worker runs one, the next is prepared.
    let mut inflight: VecDeque<(Pending, Vec<Tile>, usize, usize)> = VecDeque::new();
    let mut drain = |pending: Pending,
                     chunk: Vec<Tile>,
                     w: usize,
                     h: usize,
                     done: &mut usize|
     -> Result<(), PipelineError> {
        let outputs = pending.wait()?;
        let y = pick_output(&outputs, &out_name, &model_name)?;
        check_output_shape(
            y,
            chunk.len(),
            out_bands.len(),
            h,
            w,
            &model_name,
            &out_name,
        )?;
        for (i, tile) in chunk.iter().enumerate() {
            let (ox, oy) = (
                tile.core.col - tile.padded.col,
                tile.core.row - tile.padded.row,
            );
            let item = y.index_axis(Axis(0), i);
            for c in 0..out_bands.len() {
                let plane = item.index_axis(Axis(0), c);
                let mut core = Raster::filled(tile.core.width, tile.core.height, 0.0f32);
                for r in 0..tile.core.height {
                    for col in 0..tile.core.width {
                        *core.get_mut(col, r) = plane[[oy + r, ox + col]];
                    }
                }
                sink(c, tile.core, &core);
            }
        }
        *done += chunk.len();
        progress(*done, total);
        Ok(())
    };
    for ((w, h), group) in groups {
        for chunk in group.chunks(tiling.batch.max(1)) {
            let inputs = build_batch(scene, &layouts, chunk, w, h, &model_name, id)?;
            inflight.push_back((model.submit(inputs), chunk.to_vec(), w, h));
            while inflight.len() > depth {
                if let Some((p, c, w, h)) = inflight.pop_front() {
                    drain(p, c, w, h, &mut done)?;
                }
            }
        }
    }
    while let Some((p, c, w, h)) = inflight.pop_front() {
        drain(p, c, w, h, &mut done)?;
    }
    Ok(())
}

pub(crate) fn build_batch(
    scene: &Scene,
    layouts: &[InputLayout],
    tiles: &[Tile],
    w: usize,
    h: usize,
    model: &str,
    id: &str,
) -> Result<Vec<(String, Array4<f32>)>, PipelineError> {
    let mut inputs = Vec::with_capacity(layouts.len());
    for layout in layouts {
        let mut batch = Array4::<f32>::zeros((tiles.len(), layout.channels.len(), h, w));
        for (i, tile) in tiles.iter().enumerate() {
            for (c, ch) in layout.channels.iter().enumerate() {
                let band = scene.band(ch.band, model, id)?;
                let window = Scene::window_10m(
                    band,
                    ch.band.resolution().factor(),
                    ch.kernel,
                    scene.local(tile.padded),
                );
                fill_channel(&mut batch, i, c, ch, &window);
            }
        }
        inputs.push((layout.name.clone(), batch));
    }
    Ok(inputs)
}

pub(crate) fn pick_output<'a>(
    outputs: &'a [(String, ArrayD<f32>)],
    name: &str,
    model: &str,
) -> Result<&'a ArrayD<f32>, PipelineError> {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
        .ok_or_else(|| PipelineError::BadOutput {
            model: model.to_string(),
            output: name.to_string(),
            reason: "the session did not return it".into(),
        })
}

pub(crate) fn check_output_shape(
    y: &ArrayD<f32>,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    model: &str,
    output: &str,
) -> Result<(), PipelineError> {
    if y.shape() != [n, c, h, w] {
        return Err(PipelineError::BadOutput {
            model: model.to_string(),
            output: output.to_string(),
            reason: format!("shape {:?}, expected [{n}, {c}, {h}, {w}]", y.shape()),
        });
    }
    Ok(())
}

/// Super-resolves the model's output bands to harmonised DN on the 10 m grid.
///
/// # Errors
/// See [`run_tiled`].
pub fn superres(
    scene: &Scene,
    model: &mut dyn Infer,
    id: &str,
    tiling: SrTiling,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(Band, Raster<u16>)>, PipelineError> {
    let (_, out_bands) = output_bands(model)?;
    let guides: Vec<Band> = input_layouts(model.spec())
        .iter()
        .flat_map(|l| l.channels.iter())
        .filter(|c| c.band.resolution().factor() == 1)
        .map(|c| c.band)
        .collect();
    let (w, h) = (scene.grid10.width, scene.grid10.height);
    let mut outs: Vec<Raster<u16>> = out_bands
        .iter()
        .map(|_| Raster::filled(w, h, NODATA_DN))
        .collect();
    let model_name = model.spec().name.clone();
    let mut lowres = Vec::new();
    for ob in &out_bands {
        lowres.push(scene.band(ob.band, &model_name, id)?);
    }
    let mut guide_rasters = Vec::new();
    for g in &guides {
        guide_rasters.push(scene.band(*g, &model_name, id)?);
    }
    run_tiled(
        scene,
        model,
        id,
        tiling,
        progress,
        &mut |c, rect, values| {
            let ob = out_bands[c];
            let src = lowres[c];
            let out = &mut outs[c];
            for r in 0..rect.height {
                let row = rect.row + r;
                for col0 in 0..rect.width {
                    let col = rect.col + col0;
                    let low = src.get(
                        (col / ob.factor).min(src.width - 1),
                        (row / ob.factor).min(src.height - 1),
                    );
                    let guide_nodata = guide_rasters.iter().any(|g| g.get(col, row) == NODATA_DN);
                    *out.get_mut(col, row) =
                        product_dn(low, guide_nodata, values.get(col0, r), &ob.channel);
                }
            }
        },
    )?;
    Ok(out_bands.iter().map(|b| b.band).zip(outs).collect())
}
