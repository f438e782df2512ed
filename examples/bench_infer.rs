//! Bare-inference baseline for issue 3's pipeline-overhead measurement
//! (`scripts/bench_pipeline.sh`, BENCHMARKS.md "Inference throughput").
//!
//! For one stage (`classify` or `superres`) on one granule, with the models and settings
//! of a configuration file exactly as `s2edge process` loads them:
//!
//! 1. runs the pipeline's own stage function (`pipeline::classify::classify`, or
//!    `pipeline::superres::superres` for the 2× then the 6× model) `--reps` times through
//!    a wrapper that times each `LoadedModel::run` call inside the stage and, on the first
//!    repetition, copies every batch the stage hands to the model;
//! 2. then runs a loop of bare `LoadedModel::run` over those recorded batches, `--reps`
//!    times. The batch copy fed to each run is made before its timer starts, so the loop
//!    times inference alone.
//!
//! The batches are therefore the very tensors the pipeline builds (same tiles, same
//! halos, same batch grouping, same normalisation), not reconstructed shapes, and both
//! loops run in one process on one session.
//!
//! Output: one `key=value` line per model on stdout, e.g.
//! `stage=classify model=ben19-tiny@1 units=97 read_s=… batches=13 stage_s=… stage_run_s=…
//! stage_first_s=… bare_s=… bare_first_s=…` where `units` is `ok` patches (classifier) or
//! output pixels of the 10 m grid (super-resolution, per band group); the fields are
//! described at [`time_stage`].
//!
//! Usage: `bench_infer --config FILE --models DIR --stage classify|superres [--reps N] GRANULE`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::{Array4, ArrayD};

use s2edge::config::{ClassifyInput, Settings};
use s2edge::granule::{Band, GranuleSource};
use s2edge::model::registry::Registry;
use s2edge::model::session::LoadedModel;
use s2edge::model::set::ModelSet;
use s2edge::model::{init_runtime, ModelError};
use s2edge::pipeline::classify::{classify, ClassifyOptions, PatchStatus};
use s2edge::pipeline::scene::Scene;
use s2edge::pipeline::superres::{superres, SrTiling};
use s2edge::pipeline::{Infer, ModelInfo};

type Batch = Vec<(String, Array4<f32>)>;

/// Forwards to the real model, recording each batch and timing each run.
struct Recorder<'a> {
    model: &'a mut LoadedModel,
    batches: Vec<Batch>,
    record: bool,
    run_s: f64,
    copy_s: f64,
}

impl Infer for Recorder<'_> {
    fn spec(&self) -> &s2edge::model::manifest::ModelSpec {
        &self.model.spec
    }
    fn info(&self) -> ModelInfo {
        self.model.info()
    }
    fn infer(&mut self, inputs: Batch) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
        let t = Instant::now();
        if self.record {
            self.batches.push(inputs.clone());
        }
        self.copy_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = self.model.run(inputs);
        self.run_s += t.elapsed().as_secs_f64();
        out
    }
}

/// Bare `run` over `batches`, `reps` times: (best, first) seconds.
fn bare_loop(model: &mut LoadedModel, batches: &[Batch], reps: usize) -> Result<(f64, f64)> {
    let mut best = f64::INFINITY;
    let mut first = None;
    for _ in 0..reps.max(1) {
        let mut total = 0.0;
        for b in batches {
            let input = b.clone();
            let t = Instant::now();
            let out = model.run(input).context("bare run")?;
            total += t.elapsed().as_secs_f64();
            drop(out);
        }
        first.get_or_insert(total);
        best = best.min(total);
    }
    Ok((best, first.unwrap_or(best)))
}

/// A stage function run on some [`Infer`].
type StageFn<'s> = dyn FnMut(&mut dyn Infer) -> Result<()> + 's;

/// Runs `stage` `reps` times on `model` (recording the batches on the first run), then
/// the bare loop over the recorded batches; returns the `key=value` timing fields.
///
/// Fields: `batches`; `stage_s` (best stage run, recording copies excluded) and
/// `stage_run_s` (the `run` calls inside that stage run); `stage_first_s` (the first,
/// cold stage run, as in a one-shot `s2edge process`); `bare_s` (best bare loop) and
/// `bare_first_s` (its first repetition).
fn time_stage(model: &mut LoadedModel, reps: usize, stage: &mut StageFn<'_>) -> Result<String> {
    let mut batches = Vec::new();
    let mut best = (f64::INFINITY, 0.0);
    let mut first = None;
    for rep in 0..reps.max(1) {
        let mut rec = Recorder {
            model: &mut *model,
            batches: Vec::new(),
            record: rep == 0,
            run_s: 0.0,
            copy_s: 0.0,
        };
        let t = Instant::now();
        stage(&mut rec)?;
        let stage_s = t.elapsed().as_secs_f64() - rec.copy_s;
        first.get_or_insert(stage_s);
        if stage_s < best.0 {
            best = (stage_s, rec.run_s);
        }
        if rep == 0 {
            batches = std::mem::take(&mut rec.batches);
        }
    }
    let (bare_s, bare_first_s) = bare_loop(model, &batches, reps)?;
    Ok(format!(
        "batches={} stage_s={:.3} stage_run_s={:.3} stage_first_s={:.3} bare_s={bare_s:.3} bare_first_s={bare_first_s:.3}",
        batches.len(),
        best.0,
        best.1,
        first.unwrap_or(best.0),
    ))
}

struct Args {
    config: PathBuf,
    models: PathBuf,
    stage: String,
    reps: usize,
    granule: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut config = None;
    let mut models = None;
    let mut stage = None;
    let mut reps = 3;
    let mut granule = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().map(PathBuf::from),
            "--models" => models = it.next().map(PathBuf::from),
            "--stage" => stage = it.next(),
            "--reps" => reps = it.next().context("--reps N")?.parse().context("--reps N")?,
            _ if !a.starts_with("--") => granule = Some(PathBuf::from(a)),
            _ => bail!("unknown option {a}"),
        }
    }
    Ok(Args {
        config: config.context("--config FILE")?,
        models: models.context("--models DIR")?,
        stage: stage.context("--stage classify|superres")?,
        reps,
        granule: granule.context("GRANULE")?,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut settings = Settings::load(Some(&args.config)).context("loading the configuration")?;
    // The same switches as `s2edge process --only <stage>`.
    match args.stage.as_str() {
        "classify" => {
            settings.pipeline.superres = false;
            if settings.pipeline.classify_input == ClassifyInput::Superres {
                settings.pipeline.classify_input = ClassifyInput::Resampled;
            }
        }
        "superres" => settings.pipeline.classify = false,
        s => bail!("unknown stage {s}"),
    }
    init_runtime(
        settings.runtime.onnxruntime.as_deref(),
        settings.runtime.env_options(),
    )
    .context("loading ONNX Runtime")?;
    let selection = settings.model_selection()?;
    let mut set = ModelSet::load(
        &Registry::new(&args.models),
        &selection,
        &settings.runtime.provider_options(),
    )?;
    let source = GranuleSource::open(&args.granule)?;
    let id = source.id.to_string();
    let batch = settings.runtime.batch_size;

    if args.stage == "classify" {
        let model = set.classifier.as_mut().context("no classifier loaded")?;
        // The bands `process_granule` reads for a classifier-only run.
        let mut bands = vec![Band::B02, Band::B03, Band::B04];
        bands.extend(
            model
                .spec
                .inputs
                .iter()
                .flat_map(|(_, i)| i.bands.iter().copied()),
        );
        bands.sort();
        bands.dedup();
        let t = Instant::now();
        let scene = Scene::load(&source, &bands)?;
        let read_s = t.elapsed().as_secs_f64();
        let label = model.label();
        let options = ClassifyOptions {
            edge_patches: settings.pipeline.edge_patches,
            max_cloud_fraction: settings.pipeline.max_cloud_fraction,
            input: settings.pipeline.classify_input,
            batch,
        };
        let mut ok = 0;
        let timing = time_stage(model, args.reps, &mut |m| {
            let result = classify(&scene, m, &id, options, None, &mut |_, _| {})?;
            ok = result.count(PatchStatus::Ok);
            Ok(())
        })?;
        println!("stage=classify model={label} units={ok} read_s={read_s:.3} {timing}");
    } else {
        let t = Instant::now();
        let scene = Scene::load(&source, &Band::PRODUCT)?;
        let read_s = t.elapsed().as_secs_f64();
        let tiling = SrTiling {
            cores: settings.pipeline.sr_tile.into(),
            batch,
        };
        let px = scene.grid10.width * scene.grid10.height;
        for model in [set.superres_2x.as_mut(), set.superres_6x.as_mut()]
            .into_iter()
            .flatten()
        {
            let label = model.label();
            let timing = time_stage(model, args.reps, &mut |m| {
                superres(&scene, m, &id, tiling, &mut |_, _| {})?;
                Ok(())
            })?;
            println!("stage=superres model={label} units={px} read_s={read_s:.3} {timing}");
        }
    }
    Ok(())
}
