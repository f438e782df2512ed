//! Raster arithmetic shared by inference, training and evaluation: radiometric
//! harmonisation, nodata-aware resampling, tiling with halo and stitching, and the
//! Wald-protocol degradation.
//!
//! Everything here is synchronous and allocation-explicit. Training, inference and
//! evaluation call the same functions, so a model sees at run time exactly what it saw
//! in training (DESIGN.md "Radiometry").

pub mod grid;

pub use grid::Raster;
