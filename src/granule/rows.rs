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
//! A deflated zip entry cannot be read in place. A JPEG 2000 band inside a zip is
//! unpacked once per granule into a temporary file ([`super::unpack`]) and decoded from
//! that file; a GeoTIFF band inside a zip is read into memory compressed and decoded
//! from there. Either way memory is the decoder's unit plus what the caller keeps (and
//! for a zipped GeoTIFF its compressed bytes), never the decoded band.
//!
//! A reader may also be restricted to a column range ([`BandRows::with_columns`]), so the
//! pipeline can walk a granule in vertical panels whose memory does not grow with its
//! width. The range is handed down to the decoder, which decodes only what intersects
//! it: the GeoTIFF tiles of those columns (a strip spans the width, so it is decoded and
//! cropped), or an OpenJPEG decode area of those columns. Reading all columns is the
//! same path with the range `0..width`.

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::ops::Range;

use super::jp2::{Jp2Input, Jp2Rows};
use super::tiff::{self, TiffRows};
use super::unpack::UnpackCache;
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

    fn set_columns(&mut self, columns: Range<usize>) -> Result<(), GranuleError> {
        match self {
            Decoder::Tiff(t) => t.set_columns(columns),
            Decoder::TiffBytes(t) => t.set_columns(columns),
            Decoder::Jp2(j) => j.set_columns(columns),
        }
    }

    fn columns(&self) -> Range<usize> {
        match self {
            Decoder::Tiff(t) => t.columns(),
            Decoder::TiffBytes(t) => t.columns(),
            Decoder::Jp2(j) => j.columns(),
        }
    }
}

/// Why `columns` is not a usable column range of a band `width` columns wide, if it is
/// not: the check both decoders' `set_columns` make, so they refuse alike.
pub(super) fn bad_columns(columns: &Range<usize>, width: usize) -> Option<String> {
    if columns.start >= columns.end {
        Some(format!(
            "column range {}..{} is empty",
            columns.start, columns.end
        ))
    } else if columns.end > width {
        Some(format!(
            "column range {}..{} reaches beyond the band's {width} columns",
            columns.start, columns.end
        ))
    } else {
        None
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
    /// GeoTIFF) and returns it with the file's own georeference, if it has one. A JPEG
    /// 2000 zip entry comes from `unpacked`, which unpacks it on its first use.
    ///
    /// # Errors
    /// The format's header errors ([`GranuleError::Tiff`], [`GranuleError::Jp2`],
    /// [`GranuleError::TooLarge`]) or [`GranuleError::Io`] / [`GranuleError::Zip`].
    pub fn open(
        band: Band,
        loc: &Location,
        unpacked: &UnpackCache,
    ) -> Result<(BandRows, Option<GeoRef>), GranuleError> {
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
            (Location::Zip { archive, entry }, true) => {
                let j = Jp2Rows::open(unpacked.jp2(band, archive, entry)?, &path)?;
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

    /// Columns and rows of the whole band, whatever [`BandRows::columns`] delivers.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Restricts the reader to columns `start..end` of the band's own grid: from now on
    /// [`BandRows::read`] returns windows `end - start` wide, and the decoder decodes
    /// only what those columns need (see the module docs).
    ///
    /// # Errors
    /// [`GranuleError::Tiff`] / [`GranuleError::Jp2`] naming the file when the range is
    /// empty or reaches beyond the band's width, or when rows were already decoded (a
    /// band is restricted before its first read, so every window has the same width).
    pub fn with_columns(mut self, start: usize, end: usize) -> Result<BandRows, GranuleError> {
        if self.delivered > 0 || !self.pending.is_empty() {
            let reason = format!(
                "{}: column range {start}..{end} set after {} rows were read; set it before \
                 the first read",
                self.band, self.delivered
            );
            return Err(self.error(reason));
        }
        self.decoder.set_columns(start..end)?;
        Ok(self)
    }

    /// The columns each window holds, on the band's own grid: `0..width` unless
    /// [`BandRows::with_columns`] restricted them.
    pub fn columns(&self) -> Range<usize> {
        self.decoder.columns()
    }

    /// Rows not yet handed out.
    pub fn rows_left(&self) -> usize {
        self.height - self.delivered
    }

    /// The next `n` rows (fewer at the bottom; none after it) of the columns
    /// [`BandRows::columns`].
    ///
    /// # Errors
    /// The decoder's error naming the file, or [`GranuleError::Tiff`] /
    /// [`GranuleError::Jp2`] when the file ends before its declared height.
    pub fn read(&mut self, n: usize) -> Result<Raster<u16>, GranuleError> {
        let n = n.min(self.rows_left());
        let width = self.columns().len();
        while self.pending.len() < n * width {
            match self.decoder.next_rows()? {
                Some(r) if r.width == width => self.pending.extend_from_slice(&r.data),
                other => {
                    let reason = format!(
                        "{} ends after row {} of {} (a window of {:?} columns, expected {width})",
                        self.band,
                        self.delivered + self.pending.len() / width.max(1),
                        self.height,
                        other.map(|r| r.width)
                    );
                    return Err(self.error(reason));
                }
            }
        }
        // A copy of exactly the rows handed out: the window keeps them (and the reader's
        // channel holds a strip of them ahead), so they must not carry the capacity of
        // the chunk rows buffered here.
        let data = self.pending[..n * width].to_vec();
        self.pending.drain(..n * width);
        self.delivered += n;
        Raster::from_vec(width, n, data)
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
            let (mut rows, g) = BandRows::open(
                Band::B02,
                &Location::File(path.clone()),
                &UnpackCache::default(),
            )
            .unwrap();
            assert_eq!(g.map(|g| (g.width, g.height)), Some((w, h)));
            let mut all = Vec::new();
            while rows.rows_left() > 0 {
                let win = rows.read(step).unwrap();
                assert!(win.height <= step && win.width == w);
                // The window goes on to be held (read ahead, then in the pipeline's
                // window): it must not carry the decoder's buffered rows' capacity.
                assert_eq!(
                    win.data.capacity(),
                    win.data.len(),
                    "windows of {step} rows"
                );
                all.extend_from_slice(&win.data);
            }
            assert_eq!(all, r.data, "windows of {step} rows");
            assert_eq!(rows.read(3).unwrap().height, 0, "nothing after the bottom");
        }
        assert_eq!(Band::B02.resolution(), Resolution::R10);
    }

    /// Columns `a..b` of the band at `loc`, read in windows of `step` rows, checking
    /// each window's shape; and, read by the existing whole-band path (no column range,
    /// one window), the same columns of the whole band.
    fn panel_and_whole(
        loc: &Location,
        (a, b): (usize, usize),
        step: usize,
    ) -> (Vec<u16>, Vec<u16>) {
        let (rows, _) = BandRows::open(Band::B02, loc, &UnpackCache::default()).unwrap();
        let (w, h) = rows.size();
        let whole = BandRows::open(Band::B02, loc, &UnpackCache::default())
            .unwrap()
            .0
            .read(h)
            .unwrap();
        assert_eq!((whole.width, whole.height), (w, h));
        let mut rows = rows.with_columns(a, b).unwrap();
        assert_eq!(rows.columns(), a..b);
        assert_eq!(rows.size(), (w, h), "size() stays the whole band's");
        let mut panel = Vec::new();
        while rows.rows_left() > 0 {
            let win = rows.read(step).unwrap();
            assert!(win.height <= step && win.width == b - a, "{loc}: {a}..{b}");
            panel.extend_from_slice(&win.data);
        }
        assert_eq!(rows.read(3).unwrap().height, 0, "nothing after the bottom");
        (panel, tiff::crop_columns_for_tests(&whole.data, w, a..b))
    }

    /// Writes `bytes` as entry `entry` of a deflated zip at `zip`.
    fn zip_with(zip: &std::path::Path, entry: &str, bytes: &[u8]) -> Location {
        use std::io::Write;
        let mut zw = zip::ZipWriter::new(File::create(zip).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zw.start_file(entry, opts).unwrap();
        zw.write_all(bytes).unwrap();
        zw.finish().unwrap();
        Location::Zip {
            archive: zip.to_path_buf(),
            entry: entry.into(),
        }
    }

    #[test]
    fn a_zipped_jp2_band_is_unpacked_once_per_granule_and_deleted_after() {
        let test = "a_zipped_jp2_band_is_unpacked_once_per_granule_and_deleted_after";
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 7 % 4001) as u16 + 1).collect();
        let args = ["-t", "16,16", "-n", "3"];
        let Some(jp2) =
            super::super::jp2::opj_encode_for_tests(w, h, &data, dir.path(), &args, test)
        else {
            return;
        };
        let zip = dir.path().join("g.zip");
        let entry = "X.SAFE/B02.jp2";
        let loc = zip_with(&zip, entry, &std::fs::read(&jp2).unwrap());
        let cache = UnpackCache::default();
        let readers: Vec<BandRows> = (0..2)
            .map(|_| BandRows::open(Band::B02, &loc, &cache).unwrap().0)
            .collect();
        assert_eq!(cache.len(), 1, "two readers, one file");
        let file = match cache.jp2(Band::B02, &zip, entry).unwrap() {
            Jp2Input::Unpacked(f) => f.path().to_path_buf(),
            other => panic!("not unpacked: {other:?}"),
        };
        assert!(file.is_file(), "{}", file.display());
        assert_eq!(file.extension().and_then(|e| e.to_str()), Some("jp2"));
        for mut r in readers {
            assert_eq!(
                r.read(h).unwrap().data,
                data,
                "the unpacked band decodes as written"
            );
        }
        drop(cache);
        assert!(!file.exists(), "{} outlived its readers", file.display());

        // A directory that cannot take the file is the host's failure, retried, not the
        // input's; an absent entry is the input's.
        let missing = dir.path().join("missing");
        match super::super::unpack::unpack(&zip, entry, &missing) {
            Err(e @ GranuleError::Io { .. }) => {
                assert!(e.is_transient(), "{e}");
                assert!(
                    e.to_string().contains("missing") && e.to_string().contains("TMPDIR"),
                    "{e}"
                );
            }
            other => panic!("unpacked into a missing directory: {other:?}"),
        }
        assert!(matches!(
            super::super::unpack::unpack(&zip, "X.SAFE/none.jp2", dir.path()),
            Err(GranuleError::Zip { .. })
        ));
    }

    /// First column, last column, one whole tile, ranges across 16-px tile borders, all.
    const RANGES: [(usize, usize); 6] = [(0, 1), (36, 37), (16, 32), (15, 17), (10, 35), (0, 37)];
    const STEPS: [usize; 5] = [1, 5, 16, 17, 100];

    #[test]
    fn column_windows_of_tiffs_match_the_whole_band() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let r =
            Raster::from_vec(w, h, (0..w * h).map(|i| (i * 13 % 65000) as u16).collect()).unwrap();
        let tiled = tiff::tiled_zstd_for_tests(w, h, 16, &r.data, &[]);
        let tiled_path = dir.path().join("B02_tiled.tif");
        std::fs::write(&tiled_path, &tiled).unwrap();
        let striped_path = dir.path().join("B02.tif");
        tiff::write_u16(&striped_path, &r, &georef(w, h)).unwrap();
        let locations = [
            Location::File(tiled_path),
            Location::File(striped_path.clone()),
            zip_with(&dir.path().join("t.zip"), "X.SAFE/B02.tif", &tiled),
            zip_with(
                &dir.path().join("s.zip"),
                "X.SAFE/B02.tif",
                &std::fs::read(&striped_path).unwrap(),
            ),
        ];
        for loc in &locations {
            for range in RANGES {
                for step in STEPS {
                    let (panel, want) = panel_and_whole(loc, range, step);
                    assert_eq!(panel, want, "{loc}: columns {range:?}, windows of {step}");
                    assert_eq!(
                        want,
                        tiff::crop_columns_for_tests(&r.data, w, range.0..range.1)
                    );
                }
            }
        }
    }

    #[test]
    fn column_windows_of_jp2_match_the_whole_band() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 7919 % 65536) as u16).collect();
        let args = ["-t", "16,16", "-n", "3", "-d", "3,5"];
        let test = "column_windows_of_jp2";
        let Some(path) =
            super::super::jp2::opj_encode_for_tests(w, h, &data, dir.path(), &args, test)
        else {
            return;
        };
        let bytes = std::fs::read(&path).unwrap();
        let locations = [
            Location::File(path),
            zip_with(&dir.path().join("j.zip"), "X.SAFE/B02.jp2", &bytes),
        ];
        for loc in &locations {
            for range in RANGES {
                for step in STEPS {
                    let (panel, want) = panel_and_whole(loc, range, step);
                    assert_eq!(panel, want, "{loc}: columns {range:?}, windows of {step}");
                    assert_eq!(
                        want,
                        tiff::crop_columns_for_tests(&data, w, range.0..range.1)
                    );
                }
            }
        }
    }

    /// The refusal of `columns` `a..b` on a fresh reader of `loc`: its reason, after
    /// checking that the error is the format's (`jp2` or not) and names the file.
    fn refusal(loc: &Location, (a, b): (usize, usize), jp2: bool) -> String {
        let (rows, _) = BandRows::open(Band::B02, loc, &UnpackCache::default()).unwrap();
        match (rows.with_columns(a, b), jp2) {
            (Err(GranuleError::Jp2 { path, reason }), true)
            | (Err(GranuleError::Tiff { path, reason }), false) => {
                assert_eq!(path, loc.display_path());
                reason
            }
            (other, _) => panic!("{loc}: columns {a}..{b}: {other:?}"),
        }
    }

    #[test]
    fn bad_column_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37, 53);
        let r = Raster::from_vec(w, h, vec![5u16; w * h]).unwrap();
        let tif = dir.path().join("B02.tif");
        tiff::write_u16(&tif, &r, &georef(w, h)).unwrap();
        let mut locations = vec![(Location::File(tif), false)];
        let args = ["-t", "16,16", "-n", "3"];
        let test = "bad_column_ranges_of_band_rows";
        match super::super::jp2::opj_encode_for_tests(w, h, &r.data, dir.path(), &args, test) {
            Some(p) => locations.push((Location::File(p), true)),
            None => eprintln!("{test}: checking GeoTIFF only"),
        }
        for (loc, jp2) in &locations {
            let (rows, _) = BandRows::open(Band::B02, loc, &UnpackCache::default()).unwrap();
            assert_eq!(rows.columns(), 0..w, "{loc}: all columns by default");
            for range in [(5, 5), (6, 5)] {
                assert!(
                    refusal(loc, range, *jp2).contains("empty"),
                    "{loc}: {range:?}"
                );
            }
            for range in [(0, 38), (36, 38), (40, 41)] {
                assert!(
                    refusal(loc, range, *jp2).contains("beyond"),
                    "{loc}: {range:?}"
                );
            }
            // After a read the width of the windows may no longer change.
            let (mut rows, _) = BandRows::open(Band::B02, loc, &UnpackCache::default()).unwrap();
            assert_eq!(rows.read(2).unwrap().width, w);
            match rows.with_columns(0, 3) {
                Err(e @ (GranuleError::Tiff { .. } | GranuleError::Jp2 { .. })) => {
                    assert!(e.to_string().contains("before the first read"), "{e}");
                }
                other => panic!("{loc}: {other:?}"),
            }
        }
    }

    /// Real bands: the L2A crop's GeoTIFFs have 1024-px Deflate tiles (B02 is two tiles
    /// across), the L1C crop's 256-px LZW tiles; the L1C B02 is also encoded to JPEG 2000
    /// with 256-px tiles, the Sentinel-2 layout at a smaller scale.
    #[test]
    fn real_band_panels_match_the_whole_band() {
        let test = "real_band_panels_match_the_whole_band";
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        if !data.is_dir() {
            eprintln!("SKIP {test}: ../shared/data is absent (real Sentinel-2 test data)");
            return;
        }
        let crops = data.join("s2-crops");
        let mut locations: Vec<Location> = [
            "S2A_33NZA_20220706_N0400_L2A/B02.tif",
            "S2A_33NZA_20220706_N0400_L2A/B05.tif",
            "S2A_33UUB_20170527_0_L1C/B02.tif",
            "S2A_33UUB_20170527_0_L1C/B01.tif",
        ]
        .iter()
        .map(|f| Location::File(crops.join(f)))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let src = crops.join("S2A_33UUB_20170527_0_L1C/B02.tif");
        let (r, _) = tiff::decode_u16(&std::fs::read(&src).unwrap(), &src).unwrap();
        let args = ["-t", "256,256"];
        match super::super::jp2::opj_encode_for_tests(
            r.width,
            r.height,
            &r.data,
            dir.path(),
            &args,
            test,
        ) {
            Some(p) => locations.push(Location::File(p)),
            None => eprintln!("{test}: checking GeoTIFF only"),
        }
        for loc in &locations {
            let (rows, _) = BandRows::open(Band::B02, loc, &UnpackCache::default()).unwrap();
            let (w, _) = rows.size();
            // Thirds of the width, which cross tile borders in general, and the last column.
            let third = w / 3;
            for range in [(0, third), (third, 2 * third), (2 * third, w), (w - 1, w)] {
                for step in [7, 256] {
                    let (panel, want) = panel_and_whole(loc, range, step);
                    assert!(panel == want, "{loc}: columns {range:?}, windows of {step}");
                }
            }
        }
    }
}
