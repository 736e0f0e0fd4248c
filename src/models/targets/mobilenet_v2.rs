//! MobileNetV2 (Sandler et al. 2018) with a width multiplier, in its CIFAR form for
//! small inputs: the stem and the first two stages keep stride 1, so a 32×32 image
//! ends at 4×4 instead of 1×1.

use candle_core::Tensor;

use super::blocks::{Conv, ConvBn, Macs};
use crate::models::prefix::Prefix;
use crate::onnx::Graph;
use crate::ops::act::Act;
use crate::params::Params;
use crate::Result;

/// (expansion t, channels c, repeats n, stride s) as in the paper, strides adapted.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Round to a multiple of 8, never more than 10% below `v` (torchvision's rule).
fn make_divisible(v: f64) -> usize {
    let d = 8.0;
    let new = ((v + d / 2.0) / d).floor().max(1.0) * d;
    (if new < 0.9 * v { new + d } else { new }) as usize
}

/// Expand (1×1), depthwise 3×3, project (1×1), with a residual when shapes allow.
pub struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

/// An inverted residual's widths: `cin` expanded `t` times, projected to `cout`, with
/// the depthwise layer at `stride`.
#[derive(Debug, Clone, Copy)]
pub struct Expansion {
    pub cin: usize,
    pub cout: usize,
    pub t: usize,
    pub stride: usize,
}

impl InvertedResidual {
    pub fn new(p: &mut Params, name: impl Into<Prefix>, e: Expansion, side: &mut usize, macs: &mut Macs) -> Result<Self> {
        let name = &name.into();
        let Expansion { cin, cout, t, stride } = e;
        let hidden = cin * t;
        let expand = if t != 1 {
            Some(ConvBn::new(p, name.pp("expand"), Conv::dense(cin, hidden, 1, 1), side, macs)?)
        } else {
            None
        };
        let depthwise = ConvBn::new(p, name.pp("depthwise"), Conv::depthwise(hidden, 3, stride), side, macs)?;
        let project = ConvBn::new(p, name.pp("project"), Conv::dense(hidden, cout, 1, 1), side, macs)?;
        Ok(InvertedResidual {
            expand,
            depthwise,
            project,
            residual: stride == 1 && cin == cout,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward_act(x, train, Act::Relu6)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward_act(&h, train, Act::Relu6)?;
        let y = self.project.forward(&h, train)?;
        Ok(if self.residual { (y + x)? } else { y })
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let h = match &self.expand {
            Some(e) => e.emit_onnx(g, x, Act::Relu6)?,
            None => x.to_string(),
        };
        let h = self.depthwise.emit_onnx(g, &h, Act::Relu6)?;
        let y = self.project.emit_onnx(g, &h, Act::Identity)?;
        Ok(if self.residual { g.binary("Add", &y, x) } else { y })
    }
}

pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
    feature_dim: usize,
    pub macs: Macs,
}

impl MobileNetV2 {
    pub fn new(p: &mut Params, prefix: impl Into<Prefix>, width: f64, in_channels: usize, side: usize) -> Result<Self> {
        let prefix = &prefix.into();
        let (mut side, mut macs) = (side, Macs::default());
        let mut cin = make_divisible(32.0 * width);
        let stem = ConvBn::new(p, prefix.pp("stem"), Conv::dense(in_channels, cin, 3, 1), &mut side, &mut macs)?;
        let mut blocks = Vec::new();
        for (i, &(t, c, n, s)) in SETTINGS.iter().enumerate() {
            let cout = make_divisible(c as f64 * width);
            for r in 0..n {
                let stride = if r == 0 { s } else { 1 };
                let e = Expansion { cin, cout, t, stride };
                blocks.push(InvertedResidual::new(
                    p,
                    prefix.pp("features").pp(i).pp(r),
                    e,
                    &mut side,
                    &mut macs,
                )?);
                cin = cout;
            }
        }
        let last = make_divisible(1280.0 * width.max(1.0));
        let head = ConvBn::new(p, prefix.pp("head"), Conv::dense(cin, last, 1, 1), &mut side, &mut macs)?;
        Ok(MobileNetV2 {
            stem,
            blocks,
            head,
            feature_dim: last,
            macs,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_act(x, train, Act::Relu6)?;
        for b in &self.blocks {
            x = b.forward(&x, train)?;
        }
        let x = self.head.forward_act(&x, train, Act::Relu6)?;
        Ok(x.mean((2, 3))?)
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let mut x = self.stem.emit_onnx(g, x, Act::Relu6)?;
        for b in &self.blocks {
            x = b.emit_onnx(g, &x)?;
        }
        let x = self.head.emit_onnx(g, &x, Act::Relu6)?;
        Ok(g.global_mean(&x))
    }
}
