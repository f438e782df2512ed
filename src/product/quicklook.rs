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
    let mut q = Quicklook::new(w, h, max_side)?;
    q.push_rows(&red.data, &green.data, &blue.data)?;
    q.write(path)
}

/// A quicklook built from rows as they stream past, top to bottom: only the sums of
/// the current row of blocks are held, so any number of rows can be pushed at a time.
/// [`write_quicklook`] is this with every row at once.
#[derive(Debug)]
pub struct Quicklook {
    width: usize,
    height: usize,
    block: usize,
    ow: usize,
    oh: usize,
    /// Rows pushed so far.
    rows: usize,
    /// Per output pixel of the current block row: channel sums and valid pixel count.
    sums: Vec<([u64; 3], u64)>,
    rgba: Vec<u8>,
}

impl Quicklook {
    /// A quicklook of a `width`×`height` raster whose longest side is at most `max_side`.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] for an empty raster, `max_side` 0, or a PNG too large.
    pub fn new(width: usize, height: usize, max_side: usize) -> Result<Quicklook, ProductError> {
        if width == 0 || height == 0 || max_side == 0 {
            return Err(ProductError::invalid(format!(
                "quicklook of a {width}x{height} raster at max side {max_side}"
            )));
        }
        let block = width.max(height).div_ceil(max_side);
        let (ow, oh) = (width.div_ceil(block), height.div_ceil(block));
        if ow > u32::MAX as usize || oh > u32::MAX as usize {
            return Err(ProductError::invalid("quicklook too large for PNG"));
        }
        Ok(Quicklook {
            width,
            height,
            block,
            ow,
            oh,
            rows: 0,
            sums: vec![([0; 3], 0); ow],
            rgba: Vec::with_capacity(ow * oh * 4),
        })
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds the next rows of the three bands (row-major, the full width each).
    ///
    /// # Errors
    /// [`ProductError::Invalid`] when the slices differ in length, are not whole rows,
    /// or run past the raster's height.
    pub fn push_rows(
        &mut self,
        red: &[u16],
        green: &[u16],
        blue: &[u16],
    ) -> Result<(), ProductError> {
        let w = self.width;
        if green.len() != red.len() || blue.len() != red.len() || red.len() % w != 0 {
            return Err(ProductError::invalid(format!(
                "quicklook rows of {}, {} and {} samples for a width of {w}",
                red.len(),
                green.len(),
                blue.len()
            )));
        }
        let n = red.len() / w;
        if self.rows + n > self.height {
            return Err(ProductError::invalid(format!(
                "quicklook rows {}..{} beyond its height {}",
                self.rows,
                self.rows + n,
                self.height
            )));
        }
        for r in 0..n {
            let i0 = r * w;
            for x in 0..w {
                let px = [red[i0 + x], green[i0 + x], blue[i0 + x]];
                if px.contains(&0) {
                    continue;
                }
                let (sum, count) = &mut self.sums[x / self.block];
                for (s, v) in sum.iter_mut().zip(px) {
                    *s += u64::from(v);
                }
                *count += 1;
            }
            self.rows += 1;
            if self.rows % self.block == 0 || self.rows == self.height {
                for (sum, count) in &mut self.sums {
                    if *count == 0 {
                        self.rgba.extend_from_slice(&[0, 0, 0, 0]);
                    } else {
                        for s in *sum {
                            self.rgba.push(stretch(s as f64 / *count as f64));
                        }
                        self.rgba.push(255);
                    }
                    *sum = [0; 3];
                    *count = 0;
                }
            }
        }
        Ok(())
    }

    /// Writes the PNG.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] when rows are missing; [`ProductError::Io`] /
    /// [`ProductError::Png`] when writing fails.
    pub fn write(self, path: &Path) -> Result<(), ProductError> {
        if self.rows != self.height || self.rgba.len() != self.ow * self.oh * 4 {
            return Err(ProductError::invalid(format!(
                "quicklook has {} of {} rows",
                self.rows, self.height
            )));
        }
        let png_err = |source| ProductError::Png {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(|e| ProductError::io(path, e))?;
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(file),
            self.ow as u32,
            self.oh as u32,
        );
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&self.rgba).map_err(png_err)?;
        writer.finish().map_err(png_err)
    }
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

    fn render(r: &[u16], w: usize, h: usize, max_side: usize, step: usize) -> Vec<u8> {
        let mut q = Quicklook::new(w, h, max_side).unwrap();
        for rows in r.chunks(step * w) {
            q.push_rows(rows, rows, rows).unwrap();
        }
        assert_eq!(q.rows(), h);
        q.rgba
    }

    #[test]
    fn blocks_with_partial_nodata_use_the_valid_pixels() {
        assert_eq!(render(&[3000, 0], 2, 1, 1, 1), vec![255, 255, 255, 255]);
        assert_eq!(render(&[0, 0], 2, 1, 1, 1), vec![0, 0, 0, 0]);
    }

    #[test]
    fn rows_pushed_in_any_steps_give_the_same_image() {
        let (w, h) = (23, 17);
        let r: Vec<u16> = (0..w * h).map(|i| (i * 37 % 3100) as u16).collect();
        let whole = render(&r, w, h, 5, h);
        assert_eq!(whole.len(), 5 * 4 * 4, "blocks of 5: 5 x 4 pixels");
        for step in [1, 2, 5, 7] {
            assert_eq!(
                render(&r, w, h, 5, step),
                whole,
                "rows pushed {step} at a time"
            );
        }
        let mut q = Quicklook::new(w, h, 5).unwrap();
        assert!(q.push_rows(&r[..w + 1], &r[..w + 1], &r[..w + 1]).is_err());
        assert!(
            q.write(Path::new("/nonexistent/q.png")).is_err(),
            "rows missing"
        );
    }
}
