//! A small, data-efficient BigEarthNet classifier: per-band statistics of the patch, plus
//! an optional "bag of spectra" (a per-pixel 1×1 projection, ReLU, averaged over the
//! patch), into one linear layer and a sigmoid.
//!
//! With `hidden = 0` it is exactly logistic regression on each band's mean and standard
//! deviation (the classical baseline of the field); `hidden > 0` adds `hidden` learned
//! spectral indicators, each the fraction-weighted presence of a learned spectral signature
//! in the patch. Both are shift- and flip-invariant, which is why they generalise from a
//! few dozen patches where a ResNet50 cannot.
//!
//! Invariants: the input is the normalised `[n, bands, 120, 120]` tensor of every other
//! classifier (same manifest normalisation); the exported graph outputs probabilities.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

/// Added to the variance before the square root (normalised units), so that a constant
/// band has a finite gradient.
const VAR_EPS: f64 = 1e-6;

/// Band statistics (+ optional spectral bag) → linear → sigmoid.
#[derive(Module, Debug)]
pub struct BandStats {
    /// Per-pixel spectral projection (`bands → hidden`, 1×1), when `hidden > 0`.
    spectral: Option<Conv2d>,
    /// Global average pooling over the patch.
    avg: AdaptiveAvgPool2d,
    /// `2·bands + hidden → classes`.
    fc: Linear,
}

impl BandStats {
    /// A model for `bands` input channels, `hidden` spectral indicators and `classes`
    /// outputs.
    pub fn new(bands: usize, hidden: usize, classes: usize, device: &Device) -> BandStats {
        BandStats {
            spectral: (hidden > 0).then(|| Conv2dConfig::new([bands, hidden], [1, 1]).init(device)),
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(2 * bands + hidden, classes).init(device),
        }
    }

    /// The patch features `[n, 2·bands + hidden]`: per-band mean, per-band standard
    /// deviation, then the spectral indicators. Written with global average pooling and
    /// `flatten` (the ops the ResNet50 export already exercises), so the exported graph
    /// keeps a dynamic batch axis.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mean: Tensor<4> = self.avg.forward(x.clone());
        let centred = x.clone() - mean.clone();
        let var = self.avg.forward(centred.clone() * centred);
        let std = var.add_scalar(VAR_EPS).sqrt();
        let mut parts: Vec<Tensor<2>> = vec![mean.flatten(1, 3), std.flatten(1, 3)];
        if let Some(conv) = &self.spectral {
            let s = relu(conv.forward(x));
            parts.push(self.avg.forward(s).flatten(1, 3));
        }
        Tensor::cat(parts, 1)
    }

    /// Logits `[n, classes]`.
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }

    /// Probabilities `[n, classes]` (the exported graph).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        sigmoid(self.logits(x))
    }
}
