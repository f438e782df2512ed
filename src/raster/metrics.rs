//! Super-resolution quality metrics (DSen2's RMSE, SRE, SAM and UIQ), over valid pixels.
//!
//! A pixel counts only where both the reference and the estimate are finite (nodata is
//! `NaN`); for SAM, only where every band of both stacks is finite. All sums are in `f64`.
//! Metrics of a band are computed over the whole band; averaging over bands is the
//! caller's choice (DSen2 reports per-band values and their mean).

use super::Raster;

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Reference and estimate differ in size (or band count, for SAM).
    #[error("reference is {ref_w}x{ref_h}x{ref_bands}, estimate is {est_w}x{est_h}x{est_bands}")]
    ShapeMismatch {
        /// Reference width.
        ref_w: usize,
        /// Reference height.
        ref_h: usize,
        /// Reference bands (1 for single-band metrics).
        ref_bands: usize,
        /// Estimate width.
        est_w: usize,
        /// Estimate height.
        est_h: usize,
        /// Estimate bands.
        est_bands: usize,
    },
    /// No pixel is valid in both (or, for SAM, every pixel vector is zero or has nodata).
    #[error("no valid pixel to compare")]
    NoValidPixels,
}

fn check(reference: &Raster<f32>, estimate: &Raster<f32>) -> Result<(), MetricError> {
    if reference.width != estimate.width || reference.height != estimate.height {
        return Err(MetricError::ShapeMismatch {
            ref_w: reference.width,
            ref_h: reference.height,
            ref_bands: 1,
            est_w: estimate.width,
            est_h: estimate.height,
            est_bands: 1,
        });
    }
    Ok(())
}

/// The pairs of values valid in both rasters.
fn valid_pairs<'a>(
    reference: &'a Raster<f32>,
    estimate: &'a Raster<f32>,
) -> impl Iterator<Item = (f64, f64)> + 'a {
    reference
        .data
        .iter()
        .zip(&estimate.data)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (f64::from(*x), f64::from(*y)))
}

/// Sums over the valid pairs: (count, Σx², Σ(x−y)²).
fn energy(
    reference: &Raster<f32>,
    estimate: &Raster<f32>,
) -> Result<(usize, f64, f64), MetricError> {
    check(reference, estimate)?;
    let (mut n, mut sx2, mut se2) = (0usize, 0f64, 0f64);
    for (x, y) in valid_pairs(reference, estimate) {
        n += 1;
        sx2 += x * x;
        se2 += (x - y) * (x - y);
    }
    if n == 0 {
        return Err(MetricError::NoValidPixels);
    }
    Ok((n, sx2, se2))
}

/// Root-mean-square error over the pixels valid in both, in the rasters' units.
///
/// # Errors
/// [`MetricError::ShapeMismatch`] for different sizes, [`MetricError::NoValidPixels`] when
/// no pixel is valid in both.
pub fn rmse(reference: &Raster<f32>, estimate: &Raster<f32>) -> Result<f64, MetricError> {
    let (n, _, se2) = energy(reference, estimate)?;
    Ok((se2 / n as f64).sqrt())
}

/// Signal-to-reconstruction error of one band in dB:
/// `10·log10(mean(x²) / mean((x − y)²))`, with `x` the reference and `y` the estimate,
/// over the pixels valid in both. A perfect estimate gives `+∞`.
///
/// # Errors
/// As [`rmse`].
pub fn sre_db(reference: &Raster<f32>, estimate: &Raster<f32>) -> Result<f64, MetricError> {
    let (_, sx2, se2) = energy(reference, estimate)?;
    // The pixel count cancels in the ratio of the two means.
    Ok(10.0 * (sx2 / se2).log10())
}

/// Mean spectral angle in degrees between the pixel vectors of two band stacks (one
/// raster per band, same band order in both).
///
/// A pixel counts where every band of both stacks is finite and neither vector is zero
/// (the angle is undefined there). The angle is computed as `atan2(|x×y|, x·y)`, which
/// stays accurate near 0° and cannot produce `NaN` from rounding.
///
/// # Errors
/// [`MetricError::ShapeMismatch`] when the band counts or any band sizes differ,
/// [`MetricError::NoValidPixels`] when no pixel counts (including empty stacks).
pub fn sam_degrees(
    reference: &[&Raster<f32>],
    estimate: &[&Raster<f32>],
) -> Result<f64, MetricError> {
    let first = reference.first().ok_or(MetricError::NoValidPixels)?;
    let (w, h) = (first.width, first.height);
    let shape_ok = reference.len() == estimate.len()
        && reference
            .iter()
            .chain(estimate)
            .all(|b| b.width == w && b.height == h);
    if !shape_ok {
        let est = estimate.first();
        return Err(MetricError::ShapeMismatch {
            ref_w: w,
            ref_h: h,
            ref_bands: reference.len(),
            est_w: est.map_or(0, |b| b.width),
            est_h: est.map_or(0, |b| b.height),
            est_bands: estimate.len(),
        });
    }
    let (mut n, mut sum) = (0usize, 0f64);
    'pixel: for i in 0..w * h {
        let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for (x, y) in reference.iter().zip(estimate) {
            let (x, y) = (x.data[i], y.data[i]);
            if !(x.is_finite() && y.is_finite()) {
                continue 'pixel;
            }
            let (x, y) = (f64::from(x), f64::from(y));
            dot += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx == 0.0 || yy == 0.0 {
            continue;
        }
        // atan2(|x×y|, x·y) rather than acos(cos): acos loses half the digits near 0°,
        // where good reconstructions live. |x×y|² = |x|²|y|² − (x·y)² (Lagrange).
        sum += (xx * yy - dot * dot).max(0.0).sqrt().atan2(dot);
        n += 1;
    }
    if n == 0 {
        return Err(MetricError::NoValidPixels);
    }
    Ok((sum / n as f64).to_degrees())
}

/// Wang–Bovik universal image quality index `Q = 4·σxy·μx·μy / ((σx² + σy²)(μx² + μy²))`
/// of one pair of samples. Degenerate cases (zero denominator: both constant, or both
/// zero-mean) give 1 when the samples are equal and 0 otherwise.
fn q_index(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut vx, mut vy, mut cxy) = (0f64, 0f64, 0f64);
    for (x, y) in pairs {
        vx += (x - mx) * (x - mx);
        vy += (y - my) * (y - my);
        cxy += (x - mx) * (y - my);
    }
    // Sample (n − 1) normalisation, as Wang & Bovik; it cancels except between σxy and σ².
    let d = (n - 1.0).max(1.0);
    let (vx, vy, cxy) = (vx / d, vy / d, cxy / d);
    let den = (vx + vy) * (mx * mx + my * my);
    if den == 0.0 {
        return if pairs.iter().all(|(x, y)| x == y) {
            1.0
        } else {
            0.0
        };
    }
    4.0 * cxy * mx * my / den
}

/// Universal image quality index of one band, **global**: one Q over all pixels valid in
/// both (DSen2 reports UIQ per band this way). Identical images give 1.
///
/// # Errors
/// As [`rmse`].
pub fn uiq(reference: &Raster<f32>, estimate: &Raster<f32>) -> Result<f64, MetricError> {
    check(reference, estimate)?;
    let pairs: Vec<(f64, f64)> = valid_pairs(reference, estimate).collect();
    if pairs.is_empty() {
        return Err(MetricError::NoValidPixels);
    }
    Ok(q_index(&pairs))
}

/// Universal image quality index averaged over non-overlapping `window`×`window` blocks
/// (partial blocks at the right and bottom edges included), the local variant of Wang &
/// Bovik. Blocks with fewer than two valid pixels are skipped. `window` 0 means global
/// ([`uiq`]).
///
/// # Errors
/// As [`rmse`]; [`MetricError::NoValidPixels`] also when every block is skipped.
pub fn uiq_windowed(
    reference: &Raster<f32>,
    estimate: &Raster<f32>,
    window: usize,
) -> Result<f64, MetricError> {
    if window == 0 {
        return uiq(reference, estimate);
    }
    check(reference, estimate)?;
    let (w, h) = (reference.width, reference.height);
    let mut pairs = Vec::with_capacity(window * window);
    let (mut n, mut sum) = (0usize, 0f64);
    for r0 in (0..h).step_by(window) {
        for c0 in (0..w).step_by(window) {
            pairs.clear();
            for r in r0..(r0 + window).min(h) {
                for c in c0..(c0 + window).min(w) {
                    let (x, y) = (reference.get(c, r), estimate.get(c, r));
                    if x.is_finite() && y.is_finite() {
                        pairs.push((f64::from(x), f64::from(y)));
                    }
                }
            }
            if pairs.len() >= 2 {
                sum += q_index(&pairs);
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(MetricError::NoValidPixels);
    }
    Ok(sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(w: usize, h: usize, d: Vec<f32>) -> Raster<f32> {
        Raster::from_vec(w, h, d).unwrap()
    }

    #[test]
    fn identical_images_are_perfect() {
        let x = r(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 7.0]);
        assert_eq!(rmse(&x, &x).unwrap(), 0.0);
        assert_eq!(sre_db(&x, &x).unwrap(), f64::INFINITY);
        assert!((uiq(&x, &x).unwrap() - 1.0).abs() < 1e-12);
        assert!((uiq_windowed(&x, &x, 2).unwrap() - 1.0).abs() < 1e-12);
        let y = r(3, 2, vec![2.0, 1.0, 3.0, 9.0, 5.0, 1.0]);
        assert!(sam_degrees(&[&x, &y], &[&x, &y]).unwrap() < 1e-6);
    }

    #[test]
    fn known_offsets() {
        let x = r(2, 2, vec![3.0, 4.0, 3.0, 4.0]);
        let y = r(2, 2, vec![5.0, 6.0, 5.0, 6.0]);
        assert!((rmse(&x, &y).unwrap() - 2.0).abs() < 1e-12);
        // mean(x²) = 12.5, mean(e²) = 4.
        let want = 10.0 * (12.5f64 / 4.0).log10();
        assert!((sre_db(&x, &y).unwrap() - want).abs() < 1e-12);
        // A constant offset keeps the correlation, costs luminance: Q = 2·μx·μy/(μx²+μy²)
        // with equal variances.
        let q = 2.0 * 3.5 * 5.5 / (3.5f64 * 3.5 + 5.5 * 5.5);
        assert!((uiq(&x, &y).unwrap() - q).abs() < 1e-12);
        // Negated anomalies: correlation −1.
        let z = r(2, 2, vec![4.0, 3.0, 4.0, 3.0]);
        assert!((uiq(&x, &z).unwrap() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn sam_of_known_angles() {
        // Pixel 0: (1,0) vs (0,1) = 90°; pixel 1: (1,1) vs (2,2) = 0°; pixel 2 skipped (NaN).
        let a = r(3, 1, vec![1.0, 1.0, f32::NAN]);
        let b = r(3, 1, vec![0.0, 1.0, 1.0]);
        let c = r(3, 1, vec![0.0, 2.0, 1.0]);
        let d = r(3, 1, vec![1.0, 2.0, 1.0]);
        let s = sam_degrees(&[&a, &b], &[&c, &d]).unwrap();
        assert!((s - 45.0).abs() < 1e-9, "{s}");
        // Scaling the estimate does not change the angle.
        let c2 = r(3, 1, vec![0.0, 20.0, 1.0]);
        let d2 = r(3, 1, vec![10.0, 20.0, 1.0]);
        assert!((sam_degrees(&[&a, &b], &[&c2, &d2]).unwrap() - 45.0).abs() < 1e-9);
        assert!(matches!(
            sam_degrees(&[&a], &[&c, &d]),
            Err(MetricError::ShapeMismatch { .. })
        ));
        assert_eq!(sam_degrees(&[], &[]), Err(MetricError::NoValidPixels));
    }

    #[test]
    fn nodata_is_skipped() {
        let x = r(3, 1, vec![1.0, f32::NAN, 3.0]);
        let y = r(3, 1, vec![1.0, 100.0, f32::NAN]);
        assert_eq!(rmse(&x, &y).unwrap(), 0.0);
        let all = r(1, 1, vec![f32::NAN]);
        assert_eq!(rmse(&all, &all), Err(MetricError::NoValidPixels));
        assert!(matches!(
            rmse(&x, &all),
            Err(MetricError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn uiq_windowed_averages_blocks() {
        // Left block identical (Q = 1), right block anti-correlated (Q = −1).
        let x = r(4, 2, vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
        let y = r(4, 2, vec![1.0, 2.0, 4.0, 3.0, 3.0, 4.0, 2.0, 1.0]);
        let q = uiq_windowed(&x, &y, 2).unwrap();
        assert!(q.abs() < 1e-12, "{q}");
        assert_eq!(uiq_windowed(&x, &y, 0).unwrap(), uiq(&x, &y).unwrap());
        let c = r(2, 1, vec![5.0, 5.0]);
        assert_eq!(uiq(&c, &c).unwrap(), 1.0);
    }
}
