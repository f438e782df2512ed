//! The measured limit of issue 9: the best bare ONNX Runtime throughput of each
//! configured super-resolution model over tile sizes and batch sizes, with the models,
//! providers and thread settings of a configuration file, exactly as `s2edge process`
//! loads them (`LoadedModel::run`, already-warm session, inputs filled once).
//!
//! For each model and each (padded tile side, batch) it runs one warm-up batch, then
//! `--reps` timed batches, and reports input megapixels per second (padded pixels ×
//! batch / seconds, best rep). The last line per model is the best over the sweep:
//! `limit model=dsen2-2x@2 mpx_s=… tile=… batch=…`, the number s2edge's super-resolution
//! time is compared with (`scripts/bench_vs_python.sh`).
//!
//! Usage: `bare_limit --config FILE --models DIR [--reps N] [--tiles 128,256,540]
//! [--batches 1,2,4,8]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::Array4;

use s2edge::config::Settings;
use s2edge::model::init_runtime;
use s2edge::model::registry::Registry;
use s2edge::model::set::ModelSet;

fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .context("a comma-separated list of sizes")
        })
        .collect()
}

fn main() -> Result<()> {
    let mut config = None;
    let mut models = None;
    let mut reps = 3usize;
    let mut tiles = vec![128, 256, 540];
    let mut batches = vec![1, 2, 4, 8];
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().map(PathBuf::from),
            "--models" => models = it.next().map(PathBuf::from),
            "--reps" => reps = it.next().context("--reps N")?.parse()?,
            "--tiles" => tiles = list(&it.next().context("--tiles LIST")?)?,
            "--batches" => batches = list(&it.next().context("--batches LIST")?)?,
            _ => anyhow::bail!("unknown option {a}"),
        }
    }
    let mut settings = Settings::load(config.as_deref()).context("loading the configuration")?;
    settings.pipeline.classify = false;
    let models = models.unwrap_or_else(|| settings.paths.models.clone());
    init_runtime(
        settings.runtime.onnxruntime.as_deref(),
        settings.runtime.env_options(),
    )
    .context("loading ONNX Runtime")?;
    let mut set = ModelSet::load(
        &Registry::new(&models),
        &settings.model_selection()?,
        &settings.runtime.provider_options(),
    )?;
    for model in [set.superres_2x.as_mut(), set.superres_6x.as_mut()]
        .into_iter()
        .flatten()
    {
        let label = model.label();
        let inputs: Vec<(String, usize)> = model
            .spec
            .inputs
            .iter()
            .map(|(n, i)| (n.to_string(), i.bands.len()))
            .collect();
        let mut best = (0.0f64, 0, 0);
        for &tile in &tiles {
            for &batch in &batches {
                let feed = || -> Vec<(String, Array4<f32>)> {
                    inputs
                        .iter()
                        .map(|(n, c)| {
                            let a =
                                Array4::from_shape_fn((batch, *c, tile, tile), |(b, ch, y, x)| {
                                    ((b * 7 + ch * 13 + y * 3 + x) % 97) as f32 / 97.0
                                });
                            (n.clone(), a)
                        })
                        .collect()
                };
                let f = feed();
                let t = Instant::now();
                model.run(f)?;
                let first_s = t.elapsed().as_secs_f64();
                let mut best_s = f64::INFINITY;
                for _ in 0..reps {
                    let f = feed();
                    let t = Instant::now();
                    model.run(f)?;
                    best_s = best_s.min(t.elapsed().as_secs_f64());
                }
                let mpx_s = (tile * tile * batch) as f64 / 1e6 / best_s;
                println!(
                    "bare model={label} tile={tile} batch={batch} s={best_s:.3} mpx_s={mpx_s:.3} first_s={first_s:.3}"
                );
                if mpx_s > best.0 {
                    best = (mpx_s, tile, batch);
                }
            }
        }
        println!(
            "limit model={label} mpx_s={:.3} tile={} batch={}",
            best.0, best.1, best.2
        );
    }
    Ok(())
}
