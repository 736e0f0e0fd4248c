//! CIFAR-style ResNets (3×3 stem, no max-pool): ResNet-8 (He et al. 2016: three stages
//! of one basic block, widths 16/32/64) and ResNet-18 (four stages of two basic
//! blocks, widths 64/128/256/512), channel widths scaled by `width`.

use candle_core::Tensor;

use super::blocks::{Conv, ConvBn, Macs, BN_EPS};
use crate::models::prefix::Prefix;
use crate::onnx::Graph;
use crate::ops::act::Act;
use crate::ops::cpu::fast_path;
use crate::ops::residual::add_act;
use crate::ops::residual_block::{residual_block_train_cpu, worth_fusing, BlockParams};
use crate::params::Params;
use crate::Result;

/// Two 3×3 conv-BN layers and a (projected) identity shortcut.
pub struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    pub fn new(
        p: &mut Params,
        name: impl Into<Prefix>,
        cin: usize,
        cout: usize,
        stride: usize,
        side: &mut usize,
        macs: &mut Macs,
    ) -> Result<Self> {
        let name = &name.into();
        let input_side = *side;
        let conv1 = ConvBn::new(p, name.pp("conv1"), Conv::dense(cin, cout, 3, stride), side, macs)?;
        let conv2 = ConvBn::new(p, name.pp("conv2"), Conv::dense(cout, cout, 3, 1), side, macs)?;
        let shortcut = if stride != 1 || cin != cout {
            let mut s = input_side;
            Some(ConvBn::new(
                p,
                name.pp("shortcut"),
                Conv::dense(cin, cout, 1, stride),
                &mut s,
                macs,
            )?)
        } else {
            None
        };
        Ok(BasicBlock { conv1, conv2, shortcut })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && fast_path(x) {
            if let Some(y) = self.forward_fused(x)? {
                return Ok(y);
            }
        }
        let y = self.conv1.forward_act(x, train, Act::Relu)?;
        let y = self.conv2.forward(&y, train)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x, train)?,
            None => x.clone(),
        };
        Ok(add_act(&y, &skip, Act::Relu)?)
    }

    /// The training forward as one node where [`worth_fusing`] says so (the same bits
    /// as the three nodes), else `None`.
    fn forward_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (Some(conv1), Some(conv2)) = (self.conv1.fused_params()?, self.conv2.fused_params()?) else {
            return Ok(None);
        };
        let shortcut = match &self.shortcut {
            Some(s) => match s.fused_params()? {
                Some(p) => Some(p),
                None => return Ok(None),
            },
            None => None,
        };
        let p = BlockParams { conv1, conv2, shortcut };
        if !worth_fusing(x, &p)? {
            return Ok(None);
        }
        let out = residual_block_train_cpu(x, &p, BN_EPS)?;
        let layers = [Some(&self.conv1), Some(&self.conv2), self.shortcut.as_ref()];
        for (layer, (mean, var)) in layers.into_iter().flatten().zip(&out.stats) {
            layer.record_batch_stats(mean, var, &out.y)?;
        }
        Ok(Some(out.y))
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let y = self.conv1.emit_onnx(g, x, Act::Relu)?;
        let y = self.conv2.emit_onnx(g, &y, Act::Identity)?;
        let skip = match &self.shortcut {
            Some(s) => s.emit_onnx(g, x, Act::Identity)?,
            None => x.to_string(),
        };
        let sum = g.binary("Add", &y, &skip);
        Ok(g.node("Relu", &[&sum], vec![]))
    }
}

pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    feature_dim: usize,
    variant: &'static str,
    pub macs: Macs,
}

impl ResNet {
    /// `depth`: 8 or 18.
    pub fn new(p: &mut Params, prefix: impl Into<Prefix>, depth: usize, width: f64, in_channels: usize, side: usize) -> Result<Self> {
        let prefix = &prefix.into();
        let (base, stages): (&[usize], &[usize]) = match depth {
            8 => (&[16, 32, 64], &[1, 1, 1]),
            _ => (&[64, 128, 256, 512], &[2, 2, 2, 2]),
        };
        let widths: Vec<usize> = base.iter().map(|&c| ((c as f64 * width).round() as usize).max(4)).collect();
        let (mut side, mut macs) = (side, Macs::default());
        let stem = ConvBn::new(
            p,
            prefix.pp("stem"),
            Conv::dense(in_channels, widths[0], 3, 1),
            &mut side,
            &mut macs,
        )?;
        let mut blocks = Vec::new();
        let mut cin = widths[0];
        for (s, (&cout, &n)) in widths.iter().zip(stages).enumerate() {
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    p,
                    prefix.pp(format_args!("layer{}", s + 1)).pp(b),
                    cin,
                    cout,
                    stride,
                    &mut side,
                    &mut macs,
                )?);
                cin = cout;
            }
        }
        Ok(ResNet {
            stem,
            blocks,
            feature_dim: cin,
            variant: if depth == 8 { "resnet8" } else { "resnet18" },
            macs,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    pub fn variant(&self) -> &'static str {
        self.variant
    }

    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_act(x, train, Act::Relu)?;
        for b in &self.blocks {
            x = b.forward(&x, train)?;
        }
        Ok(x.mean((2, 3))?)
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let mut x = self.stem.emit_onnx(g, x, Act::Relu)?;
        for b in &self.blocks {
            x = b.emit_onnx(g, &x)?;
        }
        Ok(g.global_mean(&x))
    }
}
