//! Radiometric conversions between Sentinel-2 digital numbers and what models see.
//!
//! Every model sees *harmonised DN* (DESIGN.md "Radiometry"): DN + the product's per-band
//! offset (`RADIO_ADD_OFFSET` / `BOA_ADD_OFFSET`, −1000 from baseline 04.00), i.e.
//! reflectance × 10000.
//!
//! Invariants kept by every function here:
//! - DN 0 ([`NODATA_DN`]) is nodata and stays nodata: 0 in `u16` rasters, `NaN` in `f32`
//!   rasters, and nothing else ever becomes 0.
//! - DN 65535 ([`SATURATED_DN`]) is saturation and stays 65535 through harmonisation;
//!   no other value becomes 65535 (valid values are clamped to 1..=65534).
//! - Nothing wraps: out-of-range values clamp.

use super::Raster;
use crate::granule::{NODATA_DN, SATURATED_DN};

/// The largest harmonised DN a valid, unsaturated pixel can have (65535 is reserved for
/// saturation).
pub const MAX_VALID_DN: u16 = SATURATED_DN - 1;

/// The smallest harmonised DN a valid pixel can have (0 is reserved for nodata).
pub const MIN_VALID_DN: u16 = NODATA_DN + 1;

/// Harmonised DN = DN + `offset`, keeping nodata and saturation.
///
/// - DN 0 (nodata) stays 0 and DN 65535 (saturated) stays 65535.
/// - Any other result is clamped to 1..=65534: a result ≤ 0 becomes 1 so that 0 keeps
///   meaning nodata, and 65535 stays reserved for saturation.
/// - `offset` is rounded to the nearest integer (offsets are integers in practice, e.g.
///   −1000); a non-finite offset is treated as 0.
pub fn harmonise(dn: &Raster<u16>, offset: f64) -> Raster<u16> {
    let mut out = dn.clone();
    harmonise_in_place(&mut out, offset);
    out
}

/// [`harmonise`] without the copy.
pub fn harmonise_in_place(dn: &mut Raster<u16>, offset: f64) {
    let offset = integer_offset(offset);
    if offset == 0 {
        // Every value is already in 0..=65535 and 0 / 65535 keep their meaning.
        return;
    }
    for v in &mut dn.data {
        *v = harmonise_one(*v, offset);
    }
}

/// The offset as an integer in a range where `i32` arithmetic on a `u16` cannot overflow.
fn integer_offset(offset: f64) -> i32 {
    if offset.is_finite() {
        // Anything beyond ±65535 saturates every value anyway.
        offset.round().clamp(-70_000.0, 70_000.0) as i32
    } else {
        0
    }
}

#[inline]
fn harmonise_one(v: u16, offset: i32) -> u16 {
    if v == NODATA_DN || v == SATURATED_DN {
        v
    } else {
        (i32::from(v) + offset).clamp(i32::from(MIN_VALID_DN), i32::from(MAX_VALID_DN)) as u16
    }
}

/// Harmonised DN as `f32` for resampling and inference: nodata (0) becomes `NaN`, every
/// other value keeps its value (65535 stays 65535.0 — saturation is tracked by
/// [`saturated_mask`], not by the float value).
pub fn to_f32(harmonised: &Raster<u16>) -> Raster<f32> {
    harmonised.map(|v| {
        if v == NODATA_DN {
            f32::NAN
        } else {
            f32::from(v)
        }
    })
}

/// `true` where the pixel holds data (DN ≠ 0).
pub fn valid_mask(dn: &Raster<u16>) -> Raster<bool> {
    dn.map(|v| v != NODATA_DN)
}

/// `true` where the pixel is saturated (DN = 65535).
pub fn saturated_mask(dn: &Raster<u16>) -> Raster<bool> {
    dn.map(|v| v == SATURATED_DN)
}

/// A model output (harmonised DN as `f32`) back to a product `u16`.
///
/// `NaN` becomes 0 (nodata). Any other value is rounded to the nearest integer and clamped
/// to 1..=65534: a value ≤ 0 becomes 1 (0 means nodata), a very high reflectance clamps at
/// 65534 (65535 means saturated and is set only from the input's saturation mask, see
/// [`mark_saturated`]). `±Inf` clamps like any other out-of-range value.
#[inline]
pub fn to_u16(value: f32) -> u16 {
    if value.is_nan() {
        NODATA_DN
    } else {
        // `as` from f32 saturates, and the clamp keeps the reserved values out.
        value
            .round()
            .clamp(f32::from(MIN_VALID_DN), f32::from(MAX_VALID_DN)) as u16
    }
}

/// [`to_u16`] over a whole raster.
pub fn raster_to_u16(values: &Raster<f32>) -> Raster<u16> {
    values.map(to_u16)
}

/// Sets 65535 (saturated) on every pixel of `out` covered by a saturated pixel of
/// `native_dn`, a band on a grid `factor` times coarser than `out`: a saturated 20 m pixel
/// marks its 2×2 block of 10 m pixels, a 60 m pixel its 6×6 block (DESIGN.md
/// "Radiometry"). Blocks that fall partly outside `out` are clipped; `factor` 0 marks
/// nothing.
pub fn mark_saturated(out: &mut Raster<u16>, native_dn: &Raster<u16>, factor: usize) {
    if factor == 0 {
        return;
    }
    for r in 0..native_dn.height {
        let row = native_dn.row(r);
        for (c, _) in row.iter().enumerate().filter(|(_, v)| **v == SATURATED_DN) {
            for rr in (r * factor..(r + 1) * factor).take_while(|rr| *rr < out.height) {
                let c0 = (c * factor).min(out.width);
                let c1 = ((c + 1) * factor).min(out.width);
                out.data[rr * out.width + c0..rr * out.width + c1].fill(SATURATED_DN);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(data: Vec<u16>) -> Raster<u16> {
        Raster::from_vec(data.len(), 1, data).unwrap()
    }

    #[test]
    fn harmonise_keeps_nodata_and_saturation() {
        let h = harmonise(&r(vec![0, 1, 999, 1000, 1001, 5000, 65534, 65535]), -1000.0);
        assert_eq!(h.data, vec![0, 1, 1, 1, 1, 4000, 64534, 65535]);
    }

    #[test]
    fn harmonise_clamps_high_and_rounds_offset() {
        let h = harmonise(&r(vec![0, 10, 65000, 65535]), 999.6);
        assert_eq!(h.data, vec![0, 1010, 65534, 65535]);
        let same = harmonise(&r(vec![0, 10, 65535]), 0.0);
        assert_eq!(same.data, vec![0, 10, 65535]);
        let nan = harmonise(&r(vec![0, 10, 65535]), f64::NAN);
        assert_eq!(nan.data, vec![0, 10, 65535]);
        let huge = harmonise(&r(vec![0, 10, 65535]), -1e12);
        assert_eq!(huge.data, vec![0, 1, 65535]);
    }

    #[test]
    fn to_f32_maps_nodata_to_nan() {
        let f = to_f32(&r(vec![0, 1, 65535]));
        assert!(f.data[0].is_nan());
        assert_eq!(&f.data[1..], &[1.0, 65535.0]);
        assert_eq!(valid_mask(&r(vec![0, 3])).data, vec![false, true]);
        assert_eq!(saturated_mask(&r(vec![65535, 3])).data, vec![true, false]);
    }

    #[test]
    fn to_u16_never_wraps() {
        assert_eq!(to_u16(f32::NAN), 0);
        assert_eq!(to_u16(-5.0), 1);
        assert_eq!(to_u16(0.0), 1);
        assert_eq!(to_u16(0.4), 1);
        assert_eq!(to_u16(1.5), 2);
        assert_eq!(to_u16(1234.49), 1234);
        assert_eq!(to_u16(65534.6), 65534);
        assert_eq!(to_u16(1e9), 65534);
        assert_eq!(to_u16(f32::INFINITY), 65534);
        assert_eq!(to_u16(f32::NEG_INFINITY), 1);
    }

    #[test]
    fn saturation_marks_whole_blocks() {
        let native = Raster::from_vec(2, 2, vec![1, 65535, 1, 1]).unwrap();
        let mut out = Raster::filled(3, 3, 7u16);
        mark_saturated(&mut out, &native, 2);
        assert_eq!(out.data, vec![7, 7, 65535, 7, 7, 65535, 7, 7, 7]);
    }
}
