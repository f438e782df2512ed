//! DSen2 (Lanaras et al. 2018) in burn, plus the GAN discriminator.
//!
//! `concat(inputs) → conv3×3 + act → blocks × (conv, act, conv, ×0.1, + skip) → conv →
//! + the last (coarsest, already upsampled) input`. The pipeline feeds the coarse bands
//! bilinearly upsampled to the 10 m grid, so the graph's residual adds its own `x20`
//! (2×) or `x60` (6×) input and the network learns only the missing detail.
//!
//! With [`Dsen2::with_backprojection`], `K` steps of iterative back-projection follow the
//! residual ([`super::backproject`]), so the output degraded back with the project's Wald
//! degradation agrees with the observed coarse pixels; the layer is part of the forward
//! pass, so it is trained end to end and exported with the network.
//!
//! Invariants: every convolution is 3×3 with "same" padding, so the receptive radius is
//! the number of convolutions, `2·blocks + 2`, plus the back-projection's radius
//! ([`Dsen2::receptive_radius`]); the activation is ReLU, or for the GAN generator LeakyReLU written as
//! `relu(x) − a·relu(−x)` (the ONNX exporter cannot lower LeakyReLU); the last convolution
//! starts at zero, so an untrained network without back-projection returns exactly its
//! upsampled input. The graph takes its inputs concatenated ([`Dsen2::forward_joined`]);
//! the residual's skip channels are picked by a one-hot 1×1 convolution, exact, because the
//! exporter cannot lower a slice on a tensor with dynamic axes.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::backproject::BackProjection;

/// `relu(x) − slope·relu(−x)`; `slope = 0` is ReLU.
fn act(x: Tensor<4>, slope: f32) -> Tensor<4> {
    if slope == 0.0 {
        relu(x)
    } else {
        relu(x.clone()) - relu(x.neg()).mul_scalar(slope)
    }
}

fn conv3(cin: usize, cout: usize, zero: bool, device: &Device) -> Conv2d {
    let mut c = Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Same);
    if zero {
        c = c.with_initializer(Initializer::Zeros);
    } else {
        // He initialisation, as DSen2.
        c = c.with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: false,
        });
    }
    c.init(device)
}

/// One residual block: `x + 0.1 · conv(act(conv(x)))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    conv1: Conv2d,
    conv2: Conv2d,
}

/// The DSen2 network (also the GAN generator, with a leaky activation).
#[derive(Module, Debug)]
pub struct Dsen2 {
    head: Conv2d,
    blocks: Vec<ResBlock>,
    tail: Conv2d,
    /// LeakyReLU slope; 0 for ReLU.
    #[module(skip)]
    slope: f32,
    /// Input channels per graph input, in order (the last group is the skip).
    #[module(skip)]
    groups: Vec<usize>,
    /// Observation consistency after the residual (none: plain DSen2).
    #[module(skip)]
    backprojection: Option<BackProjection>,
}

/// DSen2's residual scaling.
const RES_SCALE: f32 = 0.1;

impl Dsen2 {
    /// A network for inputs of `in_channels` (per input, in order) producing as many
    /// channels as the last input.
    pub fn new(
        in_channels: &[usize],
        blocks: usize,
        features: usize,
        slope: f32,
        device: &Device,
    ) -> Dsen2 {
        let cin: usize = in_channels.iter().sum();
        let cout = in_channels.last().copied().unwrap_or(1);
        Dsen2 {
            head: conv3(cin, features, false, device),
            blocks: (0..blocks)
                .map(|_| ResBlock {
                    conv1: conv3(features, features, false, device),
                    conv2: conv3(features, features, false, device),
                })
                .collect(),
            tail: conv3(features, cout, true, device),
            slope,
            groups: in_channels.to_vec(),
            backprojection: None,
        }
    }

    /// The same network followed by `steps` back-projection steps at `scale` (0 steps:
    /// none).
    pub fn with_backprojection(mut self, scale: usize, steps: usize) -> Dsen2 {
        self.backprojection = (steps > 0).then(|| BackProjection::new(scale, steps));
        self
    }

    /// The back-projection layer, when there is one.
    pub fn backprojection(&self) -> Option<&BackProjection> {
        self.backprojection.as_ref()
    }

    /// The same network without its back-projection layer.
    pub fn without_backprojection(&self) -> Dsen2 {
        let mut net = self.clone();
        net.backprojection = None;
        net
    }

    /// Back-projection steps (0 without the layer).
    pub fn backprojection_steps(&self) -> usize {
        self.backprojection.as_ref().map_or(0, |b| b.steps)
    }

    /// How far an output pixel sees: the number of 3×3 convolutions plus the
    /// back-projection's radius.
    pub fn receptive_radius(&self) -> u32 {
        (2 * self.blocks.len() + 2) as u32
            + self
                .backprojection
                .as_ref()
                .map_or(0, BackProjection::radius)
    }

    /// Forward pass over the graph inputs in order (normalised; coarse ones upsampled).
    pub fn forward(&self, inputs: Vec<Tensor<4>>) -> Tensor<4> {
        self.forward_joined(Tensor::cat(inputs, 1))
    }

    /// Forward pass over the graph inputs concatenated along the channels: the export
    /// entry point (one graph input, split into the manifest's inputs after export).
    pub fn forward_joined(&self, x: Tensor<4>) -> Tensor<4> {
        let cin: usize = self.groups.iter().sum();
        let cout = self.groups.last().copied().unwrap_or(0);
        // The last input's channels (the upsampled coarse bands): one-hot 1×1 conv.
        let mut w = vec![0f32; cout * cin];
        for c in 0..cout {
            w[c * cin + cin - cout + c] = 1.0;
        }
        let w = Tensor::from_data(TensorData::new(w, [cout, cin, 1, 1]), &x.device());
        let skip = conv2d(
            x.clone(),
            w,
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let mut h = act(self.head.forward(x), self.slope);
        for b in &self.blocks {
            let r = b.conv2.forward(act(b.conv1.forward(h.clone()), self.slope));
            h = h + r.mul_scalar(RES_SCALE);
        }
        let y = self.tail.forward(h) + skip.clone();
        match &self.backprojection {
            Some(bp) => bp.forward(y, skip),
            None => y,
        }
    }
}

/// The GAN discriminator (never exported): strided convolutions with LeakyReLU, global
/// average pooling, one logit per sample. It sees the guide bands and a candidate output.
#[derive(Module, Debug)]
pub struct Discriminator {
    convs: Vec<Conv2d>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

/// The discriminator's LeakyReLU slope.
const D_SLOPE: f32 = 0.2;

impl Discriminator {
    /// A discriminator for `in_channels` input channels.
    pub fn new(in_channels: usize, features: usize, device: &Device) -> Discriminator {
        let widths = [features, features * 2, features * 2];
        let mut convs = Vec::new();
        let mut cin = in_channels;
        for &w in &widths {
            convs.push(
                Conv2dConfig::new([cin, w], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            cin = w;
        }
        Discriminator {
            convs,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(cin, 1).init(device),
        }
    }

    /// Logits `[n]` for `x` (`[n, c, h, w]`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<1> {
        let mut h = x;
        for c in &self.convs {
            h = act(c.forward(h), D_SLOPE);
        }
        let pooled: Tensor<2> = self.pool.forward(h).flatten(1, 3);
        let logits: Tensor<2> = self.fc.forward(pooled);
        logits.flatten(0, 1)
    }
}
