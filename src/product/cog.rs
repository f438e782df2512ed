//! The Cloud-Optimized GeoTIFF writer (`classification.tif`, `superres.tif`).
//!
//! # Layout of the file
//!
//! - little-endian TIFF, or BigTIFF when the file would not fit below 4 GiB;
//! - 256×256 tiles, ZSTD (`Compression = 50000`) with the horizontal predictor
//!   (`Predictor = 2` for integers, `3`, the floating-point predictor, for `f32`);
//! - `PlanarConfiguration = 2` (one tile set per band, "band interleaved"): a reader that
//!   wants three bands of twelve (an RGB view of `superres.tif`) fetches only those, and
//!   the predictor works on one band at a time, which compresses better than
//!   pixel-interleaved tiles of unrelated bands;
//! - internal overviews as further IFDs (`NewSubfileType = 1`), halving until both sides
//!   are at most 256 (none for images that already fit one tile). An overview pixel is
//!   the mean of the valid (non-nodata) samples of its 2×2 block, rounded half up for
//!   integer types (`u8` too), and nodata when none is valid. A mean that lands exactly
//!   on the nodata value is moved to the adjacent representable value, so overviews
//!   never invent nodata;
//! - georeferencing in the main IFD: `ModelPixelScale`, `ModelTiepoint` and a
//!   `GeoKeyDirectory` with `GTModelType = 1` (projected), `GTRasterType = 1`
//!   (PixelIsArea) and `ProjectedCSType` = the EPSG code; `GDAL_NODATA` (ASCII) in every
//!   IFD; band descriptions as `GDAL_METADATA` XML.
//!
//! # Why the TIFF structure is written by hand
//!
//! A strict COG puts every IFD before the tile data, and the tile data of the smallest
//! overview first and of the full resolution last (`rio cogeo validate` checks this). The
//! `tiff` crate's encoder writes each IFD after its data, so this module compresses all
//! tiles first, lays the file out, and writes header, IFDs, then data, with its own
//! small IFD serialiser (the private `ifd` module).
//!
//! # Memory
//!
//! A full-size `superres.tif` holds gigabytes of compressed tiles, so they are not kept
//! in memory: bands are processed one at a time, each level's tiles compressed in
//! parallel rounds of [`TILES_PER_ROUND`] (over `available_parallelism` threads) and
//! appended to an unnamed temporary file in the output's directory, recording each
//! tile's length; each overview is computed from the previous level of the same band,
//! which is then dropped. Once every size is known the layout is computed and the tile
//! bytes are copied from the temporary file in their final order through a 1 MiB
//! buffer. Peak memory beyond the caller's rasters is about one band's first two
//! overview levels (5/16 of one band) plus one round of compressed tiles. The output
//! bytes do not depend on this order of work. No GDAL ghost area (`GDAL_STRUCTURAL_METADATA`) is written: `rio cogeo
//! validate` does not require it (tested), and omitting it promises nothing about block
//! leaders a reader could rely on.
//!
//! The writer writes `path` in place; atomicity comes from [`super::publish`].

mod blocks;
mod ifd;

pub use blocks::CogBlockWriter;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use ifd::{Flavour, Ifd, Value};

use super::ProductError;
use crate::granule::GeoRef;
use crate::raster::Raster;

/// Tile side in pixels.
pub const TILE: usize = 256;

/// TIFF `Compression` value of ZSTD (a GDAL/libtiff registration).
pub const COMPRESSION_ZSTD: u16 = 50000;

/// zstd's own default level. On real Sentinel-2 bands level 9 (GDAL's default) makes
/// files only ~2 % smaller at ~2.5× the time (BENCHMARKS.md "COG writing"), which an
/// edge box cannot afford on full tiles.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

mod tag {
    pub const NEW_SUBFILE_TYPE: u16 = 254;
    pub const IMAGE_WIDTH: u16 = 256;
    pub const IMAGE_LENGTH: u16 = 257;
    pub const BITS_PER_SAMPLE: u16 = 258;
    pub const COMPRESSION: u16 = 259;
    pub const PHOTOMETRIC: u16 = 262;
    pub const SAMPLES_PER_PIXEL: u16 = 277;
    pub const PLANAR_CONFIGURATION: u16 = 284;
    pub const PREDICTOR: u16 = 317;
    pub const TILE_WIDTH: u16 = 322;
    pub const TILE_LENGTH: u16 = 323;
    pub const TILE_OFFSETS: u16 = 324;
    pub const TILE_BYTE_COUNTS: u16 = 325;
    pub const EXTRA_SAMPLES: u16 = 338;
    pub const SAMPLE_FORMAT: u16 = 339;
    pub const MODEL_PIXEL_SCALE: u16 = 33550;
    pub const MODEL_TIEPOINT: u16 = 33922;
    pub const GEO_KEY_DIRECTORY: u16 = 34735;
    pub const GDAL_METADATA: u16 = 42112;
    pub const GDAL_NODATA: u16 = 42113;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for f32 {}
}

/// A sample type the COG writer can store: `u8`, `u16` or `f32`.
///
/// Sealed: the TIFF tags, the predictor and the nodata rules are spelled out per type.
pub trait CogSample: Copy + Default + Send + Sync + sealed::Sealed + 'static {
    /// TIFF `BitsPerSample`.
    const BITS_PER_SAMPLE: u16;
    /// TIFF `SampleFormat`: 1 unsigned integer, 3 IEEE float.
    const SAMPLE_FORMAT: u16;
    /// TIFF `Predictor`: 2 horizontal differencing (integers), 3 floating point.
    const PREDICTOR: u16;
    /// GDAL's name of the type (`Byte`, `UInt16`, `Float32`).
    const GDAL_TYPE: &'static str;
    /// The nodata value as this type, or `None` when `v` is not exactly representable.
    fn from_nodata(v: f64) -> Option<Self>;
    /// Equality for nodata purposes (NaN equals NaN).
    fn same(self, other: Self) -> bool;
    /// The mean of `vals` (1 to 4 samples), rounded half up for integers; the default
    /// value for an empty slice.
    fn mean(vals: &[Self]) -> Self;
    /// The overview value of a full 2×2 block: the mean of its valid samples (moved
    /// off `nodata` by [`CogSample::adjacent`] if it lands on it), or `nodata` when none
    /// is valid. The hot path of overview building, hence branch-light per type.
    fn block_mean(q: [Self; 4], nodata: Option<Self>) -> Self {
        let valid: Vec<Self> = q
            .into_iter()
            .filter(|v| !nodata.is_some_and(|nd| v.same(nd)))
            .collect();
        finish_mean(Self::mean(&valid), valid.len(), nodata)
    }
    /// A representable value next to `self` (moves a mean off the nodata value).
    fn adjacent(self) -> Self;
    /// Appends one tile row with the predictor applied, as little-endian bytes.
    fn encode_row(row: &[Self], out: &mut Vec<u8>);
    /// Appends `vals` as little-endian bytes, unchanged (no predictor).
    fn write_le(vals: &[Self], out: &mut Vec<u8>);
    /// Appends the samples of little-endian `bytes` (as [`CogSample::write_le`] wrote
    /// them; a trailing partial sample is ignored).
    fn read_le(bytes: &[u8], out: &mut Vec<Self>);
}

/// `mean` of `n` valid samples as an overview value: `nodata` when `n` is 0, moved to
/// the adjacent value when it equals `nodata`, unchanged otherwise.
fn finish_mean<T: CogSample>(mean: T, n: usize, nodata: Option<T>) -> T {
    match nodata {
        Some(nd) if n == 0 => nd,
        Some(nd) if mean.same(nd) => mean.adjacent(),
        _ => mean,
    }
}

macro_rules! cog_uint {
    ($t:ty, $bits:expr, $gdal:expr) => {
        impl CogSample for $t {
            const BITS_PER_SAMPLE: u16 = $bits;
            const SAMPLE_FORMAT: u16 = 1;
            const PREDICTOR: u16 = 2;
            const GDAL_TYPE: &'static str = $gdal;

            fn from_nodata(v: f64) -> Option<Self> {
                (v.fract() == 0.0 && v >= 0.0 && v <= <$t>::MAX as f64).then_some(v as $t)
            }
            fn same(self, other: Self) -> bool {
                self == other
            }
            fn mean(vals: &[Self]) -> Self {
                let n = vals.len() as u32;
                if n == 0 {
                    return 0;
                }
                let sum: u32 = vals.iter().map(|&v| u32::from(v)).sum();
                // At most 4 samples: the sum cannot overflow, the mean fits the type.
                ((sum + n / 2) / n) as $t
            }
            fn block_mean(q: [Self; 4], nodata: Option<Self>) -> Self {
                match nodata {
                    None => ((q.iter().map(|&v| u32::from(v)).sum::<u32>() + 2) / 4) as $t,
                    Some(nd) => {
                        let (mut sum, mut n) = (0u32, 0u32);
                        for v in q {
                            let ok = u32::from(v != nd);
                            sum += ok * u32::from(v);
                            n += ok;
                        }
                        let m = match n {
                            0 => nd,
                            // The common case, without a division.
                            4 => ((sum + 2) >> 2) as $t,
                            n => ((sum + n / 2) / n) as $t,
                        };
                        finish_mean(m, n as usize, nodata)
                    }
                }
            }
            fn adjacent(self) -> Self {
                self.checked_add(1).unwrap_or(self - 1)
            }
            fn encode_row(row: &[Self], out: &mut Vec<u8>) {
                const SIZE: usize = std::mem::size_of::<$t>();
                let base = out.len();
                out.resize(base + row.len() * SIZE, 0);
                let mut prev: $t = 0;
                for (dst, &v) in out[base..].chunks_exact_mut(SIZE).zip(row) {
                    dst.copy_from_slice(&v.wrapping_sub(prev).to_le_bytes());
                    prev = v;
                }
            }
            fn write_le(vals: &[Self], out: &mut Vec<u8>) {
                out.reserve(vals.len() * std::mem::size_of::<$t>());
                for v in vals {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn read_le(bytes: &[u8], out: &mut Vec<Self>) {
                const SIZE: usize = std::mem::size_of::<$t>();
                out.reserve(bytes.len() / SIZE);
                for c in bytes.chunks_exact(SIZE) {
                    let mut a = [0u8; SIZE];
                    a.copy_from_slice(c);
                    out.push(<$t>::from_le_bytes(a));
                }
            }
        }
    };
}

cog_uint!(u8, 8, "Byte");
cog_uint!(u16, 16, "UInt16");

impl CogSample for f32 {
    const BITS_PER_SAMPLE: u16 = 32;
    const SAMPLE_FORMAT: u16 = 3;
    const PREDICTOR: u16 = 3;
    const GDAL_TYPE: &'static str = "Float32";

    fn from_nodata(v: f64) -> Option<Self> {
        if v.is_nan() {
            Some(f32::NAN)
        } else {
            let f = v as f32;
            (f as f64 == v).then_some(f)
        }
    }
    fn same(self, other: Self) -> bool {
        self == other || (self.is_nan() && other.is_nan())
    }
    fn mean(vals: &[Self]) -> Self {
        if vals.is_empty() {
            return 0.0;
        }
        (vals.iter().map(|&v| f64::from(v)).sum::<f64>() / vals.len() as f64) as f32
    }
    fn adjacent(self) -> Self {
        // The next float away from zero keeps the sign; at the largest finite value
        // step towards zero instead.
        let next = f32::from_bits(self.to_bits() + 1);
        if next.is_finite() {
            next
        } else {
            f32::from_bits(self.to_bits() - 1)
        }
    }
    /// libtiff's floating-point predictor (`fpDiff`): the row's bytes are regrouped
    /// into planes, most significant byte first, then byte-differenced along the row.
    fn encode_row(row: &[Self], out: &mut Vec<u8>) {
        let n = row.len();
        let base = out.len();
        out.resize(base + 4 * n, 0);
        let buf = &mut out[base..];
        for (i, v) in row.iter().enumerate() {
            for (k, b) in v.to_be_bytes().into_iter().enumerate() {
                buf[k * n + i] = b;
            }
        }
        for j in (1..buf.len()).rev() {
            buf[j] = buf[j].wrapping_sub(buf[j - 1]);
        }
    }
    fn write_le(vals: &[Self], out: &mut Vec<u8>) {
        out.reserve(vals.len() * 4);
        for v in vals {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn read_le(bytes: &[u8], out: &mut Vec<Self>) {
        out.reserve(bytes.len() / 4);
        for c in bytes.chunks_exact(4) {
            out.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
    }
}

/// One band of a COG: its pixels and its description (the band name, or a class name).
#[derive(Debug, Clone, Copy)]
pub struct CogBand<'a, T> {
    /// Shown by GDAL as the band description (`GDAL_METADATA` role "description").
    pub description: &'a str,
    /// The pixels; the size must equal the georef's.
    pub data: &'a Raster<T>,
}

/// Tuning knobs of [`write_cog_with`]; [`write_cog`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CogOptions {
    /// ZSTD level (1 fast … 19 small). Default [`DEFAULT_ZSTD_LEVEL`].
    pub zstd_level: i32,
    /// Compression threads; 0 means `available_parallelism`.
    pub threads: usize,
    /// Write BigTIFF even when classic TIFF would do (tests of the BigTIFF path);
    /// BigTIFF is chosen automatically when the file would exceed 4 GiB.
    pub force_bigtiff: bool,
}

impl Default for CogOptions {
    fn default() -> Self {
        CogOptions {
            zstd_level: DEFAULT_ZSTD_LEVEL,
            threads: 0,
            force_bigtiff: false,
        }
    }
}

/// Writes `bands` as a Cloud-Optimized GeoTIFF at `path` with the default options.
///
/// `nodata` is written as `GDAL_NODATA` and is what overviews skip; it must be
/// representable in `T` (NaN is allowed for `f32`).
///
/// # Errors
/// [`ProductError::Invalid`] for zero bands, a band whose size differs from the georef,
/// a non-north-up transform or an unrepresentable nodata value; [`ProductError::Geo`]
/// for an EPSG code that does not fit a GeoKey; [`ProductError::Tiff`] when compression
/// fails; [`ProductError::Io`] when writing fails.
pub fn write_cog<T: CogSample>(
    path: &Path,
    georef: &GeoRef,
    bands: &[CogBand<'_, T>],
    nodata: Option<f64>,
) -> Result<(), ProductError> {
    write_cog_with(path, georef, bands, nodata, &CogOptions::default())
}

/// [`write_cog`] with explicit [`CogOptions`].
///
/// # Errors
/// As [`write_cog`].
pub fn write_cog_with<T: CogSample>(
    path: &Path,
    georef: &GeoRef,
    bands: &[CogBand<'_, T>],
    nodata: Option<f64>,
    options: &CogOptions,
) -> Result<(), ProductError> {
    let nodata_t = check_inputs(georef, bands, nodata)?;
    let threads = thread_count(options.threads);

    let dims = level_dims(georef.width, georef.height);

    // Compressed tiles go to an unnamed spill file beside the output (same file system,
    // removed by the OS however this function ends), band by band and level by level:
    // only one band's current and next overview level are in memory at a time. The
    // spill order does not matter; the final order is produced when copying.
    let spill_dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let spill_io = |e| ProductError::io(spill_dir, e);
    let mut spill = std::io::BufWriter::with_capacity(
        1 << 20,
        tempfile::tempfile_in(spill_dir).map_err(spill_io)?,
    );
    let mut spill_len = 0u64;
    // runs[level][band]: where that band's tiles of that level lie in the spill file.
    let mut runs: Vec<Vec<Run>> = dims
        .iter()
        .map(|_| Vec::with_capacity(bands.len()))
        .collect();
    for band in bands {
        let mut current: Cow<'_, Raster<T>> = Cow::Borrowed(band.data);
        for (l, level_runs) in runs.iter_mut().enumerate() {
            let run = compress_raster(
                path,
                spill_dir,
                &current,
                options.zstd_level,
                threads,
                &mut spill,
                &mut spill_len,
            )?;
            level_runs.push(run);
            if l + 1 < dims.len() {
                // The previous level is dropped as soon as the next one exists.
                current = Cow::Owned(downsample_par(&current, nodata_t, threads));
            }
        }
    }
    let spill = spill.into_inner().map_err(|e| spill_io(e.into_error()))?;
    // Each run is contiguous: tile k of (level, band) starts after the tiles before it.
    let locs: Vec<Vec<(u64, u64)>> = runs
        .iter()
        .map(|level| {
            level
                .iter()
                .flat_map(|r| {
                    r.lens.iter().scan(r.start, |at, &len| {
                        let loc = (*at, len);
                        *at += len;
                        Some(loc)
                    })
                })
                .collect()
        })
        .collect();
    let descriptions: Vec<&str> = bands.iter().map(|b| b.description).collect();
    lay_out_and_copy::<T>(
        path,
        spill_dir,
        &spill,
        &Layout {
            georef,
            descriptions: &descriptions,
            nodata,
            dims: &dims,
            locs: &locs,
            force_bigtiff: options.force_bigtiff,
        },
    )
}

/// What the header and IFDs of a finished file are made of: the image, its levels, and
/// where each compressed tile lies in the spill file.
struct Layout<'a> {
    georef: &'a GeoRef,
    descriptions: &'a [&'a str],
    nodata: Option<f64>,
    /// Width and height per level, full resolution first.
    dims: &'a [(usize, usize)],
    /// Per level, in TIFF tile order (band, then row-major): (offset in spill, length).
    locs: &'a [Vec<(u64, u64)>],
    force_bigtiff: bool,
}

/// Lays the file out once every tile size is known, and writes header, IFDs (full
/// resolution, then overviews), then the tile data, smallest overview first, copied from
/// `spill` through a bounded buffer (contiguous spill ranges in one read).
fn lay_out_and_copy<T: CogSample>(
    path: &Path,
    spill_dir: &Path,
    spill: &std::fs::File,
    layout: &Layout<'_>,
) -> Result<(), ProductError> {
    use std::os::unix::fs::FileExt;
    let spill_io = |e| ProductError::io(spill_dir, e);
    let dims = layout.dims;
    let nbands = layout.descriptions.len();
    let counts: Vec<Vec<u64>> = layout
        .locs
        .iter()
        .map(|level| level.iter().map(|l| l.1).collect())
        .collect();
    let data_len: u64 = counts.iter().flatten().sum();
    let metadata = gdal_metadata(layout.descriptions);

    let build = |flavour: Flavour, offsets: &[Vec<u64>]| -> Vec<Ifd> {
        dims.iter()
            .enumerate()
            .map(|(l, &(lw, lh))| {
                let mut ifd = image_ifd::<T>(l > 0, lw, lh, nbands, layout.nodata);
                set_tiles(&mut ifd, flavour, &offsets[l], &counts[l]);
                if l == 0 {
                    set_georef(&mut ifd, layout.georef);
                    if let Some(xml) = &metadata {
                        ifd.set(tag::GDAL_METADATA, Value::Ascii(xml.clone()));
                    }
                }
                ifd
            })
            .collect()
    };
    let placeholder: Vec<Vec<u64>> = counts.iter().map(|l| vec![0; l.len()]).collect();
    let ifds_len =
        |ifds: &[Ifd], f: Flavour| -> u64 { ifds.iter().map(|i| i.encoded_len(f)).sum() };
    let classic = build(Flavour::Classic, &placeholder);
    let classic_total =
        Flavour::Classic.header_len() + ifds_len(&classic, Flavour::Classic) + data_len;
    let flavour = if layout.force_bigtiff || classic_total > u64::from(u32::MAX) {
        Flavour::Big
    } else {
        Flavour::Classic
    };
    let ifds = if flavour == Flavour::Classic {
        classic
    } else {
        build(flavour, &placeholder)
    };

    // Data: smallest overview first, full resolution last; within a level in TIFF
    // tile order (band, then row-major).
    let data_start = flavour.header_len() + ifds_len(&ifds, flavour);
    let mut offsets = placeholder;
    let mut at = data_start;
    for l in (0..dims.len()).rev() {
        for (o, len) in offsets[l].iter_mut().zip(&counts[l]) {
            *o = at;
            at += len;
        }
    }
    let ifds = build(flavour, &offsets);

    let mut head = flavour.header(flavour.header_len());
    let mut pos = flavour.header_len();
    for (i, ifd) in ifds.iter().enumerate() {
        let len = ifd.encoded_len(flavour);
        let next = if i + 1 < ifds.len() { pos + len } else { 0 };
        ifd.encode(flavour, pos, next, &mut head);
        pos += len;
    }
    debug_assert_eq!(head.len() as u64, data_start);

    let io = |e| ProductError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&head).map_err(io)?;
    // Tiles in file order; ranges contiguous in the spill file are read together.
    let mut buf = vec![0u8; 1 << 20];
    let mut copy = |start: u64, len: u64| -> Result<(), ProductError> {
        let mut done = 0u64;
        while done < len {
            let n = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            spill
                .read_exact_at(&mut buf[..n], start + done)
                .map_err(spill_io)?;
            out.write_all(&buf[..n]).map_err(io)?;
            done += n as u64;
        }
        Ok(())
    };
    for level in layout.locs.iter().rev() {
        let mut pending: Option<(u64, u64)> = None;
        for &(o, len) in level {
            pending = match pending {
                Some((s, l)) if s + l == o => Some((s, l + len)),
                Some((s, l)) => {
                    copy(s, l)?;
                    Some((o, len))
                }
                None => Some((o, len)),
            };
        }
        if let Some((s, l)) = pending {
            copy(s, l)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

/// The compressed tiles of one band at one level in the spill file: they start at
/// `start` and follow each other in row-major tile order with lengths `lens`.
struct Run {
    start: u64,
    lens: Vec<u64>,
}

/// Level sizes: full resolution, then halving until both sides fit one tile.
fn level_dims(width: usize, height: usize) -> Vec<(usize, usize)> {
    let mut dims = vec![(width, height)];
    let (mut w, mut h) = (width, height);
    while w > TILE || h > TILE {
        w = w.div_ceil(2);
        h = h.div_ceil(2);
        dims.push((w, h));
    }
    dims
}

/// Validates the inputs and returns the nodata value as `T`.
fn check_inputs<T: CogSample>(
    georef: &GeoRef,
    bands: &[CogBand<'_, T>],
    nodata: Option<f64>,
) -> Result<Option<T>, ProductError> {
    let nodata_t = check_image::<T>(georef, bands.len(), nodata)?;
    for (i, b) in bands.iter().enumerate() {
        let r = b.data;
        if r.width != georef.width
            || r.height != georef.height
            || r.data.len() != r.width * r.height
        {
            return Err(ProductError::invalid(format!(
                "band {} ({:?}) is {}x{} with {} samples, the georef says {}x{}",
                i + 1,
                b.description,
                r.width,
                r.height,
                r.data.len(),
                georef.width,
                georef.height
            )));
        }
    }
    Ok(nodata_t)
}

/// Validates an image of `nbands` bands over `georef` and returns the nodata value as `T`.
fn check_image<T: CogSample>(
    georef: &GeoRef,
    nbands: usize,
    nodata: Option<f64>,
) -> Result<Option<T>, ProductError> {
    if nbands == 0 {
        return Err(ProductError::invalid("a GeoTIFF needs at least one band"));
    }
    if nbands > usize::from(u16::MAX) {
        return Err(ProductError::invalid(format!("{nbands} bands is too many")));
    }
    if georef.width == 0 || georef.height == 0 {
        return Err(ProductError::invalid(format!(
            "empty raster {}x{}",
            georef.width, georef.height
        )));
    }
    if georef.width > u32::MAX as usize || georef.height > u32::MAX as usize {
        return Err(ProductError::invalid("raster too large for TIFF"));
    }
    let t = georef.transform;
    let finite = [t.origin_x, t.origin_y, t.pixel_width, t.pixel_height]
        .iter()
        .all(|v| v.is_finite());
    if !finite || t.pixel_width <= 0.0 || t.pixel_height >= 0.0 {
        return Err(ProductError::invalid(format!(
            "transform is not north-up with finite coefficients: {t:?}"
        )));
    }
    if georef.epsg == 0 || georef.epsg > u32::from(u16::MAX) {
        return Err(ProductError::Geo {
            reason: format!(
                "EPSG:{} does not fit a GeoTIFF ProjectedCSType key",
                georef.epsg
            ),
        });
    }
    match nodata {
        None => Ok(None),
        Some(v) => T::from_nodata(v).map(Some).ok_or_else(|| {
            ProductError::invalid(format!(
                "nodata {v} is not representable as {}",
                T::GDAL_TYPE
            ))
        }),
    }
}

fn thread_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// `f(state, i)` for `i in 0..n` on up to `threads` scoped threads, each with its own
/// `state` from `init`; results in index order.
fn parallel_map<S, O: Send>(
    n: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) -> O + Sync,
) -> Vec<O> {
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, n.max(1));
    let mut parts: Vec<Vec<(usize, O)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break done;
                        }
                        done.push((i, f(&mut state, i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            // A worker panics only on a bug here; re-raise it on the caller's thread.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all: Vec<(usize, O)> = parts.iter_mut().flat_map(std::mem::take).collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, o)| o).collect()
}

/// Output rows per overview job: small enough to spread one band over all threads.
const ROWS_PER_JOB: usize = 64;

/// The next overview of one band, computed in parallel over row blocks.
fn downsample_par<T: CogSample>(prev: &Raster<T>, nodata: Option<T>, threads: usize) -> Raster<T> {
    let (w, h) = (prev.width.div_ceil(2), prev.height.div_ceil(2));
    let jobs: Vec<Range<usize>> = (0..h)
        .step_by(ROWS_PER_JOB)
        .map(|start| start..(start + ROWS_PER_JOB).min(h))
        .collect();
    let parts = parallel_map(
        jobs.len(),
        threads,
        || (),
        |_, i| downsample_rows(prev, nodata, jobs[i].clone()),
    );
    let mut data = Vec::with_capacity(w * h);
    // Jobs are in row order, so appending reassembles the band.
    for part in parts {
        data.extend_from_slice(&part);
    }
    Raster {
        width: w,
        height: h,
        data,
    }
}

/// Rows `rows` of the 2×2 block mean of valid samples of `src`; the output's sides are
/// rounded up, so edge blocks may be partial.
fn downsample_rows<T: CogSample>(src: &Raster<T>, nodata: Option<T>, rows: Range<usize>) -> Vec<T> {
    let w = src.width.div_ceil(2);
    let mut out = Vec::with_capacity(w * rows.len());
    let mut vals = [T::default(); 4];
    for r in rows {
        let top = src.row(2 * r);
        let bottom = (2 * r + 1 < src.height).then(|| src.row(2 * r + 1));
        let mut first_partial = 0;
        if let Some(bottom) = bottom {
            first_partial = src.width / 2;
            for (t, b) in top.chunks_exact(2).zip(bottom.chunks_exact(2)) {
                out.push(T::block_mean([t[0], t[1], b[0], b[1]], nodata));
            }
        }
        for c in first_partial..w {
            let cols = 2 * c..(2 * c + 2).min(src.width);
            let mut n = 0;
            for row in std::iter::once(top).chain(bottom) {
                for &v in &row[cols.clone()] {
                    if !nodata.is_some_and(|nd| v.same(nd)) {
                        vals[n] = v;
                        n += 1;
                    }
                }
            }
            out.push(finish_mean(T::mean(&vals[..n]), n, nodata));
        }
    }
    out
}

/// The whole 2×2 downsample of one raster (tests).
#[cfg(test)]
fn downsample<T: CogSample>(src: &Raster<T>, nodata: Option<T>) -> Raster<T> {
    Raster {
        width: src.width.div_ceil(2),
        height: src.height.div_ceil(2),
        data: downsample_rows(src, nodata, 0..src.height.div_ceil(2)),
    }
}

/// Tiles compressed per parallel round: bounds the compressed bytes held at once
/// (at most this many tiles, a few MiB) while keeping every thread busy.
const TILES_PER_ROUND: usize = 128;

/// Compresses the tiles of `r` in row-major tile order, appends them to `spill` (whose
/// length so far is `spill_len`; it lives in `spill_dir`), and returns where they went.
fn compress_raster<T: CogSample>(
    path: &Path,
    spill_dir: &Path,
    r: &Raster<T>,
    zstd_level: i32,
    threads: usize,
    spill: &mut impl Write,
    spill_len: &mut u64,
) -> Result<Run, ProductError> {
    let tiles_x = r.width.div_ceil(TILE);
    let n = tiles_x * r.height.div_ceil(TILE);
    let mut run = Run {
        start: *spill_len,
        lens: Vec::with_capacity(n),
    };
    for first in (0..n).step_by(TILES_PER_ROUND) {
        let count = TILES_PER_ROUND.min(n - first);
        let results = parallel_map(
            count,
            threads,
            || tile_encoder::<T>(zstd_level),
            |(compressor, pad, raw), i| {
                let (ty, tx) = ((first + i) / tiles_x, (first + i) % tiles_x);
                encode_tile(r, tx, ty, compressor, pad, raw)
            },
        );
        for res in results {
            let bytes = res.map_err(|e| ProductError::Tiff {
                path: path.to_path_buf(),
                reason: format!("zstd level {zstd_level}: {e}"),
            })?;
            spill
                .write_all(&bytes)
                .map_err(|e| ProductError::io(spill_dir, e))?;
            *spill_len += bytes.len() as u64;
            run.lens.push(bytes.len() as u64);
        }
    }
    Ok(run)
}

/// A zstd compressor, or why it could not be made (reported when a tile is compressed).
type Compressor = std::io::Result<zstd::bulk::Compressor<'static>>;

/// The per-thread state of tile encoding: a compressor and two scratch buffers.
fn tile_encoder<T: CogSample>(zstd_level: i32) -> (Compressor, Vec<T>, Vec<u8>) {
    (
        zstd::bulk::Compressor::new(zstd_level),
        Vec::<T>::with_capacity(TILE),
        Vec::<u8>::with_capacity(TILE * TILE * 4),
    )
}

/// The compressed bytes of tile (`tx`, `ty`) of `r` (tile rows counted from `r`'s first
/// row): predictor-encoded rows, partial tiles padded with zeros.
fn encode_tile<T: CogSample>(
    r: &Raster<T>,
    tx: usize,
    ty: usize,
    compressor: &mut Compressor,
    pad: &mut Vec<T>,
    raw: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let (c0, r0) = (tx * TILE, ty * TILE);
    let cw = TILE.min(r.width - c0);
    let rows = TILE.min(r.height - r0);
    raw.clear();
    for row in 0..rows {
        let src = &r.data[(r0 + row) * r.width + c0..][..cw];
        if cw == TILE {
            T::encode_row(src, raw);
        } else {
            // Partial tiles are padded with zeros (the predictor runs over
            // the padding too, as readers undo it over the full tile width).
            pad.clear();
            pad.extend_from_slice(src);
            pad.resize(TILE, T::default());
            T::encode_row(pad, raw);
        }
    }
    // Rows below the image: zero samples encode to zero bytes.
    raw.resize(TILE * TILE * usize::from(T::BITS_PER_SAMPLE / 8), 0);
    match compressor {
        Ok(c) => c.compress(raw),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// The tags every IFD (full resolution or overview) carries.
fn image_ifd<T: CogSample>(
    overview: bool,
    width: usize,
    height: usize,
    nbands: usize,
    nodata: Option<f64>,
) -> Ifd {
    let mut ifd = Ifd::default();
    let n = nbands as u16;
    ifd.set(
        tag::NEW_SUBFILE_TYPE,
        Value::Long(vec![u32::from(overview)]),
    );
    ifd.set(tag::IMAGE_WIDTH, Value::Long(vec![width as u32]));
    ifd.set(tag::IMAGE_LENGTH, Value::Long(vec![height as u32]));
    ifd.set(
        tag::BITS_PER_SAMPLE,
        Value::Short(vec![T::BITS_PER_SAMPLE; nbands]),
    );
    ifd.set(tag::COMPRESSION, Value::Short(vec![COMPRESSION_ZSTD]));
    // MinIsBlack; bands beyond the first are "extra samples" of unspecified meaning,
    // which is how GDAL itself writes multi-band grey imagery.
    ifd.set(tag::PHOTOMETRIC, Value::Short(vec![1]));
    ifd.set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![n]));
    ifd.set(tag::PLANAR_CONFIGURATION, Value::Short(vec![2]));
    ifd.set(tag::PREDICTOR, Value::Short(vec![T::PREDICTOR]));
    ifd.set(tag::TILE_WIDTH, Value::Short(vec![TILE as u16]));
    ifd.set(tag::TILE_LENGTH, Value::Short(vec![TILE as u16]));
    if nbands > 1 {
        ifd.set(tag::EXTRA_SAMPLES, Value::Short(vec![0; nbands - 1]));
    }
    ifd.set(
        tag::SAMPLE_FORMAT,
        Value::Short(vec![T::SAMPLE_FORMAT; nbands]),
    );
    if let Some(nd) = nodata {
        ifd.set(tag::GDAL_NODATA, Value::Ascii(format_nodata(nd)));
    }
    ifd
}

fn set_tiles(ifd: &mut Ifd, flavour: Flavour, offsets: &[u64], counts: &[u64]) {
    match flavour {
        // Classic is chosen only when every offset fits 32 bits.
        Flavour::Classic => {
            ifd.set(
                tag::TILE_OFFSETS,
                Value::Long(offsets.iter().map(|&o| o as u32).collect()),
            );
            ifd.set(
                tag::TILE_BYTE_COUNTS,
                Value::Long(counts.iter().map(|&o| o as u32).collect()),
            );
        }
        Flavour::Big => {
            ifd.set(tag::TILE_OFFSETS, Value::Long8(offsets.to_vec()));
            ifd.set(tag::TILE_BYTE_COUNTS, Value::Long8(counts.to_vec()));
        }
    }
}

fn set_georef(ifd: &mut Ifd, georef: &GeoRef) {
    let t = georef.transform;
    ifd.set(
        tag::MODEL_PIXEL_SCALE,
        Value::Double(vec![t.pixel_width, -t.pixel_height, 0.0]),
    );
    ifd.set(
        tag::MODEL_TIEPOINT,
        Value::Double(vec![0.0, 0.0, 0.0, t.origin_x, t.origin_y, 0.0]),
    );
    // Header (version 1.1.0, 3 keys), then GTModelType = projected, GTRasterType =
    // PixelIsArea, ProjectedCSType = EPSG code (checked to fit u16 by check_inputs).
    ifd.set(
        tag::GEO_KEY_DIRECTORY,
        Value::Short(vec![
            1,
            1,
            0,
            3,
            1024,
            0,
            1,
            1,
            1025,
            0,
            1,
            1,
            3072,
            0,
            1,
            georef.epsg as u16,
        ]),
    );
}

/// `GDAL_NODATA` text: integers without a decimal point, NaN as GDAL spells it.
fn format_nodata(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The `GDAL_METADATA` XML carrying band descriptions, or `None` when all are empty.
fn gdal_metadata(descriptions: &[&str]) -> Option<String> {
    if descriptions.iter().all(|d| d.is_empty()) {
        return None;
    }
    let mut xml = String::from("<GDALMetadata>\n");
    for (i, description) in descriptions.iter().enumerate() {
        // GDAL stores item values XML-escaped inside the XML tree, so the file holds
        // them escaped twice and GDAL unescapes twice on reading (verified with a file
        // written by GDAL itself). Escaping once would turn "a & b" into "a ".
        // Writing to a String cannot fail.
        let _ = writeln!(
            xml,
            "  <Item name=\"DESCRIPTION\" sample=\"{i}\" role=\"description\">{}</Item>",
            xml_escape(&xml_escape(description))
        );
    }
    xml.push_str("</GDALMetadata>");
    Some(xml)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granule::GeoTransform;

    fn georef(w: usize, h: usize) -> GeoRef {
        GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300000.0,
                origin_y: 6200040.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: w,
            height: h,
        }
    }

    #[test]
    fn overview_mean_skips_nodata_and_never_becomes_nodata() {
        let r = Raster::from_vec(3, 3, vec![0u16, 4, 7, 2, 0, 9, 0, 0, 5]).unwrap();
        let d = downsample(&r, Some(0));
        assert_eq!((d.width, d.height), (2, 2));
        assert_eq!(d.data, vec![3, 8, 0, 5]);
        // The mean of 99 and 101 is the nodata value 100: moved to 101.
        let r = Raster::from_vec(2, 1, vec![99u8, 101]).unwrap();
        assert_eq!(downsample(&r, Some(100)).data, vec![101]);
        let r = Raster::from_vec(2, 2, vec![f32::NAN, 1.0, 2.0, f32::NAN]).unwrap();
        assert_eq!(downsample(&r, Some(f32::NAN)).data, vec![1.5]);
    }

    #[test]
    fn raw_little_endian_samples_round_trip_bit_for_bit() {
        fn round_trip<T: CogSample + std::fmt::Debug>(vals: &[T], bits: impl Fn(&T) -> u64) {
            let mut bytes = Vec::new();
            T::write_le(vals, &mut bytes);
            assert_eq!(bytes.len(), std::mem::size_of_val(vals));
            // A trailing partial sample is ignored.
            if std::mem::size_of::<T>() > 1 {
                bytes.push(0xAB);
            }
            let mut back = Vec::new();
            T::read_le(&bytes, &mut back);
            let (a, b): (Vec<u64>, Vec<u64>) = (
                vals.iter().map(&bits).collect(),
                back.iter().map(&bits).collect(),
            );
            assert_eq!(a, b, "{vals:?}");
        }
        round_trip(&[0u8, 1, 254, 255], |v| u64::from(*v));
        round_trip(&[0u16, 1, 0x1234, 65535], |v| u64::from(*v));
        round_trip(
            &[
                0.0f32,
                -0.0,
                1.5,
                f32::NAN,
                f32::MIN_POSITIVE / 2.0,
                f32::INFINITY,
            ],
            |v| u64::from(v.to_bits()),
        );
        assert_eq!(
            {
                let mut b = Vec::new();
                u16::write_le(&[0x1234], &mut b);
                b
            },
            [0x34, 0x12]
        );
    }

    #[test]
    fn float_predictor_matches_libtiff_byte_planes() {
        let mut out = Vec::new();
        f32::encode_row(&[1.0, 1.0], &mut out);
        // 1.0 = 3F 80 00 00 big-endian; planes [3F 3F][80 80][00 00][00 00], then
        // differenced along the row.
        assert_eq!(out, vec![0x3F, 0, 0x41, 0, 0x80, 0, 0, 0]);
        let mut out = Vec::new();
        u16::encode_row(&[5, 3, 300], &mut out);
        assert_eq!(out, vec![5, 0, 0xFE, 0xFF, 0x29, 0x01]);
    }

    #[test]
    fn rejects_inconsistent_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        let a = Raster::filled(4, 4, 1u16);
        let b = Raster::filled(4, 3, 1u16);
        let bands = [
            CogBand {
                description: "a",
                data: &a,
            },
            CogBand {
                description: "b",
                data: &b,
            },
        ];
        assert!(matches!(
            write_cog(&p, &georef(4, 4), &bands, Some(0.0)),
            Err(ProductError::Invalid { .. })
        ));
        assert!(matches!(
            write_cog::<u16>(&p, &georef(4, 4), &[], None),
            Err(ProductError::Invalid { .. })
        ));
        assert!(matches!(
            write_cog(&p, &georef(4, 4), &bands[..1], Some(-1.0)),
            Err(ProductError::Invalid { .. })
        ));
        assert!(matches!(
            write_cog(&p, &georef(4, 4), &bands[..1], Some(0.5)),
            Err(ProductError::Invalid { .. })
        ));
        let mut g = georef(4, 4);
        g.transform.pixel_height = 10.0;
        assert!(write_cog(&p, &g, &bands[..1], None).is_err());
        assert!(!p.exists(), "nothing is written for invalid input");
    }

    #[test]
    fn layout_puts_ifds_first_and_smallest_overview_data_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        let a = Raster::from_vec(
            600,
            300,
            (0..600 * 300).map(|i| (i % 1000) as u16).collect(),
        )
        .unwrap();
        write_cog(
            &p,
            &georef(600, 300),
            &[CogBand {
                description: "B01",
                data: &a,
            }],
            Some(0.0),
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[0..4], b"II*\0");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 8);
        // The tiff crate reads every level back with identical full-resolution pixels.
        let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(dec.dimensions().unwrap(), (600, 300));
        match dec.read_image().unwrap() {
            tiff::decoder::DecodingResult::U16(v) => assert_eq!(v, a.data),
            other => panic!("unexpected {other:?}"),
        }
        assert!(dec.more_images());
        dec.next_image().unwrap();
        assert_eq!(dec.dimensions().unwrap(), (300, 150));
        dec.next_image().unwrap();
        assert_eq!(dec.dimensions().unwrap(), (150, 75));
        assert!(
            !dec.more_images(),
            "halving stops once both sides are <= 256"
        );
    }
}
