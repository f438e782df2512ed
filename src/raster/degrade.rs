//! The project's standard Wald degradation (DESIGN.md "Reference facts", DSen2), used by
//! training and by every evaluation: a Gaussian blur of σ = scale/2 pixels at the band's
//! own resolution, then a block mean by the scale factor.
//!
//! Nodata (`NaN`, any non-finite value) follows the rule of [`super::resample`]: it never
//! enters the weights; the blur renormalises by the weights of the valid taps and gives
//! `NaN` only where no valid tap has a non-negligible weight, and the block mean averages
//! the valid pixels of a block and gives `NaN` only for an all-nodata block. One nodata
//! pixel therefore never poisons its neighbourhood.

use super::resample::{separable, AxisTaps, Dest};
use super::Raster;

/// Separable Gaussian blur with standard deviation `sigma` pixels: kernel radius
/// `ceil(3σ)`, weights `exp(−d²/2σ²)` normalised to sum 1, edges replicated, nodata-aware
/// (see the module docs). A `sigma` that is not a positive finite number returns an
/// unchanged copy.
pub fn gaussian_blur(src: &Raster<f32>, sigma: f32) -> Raster<f32> {
    if !(sigma.is_finite() && sigma > 0.0) || src.width == 0 || src.height == 0 {
        return src.clone();
    }
    let weights = gaussian_kernel(sigma);
    let xt = AxisTaps::convolve(src.width, &weights);
    let yt = AxisTaps::convolve(src.height, &weights);
    let mut out = Raster::filled(src.width, src.height, f32::NAN);
    separable(
        src,
        &xt,
        &yt,
        Dest {
            data: &mut out.data,
            offset: 0,
            stride: src.width,
        },
    );
    out
}

/// The normalised 1-D Gaussian of radius `ceil(3σ)` (length `2r + 1`): the taps
/// [`gaussian_blur`] uses (the trainer's in-graph degradation reuses them, so the network's
/// own degradation is this one).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let sigma = f64::from(sigma);
    let r = (3.0 * sigma).ceil() as i64;
    let raw: Vec<f64> = (-r..=r)
        .map(|d| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / sum) as f32).collect()
}

/// Block mean by `factor`: output pixel (c, r) is the mean of the valid pixels of the
/// `factor`×`factor` block at (c·factor, r·factor), or `NaN` when the block has none.
///
/// The output is `ceil(width / factor)` × `ceil(height / factor)`: a partial block at the
/// right or bottom edge averages the pixels it has. `factor` 0 or 1 returns a copy.
pub fn block_mean(src: &Raster<f32>, factor: usize) -> Raster<f32> {
    if factor <= 1 {
        return src.clone();
    }
    let (ow, oh) = (src.width.div_ceil(factor), src.height.div_ceil(factor));
    let mut sum = vec![0f64; ow];
    let mut count = vec![0u32; ow];
    let mut out = Vec::with_capacity(ow * oh);
    for br in 0..oh {
        sum.fill(0.0);
        count.fill(0);
        for r in br * factor..((br + 1) * factor).min(src.height) {
            for (c, v) in src.row(r).iter().enumerate() {
                if v.is_finite() {
                    sum[c / factor] += f64::from(*v);
                    count[c / factor] += 1;
                }
            }
        }
        out.extend(sum.iter().zip(&count).map(|(s, n)| {
            if *n == 0 {
                f32::NAN
            } else {
                (s / f64::from(*n)) as f32
            }
        }));
    }
    Raster {
        width: ow,
        height: oh,
        data: out,
    }
}

/// The Wald degradation by `scale`: [`gaussian_blur`] with σ = scale/2, then
/// [`block_mean`] by `scale`. `scale` 0 or 1 returns a copy (nothing to degrade).
pub fn wald_degrade(src: &Raster<f32>, scale: usize) -> Raster<f32> {
    if scale <= 1 {
        return src.clone();
    }
    block_mean(&gaussian_blur(src, scale as f32 / 2.0), scale)
}

/// The Wald degradation by `scale` with a blur of `sigma` pixels instead of the standard
/// `scale / 2`: the blur-mismatch tests (a sensor blurrier or sharper than assumed) and
/// blur augmentation in training. `sigma` not positive and finite: block mean only.
pub fn wald_degrade_sigma(src: &Raster<f32>, scale: usize, sigma: f32) -> Raster<f32> {
    if scale <= 1 {
        return src.clone();
    }
    block_mean(&gaussian_blur(src, sigma), scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalised_with_radius_3_sigma() {
        let k = gaussian_kernel(1.0);
        assert_eq!(k.len(), 7);
        let k3 = gaussian_kernel(3.0);
        assert_eq!(k3.len(), 19);
        for k in [k, k3] {
            let s: f32 = k.iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
            let m = k.len() / 2;
            assert!(k[m] > k[m + 1] && k[m + 1] > k[m + 2]);
            assert_eq!(k[m - 1], k[m + 1]);
        }
    }

    #[test]
    fn blur_matches_direct_convolution() {
        let (w, h) = (9usize, 7usize);
        let src =
            Raster::from_vec(w, h, (0..w * h).map(|i| ((i * 37) % 11) as f32).collect()).unwrap();
        let out = gaussian_blur(&src, 1.0);
        let k = gaussian_kernel(1.0);
        let r = 3i64;
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let mut want = 0.0f64;
                for dy in -r..=r {
                    for dx in -r..=r {
                        let sx = (x + dx).clamp(0, w as i64 - 1) as usize;
                        let sy = (y + dy).clamp(0, h as i64 - 1) as usize;
                        want += f64::from(k[(dx + r) as usize])
                            * f64::from(k[(dy + r) as usize])
                            * f64::from(src.get(sx, sy));
                    }
                }
                let got = f64::from(out.get(x as usize, y as usize));
                assert!((got - want).abs() < 1e-4, "({x},{y}) {got} vs {want}");
            }
        }
        // Constant in, constant out.
        let c = gaussian_blur(&Raster::filled(5, 5, 42.0), 3.0);
        assert!(c.data.iter().all(|v| (v - 42.0).abs() < 1e-4));
    }

    #[test]
    fn blur_ignores_nodata() {
        let mut src = Raster::filled(12, 12, 100.0f32);
        *src.get_mut(5, 5) = f32::NAN;
        let out = gaussian_blur(&src, 1.0);
        assert!(out.data.iter().all(|v| (v - 100.0).abs() < 1e-3));
        let none = gaussian_blur(&Raster::filled(4, 4, f32::NAN), 1.0);
        assert!(none.data.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn block_mean_of_valid_pixels() {
        let src = Raster::from_vec(
            5,
            2,
            vec![
                1.0,
                3.0,
                10.0,
                f32::NAN,
                7.0,
                5.0,
                7.0,
                20.0,
                f32::NAN,
                f32::NAN,
            ],
        )
        .unwrap();
        let out = block_mean(&src, 2);
        assert_eq!((out.width, out.height), (3, 1));
        assert_eq!(out.data[0], 4.0);
        assert_eq!(out.data[1], 15.0);
        assert_eq!(out.data[2], 7.0);
        let all_nan = block_mean(&Raster::filled(2, 2, f32::NAN), 2);
        assert!(all_nan.data[0].is_nan());
    }

    #[test]
    fn wald_degrades_size_and_keeps_constants() {
        let src = Raster::filled(60, 36, 1500.0f32);
        let d2 = wald_degrade(&src, 2);
        assert_eq!((d2.width, d2.height), (30, 18));
        let d6 = wald_degrade(&src, 6);
        assert_eq!((d6.width, d6.height), (10, 6));
        assert!(d6.data.iter().all(|v| (v - 1500.0).abs() < 1e-2));
        // A step edge gets smoothed: values strictly between the two levels near it.
        let step = Raster::from_vec(
            24,
            1,
            (0..24).map(|i| if i < 12 { 0.0 } else { 600.0 }).collect(),
        )
        .unwrap();
        let d = wald_degrade(&step, 2);
        assert!(d.data[5] > 0.0 && d.data[5] < 300.0);
        assert!(d.data[6] > 300.0 && d.data[6] < 600.0);
        assert_eq!(wald_degrade(&step, 1), step);
        // The σ variant with the standard σ is the standard degradation.
        assert_eq!(wald_degrade_sigma(&step, 2, 1.0), wald_degrade(&step, 2));
        let sharp = wald_degrade_sigma(&step, 2, 0.5);
        let blurry = wald_degrade_sigma(&step, 2, 1.5);
        assert!(sharp.data[5] < d.data[5] && d.data[5] < blurry.data[5]);
    }
}
