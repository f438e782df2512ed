//! The row-streaming front end of the COG writer: rows of every band arrive in order
//! ([`CogStreamWriter::push_rows`]), and each row of 256×256 tiles is compressed to the
//! spill file as soon as it is complete; its 2×2 overview rows are computed from those
//! same buffered rows and pushed into the next level, which flushes its own tile rows the
//! same way. Peak memory is one tile row (256 rows) per band per level — a function of
//! the image *width* — plus one tile row of compressed bytes, whatever the image height.
//!
//! The output is byte-identical to [`super::write_cog_with`] on the same pixels: the same
//! tile encoder, the same overview arithmetic (a tile row holds an even number of rows, so
//! no 2×2 block straddles two flushes), and the same layout code
//! ([`super::lay_out_and_copy`]); the tests compare files byte for byte.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{
    check_image, downsample_rows, encode_tile, lay_out_and_copy, level_dims, parallel_map,
    thread_count, tile_encoder, CogOptions, CogSample, Layout, TILE,
};
use crate::granule::GeoRef;
use crate::product::ProductError;
use crate::raster::Raster;

/// A COG written row strip by row strip. Create it, push every row of every band in
/// order, then [`CogStreamWriter::finish`]; dropping it unfinished leaves `path`
/// unwritten (the spill file is unnamed and vanishes).
pub struct CogStreamWriter<T: CogSample> {
    path: PathBuf,
    spill_dir: PathBuf,
    georef: GeoRef,
    descriptions: Vec<String>,
    nodata: Option<f64>,
    nodata_t: Option<T>,
    options: CogOptions,
    threads: usize,
    dims: Vec<(usize, usize)>,
    /// Per level, per band: the rows of the current tile row (level width each).
    buffers: Vec<Vec<Vec<T>>>,
    /// Rows each level has received.
    rows_in: Vec<usize>,
    /// Per level, per band: (offset, length) of each compressed tile in the spill file,
    /// row-major.
    locs: Vec<Vec<Vec<(u64, u64)>>>,
    spill: BufWriter<std::fs::File>,
    spill_len: u64,
}

impl<T: CogSample> CogStreamWriter<T> {
    /// A writer of `descriptions.len()` bands over `georef` to `path`; `nodata` as in
    /// [`super::write_cog`].
    ///
    /// # Errors
    /// As [`super::write_cog`] for the image (no band, a bad transform or EPSG code, an
    /// unrepresentable nodata value), or [`ProductError::Io`] when the spill file cannot
    /// be created beside `path`.
    pub fn new(
        path: &Path,
        georef: &GeoRef,
        descriptions: &[&str],
        nodata: Option<f64>,
        options: &CogOptions,
    ) -> Result<Self, ProductError> {
        let nodata_t = check_image::<T>(georef, descriptions.len(), nodata)?;
        let dims = level_dims(georef.width, georef.height);
        let spill_dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let spill =
            tempfile::tempfile_in(&spill_dir).map_err(|e| ProductError::io(&spill_dir, e))?;
        let n = descriptions.len();
        Ok(CogStreamWriter {
            path: path.to_path_buf(),
            spill_dir,
            georef: *georef,
            descriptions: descriptions.iter().map(|d| d.to_string()).collect(),
            nodata,
            nodata_t,
            options: *options,
            threads: thread_count(options.threads),
            buffers: dims.iter().map(|_| vec![Vec::new(); n]).collect(),
            rows_in: vec![0; dims.len()],
            locs: dims.iter().map(|_| vec![Vec::new(); n]).collect(),
            dims,
            spill: BufWriter::with_capacity(1 << 20, spill),
            spill_len: 0,
        })
    }

    /// Rows of the full-resolution image received so far.
    pub fn rows_written(&self) -> usize {
        self.rows_in[0]
    }

    /// Appends the next rows of every band: `bands[b]` holds whole rows of band `b`
    /// (a multiple of the image width), the same number of rows for every band.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] when the band count or a slice length is wrong or the
    /// rows go past the image's height; compression and spill errors as
    /// [`super::write_cog`].
    pub fn push_rows(&mut self, bands: &[&[T]]) -> Result<(), ProductError> {
        let (w, h) = self.dims[0];
        if bands.len() != self.descriptions.len() {
            return Err(ProductError::invalid(format!(
                "{} bands pushed to a {}-band COG",
                bands.len(),
                self.descriptions.len()
            )));
        }
        let len = bands.first().map_or(0, |b| b.len());
        if len % w != 0 || bands.iter().any(|b| b.len() != len) {
            return Err(ProductError::invalid(format!(
                "pushed rows must be whole rows of {w} samples, the same for every band"
            )));
        }
        if self.rows_in[0] + len / w > h {
            return Err(ProductError::invalid(format!(
                "{} rows pushed past the image height {h}",
                self.rows_in[0] + len / w
            )));
        }
        self.push_level(0, bands)
    }

    fn push_level(&mut self, level: usize, bands: &[&[T]]) -> Result<(), ProductError> {
        let (w, h) = self.dims[level];
        let rows = bands.first().map_or(0, |b| b.len() / w);
        let mut done = 0;
        while done < rows {
            let buffered = self.buffers[level][0].len() / w;
            let take = (TILE - buffered).min(rows - done);
            for (buf, band) in self.buffers[level].iter_mut().zip(bands) {
                buf.extend_from_slice(&band[done * w..(done + take) * w]);
            }
            self.rows_in[level] += take;
            done += take;
            if buffered + take == TILE || self.rows_in[level] == h {
                self.flush(level)?;
            }
        }
        Ok(())
    }

    /// Compresses the buffered tile row of `level` to the spill file and pushes its
    /// overview rows into the next level.
    fn flush(&mut self, level: usize) -> Result<(), ProductError> {
        let (w, _) = self.dims[level];
        let rasters: Vec<Raster<T>> = self.buffers[level]
            .iter_mut()
            .map(|buf| {
                let data = std::mem::take(buf);
                Raster {
                    width: w,
                    height: data.len() / w,
                    data,
                }
            })
            .collect();
        let tiles_x = w.div_ceil(TILE);
        let nbands = rasters.len();
        let zstd_level = self.options.zstd_level;
        let results = parallel_map(
            tiles_x * nbands,
            self.threads,
            || tile_encoder::<T>(zstd_level),
            |(compressor, pad, raw), i| {
                encode_tile(&rasters[i / tiles_x], i % tiles_x, 0, compressor, pad, raw)
            },
        );
        for (i, res) in results.into_iter().enumerate() {
            let bytes = res.map_err(|e| ProductError::Tiff {
                path: self.path.clone(),
                reason: format!("zstd level {zstd_level}: {e}"),
            })?;
            self.spill
                .write_all(&bytes)
                .map_err(|e| ProductError::io(&self.spill_dir, e))?;
            self.locs[level][i / tiles_x].push((self.spill_len, bytes.len() as u64));
            self.spill_len += bytes.len() as u64;
        }
        if level + 1 < self.dims.len() {
            let nodata = self.nodata_t;
            let next: Vec<Vec<T>> = parallel_map(
                nbands,
                self.threads,
                || (),
                |_, b| downsample_rows(&rasters[b], nodata, 0..rasters[b].height.div_ceil(2)),
            );
            drop(rasters);
            let refs: Vec<&[T]> = next.iter().map(|v| v.as_slice()).collect();
            self.push_level(level + 1, &refs)?;
        }
        Ok(())
    }

    /// Writes the file once every row has been pushed.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] when rows are missing; I/O errors as
    /// [`super::write_cog`].
    pub fn finish(self) -> Result<(), ProductError> {
        let h = self.dims[0].1;
        if self.rows_in[0] != h {
            return Err(ProductError::invalid(format!(
                "only {} of {h} rows were written",
                self.rows_in[0]
            )));
        }
        let spill_dir = self.spill_dir.clone();
        let spill = self
            .spill
            .into_inner()
            .map_err(|e| ProductError::io(&spill_dir, e.into_error()))?;
        let locs: Vec<Vec<(u64, u64)>> = self
            .locs
            .into_iter()
            .map(|level| level.into_iter().flatten().collect())
            .collect();
        let descriptions: Vec<&str> = self.descriptions.iter().map(|d| d.as_str()).collect();
        lay_out_and_copy::<T>(
            &self.path,
            &spill_dir,
            &spill,
            &Layout {
                georef: &self.georef,
                descriptions: &descriptions,
                nodata: self.nodata,
                dims: &self.dims,
                locs: &locs,
                force_bigtiff: self.options.force_bigtiff,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{write_cog_with, CogBand};
    use super::*;
    use crate::granule::GeoTransform;

    fn georef(w: usize, h: usize) -> GeoRef {
        GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300_000.0,
                origin_y: 5_000_000.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: w,
            height: h,
        }
    }

    /// Streams `bands` in strips of `strip` rows and compares the file with the
    /// whole-raster writer's, byte for byte.
    fn same_bytes<T: CogSample>(
        bands: &[Raster<T>],
        nodata: Option<f64>,
        strip: usize,
        options: &CogOptions,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (bands[0].width, bands[0].height);
        let g = georef(w, h);
        let names: Vec<String> = (0..bands.len()).map(|i| format!("band {i}")).collect();
        let cog: Vec<CogBand<'_, T>> = bands
            .iter()
            .zip(&names)
            .map(|(data, d)| CogBand {
                description: d,
                data,
            })
            .collect();
        let whole = dir.path().join("whole.tif");
        write_cog_with(&whole, &g, &cog, nodata, options).unwrap();
        let streamed = dir.path().join("streamed.tif");
        let descr: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut wr = CogStreamWriter::<T>::new(&streamed, &g, &descr, nodata, options).unwrap();
        let mut row = 0;
        while row < h {
            let n = strip.min(h - row);
            let slices: Vec<&[T]> = bands
                .iter()
                .map(|b| &b.data[row * w..(row + n) * w])
                .collect();
            wr.push_rows(&slices).unwrap();
            row += n;
        }
        assert_eq!(wr.rows_written(), h);
        wr.finish().unwrap();
        let (a, b) = (
            std::fs::read(&whole).unwrap(),
            std::fs::read(&streamed).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{w}x{h} strip {strip}: sizes differ");
        assert!(a == b, "{w}x{h} strip {strip}: bytes differ");
    }

    fn noise(w: usize, h: usize, salt: u32) -> Vec<u32> {
        (0..w * h)
            .map(|i| {
                let mut x = (i as u32).wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503);
                x ^= x >> 13;
                x.wrapping_mul(0x5bd1_e995) >> 8
            })
            .collect()
    }

    #[test]
    fn streamed_file_equals_the_whole_raster_writer() {
        let opts = CogOptions {
            threads: 2,
            ..CogOptions::default()
        };
        // Odd sizes, several overview levels, nodata on some pixels, strips that do
        // not divide the tile height.
        for &(w, h, strip) in &[
            (700usize, 613usize, 77usize),
            (300, 1100, 256),
            (200, 100, 7),
        ] {
            let u: Vec<Raster<u16>> = (0..3)
                .map(|b| {
                    let d = noise(w, h, b)
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| if i % 97 == 0 { 0 } else { (v % 4000) as u16 })
                        .collect();
                    Raster::from_vec(w, h, d).unwrap()
                })
                .collect();
            same_bytes(&u, Some(0.0), strip, &opts);
        }
        let f: Vec<Raster<f32>> = (0..2)
            .map(|b| {
                let d = noise(530, 517, b + 9)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 31 == 0 { -1.0 } else { v as f32 / 1e6 })
                    .collect();
                Raster::from_vec(530, 517, d).unwrap()
            })
            .collect();
        same_bytes(&f, Some(-1.0), 100, &opts);
        let big = CogOptions {
            force_bigtiff: true,
            ..opts
        };
        same_bytes(&f[..1], None, 517, &big);
    }

    #[test]
    fn incomplete_or_wrong_pushes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        let g = georef(10, 10);
        let mut wr =
            CogStreamWriter::<u16>::new(&p, &g, &["a", "b"], Some(0.0), &CogOptions::default())
                .unwrap();
        let row = vec![1u16; 10];
        assert!(wr.push_rows(&[&row]).is_err(), "one band of two");
        assert!(
            wr.push_rows(&[&row[..9], &row[..9]]).is_err(),
            "partial row"
        );
        wr.push_rows(&[&row, &row]).unwrap();
        let e = wr.finish().unwrap_err().to_string();
        assert!(e.contains("only 1 of 10 rows"), "{e}");
        assert!(!p.exists());
        let mut wr =
            CogStreamWriter::<u16>::new(&p, &g, &["a"], Some(0.0), &CogOptions::default()).unwrap();
        let many = vec![1u16; 110];
        assert!(wr.push_rows(&[&many]).is_err(), "past the height");
    }
}
