//! s2edge: an edge-processing daemon for Sentinel-2.
//!
//! Granules dropped into an ingest directory are classified for land cover (a ResNet50
//! multi-label classifier on BigEarthNet-style 120×120 patches) and super-resolved to
//! 10 m (DSen2-style CNNs and a GAN generator), on ONNX Runtime. Products are
//! georeferenced Cloud-Optimized GeoTIFFs with GeoJSON labels, a STAC Item carrying full
//! provenance, and a quicklook.
//!
//! # Layout
//!
//! | module | role |
//! | --- | --- |
//! | [`granule`] | Sentinel-2 inputs: `GranuleId`, `Band`, `GeoRef`, metadata, readers for SAFE, GeoTIFF folders and BigEarthNet patches |
//! | [`raster`] | harmonised DN, nodata-aware resampling, tiling with halo, stitching, Wald degradation |
//! | [`model`] | ONNX Runtime: library loading, execution-provider policy, `ModelSpec` manifests, registry, sessions |
//! | [`pipeline`] | the classify and superres stages, pure functions over rasters |
//! | [`product`] | COG writer, GeoJSON labels, STAC Item, quicklook, atomic publish |
//! | [`config`] | typed configuration: embedded defaults, file, environment |
//! | [`daemon`] | the ingest daemon (tokio): watcher, claims, ledger, worker thread, metrics, systemd |
//! | [`batch`] | `s2edge batch`: a granule list into one output directory, resumable (a ledger per worker), sharded over Slurm arrays or MPI ranks (feature `mpi-batch`), merged into a STAC Collection |
//! | [`sample`] | a synthetic demo granule (`s2edge sample`) |
//! | `train` | feature `train`: the MPI trainer (burn models, data parallelism, ONNX export, evaluation) |
//!
//! Only the daemon knows tokio; everything listed here is synchronous so the trainer,
//! the benches and the CLI reuse it.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod batch;
pub mod config;
pub mod daemon;
pub mod granule;
pub mod model;
pub mod pipeline;
pub mod product;
pub mod raster;
pub mod sample;
#[cfg(feature = "train")]
pub mod train;
