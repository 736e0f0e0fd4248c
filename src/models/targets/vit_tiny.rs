//! A tiny ViT for small images: 4×4 patches, depth 6, width 192, 3 heads, MLP ×4,
//! pre-norm blocks, a class token and learned position embeddings; the features are
//! the final-normed class token. Attention and layer norm are composed from ops with
//! correct gradients (`blocks::softmax_last`, `blocks::LayerNorm`).

use candle_core::Tensor;

use super::blocks::{softmax_last, Dense, LayerNorm, Macs};
use crate::models::prefix::Prefix;
use crate::onnx::{Attr, ConvSpec, Graph};
use crate::params::Params;
use crate::{Error, Result};

pub const PATCH: usize = 4;
pub const DEPTH: usize = 6;
pub const DIM: usize = 192;
pub const HEADS: usize = 3;
const MLP_RATIO: usize = 4;

/// Pre-norm transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
pub struct Block {
    ln1: LayerNorm,
    qkv: Dense,
    proj: Dense,
    ln2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    dim: usize,
    heads: usize,
}

impl Block {
    pub fn new(p: &mut Params, name: impl Into<Prefix>, dim: usize, heads: usize, tokens: usize, macs: &mut Macs) -> Result<Self> {
        let name = &name.into();
        macs.add(tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * MLP_RATIO * dim);
        Ok(Block {
            ln1: LayerNorm::new(p, name.pp("norm1"), dim)?,
            qkv: Dense::new(p, name.pp("attn").pp("qkv"), dim, 3 * dim)?,
            proj: Dense::new(p, name.pp("attn").pp("proj"), dim, dim)?,
            ln2: LayerNorm::new(p, name.pp("norm2"), dim)?,
            fc1: Dense::new(p, name.pp("mlp").pp("fc1"), dim, MLP_RATIO * dim)?,
            fc2: Dense::new(p, name.pp("mlp").pp("fc2"), MLP_RATIO * dim, dim)?,
            dim,
            heads,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        // [B, N, 3, H, hd] → three [B·H, N, hd]
        let qkv = qkv.reshape((b, n, 3, self.heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let part = |i: usize| -> candle_core::Result<Tensor> { qkv.get(i)?.contiguous()?.reshape((b * self.heads, n, hd)) };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let attn = softmax_last(&scores)?.matmul(&v)?;
        let attn = attn
            .reshape((b, self.heads, n, hd))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, n, d))?;
        let x = (x + self.proj.forward(&attn)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?.gelu_erf()?;
        Ok((&x + self.fc2.forward(&h)?)?)
    }

    /// The block as ONNX nodes on `x` `[B, N, D]`; attention per head from MatMul and
    /// Softmax, GELU from Erf.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let (d, heads) = (self.dim as i64, self.heads as i64);
        let hd = d / heads;
        let h = self.ln1.emit_onnx(g, x)?;
        let qkv = self.qkv.emit_onnx(g, &h)?;
        let qkv = g.reshape(&qkv, &[0, 0, 3, heads, hd]);
        let qkv = g.transpose(&qkv, &[2, 0, 3, 1, 4]);
        let (q, k, v) = (g.take(&qkv, 0, 0), g.take(&qkv, 0, 1), g.take(&qkv, 0, 2));
        let kt = g.transpose(&k, &[0, 1, 3, 2]);
        let scores = g.binary("MatMul", &q, &kt);
        let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
        let attn = g.node("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        let ctx = g.binary("MatMul", &attn, &v);
        let ctx = g.transpose(&ctx, &[0, 2, 1, 3]);
        let ctx = g.reshape(&ctx, &[0, 0, d]);
        let attended = self.proj.emit_onnx(g, &ctx)?;
        let x = g.binary("Add", x, &attended);
        let h = self.ln2.emit_onnx(g, &x)?;
        let h = self.fc1.emit_onnx(g, &h)?;
        let root2 = g.floats("sqrt2", &[], &[std::f32::consts::SQRT_2]);
        let e = g.binary("Div", &h, &root2);
        let e = g.node("Erf", &[&e], vec![]);
        let one = g.floats("one", &[], &[1.0]);
        let e = g.binary("Add", &e, &one);
        let gelu = g.binary("Mul", &h, &e);
        let gelu = g.scale(&gelu, 0.5);
        let out = self.fc2.emit_onnx(g, &gelu)?;
        Ok(g.binary("Add", &x, &out))
    }
}

pub struct VitTiny {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    pub macs: Macs,
}

impl VitTiny {
    pub fn new(p: &mut Params, prefix: impl Into<Prefix>, in_channels: usize, side: usize) -> Result<Self> {
        let prefix = &prefix.into();
        if !side.is_multiple_of(PATCH) {
            return Err(Error::config(
                "target.image_size",
                format!("{side} must be a multiple of the ViT patch size {PATCH}"),
            ));
        }
        let grid = side / PATCH;
        let tokens = grid * grid + 1;
        let fan_in = in_channels * PATCH * PATCH;
        let mut macs = Macs::default();
        macs.add(grid * grid * fan_in * DIM);
        let patch_weight = p.uniform(
            &prefix.pp("patch_embed").pp("proj").key("weight"),
            &[DIM, in_channels, PATCH, PATCH],
            fan_in,
        )?;
        let patch_bias = p.uniform(&prefix.pp("patch_embed").pp("proj").key("bias"), &[DIM], fan_in)?;
        let cls = p.normal(&prefix.key("cls_token"), &[1, 1, DIM], 0.02)?;
        let pos = p.normal(&prefix.key("pos_embed"), &[1, tokens, DIM], 0.02)?;
        let blocks = (0..DEPTH)
            .map(|i| Block::new(p, prefix.pp("blocks").pp(i), DIM, HEADS, tokens, &mut macs))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(p, prefix.pp("norm"), DIM)?;
        Ok(VitTiny {
            patch_weight,
            patch_bias,
            cls,
            pos,
            blocks,
            norm,
            macs,
        })
    }

    pub fn feature_dim(&self) -> usize {
        DIM
    }

    /// Patch embedding as one GEMM over non-overlapping patches (a stride-4, 4×4
    /// convolution with PyTorch's weight layout `[D, C, 4, 4]`).
    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (gh, gw) = (h / PATCH, w / PATCH);
        let patches = x
            .reshape((b, c, gh, PATCH, gw, PATCH))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * PATCH * PATCH))?;
        let wm = self.patch_weight.flatten_from(1)?;
        Ok(patches.broadcast_matmul(&wm.t()?)?.broadcast_add(&self.patch_bias)?)
    }

    pub fn features(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let tokens = self.embed(x)?;
        let b = tokens.dim(0)?;
        let cls = self.cls.broadcast_as((b, 1, DIM))?;
        let mut x = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.pos)?;
        for blk in &self.blocks {
            x = blk.forward(&x)?;
        }
        Ok(self.norm.forward(&x)?.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// The features as ONNX nodes. The class token is a constant, so it enters as a
    /// zero token padded in front of the patches with the token added to the first
    /// position embedding: no shape arithmetic on the batch dimension.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let patches = ConvSpec {
            stride: PATCH,
            pad: 0,
            group: 1,
        };
        let tokens = g.conv("patch_embed.proj", x, &self.patch_weight, &self.patch_bias, patches)?;
        let tokens = g.reshape(&tokens, &[0, DIM as i64, -1]);
        let tokens = g.transpose(&tokens, &[0, 2, 1]);
        let pads = g.ints("pads", &[6], &[0, 1, 0, 0, 0, 0]);
        let padded = g.node("Pad", &[&tokens, &pads], vec![]);
        let n = self.pos.dim(1)?;
        let first = (self.pos.narrow(1, 0, 1)? + &self.cls)?;
        let base = Tensor::cat(&[&first, &self.pos.narrow(1, 1, n - 1)?], 1)?;
        let base = g.tensor("pos_embed_with_cls", &base)?;
        let mut x = g.binary("Add", &padded, &base);
        for blk in &self.blocks {
            x = blk.emit_onnx(g, &x)?;
        }
        let x = self.norm.emit_onnx(g, &x)?;
        Ok(g.take(&x, 1, 0))
    }
}
