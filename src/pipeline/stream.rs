//! Streaming super-resolution: the granule is cut into vertical [`Panel`]s of
//! [`PANEL_TILES`] tile columns, and each panel is processed in row strips, one tile row
//! of the tile plan each (the strip = the SR tile height; its tiles carry their halo).
//! The input of each strip comes from the panel's moving [`Window`] (its rows plus halo
//! and resampling margin, its columns plus the same, decoded ahead by the reader
//! thread), and every finished strip is handed on at once (to the block-streaming COG
//! writer in [`super::process`]), so what is held depends on the tile size, not on the
//! granule's width or height.
//!
//! A tile whose core has no pixel where every 10 m guide band is valid is not inferred:
//! [`super::superres::product_dn`] would make all of it nodata anyway, so skipping it
//! changes no pixel (swath edges, and all-nodata granules, cost no inference).
//!
//! For each strip, each model (2× then 6×) runs on the strip's tiles, batched by padded
//! shape with the batch size that [`super::budget`] derives from `[runtime]
//! memory_budget`; while a worker runs one batch the next is prepared (the model's
//! [`Infer::depth`]). The models' batches do not overlap each other: both pools would
//! otherwise fight over the same cores. Tiles, halos, the per-pixel radiometry
//! ([`super::superres::product_dn`]) and the input windows ([`Scene::window_10m`]) are
//! exactly those of the whole-raster [`super::superres::superres`], so the strips are
//! identical to the same rows and columns of its output (tested).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

use ndarray::Axis;

use crate::granule::{Band, NODATA_DN};
use crate::raster::tiling::{plan, Cores, Tile};
use crate::raster::Raster;

use super::budget::{plan_batch, BatchPlan};
use super::scene::Scene;
use super::superres::{
    build_batch, check_output_shape, output_bands, pick_output, product_dn, OutBand,
};
use super::tensor::{input_layouts, InputLayout};
use super::window::Window;
use super::{Infer, Pending, PipelineError};

/// How the strip loop tiles and batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripOptions {
    /// Configured core side of the edge tiles (`[pipeline] sr_tile`); the budget may
    /// shrink it, and interior tiles are smaller by the widest halo ([`Plans`]).
    pub tile: usize,
    /// Upper bound of the batch size (`[runtime] batch_size`).
    pub max_batch: usize,
    /// `[runtime] memory_budget` in bytes, per batch.
    pub memory_budget: u64,
}

/// One finished strip of a panel: rows `row..row + height` and columns
/// `col..col + width` of the 10 m grid, with every output band of every model, each
/// `width × height`.
#[derive(Debug)]
pub struct Strip {
    /// First row on the 10 m grid.
    pub row: usize,
    /// Rows.
    pub height: usize,
    /// First column on the 10 m grid (the panel's first core column).
    pub col: usize,
    /// Columns.
    pub width: usize,
    /// Output bands in model order, then output order.
    pub bands: Vec<(Band, Raster<u16>)>,
}

/// What the strip loop did, per model: for provenance and benchmarks.
#[derive(Debug, Clone)]
pub struct ModelStats {
    /// `name@version`.
    pub model: String,
    /// Tile and batch chosen from the budget.
    pub plan: BatchPlan,
    /// Tiles run.
    pub tiles: usize,
    /// Padded pixels computed (the halo recomputation counted in).
    pub padded_pixels: u64,
    /// Tiles not inferred because no pixel of their core had all guide bands valid.
    pub skipped: usize,
    /// Wall time from each batch's submission to its last drained answer.
    pub busy: Duration,
}

struct ModelRun<'m> {
    model: &'m mut dyn Infer,
    name: String,
    layouts: Vec<InputLayout>,
    out_name: String,
    out_bands: Vec<OutBand>,
    /// The 10 m input bands (nodata in any of them makes an output pixel nodata).
    guides: Vec<Band>,
    /// The plan's tiles by strip.
    strips: Vec<Vec<Tile>>,
    stats: ModelStats,
}

/// 10 m rows and columns held beyond a strip's padded tiles: the upsampling margin of
/// the coarsest band (three 60 m pixels), so that every window cut equals the
/// whole-image one.
const MARGIN: usize = 18;

/// Tile columns per [`Panel`]: the width of everything a strip holds (its input rows,
/// its output bands) is this many tiles, whatever the granule's width.
pub const PANEL_TILES: usize = 2;

/// A vertical panel of the granule, processed top to bottom on its own: the tiles whose
/// cores start in the 10 m columns `cores`, and the 10 m columns `input` that their
/// padded windows read, with the resampling margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    /// Columns of the output that this panel writes.
    pub cores: Range<usize>,
    /// Columns of the input that it reads.
    pub input: Range<usize>,
}

/// Each model's halo, channel counts and batch plan, and the one grid of tile cores that
/// they share, so that their strips line up: edge tiles of the smallest tile that the
/// budget allows any of them, interior tiles smaller by the widest halo
/// ([`Cores::capped`]), so that no model's padded window is larger on a full tile than
/// on a granule of two tiles. Made once from the models ([`plan_models`]); [`panels`] and
/// [`superres_strips`] both follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    cores: Cores,
    /// Per model: (halo, input channels, output channels, batch plan at `tile`).
    models: Vec<(usize, usize, usize, BatchPlan)>,
}

impl Plans {
    /// The side of the largest tile core (every strip is at most this high).
    pub fn tile(&self) -> usize {
        self.cores.edge
    }

    /// The grid of tile cores every model runs on.
    pub fn cores(&self) -> Cores {
        self.cores
    }

    /// Tiles of every model together on a `width`×`height` granule.
    pub fn tiles(&self, width: usize, height: usize) -> usize {
        plan(width, height, self.cores, 0, 6).len() * self.models.len()
    }
}

/// The [`Plans`] of `models` (in the order they will run) under `options`.
///
/// # Errors
/// A model without `[superres]`.
pub fn plan_models(models: &[&dyn Infer], options: StripOptions) -> Result<Plans, PipelineError> {
    let mut halos = Vec::new();
    let mut tile = None::<usize>;
    for m in models {
        let spec = m.spec();
        let sr = spec.superres.as_ref().ok_or_else(|| {
            PipelineError::Options(format!("model {} has no [superres] section", spec.name))
        })?;
        let halo = sr.receptive_radius.unwrap_or(0) as usize;
        let in_ch = spec.inputs.iter().map(|(_, i)| i.bands.len()).sum();
        let out_ch = spec.outputs.iter().map(|(_, o)| o.bands.len()).sum();
        halos.push((halo, in_ch, out_ch));
        let p = plan_batch(
            options.tile,
            halo,
            in_ch,
            out_ch,
            m.feature_width(),
            options.max_batch,
            options.memory_budget,
        );
        tile = Some(tile.map_or(p.tile, |t| t.min(p.tile)));
    }
    let tile = tile.unwrap_or(options.tile);
    let widest = halos.iter().map(|&(halo, ..)| halo).max().unwrap_or(0);
    let models = models
        .iter()
        .zip(halos)
        .map(|(m, (halo, in_ch, out_ch))| {
            let p = plan_batch(
                tile,
                halo,
                in_ch,
                out_ch,
                m.feature_width(),
                options.max_batch,
                options.memory_budget,
            );
            (halo, in_ch, out_ch, p)
        })
        .collect();
    Ok(Plans {
        cores: Cores::capped(tile, widest, 6),
        models,
    })
}

/// The panels that [`superres_strips`] runs the models of `plans` over on a
/// `width`×`height` granule: [`PANEL_TILES`] tile columns each, left to right. Every
/// model's tiles of a panel read only its `input` columns.
pub fn panels(plans: &Plans, width: usize, height: usize) -> Vec<Panel> {
    let mut out: Vec<Panel> = Vec::new();
    let Some(first) = plans.models.first() else {
        return out;
    };
    let first_row: Vec<Tile> = plan(width, height, plans.cores, first.0, 6)
        .into_iter()
        .take_while(|t| t.core.row == 0)
        .collect();
    for group in first_row.chunks(PANEL_TILES) {
        let (Some(a), Some(b)) = (group.first(), group.last()) else {
            continue;
        };
        let cores = a.core.col..b.core.col + b.core.width;
        // The widest halo of any model decides what the panel reads.
        let mut lo = cores.start;
        let mut hi = cores.end;
        for &(halo, ..) in &plans.models {
            for t in plan(width, height, plans.cores, halo, 6)
                .iter()
                .take_while(|t| t.core.row == 0)
                .filter(|t| cores.contains(&t.core.col))
            {
                lo = lo.min(t.padded.col);
                hi = hi.max(t.padded.col + t.padded.width);
            }
        }
        out.push(Panel {
            input: lo.saturating_sub(MARGIN)..(hi + MARGIN).min(width),
            cores,
        });
    }
    out
}

/// Runs `models` (in the order of `plans`) over `panel` of the granule of `window` strip by strip and
/// calls `on_strip` with each finished strip (the panel's core columns) and the rows
/// held, top to bottom; `on_strip` returns the first 10 m row that the caller still
/// needs from the window (the strip loop drops rows above it and above its own next
/// strip). `progress(n)` counts tiles of all models as they finish. The window must
/// hold the panel's `input` columns.
///
/// # Errors
/// A missing band, a model without `[superres]`, a read or inference failure, an output
/// of the wrong shape, or `on_strip`'s own error.
pub fn superres_strips(
    window: &mut Window,
    models: &mut [&mut dyn Infer],
    id: &str,
    plans: &Plans,
    panel: &Panel,
    progress: &mut dyn FnMut(usize),
    on_strip: &mut dyn FnMut(Strip, &Scene) -> Result<usize, PipelineError>,
) -> Result<Vec<ModelStats>, PipelineError> {
    let grid10 = window.scene().grid10;
    let (w, h) = (grid10.width, grid10.height);
    let held = window.columns();
    if panel.input.start < held.start || panel.input.end > held.end {
        return Err(PipelineError::Options(format!(
            "internal: panel {:?} reads columns {:?} but the window holds {held:?}",
            panel.cores, panel.input
        )));
    }
    if plans.models.len() != models.len() {
        return Err(PipelineError::Options(format!(
            "internal: {} models run on plans made for {}",
            models.len(),
            plans.models.len()
        )));
    }
    let cores = plans.cores;
    let mut runs = Vec::with_capacity(models.len());
    for (m, &(halo, _, _, plan_m)) in models.iter_mut().zip(&plans.models) {
        let name = m.spec().name.clone();
        let layouts = input_layouts(m.spec());
        let (out_name, out_bands) = output_bands(&**m)?;
        let scene = window.scene();
        for layout in &layouts {
            for ch in &layout.channels {
                scene.band(ch.band, &name, id)?;
            }
        }
        for ob in &out_bands {
            scene.band(ob.band, &name, id)?;
        }
        let guides: Vec<Band> = layouts
            .iter()
            .flat_map(|l| l.channels.iter())
            .filter(|c| c.band.resolution().factor() == 1)
            .map(|c| c.band)
            .collect();
        let tiles = plan(w, h, cores, halo, 6)
            .into_iter()
            .filter(|t| panel.cores.contains(&t.core.col));
        let mut strips: Vec<Vec<Tile>> = Vec::new();
        for t in tiles {
            match strips.last_mut() {
                Some(s) if s[0].core.row == t.core.row => s.push(t),
                _ => strips.push(vec![t]),
            }
        }
        let label = format!("{}@{}", name, m.spec().version);
        tracing::debug!(model = %label, tile = plan_m.tile, batch = plan_m.batch,
            batch_mib = plan_m.batch_bytes() >> 20, panel = ?panel.cores,
            "super-resolution batches sized from the memory budget");
        runs.push(ModelRun {
            model: &mut **m,
            name,
            layouts,
            out_name,
            out_bands,
            guides,
            strips,
            stats: ModelStats {
                model: label,
                plan: plan_m,
                tiles: 0,
                padded_pixels: 0,
                skipped: 0,
                busy: Duration::ZERO,
            },
        });
    }
    let nstrips = runs.first().map_or(0, |r| r.strips.len());
    let mut others_need = 0;
    for k in 0..nstrips {
        let (row, height) = {
            let c = runs[0].strips[k][0].core;
            (c.row, c.height)
        };
        // The rows every model's tiles of this strip read, with the resampling margin.
        let tiles = runs.iter().flat_map(|r| r.strips[k].iter());
        let lo = tiles.clone().map(|t| t.padded.row).min().unwrap_or(row);
        let hi = tiles
            .map(|t| t.padded.bottom())
            .max()
            .unwrap_or(row + height);
        let scene = window.advance(
            lo.saturating_sub(MARGIN).min(others_need),
            (hi + MARGIN).min(h),
        )?;
        let mut bands = Vec::new();
        for run in runs.iter_mut() {
            let outs = run_strip(scene, run, k, row, height, &panel.cores, id, progress)?;
            bands.extend(run.out_bands.iter().map(|b| b.band).zip(outs));
        }
        others_need = on_strip(
            Strip {
                row,
                height,
                col: panel.cores.start,
                width: panel.cores.len(),
                bands,
            },
            scene,
        )?;
    }
    Ok(runs.into_iter().map(|r| r.stats).collect())
}

/// The rows held for one strip of one model: its 10 m guide bands and the bands its
/// outputs replace (their own grids), resolved once per strip.
struct Held<'s> {
    /// The first 10 m row held ([`Scene::row0`]).
    row0: usize,
    /// The first 10 m column held ([`Scene::col0`]).
    col0: usize,
    guides: Vec<&'s Raster<u16>>,
    lowres: Vec<&'s Raster<u16>>,
}

impl Held<'_> {
    /// Sets `nodata[i]` for the columns `col..col + width` of 10 m row `row`: whether some
    /// guide band is nodata there (which makes every output band nodata).
    fn guide_nodata(&self, row: usize, col: usize, width: usize, nodata: &mut Vec<bool>) {
        nodata.clear();
        nodata.resize(width, false);
        for g in &self.guides {
            let c = col - self.col0;
            let src = &g.row(row - self.row0)[c..c + width];
            for (m, v) in nodata.iter_mut().zip(src) {
                *m |= *v == NODATA_DN;
            }
        }
    }

    /// Whether some pixel of the tile's core has every guide band valid (so that the
    /// model's output there is kept); true for a model without guide bands.
    fn any_output(&self, tile: &Tile, nodata: &mut Vec<bool>) -> bool {
        let core = tile.core;
        (core.row..core.bottom()).any(|r| {
            self.guide_nodata(r, core.col, core.width, nodata);
            nodata.contains(&false)
        })
    }
}

/// One model over strip `k`: its output bands as `u16` rasters of the strip.
#[allow(clippy::too_many_arguments)]
fn run_strip(
    scene: &Scene,
    run: &mut ModelRun<'_>,
    k: usize,
    row: usize,
    height: usize,
    cols: &Range<usize>,
    id: &str,
    tiles_done: &mut dyn FnMut(usize),
) -> Result<Vec<Raster<u16>>, PipelineError> {
    let mut outs: Vec<Raster<u16>> = run
        .out_bands
        .iter()
        .map(|_| Raster::filled(cols.len(), height, NODATA_DN))
        .collect();
    let lookup = |b: Band| scene.band(b, &run.name, id);
    let held = Held {
        row0: scene.row0,
        col0: scene.col0,
        guides: run
            .guides
            .iter()
            .map(|b| lookup(*b))
            .collect::<Result<_, _>>()?,
        lowres: run
            .out_bands
            .iter()
            .map(|ob| lookup(ob.band))
            .collect::<Result<_, _>>()?,
    };
    let mut nodata = Vec::new();
    let mut groups: BTreeMap<(usize, usize), Vec<Tile>> = BTreeMap::new();
    for t in &run.strips[k] {
        if !held.any_output(t, &mut nodata) {
            run.stats.skipped += 1;
            tiles_done(1);
            continue;
        }
        groups
            .entry((t.padded.width, t.padded.height))
            .or_default()
            .push(*t);
    }
    let depth = run.model.depth();
    let batch = run.stats.plan.batch.max(1);
    let started = Instant::now();
    let mut inflight: VecDeque<(Pending, Vec<Tile>, usize, usize)> = VecDeque::new();
    for ((pw, ph), group) in groups {
        for chunk in group.chunks(batch) {
            let inputs = build_batch(scene, &run.layouts, chunk, pw, ph, &run.name, id)?;
            inflight.push_back((run.model.submit(inputs), chunk.to_vec(), pw, ph));
            while inflight.len() > depth {
                if let Some((p, c, pw, ph)) = inflight.pop_front() {
                    drain(&held, run, p, &c, (pw, ph), (cols.start, row), &mut outs)?;
                    tiles_done(c.len());
                }
            }
        }
    }
    while let Some((p, c, pw, ph)) = inflight.pop_front() {
        drain(&held, run, p, &c, (pw, ph), (cols.start, row), &mut outs)?;
        tiles_done(c.len());
    }
    run.stats.busy += started.elapsed();
    Ok(outs)
}

/// Waits for one batch and stores its tiles' cores into the strip's output bands.
#[allow(clippy::too_many_arguments)]
fn drain(
    held: &Held<'_>,
    run: &mut ModelRun<'_>,
    pending: Pending,
    tiles: &[Tile],
    (pw, ph): (usize, usize),
    (strip_col, strip_row): (usize, usize),
    outs: &mut [Raster<u16>],
) -> Result<(), PipelineError> {
    let outputs = pending.wait()?;
    let y = pick_output(&outputs, &run.out_name, &run.name)?;
    check_output_shape(
        y,
        tiles.len(),
        run.out_bands.len(),
        ph,
        pw,
        &run.name,
        &run.out_name,
    )?;
    let mut guide_nodata = Vec::new();
    for (i, tile) in tiles.iter().enumerate() {
        let (ox, oy) = tile.core_offset();
        let core = tile.core;
        let item = y.index_axis(Axis(0), i);
        for r in 0..core.height {
            let grow = core.row + r;
            // Whether a 10 m guide band is nodata, once per row for every output band.
            held.guide_nodata(grow, core.col, core.width, &mut guide_nodata);
            for (c, ob) in run.out_bands.iter().enumerate() {
                let values = item.index_axis(Axis(0), c);
                let values = values.index_axis(Axis(0), oy + r);
                let low = held.lowres[c];
                let low_row =
                    low.row((grow / ob.factor - held.row0 / ob.factor).min(low.height - 1));
                let out = &mut outs[c];
                let dst = &mut out.data[(grow - strip_row) * out.width..][..out.width];
                for c0 in 0..core.width {
                    let col = core.col + c0;
                    let lv = low_row[(col / ob.factor - held.col0 / ob.factor).min(low.width - 1)];
                    dst[col - strip_col] =
                        product_dn(lv, guide_nodata[c0], values[ox + c0], &ob.channel);
                }
            }
        }
        run.stats.tiles += 1;
        run.stats.padded_pixels += tile.padded.area() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(tile: usize, halos: &[usize]) -> Plans {
        Plans {
            cores: Cores::capped(tile, halos.iter().copied().max().unwrap_or(0), 6),
            models: halos
                .iter()
                .map(|&h| {
                    let p = BatchPlan {
                        tile,
                        batch: 1,
                        sample_bytes: 1,
                    };
                    (h, 4, 6, p)
                })
                .collect(),
        }
    }

    #[test]
    fn a_full_tile_runs_eleven_columns_of_tiles_none_wider_than_on_a_small_granule() {
        let p = plans(1098, &[42, 102]);
        let widest = |w: usize, halo: usize| {
            plan(w, w, p.cores(), halo, 6)
                .iter()
                .map(|t| t.padded.width.max(t.padded.height))
                .max()
        };
        for halo in [42, 102] {
            assert_eq!(widest(10980, halo), widest(2196, halo), "halo {halo}");
        }
        assert_eq!(p.tiles(10980, 10980), 2 * 11 * 11);
        assert_eq!(p.tiles(2196, 2196), 2 * 2 * 2);
    }

    #[test]
    fn panels_partition_the_width_and_read_every_padded_tile_with_its_margin() {
        for (w, h, tile, halos) in [
            (618, 546, 120, vec![14, 30]),
            (10980, 10980, 1098, vec![39, 99]),
            (100, 50, 120, vec![8]),
            (2196, 700, 1098, vec![39, 99]),
        ] {
            let p = plans(tile, &halos);
            let panels = panels(&p, w, h);
            let grid = plan(w, h, p.cores(), 0, 6);
            let tiles_per_row = grid.iter().filter(|t| t.core.row == 0).count();
            let tiles_per_column = grid.iter().filter(|t| t.core.col == 0).count();
            assert_eq!(panels.len(), tiles_per_row.div_ceil(PANEL_TILES), "{w}");
            let mut next = 0;
            for panel in &panels {
                assert_eq!(panel.cores.start, next, "cores are contiguous");
                assert!(panel.cores.len() <= PANEL_TILES * tile);
                next = panel.cores.end;
                for &halo in &halos {
                    for t in plan(w, h, p.cores(), halo, 6)
                        .iter()
                        .filter(|t| panel.cores.contains(&t.core.col))
                    {
                        // No padded window wider than an edge tile's.
                        assert!(
                            t.padded.width <= tile + halos.iter().max().unwrap().div_ceil(6) * 6
                        );
                        assert!(
                            panel.input.start + MARGIN <= t.padded.col || panel.input.start == 0
                        );
                        assert!(
                            t.padded.col + t.padded.width + MARGIN <= panel.input.end
                                || panel.input.end == w
                        );
                    }
                }
            }
            assert_eq!(next, w, "the cores cover the width");
            assert_eq!(
                p.tiles(w, h),
                halos.len() * tiles_per_row * tiles_per_column
            );
        }
    }
}
