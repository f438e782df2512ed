//! `eval`: scores a super-resolution ONNX model through the project's own inference
//! pipeline (`pipeline::superres::superres` on a `LoadedModel`) on a held-out region under
//! Wald's protocol, next to two baselines measured in the same run:
//! - bicubic upsampling of the degraded band;
//! - linear guided detail injection: per output band, least squares of
//!   (original − bicubic-of-degraded) on the 10 m bands' lost detail
//!   (degraded − bicubic(re-degraded)), fitted on the training region, or (with
//!   [`EvalOptions::fit`]) on other whole granules, as a user with no labels for the test
//!   scene would fit it.
//!
//! A blur mismatch ([`EvalOptions::blur_factor`]) degrades the test scene with σ = factor
//! × scale/2 while the models and the baseline fit keep assuming the standard σ: the real
//! sensor blur is never exactly the assumed one.
//!
//! Invariants: all three methods see the same degraded input, quantised to harmonised DN
//! `u16` as a real product would be; the reference is the original band of the region;
//! metrics are the project's (`raster::metrics`): RMSE and SRE per band averaged over
//! bands, SAM over the band stack, global UIQ per band averaged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::granule::{Band, GeoRef, GeoTransform};
use crate::model::manifest::ModelSpec;
use crate::model::provider::ProviderOptions;
use crate::model::session::LoadedModel;
use crate::pipeline::scene::Scene;
use crate::pipeline::superres::{superres, SrTiling};
use crate::raster::degrade::wald_degrade;
use crate::raster::metrics::{rmse, sam_degrees, sre_db, uiq};
use crate::raster::radiometry::{to_f32, to_u16};
use crate::raster::resample::{upsample, Kernel};
use crate::raster::Raster;

use super::config::{DataSplit, Holdout};
use std::path::PathBuf;

use super::data::{degrade_band, read_scenes, split_regions, NativeBands, Region, SrBands};
use super::TrainError;

/// The four standard metrics of one method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// Mean over bands of the per-band RMSE, harmonised DN.
    pub rmse: f64,
    /// RMSE over all bands' pixels pooled, harmonised DN.
    pub rmse_pooled: f64,
    /// Mean over bands of the per-band SRE, dB.
    pub sre_db: f64,
    /// Mean spectral angle over the output bands, degrees.
    pub sam_deg: f64,
    /// Mean over bands of the global UIQ.
    pub uiq: f64,
}

/// An evaluation: the model next to both baselines on the same pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The model (`name@version`).
    pub model: String,
    /// The granule and region scored.
    pub region: String,
    /// Output bands.
    pub bands: Vec<String>,
    /// Scored pixels per band.
    pub pixels: usize,
    /// The model through the pipeline.
    pub model_scores: Scores,
    /// Bicubic upsampling.
    pub bicubic: Scores,
    /// Linear guided detail injection.
    pub linear_guided: Scores,
    /// Where the linear baseline was fitted.
    pub linear_fit: String,
    /// The test scene's blur, in units of the standard σ = scale/2.
    pub blur_factor: f64,
}

/// How an evaluation is run beyond the region.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Fit the linear baseline on these whole granules (empty: on the test granule's
    /// training region, as before).
    pub fit: Vec<PathBuf>,
    /// Degrade the test scene with σ = this × scale/2 (1: the standard).
    pub blur_factor: f32,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            fit: Vec::new(),
            blur_factor: 1.0,
        }
    }
}

impl EvalReport {
    /// The metrics as a manifest `[training.metrics]` table.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("eval_region".into(), self.region.clone().into());
        t.insert("eval_pixels".into(), (self.pixels as i64).into());
        t.insert("linear_guided_fit".into(), self.linear_fit.clone().into());
        t.insert(
            "eval_blur_factor".into(),
            ((self.blur_factor * 1000.0).round() / 1000.0).into(),
        );
        for (prefix, s) in [
            ("", &self.model_scores),
            ("bicubic_", &self.bicubic),
            ("linear_guided_", &self.linear_guided),
        ] {
            let r = |v: f64| (v * 1000.0).round() / 1000.0;
            t.insert(format!("{prefix}rmse"), r(s.rmse).into());
            t.insert(format!("{prefix}rmse_pooled"), r(s.rmse_pooled).into());
            t.insert(format!("{prefix}sre_db"), r(s.sre_db).into());
            t.insert(format!("{prefix}sam_deg"), r(s.sam_deg).into());
            // UIQ sits near 1 (0.97 here), so it keeps five decimals to compare models.
            t.insert(format!("{prefix}uiq"), ((s.uiq * 1e5).round() / 1e5).into());
        }
        t
    }
}

/// One region degraded and quantised to `u16` harmonised DN, per band on its degraded
/// native grid.
fn degraded_u16(
    native: &NativeBands,
    region: Region,
    bands: &[Band],
    s: usize,
    blur_factor: f32,
) -> Result<BTreeMap<Band, Raster<u16>>, TrainError> {
    let mut out = BTreeMap::new();
    for &b in bands {
        let d = degrade_band(&native.cut(b, region)?, s, blur_factor);
        out.insert(b, d.map(to_u16));
    }
    Ok(out)
}

/// The 10 m bands' detail lost by one more degradation, on the degraded 10 m grid.
fn lost_detail(deg10: &Raster<f32>, s: usize) -> Raster<f32> {
    let again = upsample(&wald_degrade(deg10, s), s, Kernel::Bicubic);
    let mut d = deg10.clone();
    for (v, a) in d.data.iter_mut().zip(&again.data) {
        *v -= *a;
    }
    d
}

/// Least squares `r ≈ w0 + Σ wj·fj` over finite samples, by the normal equations.
fn least_squares(features: &[Raster<f32>], residual: &Raster<f32>) -> Vec<f64> {
    let k = features.len() + 1;
    let mut a = vec![0f64; k * k];
    let mut b = vec![0f64; k];
    let mut x = vec![0f64; k];
    for i in 0..residual.data.len() {
        x[0] = 1.0;
        for (j, f) in features.iter().enumerate() {
            x[j + 1] = f64::from(f.data[i]);
        }
        let r = f64::from(residual.data[i]);
        if !r.is_finite() || x.iter().any(|v| !v.is_finite()) {
            continue;
        }
        for p in 0..k {
            b[p] += x[p] * r;
            for q in 0..k {
                a[p * k + q] += x[p] * x[q];
            }
        }
    }
    solve(a, b, k)
}

/// Gaussian elimination with partial pivoting; a singular system gives zeros (no detail
/// injected), which is the bicubic baseline.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, k: usize) -> Vec<f64> {
    for c in 0..k {
        let p = (c..k)
            .max_by(|&i, &j| a[i * k + c].abs().total_cmp(&a[j * k + c].abs()))
            .unwrap_or(c);
        if a[p * k + c].abs() < 1e-12 {
            return vec![0.0; k];
        }
        for q in 0..k {
            a.swap(c * k + q, p * k + q);
        }
        b.swap(c, p);
        for r in c + 1..k {
            let f = a[r * k + c] / a[c * k + c];
            for q in c..k {
                a[r * k + q] -= f * a[c * k + q];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0f64; k];
    for c in (0..k).rev() {
        let mut s = b[c];
        for q in c + 1..k {
            s -= a[c * k + q] * x[q];
        }
        x[c] = s / a[c * k + c];
    }
    x
}

/// The inputs of both baselines for one region: per output band the bicubic of its
/// degraded version and the reference; the 10 m bands' lost detail.
struct BaselineInputs {
    bicubic: Vec<Raster<f32>>,
    reference: Vec<Raster<f32>>,
    detail: Vec<Raster<f32>>,
}

fn baseline_inputs(
    native: &NativeBands,
    region: Region,
    bands: &SrBands,
    deg: &BTreeMap<Band, Raster<u16>>,
) -> Result<BaselineInputs, TrainError> {
    let s = bands.scale;
    let mut bicubic = Vec::new();
    let mut reference = Vec::new();
    for &b in &bands.outputs {
        let d = deg.get(&b).ok_or_else(|| TrainError::MissingBand {
            path: native.path.clone(),
            band: b,
        })?;
        bicubic.push(upsample(&to_f32(d), s, Kernel::Bicubic));
        reference.push(native.cut(b, region)?);
    }
    let mut detail = Vec::new();
    for &b in bands
        .inputs
        .first()
        .map(|(_, g)| g.as_slice())
        .unwrap_or(&[])
    {
        let d = deg.get(&b).ok_or_else(|| TrainError::MissingBand {
            path: native.path.clone(),
            band: b,
        })?;
        detail.push(lost_detail(&to_f32(d), s));
    }
    Ok(BaselineInputs {
        bicubic,
        reference,
        detail,
    })
}

fn scores(reference: &[Raster<f32>], estimate: &[Raster<f32>]) -> Result<Scores, TrainError> {
    let n = reference.len().max(1) as f64;
    let (mut r, mut s, mut q, mut r2) = (0.0, 0.0, 0.0, 0.0);
    for (a, b) in reference.iter().zip(estimate) {
        let e = rmse(a, b)?;
        r += e;
        r2 += e * e;
        s += sre_db(a, b)?;
        q += uiq(a, b)?;
    }
    let refs: Vec<&Raster<f32>> = reference.iter().collect();
    let ests: Vec<&Raster<f32>> = estimate.iter().collect();
    Ok(Scores {
        rmse: r / n,
        // The mean of the per-band MSEs: the pooled MSE whenever every band has the same
        // valid pixels (true of a region without nodata, as the scored crops are).
        rmse_pooled: (r2 / n).sqrt(),
        sre_db: s / n,
        sam_deg: sam_degrees(&refs, &ests)?,
        uiq: q / n,
    })
}

/// The scenes a baseline was fitted on, for the manifest: every id up to four, else the
/// first two and a count.
fn summarise_ids(ids: &[String]) -> String {
    if ids.len() <= 4 {
        format!("{} (whole granules)", ids.join(", "))
    } else {
        format!(
            "{}, {} and {} more (whole scenes, {} in all)",
            ids[0],
            ids[1],
            ids.len() - 2,
            ids.len()
        )
    }
}

/// Evaluates the model in `model_dir` on granule `data`: fitted (linear baseline) on the
/// training region, scored on the held-out region (or, with `Holdout::None`, both on the
/// whole granule).
///
/// # Errors
/// Reading errors, [`TrainError::Model`] when the model does not load,
/// [`TrainError::Pipeline`] when inference fails, [`TrainError::Metric`].
pub fn evaluate(
    model_dir: &Path,
    data: &Path,
    holdout: Holdout,
    tile: usize,
) -> Result<EvalReport, TrainError> {
    evaluate_with(model_dir, data, holdout, tile, &EvalOptions::default())
}

/// [`evaluate`] with [`EvalOptions`] (baseline fitted on other granules, blur mismatch).
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_with(
    model_dir: &Path,
    data: &Path,
    holdout: Holdout,
    tile: usize,
    opts: &EvalOptions,
) -> Result<EvalReport, TrainError> {
    let spec = ModelSpec::load(&model_dir.join("model.toml"))?;
    let scale = spec.superres.as_ref().map_or(2, |s| s.scale as usize);
    let bands = SrBands::for_scale(scale);
    let mut model = LoadedModel::load(model_dir, &ProviderOptions::default())?;
    evaluate_loaded_with(&mut model, &bands, data, holdout, tile, opts)
}

/// [`evaluate`] with a model already loaded.
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_loaded(
    model: &mut LoadedModel,
    bands: &SrBands,
    data: &Path,
    holdout: Holdout,
    tile: usize,
) -> Result<EvalReport, TrainError> {
    evaluate_loaded_with(model, bands, data, holdout, tile, &EvalOptions::default())
}

/// Accumulated per output band: the detail features and residuals the linear baseline
/// is fitted on (pooled over every fit region).
fn fit_samples(
    native: &NativeBands,
    region: Region,
    bands: &SrBands,
    features: &mut [Vec<f32>],
    residuals: &mut [Vec<f32>],
) -> Result<(), TrainError> {
    let all = bands.all_bands();
    let deg = degraded_u16(native, region, &all, bands.scale, 1.0)?;
    let fit_in = baseline_inputs(native, region, bands, &deg)?;
    for (f, d) in features.iter_mut().zip(&fit_in.detail) {
        f.extend_from_slice(&d.data);
    }
    for ((res, bic), reference) in residuals
        .iter_mut()
        .zip(&fit_in.bicubic)
        .zip(&fit_in.reference)
    {
        res.extend(reference.data.iter().zip(&bic.data).map(|(r, b)| r - b));
    }
    Ok(())
}

/// [`evaluate_loaded`] with [`EvalOptions`].
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_loaded_with(
    model: &mut LoadedModel,
    bands: &SrBands,
    data: &Path,
    holdout: Holdout,
    tile: usize,
    opts: &EvalOptions,
) -> Result<EvalReport, TrainError> {
    let s = bands.scale;
    let native = NativeBands::read(data, &bands.all_bands())?;
    let (train, held) = split_regions(data, native.width10, native.height10, bands, holdout)?;
    let test = held.unwrap_or(train);
    let all = bands.all_bands();

    // Fit the linear baseline: on the training region, or on other whole granules.
    let nguides = bands.inputs.first().map_or(0, |(_, g)| g.len());
    let mut features = vec![Vec::new(); nguides];
    let mut residuals = vec![Vec::new(); bands.outputs.len()];
    let linear_fit = if opts.fit.is_empty() {
        fit_samples(&native, train, bands, &mut features, &mut residuals)?;
        format!(
            "{} rows {}..{} (the test granule's training region)",
            native.id,
            train.row,
            train.row + train.height
        )
    } else {
        let mut ids = Vec::new();
        let (others, _) = read_scenes(&opts.fit, None, DataSplit::Train, &all)?;
        for other in &others {
            let p = &other.path;
            let (whole, _) = split_regions(p, other.width10, other.height10, bands, Holdout::None)?;
            fit_samples(other, whole, bands, &mut features, &mut residuals)?;
            ids.push(other.id.clone());
        }
        summarise_ids(&ids)
    };
    let as_raster = |v: Vec<f32>| Raster {
        width: v.len(),
        height: 1,
        data: v,
    };
    let features: Vec<Raster<f32>> = features.into_iter().map(as_raster).collect();
    let weights: Vec<Vec<f64>> = residuals
        .into_iter()
        .map(|r| least_squares(&features, &as_raster(r)))
        .collect();

    // Score on the test region.
    let deg = degraded_u16(&native, test, &all, s, opts.blur_factor)?;
    let base = baseline_inputs(&native, test, bands, &deg)?;
    let linear: Vec<Raster<f32>> = base
        .bicubic
        .iter()
        .zip(&weights)
        .map(|(bic, w)| {
            let mut out = bic.clone();
            for (i, v) in out.data.iter_mut().enumerate() {
                let mut add = w[0];
                for (j, f) in base.detail.iter().enumerate() {
                    add += w[j + 1] * f64::from(f.data[i]);
                }
                *v += add as f32;
            }
            out
        })
        .collect();

    let (w, h) = (test.width / s, test.height / s);
    let scene = Scene {
        row0: 0,
        col0: 0,
        grid10: GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 0.0,
                origin_y: 0.0,
                pixel_width: 10.0 * s as f64,
                pixel_height: -10.0 * s as f64,
            },
            width: w,
            height: h,
        },
        bands: deg,
        cloud: None,
        offsets: all.iter().map(|b| (*b, 0.0)).collect(),
    };
    let out = superres(
        &scene,
        model,
        &native.id,
        SrTiling {
            cores: tile.into(),
            batch: 1,
        },
        &mut |_, _| {},
    )?;
    let mut est = Vec::new();
    for &b in &bands.outputs {
        let r = out
            .iter()
            .find(|(ob, _)| *ob == b)
            .map(|(_, r)| to_f32(r))
            .ok_or_else(|| TrainError::MissingBand {
                path: native.path.clone(),
                band: b,
            })?;
        est.push(r);
    }
    Ok(EvalReport {
        model: model.label(),
        region: format!(
            "{} rows {}..{} cols {}..{} at 10 m ({}), degraded ×{s}",
            native.id,
            test.row,
            test.row + test.height,
            test.col,
            test.col + test.width,
            if held.is_some() {
                "held out"
            } else if opts.fit.is_empty() {
                "training region"
            } else {
                "whole granule"
            }
        ),
        bands: bands.outputs.iter().map(|b| b.to_string()).collect(),
        pixels: w * h,
        model_scores: scores(&base.reference, &est)?,
        bicubic: scores(&base.reference, &base.bicubic)?,
        linear_guided: scores(&base.reference, &linear)?,
        linear_fit,
        blur_factor: f64::from(opts.blur_factor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_linear_relation() {
        let n = 50;
        let f1 = Raster::from_vec(n, 1, (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
        let f2 = Raster::from_vec(n, 1, (0..n).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
        let r = Raster::from_vec(
            n,
            1,
            (0..n)
                .map(|i| 3.0 + 2.0 * f1.data[i] - 0.5 * f2.data[i])
                .collect(),
        )
        .unwrap();
        let w = least_squares(&[f1, f2], &r);
        assert!((w[0] - 3.0).abs() < 1e-4, "{w:?}");
        assert!((w[1] - 2.0).abs() < 1e-4, "{w:?}");
        assert!((w[2] + 0.5).abs() < 1e-4, "{w:?}");
    }
}
