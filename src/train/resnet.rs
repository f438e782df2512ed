//! ResNet50 (He et al. 2016) for BigEarthNet: 12 bands in, 19 sigmoid outputs (the
//! sigmoid is inside the network, so the exported graph outputs probabilities).
//!
//! Invariants: bottleneck blocks `[3, 4, 6, 3]` with widths 64…512 and expansion 4
//! (23.5 M parameters for 12 → 19); BatchNorm after every convolution; the band subset
//! changes only the stem's input channels.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

/// Conv + BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> ConvBn {
        ConvBn {
            conv: conv(cin, cout, k, stride, device),
            bn: bn(cout, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// The bottleneck block: 1×1 → 3×3 (strided) → 1×1 ×4, plus the (projected) shortcut.
#[derive(Module, Debug)]
pub struct Bottleneck {
    a: ConvBn,
    b: ConvBn,
    c: ConvBn,
    down: Option<ConvBn>,
}

impl Bottleneck {
    fn new(cin: usize, width: usize, stride: usize, device: &Device) -> Bottleneck {
        let cout = width * 4;
        Bottleneck {
            a: ConvBn::new(cin, width, 1, 1, device),
            b: ConvBn::new(width, width, 3, stride, device),
            c: ConvBn::new(width, cout, 1, 1, device),
            down: (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.down {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let h = relu(self.a.forward(x));
        let h = relu(self.b.forward(h));
        relu(self.c.forward(h) + skip)
    }
}

/// ResNet50 with a sigmoid head.
#[derive(Module, Debug)]
pub struct ResNet50 {
    stem: ConvBn,
    pool: MaxPool2d,
    blocks: Vec<Bottleneck>,
    avg: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet50 {
    /// A network for `bands` input channels and `classes` outputs.
    pub fn new(bands: usize, classes: usize, device: &Device) -> ResNet50 {
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, (&n, &width)) in [3usize, 4, 6, 3]
            .iter()
            .zip(&[64usize, 128, 256, 512])
            .enumerate()
        {
            for i in 0..n {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(cin, width, stride, device));
                cin = width * 4;
            }
        }
        ResNet50 {
            stem: ConvBn::new(bands, 64, 7, 2, device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(cin, classes).init(device),
        }
    }

    /// Logits `[n, classes]`.
    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = self.pool.forward(relu(self.stem.forward(x)));
        for b in &self.blocks {
            h = b.forward(h);
        }
        let pooled: Tensor<2> = self.avg.forward(h).flatten(1, 3);
        self.fc.forward(pooled)
    }

    /// Probabilities `[n, classes]` (the exported graph).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        sigmoid(self.logits(x))
    }
}
