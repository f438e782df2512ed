//! The block front end of the COG writer: pixels arrive as rectangles of one band at a
//! time ([`CogBlockWriter::push_block`]), in any order and any partition of the image,
//! and each 256×256 tile is compressed to the spill file as soon as its last pixel
//! arrives. Whole rows of every band ([`CogBlockWriter::push_rows`]) are one such
//! partition.
//!
//! # Memory
//!
//! Only incomplete tiles are held: per (level, band, tile) an assembly buffer of the
//! tile's own size, allocated at its first pixel and handed to the compressor at its
//! last, with a coverage bitmap of one bit per pixel (1/16 of a `u16` tile) that refuses
//! a pixel written twice. A completed tile's 2×2 overview (a quarter tile) is pushed as
//! a block into the next level, whose tiles fill the same way. There are no row buffers
//! of the image width: what is held is the tiles the caller has started and not
//! finished ([`CogBlockWriter::pending_bytes`]; for strips or panels in order, the
//! tiles along the seam between written and unwritten pixels, one tile row or column
//! per level and band), plus up to [`super::TILES_PER_ROUND`] complete tiles and their
//! compressed bytes while a round of them is compressed (in parallel, over
//! [`CogOptions::threads`]), plus a few words of state per tile of the file.
//!
//! A tile that a block leaves incomplete, with no pixel missing in the block's columns,
//! is *parked*: its samples and bitmap are held zstd-compressed (level
//! [`PARK_LEVEL`], no predictor) until a later block reaches it. What is missing then
//! lies beside the block, not below it, so the next block of the same panel or strip
//! will not need it: for panels written top to bottom this is the column of seam tiles
//! along the panel's right edge, over the whole height, which would otherwise be held
//! uncompressed until the next panel. Tiles missing rows below (the bottom of a strip)
//! stay as they are, since the next strip completes them.
//!
//! # Byte identity
//!
//! The file is byte-identical to [`super::write_cog_with`] on the same pixels, whatever
//! the order and partition of the blocks: tiles are encoded by the same
//! [`super::encode_tile`], overviews computed by the same `downsample_rows` arithmetic
//! (tile origins are multiples of 256, so no 2×2 block straddles two tiles, and an edge
//! tile of odd size is the image's own edge, rounded up the same way), and the file is
//! laid out by the same `lay_out_and_copy`, which takes each tile's place in the spill
//! file from a table, so the order tiles complete in does not reach the output. The
//! tests compare files byte for byte.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{
    check_image, downsample_rows, encode_tile, lay_out_and_copy, level_dims, parallel_map,
    thread_count, tile_encoder, CogOptions, CogSample, Layout, TILE, TILES_PER_ROUND,
};
use crate::granule::GeoRef;
use crate::product::ProductError;
use crate::raster::Raster;

/// Coverage bitmap words per tile row: one bit per column of a 256-wide tile.
const WORDS_PER_ROW: usize = TILE / 64;

/// A borrowed rectangle of samples, row-major: a caller's [`Raster`], rows of a
/// `push_rows` slice, or a tile's overview, without copying any of them.
#[derive(Clone, Copy)]
struct Block<'a, T> {
    data: &'a [T],
    width: usize,
    height: usize,
}

/// A tile of one band at one level that has some but not all of its pixels.
struct TileBuf<T> {
    /// The samples, of the tile's own size (smaller than 256×256 at the right and
    /// bottom edges of a level), so a complete one is exactly what `encode_tile` and
    /// `downsample_rows` take.
    pixels: Raster<T>,
    /// One bit per pixel written, [`WORDS_PER_ROW`] words per row: how a pixel written
    /// twice is refused instead of silently replacing the first value.
    written: Vec<u64>,
    /// Pixels written; the tile is complete when this reaches its area.
    filled: usize,
}

impl<T: CogSample> TileBuf<T> {
    fn new(width: usize, height: usize) -> Self {
        TileBuf {
            pixels: Raster::filled(width, height, T::default()),
            written: vec![0; height * WORDS_PER_ROW],
            filled: 0,
        }
    }
}

/// Bytes one assembly buffer of a `width`×`height` tile holds (samples and bitmap).
fn tile_bytes<T>(width: usize, height: usize) -> usize {
    width * height * std::mem::size_of::<T>() + height * WORDS_PER_ROW * 8
}

/// The zstd level of parked tiles: the fastest positive level, since a parked tile is
/// compressed and decompressed once for every time a panel seam crosses it.
pub(super) const PARK_LEVEL: i32 = 1;

/// An incomplete tile held compressed ([`TileState::Parked`]).
struct Parked {
    /// The samples, as [`CogSample::write_le`] bytes, zstd-compressed.
    samples: Vec<u8>,
    /// The coverage bitmap, as little-endian words, zstd-compressed.
    written: Vec<u8>,
    /// Pixels written.
    filled: usize,
}

impl Parked {
    /// Bytes held.
    fn bytes(&self) -> usize {
        self.samples.len() + self.written.len()
    }
}

/// The zstd contexts of parking, kept so that each tile does not make its own.
struct Parking {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Parking {
    fn new() -> std::io::Result<Self> {
        Ok(Parking {
            compressor: zstd::bulk::Compressor::new(PARK_LEVEL)?,
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    /// `tile`, compressed.
    fn park<T: CogSample>(&mut self, tile: &TileBuf<T>) -> std::io::Result<Parked> {
        let mut raw = Vec::with_capacity(tile.pixels.data.len() * std::mem::size_of::<T>());
        T::write_le(&tile.pixels.data, &mut raw);
        let samples = self.compressor.compress(&raw)?;
        raw.clear();
        for w in &tile.written {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        let written = self.compressor.compress(&raw)?;
        Ok(Parked {
            samples,
            written,
            filled: tile.filled,
        })
    }

    /// The bitmap of a parked `height`-row tile.
    fn bitmap(&mut self, p: &Parked, height: usize) -> std::io::Result<Vec<u64>> {
        let raw = self
            .decompressor
            .decompress(&p.written, height * WORDS_PER_ROW * 8)?;
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        if words.len() != height * WORDS_PER_ROW {
            return Err(std::io::Error::other(format!(
                "a parked bitmap of {} words for {height} rows",
                words.len()
            )));
        }
        Ok(words)
    }

    /// The `width`×`height` tile that `p` holds.
    fn unpark<T: CogSample>(
        &mut self,
        p: &Parked,
        width: usize,
        height: usize,
    ) -> std::io::Result<TileBuf<T>> {
        let n = width * height;
        let raw = self
            .decompressor
            .decompress(&p.samples, n * std::mem::size_of::<T>())?;
        let mut data = Vec::with_capacity(n);
        T::read_le(&raw, &mut data);
        let pixels = Raster::from_vec(width, height, data).ok_or_else(|| {
            std::io::Error::other(format!("a parked {width}x{height} tile of the wrong size"))
        })?;
        Ok(TileBuf {
            pixels,
            written: self.bitmap(p, height)?,
            filled: p.filled,
        })
    }
}

/// Where a tile stands.
enum TileState<T> {
    /// No pixel yet: nothing allocated.
    Empty,
    /// Being assembled.
    Pending(TileBuf<T>),
    /// Being assembled, held compressed until a block reaches it again.
    Parked(Parked),
    /// Handed to the compressor in the current round (complete, bytes not yet spilled).
    Compressing,
    /// Compressed into the spill file: (offset, length).
    Done(u64, u64),
}

/// One level (full resolution or an overview) of every band.
struct Level<T> {
    width: usize,
    height: usize,
    tiles_x: usize,
    tiles_y: usize,
    /// Per band, the tiles in row-major order (the TIFF order within a band).
    tiles: Vec<Vec<TileState<T>>>,
}

impl<T> Level<T> {
    /// The size of tile (`tx`, `ty`).
    fn tile_size(&self, tx: usize, ty: usize) -> (usize, usize) {
        (
            TILE.min(self.width - tx * TILE),
            TILE.min(self.height - ty * TILE),
        )
    }
}

/// A complete tile waiting for its compression round.
struct Ready<T> {
    band: usize,
    tx: usize,
    ty: usize,
    pixels: Raster<T>,
}

/// A COG assembled from blocks of pixels. Create it, push every pixel of every band
/// exactly once (as [`push_block`](Self::push_block) rectangles or
/// [`push_rows`](Self::push_rows) strips, in any order), then
/// [`finish`](Self::finish). Dropping it unfinished leaves `path` unwritten (the spill
/// file is unnamed and vanishes).
///
/// A refused push ([`ProductError::Invalid`]) changes nothing, and the writer can go
/// on. After a compression or spill error the writer refuses everything (its tiles are
/// no longer consistent); drop it.
pub struct CogBlockWriter<T: CogSample> {
    /// The output, written only by `finish`.
    path: PathBuf,
    /// Where the spill file lives (the output's directory: same file system, and the
    /// directory named by spill I/O errors).
    spill_dir: PathBuf,
    georef: GeoRef,
    /// One per band; their count is the band count.
    descriptions: Vec<String>,
    /// As given, for `GDAL_NODATA`.
    nodata: Option<f64>,
    /// As `T`, for the overview arithmetic.
    nodata_t: Option<T>,
    options: CogOptions,
    /// Compression threads (`options.threads` resolved).
    threads: usize,
    /// Full resolution first, then the overviews of `level_dims`.
    levels: Vec<Level<T>>,
    /// Compressed tiles in completion order; `Done` says where each one lies.
    spill: BufWriter<std::fs::File>,
    spill_len: u64,
    /// Bytes of the `Pending` buffers and `Parked` tiles, kept as they change so that
    /// [`pending_bytes`](Self::pending_bytes) is free.
    pending_bytes: usize,
    /// The most that [`pending_bytes`](Self::pending_bytes) has been.
    peak_pending_bytes: usize,
    parking: Parking,
    /// Rows appended by `push_rows`: where its next strip goes.
    rows_pushed: usize,
    /// Set by a compression or spill error, after which tile states are unreliable.
    failed: bool,
}

impl<T: CogSample> CogBlockWriter<T> {
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
        let spill_dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let spill =
            tempfile::tempfile_in(&spill_dir).map_err(|e| ProductError::io(&spill_dir, e))?;
        let parking =
            Parking::new().map_err(|e| parking_error(path, "zstd contexts for parked tiles", e))?;
        let levels = level_dims(georef.width, georef.height)
            .into_iter()
            .map(|(width, height)| {
                let (tiles_x, tiles_y) = (width.div_ceil(TILE), height.div_ceil(TILE));
                Level {
                    width,
                    height,
                    tiles_x,
                    tiles_y,
                    tiles: (0..descriptions.len())
                        .map(|_| (0..tiles_x * tiles_y).map(|_| TileState::Empty).collect())
                        .collect(),
                }
            })
            .collect();
        Ok(CogBlockWriter {
            path: path.to_path_buf(),
            spill_dir,
            georef: *georef,
            descriptions: descriptions.iter().map(|d| d.to_string()).collect(),
            nodata,
            nodata_t,
            options: *options,
            threads: thread_count(options.threads),
            levels,
            spill: BufWriter::with_capacity(1 << 20, spill),
            spill_len: 0,
            pending_bytes: 0,
            peak_pending_bytes: 0,
            parking,
            rows_pushed: 0,
            failed: false,
        })
    }

    /// Rows of the full-resolution image appended by [`push_rows`](Self::push_rows)
    /// (pixels pushed as blocks do not count).
    pub fn rows_written(&self) -> usize {
        self.rows_pushed
    }

    /// Bytes held in incomplete tiles (samples and coverage bitmaps, every level and
    /// band; compressed for parked tiles): 0 once the image is complete.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The most that [`pending_bytes`](Self::pending_bytes) has been so far.
    pub fn peak_pending_bytes(&self) -> usize {
        self.peak_pending_bytes
    }

    /// Writes `block`, full-resolution pixels of band `band` (0-based), with its top
    /// left pixel at column `col`, row `row` of the image.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] (and nothing is written) when `band` is out of range,
    /// the block's data length is not its width × height, the block goes past the
    /// image, or a pixel of it was written before; compression and spill errors as
    /// [`super::write_cog`].
    pub fn push_block(
        &mut self,
        band: usize,
        col: usize,
        row: usize,
        block: &Raster<T>,
    ) -> Result<(), ProductError> {
        self.usable()?;
        if band >= self.descriptions.len() {
            return Err(ProductError::invalid(format!(
                "band index {band} pushed to a {}-band COG",
                self.descriptions.len()
            )));
        }
        if block.width.checked_mul(block.height) != Some(block.data.len()) {
            return Err(ProductError::invalid(format!(
                "a {}x{} block holds {} samples",
                block.width,
                block.height,
                block.data.len()
            )));
        }
        let b = Block {
            data: &block.data,
            width: block.width,
            height: block.height,
        };
        self.check_free(band, col, row, b)?;
        self.guarded(|w| {
            let mut ready = Vec::new();
            w.place(0, band, col, row, b, &mut ready)?;
            w.flush(0, ready)
        })
    }

    /// Appends the next rows of every band below those of earlier calls: `bands[b]`
    /// holds whole rows of band `b` (a multiple of the image width), the same number of
    /// rows for every band. The tiles these rows complete, of all bands, are compressed
    /// together.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] (and nothing is written) when the band count or a
    /// slice length is wrong, the rows go past the image's height, or a pixel of them
    /// was written before by [`push_block`](Self::push_block); compression and spill
    /// errors as [`super::write_cog`].
    pub fn push_rows(&mut self, bands: &[&[T]]) -> Result<(), ProductError> {
        self.usable()?;
        let (w, h) = (self.levels[0].width, self.levels[0].height);
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
        let rows = len / w;
        let row = self.rows_pushed;
        if row + rows > h {
            return Err(ProductError::invalid(format!(
                "{} rows pushed past the image height {h}",
                row + rows
            )));
        }
        let blocks: Vec<Block<'_, T>> = bands
            .iter()
            .map(|data| Block {
                data,
                width: w,
                height: rows,
            })
            .collect();
        for (band, &b) in blocks.iter().enumerate() {
            self.check_free(band, 0, row, b)?;
        }
        self.guarded(|wr| {
            let mut ready = Vec::new();
            for (band, &b) in blocks.iter().enumerate() {
                wr.place(0, band, 0, row, b, &mut ready)?;
            }
            wr.flush(0, ready)
        })?;
        self.rows_pushed += rows;
        Ok(())
    }

    /// Writes the file once every pixel of every band has been pushed.
    ///
    /// # Errors
    /// [`ProductError::Invalid`] when pixels are missing (saying how many, and in how
    /// many tiles); I/O errors as [`super::write_cog`].
    pub fn finish(mut self) -> Result<(), ProductError> {
        self.usable()?;
        tracing::debug!(
            peak_pending_mib = self.peak_pending_bytes >> 20,
            path = %self.path.display(),
            "every tile arrived; at most this much was held in incomplete tiles"
        );
        let level0 = &self.levels[0];
        let (mut tiles, mut pixels) = (0usize, 0usize);
        for band in &level0.tiles {
            for (i, state) in band.iter().enumerate() {
                let (tw, th) = level0.tile_size(i % level0.tiles_x, i / level0.tiles_x);
                let missing = match state {
                    TileState::Done(..) => 0,
                    TileState::Pending(t) => tw * th - t.filled,
                    TileState::Parked(p) => tw * th - p.filled,
                    TileState::Empty | TileState::Compressing => tw * th,
                };
                if missing > 0 {
                    tiles += 1;
                    pixels += missing;
                }
            }
        }
        if tiles > 0 {
            let nbands = self.descriptions.len();
            return Err(ProductError::invalid(format!(
                "{pixels} of {} pixels were not written, in {tiles} of {} full-resolution \
                 tiles ({nbands} bands)",
                level0.width * level0.height * nbands,
                level0.tiles_x * level0.tiles_y * nbands,
            )));
        }
        // Per level, in TIFF tile order (band, then row-major).
        let mut locs: Vec<Vec<(u64, u64)>> = Vec::with_capacity(self.levels.len());
        for (l, level) in self.levels.iter().enumerate() {
            let mut at =
                Vec::with_capacity(level.tiles_x * level.tiles_y * self.descriptions.len());
            for state in level.tiles.iter().flatten() {
                match state {
                    TileState::Done(o, n) => at.push((*o, *n)),
                    // Every overview pixel follows from full-resolution tiles, all done.
                    _ => {
                        return Err(ProductError::invalid(format!(
                            "overview level {l} is incomplete although every pixel was \
                             written (a bug of the block writer)"
                        )))
                    }
                }
            }
            locs.push(at);
        }
        let spill_dir = std::mem::take(&mut self.spill_dir);
        let spill = self
            .spill
            .into_inner()
            .map_err(|e| ProductError::io(&spill_dir, e.into_error()))?;
        let dims: Vec<(usize, usize)> = self.levels.iter().map(|l| (l.width, l.height)).collect();
        let descriptions: Vec<&str> = self.descriptions.iter().map(|d| d.as_str()).collect();
        lay_out_and_copy::<T>(
            &self.path,
            &spill_dir,
            &spill,
            &Layout {
                georef: &self.georef,
                descriptions: &descriptions,
                nodata: self.nodata,
                dims: &dims,
                locs: &locs,
                force_bigtiff: self.options.force_bigtiff,
            },
        )
    }

    /// Refuses a writer an earlier compression or spill error left inconsistent.
    fn usable(&self) -> Result<(), ProductError> {
        if self.failed {
            return Err(ProductError::invalid(
                "the COG writer failed earlier and cannot go on",
            ));
        }
        Ok(())
    }

    /// Runs `f`, marking the writer failed when it fails: `f` mutates tiles and the
    /// spill file, and an error in the middle leaves them inconsistent.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), ProductError>,
    ) -> Result<(), ProductError> {
        let r = f(self);
        self.failed = r.is_err();
        r
    }

    /// Refuses a full-resolution block that goes past the image or covers a pixel
    /// already written; checks everything before `place` changes anything.
    fn check_free(
        &mut self,
        band: usize,
        col: usize,
        row: usize,
        b: Block<'_, T>,
    ) -> Result<(), ProductError> {
        let level = &self.levels[0];
        let (end_c, end_r) = (col.checked_add(b.width), row.checked_add(b.height));
        let inside =
            matches!((end_c, end_r), (Some(c), Some(r)) if c <= level.width && r <= level.height);
        if !inside {
            return Err(ProductError::invalid(format!(
                "a {}x{} block at column {col}, row {row} goes past the {}x{} image",
                b.width, b.height, level.width, level.height
            )));
        }
        if b.width == 0 || b.height == 0 {
            return Ok(());
        }
        let twice = |c: usize, r: usize| {
            ProductError::invalid(format!(
                "band {band}: the {}x{} block at column {col}, row {row} writes pixel \
                 (column {c}, row {r}) a second time",
                b.width, b.height
            ))
        };
        for ty in row / TILE..=(row + b.height - 1) / TILE {
            for tx in col / TILE..=(col + b.width - 1) / TILE {
                let (x0, y0) = (tx * TILE, ty * TILE);
                let (c0, c1) = (col.max(x0), (col + b.width).min(x0 + TILE));
                let (r0, r1) = (row.max(y0), (row + b.height).min(y0 + TILE));
                let unparked;
                let written = match &level.tiles[band][ty * level.tiles_x + tx] {
                    TileState::Empty => continue,
                    TileState::Pending(t) => &t.written,
                    TileState::Parked(p) => {
                        let (_, th) = level.tile_size(tx, ty);
                        unparked = self
                            .parking
                            .bitmap(p, th)
                            .map_err(|e| parking_error(&self.path, "reading a parked tile", e))?;
                        &unparked
                    }
                    TileState::Compressing | TileState::Done(..) => return Err(twice(c0, r0)),
                };
                for r in r0..r1 {
                    let words = &written[(r - y0) * WORDS_PER_ROW..][..WORDS_PER_ROW];
                    if let Some(c) = first_set(words, c0 - x0, c1 - x0) {
                        return Err(twice(x0 + c, r));
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies `b` (already checked) into the tiles of `level` it covers, moving the
    /// tiles it completes to `ready`, whose rounds are compressed whenever they fill.
    fn place(
        &mut self,
        level: usize,
        band: usize,
        col: usize,
        row: usize,
        b: Block<'_, T>,
        ready: &mut Vec<Ready<T>>,
    ) -> Result<(), ProductError> {
        if b.width == 0 || b.height == 0 {
            return Ok(());
        }
        for ty in row / TILE..=(row + b.height - 1) / TILE {
            for tx in col / TILE..=(col + b.width - 1) / TILE {
                let lv = &mut self.levels[level];
                let (tw, th) = lv.tile_size(tx, ty);
                let (x0, y0) = (tx * TILE, ty * TILE);
                let (c0, c1) = (col.max(x0), (col + b.width).min(x0 + TILE));
                let (r0, r1) = (row.max(y0), (row + b.height).min(y0 + TILE));
                let state = &mut lv.tiles[band][ty * lv.tiles_x + tx];
                match state {
                    TileState::Empty => {
                        *state = TileState::Pending(TileBuf::new(tw, th));
                        self.pending_bytes += tile_bytes::<T>(tw, th);
                    }
                    TileState::Parked(p) => {
                        let tile = self
                            .parking
                            .unpark(p, tw, th)
                            .map_err(|e| parking_error(&self.path, "unparking a tile", e))?;
                        self.pending_bytes -= p.bytes();
                        self.pending_bytes += tile_bytes::<T>(tw, th);
                        *state = TileState::Pending(tile);
                    }
                    _ => {}
                }
                let (complete, parked) = match state {
                    TileState::Pending(tile) => {
                        for r in r0..r1 {
                            let src = &b.data[(r - row) * b.width + (c0 - col)..][..c1 - c0];
                            tile.pixels.data[(r - y0) * tw + (c0 - x0)..][..c1 - c0]
                                .copy_from_slice(src);
                            let words =
                                &mut tile.written[(r - y0) * WORDS_PER_ROW..][..WORDS_PER_ROW];
                            set_bits(words, c0 - x0, c1 - x0);
                        }
                        tile.filled += (c1 - c0) * (r1 - r0);
                        let complete = tile.filled == tw * th;
                        // Nothing missing in the block's columns: the rest lies beside it,
                        // so the next block of its strip or panel will not come here.
                        let idle = !complete
                            && (0..th).all(|r| {
                                all_set(
                                    &tile.written[r * WORDS_PER_ROW..][..WORDS_PER_ROW],
                                    c0 - x0,
                                    c1 - x0,
                                )
                            });
                        let parked = if idle {
                            let p = self
                                .parking
                                .park(tile)
                                .map_err(|e| parking_error(&self.path, "parking a tile", e))?;
                            Some(p)
                        } else {
                            None
                        };
                        (complete, parked)
                    }
                    // check_free refuses full-resolution pixels written twice, and
                    // overview blocks come from distinct tiles of the level below.
                    _ => {
                        return Err(ProductError::invalid(format!(
                            "level {level} band {band} tile ({tx}, {ty}) written after it \
                             was complete (a bug of the block writer)"
                        )))
                    }
                };
                if let Some(p) = parked {
                    self.pending_bytes -= tile_bytes::<T>(tw, th);
                    self.pending_bytes += p.bytes();
                    *state = TileState::Parked(p);
                } else if complete {
                    if let TileState::Pending(tile) =
                        std::mem::replace(state, TileState::Compressing)
                    {
                        self.pending_bytes -= tile_bytes::<T>(tw, th);
                        ready.push(Ready {
                            band,
                            tx,
                            ty,
                            pixels: tile.pixels,
                        });
                    }
                }
                self.peak_pending_bytes = self.peak_pending_bytes.max(self.pending_bytes);
                if ready.len() >= TILES_PER_ROUND {
                    self.flush(level, std::mem::take(ready))?;
                }
            }
        }
        Ok(())
    }

    /// Compresses the complete tiles `ready` of `level` in parallel (each with its
    /// overview, a quarter tile), spills them, and pushes the overviews into the next
    /// level, compressing the tiles they complete in turn.
    fn flush(&mut self, level: usize, ready: Vec<Ready<T>>) -> Result<(), ProductError> {
        if ready.is_empty() {
            return Ok(());
        }
        let last = level + 1 == self.levels.len();
        let (zstd_level, nodata) = (self.options.zstd_level, self.nodata_t);
        let results = parallel_map(
            ready.len(),
            self.threads,
            || tile_encoder::<T>(zstd_level),
            |(compressor, pad, raw), i| {
                let t = &ready[i].pixels;
                let bytes = encode_tile(t, 0, 0, compressor, pad, raw);
                let overview = (!last).then(|| downsample_rows(t, nodata, 0..t.height.div_ceil(2)));
                (bytes, overview)
            },
        );
        // The full-resolution samples are no longer needed; keep what says where they go.
        let meta: Vec<(usize, usize, usize, usize, usize)> = ready
            .iter()
            .map(|r| (r.band, r.tx, r.ty, r.pixels.width, r.pixels.height))
            .collect();
        drop(ready);
        let mut next = Vec::new();
        for ((band, tx, ty, tw, th), (bytes, overview)) in meta.into_iter().zip(results) {
            let bytes = bytes.map_err(|e| ProductError::Tiff {
                path: self.path.clone(),
                reason: format!("zstd level {zstd_level}: {e}"),
            })?;
            self.spill
                .write_all(&bytes)
                .map_err(|e| ProductError::io(&self.spill_dir, e))?;
            let lv = &mut self.levels[level];
            lv.tiles[band][ty * lv.tiles_x + tx] =
                TileState::Done(self.spill_len, bytes.len() as u64);
            self.spill_len += bytes.len() as u64;
            if let Some(data) = overview {
                let b = Block {
                    data: &data,
                    width: tw.div_ceil(2),
                    height: th.div_ceil(2),
                };
                self.place(level + 1, band, tx * TILE / 2, ty * TILE / 2, b, &mut next)?;
            }
        }
        self.flush(level + 1, next)
    }
}

/// The first set bit among bits `c0..c1` of a bitmap row, if any.
fn first_set(words: &[u64], c0: usize, c1: usize) -> Option<usize> {
    let mut c = c0;
    while c < c1 {
        let (w, b) = (c / 64, c % 64);
        let n = (64 - b).min(c1 - c);
        let hit = words[w] & mask(b, n);
        if hit != 0 {
            return Some(w * 64 + hit.trailing_zeros() as usize);
        }
        c += n;
    }
    None
}

/// A parking failure (zstd refusing its own bytes: a bug, or memory exhausted), as the
/// output's error.
fn parking_error(path: &Path, what: &str, e: std::io::Error) -> ProductError {
    ProductError::Tiff {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Whether bits `c0..c1` of a bitmap row are all set.
fn all_set(words: &[u64], c0: usize, c1: usize) -> bool {
    let mut c = c0;
    while c < c1 {
        let (w, b) = (c / 64, c % 64);
        let n = (64 - b).min(c1 - c);
        let m = mask(b, n);
        if words[w] & m != m {
            return false;
        }
        c += n;
    }
    true
}

/// Sets bits `c0..c1` of a bitmap row.
fn set_bits(words: &mut [u64], c0: usize, c1: usize) {
    let mut c = c0;
    while c < c1 {
        let (w, b) = (c / 64, c % 64);
        let n = (64 - b).min(c1 - c);
        words[w] |= mask(b, n);
        c += n;
    }
}

/// `n` (1 to 64) one bits from bit `b` up (`b + n <= 64`).
fn mask(b: usize, n: usize) -> u64 {
    (u64::MAX >> (64 - n)) << b
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

    fn opts() -> CogOptions {
        CogOptions {
            threads: 3,
            ..CogOptions::default()
        }
    }

    /// A block of one band: (band, column, row, width, height).
    type Rect = (usize, usize, usize, usize, usize);

    /// xorshift64*, seeded: partitions and orders are random but reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn shuffle<X>(&mut self, v: &mut [X]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i + 1));
            }
        }
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

    /// Noisy `u16` bands with nodata (0) on scattered pixels and on whole 2×2 blocks
    /// (every overview rule: all valid, some valid, none valid).
    fn u16_bands(w: usize, h: usize, n: u32) -> Vec<Raster<u16>> {
        (0..n)
            .map(|b| {
                let d = noise(w, h, b)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let (c, r) = (i % w, i / w);
                        if i % 97 == 0 || (c / 2 + r / 2) % 23 == 0 {
                            0
                        } else {
                            (v % 4000) as u16
                        }
                    })
                    .collect();
                Raster::from_vec(w, h, d).unwrap()
            })
            .collect()
    }

    fn f32_bands(w: usize, h: usize, n: u32, nodata: f32) -> Vec<Raster<f32>> {
        (0..n)
            .map(|b| {
                let d = noise(w, h, b + 9)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 31 == 0 { nodata } else { v as f32 / 1e6 })
                    .collect();
                Raster::from_vec(w, h, d).unwrap()
            })
            .collect()
    }

    fn u8_bands(w: usize, h: usize, n: u32) -> Vec<Raster<u8>> {
        (0..n)
            .map(|b| {
                let d = noise(w, h, b + 17).into_iter().map(|v| v as u8).collect();
                Raster::from_vec(w, h, d).unwrap()
            })
            .collect()
    }

    /// The whole-raster writer's file for `bands`.
    fn reference<T: CogSample>(
        dir: &Path,
        bands: &[Raster<T>],
        nodata: Option<f64>,
        options: &CogOptions,
    ) -> Vec<u8> {
        let names = names(bands.len());
        let cog: Vec<CogBand<'_, T>> = bands
            .iter()
            .zip(&names)
            .map(|(data, d)| CogBand {
                description: d,
                data,
            })
            .collect();
        let p = dir.join("whole.tif");
        write_cog_with(
            &p,
            &georef(bands[0].width, bands[0].height),
            &cog,
            nodata,
            options,
        )
        .unwrap();
        std::fs::read(&p).unwrap()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("band {i}")).collect()
    }

    fn writer<T: CogSample>(
        p: &Path,
        w: usize,
        h: usize,
        nbands: usize,
        nodata: Option<f64>,
        options: &CogOptions,
    ) -> CogBlockWriter<T> {
        let names = names(nbands);
        let descr: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        CogBlockWriter::<T>::new(p, &georef(w, h), &descr, nodata, options).unwrap()
    }

    /// For each partition, pushes its rectangles (windows of `bands`) in order and
    /// compares the file with the whole-raster writer's, byte for byte.
    fn same_bytes<T: CogSample>(
        bands: &[Raster<T>],
        nodata: Option<f64>,
        partitions: &[(&str, Vec<Rect>)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (bands[0].width, bands[0].height);
        let whole = reference(dir.path(), bands, nodata, &opts());
        for (what, rects) in partitions {
            let p = dir.path().join("blocks.tif");
            let mut wr = writer::<T>(&p, w, h, bands.len(), nodata, &opts());
            for &(b, c, r, bw, bh) in rects {
                wr.push_block(b, c, r, &bands[b].window(c, r, bw, bh))
                    .unwrap_or_else(|e| panic!("{what} {w}x{h}: {e}"));
            }
            assert_eq!(wr.pending_bytes(), 0, "{what} {w}x{h}: tiles left pending");
            wr.finish().unwrap();
            let blocks = std::fs::read(&p).unwrap();
            assert_eq!(whole.len(), blocks.len(), "{what} {w}x{h}: sizes differ");
            assert!(whole == blocks, "{what} {w}x{h}: bytes differ");
        }
    }

    /// Row strips of `k` rows, band after band within each strip.
    fn strips(nb: usize, w: usize, h: usize, k: usize) -> Vec<Rect> {
        (0..h)
            .step_by(k)
            .flat_map(|r| (0..nb).map(move |b| (b, 0, r, w, k.min(h - r))))
            .collect()
    }

    /// Every band cut by random guillotine splits into rectangles of at most
    /// `max_area` pixels, all bands' rectangles in one shuffled order.
    fn guillotine(rng: &mut Rng, nb: usize, w: usize, h: usize, max_area: usize) -> Vec<Rect> {
        let mut out = Vec::new();
        for b in 0..nb {
            let mut todo = vec![(0, 0, w, h)];
            while let Some((c, r, rw, rh)) = todo.pop() {
                if rw * rh <= max_area || (rw < 2 && rh < 2) {
                    out.push((b, c, r, rw, rh));
                } else if rw >= rh {
                    let s = 1 + rng.below(rw - 1);
                    todo.push((c, r, s, rh));
                    todo.push((c + s, r, rw - s, rh));
                } else {
                    let s = 1 + rng.below(rh - 1);
                    todo.push((c, r, rw, s));
                    todo.push((c, r + s, rw, rh - s));
                }
            }
        }
        rng.shuffle(&mut out);
        out
    }

    /// The right part first, then single-pixel-wide columns on both sides of the seam
    /// at column `seam` from right to left, then the left part.
    fn seam_columns(nb: usize, w: usize, h: usize, seam: usize) -> Vec<Rect> {
        let (a, z) = (seam.saturating_sub(3).min(w), (seam + 3).min(w));
        let mut out = Vec::new();
        for b in 0..nb {
            if z < w {
                out.push((b, z, 0, w - z, h));
            }
            out.extend((a..z).rev().map(|c| (b, c, 0, 1, h)));
            if a > 0 {
                out.push((b, 0, 0, a, h));
            }
        }
        out
    }

    /// A grid of `step`-sided blocks offset by `off` (crossing tile boundaries and,
    /// with an odd `off`, overview 2×2 blocks), in shuffled order.
    fn offset_grid(
        rng: &mut Rng,
        nb: usize,
        w: usize,
        h: usize,
        step: usize,
        off: usize,
    ) -> Vec<Rect> {
        let cuts = |n: usize| {
            let mut v = vec![0];
            v.extend((off.min(n)..n).step_by(step).filter(|&x| x > 0));
            v.push(n);
            v.dedup();
            v
        };
        let (xs, ys) = (cuts(w), cuts(h));
        let mut out = Vec::new();
        for b in 0..nb {
            for y in ys.windows(2) {
                for x in xs.windows(2) {
                    out.push((b, x[0], y[0], x[1] - x[0], y[1] - y[0]));
                }
            }
        }
        rng.shuffle(&mut out);
        out
    }

    /// Every partition of the tests for a `w`×`h` image of `nb` bands.
    fn partitions(rng: &mut Rng, nb: usize, w: usize, h: usize) -> Vec<(&'static str, Vec<Rect>)> {
        let mut v = vec![
            ("strips of 77 rows", strips(nb, w, h, 77)),
            ("one block per band", strips(nb, w, h, h)),
            ("guillotine", guillotine(rng, nb, w, h, 30_000)),
            ("offset grid 300/37", offset_grid(rng, nb, w, h, 300, 37)),
            ("seam at 256", seam_columns(nb, w, h, 256)),
            ("seam at 511", seam_columns(nb, w, h, 511)),
        ];
        if w * h <= 4096 {
            v.push(("single pixels", guillotine(rng, nb, w, h, 1)));
        }
        v
    }

    /// 1030×517 has four levels (1030, 515, 258, 129 wide) with odd sizes on several.
    const SIZES: [(usize, usize); 5] = [(1, 1), (3, 2), (255, 257), (300, 700), (1030, 517)];

    #[test]
    fn u16_blocks_in_any_order_equal_the_whole_raster_writer() {
        let mut rng = Rng(0x5eed_0001);
        for (w, h) in SIZES {
            same_bytes(
                &u16_bands(w, h, 2),
                Some(0.0),
                &partitions(&mut rng, 2, w, h),
            );
        }
        let parts = [("no nodata", guillotine(&mut rng, 1, 1030, 517, 5000))];
        same_bytes(&u16_bands(1030, 517, 1), None, &parts);
    }

    #[test]
    fn f32_blocks_in_any_order_equal_the_whole_raster_writer() {
        let mut rng = Rng(0x5eed_0002);
        for (w, h) in SIZES {
            let parts = partitions(&mut rng, 2, w, h);
            same_bytes(&f32_bands(w, h, 2, -1.0), Some(-1.0), &parts);
        }
        let parts = [("NaN nodata", guillotine(&mut rng, 1, 1030, 517, 20_000))];
        same_bytes(&f32_bands(1030, 517, 1, f32::NAN), Some(f64::NAN), &parts);
    }

    #[test]
    fn u8_blocks_in_any_order_equal_the_whole_raster_writer() {
        let mut rng = Rng(0x5eed_0003);
        for (w, h) in SIZES {
            same_bytes(
                &u8_bands(w, h, 1),
                Some(255.0),
                &partitions(&mut rng, 1, w, h),
            );
        }
        let parts = [("no nodata", guillotine(&mut rng, 3, 300, 700, 9000))];
        same_bytes(&u8_bands(300, 700, 3), None, &parts);
    }

    /// Streams `bands` through `push_rows` in strips of `strip` rows and compares the
    /// file with the whole-raster writer's (the coverage of the former row writer).
    fn same_bytes_rows<T: CogSample>(
        bands: &[Raster<T>],
        nodata: Option<f64>,
        strip: usize,
        options: &CogOptions,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (bands[0].width, bands[0].height);
        let whole = reference(dir.path(), bands, nodata, options);
        let p = dir.path().join("streamed.tif");
        let mut wr = writer::<T>(&p, w, h, bands.len(), nodata, options);
        let mut row = 0;
        while row < h {
            let n = strip.min(h - row);
            let slices: Vec<&[T]> = bands
                .iter()
                .map(|b| &b.data[row * w..(row + n) * w])
                .collect();
            wr.push_rows(&slices).unwrap();
            row += n;
            assert_eq!(wr.rows_written(), row);
        }
        assert_eq!(wr.pending_bytes(), 0);
        wr.finish().unwrap();
        let streamed = std::fs::read(&p).unwrap();
        assert_eq!(
            whole.len(),
            streamed.len(),
            "{w}x{h} strip {strip}: sizes differ"
        );
        assert!(whole == streamed, "{w}x{h} strip {strip}: bytes differ");
    }

    #[test]
    fn pushed_rows_equal_the_whole_raster_writer() {
        // Odd sizes, several overview levels, nodata on some pixels, strips that do
        // not divide the tile height.
        for &(w, h, strip) in &[
            (700usize, 613usize, 77usize),
            (300, 1100, 256),
            (200, 100, 7),
        ] {
            same_bytes_rows(&u16_bands(w, h, 3), Some(0.0), strip, &opts());
        }
        let f = f32_bands(530, 517, 2, -1.0);
        same_bytes_rows(&f, Some(-1.0), 100, &opts());
        let big = CogOptions {
            force_bigtiff: true,
            ..opts()
        };
        same_bytes_rows(&f[..1], None, 517, &big);
    }

    #[test]
    fn rows_and_blocks_mix() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (530, 600);
        let bands = u16_bands(w, h, 2);
        let whole = reference(dir.path(), &bands, Some(0.0), &opts());
        let p = dir.path().join("mixed.tif");
        let mut wr = writer::<u16>(&p, w, h, 2, Some(0.0), &opts());
        // The bottom 331 rows as blocks first, then the top as rows.
        for (b, band) in bands.iter().enumerate() {
            wr.push_block(b, 0, 269, &band.window(0, 269, w, h - 269))
                .unwrap();
        }
        let top: Vec<&[u16]> = bands.iter().map(|b| &b.data[..269 * w]).collect();
        wr.push_rows(&top).unwrap();
        assert_eq!(wr.rows_written(), 269);
        let e = wr.push_rows(&[&bands[0].data[..w], &bands[1].data[..w]]);
        assert!(
            matches!(e, Err(ProductError::Invalid { .. })),
            "rows below 269 were pushed as blocks"
        );
        assert_eq!(wr.rows_written(), 269);
        wr.finish().unwrap();
        assert!(whole == std::fs::read(&p).unwrap());
    }

    fn reason(e: Result<(), ProductError>) -> String {
        match e {
            Err(ProductError::Invalid { reason }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_blocks_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (300, 300);
        let bands = u16_bands(w, h, 2);
        let whole = reference(dir.path(), &bands, Some(0.0), &opts());
        let p = dir.path().join("x.tif");
        let mut wr = writer::<u16>(&p, w, h, 2, Some(0.0), &opts());
        let junk = |bw: usize, bh: usize| Raster::filled(bw, bh, 7u16);

        let e = reason(wr.push_block(2, 0, 0, &junk(1, 1)));
        assert!(e.contains("band index 2") && e.contains("2-band"), "{e}");
        let e = reason(wr.push_block(0, 250, 0, &junk(51, 1)));
        assert!(e.contains("goes past the 300x300 image"), "{e}");
        let e = reason(wr.push_block(0, 0, 299, &junk(1, 2)));
        assert!(e.contains("goes past"), "{e}");
        let e = reason(wr.push_block(0, usize::MAX, 0, &junk(2, 1)));
        assert!(e.contains("goes past"), "{e}");
        let short = Raster {
            width: 3,
            height: 3,
            data: vec![7u16; 8],
        };
        let e = reason(wr.push_block(0, 0, 0, &short));
        assert!(e.contains("3x3 block holds 8 samples"), "{e}");

        // An overlap inside a pending tile, reported at the first pixel written twice.
        wr.push_block(0, 10, 10, &bands[0].window(10, 10, 20, 20))
            .unwrap();
        let e = reason(wr.push_block(0, 25, 27, &junk(10, 10)));
        assert!(
            e.contains("band 0") && e.contains("(column 25, row 27)"),
            "{e}"
        );
        // An overlap in the second tile a block covers: the first tile, free, must not
        // have been written either (the final comparison says so).
        wr.push_block(0, 280, 5, &bands[0].window(280, 5, 5, 5))
            .unwrap();
        let e = reason(wr.push_block(0, 200, 0, &junk(100, 20)));
        assert!(e.contains("(column 280, row 5)"), "{e}");
        // An overlap with a tile that is already compressed.
        wr.push_block(1, 0, 0, &bands[1].window(0, 0, 256, 256))
            .unwrap();
        let e = reason(wr.push_block(1, 255, 250, &junk(10, 10)));
        assert!(
            e.contains("band 1") && e.contains("(column 255, row 250)"),
            "{e}"
        );
        let e = reason(wr.push_rows(&[&junk(w, 1).data, &junk(w, 1).data]));
        assert!(e.contains("a second time"), "{e}");
        assert_eq!(wr.rows_written(), 0);

        // A zero-sized block is nothing to write.
        wr.push_block(0, 300, 300, &junk(0, 0)).unwrap();

        // The refusals changed nothing: the rest of the pixels make the same file.
        let written = |b: usize, c: usize, r: usize| match b {
            0 => {
                ((10..30).contains(&c) && (10..30).contains(&r))
                    || ((280..285).contains(&c) && (5..10).contains(&r))
            }
            _ => c < 256 && r < 256,
        };
        let mut rest: Vec<Rect> = (0..2)
            .flat_map(|b| (0..h).flat_map(move |r| (0..w).map(move |c| (b, c, r, 1, 1))))
            .filter(|&(b, c, r, _, _)| !written(b, c, r))
            .collect();
        Rng(0x5eed_0004).shuffle(&mut rest);
        for (b, c, r, bw, bh) in rest {
            wr.push_block(b, c, r, &bands[b].window(c, r, bw, bh))
                .unwrap();
        }
        assert_eq!(wr.pending_bytes(), 0);
        wr.finish().unwrap();
        assert!(whole == std::fs::read(&p).unwrap());
    }

    #[test]
    fn wrong_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        let mut wr = writer::<u16>(&p, 10, 10, 2, Some(0.0), &CogOptions::default());
        let row = vec![1u16; 10];
        let e = reason(wr.push_rows(&[&row]));
        assert!(e.contains("1 bands pushed to a 2-band COG"), "{e}");
        let e = reason(wr.push_rows(&[&row[..9], &row[..9]]));
        assert!(e.contains("whole rows of 10 samples"), "{e}");
        let e = reason(wr.push_rows(&[&row, &row[..0]]));
        assert!(e.contains("the same for every band"), "{e}");
        wr.push_rows(&[&row, &row]).unwrap();
        let many = vec![1u16; 100];
        let e = reason(wr.push_rows(&[&many, &many]));
        assert!(e.contains("11 rows pushed past the image height 10"), "{e}");
        assert_eq!(wr.rows_written(), 1);
        let e = reason(wr.finish());
        assert!(
            e.contains("180 of 200 pixels were not written, in 2 of 2 full-resolution tiles"),
            "{e}"
        );
        assert!(!p.exists());
    }

    #[test]
    fn missing_pixels_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tif");
        let (w, h) = (300, 300);
        let bands = u16_bands(w, h, 1);
        let mut wr = writer::<u16>(&p, w, h, 1, Some(0.0), &opts());
        wr.push_block(0, 0, 0, &bands[0].window(0, 0, w, h - 1))
            .unwrap();
        // Tiles (0, 1) and (1, 1) wait for the last row, and so does the one tile of
        // the 150×150 overview.
        assert_eq!(
            wr.pending_bytes(),
            tile_bytes::<u16>(256, 44) + tile_bytes::<u16>(44, 44) + tile_bytes::<u16>(150, 150)
        );
        let e = reason(wr.finish());
        assert!(
            e.contains("300 of 90000 pixels were not written, in 2 of 4 full-resolution tiles"),
            "{e}"
        );
        assert!(!p.exists());
    }

    #[test]
    fn column_panels_hold_only_the_seam_tiles() {
        // A 3000×2200 image written in 1098-wide full-height panels (a super-resolution
        // tile column at a time), band after band within each panel.
        let dir = tempfile::tempdir().unwrap();
        let (w, h, panel, nb) = (3000, 2200, 1098, 2);
        let bands = u16_bands(w, h, nb as u32);
        let whole = reference(dir.path(), &bands, Some(0.0), &opts());
        let p = dir.path().join("panels.tif");
        let mut wr = writer::<u16>(&p, w, h, nb, Some(0.0), &opts());
        // Between pushes each level holds at most the one column of tiles its seam
        // crosses, per band: full-resolution tiles complete as a prefix of tile
        // columns, so an overview tile column waits only while the first of its two
        // source columns is complete and the second is not.
        let bound: usize = level_dims(w, h)
            .iter()
            .map(|&(_, lh)| nb * lh.div_ceil(TILE) * tile_bytes::<u16>(TILE, TILE))
            .sum();
        // The assembly buffers of one full-height column of tiles, every band.
        let seam: usize = nb
            * (0..h.div_ceil(TILE))
                .map(|ty| tile_bytes::<u16>(TILE, TILE.min(h - ty * TILE)))
                .sum::<usize>();
        for c in (0..w).step_by(panel) {
            let pw = panel.min(w - c);
            for (b, band) in bands.iter().enumerate() {
                wr.push_block(b, c, 0, &band.window(c, 0, pw, h)).unwrap();
                assert!(
                    wr.pending_bytes() <= bound,
                    "{} bytes pending after panel at {c}, bound {bound}",
                    wr.pending_bytes()
                );
            }
            // The seams at 1098 and 2196 cross tile columns 4 and 8, which hold 74 and
            // 148 of their 256 columns after the panel (their overview tiles wait for
            // the next panel's tiles too, so hold nothing yet). They are parked: the
            // noise does not compress, so each tile holds about that fraction of its
            // assembly buffer, and its bitmap next to nothing.
            let end = c + pw;
            if end < w {
                let written = (end % TILE) as f64 / TILE as f64;
                let held = wr.pending_bytes();
                assert!(held > 0, "nothing held at the seam at {end}");
                assert!(
                    held as f64 <= (written + 0.1) * seam as f64,
                    "{held} bytes held at the seam at {end}, {:.0}% of the {seam} bytes of \
                     its assembly buffers, {:.0}% written",
                    100.0 * held as f64 / seam as f64,
                    100.0 * written
                );
            }
        }
        assert_eq!(wr.pending_bytes(), 0);
        wr.finish().unwrap();
        assert!(whole == std::fs::read(&p).unwrap(), "panels: bytes differ");

        // The whole image in one call: 216 tiles, more than one compression round.
        let p = dir.path().join("once.tif");
        let mut wr = writer::<u16>(&p, w, h, nb, Some(0.0), &opts());
        let all: Vec<&[u16]> = bands.iter().map(|b| b.data.as_slice()).collect();
        wr.push_rows(&all).unwrap();
        assert_eq!((wr.rows_written(), wr.pending_bytes()), (h, 0));
        wr.finish().unwrap();
        assert!(
            whole == std::fs::read(&p).unwrap(),
            "one call: bytes differ"
        );
    }

    #[test]
    fn bitmap_ranges_cross_words() {
        let mut words = [0u64; WORDS_PER_ROW];
        set_bits(&mut words, 60, 130);
        assert_eq!(words, [0xF << 60, u64::MAX, 0b11, 0]);
        assert_eq!(first_set(&words, 0, 60), None);
        assert_eq!(first_set(&words, 0, 61), Some(60));
        assert_eq!(first_set(&words, 129, 256), Some(129));
        assert_eq!(first_set(&words, 130, 256), None);
        set_bits(&mut words, 0, 256);
        assert_eq!(words, [u64::MAX; WORDS_PER_ROW]);
        assert_eq!(first_set(&words, 255, 256), Some(255));
    }
}
