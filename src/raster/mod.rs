//! Raster arithmetic shared by inference, training and evaluation: radiometric
//! harmonisation, nodata-aware resampling, tiling with halo and stitching, and the
//! Wald-protocol degradation.
//!
//! Everything here is synchronous and allocation-explicit. Training, inference and
//! evaluation call the same functions, so a model sees at run time exactly what it saw
//! in training (DESIGN.md "Radiometry").
//!
//! | module | role |
//! | --- | --- |
//! | [`grid`] | the in-memory single-band [`Raster`] |
//! | [`radiometry`] | DN ↔ harmonised DN ↔ `f32`, nodata and saturation masks |
//! | [`resample`] | nodata-aware bilinear / bicubic upsampling, windowed and per block |
//! | [`tiling`] | tile plans with halo and alignment, and the [`tiling::Mosaic`] that stitches cores |
//! | [`degrade`] | Gaussian blur, block mean, the project's Wald degradation |
//! | [`metrics`] | RMSE, SRE, SAM, UIQ over valid pixels |

pub mod degrade;
pub mod grid;
pub mod metrics;
pub mod radiometry;
pub mod resample;
pub mod tiling;

pub use grid::Raster;
