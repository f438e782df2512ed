//! Band files read window by window, top to bottom: the input side of the streaming
//! pipeline ([`crate::pipeline::window`]).
//!
//! A [`BandRows`] hands out the next `n` rows of a band on its own grid. Underneath,
//! each format decodes in its natural unit and the remainder is buffered:
//! - GeoTIFF: one chunk row (a row of tiles, or a strip) at a time, read from the file
//!   with seeks ([`super::tiff::TiffRows`]);
//! - JPEG 2000: one OpenJPEG decode area per row of codestream tiles
//!   ([`super::jp2::Jp2Rows`]), through OpenJPEG's own file stream.
//!
//! A band inside a zip is read into memory compressed (a deflated entry cannot be read
//! in place) and decoded from there window by window. So memory is the decoder's unit
//! plus what the caller keeps, never the decoded band.

use std::fs::File;
use std::io::{BufReader, Cursor};

use super::jp2::{Jp2Input, Jp2Rows};
use super::tiff::{self, TiffRows};
use super::{read_location, Band, GeoRef, GranuleError, Location};
use crate::raster::Raster;

enum Decoder {
    Tiff(TiffRows<BufReader<File>>),
    TiffBytes(TiffRows<Cursor<Vec<u8>>>),
    Jp2(Jp2Rows),
}

impl Decoder {
    fn next_rows(&mut self) -> Result<Option<Raster<u16>>, GranuleError> {
        match self {
            Decoder::Tiff(t) => t.next_rows(),
            Decoder::TiffBytes(t) => t.next_rows(),
            Decoder::Jp2(j) => j.next_rows(),
        }
    }
}

/// One band, read top to bottom in windows of any height.
pub struct BandRows {
    band: Band,
    georef: Option<GeoRef>,
    width: usize,
    height: usize,
    decoder: Decoder,
    /// The file, for errors.
    path: std::path::PathBuf,
    /// Decoded rows not handed out yet, row-major.
    pending: Vec<u16>,
    /// Rows handed out so far.
    delivered: usize,
}

impl std::fmt::Debug for BandRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandRows")
            .field("band", &self.band)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl BandRows {
    /// Opens the band file at `loc` (by extension: `.jp2` is JPEG 2000, anything else
    /// GeoTIFF) and returns it with the file's own georeference, if it has one.
    ///
    /// # Errors
    /// The format's header errors ([`GranuleError::Tiff`], [`GranuleError::Jp2`],
    /// [`GranuleError::TooLarge`]) or [`GranuleError::Io`] / [`GranuleError::Zip`].
    pub fn open(band: Band, loc: &Location) -> Result<(BandRows, Option<GeoRef>), GranuleError> {
        let path = loc.display_path();
        let jp2 = match loc {
            Location::File(p) => p.to_string_lossy().to_ascii_lowercase(),
            Location::Zip { entry, .. } => entry.to_ascii_lowercase(),
        }
        .ends_with(".jp2");
        let (decoder, size, georef) = match (loc, jp2) {
            (Location::File(p), true) => {
                let j = Jp2Rows::open(Jp2Input::File(p.clone()), &path)?;
                let size = j.size();
                (Decoder::Jp2(j), size, None)
            }
            (Location::Zip { .. }, true) => {
                let j = Jp2Rows::open(Jp2Input::Bytes(read_location(loc)?), &path)?;
                let size = j.size();
                (Decoder::Jp2(j), size, None)
            }
            (Location::File(p), false) => {
                let (t, g) = tiff::open_rows(p)?;
                let size = (t.width, t.height);
                (Decoder::Tiff(t), size, g)
            }
            (Location::Zip { .. }, false) => {
                let (t, g) = tiff::rows_from_bytes(read_location(loc)?, &path)?;
                let size = (t.width, t.height);
                (Decoder::TiffBytes(t), size, g)
            }
        };
        Ok((
            BandRows {
                band,
                georef,
                width: size.0,
                height: size.1,
                decoder,
                path,
                pending: Vec::new(),
                delivered: 0,
            },
            georef,
        ))
    }

    /// Sets the band's grid (checked by the caller against the product metadata).
    pub fn with_georef(mut self, georef: GeoRef) -> Self {
        self.georef = Some(georef);
        self
    }

    /// Which band.
    pub fn band(&self) -> Band {
        self.band
    }

    /// The band's grid, once known.
    pub fn georef(&self) -> Option<&GeoRef> {
        self.georef.as_ref()
    }

    /// Columns and rows of the whole band.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Rows not yet handed out.
    pub fn rows_left(&self) -> usize {
        self.height - self.delivered
    }

    /// The next `n` rows (fewer at the bottom; none after it), all columns.
    ///
    /// # Errors
    /// The decoder's error naming the file, or [`GranuleError::Tiff`] /
    /// [`GranuleError::Jp2`] when the file ends before its declared height.
    pub fn read(&mut self, n: usize) -> Result<Raster<u16>, GranuleError> {
        let n = n.min(self.rows_left());
        while self.pending.len() < n * self.width {
            match self.decoder.next_rows()? {
                Some(r) if r.width == self.width => self.pending.extend_from_slice(&r.data),
                other => {
                    let reason = format!(
                        "{} ends after row {} of {} (a window of {:?} columns)",
                        self.band,
                        self.delivered + self.pending.len() / self.width.max(1),
                        self.height,
                        other.map(|r| r.width)
                    );
                    return Err(self.error(reason));
                }
            }
        }
        let rest = self.pending.split_off(n * self.width);
        let data = std::mem::replace(&mut self.pending, rest);
        self.delivered += n;
        Raster::from_vec(self.width, n, data)
            .ok_or_else(|| self.error("window has the wrong sample count".into()))
    }

    /// The format's error for this file.
    fn error(&self, reason: String) -> GranuleError {
        let path = self.path.clone();
        match self.decoder {
            Decoder::Jp2(_) => GranuleError::Jp2 { path, reason },
            _ => GranuleError::Tiff { path, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granule::{GeoTransform, Resolution};

    fn georef(w: usize, h: usize) -> GeoRef {
        GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300000.0,
                origin_y: 6000000.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: w,
            height: h,
        }
    }

    #[test]
    fn windows_of_any_height_concatenate_to_the_whole_band() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let r =
            Raster::from_vec(w, h, (0..w * h).map(|i| (i * 7 % 65000) as u16).collect()).unwrap();
        let path = dir.path().join("B02.tif");
        tiff::write_u16(&path, &r, &georef(w, h)).unwrap();
        for step in [1, 5, 17, 53, 100] {
            let (mut rows, g) = BandRows::open(Band::B02, &Location::File(path.clone())).unwrap();
            assert_eq!(g.map(|g| (g.width, g.height)), Some((w, h)));
            let mut all = Vec::new();
            while rows.rows_left() > 0 {
                let win = rows.read(step).unwrap();
                assert!(win.height <= step && win.width == w);
                all.extend_from_slice(&win.data);
            }
            assert_eq!(all, r.data, "windows of {step} rows");
            assert_eq!(rows.read(3).unwrap().height, 0, "nothing after the bottom");
        }
        assert_eq!(Band::B02.resolution(), Resolution::R10);
    }
}
