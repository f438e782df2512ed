//! Nodata-aware separable resampling (bilinear and Keys bicubic upsampling), and the
//! separable engine that [`super::degrade`] reuses for its Gaussian blur.
//!
//! Geometry (DESIGN.md "Radiometry"): pixel areas align, as in GDAL, scikit-image and
//! PyTorch with `align_corners=False` — the centre of output pixel `i` lies at input
//! coordinate `(i + 0.5) / s − 0.5`. Taps outside the input replicate the edge sample
//! (indices are clamped).
//!
//! Nodata (`NaN`, and any non-finite value) never enters the weights. Each output is
//!
//! ```text
//! out = Σ w_x·w_y·v / Σ w_x·w_y      over the taps whose value v is finite
//! ```
//!
//! computed separably: the horizontal pass carries a numerator and a weight-sum plane, the
//! vertical pass combines both, so the 2-D renormalisation is exact. When the valid weight
//! sum is negligible (`|Σ| < 1e-6`) the output is `NaN` (nodata). Bicubic with
//! renormalisation can overshoot; nothing is clamped, but an output is never infinite
//! (a non-finite quotient becomes `NaN`).
//!
//! Determinism: every output sample is a fixed function of its own taps, evaluated in a
//! fixed order, whatever window or block it is computed in. So [`upsample_window`] is
//! bit-identical to the same window of [`upsample`], and each block of [`upsample_blocks`]
//! is bit-identical to upsampling that block alone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Raster;

/// Valid weight sums below this (in absolute value) make the output nodata.
const MIN_WEIGHT: f32 = 1e-6;

/// The interpolation kernel of [`upsample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Linear interpolation along each axis (2 taps per axis).
    Bilinear,
    /// Keys cubic convolution with a = −0.5 (4 taps per axis), as GDAL's `cubic`.
    Bicubic,
}

impl Kernel {
    /// The configuration name (`"bilinear"`, `"bicubic"`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Bilinear => "bilinear",
            Kernel::Bicubic => "bicubic",
        }
    }

    /// Taps per axis.
    fn taps(self) -> usize {
        match self {
            Kernel::Bilinear => 2,
            Kernel::Bicubic => 4,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown kernel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resampling kernel {name:?} (expected \"bilinear\" or \"bicubic\")")]
pub struct UnknownKernel {
    /// The name that was given.
    pub name: String,
}

impl FromStr for Kernel {
    type Err = UnknownKernel;

    /// Parses `"bilinear"` or `"bicubic"` (ASCII case-insensitive).
    ///
    /// # Errors
    /// [`UnknownKernel`] for any other name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bilinear" => Ok(Kernel::Bilinear),
            "bicubic" => Ok(Kernel::Bicubic),
            _ => Err(UnknownKernel { name: s.to_owned() }),
        }
    }
}

/// Keys cubic convolution kernel with a = −0.5.
fn keys(d: f64) -> f64 {
    const A: f64 = -0.5;
    let d = d.abs();
    if d <= 1.0 {
        ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0
    } else if d < 2.0 {
        ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A
    } else {
        0.0
    }
}

/// Per-output-index taps along one axis: for output `j`, the source indices
/// `idx[j*ntaps..][..ntaps]` (absolute, already clamped) and their weights.
pub(crate) struct AxisTaps {
    ntaps: usize,
    idx: Vec<u32>,
    w: Vec<f32>,
    /// Per output, the weights folded from 0.0 in tap order: the weight sum of an all-valid
    /// neighbourhood, bit-identical to what the nodata-aware accumulation computes.
    wsum: Vec<f32>,
    /// Smallest and largest source index referenced (the span the pass reads).
    lo: usize,
    hi: usize,
}

impl AxisTaps {
    fn len(&self) -> usize {
        self.wsum.len()
    }

    fn from_fn(ntaps: usize, len: usize, mut f: impl FnMut(usize, &mut [u32], &mut [f32])) -> Self {
        let mut idx = vec![0u32; len * ntaps];
        let mut w = vec![0f32; len * ntaps];
        let mut wsum = Vec::with_capacity(len);
        for j in 0..len {
            let (ij, wj) = (
                &mut idx[j * ntaps..(j + 1) * ntaps],
                &mut w[j * ntaps..(j + 1) * ntaps],
            );
            f(j, ij, wj);
            wsum.push(wj.iter().fold(0.0f32, |acc, x| acc + *x));
        }
        let lo = idx.iter().copied().min().unwrap_or(0) as usize;
        let hi = idx.iter().copied().max().unwrap_or(0) as usize;
        AxisTaps {
            ntaps,
            idx,
            w,
            wsum,
            lo,
            hi,
        }
    }

    /// Upsampling taps for outputs `out_start..out_start + out_len` of a source span
    /// `span_start..span_start + n` (n ≥ 1) upsampled by `factor` (≥ 1), edges of the span
    /// replicated.
    pub(crate) fn upsample(
        span_start: usize,
        n: usize,
        factor: usize,
        kernel: Kernel,
        out_start: usize,
        out_len: usize,
    ) -> Self {
        let last = n.saturating_sub(1) as i64;
        let clamp = move |i: i64| (i.clamp(0, last) as usize + span_start) as u32;
        let s = factor as f64;
        Self::from_fn(kernel.taps(), out_len, |j, idx, w| {
            let x = ((out_start + j) as f64 + 0.5) / s - 0.5;
            let x0 = x.floor();
            let t = x - x0;
            let x0 = x0 as i64;
            match kernel {
                Kernel::Bilinear => {
                    idx[0] = clamp(x0);
                    idx[1] = clamp(x0 + 1);
                    w[0] = (1.0 - t) as f32;
                    w[1] = t as f32;
                }
                Kernel::Bicubic => {
                    for k in 0..4 {
                        let off = k as i64 - 1;
                        idx[k] = clamp(x0 + off);
                        w[k] = keys(t - off as f64) as f32;
                    }
                }
            }
        })
    }

    /// Convolution taps (`weights` centred, odd length) for outputs `0..n` of a source of
    /// length `n` (n ≥ 1), edges replicated.
    pub(crate) fn convolve(n: usize, weights: &[f32]) -> Self {
        let r = (weights.len() / 2) as i64;
        let last = n.saturating_sub(1) as i64;
        Self::from_fn(weights.len(), n, |j, idx, w| {
            for (k, (i, wk)) in idx.iter_mut().zip(w.iter_mut()).enumerate() {
                *i = (j as i64 + k as i64 - r).clamp(0, last) as u32;
                *wk = weights[k];
            }
        })
    }
}

/// Where the separable engine writes: `dst[offset + r * stride + c]` for the output
/// sample (c, r) of the pass.
pub(crate) struct Dest<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) offset: usize,
    pub(crate) stride: usize,
}

/// The horizontal pass of one source row: numerator and valid-weight sum per output column.
fn hpass(row: &[f32], xt: &AxisTaps, num: &mut [f32], den: &mut [f32]) {
    let clean = row[xt.lo..=xt.hi].iter().all(|v| v.is_finite());
    // Both branches compute bit-identical results on a clean row (the sum of weights in
    // tap order is `wsum`); the clean one only skips the per-tap validity test.
    match (xt.ntaps, clean) {
        (2, true) => hpass_clean::<2>(row, xt, num, den),
        (4, true) => hpass_clean::<4>(row, xt, num, den),
        (2, false) => hpass_nodata::<2>(row, xt, num, den),
        (4, false) => hpass_nodata::<4>(row, xt, num, den),
        _ => hpass_dyn(row, xt, num, den),
    }
}

fn hpass_clean<const N: usize>(row: &[f32], xt: &AxisTaps, num: &mut [f32], den: &mut [f32]) {
    den.copy_from_slice(&xt.wsum);
    for ((n, idx), w) in num
        .iter_mut()
        .zip(xt.idx.chunks_exact(N))
        .zip(xt.w.chunks_exact(N))
    {
        let mut acc = 0.0f32;
        for k in 0..N {
            acc += w[k] * row[idx[k] as usize];
        }
        *n = acc;
    }
}

fn hpass_nodata<const N: usize>(row: &[f32], xt: &AxisTaps, num: &mut [f32], den: &mut [f32]) {
    for (((n, d), idx), w) in num
        .iter_mut()
        .zip(den.iter_mut())
        .zip(xt.idx.chunks_exact(N))
        .zip(xt.w.chunks_exact(N))
    {
        let (mut an, mut ad) = (0.0f32, 0.0f32);
        for k in 0..N {
            let v = row[idx[k] as usize];
            if v.is_finite() {
                an += w[k] * v;
                ad += w[k];
            }
        }
        *n = an;
        *d = ad;
    }
}

fn hpass_dyn(row: &[f32], xt: &AxisTaps, num: &mut [f32], den: &mut [f32]) {
    let nt = xt.ntaps;
    for (((n, d), idx), w) in num
        .iter_mut()
        .zip(den.iter_mut())
        .zip(xt.idx.chunks_exact(nt))
        .zip(xt.w.chunks_exact(nt))
    {
        let (mut an, mut ad) = (0.0f32, 0.0f32);
        for (i, wk) in idx.iter().zip(w) {
            let v = row[*i as usize];
            if v.is_finite() {
                an += wk * v;
                ad += wk;
            }
        }
        *n = an;
        *d = ad;
    }
}

/// The renormalised output of a numerator and a valid-weight sum.
#[inline]
fn finish(n: f32, d: f32) -> f32 {
    if d.abs() < MIN_WEIGHT {
        return f32::NAN;
    }
    let v = n / d;
    if v.is_finite() {
        v
    } else {
        f32::NAN
    }
}

/// Runs the separable nodata-aware filter described in the module docs: output (c, r) of
/// the pass combines source rows `yt` taps of row r and columns `xt` taps of column c.
///
/// Horizontal results are kept in a ring of `yt.ntaps` rows: the taps of one output row
/// lie in an interval of `ntaps` consecutive source rows, so they occupy distinct slots,
/// and each source row is filtered once while output rows advance.
pub(crate) fn separable(src: &Raster<f32>, xt: &AxisTaps, yt: &AxisTaps, dst: Dest<'_>) {
    let (ow, oh) = (xt.len(), yt.len());
    if ow == 0 || oh == 0 {
        return;
    }
    let nt = yt.ntaps;
    let mut num = vec![0f32; nt * ow];
    let mut den = vec![0f32; nt * ow];
    let mut held = vec![usize::MAX; nt];
    let mut acc_n = vec![0f32; ow];
    let mut acc_d = vec![0f32; ow];
    for r in 0..oh {
        let taps = &yt.idx[r * nt..(r + 1) * nt];
        let ws = &yt.w[r * nt..(r + 1) * nt];
        for &y in taps {
            let y = y as usize;
            let slot = y % nt;
            if held[slot] != y {
                hpass(
                    src.row(y),
                    xt,
                    &mut num[slot * ow..(slot + 1) * ow],
                    &mut den[slot * ow..(slot + 1) * ow],
                );
                held[slot] = y;
            }
        }
        acc_n.fill(0.0);
        acc_d.fill(0.0);
        for (&y, &w) in taps.iter().zip(ws) {
            let slot = y as usize % nt;
            let (hn, hd) = (
                &num[slot * ow..(slot + 1) * ow],
                &den[slot * ow..(slot + 1) * ow],
            );
            for ((an, ad), (n, d)) in acc_n
                .iter_mut()
                .zip(acc_d.iter_mut())
                .zip(hn.iter().zip(hd))
            {
                *an += w * n;
                *ad += w * d;
            }
        }
        let start = dst.offset + r * dst.stride;
        for (o, (n, d)) in dst.data[start..start + ow]
            .iter_mut()
            .zip(acc_n.iter().zip(&acc_d))
        {
            *o = finish(*n, *d);
        }
    }
}

/// Upsamples `src` by an integer `factor` with `kernel` (see the module docs for the
/// geometry and the nodata rule). The output is `factor` times larger on each axis;
/// `factor` 0 gives an empty raster.
pub fn upsample(src: &Raster<f32>, factor: usize, kernel: Kernel) -> Raster<f32> {
    upsample_window(
        src,
        factor,
        kernel,
        0,
        0,
        src.width * factor,
        src.height * factor,
    )
}

/// Exactly the window (`out_col`, `out_row`, `out_w`, `out_h`) of
/// `upsample(src, factor, kernel)`, bit for bit, computed without the rest of the output
/// (it reads only the source rows and columns the window's taps touch).
///
/// A window reaching beyond the upsampled grid is evaluated with the same formula (taps
/// clamp to the edge). An empty source or `factor` 0 has no valid input: the window is all
/// `NaN`.
pub fn upsample_window(
    src: &Raster<f32>,
    factor: usize,
    kernel: Kernel,
    out_col: usize,
    out_row: usize,
    out_w: usize,
    out_h: usize,
) -> Raster<f32> {
    let mut out = Raster::filled(out_w, out_h, f32::NAN);
    if src.width == 0 || src.height == 0 || factor == 0 {
        return out;
    }
    let xt = AxisTaps::upsample(0, src.width, factor, kernel, out_col, out_w);
    let yt = AxisTaps::upsample(0, src.height, factor, kernel, out_row, out_h);
    separable(
        src,
        &xt,
        &yt,
        Dest {
            data: &mut out.data,
            offset: 0,
            stride: out_w,
        },
    );
    out
}

/// Upsamples `src` block by block, BigEarthNet patch geometry: each `block`×`block` block
/// (partial at the right and bottom edges) is upsampled on its own with its own edges
/// replicated, exactly as `upsample(&src.window(block...), factor, kernel)` would, and the
/// results are laid side by side. The output is `factor` times larger on each axis.
/// `block` 0 means one block (plain [`upsample`]).
pub fn upsample_blocks(
    src: &Raster<f32>,
    factor: usize,
    block: usize,
    kernel: Kernel,
) -> Raster<f32> {
    if block == 0 {
        return upsample(src, factor, kernel);
    }
    let (ow, oh) = (src.width * factor, src.height * factor);
    let mut out = Raster::filled(ow, oh, f32::NAN);
    if ow == 0 || oh == 0 {
        return out;
    }
    // Full blocks share their weights; only the source span differs, so each block column
    // (and block row) gets its own taps, computed once.
    let spans = |n: usize| -> Vec<(usize, usize)> {
        (0..n)
            .step_by(block)
            .map(|s| (s, block.min(n - s)))
            .collect()
    };
    let xts: Vec<(usize, AxisTaps)> = spans(src.width)
        .into_iter()
        .map(|(s, n)| (s, AxisTaps::upsample(s, n, factor, kernel, 0, n * factor)))
        .collect();
    for (ys, yn) in spans(src.height) {
        let yt = AxisTaps::upsample(ys, yn, factor, kernel, 0, yn * factor);
        for (xs, xt) in &xts {
            separable(
                src,
                xt,
                &yt,
                Dest {
                    data: &mut out.data,
                    offset: ys * factor * ow + xs * factor,
                    stride: ow,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ramp(w: usize, h: usize) -> Raster<f32> {
        let data = (0..w * h)
            .map(|i| (i % w) as f32 * 3.0 + (i / w) as f32 * 7.0 + 100.0)
            .collect();
        Raster::from_vec(w, h, data).unwrap()
    }

    #[test]
    fn kernel_names_round_trip() {
        for k in [Kernel::Bilinear, Kernel::Bicubic] {
            assert_eq!(k.to_string().parse::<Kernel>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<Kernel>(&json).unwrap(), k);
        }
        assert_eq!("BiCubic".parse::<Kernel>().unwrap(), Kernel::Bicubic);
        let err = "lanczos".parse::<Kernel>().unwrap_err();
        assert!(err.to_string().contains("lanczos"));
    }

    #[test]
    fn keys_weights_partition_unity() {
        for t in [0.0, 0.25, 0.5, 0.75, 1.0 / 6.0, 0.9] {
            let s: f64 = (-1..=2).map(|o| keys(t - f64::from(o))).sum();
            assert!((s - 1.0).abs() < 1e-12, "t={t}: {s}");
        }
        assert_eq!(keys(0.0), 1.0);
        assert_eq!(keys(1.0), 0.0);
        assert_eq!(keys(2.0), 0.0);
    }

    #[test]
    fn constant_stays_constant() {
        let src = Raster::filled(7, 5, 1234.5f32);
        for k in [Kernel::Bilinear, Kernel::Bicubic] {
            for f in [1, 2, 3, 6] {
                let out = upsample(&src, f, k);
                assert_eq!((out.width, out.height), (7 * f, 5 * f));
                for v in &out.data {
                    assert!((v - 1234.5).abs() < 1e-3, "{k} x{f}: {v}");
                }
            }
        }
    }

    #[test]
    fn bilinear_reproduces_a_ramp_in_the_interior() {
        let src = ramp(8, 6);
        for f in [2, 3, 6] {
            let out = upsample(&src, f, Kernel::Bilinear);
            // Interior: the output centre maps inside [0, n-1] on both axes.
            for r in 0..out.height {
                for c in 0..out.width {
                    let x = (c as f64 + 0.5) / f as f64 - 0.5;
                    let y = (r as f64 + 0.5) / f as f64 - 0.5;
                    if x < 0.0 || y < 0.0 || x > 7.0 || y > 5.0 {
                        continue;
                    }
                    let want = x * 3.0 + y * 7.0 + 100.0;
                    let got = f64::from(out.get(c, r));
                    assert!((got - want).abs() < 1e-3, "x{f} ({c},{r}): {got} vs {want}");
                }
            }
        }
        // Bicubic reproduces linear functions too, away from the replicated edges.
        let out = upsample(&src, 2, Kernel::Bicubic);
        for r in 4..out.height - 4 {
            for c in 4..out.width - 4 {
                let want = ((c as f64 + 0.5) / 2.0 - 0.5) * 3.0
                    + ((r as f64 + 0.5) / 2.0 - 0.5) * 7.0
                    + 100.0;
                assert!((f64::from(out.get(c, r)) - want).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn edges_are_replicated() {
        let src = Raster::from_vec(3, 1, vec![10.0f32, 20.0, 40.0]).unwrap();
        let out = upsample(&src, 2, Kernel::Bilinear);
        // x = -0.25 clamps to the first sample; x = 2.25 to the last.
        assert_eq!(out.row(0), &[10.0, 12.5, 17.5, 25.0, 35.0, 40.0]);
    }

    #[test]
    fn isolated_nan_stays_local() {
        let mut src = Raster::filled(9, 9, 500.0f32);
        *src.get_mut(4, 4) = f32::NAN;
        for (k, reach) in [(Kernel::Bilinear, 1usize), (Kernel::Bicubic, 2)] {
            let out = upsample(&src, 2, k);
            for r in 0..18 {
                for c in 0..18 {
                    let v = out.get(c, r);
                    // Renormalisation keeps a constant constant, with no NaN anywhere.
                    assert!((v - 500.0).abs() < 1e-3, "{k} ({c},{r}) = {v}");
                }
            }
            // A non-constant neighbourhood: only outputs whose taps include the NaN change.
            let mut g = ramp(9, 9);
            let base = upsample(&g, 2, k);
            *g.get_mut(4, 4) = f32::NAN;
            let holed = upsample(&g, 2, k);
            for r in 0..18usize {
                for c in 0..18usize {
                    let (a, b) = (base.get(c, r), holed.get(c, r));
                    assert!(b.is_finite(), "{k} ({c},{r})");
                    let x0 = ((c as f64 + 0.5) / 2.0 - 0.5).floor() as i64;
                    let y0 = ((r as f64 + 0.5) / 2.0 - 0.5).floor() as i64;
                    let near = |z0: i64| (z0 - reach as i64 + 1..=z0 + reach as i64).contains(&4);
                    if !(near(x0) && near(y0)) {
                        assert_eq!(a, b, "{k} ({c},{r}) changed far from the NaN");
                    }
                }
            }
        }
    }

    #[test]
    fn all_nan_neighbourhood_is_nodata() {
        let mut src = Raster::filled(10, 10, 300.0f32);
        for r in 0..6 {
            for c in 0..6 {
                *src.get_mut(c, r) = f32::NAN;
            }
        }
        for k in [Kernel::Bilinear, Kernel::Bicubic] {
            let out = upsample(&src, 2, k);
            assert!(out.get(0, 0).is_nan(), "{k}");
            assert!(out.get(5, 5).is_nan(), "{k}");
            assert!(out.get(19, 19).is_finite(), "{k}");
            assert!(out.data.iter().all(|v| !v.is_infinite()));
        }
        let empty = Raster::<f32>::filled(0, 0, 0.0);
        assert!(upsample(&empty, 2, Kernel::Bilinear).data.is_empty());
        assert!(upsample_window(&empty, 2, Kernel::Bicubic, 0, 0, 2, 2)
            .data
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn blocks_match_per_block_upsampling() {
        let src = ramp(13, 8);
        for k in [Kernel::Bilinear, Kernel::Bicubic] {
            let out = upsample_blocks(&src, 3, 5, k);
            assert_eq!((out.width, out.height), (39, 24));
            for br in (0..8).step_by(5) {
                for bc in (0..13).step_by(5) {
                    let (bw, bh) = (5.min(13 - bc), 5.min(8 - br));
                    let alone = upsample(&src.window(bc, br, bw, bh), 3, k);
                    let got = out.window(bc * 3, br * 3, bw * 3, bh * 3);
                    assert_eq!(got.data, alone.data, "{k} block ({bc},{br})");
                }
            }
            // Blocks differ from the whole-image result at block seams.
            assert_ne!(out.data, upsample(&src, 3, k).data);
        }
    }

    fn arb_raster() -> impl Strategy<Value = Raster<f32>> {
        (1usize..12, 1usize..12).prop_flat_map(|(w, h)| {
            proptest::collection::vec(
                prop_oneof![8 => 0.0f32..10000.0, 1 => Just(f32::NAN)],
                w * h,
            )
            .prop_map(move |d| Raster::from_vec(w, h, d).unwrap())
        })
    }

    proptest! {
        #[test]
        fn window_is_bit_identical_to_full(
            src in arb_raster(),
            factor in 1usize..7,
            bicubic in any::<bool>(),
            a in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
        ) {
            let k = if bicubic { Kernel::Bicubic } else { Kernel::Bilinear };
            let full = upsample(&src, factor, k);
            let (fw, fh) = (full.width, full.height);
            let col = (a.0 * fw as f64) as usize;
            let row = (a.1 * fh as f64) as usize;
            let w = 1 + (a.2 * (fw - col - 1) as f64) as usize;
            let h = 1 + (a.3 * (fh - row - 1) as f64) as usize;
            let win = upsample_window(&src, factor, k, col, row, w, h);
            let want = full.window(col, row, w, h);
            prop_assert_eq!(win.data.len(), want.data.len());
            for (x, y) in win.data.iter().zip(&want.data) {
                prop_assert_eq!(x.to_bits(), y.to_bits());
            }
            prop_assert!(full.data.iter().all(|v| !v.is_infinite()));
        }
    }
}
