//! One granule in, one published product out: the orchestration behind
//! `s2edge process` and each daemon job.
//!
//! Stages run in order (read → super-resolve → classify → write) and the product
//! directory appears atomically as `<out>/<granule-id>/` (DESIGN.md "Products"):
//! `superres.tif`, `classification.tif`, `labels.geojson`, `item.json`,
//! `quicklook.png`, written into a staging directory and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::config::{ClassifyInput, EdgePatches, Settings};
use crate::granule::{Band, GranuleSource, ProductLevel, Resolution};
use crate::model::manifest::{ProductLevel as ModelLevel, TrainingStatus};
use crate::product::classmap;
use crate::product::cog::{write_cog, CogBand};
use crate::product::geojson::{map_polygon_with, write_feature_collection, UtmToLonLat};
use crate::product::publish::Staging;
use crate::product::quicklook::Quicklook;
use crate::product::stac::{self, Asset, EoBand, Item, ItemSpec, RasterBand};
use crate::raster::Raster;

use super::classify::{Classification, Classifier, ClassifyOptions, PatchStatus};
use super::scene::Scene;
use super::stream::{panels, plan_models, Panel, Plans, StripOptions};
use super::superres_tif::superres_streamed;
use super::window::{Bands, Window, WindowRead, BLOCK_ROWS};
use super::{Infer, PipelineError};

/// What to run and how, taken from `[pipeline]` and `[runtime]`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessOptions {
    /// Run the classifier.
    pub classify: bool,
    /// Run super-resolution.
    pub superres: bool,
    /// The classifier's 20 m / 60 m input.
    pub classify_input: ClassifyInput,
    /// Partial edge patches.
    pub edge_patches: EdgePatches,
    /// Cloud fraction above which a patch is `cloudy`.
    pub max_cloud_fraction: f64,
    /// Super-resolution tile size (10 m grid).
    pub sr_tile: usize,
    /// Inference batch size (classification; the upper bound for super-resolution).
    pub batch: usize,
    /// `[runtime] memory_budget`: bytes one super-resolution batch may take.
    pub memory_budget: u64,
    /// `[runtime] inference_workers`: threads (each with its own session) per model.
    pub inference_workers: usize,
    /// Longest side of the quicklook.
    pub quicklook_size: usize,
}

impl ProcessOptions {
    /// How the super-resolution strips are tiled and batched.
    pub fn strip_options(&self) -> StripOptions {
        StripOptions {
            tile: self.sr_tile,
            max_batch: self.batch,
            memory_budget: self.memory_budget,
        }
    }

    /// The options configured in `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        ProcessOptions {
            classify: settings.pipeline.classify,
            superres: settings.pipeline.superres,
            classify_input: settings.pipeline.classify_input,
            edge_patches: settings.pipeline.edge_patches,
            max_cloud_fraction: settings.pipeline.max_cloud_fraction,
            sr_tile: settings.pipeline.sr_tile,
            batch: settings.runtime.batch_size,
            memory_budget: settings.runtime.memory_budget.0,
            inference_workers: settings.runtime.inference_workers,
            quicklook_size: settings.pipeline.quicklook_size,
        }
    }
}

/// The models a run uses; `None` for a stage that is off.
#[derive(Default)]
pub struct Models<'a> {
    /// The classifier.
    pub classifier: Option<&'a mut dyn Infer>,
    /// 20 m → 10 m.
    pub superres_2x: Option<&'a mut dyn Infer>,
    /// 60 m → 10 m.
    pub superres_6x: Option<&'a mut dyn Infer>,
}

/// Progress callbacks of a run, e.g. a progress bar per stage.
pub trait Progress {
    /// A stage starts with `total` units of work.
    fn start(&mut self, stage: &str, total: usize);
    /// `done` of the stage's units are finished.
    fn update(&mut self, done: usize);
    /// The stage ended.
    fn finish(&mut self);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: usize) {}
    fn update(&mut self, _: usize) {}
    fn finish(&mut self) {}
}

/// The summary of one run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Granule id.
    pub id: String,
    /// The published product directory.
    pub product: PathBuf,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
    /// Patches by status.
    pub patches: BTreeMap<String, usize>,
    /// Output pixels super-resolved (10 m grid, per band group).
    pub superres_pixels: u64,
    /// Execution provider per model.
    pub providers: BTreeMap<String, String>,
    /// Model versions used, `name@version`.
    pub models: Vec<String>,
    /// Warnings recorded in the provenance.
    pub warnings: Vec<String>,
    /// The most rows of the 10 m grid that the streaming window held at once (a few
    /// strips, whatever the granule's height).
    pub window_rows: usize,
    /// Super-resolution tiles not inferred because no pixel of their core had all 10 m
    /// guide bands valid (their output is nodata either way).
    pub tiles_skipped: usize,
}

/// Processes `source` with `models` and publishes the product under `out_dir`.
///
/// # Errors
/// [`PipelineError`]: the input, a model, or a product write failed. Nothing is
/// published on error.
pub fn process_granule(
    source: &GranuleSource,
    models: &mut Models<'_>,
    options: &ProcessOptions,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<ProcessReport, PipelineError> {
    process_opened(source, None, models, options, out_dir, progress)
}

/// What a run reads, decided once from the models and options ([`plan_reads`]): the
/// bands of the super-resolution panels, the bands of the full-width pass (the
/// quicklook's and the classifier's), and the super-resolution tile plans that cut a
/// granule into panels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    /// Read panel by panel; empty without super-resolution.
    superres_bands: Vec<Band>,
    /// Read in one full-width pass of patch rows.
    row_bands: Vec<Band>,
    /// `None` without super-resolution.
    plans: Option<Plans>,
}

/// A granule opened for processing: its bands' headers read and checked against each
/// other, and the reader thread of its first window (the first super-resolution panel,
/// or the full-width pass) already decoding a strip ahead. Opened ahead of its
/// turn (the daemon's next job), its first decoding overlaps the current granule's
/// inference.
pub struct Input {
    first: Window,
    reads: Reads,
    /// The super-resolution panels, left to right (the first is `first`'s).
    panels: Vec<Panel>,
    cloud: Option<crate::granule::CloudMask>,
}

/// Opens what `models` and `options` read from `source` and starts reading.
///
/// # Errors
/// A band's open error, a grid mismatch, an unreadable cloud mask, or a
/// super-resolution model without `[superres]`.
pub fn open_input(
    source: &GranuleSource,
    models: &Models<'_>,
    options: &ProcessOptions,
) -> Result<Input, PipelineError> {
    open_reads(source, &plan_reads(models, options)?, options)
}

/// [`open_input`] for the reads of [`plan_reads`].
///
/// # Errors
/// As [`open_input`].
pub fn open_reads(
    source: &GranuleSource,
    reads: &Reads,
    options: &ProcessOptions,
) -> Result<Input, PipelineError> {
    let cloud = source.read_cloud_mask()?;
    let (first, panels) = match &reads.plans {
        Some(plans) => {
            let bands = Bands::open(source, &reads.superres_bands)?;
            let grid = bands.grid10();
            let panels = panels(plans, grid.width, grid.height);
            let Some(p) = panels.first() else {
                return Err(PipelineError::Options(format!(
                    "internal: no super-resolution panel on a {}x{} granule",
                    grid.width, grid.height
                )));
            };
            let bands = bands.panel(p.input.start, p.input.end)?;
            (Window::start(bands, None, options.sr_tile)?, panels)
        }
        None => (row_window(source, reads, cloud.clone())?, Vec::new()),
    };
    Ok(Input {
        first,
        reads: reads.clone(),
        panels,
        cloud,
    })
}

/// Rows the full-width pass's reader decodes ahead: four patch rows.
const ROW_PASS_AHEAD: usize = 4 * BLOCK_ROWS;

/// The window of the full-width pass.
fn row_window(
    source: &GranuleSource,
    reads: &Reads,
    cloud: Option<crate::granule::CloudMask>,
) -> Result<Window, PipelineError> {
    Window::start(
        Bands::open(source, &reads.row_bands)?,
        cloud,
        ROW_PASS_AHEAD,
    )
}

/// What a run reads: the super-resolution panels read the 10 m bands and the models'
/// inputs; the full-width pass reads the visible bands for the quicklook and the
/// classifier's inputs.
///
/// # Errors
/// A super-resolution model without `[superres]`.
pub fn plan_reads(models: &Models<'_>, options: &ProcessOptions) -> Result<Reads, PipelineError> {
    let inputs = |m: &dyn Infer| -> Vec<Band> {
        m.spec()
            .inputs
            .iter()
            .flat_map(|(_, i)| i.bands.iter().copied())
            .collect()
    };
    let sorted = |mut b: Vec<Band>| {
        b.sort();
        b.dedup();
        b
    };
    let mut row_bands: Vec<Band> = vec![Band::B02, Band::B03, Band::B04];
    if let (true, Some(c)) = (options.classify, models.classifier.as_deref()) {
        row_bands.extend(inputs(c));
    }
    let sr: Vec<&dyn Infer> = [models.superres_2x.as_deref(), models.superres_6x.as_deref()]
        .into_iter()
        .flatten()
        .filter(|_| options.superres)
        .map(|m| m as &dyn Infer)
        .collect();
    let (superres_bands, plans) = if sr.is_empty() {
        (Vec::new(), None)
    } else {
        let mut bands: Vec<Band> = Band::PRODUCT
            .iter()
            .copied()
            .filter(|b| b.resolution() == Resolution::R10)
            .collect();
        for m in &sr {
            bands.extend(inputs(*m));
        }
        (bands, Some(plan_models(&sr, options.strip_options())?))
    };
    Ok(Reads {
        superres_bands: sorted(superres_bands),
        row_bands: sorted(row_bands),
        plans,
    })
}

/// [`process_granule`] on an input opened by [`open_input`] (`None`: open it now).
///
/// # Errors
/// As [`process_granule`].
pub fn process_opened(
    source: &GranuleSource,
    input: Option<Input>,
    models: &mut Models<'_>,
    options: &ProcessOptions,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<ProcessReport, PipelineError> {
    let id = source.id.to_string();
    let started = chrono::Utc::now();
    let mut timings = BTreeMap::new();
    let mut warnings = source.warnings.clone();

    if options.classify && models.classifier.is_none() {
        return Err(PipelineError::Options(
            "classification is on but no classifier is loaded".into(),
        ));
    }
    if options.superres && models.superres_2x.is_none() && models.superres_6x.is_none() {
        return Err(PipelineError::Options(
            "super-resolution is on but neither the 2x nor the 6x model is loaded".into(),
        ));
    }
    if options.classify
        && options.classify_input == ClassifyInput::Superres
        && options.superres
        && (models.superres_2x.is_none() || models.superres_6x.is_none())
    {
        return Err(PipelineError::Options(
            "classify_input = \"superres\" needs both the 2x and the 6x model \
             ([pipeline] superres_scales = [2, 6])"
                .into(),
        ));
    }
    if options.classify && options.classify_input == ClassifyInput::Superres && !options.superres {
        return Err(PipelineError::Options(
            "classify_input = \"superres\" needs [pipeline] superres = true".into(),
        ));
    }

    let mut model_entries = Vec::new();
    for m in [&models.superres_2x, &models.superres_6x, &models.classifier]
        .into_iter()
        .flatten()
    {
        let info = m.info();
        if let Some(note) = &info.precision_note {
            warnings.push(note.clone());
        }
        if info.status == TrainingStatus::Untrained {
            let w = format!(
                "model {}@{} is UNTRAINED: its outputs carry no learned information",
                info.name, info.version
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let level = m.spec().product_level;
        let agrees = matches!(
            (level, source.metadata.level),
            (ModelLevel::Any, _)
                | (_, ProductLevel::Unknown)
                | (ModelLevel::L1C, ProductLevel::L1C)
                | (ModelLevel::L2A, ProductLevel::L2A)
        );
        if !agrees {
            warnings.push(format!(
                "model {} was trained on {:?} products but the input is {:?}",
                info.name, level, source.metadata.level
            ));
        }
        model_entries.push(info);
    }

    let t = Instant::now();
    let input = match input {
        Some(i) => i,
        None => open_input(source, models, options)?,
    };
    timings.insert("open".to_string(), t.elapsed().as_secs_f64());
    let grid10 = input.first.scene().grid10;
    let offsets: BTreeMap<Band, f64> = input
        .reads
        .superres_bands
        .iter()
        .chain(&input.reads.row_bands)
        .map(|b| (*b, source.metadata.offset(*b)))
        .collect();

    let staging = Staging::new(out_dir, &source.id)?;
    let streamed = run_stages(
        input,
        source,
        models,
        options,
        staging.path(),
        progress,
        &mut timings,
    )?;

    let report_models: Vec<String> = model_entries
        .iter()
        .map(|m| format!("{}@{}", m.name, m.version))
        .collect();
    let providers: BTreeMap<String, String> = model_entries
        .iter()
        .map(|m| (m.name.clone(), m.provider.clone()))
        .collect();
    let provenance = json!({
        "s2edge:version": env!("CARGO_PKG_VERSION"),
        "s2edge:input": {
            "id": id,
            "kind": source.kind,
            "level": source.metadata.level,
            "processing_baseline": source.metadata.baseline,
            "tile_id": source.metadata.tile_id,
        },
        "s2edge:models": model_entries,
        "s2edge:execution_providers": providers,
        "s2edge:timings_s": timings,
        "s2edge:offsets_applied": offsets.iter().map(|(b, o)| (b.name().to_string(), *o)).collect::<BTreeMap<_, _>>(),
        "s2edge:offsets_known": source.metadata.offsets_known,
        "s2edge:patches": streamed.patch_counts,
        "s2edge:warnings": warnings,
        "s2edge:processed": started.to_rfc3339(),
    });
    let mut item = product_item(
        source,
        &grid10,
        &streamed.product_bands,
        streamed.classification.as_ref().map(|c| &c.grid),
        staging.path(),
        provenance,
    )?;
    // The map and the model Items (written beside the products by the caller).
    if let Some(c) = &streamed.classification {
        item.insert_asset(classmap::ASSET_KEY, classmap::asset(&c.classes));
    }
    for m in &model_entries {
        item.links
            .push(crate::model::stac::product_link(&m.name, m.version));
    }
    stac::write_item(&staging.path().join("item.json"), &item)?;
    let product = staging.publish()?;

    Ok(ProcessReport {
        id,
        product,
        timings,
        patches: streamed.patch_counts,
        superres_pixels: streamed.superres_pixels,
        window_rows: streamed.window_rows,
        tiles_skipped: streamed.tiles_skipped,
        providers,
        models: report_models,
        warnings,
    })
}

/// What the stages produced, for the Item and the report.
struct Streamed {
    /// The bands of `superres.tif`, in file order (empty without super-resolution).
    product_bands: Vec<Band>,
    /// Output pixels super-resolved (10 m grid × bands).
    superres_pixels: u64,
    /// Patches by status.
    patch_counts: BTreeMap<String, usize>,
    classification: Option<Classification>,
    /// See [`ProcessReport::window_rows`].
    window_rows: usize,
    /// See [`ProcessReport::tiles_skipped`].
    tiles_skipped: usize,
}

/// Runs every stage: the super-resolution panels (streamed into `superres.tif`), then
/// one full-width pass of patch rows for the classifier and the quicklook, then the
/// classification products. Each pass holds a few strips of its own width, never the
/// granule; a band that held no valid pixel anywhere is refused at the end.
#[allow(clippy::too_many_arguments)]
fn run_stages(
    input: Input,
    source: &GranuleSource,
    models: &mut Models<'_>,
    options: &ProcessOptions,
    dir: &Path,
    progress: &mut dyn Progress,
    timings: &mut BTreeMap<String, f64>,
) -> Result<Streamed, PipelineError> {
    let id = source.id.to_string();
    let id = id.as_str();
    let Input {
        first,
        reads,
        panels,
        cloud,
    } = input;
    let grid = first.scene().grid10;
    let (w, h) = (grid.width, grid.height);
    let Models {
        classifier,
        superres_2x,
        superres_6x,
    } = models;
    let by_superres = options.classify_input == ClassifyInput::Superres;
    let want_classifier = options.classify && classifier.is_some();
    let keep_superres = want_classifier && by_superres;

    let mut read = WindowRead::default();
    let mut superres_pixels = 0u64;
    let mut tiles_skipped = 0;
    let mut product_bands: Vec<Band> = Vec::new();
    let mut kept: BTreeMap<Band, Raster<u16>> = BTreeMap::new();
    let mut first = Some(first);
    if let Some(plans) = &reads.plans {
        let t = Instant::now();
        let mut runs: Vec<&mut dyn Infer> = Vec::new();
        let mut scales = Vec::new();
        for m in [superres_2x.as_deref_mut(), superres_6x.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            scales.push(m.spec().superres.as_ref().map_or(0, |s| s.scale));
            runs.push(m);
        }
        let out = superres_streamed(
            &mut || first.take(),
            source,
            &reads.superres_bands,
            plans,
            &panels,
            &mut runs,
            &dir.join("superres.tif"),
            keep_superres,
            progress,
        )?;
        superres_pixels = out.pixels;
        product_bands = out.bands;
        kept = out.kept;
        read.merge(out.read);
        tiles_skipped = out.stats.iter().map(|s| s.skipped).sum();
        for (scale, st) in scales.iter().zip(&out.stats) {
            timings.insert(format!("superres {scale}x"), st.busy.as_secs_f64());
        }
        timings.insert("superres + write".to_string(), t.elapsed().as_secs_f64());
    }

    // The full-width pass: the quicklook's and the classifier's rows.
    let mut window = match first.take() {
        Some(w) => w,
        None => row_window(source, &reads, cloud)?,
    };
    let mut classifier = match (want_classifier, classifier.as_deref_mut()) {
        (true, Some(model)) => Some(Classifier::new(
            model,
            window.scene(),
            id,
            ClassifyOptions {
                edge_patches: options.edge_patches,
                max_cloud_fraction: options.max_cloud_fraction,
                input: options.classify_input,
                batch: options.batch,
            },
            options.superres,
        )?),
        _ => None,
    };
    let has_rgb = [Band::B02, Band::B03, Band::B04]
        .iter()
        .all(|b| window.scene().bands.contains_key(b));
    let mut quicklook = if has_rgb {
        Some(Quicklook::new(w, h, options.quicklook_size)?)
    } else {
        None
    };
    let kept_ref = keep_superres.then_some(&kept);
    let mut classify_time = Duration::ZERO;
    // What the classifier and the quicklook take from the rows held now; returns the
    // first row they still need.
    let mut consume = |scene: &Scene| -> Result<usize, PipelineError> {
        let held_to = scene.row0 + scene.bands.get(&Band::B02).map_or(0, |r| r.height);
        let mut need = h;
        if let Some(q) = quicklook.as_mut() {
            let (from, to) = (q.rows(), held_to.max(q.rows()));
            let rows = |b: Band| {
                scene.bands.get(&b).map_or(&[][..], |r| {
                    &r.data[(from - scene.row0) * w..(to - scene.row0) * w]
                })
            };
            q.push_rows(rows(Band::B04), rows(Band::B03), rows(Band::B02))?;
            need = need.min(q.rows());
        }
        if let Some(c) = classifier.as_mut() {
            let t = Instant::now();
            c.feed(scene, kept_ref, h, &mut |_, _| {})?;
            classify_time += t.elapsed();
            need = need.min(c.needs_from());
        }
        Ok(need)
    };
    while window.end() < h {
        let lo = consume(window.scene())?;
        let hi = window.end() + BLOCK_ROWS;
        window.advance(lo, hi)?;
    }
    consume(window.scene())?;
    read.merge(window.read_to_bottom()?);
    drop(window);
    read.check(id)?;
    timings.insert("read".to_string(), read.decode.as_secs_f64());
    tracing::debug!(peak_rows = read.peak_rows, "streaming windows");

    let t = Instant::now();
    if let Some(q) = quicklook {
        q.write(&dir.join("quicklook.png"))?;
    }
    timings.insert("write quicklook".to_string(), t.elapsed().as_secs_f64());

    let mut patch_counts = BTreeMap::new();
    let mut classification = None;
    if let Some(c) = classifier {
        let t = Instant::now();
        let result = c.finish(&mut |_, _| {})?;
        classify_time += t.elapsed();
        timings.insert("classify".to_string(), classify_time.as_secs_f64());
        for s in [
            PatchStatus::Ok,
            PatchStatus::Nodata,
            PatchStatus::Saturated,
            PatchStatus::Cloudy,
            PatchStatus::Edge,
        ] {
            patch_counts.insert(format!("{s:?}").to_lowercase(), result.count(s));
        }
        let t = Instant::now();
        write_classification(dir, &result)?;
        classmap::write_classmap(
            &dir.join(classmap::FILE),
            &classmap::from_classification(&result),
        )?;
        timings.insert(
            "write classification".to_string(),
            t.elapsed().as_secs_f64(),
        );
        classification = Some(result);
    }
    Ok(Streamed {
        product_bands,
        superres_pixels,
        patch_counts,
        classification,
        window_rows: read.peak_rows,
        tiles_skipped,
    })
}

/// `classification.tif` (19 float32 bands, −1 = not classified) and `labels.geojson`.
fn write_classification(dir: &Path, c: &Classification) -> Result<(), PipelineError> {
    let rasters = c.score_rasters();
    let bands: Vec<CogBand<'_, f32>> = c
        .classes
        .iter()
        .zip(rasters.iter())
        .map(|(name, data)| CogBand {
            description: name.as_str(),
            data,
        })
        .collect();
    write_cog(&dir.join("classification.tif"), &c.grid, &bands, Some(-1.0))?;

    let t = c.grid.transform;
    // Patch edges are 1.2 km: straight enough in lon/lat that no densification is needed.
    let to_lonlat = UtmToLonLat::new(c.grid.epsg)?;
    let mut features = Vec::with_capacity(c.patches.len());
    for p in &c.patches {
        // The patch footprint on the 10 m grid (partial patches clipped to the image).
        let fine = t.refined(c.patch);
        let (x0, y0) = fine.apply(p.rect.col as f64, p.rect.row as f64);
        let (x1, y1) = fine.apply(
            (p.rect.col + p.rect.width) as f64,
            (p.rect.row + p.rect.height) as f64,
        );
        let geometry = map_polygon_with(
            &to_lonlat,
            &[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
            1,
        )?;
        let scores = p.scores.as_ref().map(|s| {
            c.classes
                .iter()
                .zip(s.iter())
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        });
        features.push(json!({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "row": p.row,
                "col": p.col,
                "status": p.status,
                "labels": p.labels,
                "scores": scores,
                "cloud_fraction": p.cloud_fraction,
            }
        }));
    }
    write_feature_collection(&dir.join("labels.geojson"), features)?;
    Ok(())
}

/// The STAC Item of the product in `dir`: one asset per file present.
fn product_item(
    source: &GranuleSource,
    grid10: &crate::granule::GeoRef,
    superres_bands: &[Band],
    classification_grid: Option<&crate::granule::GeoRef>,
    dir: &Path,
    provenance: serde_json::Value,
) -> Result<Item, PipelineError> {
    let mut assets = BTreeMap::new();
    if dir.join("superres.tif").is_file() {
        let mut a = Asset::new(
            "./superres.tif",
            stac::MEDIA_COG,
            "Super-resolved bands at 10 m (harmonised DN)",
            &["data"],
        );
        a.raster_bands = Some(
            superres_bands
                .iter()
                .map(|b| RasterBand {
                    name: Some(b.name().to_string()),
                    data_type: "uint16".into(),
                    nodata: Some(0.0),
                    scale: Some(0.0001),
                    offset: Some(0.0),
                    unit: None,
                })
                .collect(),
        );
        a.eo_bands = Some(
            superres_bands
                .iter()
                .map(|b| EoBand {
                    name: b.name().to_string(),
                    common_name: None,
                    center_wavelength: Some(f64::from(b.centre_wavelength_nm()) / 1000.0),
                })
                .collect(),
        );
        assets.insert("superres".to_string(), a);
    }
    if let Some(grid) = classification_grid {
        let mut a = Asset::new(
            "./classification.tif",
            stac::MEDIA_COG,
            "Land-cover class probabilities per 120x120 patch",
            &["data"],
        )
        .with_grid(grid);
        a.raster_bands = Some(vec![
            RasterBand {
                name: None,
                data_type: "float32".into(),
                nodata: Some(-1.0),
                scale: None,
                offset: None,
                unit: None,
            };
            19
        ]);
        assets.insert("classification".to_string(), a);
        assets.insert(
            "labels".to_string(),
            Asset::new(
                "./labels.geojson",
                stac::MEDIA_GEOJSON,
                "Patch labels",
                &["data"],
            ),
        );
    }
    if dir.join("quicklook.png").is_file() {
        assets.insert("quicklook".to_string(), Asset::quicklook("./quicklook.png"));
    }
    let properties = match provenance {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    Ok(Item::build(ItemSpec {
        id: source.id.to_string(),
        sensing_time: source.metadata.sensing_time,
        processed: chrono::Utc::now(),
        georef: *grid10,
        assets,
        properties,
        self_href: None,
    })?)
}
