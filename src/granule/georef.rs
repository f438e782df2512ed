//! Georeferencing: a projected CRS (EPSG code) plus a north-up affine transform.
//!
//! Sentinel-2 tiles are always north-up UTM grids, so [`GeoTransform`] has no rotation
//! terms; a GeoTIFF with rotation is rejected by the reader rather than silently
//! misplaced.

use serde::{Deserialize, Serialize};

/// North-up affine transform from pixel (col, row) to map (x, y), pixel-corner based.
///
/// `x = origin_x + col * pixel_width`, `y = origin_y + row * pixel_height`, where
/// (`origin_x`, `origin_y`) is the outer upper-left corner of pixel (0, 0) and
/// `pixel_height` is negative for north-up images (as in GDAL).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoTransform {
    /// Map x of the upper-left corner of the upper-left pixel (metres, easting).
    pub origin_x: f64,
    /// Map y of the upper-left corner of the upper-left pixel (metres, northing).
    pub origin_y: f64,
    /// Pixel width in map units (> 0).
    pub pixel_width: f64,
    /// Pixel height in map units (< 0 for north-up).
    pub pixel_height: f64,
}

impl GeoTransform {
    /// GDAL's six coefficients: `[origin_x, pixel_width, 0, origin_y, 0, pixel_height]`.
    pub fn to_gdal(&self) -> [f64; 6] {
        [
            self.origin_x,
            self.pixel_width,
            0.0,
            self.origin_y,
            0.0,
            self.pixel_height,
        ]
    }

    /// The STAC `proj:transform` (row-major affine, first two rows):
    /// `[pixel_width, 0, origin_x, 0, pixel_height, origin_y]`.
    pub fn to_stac(&self) -> [f64; 6] {
        [
            self.pixel_width,
            0.0,
            self.origin_x,
            0.0,
            self.pixel_height,
            self.origin_y,
        ]
    }

    /// Map coordinates of the pixel corner (col, row), fractional allowed.
    pub fn apply(&self, col: f64, row: f64) -> (f64, f64) {
        (
            self.origin_x + col * self.pixel_width,
            self.origin_y + row * self.pixel_height,
        )
    }

    /// The same grid with pixels `factor` times smaller (finer) or larger (`factor` > 1
    /// makes pixels larger when used with [`GeoTransform::coarsened`]).
    pub fn refined(&self, factor: usize) -> GeoTransform {
        GeoTransform {
            pixel_width: self.pixel_width / factor as f64,
            pixel_height: self.pixel_height / factor as f64,
            ..*self
        }
    }

    /// The same origin with pixels `factor` times larger.
    pub fn coarsened(&self, factor: usize) -> GeoTransform {
        GeoTransform {
            pixel_width: self.pixel_width * factor as f64,
            pixel_height: self.pixel_height * factor as f64,
            ..*self
        }
    }

    /// The transform of a window starting at pixel (col, row).
    pub fn offset(&self, col: usize, row: usize) -> GeoTransform {
        let (x, y) = self.apply(col as f64, row as f64);
        GeoTransform {
            origin_x: x,
            origin_y: y,
            ..*self
        }
    }
}

/// Where a raster lies on Earth: CRS, transform and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoRef {
    /// EPSG code of the projected CRS (326xx / 327xx for Sentinel-2 UTM tiles).
    pub epsg: u32,
    /// Pixel-to-map transform.
    pub transform: GeoTransform,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl GeoRef {
    /// Map-coordinate bounds `(min_x, min_y, max_x, max_y)`.
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        let (x0, y0) = self.transform.apply(0.0, 0.0);
        let (x1, y1) = self.transform.apply(self.width as f64, self.height as f64);
        (x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1))
    }

    /// True when `other` is the same grid up to `tol` map units at the corners.
    pub fn same_grid(&self, other: &GeoRef, tol: f64) -> bool {
        self.epsg == other.epsg
            && self.width == other.width
            && self.height == other.height
            && (self.transform.origin_x - other.transform.origin_x).abs() <= tol
            && (self.transform.origin_y - other.transform.origin_y).abs() <= tol
            && (self.transform.pixel_width - other.transform.pixel_width).abs() <= tol
            && (self.transform.pixel_height - other.transform.pixel_height).abs() <= tol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdal_and_stac_orders_spell_the_same_transform() {
        let t = GeoTransform {
            origin_x: 300000.0,
            origin_y: 6200040.0,
            pixel_width: 10.0,
            pixel_height: -10.0,
        };
        assert_eq!(t.to_gdal(), [300000.0, 10.0, 0.0, 6200040.0, 0.0, -10.0]);
        assert_eq!(t.to_stac(), [10.0, 0.0, 300000.0, 0.0, -10.0, 6200040.0]);
        assert_eq!(t.apply(600.0, 600.0), (306000.0, 6194040.0));
        assert_eq!(t.coarsened(2).pixel_width, 20.0);
        assert_eq!(t.offset(10, 20).origin_y, 6200040.0 - 200.0);
    }
}
