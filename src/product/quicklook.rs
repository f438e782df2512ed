//! The product's `quicklook.png`: a small true-colour RGBA preview.
//!
//! - Downsampling: an integer block mean, the block side being the smallest integer
//!   that brings the longest side to at most `max_side`. A pixel counts only when all
//!   three bands are valid (DN ≠ 0); a block with no valid pixel is transparent.
//! - Stretch: harmonised DN 0..3000 (reflectance 0..0.3, where almost all land lies)
//!   maps linearly to 0..1, clamped, then a display gamma of 1/2.2 brightens the dark
//!   vegetation and water that dominate Sentinel-2 scenes: `255 · (v/3000)^(1/2.2)`.
//!   Saturated pixels (65535) come out white.
//! - Alpha: 255 for data, 0 for nodata.

use std::path::Path;

use super::ProductError;
use crate::raster::Raster;

/// Harmonised DN shown as full brightness.
pub const STRETCH_MAX_DN: f64 = 3000.0;
/// Display gamma applied after the linear stretch.
pub const GAMMA: f64 = 1.0 / 2.2;

/// Writes an RGBA PNG quicklook of `red`, `green`, `blue` (harmonised DN, 0 = nodata)
/// whose longest side is at most `max_side`.
///
/// # Errors
/// [`ProductError::Invalid`] when the bands differ in size, are empty, or `max_side`
/// is 0; [`ProductError::Io`] / [`ProductError::Png`] when writing fails.
pub fn write_quicklook(
    path: &Path,
    red: &Raster<u16>,
    green: &Raster<u16>,
    blue: &Raster<u16>,
    max_side: usize,
) -> Result<(), ProductError> {
    let (w, h) = (red.width, red.height);
    if [green, blue].iter().any(|b| b.width != w || b.height != h)
        || [red, green, blue].iter().any(|b| b.data.len() != w * h)
    {
        return Err(ProductError::invalid(format!(
            "quicklook bands differ in size: {}x{}, {}x{}, {}x{}",
            w, h, green.width, green.height, blue.width, blue.height
        )));
    }
    if w == 0 || h == 0 || max_side == 0 {
        return Err(ProductError::invalid(format!(
            "quicklook of a {w}x{h} raster at max side {max_side}"
        )));
    }
    let block = w.max(h).div_ceil(max_side);
    let (ow, oh) = (w.div_ceil(block), h.div_ceil(block));
    if ow > u32::MAX as usize || oh > u32::MAX as usize {
        return Err(ProductError::invalid("quicklook too large for PNG"));
    }
    let rgba = render(red, green, blue, block, ow, oh);

    let png_err = |source| ProductError::Png {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(|e| ProductError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), ow as u32, oh as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(&rgba).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

fn render(
    red: &Raster<u16>,
    green: &Raster<u16>,
    blue: &Raster<u16>,
    block: usize,
    ow: usize,
    oh: usize,
) -> Vec<u8> {
    let w = red.width;
    let mut rgba = Vec::with_capacity(ow * oh * 4);
    for oy in 0..oh {
        let rows = oy * block..((oy + 1) * block).min(red.height);
        for ox in 0..ow {
            let cols = ox * block..((ox + 1) * block).min(w);
            let mut sum = [0u64; 3];
            let mut n = 0u64;
            for y in rows.clone() {
                for x in cols.clone() {
                    let i = y * w + x;
                    let px = [red.data[i], green.data[i], blue.data[i]];
                    if px.contains(&0) {
                        continue;
                    }
                    for (s, v) in sum.iter_mut().zip(px) {
                        *s += u64::from(v);
                    }
                    n += 1;
                }
            }
            if n == 0 {
                rgba.extend_from_slice(&[0, 0, 0, 0]);
            } else {
                for s in sum {
                    rgba.push(stretch(s as f64 / n as f64));
                }
                rgba.push(255);
            }
        }
    }
    rgba
}

/// Harmonised DN → display byte (see the module docs).
fn stretch(dn: f64) -> u8 {
    let v = (dn / STRETCH_MAX_DN).clamp(0.0, 1.0);
    (255.0 * v.powf(GAMMA)).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_is_monotone_and_saturates() {
        assert_eq!(stretch(0.0), 0);
        assert_eq!(stretch(3000.0), 255);
        assert_eq!(stretch(65535.0), 255);
        assert!(stretch(100.0) < stretch(200.0));
        // gamma brightens: 10 % of the range is well above 10 % of 255
        assert!(stretch(300.0) > 80);
    }

    #[test]
    fn blocks_with_partial_nodata_use_the_valid_pixels() {
        let r = Raster::from_vec(2, 1, vec![3000, 0]).unwrap();
        let out = render(&r, &r, &r, 2, 1, 1);
        assert_eq!(out, vec![255, 255, 255, 255]);
        let z = Raster::filled(2, 1, 0u16);
        assert_eq!(render(&z, &z, &z, 2, 1, 1), vec![0, 0, 0, 0]);
    }
}
