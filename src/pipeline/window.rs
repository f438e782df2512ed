//! The streaming input: a granule's harmonised bands as a window of rows that moves
//! down the 10 m grid, fed by a reader thread.
//!
//! The reader thread decodes every band top to bottom ([`BandRows`]) in blocks of
//! [`BLOCK_ROWS`] rows of the 10 m grid (and the matching rows of the 20 m and 60 m
//! bands), harmonises them and sends them on, at most a set number of rows ahead of
//! what the window was last asked for (a [`Gate`]), so decoding of the next strip
//! overlaps inference of this one while memory stays a few strips. A window opened
//! before its turn (the next panel's) may decode less ahead until it is first asked.
//! [`Window::advance`] makes a row range available as a [`Scene`] whose `row0` says
//! where it starts, and drops rows above what the caller still needs.
//!
//! A window holds either the whole width or a panel's columns ([`Bands::panel`]; the
//! band readers then decode only those columns, and the scene's `col0` says where they
//! start). The super-resolution panels each read their own window; the quicklook and
//! the classifier read one full-width window of patch rows
//! ([`super::process`]).
//!
//! Rows and columns are aligned to 6 (the coarsest band's factor), so every band's
//! window starts at a whole pixel of its own grid. An all-nodata or all-saturated band
//! is refused when the windows have passed the whole granule ([`WindowRead::check`]);
//! super-resolution skips tiles without valid guide pixels, so such a granule costs no
//! inference either.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use std::time::{Duration, Instant};

use crate::granule::{Band, BandRows, GeoRef, GranuleSource};
use crate::raster::radiometry::harmonise_in_place;
use crate::raster::Raster;

use super::scene::{checked_grid_10m, Scene, Validity};
use super::PipelineError;

/// Rows of the 10 m grid per block sent by the reader thread: a classifier patch row,
/// and a multiple of every band's factor.
pub const BLOCK_ROWS: usize = 120;

/// The alignment of every window edge (the 60 m factor).
const ALIGN: usize = 6;

/// How far the reader thread may decode: it starts a block only at a 10 m row below
/// `allowed`, which the window raises as it is asked for rows, and stops once `closed`.
struct Gate {
    state: Mutex<GateState>,
    moved: Condvar,
}

struct GateState {
    allowed: usize,
    closed: bool,
}

impl Gate {
    fn new(allowed: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                allowed,
                closed: false,
            }),
            moved: Condvar::new(),
        }
    }

    /// Waits until the block at 10 m row `row` may be decoded; `false` once closed.
    fn wait_for(&self, row: usize) -> bool {
        // A poisoned lock means the window's thread panicked: stop reading.
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        while !st.closed && st.allowed <= row {
            st = match self.moved.wait(st) {
                Ok(st) => st,
                Err(_) => return false,
            };
        }
        !st.closed
    }

    /// Lets the reader decode the blocks that start below 10 m row `allowed`.
    fn allow(&self, allowed: usize) {
        if let Ok(mut st) = self.state.lock() {
            if allowed > st.allowed {
                st.allowed = allowed;
                self.moved.notify_all();
            }
        }
    }

    /// Stops the reader at its next block.
    fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.closed = true;
            self.moved.notify_all();
        }
    }
}

/// One block of every band: 10 m rows `row..row + rows`.
struct Block {
    row: usize,
    rows: usize,
    bands: Vec<(Band, Raster<u16>, Validity)>,
    decode: Duration,
}

/// The opened bands, checked against each other, before any pixel is decoded.
pub struct Bands {
    readers: Vec<(BandRows, f64)>,
    grid10: GeoRef,
    /// The 10 m columns delivered (`start` a multiple of [`ALIGN`]).
    columns: Range<usize>,
}

impl Bands {
    /// Opens `bands` of `source` for streaming: headers read, grids checked as
    /// [`Scene::load`] checks them, the 10 m grid found.
    ///
    /// # Errors
    /// A band's open error, a grid mismatch, or no band at all.
    pub fn open(source: &GranuleSource, bands: &[Band]) -> Result<Bands, PipelineError> {
        let mut readers = Vec::with_capacity(bands.len());
        let mut grids = Vec::with_capacity(bands.len());
        for &band in bands {
            let rows = source.band_rows(band)?;
            let georef = *rows
                .georef()
                .ok_or_else(|| PipelineError::Options(format!("{band}: no grid after opening")))?;
            grids.push((band, georef));
            readers.push((rows, source.metadata.offset(band)));
        }
        let grid10 = checked_grid_10m(source, &grids)?;
        Ok(Bands {
            readers,
            columns: 0..grid10.width,
            grid10,
        })
    }

    /// The 10 m grid of the granule.
    pub fn grid10(&self) -> GeoRef {
        self.grid10
    }

    /// Restricts every band to the 10 m columns `start..end` (a panel): `start` is
    /// rounded down to a multiple of 6 and `end` clamped to the granule, so every band's
    /// columns start at a whole pixel of its own grid. Call before the window starts.
    ///
    /// # Errors
    /// An empty range, or the reader's refusal.
    pub fn panel(mut self, start: usize, end: usize) -> Result<Bands, PipelineError> {
        let w = self.grid10.width;
        let start = (start / ALIGN) * ALIGN;
        let end = end.min(w);
        if start >= end {
            return Err(PipelineError::Options(format!(
                "internal: empty column range {start}..{end} of a granule {w} wide"
            )));
        }
        let mut readers = Vec::with_capacity(self.readers.len());
        for (r, offset) in self.readers {
            let f = r.band().resolution().factor();
            let bw = r.size().0;
            let (c0, c1) = ((start / f).min(bw), end.div_ceil(f).min(bw));
            readers.push((r.with_columns(c0, c1)?, offset));
        }
        self.readers = readers;
        self.columns = start..end;
        Ok(self)
    }

    /// The offsets that harmonisation applies, per band.
    pub fn offsets(&self) -> BTreeMap<Band, f64> {
        self.readers.iter().map(|(r, o)| (r.band(), *o)).collect()
    }

    /// The reader loop: decodes block after block into `tx`, as far as `gate` allows,
    /// until the bottom, the first error (sent, then the loop ends), a closed gate or a
    /// closed channel. Runs on the thread that [`Window::start`] starts.
    fn read_into(mut self, tx: Sender<Result<Block, PipelineError>>, gate: &Gate) {
        let h = self.grid10.height;
        let mut row = 0;
        while row < h {
            if !gate.wait_for(row) {
                return;
            }
            let started = Instant::now();
            let rows = BLOCK_ROWS.min(h - row);
            let mut bands = Vec::with_capacity(self.readers.len());
            let mut failed = None;
            for (reader, offset) in &mut self.readers {
                let f = reader.band().resolution().factor();
                // The last block takes whatever the band has left.
                let n = if row + rows >= h {
                    reader.rows_left()
                } else {
                    rows / f
                };
                match reader.read(n) {
                    Ok(mut r) => {
                        let mut v = Validity::default();
                        v.observe(&r.data);
                        harmonise_in_place(&mut r, *offset);
                        bands.push((reader.band(), r, v));
                    }
                    Err(e) => {
                        failed = Some(e.into());
                        break;
                    }
                }
            }
            let msg = match failed {
                Some(e) => Err(e),
                None => Ok(Block {
                    row,
                    rows,
                    bands,
                    decode: started.elapsed(),
                }),
            };
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                return;
            }
            row += rows;
        }
    }
}

/// The rows of the granule held now, and the reader thread that feeds them.
pub struct Window {
    scene: Scene,
    /// The 10 m columns held.
    columns: Range<usize>,
    /// `None` only while dropping.
    rx: Option<Receiver<Result<Block, PipelineError>>>,
    gate: Arc<Gate>,
    /// 10 m rows the reader may decode beyond the last row asked for.
    ahead: usize,
    reader: Option<std::thread::JoinHandle<()>>,
    /// 10 m rows received so far.
    end: usize,
    validity: BTreeMap<Band, Validity>,
    decode: Duration,
    /// The largest number of 10 m rows held at once.
    peak_rows: usize,
}

impl Window {
    /// Starts the reader thread on `bands` and returns the window it feeds. The thread
    /// decodes up to `strip_rows` rows of the 10 m grid ahead of the rows the window was
    /// last asked for, so a window started before its granule's turn (the daemon's next
    /// job) overlaps that much decoding with the current granule's inference.
    ///
    /// # Errors
    /// [`PipelineError::Options`] when the thread cannot be started.
    pub fn start(
        bands: Bands,
        cloud: Option<crate::granule::CloudMask>,
        strip_rows: usize,
    ) -> Result<Window, PipelineError> {
        Window::start_ahead(bands, cloud, strip_rows, strip_rows)
    }

    /// [`Window::start`], but the reader decodes only `first_rows` of the 10 m grid
    /// until the window is first asked for rows (at least one block): for a window
    /// opened long before it is read (the next panel's), whose read-ahead would
    /// otherwise be held all that time.
    ///
    /// # Errors
    /// [`PipelineError::Options`] when the thread cannot be started.
    pub fn start_ahead(
        bands: Bands,
        cloud: Option<crate::granule::CloudMask>,
        strip_rows: usize,
        first_rows: usize,
    ) -> Result<Window, PipelineError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate::new(first_rows.max(1)));
        let scene = Scene {
            grid10: bands.grid10,
            row0: 0,
            col0: bands.columns.start,
            bands: bands
                .readers
                .iter()
                .map(|(r, _)| (r.band(), Raster::filled(r.columns().len(), 0, 0u16)))
                .collect(),
            cloud,
            offsets: bands.offsets(),
        };
        let bands_columns = bands.columns.clone();
        let reader_gate = Arc::clone(&gate);
        let reader = std::thread::Builder::new()
            .name("s2edge-read".into())
            .spawn(move || bands.read_into(tx, &reader_gate))
            .map_err(|e| PipelineError::Options(format!("cannot start the reader thread: {e}")))?;
        Ok(Window {
            columns: bands_columns,
            scene,
            rx: Some(rx),
            gate,
            ahead: strip_rows,
            reader: Some(reader),
            end: 0,
            validity: BTreeMap::new(),
            decode: Duration::ZERO,
            peak_rows: 0,
        })
    }

    /// The offsets that harmonisation applies, per band.
    pub fn offsets(&self) -> &BTreeMap<Band, f64> {
        &self.scene.offsets
    }

    /// Makes 10 m rows `lo..hi` available (`hi` clamped to the granule) and drops the
    /// rows above `lo`. Both edges only ever move down.
    ///
    /// # Errors
    /// The reader's error; [`PipelineError::Options`] when `lo` asks for rows already
    /// dropped (a caller bug, reported rather than answered wrongly).
    pub fn advance(&mut self, lo: usize, hi: usize) -> Result<&Scene, PipelineError> {
        let h = self.scene.grid10.height;
        let hi = hi.min(h);
        let lo = (lo.min(hi) / ALIGN) * ALIGN;
        if lo < self.scene.row0 {
            return Err(PipelineError::Options(format!(
                "internal: rows from {lo} were asked for after the window dropped them (it starts at {})",
                self.scene.row0
            )));
        }
        // Drop first, so the peak is the rows asked for plus one block.
        let keep_from = lo.min(self.end);
        if keep_from > self.scene.row0 {
            for (band, r) in &mut self.scene.bands {
                let f = band.resolution().factor();
                let drop = (keep_from / f - self.scene.row0 / f).min(r.height);
                r.data.drain(..drop * r.width);
                r.height -= drop;
            }
            self.scene.row0 = keep_from;
        }
        // The reader may go on to `ahead` rows below what is asked for now.
        self.gate.allow(hi.saturating_add(self.ahead));
        if self.end < hi {
            self.reserve_to(hi);
        }
        while self.end < hi {
            let rx = self
                .rx
                .as_ref()
                .ok_or_else(|| PipelineError::Options("internal: the window is closed".into()))?;
            let block = rx.recv().map_err(|_| {
                PipelineError::Options("internal: the band reader stopped before the bottom".into())
            })??;
            debug_assert_eq!(block.row, self.end);
            for (band, rows, v) in block.bands {
                self.validity.entry(band).or_default().merge(v);
                if let Some(r) = self.scene.bands.get_mut(&band) {
                    r.data.extend_from_slice(&rows.data);
                    r.height += rows.height;
                }
            }
            self.decode += block.decode;
            self.end = block.row + block.rows;
        }
        self.peak_rows = self.peak_rows.max(self.end - self.scene.row0);
        Ok(&self.scene)
    }

    /// Grows every band's buffer to exactly what it holds once the blocks up to 10 m
    /// row `hi` have arrived (blocks are [`BLOCK_ROWS`] rows from the top), so that
    /// appending them does not leave a buffer with twice the capacity it needs: the
    /// window is the largest buffer a panel holds.
    fn reserve_to(&mut self, hi: usize) {
        let h = self.scene.grid10.height;
        let end = (self.end + (hi - self.end).div_ceil(BLOCK_ROWS) * BLOCK_ROWS).min(h);
        for (band, r) in &mut self.scene.bands {
            let f = band.resolution().factor();
            // Rows of the band's own grid from the window's top to `end` (the last block
            // takes what the band has left, which is at most this).
            let rows = end.div_ceil(f) - self.scene.row0 / f;
            let want = rows * r.width;
            if want > r.data.capacity() {
                r.data.reserve_exact(want - r.data.len());
            }
        }
    }

    /// The 10 m columns held (the whole width, or a panel's).
    pub fn columns(&self) -> Range<usize> {
        self.columns.clone()
    }

    /// The rows held now.
    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// 10 m rows received so far.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Reads what is left, then refuses a band that held no valid pixel; returns the
    /// reader's decode time and the most 10 m rows held at once.
    ///
    /// # Errors
    /// The reader's error, or [`PipelineError::NoValidPixels`].
    pub fn finish(&mut self, id: &str) -> Result<(Duration, usize), PipelineError> {
        let read = self.read_to_bottom()?;
        read.check(id)?;
        Ok((read.decode, read.peak_rows))
    }

    /// Reads what is left and returns what the window saw, for a caller that checks the
    /// validity over several windows (the panels of one granule).
    ///
    /// # Errors
    /// The reader's error.
    pub fn read_to_bottom(&mut self) -> Result<WindowRead, PipelineError> {
        let h = self.scene.grid10.height;
        while self.end < h {
            let bottom = self.end;
            self.advance(bottom, h.min(bottom + BLOCK_ROWS))?;
        }
        let mut validity = self.validity.clone();
        for band in self.scene.bands.keys() {
            validity.entry(*band).or_default();
        }
        Ok(WindowRead {
            decode: self.decode,
            peak_rows: self.peak_rows,
            validity,
        })
    }
}

/// What a window read over the whole granule's height: see [`Window::read_to_bottom`].
#[derive(Debug, Clone, Default)]
pub struct WindowRead {
    /// Time the reader thread spent decoding.
    pub decode: Duration,
    /// The most 10 m rows held at once.
    pub peak_rows: usize,
    /// What each band held.
    pub validity: BTreeMap<Band, Validity>,
}

impl WindowRead {
    /// Adds another window's reading of the same granule (another panel).
    pub fn merge(&mut self, other: WindowRead) {
        self.decode += other.decode;
        self.peak_rows = self.peak_rows.max(other.peak_rows);
        for (band, v) in other.validity {
            self.validity.entry(band).or_default().merge(v);
        }
    }

    /// Refuses a band that held no valid pixel.
    ///
    /// # Errors
    /// [`PipelineError::NoValidPixels`].
    pub fn check(&self, id: &str) -> Result<(), PipelineError> {
        for (band, v) in &self.validity {
            v.check(id, *band)?;
        }
        Ok(())
    }
}

impl Drop for Window {
    /// Closes the gate and the channel first, so a reader waiting for either wakes and
    /// ends, then joins it.
    fn drop(&mut self) {
        self.gate.close();
        drop(self.rx.take());
        if let Some(reader) = self.reader.take() {
            if let Err(panic) = reader.join() {
                tracing::error!("the band reader thread panicked: {panic:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granule::{tiff, GeoTransform};

    /// A folder granule of one 10 m band, `w`×`h`.
    fn granule(dir: &std::path::Path, w: usize, h: usize) -> GranuleSource {
        let folder = dir.join("S2_GATE");
        std::fs::create_dir_all(&folder).unwrap();
        let georef = GeoRef {
            epsg: 32633,
            transform: GeoTransform {
                origin_x: 300000.0,
                origin_y: 6000000.0,
                pixel_width: 10.0,
                pixel_height: -10.0,
            },
            width: w,
            height: h,
        };
        let r =
            Raster::from_vec(w, h, (0..w * h).map(|i| 1000 + (i % 5000) as u16).collect()).unwrap();
        tiff::write_u16(&folder.join("B02.tif"), &r, &georef).unwrap();
        GranuleSource::open(&folder).unwrap()
    }

    /// Blocks that reach the channel beyond those the window took: waits for `n` of
    /// them (10 s at most), then 300 ms for any more.
    fn decoded_ahead(w: &Window, n: usize) -> usize {
        let rx = w.rx.as_ref().unwrap();
        let mut got = 0;
        while got < n && rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            got += 1;
        }
        while rx.recv_timeout(Duration::from_millis(300)).is_ok() {
            got += 1;
        }
        got
    }

    #[test]
    fn the_reader_decodes_only_as_far_as_the_window_allows() {
        let dir = tempfile::tempdir().unwrap();
        // Ten blocks of rows.
        let source = granule(dir.path(), 48, 10 * BLOCK_ROWS);
        let open = || Bands::open(&source, &[Band::B02]).unwrap();
        let strip = 3 * BLOCK_ROWS;
        // Started for its turn: a strip ahead before the first rows are asked for.
        let w = Window::start(open(), None, strip).unwrap();
        assert_eq!(decoded_ahead(&w, 3), 3);
        // Opened early (the next panel's): one block, until it is asked.
        let mut w = Window::start_ahead(open(), None, strip, BLOCK_ROWS).unwrap();
        assert_eq!(decoded_ahead(&w, 1), 1);
        // Asked for two blocks' rows (the first and one more): from then on a strip
        // beyond them, so three more.
        let mut w2 = Window::start_ahead(open(), None, strip, BLOCK_ROWS).unwrap();
        let held = w2.advance(0, 2 * BLOCK_ROWS).unwrap();
        assert_eq!(held.bands[&Band::B02].height, 2 * BLOCK_ROWS);
        assert_eq!(decoded_ahead(&w2, 3), 3);
        // A window dropped while its reader waits at the gate ends it (a reader left
        // waiting would hang this join).
        drop(w2);
        let _ = w.advance(0, 0);
        drop(w);
    }

    #[test]
    fn the_window_rows_equal_the_band_with_any_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (wd, h) = (30, 7 * BLOCK_ROWS + 18);
        let source = granule(dir.path(), wd, h);
        let whole = Scene::load(&source, &[Band::B02]).unwrap().bands[&Band::B02].clone();
        for (strip, first) in [(BLOCK_ROWS, BLOCK_ROWS), (5 * BLOCK_ROWS, 1), (1, 1)] {
            let bands = Bands::open(&source, &[Band::B02]).unwrap();
            let mut w = Window::start_ahead(bands, None, strip, first).unwrap();
            let (mut lo, mut most) = (0, 0);
            while lo < h {
                let hi = (lo + 250).min(h);
                let scene = w.advance(lo, hi).unwrap();
                let r = &scene.bands[&Band::B02];
                // The rows asked for are there, at the right place.
                let at = (lo - scene.row0) * wd;
                assert_eq!(
                    &r.data[at..at + (hi - lo) * wd],
                    &whole.data[lo * wd..hi * wd],
                    "strip {strip}, first {first}, rows {lo}..{hi}"
                );
                // The buffer is sized to the most rows held, not grown by doubling.
                most = most.max(r.height);
                assert!(
                    r.data.capacity() <= most * wd,
                    "{} samples of capacity for at most {most} rows of {wd}",
                    r.data.capacity()
                );
                lo = hi - 18;
                if hi == h {
                    break;
                }
            }
            let (_, peak) = w.finish("S2_GATE").unwrap();
            assert!(peak <= 250 + BLOCK_ROWS + 18, "{peak} rows held");
        }
    }
}
