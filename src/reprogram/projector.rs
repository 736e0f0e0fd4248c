//! `R_out`: projector `g: d → P` into the proxy space and task head `h: P → C`.

use candle_core::Tensor;

use crate::config::ProjectorKind;
use crate::models::prefix::Prefix;
use crate::onnx::{Attr, Graph};
use crate::ops::{conv::linear, norm::l2_normalize};
use crate::params::Params;
use crate::Result;

pub struct Projector {
    layers: Vec<(Tensor, Tensor)>,
    normalize: bool,
}

impl Projector {
    pub fn new(
        p: &mut Params,
        prefix: impl Into<Prefix>,
        kind: ProjectorKind,
        input: usize,
        proxy: usize,
        normalize: bool,
    ) -> Result<Self> {
        let prefix = prefix.into();
        let dims = match kind {
            ProjectorKind::Linear => vec![(input, proxy)],
            ProjectorKind::Mlp => vec![(input, 2 * proxy), (2 * proxy, proxy)],
        };
        let mut layers = Vec::new();
        for (i, (din, dout)) in dims.into_iter().enumerate() {
            layers.push((
                p.uniform(&prefix.pp(format_args!("fc{i}")).key("weight"), &[dout, din], din)?,
                p.uniform(&prefix.pp(format_args!("fc{i}")).key("bias"), &[dout], din)?,
            ));
        }
        Ok(Projector { layers, normalize })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            if i > 0 {
                x = x.relu()?;
            }
            x = linear(&x, w, Some(b))?;
        }
        Ok(if self.normalize { l2_normalize(&x)? } else { x })
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let mut x = x.to_string();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            if i > 0 {
                x = g.node("Relu", &[&x], vec![]);
            }
            x = g.linear(&format!("projector.fc{i}"), &x, w, b)?;
        }
        if !self.normalize {
            return Ok(x);
        }
        // As `l2_normalize`: x / sqrt(Σx² + 1e-12).
        let sq = g.node(
            "ReduceSumSquare",
            &[&x],
            vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))],
        );
        let eps = g.floats("eps", &[], &[1e-12]);
        let sq = g.binary("Add", &sq, &eps);
        let norm = g.node("Sqrt", &[&sq], vec![]);
        Ok(g.binary("Div", &x, &norm))
    }
}

/// Linear task head. With L2-normalised proxies the logits would be tiny, so the head
/// scales its input by a fixed factor (a cosine-classifier style temperature).
pub struct Head {
    pub weight: Tensor,
    pub bias: Tensor,
    scale: f64,
}

impl Head {
    pub fn new(p: &mut Params, prefix: impl Into<Prefix>, input: usize, classes: usize, scale: f64) -> Result<Self> {
        let prefix = prefix.into();
        Ok(Head {
            weight: p.uniform(&prefix.key("weight"), &[classes, input], input)?,
            bias: p.uniform(&prefix.key("bias"), &[classes], input)?,
            scale,
        })
    }

    /// A trainable copy of `other` (stage 2 starts from the teacher's head).
    pub fn copy(p: &mut Params, prefix: impl Into<Prefix>, other: &Head) -> Result<Self> {
        let prefix = prefix.into();
        Ok(Head {
            weight: p.copy_of(&prefix.key("weight"), &other.weight)?,
            bias: p.copy_of(&prefix.key("bias"), &other.bias)?,
            scale: other.scale,
        })
    }

    /// A frozen snapshot of `other` (plain tensors, never optimised).
    pub fn frozen(other: &Head) -> Result<Self> {
        Ok(Head {
            weight: other.weight.copy()?.detach(),
            bias: other.bias.copy()?.detach(),
            scale: other.scale,
        })
    }

    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let z = if self.scale != 1.0 { (z * self.scale)? } else { z.clone() };
        Ok(linear(&z, &self.weight, Some(&self.bias))?)
    }

    pub fn emit_onnx(&self, g: &mut Graph, z: &str) -> Result<String> {
        let z = if self.scale != 1.0 {
            g.scale(z, self.scale as f32)
        } else {
            z.to_string()
        };
        g.linear("head", &z, &self.weight, &self.bias)
    }
}
