//! Memory-aware batching of super-resolution: tile × batch from `[runtime] memory_budget`.
//!
//! What one batch costs inside ONNX Runtime is dominated by its float tensors: the input
//! (`in` channels), the output (`out` channels) and the activations of the widest
//! layers, `features` channels each, of which a residual CNN keeps about
//! [`LIVE_ACTIVATIONS`] alive at once (the block input for the skip connection, the
//! first convolution's output, the second's). So one sample of padded side `p` costs
//!
//! ```text
//! bytes = p² · 4 · (in + out + LIVE_ACTIVATIONS · features)
//! ```
//!
//! and the batch is `budget / bytes`, clamped to `1..=max_batch` (`[runtime]
//! batch_size` is the upper bound). When even one sample of the configured tile does not
//! fit, the tile shrinks in steps of 6 (so the 20 m / 60 m grids stay aligned) down to
//! [`MIN_TILE`]. Bare ONNX Runtime throughput of the shipped DSen2 models is flat in
//! batch size (issue 9: 0.97 Mpx/s at 540² × 1, 0.93 at 540² × 8), so a smaller batch
//! costs no speed, only memory.
//!
//! Large tiles are cheap to run: the halo is recomputed per tile, so its overhead falls
//! with the tile side, and the per-run buffers stay in ONNX Runtime's CPU arena
//! ([`crate::model::provider`] turns it on; without it every buffer above 32 MiB was
//! `mmap`ed and page-faulted in afresh on every run, 40 % of the inference thread's time).
//!
//! The padded side is taken as `tile + 2 · halo`, a full interior window of a uniform grid.
//! On the capped grid that the pipeline runs ([`crate::raster::tiling::Cores::capped`])
//! no window is larger than `tile + halo`, so the estimate is an upper bound.
//!
//! The feature width comes from the graph ([`crate::model::session::graph_feature_width`]);
//! when it is unknown [`DEFAULT_FEATURES`] is assumed.

/// Feature maps of the widest layer alive at once (see the module docs).
pub const LIVE_ACTIVATIONS: u64 = 3;

/// Feature width assumed when the graph does not tell.
pub const DEFAULT_FEATURES: usize = 64;

/// The smallest core tile the budget may shrink a tile to (10 m pixels).
pub const MIN_TILE: usize = 96;

/// A tile size and batch size for one super-resolution model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// Core tile side on the 10 m grid (a multiple of 6).
    pub tile: usize,
    /// Tiles per batch.
    pub batch: usize,
    /// Estimated runtime bytes of one padded sample.
    pub sample_bytes: u64,
}

impl BatchPlan {
    /// Estimated runtime bytes of one full batch.
    pub fn batch_bytes(&self) -> u64 {
        self.sample_bytes * self.batch as u64
    }
}

/// Estimated bytes of one sample of padded side `padded`.
pub fn sample_bytes(
    padded: usize,
    in_channels: usize,
    out_channels: usize,
    features: usize,
) -> u64 {
    let px = (padded * padded) as u64;
    px * 4 * (in_channels as u64 + out_channels as u64 + LIVE_ACTIVATIONS * features as u64)
}

/// Chooses tile × batch for a model with `in_channels` inputs, `out_channels` outputs
/// and `features` wide layers (`None`: [`DEFAULT_FEATURES`]), a halo of `halo` px, the
/// configured `tile` and `max_batch`, within `budget` bytes.
pub fn plan_batch(
    tile: usize,
    halo: usize,
    in_channels: usize,
    out_channels: usize,
    features: Option<usize>,
    max_batch: usize,
    budget: u64,
) -> BatchPlan {
    let features = features.unwrap_or(DEFAULT_FEATURES);
    let halo = halo.div_ceil(6) * 6;
    let mut tile = tile.max(6).div_ceil(6) * 6;
    let min_tile = MIN_TILE.min(tile);
    let cost = |t: usize| sample_bytes(t + 2 * halo, in_channels, out_channels, features);
    while tile > min_tile && cost(tile) > budget {
        tile -= 6;
    }
    let sample = cost(tile);
    let batch = usize::try_from(budget / sample.max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, max_batch.max(1));
    BatchPlan {
        tile,
        batch,
        sample_bytes: sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_follows_the_budget() {
        // dsen2 (10 in, 6 out, 32 features), tile 504, halo 14 -> padded 540.
        let one = sample_bytes(540, 10, 6, 32);
        assert_eq!(one, 540 * 540 * 4 * (16 + 96));
        let p = plan_batch(504, 14, 10, 6, Some(32), 8, 1 << 30);
        assert_eq!(p.tile, 504, "a generous budget keeps the configured tile");
        assert_eq!(p.batch, (((1u64 << 30) / one) as usize).min(8));
        assert_eq!(p.sample_bytes, one);
        assert!(p.batch_bytes() <= 1 << 30);
        // A generous budget is capped by batch_size.
        assert_eq!(plan_batch(504, 14, 10, 6, Some(32), 8, 1 << 40).batch, 8);
        // Wider models get smaller batches.
        let wide = plan_batch(504, 14, 10, 6, Some(128), 8, 1 << 30);
        assert!(wide.batch < p.batch, "{wide:?} vs {p:?}");
        // A budget below one sample shrinks the tile, in multiples of 6.
        let small = plan_batch(504, 14, 10, 6, Some(32), 8, 64 << 20);
        assert!(small.tile < 504 && small.tile % 6 == 0, "{small:?}");
        assert_eq!(small.batch, 1);
        assert!(small.sample_bytes <= 64 << 20);
        assert!(
            sample_bytes(small.tile + 6 + 36, 10, 6, 32) > 64 << 20,
            "the largest that fits"
        );
        // ...but never below MIN_TILE: then batch 1 over budget.
        let tiny = plan_batch(504, 14, 10, 6, Some(32), 8, 1);
        assert_eq!((tiny.tile, tiny.batch), (MIN_TILE, 1));
    }
}
