//! A granule in harmonised DN: the input of every stage.
//!
//! Bands are decoded one at a time and harmonised immediately (DN + offset, 0 stays
//! nodata, 65535 stays saturated), so a full tile costs its bands once as `u16` (about
//! 1.4 GB for 12 bands) and never as `f32`. Float windows are cut per tile or patch.

use std::collections::BTreeMap;

use crate::granule::{
    check_grids, Band, CloudMask, GeoRef, GranuleSource, Resolution, NODATA_DN, SATURATED_DN,
};
use crate::raster::radiometry::{harmonise, to_f32};
use crate::raster::resample::{upsample, upsample_window, Kernel};
use crate::raster::tiling::Rect;
use crate::raster::Raster;

use super::PipelineError;

/// Extra low-resolution pixels cut around a window before upsampling it, so that the
/// window's result equals the same window of a whole-image upsampling: bicubic reads two
/// taps on each side.
const UPSAMPLE_MARGIN: usize = 3;

/// What a band's pixels have held so far: an all-nodata or all-saturated band is refused
/// ([`PipelineError::NoValidPixels`]) rather than carried through every stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    nodata: bool,
    saturated: bool,
    valid: bool,
}

impl Validity {
    /// Takes `data` into account.
    pub fn observe(&mut self, data: &[u16]) {
        if self.valid {
            return;
        }
        for &v in data {
            match v {
                NODATA_DN => self.nodata = true,
                SATURATED_DN => self.saturated = true,
                _ => {
                    self.valid = true;
                    return;
                }
            }
        }
    }

    /// Merges what another part of the band held.
    pub fn merge(&mut self, other: Validity) {
        self.nodata |= other.nodata;
        self.saturated |= other.saturated;
        self.valid |= other.valid;
    }

    /// [`PipelineError::NoValidPixels`] unless some pixel observed was valid.
    ///
    /// # Errors
    /// As above, saying whether the band was nodata, saturated or both.
    pub fn check(&self, id: &str, band: Band) -> Result<(), PipelineError> {
        if self.valid {
            return Ok(());
        }
        let what = match (self.nodata, self.saturated) {
            (true, false) => "nodata (DN 0)",
            (false, true) => "saturated (DN 65535)",
            _ => "nodata (DN 0) or saturated (DN 65535)",
        };
        Err(PipelineError::NoValidPixels {
            id: id.to_string(),
            band,
            what,
        })
    }
}

/// Checks the bands' grids against each other and returns the granule's 10 m grid: a
/// 10 m band's, else one derived from a coarser band (only coarse bands were asked
/// for), else the metadata's. Shared by [`Scene::load`] and the streaming reader.
///
/// # Errors
/// A grid mismatch, or no band and no 10 m grid in the metadata.
pub(crate) fn checked_grid_10m(
    source: &GranuleSource,
    grids: &[(Band, GeoRef)],
) -> Result<GeoRef, PipelineError> {
    check_grids(&source.id, grids)?;
    grids
        .iter()
        .find(|(b, _)| b.resolution() == Resolution::R10)
        .map(|(_, g)| *g)
        .or_else(|| {
            grids.first().map(|(b, g)| {
                let f = b.resolution().factor();
                GeoRef {
                    transform: g.transform.refined(f),
                    width: g.width * f,
                    height: g.height * f,
                    ..*g
                }
            })
        })
        .or_else(|| source.metadata.grid_10m().copied())
        .ok_or_else(|| PipelineError::Options("no band to process".into()))
}

/// Harmonised bands on their native grids: the whole granule ([`Scene::load`]), or the
/// rows of it that the streaming pipeline holds ([`super::window::Window`]).
#[derive(Debug, Clone)]
pub struct Scene {
    /// The granule's whole 10 m reference grid.
    pub grid10: GeoRef,
    /// The first row held, on the 10 m grid: 0 for a whole scene; for a window a multiple
    /// of 6, so that every band's rows start at `row0 / factor` exactly.
    pub row0: usize,
    /// The first column held, on the 10 m grid: 0 for a whole scene or a full-width
    /// window; for a panel ([`super::window::Window::start`] with columns) a multiple of
    /// 6, so that every band's columns start at `col0 / factor` exactly.
    pub col0: usize,
    /// Harmonised DN per band on its native grid: rows `row0 / factor` onwards, columns
    /// `col0 / factor` onwards.
    pub bands: BTreeMap<Band, Raster<u16>>,
    /// The product's cloud/snow mask, when it carries one.
    pub cloud: Option<CloudMask>,
    /// The offset applied to each band.
    pub offsets: BTreeMap<Band, f64>,
}

impl Scene {
    /// Reads `bands` from `source`, checks their grids and harmonises them.
    ///
    /// # Errors
    /// The reader's error, or a grid mismatch.
    pub fn load(source: &GranuleSource, bands: &[Band]) -> Result<Scene, PipelineError> {
        let mut out = BTreeMap::new();
        let mut grids = Vec::new();
        let mut offsets = BTreeMap::new();
        for &band in bands {
            let data = source.read_band(band)?;
            let mut validity = Validity::default();
            validity.observe(&data.dn.data);
            validity.check(source.id.as_str(), band)?;
            let offset = source.metadata.offset(band);
            grids.push((band, data.georef));
            offsets.insert(band, offset);
            out.insert(band, harmonise(&data.dn, offset));
        }
        let grid10 = checked_grid_10m(source, &grids)?;
        let cloud = source.read_cloud_mask()?;
        Ok(Scene {
            grid10,
            row0: 0,
            col0: 0,
            bands: out,
            cloud,
            offsets,
        })
    }

    /// The harmonised band, or a typed error naming the model that needed it.
    ///
    /// # Errors
    /// [`PipelineError::MissingBand`].
    pub fn band(&self, band: Band, model: &str, id: &str) -> Result<&Raster<u16>, PipelineError> {
        self.bands
            .get(&band)
            .ok_or_else(|| PipelineError::MissingBand {
                id: id.to_string(),
                model: model.to_string(),
                band,
            })
    }

    /// `rect` (10 m grid, granule coordinates) in the coordinates of the rows and
    /// columns held.
    pub fn local(&self, rect: Rect) -> Rect {
        Rect {
            row: rect.row - self.row0,
            col: rect.col - self.col0,
            ..rect
        }
    }

    /// The window `rect` of the 10 m grid for `band`, as `f32` harmonised DN with NaN
    /// for nodata. Coarser bands are upsampled with `kernel`; the result equals the same
    /// window of a whole-image upsampling exactly, since the cut includes a margin
    /// wider than the kernel (or the real image edge).
    pub fn window_10m(
        band: &Raster<u16>,
        factor: usize,
        kernel: Kernel,
        rect: Rect,
    ) -> Raster<f32> {
        if factor == 1 {
            return to_f32(&band.window(rect.col, rect.row, rect.width, rect.height));
        }
        let c0 = (rect.col / factor).saturating_sub(UPSAMPLE_MARGIN);
        let r0 = (rect.row / factor).saturating_sub(UPSAMPLE_MARGIN);
        let c1 = ((rect.col + rect.width).div_ceil(factor) + UPSAMPLE_MARGIN).min(band.width);
        let r1 = ((rect.row + rect.height).div_ceil(factor) + UPSAMPLE_MARGIN).min(band.height);
        let sub = to_f32(&band.window(c0, r0, c1 - c0, r1 - r0));
        upsample_window(
            &sub,
            factor,
            kernel,
            rect.col - c0 * factor,
            rect.row - r0 * factor,
            rect.width,
            rect.height,
        )
    }

    /// A classifier patch for `band`: its own-grid block covering `rect` (10 m grid),
    /// upsampled on its own with its own edges replicated, as BigEarthNet's patch files
    /// were made. Partial edge blocks are padded by edge replication to the full patch.
    pub fn patch_10m(
        band: &Raster<u16>,
        factor: usize,
        kernel: Kernel,
        rect: Rect,
        patch: usize,
    ) -> Raster<f32> {
        let block = patch / factor;
        let block_raster = band.window_clamped(
            (rect.col / factor) as isize,
            (rect.row / factor) as isize,
            block,
            block,
        );
        let f = to_f32(&block_raster);
        if factor == 1 {
            f
        } else {
            upsample(&f, factor, kernel)
        }
    }
}
