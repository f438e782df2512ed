//! The super-resolution half of a run: the loaded models run panel by panel
//! ([`super::stream`]) and every finished strip is streamed into `superres.tif` as
//! blocks ([`CogBlockWriter`]) by an encoder thread, so the file is never held whole.
//! Called by [`super::process`], which does the rest of the product.

use std::collections::BTreeMap;
use std::path::Path;

use crate::granule::{Band, GranuleSource, Resolution, NODATA_DN};
use crate::product::cog::{CogBlockWriter, CogOptions};
use crate::raster::tiling::Rect;
use crate::raster::Raster;

use super::process::Progress;
use super::stream::{superres_strips, ModelStats, Panel, Plans, Strip};
use super::window::{Bands, Window, WindowRead, BLOCK_ROWS};
use super::{Infer, PipelineError};

/// What the streamed super-resolution produced.
pub(crate) struct SuperresOut {
    /// The bands of `superres.tif`, in file order.
    pub(crate) bands: Vec<Band>,
    /// Output pixels super-resolved (10 m grid × bands).
    pub(crate) pixels: u64,
    /// Per model run, in order, over all panels.
    pub(crate) stats: Vec<ModelStats>,
    /// The super-resolved bands whole (only for `classify_input = "superres"`).
    pub(crate) kept: BTreeMap<Band, Raster<u16>>,
    /// What the panels' windows read.
    pub(crate) read: WindowRead,
}

/// A finished block of `superres.tif`: band index, column, row, pixels.
type Block = (usize, usize, usize, Raster<u16>);

/// Runs the loaded super-resolution models panel by panel, strip by strip, and streams
/// `superres.tif`: the bands of [`Band::PRODUCT`] that exist (the 10 m bands, passed
/// through, and each model's outputs), in that order, harmonised DN. Each panel reads
/// its own columns through its own window (`first()` is the first panel's, opened
/// ahead; each later one is opened when the panel before it starts, with its headers
/// read and its first block decoded, and decodes a strip ahead from its first strip on). A writer thread compresses each finished strip's tiles while the next
/// strip is inferred; the channel between them holds one strip.
#[allow(clippy::too_many_arguments)]
pub(crate) fn superres_streamed(
    first: &mut dyn FnMut() -> Option<Window>,
    source: &GranuleSource,
    read_bands: &[Band],
    plans: &Plans,
    panels: &[Panel],
    runs: &mut [&mut dyn Infer],
    path: &Path,
    keep: bool,
    progress: &mut dyn Progress,
) -> Result<SuperresOut, PipelineError> {
    let id = source.id.to_string();
    let id = id.as_str();
    let mut produced: Vec<Band> = Vec::new();
    for m in runs.iter() {
        let (_, out) = super::superres::output_bands(&**m)?;
        produced.extend(out.iter().map(|o| o.band));
    }
    let bands: Vec<Band> = Band::PRODUCT
        .iter()
        .copied()
        .filter(|b| b.resolution() == Resolution::R10 || produced.contains(b))
        .collect();
    let mut window = first().ok_or_else(|| {
        PipelineError::Options("internal: the first super-resolution window is missing".into())
    })?;
    for b in bands.iter().filter(|b| b.resolution() == Resolution::R10) {
        window.scene().band(*b, "superres.tif", id)?;
    }
    let names: Vec<&str> = bands.iter().map(|b| b.name()).collect();
    let grid = window.scene().grid10;
    let (w, h) = (grid.width, grid.height);
    let mut writer = CogBlockWriter::<u16>::new(
        path,
        &grid,
        &names,
        Some(f64::from(NODATA_DN)),
        &CogOptions::default(),
    )?;
    let mut kept: BTreeMap<Band, Raster<u16>> = BTreeMap::new();
    if keep {
        for b in &produced {
            kept.insert(*b, Raster::filled(w, h, NODATA_DN));
        }
    }
    // Tiles of all models over all panels, for the progress bar.
    let total = plans.tiles(w, h);
    progress.start("superres", total);
    let mut done = 0usize;
    let mut read = WindowRead::default();
    let mut stats: Vec<ModelStats> = Vec::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Block>>(1);
    let result = std::thread::scope(|s| {
        let encoder = std::thread::Builder::new()
            .name("s2edge-encode".into())
            .spawn_scoped(s, move || -> Result<CogBlockWriter<u16>, PipelineError> {
                for strip in rx {
                    for (b, col, row, r) in strip {
                        writer.push_block(b, col, row, &r)?;
                    }
                }
                Ok(writer)
            })
            .map_err(|e| PipelineError::Options(format!("cannot start the encoder thread: {e}")))?;
        let open = |panel: &Panel| -> Result<Window, PipelineError> {
            let opened =
                Bands::open(source, read_bands)?.panel(panel.input.start, panel.input.end)?;
            // Opened a whole panel early: one block ahead until its turn.
            Window::start_ahead(opened, None, plans.tile(), BLOCK_ROWS)
        };
        let mut run_panels = || -> Result<(), PipelineError> {
            let mut next: Option<Window> = None;
            for (i, panel) in panels.iter().enumerate() {
                if let Some(n) = next.take() {
                    window = n;
                }
                // The next panel's reader opens its bands while this one runs.
                if let Some(p) = panels.get(i + 1) {
                    next = Some(open(p)?);
                }
                let panel_stats = superres_strips(
                    &mut window,
                    runs,
                    id,
                    plans,
                    panel,
                    &mut |n| {
                        done += n;
                        progress.update(done);
                    },
                    &mut |strip, scene| {
                        let Strip {
                            row,
                            height,
                            col,
                            width,
                            bands: outs,
                        } = strip;
                        // The strip's own bands move on to the encoder; the 10 m bands,
                        // which the window keeps, are copied.
                        let mut outs: BTreeMap<Band, Raster<u16>> = outs.into_iter().collect();
                        let mut blocks = Vec::with_capacity(bands.len());
                        for (i, b) in bands.iter().enumerate() {
                            if b.resolution() == Resolution::R10 {
                                let src = scene.band(*b, "superres.tif", id)?;
                                let at = scene.local(Rect {
                                    col,
                                    row,
                                    width,
                                    height,
                                });
                                blocks.push((
                                    i,
                                    col,
                                    row,
                                    src.window(at.col, at.row, width, height),
                                ));
                            } else if let Some(r) = outs.remove(b) {
                                if let Some(full) = kept.get_mut(b) {
                                    full.paste(&r, col, row);
                                }
                                blocks.push((i, col, row, r));
                            }
                        }
                        // A closed channel means the encoder failed: its error is
                        // reported below.
                        tx.send(blocks).map_err(|_| {
                            PipelineError::Options("the superres.tif encoder stopped".into())
                        })?;
                        Ok(h)
                    },
                )?;
                read.merge(window.read_to_bottom()?);
                merge_stats(&mut stats, panel_stats);
            }
            Ok(())
        };
        let ran = run_panels();
        drop(tx);
        let encoded = encoder
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        progress.finish();
        // An encoder failure is the root cause when the strip loop saw a closed channel;
        // the file is finished only when every strip arrived.
        match (ran, encoded) {
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(writer)) => Ok(writer.finish()?),
        }
    });
    result?;
    let pixels = (w * h * produced.len()) as u64;
    for st in &stats {
        tracing::info!(
            model = %st.model,
            tile = st.plan.tile,
            batch = st.plan.batch,
            tiles = st.tiles,
            skipped = st.skipped,
            padded_mpx = st.padded_pixels as f64 / 1e6,
            busy_s = st.busy.as_secs_f64(),
            panels = panels.len(),
            "super-resolution done"
        );
    }
    Ok(SuperresOut {
        bands,
        pixels,
        stats,
        kept,
        read,
    })
}

/// Adds one panel's per-model figures to the granule's.
fn merge_stats(total: &mut Vec<ModelStats>, panel: Vec<ModelStats>) {
    if total.is_empty() {
        *total = panel;
        return;
    }
    for (t, p) in total.iter_mut().zip(panel) {
        t.tiles += p.tiles;
        t.padded_pixels += p.padded_pixels;
        t.skipped += p.skipped;
        t.busy += p.busy;
    }
}
