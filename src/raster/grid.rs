//! The in-memory raster: one band, row-major, with its size.

/// A single-band raster stored row-major (`data[row * width + col]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raster<T> {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` samples, row-major.
    pub data: Vec<T>,
}

impl<T: Copy> Raster<T> {
    /// A raster filled with `value`.
    pub fn filled(width: usize, height: usize, value: T) -> Self {
        Raster {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Wraps `data`; `None` when its length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<T>) -> Option<Self> {
        (data.len() == width * height).then_some(Raster {
            width,
            height,
            data,
        })
    }

    /// The sample at (col, row). Panics when out of bounds, like slice indexing.
    #[inline]
    pub fn get(&self, col: usize, row: usize) -> T {
        self.data[row * self.width + col]
    }

    /// Mutable access to the sample at (col, row).
    #[inline]
    pub fn get_mut(&mut self, col: usize, row: usize) -> &mut T {
        &mut self.data[row * self.width + col]
    }

    /// One row as a slice.
    pub fn row(&self, row: usize) -> &[T] {
        &self.data[row * self.width..(row + 1) * self.width]
    }

    /// Copies the window (`col`, `row`, `w`, `h`); samples outside the raster replicate
    /// the nearest edge sample (the edge rule of DESIGN.md "Radiometry").
    pub fn window_clamped(&self, col: isize, row: isize, w: usize, h: usize) -> Raster<T> {
        let mut data = Vec::with_capacity(w * h);
        let max_c = self.width as isize - 1;
        let max_r = self.height as isize - 1;
        for r in 0..h as isize {
            let rr = (row + r).clamp(0, max_r) as usize;
            for c in 0..w as isize {
                let cc = (col + c).clamp(0, max_c) as usize;
                data.push(self.data[rr * self.width + cc]);
            }
        }
        Raster {
            width: w,
            height: h,
            data,
        }
    }

    /// Copies the window (`col`, `row`, `w`, `h`), which must lie inside the raster.
    pub fn window(&self, col: usize, row: usize, w: usize, h: usize) -> Raster<T> {
        let mut data = Vec::with_capacity(w * h);
        for r in row..row + h {
            data.extend_from_slice(&self.data[r * self.width + col..r * self.width + col + w]);
        }
        Raster {
            width: w,
            height: h,
            data,
        }
    }

    /// Writes `src` into this raster at (`col`, `row`), clipping what falls outside.
    pub fn paste(&mut self, src: &Raster<T>, col: usize, row: usize) {
        for r in 0..src.height {
            let rr = row + r;
            if rr >= self.height {
                break;
            }
            let w = src.width.min(self.width.saturating_sub(col));
            let dst = rr * self.width + col;
            self.data[dst..dst + w].copy_from_slice(&src.data[r * src.width..r * src.width + w]);
        }
    }

    /// Applies `f` to every sample.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Raster<U> {
        Raster {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|v| f(*v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_window_replicates_edges() {
        let r = Raster::from_vec(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let w = r.window_clamped(-1, -1, 5, 4);
        assert_eq!(w.row(0), &[1, 1, 2, 3, 3]);
        assert_eq!(w.row(3), &[4, 4, 5, 6, 6]);
        let mut big = Raster::filled(4, 4, 0);
        big.paste(&r, 2, 3);
        assert_eq!(big.row(3), &[0, 0, 1, 2]);
    }
}
