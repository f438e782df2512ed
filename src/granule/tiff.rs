//! GeoTIFF decoding: single-band rasters and their georeference.
//!
//! Role: turn the bytes of a Sentinel-2 band GeoTIFF (strips or tiles; uncompressed, LZW,
//! Deflate or ZSTD, with or without a predictor) into a [`Raster<u16>`] plus the
//! [`GeoRef`] its GeoKeys describe, and read only the header of a band file when a reader
//! needs the grid without the pixels ([`read_header`]).
//!
//! Invariants:
//! - The image dimensions are read from the first IFD by [`peek_dimensions`], a small
//!   parser of our own, and refused with [`GranuleError::TooLarge`] beyond [`MAX_SIDE`]
//!   *before* the `tiff` crate builds its chunk tables or allocates a pixel buffer; a
//!   hostile header therefore never reaches an allocation.
//! - Band data must be one sample of unsigned 16 bits ([`decode_u16`]). Only masks
//!   (SCL, cloud probability) are accepted as unsigned 8 bits, widened to `u16`
//!   ([`decode_any_u16`]); a band stored as 8 bits would otherwise be read silently as
//!   DN 0–255, which no model can detect.
//! - A returned [`GeoRef`] is always pixel-corner based and north-up: `PixelIsPoint`
//!   rasters are shifted by half a pixel (as GDAL does), and rotated or sheared
//!   transforms, geographic CRSs and ground-control-point georeferencing are errors.
//! - Only the first image (IFD) is read; COG overviews and masks that follow are ignored.
//!   Images are decoded one chunk row at a time ([`TiffRows`]; see there for why), which
//!   also lets the streaming pipeline read a band window by window ([`open_rows`]).
//! - Nothing here panics on malformed input: every failure is a [`GranuleError::Tiff`]
//!   naming the file. The `tiff` crate is fuzzed by this module's unit tests (strip
//!   files truncated at every offset, byte flips, random corruption) and by
//!   `tests/readers_tiff.rs` (a real tiled Deflate file) without panicking, so no
//!   `catch_unwind` is used.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use tiff::tags::Tag;
use tiff::ColorType;

use super::{GeoRef, GeoTransform, GranuleError, MAX_SIDE};
use crate::raster::Raster;

/// GeoKey ids used here (GeoTIFF 1.1, section 7).
mod geokey {
    /// GTModelTypeGeoKey: 1 projected, 2 geographic, 3 geocentric.
    pub const MODEL_TYPE: u16 = 1024;
    /// GTRasterTypeGeoKey: 1 PixelIsArea, 2 PixelIsPoint.
    pub const RASTER_TYPE: u16 = 1025;
    /// GeographicTypeGeoKey: the EPSG code of a geographic CRS.
    pub const GEOGRAPHIC_TYPE: u16 = 2048;
    /// ProjectedCSTypeGeoKey: the EPSG code of a projected CRS.
    pub const PROJECTED_CS_TYPE: u16 = 3072;
    /// The "user-defined" value of a CRS key.
    pub const USER_DEFINED: u16 = 32767;
    /// GTRasterTypeGeoKey value of PixelIsPoint.
    pub const PIXEL_IS_POINT: u16 = 2;
    /// GTModelTypeGeoKey value of a geographic (lat/lon) model.
    pub const MODEL_GEOGRAPHIC: u16 = 2;
}

/// GeoTIFF tags that the `tiff` crate does not name.
const TAG_GEO_KEY_DIRECTORY: u16 = 34735;
const TAG_MODEL_PIXEL_SCALE: u16 = 33550;
const TAG_MODEL_TIEPOINT: u16 = 33922;
const TAG_MODEL_TRANSFORMATION: u16 = 34264;

/// Most IFD entries accepted while peeking at the dimensions; real GeoTIFFs carry ~20.
const MAX_IFD_ENTRIES: u64 = 4096;

/// The sample type of a single-band TIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// Unsigned 8 bits (masks).
    U8,
    /// Unsigned 16 bits (band DN).
    U16,
}

/// What the header of a single-band GeoTIFF says, without its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct TiffHeader {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The sample type (only single-sample unsigned 8/16-bit images get this far).
    pub sample: SampleKind,
    /// The georeference, when the file carries GeoKeys and a transform.
    pub georef: Option<GeoRef>,
}

/// Decodes a single-band uint16 GeoTIFF and its georeference.
///
/// The georeference is `None` when the file has no GeoKeyDirectory (a plain TIFF); the
/// caller then takes the grid from the product metadata.
///
/// # Errors
/// [`GranuleError::TooLarge`] when the header declares a side above [`MAX_SIDE`] (checked
/// before decoding), [`GranuleError::Tiff`] naming `path` when the file is truncated,
/// corrupt, not single-sample uint16, or georeferenced in a way s2edge refuses (rotation,
/// geographic CRS, ground control points).
pub fn decode_u16(
    bytes: &[u8],
    path: &Path,
) -> Result<(Raster<u16>, Option<GeoRef>), GranuleError> {
    decode(bytes, path, false)
}

/// Like [`decode_u16`], but also accepts single-band uint8 data and widens it to `u16`
/// (value-preserving). Meant for masks such as the L2A scene classification (SCL) or the
/// cloud-probability raster, which Sentinel-2 products store as 8 bits; band data must
/// go through [`decode_u16`] so an 8-bit band is refused rather than read as DN 0–255.
///
/// # Errors
/// As [`decode_u16`].
pub fn decode_any_u16(
    bytes: &[u8],
    path: &Path,
) -> Result<(Raster<u16>, Option<GeoRef>), GranuleError> {
    decode(bytes, path, true)
}

/// Reads only the header (first IFD and its tag values) of the GeoTIFF at `path`: its
/// size, sample type and georeference. Pixel data is not read.
///
/// # Errors
/// [`GranuleError::Io`] when the file cannot be opened, otherwise as [`decode_any_u16`]
/// (uint8 is accepted here; the caller decides whether it wants 16 bits).
pub fn read_header(path: &Path) -> Result<TiffHeader, GranuleError> {
    let file = File::open(path).map_err(|e| GranuleError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let (width, height) = checked_dimensions(&mut reader, path)?;
    let mut decoder = open_decoder(reader, path)?;
    let sample = sample_kind(&mut decoder, path, true)?;
    let georef = read_georef(&mut decoder, width, height, path)?;
    Ok(TiffHeader {
        width,
        height,
        sample,
        georef,
    })
}

/// Writes `raster` as a Deflate-compressed, single-band uint16 GeoTIFF with the CRS and
/// transform of `georef` (ProjectedCSTypeGeoKey, ModelPixelScale, ModelTiepoint,
/// PixelIsArea). Used for synthetic granules and test fixtures; products are written as
/// COGs by [`crate::product`].
///
/// # Errors
/// [`GranuleError::Tiff`] when the raster and georef sizes disagree or the EPSG code does
/// not fit a GeoKey, [`GranuleError::Io`] when the file cannot be written.
pub fn write_u16(path: &Path, raster: &Raster<u16>, georef: &GeoRef) -> Result<(), GranuleError> {
    let bad = |reason: String| GranuleError::Tiff {
        path: path.to_path_buf(),
        reason,
    };
    if raster.width != georef.width || raster.height != georef.height {
        return Err(bad(format!(
            "raster is {}x{} but the georef is {}x{}",
            raster.width, raster.height, georef.width, georef.height
        )));
    }
    let epsg = u16::try_from(georef.epsg)
        .map_err(|_| bad(format!("EPSG:{} does not fit a GeoKey", georef.epsg)))?;
    let (w, h) = (
        u32::try_from(raster.width).map_err(|_| bad("width too large".into()))?,
        u32::try_from(raster.height).map_err(|_| bad("height too large".into()))?,
    );
    let t = &georef.transform;
    let keys: [u16; 16] = [
        1,
        1,
        0,
        3,
        geokey::MODEL_TYPE,
        0,
        1,
        1,
        geokey::RASTER_TYPE,
        0,
        1,
        1,
        geokey::PROJECTED_CS_TYPE,
        0,
        1,
        epsg,
    ];
    let mut buf = Cursor::new(Vec::new());
    let encode = |buf: &mut Cursor<Vec<u8>>| -> tiff::TiffResult<()> {
        let mut enc = tiff::encoder::TiffEncoder::new(buf)?.with_compression(
            tiff::encoder::Compression::Deflate(tiff::encoder::DeflateLevel::Balanced),
        );
        let mut image = enc.new_image::<tiff::encoder::colortype::Gray16>(w, h)?;
        let dir = image.encoder();
        dir.write_tag(Tag::Unknown(TAG_GEO_KEY_DIRECTORY), &keys[..])?;
        dir.write_tag(
            Tag::Unknown(TAG_MODEL_PIXEL_SCALE),
            &[t.pixel_width, -t.pixel_height, 0.0][..],
        )?;
        dir.write_tag(
            Tag::Unknown(TAG_MODEL_TIEPOINT),
            &[0.0, 0.0, 0.0, t.origin_x, t.origin_y, 0.0][..],
        )?;
        image.write_data(&raster.data)
    };
    encode(&mut buf).map_err(|e| bad(format!("encoding failed: {e}")))?;
    std::fs::write(path, buf.into_inner()).map_err(|e| GranuleError::io(path, e))
}

fn decode(
    bytes: &[u8],
    path: &Path,
    accept_u8: bool,
) -> Result<(Raster<u16>, Option<GeoRef>), GranuleError> {
    let (mut rows, georef) = TiffRows::new(Cursor::new(bytes), path, accept_u8)?;
    let (width, height) = (rows.width, rows.height);
    let mut data = Vec::with_capacity(width * height);
    while let Some(chunk) = rows.next_rows()? {
        data.extend_from_slice(&chunk.data);
    }
    let raster = Raster::from_vec(width, height, data).ok_or_else(|| {
        tiff_error(
            path,
            format!("decoded sample count does not match {width}x{height}"),
        )
    })?;
    Ok((raster, georef))
}

/// Opens the band GeoTIFF at `path` for reading row by row ([`TiffRows`]): only the
/// header is read here, and each call of [`TiffRows::next_rows`] reads and decodes one
/// row of chunks from the file.
///
/// # Errors
/// [`GranuleError::Io`] when the file cannot be opened, otherwise as [`decode_u16`].
pub fn open_rows(path: &Path) -> Result<Opened<BufReader<File>>, GranuleError> {
    let file = File::open(path).map_err(|e| GranuleError::io(path, e))?;
    TiffRows::new(BufReader::new(file), path, false)
}

/// Like [`open_rows`], over a band file's bytes already in memory (a zip entry).
///
/// # Errors
/// As [`decode_u16`].
pub fn rows_from_bytes(
    bytes: Vec<u8>,
    path: &Path,
) -> Result<Opened<Cursor<Vec<u8>>>, GranuleError> {
    TiffRows::new(Cursor::new(bytes), path, false)
}

/// The samples of a decoded buffer as `u16`, widening uint8.
fn widen(sample: SampleKind, image: DecodingResult, path: &Path) -> Result<Vec<u16>, GranuleError> {
    match (sample, image) {
        (SampleKind::U16, DecodingResult::U16(v)) => Ok(v),
        (SampleKind::U8, DecodingResult::U8(v)) => Ok(v.into_iter().map(u16::from).collect()),
        _ => Err(tiff_error(
            path,
            "decoder returned an unexpected sample type",
        )),
    }
}

/// A [`TiffRows`] over `R` and the file's georeference, if it has one.
pub type Opened<R> = (TiffRows<R>, Option<GeoRef>);

/// A single-band GeoTIFF decoded one chunk row at a time, top to bottom: a row of tiles
/// for a tiled file, one strip for a stripped one. The whole-image [`decode_u16`] and
/// the streaming pipeline's band windows both read through it, so there is one decoder.
///
/// Each chunk is read whole with its own row stride: `Decoder::read_image` reads tiled
/// images row by row and skips each edge tile's padding in small reads, which makes the
/// `tiff` 0.11 LZW reader fail on valid GDAL files ("no lzw end code found").
pub struct TiffRows<R: Read + Seek> {
    decoder: Decoder<R>,
    sample: SampleKind,
    path: std::path::PathBuf,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Chunk width and height.
    chunk: (usize, usize),
    /// Chunks across.
    across: usize,
    /// The columns each chunk row is returned with (`0..width` unless restricted by
    /// [`TiffRows::set_columns`]): only the tiles that intersect them are decoded.
    columns: std::ops::Range<usize>,
    /// The next chunk row.
    next: usize,
}

impl<R: Read + Seek> std::fmt::Debug for TiffRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffRows")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("chunk", &self.chunk)
            .field("columns", &self.columns)
            .finish()
    }
}

impl<R: Read + Seek> TiffRows<R> {
    /// Checks the header (size limit, sample type, georeference, chunk layout) and
    /// returns the reader positioned before the first row, with the georeference.
    fn new(mut reader: R, path: &Path, accept_u8: bool) -> Result<Opened<R>, GranuleError> {
        let (width, height) = checked_dimensions(&mut reader, path)?;
        let mut decoder = open_decoder(reader, path)?;
        let sample = sample_kind(&mut decoder, path, accept_u8)?;
        let georef = read_georef(&mut decoder, width, height, path)?;
        let fail = |e: tiff::TiffError| tiff_error(path, format!("decoding pixels: {e}"));
        let (cw, ch) = decoder.chunk_dimensions();
        let (cw, ch) = (cw as usize, ch as usize);
        if cw == 0 || ch == 0 {
            return Err(tiff_error(path, "zero chunk size"));
        }
        let across = width.div_ceil(cw);
        let count = match decoder.get_chunk_type() {
            ChunkType::Tile => decoder.tile_count().map_err(fail)?,
            ChunkType::Strip => decoder.strip_count().map_err(fail)?,
        } as usize;
        if count != across * height.div_ceil(ch) {
            return Err(tiff_error(
                path,
                format!("{count} chunks do not cover {width}x{height} in {cw}x{ch} chunks"),
            ));
        }
        Ok((
            TiffRows {
                decoder,
                sample,
                path: path.to_path_buf(),
                width,
                height,
                chunk: (cw, ch),
                across,
                columns: 0..width,
                next: 0,
            },
            georef,
        ))
    }

    /// Restricts every later chunk row to the columns `columns` of the image. A tiled
    /// file then decodes only the tiles that intersect them; a stripped one still decodes
    /// whole strips (a strip spans the width) and crops them.
    ///
    /// # Errors
    /// [`GranuleError::Tiff`] naming the file when the range is empty or reaches beyond
    /// the width, or when a chunk row was already decoded.
    pub fn set_columns(&mut self, columns: std::ops::Range<usize>) -> Result<(), GranuleError> {
        if self.next > 0 {
            return Err(tiff_error(
                &self.path,
                format!(
                    "column range {}..{} set after {} chunk rows were decoded",
                    columns.start, columns.end, self.next
                ),
            ));
        }
        if let Some(reason) = super::rows::bad_columns(&columns, self.width) {
            return Err(tiff_error(&self.path, reason));
        }
        self.columns = columns;
        Ok(())
    }

    /// The columns each chunk row holds.
    pub fn columns(&self) -> std::ops::Range<usize> {
        self.columns.clone()
    }

    /// Decodes the next chunk row: the columns [`TiffRows::columns`], one chunk's rows
    /// (fewer at the bottom); `None` after the last. Only the chunks that intersect the
    /// columns are read and decoded.
    ///
    /// # Errors
    /// [`GranuleError::Tiff`] naming the file when a chunk is truncated or corrupt.
    pub fn next_rows(&mut self) -> Result<Option<Raster<u16>>, GranuleError> {
        let (cw, ch) = self.chunk;
        let y0 = self.next * ch;
        if y0 >= self.height {
            return Ok(None);
        }
        let path = self.path.as_path();
        let rows = ch.min(self.height - y0);
        let fail = |e: tiff::TiffError| tiff_error(path, format!("decoding pixels: {e}"));
        let bytes_per_sample = match self.sample {
            SampleKind::U8 => 1,
            SampleKind::U16 => 2,
        };
        let (start, end) = (self.columns.start, self.columns.end);
        let width = end - start;
        let mut out = vec![0u16; width * rows];
        // `set_columns` keeps start < end <= self.width, so these are chunks of this row.
        for i in start / cw..=(end - 1) / cw {
            let index = self.next * self.across + i;
            // The chunk count came from a u32 and was checked to equal across × rows.
            let chunk = index as u32;
            let mut buf = DecodingResult::U16(Vec::new());
            self.decoder
                .read_chunk_to_buffer(&mut buf, chunk, cw * bytes_per_sample)
                .map_err(fail)?;
            let tile = widen(self.sample, buf, path)?;
            let (dw, dh) = self.decoder.chunk_data_dimensions(chunk);
            let (dw, dh) = (dw as usize, dh as usize);
            let x0 = i * cw;
            let misfit = || tiff_error(path, format!("chunk {index} does not fit the image"));
            // Every chunk must hold exactly its part of the image, or some of `out`
            // would silently stay 0.
            if dh != rows || x0 + dw != self.width.min(x0 + cw) {
                return Err(misfit());
            }
            // The part of this chunk inside the range, in image columns.
            let (lo, hi) = (start.max(x0), end.min(x0 + dw));
            for r in 0..dh {
                let src = tile.get(r * cw + lo - x0..r * cw + hi - x0);
                let at = r * width + lo - start;
                match (src, out.get_mut(at..at + hi - lo)) {
                    (Some(src), Some(dst)) => dst.copy_from_slice(src),
                    _ => return Err(misfit()),
                }
            }
        }
        self.next += 1;
        Raster::from_vec(width, rows, out)
            .map(Some)
            .ok_or_else(|| tiff_error(path, "chunk row has the wrong sample count"))
    }
}

fn tiff_error(path: &Path, reason: impl Into<String>) -> GranuleError {
    GranuleError::Tiff {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Peeks at the dimensions and refuses oversized ones, then rewinds `reader`.
fn checked_dimensions<R: Read + Seek>(
    reader: &mut R,
    path: &Path,
) -> Result<(usize, usize), GranuleError> {
    let (w, h) = peek_dimensions(reader).map_err(|reason| tiff_error(path, reason))?;
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(GranuleError::TooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            limit: MAX_SIDE,
        });
    }
    if w == 0 || h == 0 {
        return Err(tiff_error(path, format!("empty image ({w}x{h})")));
    }
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| tiff_error(path, format!("rewinding: {e}")))?;
    // Both are at most MAX_SIDE, so they fit usize on every supported platform.
    Ok((w as usize, h as usize))
}

/// Reads ImageWidth (256) and ImageLength (257) of the first IFD of a classic TIFF or a
/// BigTIFF, touching nothing else.
///
/// # Errors
/// A reason string when the header is truncated, not a TIFF, or lacks the tags.
pub fn peek_dimensions<R: Read + Seek>(reader: &mut R) -> Result<(u64, u64), String> {
    fn eof(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |e| format!("truncated {what}: {e}")
    }
    let mut head = [0u8; 8];
    reader
        .read_exact(&mut head)
        .map_err(eof("header (not a TIFF)"))?;
    let little = match &head[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Err("no TIFF signature (II/MM)".into()),
    };
    let u16_at = |b: &[u8]| -> u16 {
        let a = [b[0], b[1]];
        if little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    };
    let u32_at = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let u64_at = |b: &[u8]| -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let big = match u16_at(&head[2..4]) {
        42 => false,
        43 => true,
        v => return Err(format!("TIFF version {v} is neither 42 nor 43 (BigTIFF)")),
    };
    let ifd_offset = if big {
        let mut rest = [0u8; 8];
        reader
            .read_exact(&mut rest)
            .map_err(eof("BigTIFF header"))?;
        if u16_at(&head[4..6]) != 8 {
            return Err("BigTIFF offset size is not 8".into());
        }
        u64_at(&rest)
    } else {
        u64::from(u32_at(&head[4..8]))
    };
    reader
        .seek(SeekFrom::Start(ifd_offset))
        .map_err(|e| format!("seeking to the first IFD at {ifd_offset}: {e}"))?;
    let (count, entry_len) = if big {
        let mut c = [0u8; 8];
        reader.read_exact(&mut c).map_err(eof("IFD"))?;
        (u64_at(&c), 20usize)
    } else {
        let mut c = [0u8; 2];
        reader.read_exact(&mut c).map_err(eof("IFD"))?;
        (u64::from(u16_at(&c)), 12usize)
    };
    if count > MAX_IFD_ENTRIES {
        return Err(format!("first IFD claims {count} entries"));
    }
    let mut entries = vec![0u8; count as usize * entry_len];
    reader.read_exact(&mut entries).map_err(eof("IFD"))?;
    let (mut width, mut height) = (None, None);
    for e in entries.chunks_exact(entry_len) {
        let tag = u16_at(&e[0..2]);
        if tag != 256 && tag != 257 {
            continue;
        }
        let ty = u16_at(&e[2..4]);
        let (n, value) = if big {
            (u64_at(&e[4..12]), &e[12..20])
        } else {
            (u64::from(u32_at(&e[4..8])), &e[8..12])
        };
        if n != 1 {
            return Err(format!("tag {tag} has {n} values, expected 1"));
        }
        let v = match ty {
            3 => u64::from(u16_at(value)),
            4 => u64::from(u32_at(value)),
            16 if big => u64_at(value),
            _ => return Err(format!("tag {tag} has field type {ty}, not an integer")),
        };
        if tag == 256 {
            width = Some(v);
        } else {
            height = Some(v);
        }
    }
    match (width, height) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err("first IFD lacks ImageWidth or ImageLength".into()),
    }
}

fn open_decoder<R: Read + Seek>(reader: R, path: &Path) -> Result<Decoder<R>, GranuleError> {
    // The sides are already checked, so the largest legitimate buffer is one full
    // MAX_SIDE² uint16 image; the crate's default (256 MiB) would refuse a 12000² band.
    let full = (MAX_SIDE * MAX_SIDE * 2) as usize;
    let mut limits = Limits::default();
    limits.decoding_buffer_size = full;
    limits.intermediate_buffer_size = full;
    Decoder::new(reader)
        .map(|d| d.with_limits(limits))
        .map_err(|e| tiff_error(path, format!("reading the header: {e}")))
}

fn sample_kind<R: Read + Seek>(
    decoder: &mut Decoder<R>,
    path: &Path,
    accept_u8: bool,
) -> Result<SampleKind, GranuleError> {
    let color = decoder
        .colortype()
        .map_err(|e| tiff_error(path, format!("unsupported image kind: {e}")))?;
    let format = decoder
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(|e| tiff_error(path, format!("SampleFormat tag: {e}")))?;
    // 1 = unsigned integer; absent means unsigned too.
    if let Some(f) = format.as_ref().and_then(|v| v.iter().find(|f| **f != 1)) {
        return Err(tiff_error(
            path,
            format!("sample format {f} is not unsigned integer (need uint16)"),
        ));
    }
    let photometric = decoder
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .map_err(|e| tiff_error(path, format!("PhotometricInterpretation tag: {e}")))?;
    // WhiteIsZero would make the decoder invert the values, which are DN, not grey.
    if photometric == Some(0) {
        return Err(tiff_error(
            path,
            "WhiteIsZero photometric is not a DN raster",
        ));
    }
    match color {
        ColorType::Gray(16) => Ok(SampleKind::U16),
        ColorType::Gray(8) if accept_u8 => Ok(SampleKind::U8),
        ColorType::Gray(bits) => Err(tiff_error(
            path,
            format!("{bits}-bit samples; a band must be uint16"),
        )),
        ColorType::Multiband { num_samples, .. } => Err(tiff_error(
            path,
            format!("{num_samples} samples per pixel; a band file must hold one"),
        )),
        other => Err(tiff_error(
            path,
            format!("{other:?} pixels; a band file must be single-sample uint16"),
        )),
    }
}

fn read_f64s<R: Read + Seek>(
    decoder: &mut Decoder<R>,
    tag: u16,
    path: &Path,
) -> Result<Option<Vec<f64>>, GranuleError> {
    let value = decoder
        .find_tag(Tag::Unknown(tag))
        .map_err(|e| tiff_error(path, format!("tag {tag}: {e}")))?;
    value
        .map(|v| v.into_f64_vec())
        .transpose()
        .map_err(|e| tiff_error(path, format!("tag {tag} is not a list of doubles: {e}")))
}

fn read_georef<R: Read + Seek>(
    decoder: &mut Decoder<R>,
    width: usize,
    height: usize,
    path: &Path,
) -> Result<Option<GeoRef>, GranuleError> {
    let keys = decoder
        .find_tag(Tag::Unknown(TAG_GEO_KEY_DIRECTORY))
        .map_err(|e| tiff_error(path, format!("GeoKeyDirectory: {e}")))?
        .map(|v| v.into_u16_vec())
        .transpose()
        .map_err(|e| tiff_error(path, format!("GeoKeyDirectory is not SHORTs: {e}")))?;
    let tags = GeoTags {
        keys,
        pixel_scale: read_f64s(decoder, TAG_MODEL_PIXEL_SCALE, path)?,
        tiepoints: read_f64s(decoder, TAG_MODEL_TIEPOINT, path)?,
        transformation: read_f64s(decoder, TAG_MODEL_TRANSFORMATION, path)?,
    };
    georef_from_tags(&tags, width, height).map_err(|reason| tiff_error(path, reason))
}

/// The raw georeferencing tags of an image.
#[derive(Debug, Default, Clone, PartialEq)]
struct GeoTags {
    keys: Option<Vec<u16>>,
    pixel_scale: Option<Vec<f64>>,
    tiepoints: Option<Vec<f64>>,
    transformation: Option<Vec<f64>>,
}

/// The GeoKeys s2edge reads, all stored inline (TIFFTagLocation 0).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct GeoKeys {
    model_type: Option<u16>,
    raster_type: Option<u16>,
    geographic: Option<u16>,
    projected: Option<u16>,
}

fn parse_geokeys(dir: &[u16]) -> Result<GeoKeys, String> {
    let [version, _, _, count, ..] = *dir else {
        return Err("GeoKeyDirectory is shorter than its 4-value header".into());
    };
    if version != 1 {
        return Err(format!("GeoKeyDirectory version {version} is not 1"));
    }
    let entries = dir.get(4..).unwrap_or_default();
    if entries.len() < usize::from(count) * 4 {
        return Err(format!(
            "GeoKeyDirectory declares {count} keys but holds {}",
            entries.len() / 4
        ));
    }
    let mut keys = GeoKeys::default();
    for e in entries.chunks_exact(4).take(usize::from(count)) {
        let (id, location, value) = (e[0], e[1], e[3]);
        // Keys stored in another tag (doubles, ASCII) are never CRS codes we need.
        if location != 0 {
            continue;
        }
        let slot = match id {
            geokey::MODEL_TYPE => &mut keys.model_type,
            geokey::RASTER_TYPE => &mut keys.raster_type,
            geokey::GEOGRAPHIC_TYPE => &mut keys.geographic,
            geokey::PROJECTED_CS_TYPE => &mut keys.projected,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(keys)
}

/// Builds the pixel-corner, north-up georeference the tags describe.
///
/// `Ok(None)` when the file carries no GeoKeyDirectory or no placement at all: a plain
/// TIFF, whose grid must then come from the product metadata.
fn georef_from_tags(tags: &GeoTags, width: usize, height: usize) -> Result<Option<GeoRef>, String> {
    let Some(dir) = &tags.keys else {
        return Ok(None);
    };
    let keys = parse_geokeys(dir)?;
    let epsg = match keys.projected {
        Some(geokey::USER_DEFINED) => {
            return Err("user-defined projected CRS (no EPSG code) is not supported".into())
        }
        Some(code) => u32::from(code),
        None if keys.geographic.is_some() || keys.model_type == Some(geokey::MODEL_GEOGRAPHIC) => {
            return Err(format!(
                "not a projected CRS (geographic, EPSG:{}); Sentinel-2 grids are UTM",
                keys.geographic.map_or("?".into(), |g| g.to_string())
            ))
        }
        None => return Err("GeoKeyDirectory names no projected CRS".into()),
    };
    let transform = match (&tags.transformation, &tags.pixel_scale, &tags.tiepoints) {
        (Some(m), _, _) => {
            let [a, b, _, d, e, f, _, h, ..] = m[..] else {
                return Err(format!(
                    "ModelTransformation has {} values, expected 16",
                    m.len()
                ));
            };
            if b != 0.0 || e != 0.0 {
                return Err(format!(
                    "rotated or sheared transform (terms {b}, {e}) is not supported"
                ));
            }
            GeoTransform {
                origin_x: d,
                origin_y: h,
                pixel_width: a,
                pixel_height: f,
            }
        }
        (None, Some(scale), Some(tie)) => {
            let [sx, sy, ..] = scale[..] else {
                return Err("ModelPixelScale has fewer than 2 values".into());
            };
            if tie.len() != 6 {
                return Err(format!(
                    "{} tiepoint values: ground control points are not supported, need one tiepoint",
                    tie.len()
                ));
            }
            let (i, j, x, y) = (tie[0], tie[1], tie[3], tie[4]);
            GeoTransform {
                origin_x: x - i * sx,
                origin_y: y + j * sy,
                pixel_width: sx,
                pixel_height: -sy,
            }
        }
        (None, None, Some(_)) => {
            return Err(
                "tiepoints without ModelPixelScale (ground control points) are not supported"
                    .into(),
            )
        }
        (None, _, None) => return Ok(None),
    };
    let t = transform;
    if ![t.origin_x, t.origin_y, t.pixel_width, t.pixel_height]
        .iter()
        .all(|v| v.is_finite())
    {
        return Err("non-finite transform".into());
    }
    if t.pixel_width <= 0.0 || t.pixel_height >= 0.0 {
        return Err(format!(
            "not a north-up grid (pixel size {} x {})",
            t.pixel_width, t.pixel_height
        ));
    }
    let transform = if keys.raster_type == Some(geokey::PIXEL_IS_POINT) {
        // The tiepoint names the centre of pixel (0, 0); GeoRef is corner based.
        GeoTransform {
            origin_x: t.origin_x - t.pixel_width / 2.0,
            origin_y: t.origin_y - t.pixel_height / 2.0,
            ..t
        }
    } else {
        t
    };
    Ok(Some(GeoRef {
        epsg,
        transform,
        width,
        height,
    }))
}

/// A single-band uint16 TIFF in `tile`×`tile` ZSTD tiles, written by hand (the `tiff`
/// crate's encoder writes strips only), for tests of the tiled path. Edge tiles are
/// padded with zeros to the full tile, as TIFF 6.0 requires. The tiles whose indices
/// (row-major over the tile grid) are in `corrupt` hold bytes that are no ZSTD frame, so
/// decoding exactly those tiles fails. There is no georeference.
#[cfg(test)]
pub(crate) fn tiled_zstd_for_tests(
    w: usize,
    h: usize,
    tile: usize,
    data: &[u16],
    corrupt: &[usize],
) -> Vec<u8> {
    let (across, down) = (w.div_ceil(tile), h.div_ceil(tile));
    let tiles: Vec<Vec<u8>> = (0..across * down)
        .map(|t| {
            if corrupt.contains(&t) {
                return b"this is not a zstd frame".to_vec();
            }
            let (x0, y0) = ((t % across) * tile, (t / across) * tile);
            let mut raw = Vec::with_capacity(tile * tile * 2);
            for y in y0..y0 + tile {
                for x in x0..x0 + tile {
                    let v = if x < w && y < h { data[y * w + x] } else { 0 };
                    raw.extend_from_slice(&v.to_le_bytes());
                }
            }
            zstd::encode_all(&raw[..], 0).unwrap_or_default()
        })
        .collect();
    let n = tiles.len() as u32;
    // Tag, type (3 SHORT, 4 LONG), count, value (or offset of the values).
    let entries = 12u32;
    let arrays = 8 + 2 + 12 * entries + 4;
    let data_at = arrays + 8 * n;
    let mut offsets = Vec::new();
    let mut at = data_at;
    for t in &tiles {
        offsets.push(at);
        at += t.len() as u32;
    }
    let counts: Vec<u32> = tiles.iter().map(|t| t.len() as u32).collect();
    let (offs_value, counts_value) = if n == 1 {
        (offsets[0], counts[0])
    } else {
        (arrays, arrays + 4 * n)
    };
    let ifd: [(u16, u16, u32, u32); 12] = [
        (256, 4, 1, w as u32),
        (257, 4, 1, h as u32),
        (258, 3, 1, 16),
        (259, 3, 1, 50000),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (284, 3, 1, 1),
        (322, 4, 1, tile as u32),
        (323, 4, 1, tile as u32),
        (324, 4, n, offs_value),
        (325, 4, n, counts_value),
        (339, 3, 1, 1),
    ];
    let mut b = b"II".to_vec();
    b.extend_from_slice(&42u16.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(entries as u16).to_le_bytes());
    for (tag, ty, count, value) in ifd {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    if n > 1 {
        for v in offsets.iter().chain(&counts) {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    for t in &tiles {
        b.extend_from_slice(t);
    }
    b
}

/// The columns `columns` of a row-major image `w` wide, for tests of column windows.
#[cfg(test)]
pub(crate) fn crop_columns_for_tests(
    data: &[u16],
    w: usize,
    columns: std::ops::Range<usize>,
) -> Vec<u16> {
    data.chunks_exact(w)
        .flat_map(|row| row[columns.clone()].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn sample_tiff(w: usize, h: usize) -> (Vec<u8>, Raster<u16>) {
        let data: Vec<u16> = (0..w * h).map(|i| (i * 37 % 65536) as u16).collect();
        let raster = Raster::from_vec(w, h, data).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        write_u16(&p, &raster, &georef(w, h)).unwrap();
        (std::fs::read(&p).unwrap(), raster)
    }

    fn encode_with(
        compression: tiff::encoder::Compression,
        w: u32,
        h: u32,
        data: &[u16],
    ) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut enc = tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .with_compression(compression);
        enc.write_image::<tiff::encoder::colortype::Gray16>(w, h, data)
            .unwrap();
        buf.into_inner()
    }

    #[test]
    fn round_trips_through_the_writer() {
        let (bytes, raster) = sample_tiff(37, 21);
        let (back, g) = decode_u16(&bytes, Path::new("x.tif")).unwrap();
        assert_eq!(back, raster);
        assert_eq!(g, Some(georef(37, 21)));
        assert_eq!(peek_dimensions(&mut Cursor::new(&bytes)).unwrap(), (37, 21));
    }

    #[test]
    fn decodes_lzw_and_plain_tiffs_without_georef() {
        let data: Vec<u16> = (0..300u16).collect();
        for c in [
            tiff::encoder::Compression::Lzw,
            tiff::encoder::Compression::Uncompressed,
            tiff::encoder::Compression::Packbits,
        ] {
            let bytes = encode_with(c, 20, 15, &data);
            let (r, g) = decode_u16(&bytes, Path::new("p.tif")).unwrap();
            assert_eq!(r.data, data);
            assert_eq!(g, None);
        }
    }

    #[test]
    fn refuses_non_u16_but_widens_u8_for_masks() {
        let data: Vec<u8> = (0..200u8).collect();
        let mut buf = Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .write_image::<tiff::encoder::colortype::Gray8>(20, 10, &data)
            .unwrap();
        let bytes = buf.into_inner();
        let err = decode_u16(&bytes, Path::new("scl.tif")).unwrap_err();
        assert!(
            matches!(&err, GranuleError::Tiff { reason, .. } if reason.contains("8-bit")),
            "{err}"
        );
        let (r, _) = decode_any_u16(&bytes, Path::new("scl.tif")).unwrap();
        assert_eq!(r.data[199], 199u16);

        let mut buf = Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .write_image::<tiff::encoder::colortype::RGB16>(2, 2, &[1u16; 12])
            .unwrap();
        let err = decode_u16(buf.get_ref(), Path::new("rgb.tif")).unwrap_err();
        assert!(matches!(err, GranuleError::Tiff { .. }), "{err}");

        let mut buf = Cursor::new(Vec::new());
        tiff::encoder::TiffEncoder::new(&mut buf)
            .unwrap()
            .write_image::<tiff::encoder::colortype::GrayI16>(2, 2, &[1i16; 4])
            .unwrap();
        let err = decode_u16(buf.get_ref(), Path::new("i16.tif")).unwrap_err();
        assert!(
            matches!(&err, GranuleError::Tiff { reason, .. } if reason.contains("unsigned")),
            "{err}"
        );
    }

    /// Patches ImageWidth/ImageLength of the first IFD of a little-endian classic TIFF.
    fn patch_dimensions(bytes: &mut [u8], w: u32, h: u32) {
        let ifd = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let n = u16::from_le_bytes(bytes[ifd..ifd + 2].try_into().unwrap()) as usize;
        for k in 0..n {
            let e = ifd + 2 + 12 * k;
            let tag = u16::from_le_bytes(bytes[e..e + 2].try_into().unwrap());
            let v = match tag {
                256 => w,
                257 => h,
                _ => continue,
            };
            bytes[e + 2..e + 4].copy_from_slice(&4u16.to_le_bytes());
            bytes[e + 8..e + 12].copy_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn oversized_header_is_refused_before_decoding() {
        let (mut bytes, _) = sample_tiff(16, 16);
        patch_dimensions(&mut bytes, 100_000, 100_000);
        let err = decode_u16(&bytes, Path::new("big.tif")).unwrap_err();
        assert!(
            matches!(
                err,
                GranuleError::TooLarge {
                    width: 100_000,
                    height: 100_000,
                    limit: MAX_SIDE,
                    ..
                }
            ),
            "{err}"
        );
        patch_dimensions(&mut bytes, 16, 12_001);
        assert!(matches!(
            decode_u16(&bytes, Path::new("big.tif")),
            Err(GranuleError::TooLarge { .. })
        ));
    }

    #[test]
    fn geokeys_build_corner_based_georefs() {
        let keys = |raster_type: u16, crs_key: u16, code: u16| {
            Some(vec![
                1,
                1,
                0,
                2,
                1025,
                0,
                1,
                raster_type,
                crs_key,
                0,
                1,
                code,
            ])
        };
        let mut tags = GeoTags {
            keys: keys(1, 3072, 32633),
            pixel_scale: Some(vec![20.0, 20.0, 0.0]),
            tiepoints: Some(vec![1.0, 2.0, 0.0, 300020.0, 6200000.0, 0.0]),
            transformation: None,
        };
        let g = georef_from_tags(&tags, 5, 6).unwrap().unwrap();
        assert_eq!(g.epsg, 32633);
        assert_eq!(g.transform.origin_x, 300000.0);
        assert_eq!(g.transform.origin_y, 6200040.0);
        assert_eq!(g.transform.pixel_height, -20.0);

        // PixelIsPoint: the tiepoint is the centre of pixel (0, 0).
        tags.keys = keys(2, 3072, 32633);
        tags.tiepoints = Some(vec![0.0, 0.0, 0.0, 300010.0, 6200030.0, 0.0]);
        let g = georef_from_tags(&tags, 5, 6).unwrap().unwrap();
        assert_eq!(
            (g.transform.origin_x, g.transform.origin_y),
            (300000.0, 6200040.0)
        );

        tags.keys = keys(1, 2048, 4326);
        let e = georef_from_tags(&tags, 5, 6).unwrap_err();
        assert!(e.contains("not a projected CRS"), "{e}");

        tags.keys = keys(1, 3072, 32767);
        assert!(georef_from_tags(&tags, 5, 6).is_err());

        tags.keys = keys(1, 3072, 32633);
        let mut m = vec![0.0; 16];
        m[0] = 10.0;
        m[1] = 0.5; // rotation term
        m[3] = 300000.0;
        m[5] = -10.0;
        m[7] = 6200040.0;
        tags.transformation = Some(m.clone());
        let e = georef_from_tags(&tags, 5, 6).unwrap_err();
        assert!(e.contains("rotated"), "{e}");
        m[1] = 0.0;
        tags.transformation = Some(m);
        let g = georef_from_tags(&tags, 5, 6).unwrap().unwrap();
        assert_eq!(g.transform.pixel_width, 10.0);

        tags.transformation = None;
        tags.tiepoints = Some(vec![0.0; 12]);
        assert!(georef_from_tags(&tags, 5, 6)
            .unwrap_err()
            .contains("ground control"));

        tags.keys = None;
        assert_eq!(georef_from_tags(&tags, 5, 6), Ok(None));
        assert!(parse_geokeys(&[1, 1, 0, 5, 1024]).is_err());
        assert!(parse_geokeys(&[1, 1]).is_err());
    }

    /// A tiny xorshift generator, so the fuzz cases are reproducible without a crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn truncated_and_corrupted_files_are_errors_not_panics() {
        let (deflate, _) = sample_tiff(40, 30);
        let data: Vec<u16> = (0..1200u16).map(|v| v.wrapping_mul(53)).collect();
        let lzw = encode_with(tiff::encoder::Compression::Lzw, 40, 30, &data);
        let plain = encode_with(tiff::encoder::Compression::Uncompressed, 40, 30, &data);
        for bytes in [&deflate, &lzw, &plain] {
            for cut in 0..bytes.len() {
                let r = decode_u16(&bytes[..cut], Path::new("cut.tif"));
                match r {
                    Err(GranuleError::Tiff { path, .. }) => assert_eq!(path, Path::new("cut.tif")),
                    Err(GranuleError::TooLarge { .. }) => {}
                    other => panic!("truncated at {cut}: {other:?}"),
                }
            }
            for pos in 0..bytes.len() {
                let mut b = bytes.clone();
                b[pos] ^= 0xFF;
                // Flips inside pixel data may still decode; only the absence of panics
                // and a sane size matter here.
                if let Ok((r, _)) = decode_u16(&b, Path::new("flip.tif")) {
                    assert_eq!(r.data.len(), r.width * r.height);
                }
            }
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..2000 {
                let mut b = bytes.clone();
                for _ in 0..4 {
                    let pos = (xorshift(&mut state) % b.len() as u64) as usize;
                    b[pos] = xorshift(&mut state) as u8;
                }
                let _ = decode_u16(&b, Path::new("rand.tif"));
                let _ = peek_dimensions(&mut Cursor::new(&b));
            }
        }
    }

    /// Reads columns `columns` of an in-memory TIFF through [`TiffRows`], chunk row by
    /// chunk row, checking every chunk row's width.
    fn read_columns(
        bytes: &[u8],
        columns: std::ops::Range<usize>,
    ) -> Result<Raster<u16>, GranuleError> {
        let (mut rows, _) = rows_from_bytes(bytes.to_vec(), Path::new("c.tif"))?;
        rows.set_columns(columns.clone())?;
        assert_eq!(rows.columns(), columns);
        let (mut data, mut height) = (Vec::new(), 0);
        while let Some(r) = rows.next_rows()? {
            assert_eq!(r.width, columns.len());
            data.extend_from_slice(&r.data);
            height += r.height;
        }
        Ok(Raster::from_vec(columns.len(), height, data).unwrap())
    }

    /// First column, last column, one whole tile, ranges across tile borders, all.
    const RANGES_37: [(usize, usize); 7] = [
        (0, 1),
        (36, 37),
        (16, 32),
        (15, 17),
        (10, 35),
        (33, 37),
        (0, 37),
    ];

    #[test]
    fn tiled_column_ranges_match_the_whole_band() {
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 7919 % 65536) as u16).collect();
        for tile in [16, 32] {
            let bytes = tiled_zstd_for_tests(w, h, tile, &data, &[]);
            let (whole, g) = decode_u16(&bytes, Path::new("t.tif")).unwrap();
            assert_eq!((whole.width, whole.height, g), (w, h, None));
            assert_eq!(whole.data, data, "the fixture decodes to its pixels");
            for (a, b) in RANGES_37 {
                let r = read_columns(&bytes, a..b).unwrap();
                assert_eq!(r.height, h);
                assert_eq!(
                    r.data,
                    crop_columns_for_tests(&whole.data, w, a..b),
                    "{tile}-px tiles, columns {a}..{b}"
                );
            }
        }
    }

    #[test]
    fn striped_column_ranges_are_cropped_strips() {
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i * 31 % 65536) as u16).collect();
        let (deflate, _) = sample_tiff(w, h);
        let lzw = encode_with(tiff::encoder::Compression::Lzw, 37, 53, &data);
        for bytes in [deflate, lzw] {
            let (whole, _) = decode_u16(&bytes, Path::new("s.tif")).unwrap();
            for (a, b) in RANGES_37 {
                let r = read_columns(&bytes, a..b).unwrap();
                assert_eq!(r.height, h);
                assert_eq!(r.data, crop_columns_for_tests(&whole.data, w, a..b));
            }
        }
    }

    #[test]
    fn tiles_outside_the_column_range_are_not_decoded() {
        let (w, h) = (37, 53);
        let data: Vec<u16> = (0..w * h).map(|i| (i % 65536) as u16).collect();
        // Tile 5 is tile row 1, tile column 2: columns 32..37, rows 16..32.
        let bytes = tiled_zstd_for_tests(w, h, 16, &data, &[5]);
        let e = decode_u16(&bytes, Path::new("c.tif")).unwrap_err();
        assert!(matches!(e, GranuleError::Tiff { .. }), "{e}");
        for (a, b) in [(0, 32), (16, 32), (31, 32)] {
            let r = read_columns(&bytes, a..b).unwrap();
            assert_eq!(r.data, crop_columns_for_tests(&data, w, a..b), "{a}..{b}");
        }
        for (a, b) in [(32, 37), (31, 33), (0, 37), (36, 37)] {
            match read_columns(&bytes, a..b) {
                Err(GranuleError::Tiff { path, reason }) => {
                    assert_eq!(path, Path::new("c.tif"));
                    assert!(reason.contains("decoding pixels"), "{reason}");
                }
                other => panic!("columns {a}..{b}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_column_ranges_are_refused() {
        let (w, h) = (37, 53);
        let data = vec![7u16; w * h];
        let tiled = tiled_zstd_for_tests(w, h, 16, &data, &[]);
        let (striped, _) = sample_tiff(w, h);
        for bytes in [tiled, striped] {
            let (mut rows, _) = rows_from_bytes(bytes, Path::new("b.tif")).unwrap();
            assert_eq!(rows.columns(), 0..w, "all columns by default");
            for ((a, b), why) in [
                ((5, 5), "empty"),
                ((6, 5), "empty"),
                ((0, 38), "beyond"),
                ((37, 38), "beyond"),
                ((40, 50), "beyond"),
            ] {
                match rows.set_columns(a..b) {
                    Err(GranuleError::Tiff { path, reason }) => {
                        assert_eq!(path, Path::new("b.tif"));
                        assert!(reason.contains(why), "{a}..{b}: {reason}");
                    }
                    other => panic!("columns {a}..{b}: {other:?}"),
                }
            }
            assert_eq!(rows.columns(), 0..w, "a refused range changes nothing");
            rows.set_columns(3..9).unwrap();
            assert_eq!(rows.next_rows().unwrap().unwrap().width, 6);
            let e = rows.set_columns(0..w).unwrap_err();
            assert!(e.to_string().contains("after"), "{e}");
        }
    }
}
