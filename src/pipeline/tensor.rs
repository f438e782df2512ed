//! Model inputs from a manifest: which bands, on which grid, resampled how, and
//! normalised how. Shared by classification and super-resolution so both read the
//! manifest the same way.

use ndarray::Array4;

use crate::granule::Band;
use crate::model::manifest::ModelSpec;
use crate::raster::resample::Kernel;
use crate::raster::Raster;

/// One channel of a model input: the band and its normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channel {
    /// The band.
    pub band: Band,
    /// Mean subtracted (harmonised DN).
    pub mean: f32,
    /// Divisor (harmonised DN).
    pub std: f32,
    /// How the band reaches the 10 m grid when it is coarser.
    pub kernel: Kernel,
}

impl Channel {
    /// Normalises one harmonised value; nodata (NaN) becomes 0, the channel mean, so a
    /// nodata pixel never turns a whole tile into NaN.
    #[inline]
    pub fn normalise(&self, v: f32) -> f32 {
        if v.is_nan() {
            0.0
        } else {
            (v - self.mean) / self.std
        }
    }

    /// Back from normalised units to harmonised DN.
    #[inline]
    pub fn denormalise(&self, v: f32) -> f32 {
        v * self.std + self.mean
    }
}

/// A named graph input and its channels, in manifest order.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLayout {
    /// Graph input name.
    pub name: String,
    /// Channels in order.
    pub channels: Vec<Channel>,
}

/// The inputs of `spec` with the normalisation of each channel (the manifest lists
/// mean/std per channel, inputs in order, bands in order).
pub fn input_layouts(spec: &ModelSpec) -> Vec<InputLayout> {
    let mut k = 0;
    let mut out = Vec::new();
    for (name, input) in spec.inputs.iter() {
        let kernel = input.upsample.unwrap_or(Kernel::Bilinear);
        let channels = input
            .bands
            .iter()
            .map(|&band| {
                let ch = Channel {
                    band,
                    mean: spec.normalisation.mean.get(k).copied().unwrap_or(0.0),
                    std: spec.normalisation.std.get(k).copied().unwrap_or(1.0),
                    kernel,
                };
                k += 1;
                ch
            })
            .collect();
        out.push(InputLayout {
            name: name.to_string(),
            channels,
        });
    }
    out
}

/// Fills `batch[index, channel]` from a `f32` window of harmonised DN, normalising.
pub fn fill_channel(
    batch: &mut Array4<f32>,
    index: usize,
    channel: usize,
    ch: &Channel,
    window: &Raster<f32>,
) {
    let mut plane = batch.slice_mut(ndarray::s![index, channel, .., ..]);
    for (dst, src) in plane.iter_mut().zip(window.data.iter()) {
        *dst = ch.normalise(*src);
    }
}
