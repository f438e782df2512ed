//! Observation consistency inside the super-resolution graph: `K` steps of iterative
//! back-projection after the network's residual output,
//!
//! ```text
//! y ← y + U(x_obs − D(y))        (K times, per output band)
//! ```
//!
//! - `D` is the project's Wald degradation ([`crate::raster::degrade::wald_degrade`]): a
//!   Gaussian of σ = scale/2 output pixels with the same truncated taps
//!   ([`gaussian_kernel`]), then a block mean by the scale, with edges replicated. Blur and
//!   block mean are folded into one separable strided convolution.
//! - `U` is bilinear upsampling with area-aligned pixels (`align_corners=False`) and
//!   replicated edges, exactly [`crate::raster::resample::upsample`] with
//!   `Kernel::Bilinear`: nearest-neighbour upsampling (reshape + concat) followed by the
//!   separable linear-interpolation kernel `[½, 1, …, 1, ½] / s`.
//! - `x_obs`, the observed coarse pixels, is recovered exactly from the graph's own input,
//!   which the pipeline delivers bilinearly upsampled (manifest `upsample = "bilinear"`).
//!   Along each axis, with `a = 1/(2s)` and `α = (1−a)/(2(1−2a))`, `β = a/(2(1−2a))`:
//!   `x_i = α·(up[si+s/2−1] + up[si+s/2]) − β·(up[si−s/2] + up[si+3s/2−1])`
//!   (2×: `0.75·(up[2i]+up[2i+1]) − 0.25·(up[2i−1]+up[2i+2])`; 6×: `(11·(up[6i+2]+up[6i+3])
//!   − up[6i−3] − up[6i+8]) / 20`), a stride-`s` convolution, exact also at an
//!   edge-replicated border.
//!
//! Invariants:
//! - every operator is a fixed (non-trainable) constant built at forward time, so the
//!   optimiser never sees it and the ONNX export carries it as initialisers;
//! - only ops the burn-onnx exporter lowers with dynamic height/width are used: edge `Pad`,
//!   strided depthwise `Conv` with zero padding, `Reshape` and `Concat`; each band is
//!   processed as its own `[n, 1, h, w]` tensor (selected by a one-hot 1×1 convolution),
//!   whose static channel axis of 1 lets the exporter resolve every reshape (the exported
//!   graph does not carry these ops: [`super::export::append_backprojection`] writes the
//!   same function as grouped `Conv`s and `Resize` over all bands at once, which ONNX
//!   Runtime runs at 1.6× the speed of the traced per-band ops);
//! - heights and widths must be multiples of the scale (a Sentinel-2 grid always is, and
//!   the pipeline's tiles are aligned to 6);
//! - [`BackProjection::radius`] is how far (output pixels) the layer widens the model's
//!   receptive field; the exported manifest's `receptive_radius` includes it, so tiled runs
//!   stay exact;
//! - since `D∘U` is symmetric positive definite with eigenvalues in (0, 1], the iteration
//!   converges to `D(y) = x_obs` (tested below); a few steps fix the low frequencies, where
//!   most of an unseen scene's error lies, and leave the highest ones to the network, which
//!   keeps the layer tolerant of a sensor blur other than the assumed one.

use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Device, Tensor, TensorData};

use crate::raster::degrade::gaussian_kernel;

/// The fixed operators of one scale.
#[derive(Debug, Clone, PartialEq)]
pub struct BackProjection {
    /// Scale factor (even: 2 or 6).
    pub scale: usize,
    /// Back-projection steps.
    pub steps: usize,
    /// `D`: blur folded with the block mean, one axis (length `2r + s`).
    degrade_taps: Vec<f32>,
    /// Gaussian radius `r` (output pixels).
    blur_radius: usize,
    /// `x_obs` recovery from the bilinear input, one axis (length `2s`).
    recover_taps: Vec<f32>,
    /// `U`: linear interpolation after nearest upsampling, one axis (length `s + 1`).
    interp_taps: Vec<f32>,
}

impl BackProjection {
    /// The layer for `scale` (even) with `steps` steps and the standard blur σ = scale/2.
    pub fn new(scale: usize, steps: usize) -> BackProjection {
        let s = scale.max(2);
        let g: Vec<f64> = gaussian_kernel(s as f32 / 2.0)
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let r = g.len() / 2;
        let mut d = vec![0f64; 2 * r + s];
        for (m, dm) in d.iter_mut().enumerate() {
            for k in 0..s {
                if let Some(w) = m.checked_sub(k).and_then(|t| g.get(t)) {
                    *dm += w / s as f64;
                }
            }
        }
        let a = 1.0 / (2.0 * s as f64);
        let alpha = (1.0 - a) / (2.0 * (1.0 - 2.0 * a));
        let beta = a / (2.0 * (1.0 - 2.0 * a));
        let mut rec = vec![0f64; 2 * s];
        rec[s - 1] = alpha;
        rec[s] = alpha;
        rec[0] = -beta;
        rec[2 * s - 1] = -beta;
        let mut interp = vec![1.0 / s as f64; s + 1];
        interp[0] = 0.5 / s as f64;
        interp[s] = 0.5 / s as f64;
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        BackProjection {
            scale: s,
            steps,
            degrade_taps: f(d),
            blur_radius: r,
            recover_taps: f(rec),
            interp_taps: f(interp),
        }
    }

    /// How far (output pixels) the layer widens the receptive field: each step reaches
    /// `s/2 + s − 1` pixels through `U` (to the coarse blocks it reads) plus the blur
    /// radius `r` through `D`; the recovery of `x_obs` reaches less (`2s − 1`).
    pub fn radius(&self) -> u32 {
        if self.steps == 0 {
            return 0;
        }
        let s = self.scale;
        let per_step = s / 2 + s - 1 + self.blur_radius;
        (self.steps * per_step).max(2 * s - 1) as u32
    }

    /// `D`'s taps along one axis (blur folded with the block mean, length `2r + s`).
    pub fn degrade_taps(&self) -> &[f32] {
        &self.degrade_taps
    }

    /// The Gaussian radius `r` (output pixels): `D`'s edge padding.
    pub fn blur_radius(&self) -> usize {
        self.blur_radius
    }

    /// The `x_obs` recovery taps along one axis (length `2s`, edge padding `s/2`).
    pub fn recover_taps(&self) -> &[f32] {
        &self.recover_taps
    }

    /// A separable depthwise (single-channel) 2-D kernel `[1, 1, k, k]` from 1-D taps.
    fn kernel2(taps: &[f32], device: &Device) -> Tensor<4> {
        let k = taps.len();
        let mut w = Vec::with_capacity(k * k);
        for a in taps {
            for b in taps {
                w.push(a * b);
            }
        }
        Tensor::from_data(TensorData::new(w, [1, 1, k, k]), device)
    }

    /// Edge-pads `x` by `p` on every spatial side.
    fn pad(x: Tensor<4>, p: usize) -> Tensor<4> {
        if p == 0 {
            x
        } else {
            x.pad([(p, p), (p, p)], PadMode::Edge)
        }
    }

    /// A valid (unpadded) convolution of a `[n, 1, h, w]` plane with stride `stride`.
    fn conv(x: Tensor<4>, taps: &[f32], stride: usize) -> Tensor<4> {
        let w = Self::kernel2(taps, &x.device());
        conv2d(
            x,
            w,
            None,
            ConvOptions::new([stride, stride], [0, 0], [1, 1], 1),
        )
    }

    /// `D`: the Wald degradation of a `[n, 1, H, W]` plane → `[n, 1, H/s, W/s]`.
    pub fn degrade(&self, y: Tensor<4>) -> Tensor<4> {
        Self::conv(
            Self::pad(y, self.blur_radius),
            &self.degrade_taps,
            self.scale,
        )
    }

    /// The observed coarse pixels behind a bilinearly upsampled `[n, 1, H, W]` plane.
    pub fn recover(&self, up: Tensor<4>) -> Tensor<4> {
        Self::conv(
            Self::pad(up, self.scale / 2),
            &self.recover_taps,
            self.scale,
        )
    }

    /// `U`: bilinear upsampling of a `[n, 1, h, w]` plane → `[n, 1, h·s, w·s]`.
    pub fn upsample(&self, c: Tensor<4>) -> Tensor<4> {
        let s = self.scale;
        let [n, _, h, w] = c.dims();
        // Nearest neighbour: [n, h, 1, w, 1] → s copies on both singleton axes.
        let t: Tensor<5> = c.reshape([n, h, 1, w, 1]);
        let t = Tensor::cat(vec![t; s], 2);
        let t = Tensor::cat(vec![t; s], 4);
        let near: Tensor<4> = t.reshape([n, 1, h * s, w * s]);
        Self::conv(Self::pad(near, s / 2), &self.interp_taps, 1)
    }

    /// Channel `c` of `x` (`[n, C, H, W]`) as `[n, 1, H, W]`, by a one-hot 1×1 convolution
    /// (exact; the exporter cannot lower a slice on a tensor with dynamic axes).
    pub fn channel(x: Tensor<4>, c: usize) -> Tensor<4> {
        let cin = x.dims()[1];
        let mut w = vec![0f32; cin];
        w[c] = 1.0;
        let w = Tensor::from_data(TensorData::new(w, [1, cin, 1, 1]), &x.device());
        conv2d(x, w, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
    }

    /// The `K` back-projection steps on every channel of `y` (`[n, C, H, W]`), with the
    /// observations recovered from `up`, the bilinearly upsampled input of the same bands.
    pub fn forward(&self, y: Tensor<4>, up: Tensor<4>) -> Tensor<4> {
        if self.steps == 0 {
            return y;
        }
        let channels = y.dims()[1];
        let mut out = Vec::with_capacity(channels);
        for c in 0..channels {
            let obs = self.recover(Self::channel(up.clone(), c));
            let mut yc = Self::channel(y.clone(), c);
            for _ in 0..self.steps {
                let r = obs.clone() - self.degrade(yc.clone());
                yc = yc + self.upsample(r);
            }
            out.push(yc);
        }
        Tensor::cat(out, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::degrade::wald_degrade;
    use crate::raster::resample::{upsample, Kernel};
    use crate::raster::Raster;

    fn raster(w: usize, h: usize, seed: u32) -> Raster<f32> {
        let data = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                0.3 * (x * 0.7 + seed as f32).sin()
                    + 0.2 * (y * 1.3).cos()
                    + 0.1 * ((i * 7919) % 13) as f32
            })
            .collect();
        Raster::from_vec(w, h, data).unwrap()
    }

    fn plane(r: &Raster<f32>) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(r.data.clone(), [1, 1, r.height, r.width]),
            &Device::flex(),
        )
    }

    fn values(t: Tensor<4>) -> (Vec<usize>, Vec<f32>) {
        let dims = t.dims().to_vec();
        (dims, t.into_data().try_into_vec::<f32>().unwrap())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn operators_match_the_project_resampler_and_degradation() {
        for s in [2usize, 6] {
            let bp = BackProjection::new(s, 1);
            let (w, h) = (8 * s, 6 * s);
            // U is the project's bilinear, edges included.
            let coarse = raster(w / s, h / s, 1);
            let (dims, up) = values(bp.upsample(plane(&coarse)));
            assert_eq!(dims, vec![1, 1, h, w]);
            let want = upsample(&coarse, s, Kernel::Bilinear);
            assert!(max_diff(&up, &want.data) < 1e-5, "{s}× U");
            // x_obs is recovered exactly from that bilinear input, edges included.
            let (dims, rec) = values(bp.recover(plane(&want)));
            assert_eq!(dims, vec![1, 1, h / s, w / s]);
            assert!(max_diff(&rec, &coarse.data) < 1e-5, "{s}× recovery");
            // D is the project's Wald degradation, edges included.
            let fine = raster(w, h, 2);
            let (dims, d) = values(bp.degrade(plane(&fine)));
            assert_eq!(dims, vec![1, 1, h / s, w / s]);
            let want = wald_degrade(&fine, s);
            assert!(max_diff(&d, &want.data) < 1e-5, "{s}× D");
        }
    }

    #[test]
    fn many_steps_make_the_output_consistent_with_the_observation() {
        for (s, steps) in [(2usize, 1000usize), (6, 1000)] {
            let bp = BackProjection::new(s, steps);
            let (w, h) = (6 * s, 4 * s);
            let obs = raster(w / s, h / s, 3);
            let up = upsample(&obs, s, Kernel::Bilinear);
            // Two channels: a start far from consistent (noise), and the upsampled input.
            let noise = raster(w, h, 9);
            let y0 = Tensor::cat(vec![plane(&noise), plane(&up)], 1);
            let up2 = Tensor::cat(vec![plane(&up), plane(&up)], 1);
            let y = bp.forward(y0, up2);
            assert_eq!(y.dims(), [1, 2, h, w]);
            for c in 0..2 {
                let (_, d) = values(bp.degrade(BackProjection::channel(y.clone(), c)));
                let err = max_diff(&d, &obs.data);
                assert!(err < 1e-4, "{s}× channel {c}: D(y) − x_obs = {err}");
            }
            // Few steps shrink the inconsistency without removing it (a start of noise).
            let bp3 = BackProjection::new(s, 3);
            let y3 = bp3.forward(plane(&noise), plane(&up));
            let (_, d3) = values(bp3.degrade(y3));
            let (_, d0) = values(bp3.degrade(plane(&noise)));
            assert!(max_diff(&d3, &obs.data) < max_diff(&d0, &obs.data));
        }
    }

    #[test]
    fn radius_covers_the_reach_of_one_output_pixel() {
        // A unit impulse in y moves the output only within `radius` of it.
        for s in [2usize, 6] {
            let bp = BackProjection::new(s, 2);
            let rad = bp.radius() as usize;
            let n = 2 * rad + 4 * s;
            let n = n.div_ceil(s) * s;
            let mut base = Raster::filled(n, n, 0.0f32);
            let up = Raster::filled(n, n, 0.0f32);
            let a = values(bp.forward(plane(&base), plane(&up))).1;
            let c = n / 2 / s * s;
            *base.get_mut(c, c) = 1.0;
            let b = values(bp.forward(plane(&base), plane(&up))).1;
            for y in 0..n {
                for x in 0..n {
                    let d = (a[y * n + x] - b[y * n + x]).abs();
                    if d > 1e-7 {
                        assert!(
                            x.abs_diff(c) <= rad && y.abs_diff(c) <= rad,
                            "{s}×: ({x},{y}) moved by {d}, radius {rad}"
                        );
                    }
                }
            }
        }
        assert_eq!(BackProjection::new(2, 0).radius(), 0);
    }
}
