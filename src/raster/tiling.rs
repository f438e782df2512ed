//! Tile plans for windowed super-resolution, and the mosaic that stitches tile cores.
//!
//! A plan covers a `width`×`height` output grid with tiles. Each [`Tile`] has a *core*,
//! the part of the output it is responsible for, and a *padded* rectangle, the core grown
//! by the halo on every side and clipped to the image, which is what the model actually
//! runs on. With a halo of at least the model's receptive radius, the core of a padded run
//! equals the whole-image run (DESIGN.md "Tiling correctness").
//!
//! Invariants of [`plan`] (property-tested below):
//! - the cores partition the grid exactly: every pixel lies in exactly one core;
//! - `padded ⊇ core`, and `padded` lies inside the image;
//! - on each side, `padded` extends at least `halo` beyond the core, unless clipped by the
//!   image edge (then it reaches the edge);
//! - `col` and `row` of every core and padded rect are multiples of `align`, and so are
//!   their widths and heights, except where a rect ends at the right or bottom image edge
//!   and the image size itself is not a multiple of `align`. With `align` = 6 a 10 m
//!   rect maps exactly onto the 20 m and 60 m grids ([`Rect::coarser`]).

use super::Raster;

/// An axis-aligned pixel rectangle: columns `col..col + width`, rows `row..row + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First column.
    pub col: usize,
    /// First row.
    pub row: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Rect {
    /// One past the last column.
    pub fn right(&self) -> usize {
        self.col + self.width
    }

    /// One past the last row.
    pub fn bottom(&self) -> usize {
        self.row + self.height
    }

    /// Number of pixels.
    pub fn area(&self) -> usize {
        self.width * self.height
    }

    /// Whether `other` lies inside this rect.
    pub fn contains(&self, other: &Rect) -> bool {
        other.col >= self.col
            && other.row >= self.row
            && other.right() <= self.right()
            && other.bottom() <= self.bottom()
    }

    /// The smallest rect on a grid `factor` times coarser that covers this one (start
    /// rounded down, end rounded up). Exact when the rect is aligned to `factor`, as every
    /// rect of a plan with `align` a multiple of `factor` is, apart from a right/bottom
    /// edge that the image itself leaves unaligned. `factor` 0 is treated as 1.
    pub fn coarser(&self, factor: usize) -> Rect {
        let f = factor.max(1);
        let (col, row) = (self.col / f, self.row / f);
        Rect {
            col,
            row,
            width: self.right().div_ceil(f) - col,
            height: self.bottom().div_ceil(f) - row,
        }
    }

    /// This rect on a grid `factor` times finer.
    pub fn finer(&self, factor: usize) -> Rect {
        Rect {
            col: self.col * factor,
            row: self.row * factor,
            width: self.width * factor,
            height: self.height * factor,
        }
    }
}

/// One tile of a [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    /// The output pixels this tile is responsible for; the cores of a plan partition the
    /// grid.
    pub core: Rect,
    /// The core grown by the halo on every side and clipped to the image: the window the
    /// model runs on, so the core sees its full receptive field.
    pub padded: Rect,
}

impl Tile {
    /// The core's offset (columns, rows) inside `padded`.
    pub fn core_offset(&self) -> (usize, usize) {
        (
            self.core.col - self.padded.col,
            self.core.row - self.padded.row,
        )
    }

    /// The core as a rect relative to `padded` (the part of a padded result to keep).
    pub fn core_in_padded(&self) -> Rect {
        let (col, row) = self.core_offset();
        Rect {
            col,
            row,
            width: self.core.width,
            height: self.core.height,
        }
    }
}

/// How an axis is cut into tile cores: `edge` px at the two ends of the axis, `interior` px
/// between them (the last core takes what is left, at most `edge`).
///
/// A uniform grid ([`Cores::uniform`], or a plain `usize`) has one size. A capped grid
/// ([`Cores::capped`]) makes its interior cores smaller by the halo: an edge tile loses
/// its halo on the image side, so with `interior = edge - halo` every padded window of
/// that halo is at most `edge + halo` wide, wherever it lies. What a model runs on, and
/// so the working set of the runtime, is then the same on a granule of two tiles and
/// on a full Sentinel-2 tile, at the cost of a few more tiles on large granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cores {
    /// Core side of the first and last tile of an axis.
    pub edge: usize,
    /// Core side of the tiles between them (at most `edge`).
    pub interior: usize,
}

impl Cores {
    /// Every core `tile` px.
    pub fn uniform(tile: usize) -> Cores {
        Cores {
            edge: tile,
            interior: tile,
        }
    }

    /// Edge cores of `tile` px and interior cores smaller by `halo` (rounded up to
    /// `align`, as [`plan`] rounds it), so that no padded window of `halo` is wider than
    /// `tile + halo`. Interior cores keep at least half the tile: a halo that large is
    /// not worth the extra tiles.
    pub fn capped(tile: usize, halo: usize, align: usize) -> Cores {
        let align = align.max(1);
        let tile = tile.max(1).div_ceil(align) * align;
        let halo = halo.div_ceil(align) * align;
        let half = (tile / 2).div_ceil(align) * align;
        Cores {
            edge: tile,
            interior: tile.saturating_sub(halo).max(half).max(align).min(tile),
        }
    }

    /// The cores along an axis of `n` px, as (start, length), for sizes already aligned.
    fn cut(self, n: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(n.div_ceil(self.interior.max(1)));
        let mut start = 0;
        while start < n {
            let rest = n - start;
            let len = if start == 0 || rest <= self.edge {
                self.edge.min(rest)
            } else {
                self.interior.min(rest)
            };
            out.push((start, len));
            start += len;
        }
        out
    }
}

impl From<usize> for Cores {
    fn from(tile: usize) -> Cores {
        Cores::uniform(tile)
    }
}

/// Plans tiles over a `width`×`height` grid: cores cut by `cores` (a `usize` is a uniform
/// grid: `tile`×`tile`, smaller at the right and bottom edges), each padded by `halo`,
/// everything aligned to `align`.
///
/// The core sides and `halo` are rounded up to multiples of `align` (so the halo only
/// grows), and are at least `align`; `align` 0 behaves as 1. Tiles come in row-major
/// order. An empty grid has no tiles. See the module docs for the invariants.
pub fn plan(
    width: usize,
    height: usize,
    cores: impl Into<Cores>,
    halo: usize,
    align: usize,
) -> Vec<Tile> {
    let align = align.max(1);
    let cores = cores.into();
    let edge = cores.edge.max(1).div_ceil(align) * align;
    let cores = Cores {
        edge,
        interior: (cores.interior.max(1).div_ceil(align) * align).min(edge),
    };
    let halo = halo.div_ceil(align) * align;
    let axis = |n: usize| -> Vec<(usize, usize, usize, usize)> {
        cores
            .cut(n)
            .into_iter()
            .map(|(start, len)| {
                let pstart = start.saturating_sub(halo);
                let pend = (start + len + halo).min(n);
                (start, len, pstart, pend - pstart)
            })
            .collect()
    };
    let cols = axis(width);
    let rows = axis(height);
    let mut tiles = Vec::with_capacity(cols.len() * rows.len());
    for (row, h, prow, ph) in rows {
        for &(col, w, pcol, pw) in &cols {
            tiles.push(Tile {
                core: Rect {
                    col,
                    row,
                    width: w,
                    height: h,
                },
                padded: Rect {
                    col: pcol,
                    row: prow,
                    width: pw,
                    height: ph,
                },
            });
        }
    }
    tiles
}

/// A mismatch between a tile result and the mosaic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilingError {
    /// The result's size is not the tile's padded size.
    #[error("tile result is {got_w}x{got_h}, expected the padded size {want_w}x{want_h} (core at col {col}, row {row})")]
    SizeMismatch {
        /// Core column of the tile.
        col: usize,
        /// Core row of the tile.
        row: usize,
        /// Padded width expected.
        want_w: usize,
        /// Padded height expected.
        want_h: usize,
        /// Width received.
        got_w: usize,
        /// Height received.
        got_h: usize,
    },
    /// The tile's padded rect does not lie inside the mosaic.
    #[error("tile padded rect {padded:?} lies outside the {width}x{height} mosaic")]
    OutOfBounds {
        /// The offending padded rect.
        padded: Rect,
        /// Mosaic width.
        width: usize,
        /// Mosaic height.
        height: usize,
    },
    /// Some output pixels were never covered by a placed core.
    #[error("{missing} of {total} pixels were not covered by any placed tile")]
    Incomplete {
        /// Pixels not covered.
        missing: usize,
        /// Pixels in the mosaic.
        total: usize,
    },
}

/// Stitches tile results: each tile's core, cut out of its padded result, is pasted into
/// the output raster.
#[derive(Debug, Clone)]
pub struct Mosaic<T> {
    out: Raster<T>,
    /// Pixels covered so far, to refuse an incomplete mosaic in [`Mosaic::finish`].
    covered: usize,
}

impl<T: Copy> Mosaic<T> {
    /// An output raster of `width`×`height` filled with `fill` until cores are placed.
    pub fn new(width: usize, height: usize, fill: T) -> Self {
        Mosaic {
            out: Raster::filled(width, height, fill),
            covered: 0,
        }
    }

    /// Pastes the core of `tile` out of `padded_result` (a raster of the tile's padded
    /// size).
    ///
    /// # Errors
    /// [`TilingError::SizeMismatch`] when `padded_result` is not the padded size,
    /// [`TilingError::OutOfBounds`] when the tile does not fit this mosaic.
    pub fn place(&mut self, tile: &Tile, padded_result: &Raster<T>) -> Result<(), TilingError> {
        let p = tile.padded;
        if padded_result.width != p.width || padded_result.height != p.height {
            return Err(TilingError::SizeMismatch {
                col: tile.core.col,
                row: tile.core.row,
                want_w: p.width,
                want_h: p.height,
                got_w: padded_result.width,
                got_h: padded_result.height,
            });
        }
        let image = Rect {
            col: 0,
            row: 0,
            width: self.out.width,
            height: self.out.height,
        };
        if !image.contains(&p) || !p.contains(&tile.core) {
            return Err(TilingError::OutOfBounds {
                padded: p,
                width: self.out.width,
                height: self.out.height,
            });
        }
        let k = tile.core_in_padded();
        for r in 0..k.height {
            let src = (k.row + r) * p.width + k.col;
            let dst = (tile.core.row + r) * self.out.width + tile.core.col;
            self.out.data[dst..dst + k.width]
                .copy_from_slice(&padded_result.data[src..src + k.width]);
        }
        self.covered += k.area();
        Ok(())
    }

    /// The stitched raster.
    ///
    /// # Errors
    /// [`TilingError::Incomplete`] when the placed cores cover fewer pixels than the
    /// raster has (placing each core of one plan once covers it exactly).
    pub fn finish(self) -> Result<Raster<T>, TilingError> {
        let total = self.out.data.len();
        if self.covered < total {
            return Err(TilingError::Incomplete {
                missing: total - self.covered,
                total,
            });
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plan_of_a_tile_grid() {
        let tiles = plan(10980, 10980, 512, 14, 6);
        // tile rounds up to 516, halo to 18.
        assert_eq!(
            tiles[0].core,
            Rect {
                col: 0,
                row: 0,
                width: 516,
                height: 516
            }
        );
        assert_eq!(
            tiles[0].padded,
            Rect {
                col: 0,
                row: 0,
                width: 534,
                height: 534
            }
        );
        assert_eq!(tiles[1].padded.col, 516 - 18);
        assert_eq!(tiles.len(), 22 * 22);
        let last = tiles[tiles.len() - 1];
        assert_eq!(last.core.right(), 10980);
        assert_eq!(last.core.coarser(6).right(), 1830);
        assert_eq!(last.core_offset(), (18, 18));
        assert!(plan(0, 5, 8, 1, 1).is_empty());
    }

    #[test]
    fn coarser_rect_covers() {
        let r = Rect {
            col: 4,
            row: 6,
            width: 5,
            height: 7,
        };
        assert_eq!(
            r.coarser(2),
            Rect {
                col: 2,
                row: 3,
                width: 3,
                height: 4
            }
        );
        assert!(r.coarser(2).finer(2).contains(&r));
    }

    #[test]
    fn mosaic_stitches_cores_and_checks_sizes() {
        let (w, h) = (23, 17);
        let truth = Raster::from_vec(w, h, (0..w * h).map(|i| i as u32).collect()).unwrap();
        let tiles = plan(w, h, 8, 3, 2);
        let mut m = Mosaic::new(w, h, u32::MAX);
        for t in &tiles {
            let p = t.padded;
            m.place(t, &truth.window(p.col, p.row, p.width, p.height))
                .unwrap();
        }
        assert_eq!(m.finish().unwrap(), truth);

        let mut m = Mosaic::new(w, h, 0u32);
        let err = m.place(&tiles[0], &Raster::filled(1, 1, 0)).unwrap_err();
        assert!(matches!(err, TilingError::SizeMismatch { .. }));
        let big = plan(100, 100, 50, 0, 1)[3];
        let err = m.place(&big, &Raster::filled(50, 50, 0)).unwrap_err();
        assert!(matches!(err, TilingError::OutOfBounds { .. }));
        assert!(matches!(m.finish(), Err(TilingError::Incomplete { .. })));
    }

    proptest! {
        #[test]
        fn plan_invariants(
            width in 1usize..200,
            height in 1usize..200,
            tile in 0usize..70,
            halo in 0usize..20,
            align in prop_oneof![Just(1usize), Just(2), Just(6), Just(0)],
            capped in any::<bool>(),
        ) {
            let cores = if capped { Cores::capped(tile, halo, align) } else { tile.into() };
            let tiles = plan(width, height, cores, halo, align);
            let a = align.max(1);
            let mut count = vec![0u8; width * height];
            let image = Rect { col: 0, row: 0, width, height };
            for t in &tiles {
                let (c, p) = (t.core, t.padded);
                prop_assert!(c.width > 0 && c.height > 0);
                prop_assert!(p.contains(&c));
                prop_assert!(image.contains(&p));
                // Halo at least as requested unless the image edge clips it.
                prop_assert!(p.col == 0 || c.col - p.col >= halo);
                prop_assert!(p.row == 0 || c.row - p.row >= halo);
                prop_assert!(p.right() == width || p.right() - c.right() >= halo);
                prop_assert!(p.bottom() == height || p.bottom() - c.bottom() >= halo);
                // Alignment, except sizes ending at an unaligned image edge.
                for r in [c, p] {
                    prop_assert_eq!(r.col % a, 0);
                    prop_assert_eq!(r.row % a, 0);
                    prop_assert!(r.width % a == 0 || r.right() == width);
                    prop_assert!(r.height % a == 0 || r.bottom() == height);
                }
                for row in c.row..c.bottom() {
                    for col in c.col..c.right() {
                        count[row * width + col] += 1;
                    }
                }
            }
            prop_assert!(count.iter().all(|n| *n == 1), "cores do not partition the grid");
            if capped && tile.max(1).div_ceil(a) * a > 2 * halo.div_ceil(a) * a {
                // No padded window wider than the edge tile plus one halo.
                let edge = tile.max(1).div_ceil(a) * a;
                let limit = edge + halo.div_ceil(a) * a;
                for t in &tiles {
                    prop_assert!(t.padded.width <= limit && t.padded.height <= limit,
                        "{:?} wider than {limit}", t.padded);
                }
            }
        }
    }

    #[test]
    fn a_capped_grid_keeps_every_padded_window_of_a_full_tile_at_most_one_halo_wider() {
        // The shipped 6x model's halo on a full Sentinel-2 tile.
        let (tile, halo) = (1098, 102);
        let uniform = plan(10980, 10980, tile, halo, 6);
        let capped = plan(10980, 10980, Cores::capped(tile, halo, 6), halo, 6);
        let widest = |tiles: &[Tile]| tiles.iter().map(|t| t.padded.width).max();
        assert_eq!(widest(&uniform), Some(tile + 2 * halo));
        assert_eq!(widest(&capped), Some(tile + halo));
        // Ten columns become eleven: 1098, nine of 996, and the 918 left.
        let row0: Vec<usize> = capped
            .iter()
            .take_while(|t| t.core.row == 0)
            .map(|t| t.core.width)
            .collect();
        assert_eq!(row0.len(), 11);
        assert_eq!((row0[0], row0[1], row0[10]), (1098, 996, 918));
        assert_eq!(capped.len(), 11 * 11);
        // A granule of two tiles is cut as before: both tiles touch an image edge.
        assert_eq!(
            plan(2196, 2196, Cores::capped(tile, halo, 6), halo, 6),
            plan(2196, 2196, tile, halo, 6)
        );
        // A halo over half the tile does not halve the interior further.
        assert_eq!(Cores::capped(120, 90, 6).interior, 60);
    }
}
