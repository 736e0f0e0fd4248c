//! A ResNet basic block in training mode, `relu(bn2(conv2(relu(bn1(conv1(x))))) + skip)`
//! with `skip` either `x` or `bn_s(conv_s(x))`, as one autograd node on the CPU kernels.
//!
//! Why one node: candle's backward hands every gradient between two nodes over through
//! its gradient store, as a zero-filled tensor the size of the activation plus an add
//! into it. As three nodes (two [`super::conv_bn`] and the [`super::residual`] join) a
//! block pays that on its two inner activations and a second add on its input; on the
//! 32² layers of a CIFAR ResNet-18 that is about a tenth of the training step. Inside
//! one node the gradients pass straight from one kernel to the next.
//!
//! candle nodes take at most three tensors, so the block's parameters other than the
//! first convolution's weight travel packed into one tensor (see [`Pack`]). Building
//! that pack copies those weights every step and its backward unpacks their gradients
//! through the store again, so the block pays off only where its activations are much
//! larger than its weights: [`worth_fusing`] decides.
//!
//! The same kernels run in the same order on the same values as the three nodes, so the
//! output and every gradient are the same bits (`tests/residual_block.rs`).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor, WithDType};

use super::act::Act;
use super::batch_norm::BatchNormTrain;
use super::conv_bn::{layer_forward, Layer};
use super::conv_gemm::ConvSpec;
use super::cpu::{cpu_fwd, slice, Input};

/// One convolution with its batch norm: the weight `[O, C, KH, KW]`, γ and β `[O]`, and
/// the convolution's stride and padding.
#[derive(Clone, Copy)]
pub struct ConvBnParams<'a> {
    pub weight: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub spec: ConvSpec,
}

/// A basic block's layers: two 3×3 convolutions and, where the block changes stride or
/// width, the 1×1 projection of its shortcut.
#[derive(Clone, Copy)]
pub struct BlockParams<'a> {
    pub conv1: ConvBnParams<'a>,
    pub conv2: ConvBnParams<'a>,
    pub shortcut: Option<ConvBnParams<'a>>,
}

/// The output of [`residual_block_train_cpu`], and the batch mean and biased variance
/// (`[C]` each, no gradient) of each batch norm, in the order conv1, conv2, shortcut,
/// for the running statistics.
pub struct BlockOut {
    pub y: Tensor,
    pub stats: Vec<(Tensor, Tensor)>,
}

/// Where the packed parameters lie: `conv2`'s weight, then γ;β of `conv1` and of `conv2`,
/// then (with a shortcut) its weight and its γ;β. Offsets and lengths in elements.
#[derive(Clone, Debug)]
struct Pack {
    w2: (usize, Vec<usize>),
    gb1: usize,
    gb2: usize,
    shortcut: Option<((usize, Vec<usize>), usize)>,
    channels: usize,
    len: usize,
}

impl Pack {
    fn of(p: &BlockParams) -> candle_core::Result<Pack> {
        let c = p.conv1.weight.dim(0)?;
        let n2 = p.conv2.weight.elem_count();
        let mut len = n2 + 4 * c;
        let shortcut = match p.shortcut {
            Some(s) => {
                let at = len;
                len += s.weight.elem_count() + 2 * c;
                Some(((at, s.weight.dims().to_vec()), at + s.weight.elem_count()))
            }
            None => None,
        };
        Ok(Pack {
            w2: (0, p.conv2.weight.dims().to_vec()),
            gb1: n2,
            gb2: n2 + 2 * c,
            shortcut,
            channels: c,
            len,
        })
    }

    /// The packed tensor, built from the parameters so that their gradients flow back.
    fn build(p: &BlockParams) -> candle_core::Result<Tensor> {
        let gb = |l: &ConvBnParams| Tensor::stack(&[l.gamma, l.beta], 0)?.flatten_all();
        let mut parts = vec![p.conv2.weight.flatten_all()?, gb(&p.conv1)?, gb(&p.conv2)?];
        if let Some(s) = &p.shortcut {
            parts.push(s.weight.flatten_all()?);
            parts.push(gb(s)?);
        }
        Tensor::cat(&parts, 0)
    }

    /// The weight at `(offset, dims)` as a view of `pack`.
    fn weight(pack: &Tensor, (at, dims): &(usize, Vec<usize>)) -> candle_core::Result<Tensor> {
        pack.narrow(0, *at, dims.iter().product())?.reshape(dims.as_slice())
    }

    /// γ and β starting at `at`, as views of `pack`.
    fn gamma_beta(&self, pack: &Tensor, at: usize) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            pack.narrow(0, at, self.channels)?,
            pack.narrow(0, at + self.channels, self.channels)?,
        ))
    }
}

thread_local! {
    static THREE_NODES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Build this thread's blocks as three nodes even where one would be faster: for tests
/// and benchmarks that compare the two (the bits are the same).
pub fn set_three_nodes(on: bool) {
    THREE_NODES.with(|c| c.set(on));
}

/// Whether the one-node block is the faster choice for input `x`: its output
/// activations must outnumber the weights it packs at least twice over (in a CIFAR
/// ResNet-18: the 64- and 128-channel stages; the deeper ones keep three nodes).
pub fn worth_fusing(x: &Tensor, p: &BlockParams) -> candle_core::Result<bool> {
    if THREE_NODES.with(|c| c.get()) {
        return Ok(false);
    }
    let (b, _, h, w) = x.dims4()?;
    let s = p.conv1.spec.stride.max(1);
    let out = b * p.conv1.weight.dim(0)? * h.div_ceil(s) * w.div_ceil(s);
    Ok(out >= 2 * Pack::of(p)?.len)
}

/// What the forward pass leaves for the backward: each convolution's output (its batch
/// norm's input) and the batch norm as applied, and the first batch norm's output (the
/// second convolution's input).
struct Saved {
    conv1: Tensor,
    bn1: BatchNormTrain,
    y1: Tensor,
    conv2: Tensor,
    bn2: BatchNormTrain,
    shortcut: Option<(Tensor, BatchNormTrain)>,
    stats: Vec<Tensor>,
}

struct ResidualBlockTrain {
    specs: [ConvSpec; 3],
    eps: f64,
    pack: Pack,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl CustomOp3 for ResidualBlockTrain {
    fn name(&self) -> &'static str {
        "residual-block-train"
    }

    cpu_fwd!("residual_block"; s1, l1, s2, l2, s3, l3);

    fn bwd(
        &self,
        x: &Tensor,
        w1: &Tensor,
        pack: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (conv1, bn1, y1, conv2, bn2, shortcut) = {
            let saved = self.saved.lock().expect("residual_block: saved state poisoned");
            let s = saved
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("residual_block: backward before forward".into()))?;
            (
                s.conv1.clone(),
                s.bn1.clone(),
                s.y1.clone(),
                s.conv2.clone(),
                s.bn2.clone(),
                s.shortcut.clone(),
            )
        };
        let [spec1, spec2, spec_s] = self.specs;
        let (want_x, want_w1, want_pack) = (x.track_op(), w1.track_op(), pack.track_op());
        // The join's gradient reaches both summands, as `residual`'s does.
        let dz = Act::Relu.backward(grad, res)?.contiguous()?;

        let w2 = Pack::weight(pack, &self.pack.w2)?;
        let layer2 = Layer {
            conv: &conv2,
            bn: &bn2,
            spec: spec2,
        };
        let (g2, b2) = self.pack.gamma_beta(pack, self.pack.gb2)?;
        let (dy1, dw2, dg2, db2) = layer2.backward((&y1, true), (&w2, want_pack), (&g2, &b2), &dz)?;
        let dy1 = dy1.ok_or_else(|| candle_core::Error::Msg("residual_block: no gradient for the inner activation".into()))?;

        let layer1 = Layer {
            conv: &conv1,
            bn: &bn1,
            spec: spec1,
        };
        let (g1, b1) = self.pack.gamma_beta(pack, self.pack.gb1)?;
        let (dx1, dw1, dg1, db1) = layer1.backward((x, want_x), (w1, want_w1), (&g1, &b1), &dy1)?;

        let (dx_skip, shortcut_grads) = match (&shortcut, &self.pack.shortcut) {
            (Some((conv_s, bn_s)), Some((ws_at, gbs_at))) => {
                let ws = Pack::weight(pack, ws_at)?;
                let layer_s = Layer {
                    conv: conv_s,
                    bn: bn_s,
                    spec: spec_s,
                };
                let (gs, bs) = self.pack.gamma_beta(pack, *gbs_at)?;
                let (dxs, dws, dgs, dbs) = layer_s.backward((x, want_x), (&ws, want_pack), (&gs, &bs), &dz)?;
                (dxs, Some((dws, dgs, dbs)))
            }
            _ => (Some(dz), None),
        };
        let dx = match (dx1, dx_skip) {
            (Some(a), Some(b)) if want_x => Some(a.add(&b)?),
            _ => None,
        };

        let dpack = if want_pack {
            let missing = || candle_core::Error::Msg("residual_block: a packed weight's gradient is missing".into());
            let gb = |g: Tensor, b: Tensor| Tensor::cat(&[g, b], 0);
            let mut parts = vec![dw2.ok_or_else(missing)?.flatten_all()?, gb(dg1, db1)?, gb(dg2, db2)?];
            if let Some((dws, dgs, dbs)) = shortcut_grads {
                parts.push(dws.ok_or_else(missing)?.flatten_all()?);
                parts.push(gb(dgs, dbs)?);
            }
            Some(Tensor::cat(&parts, 0)?)
        } else {
            None
        };
        Ok((dx, dw1, dpack))
    }
}

impl ResidualBlockTrain {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>, (s3, l3): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let op = "residual_block";
        let (x, w1, pack) = (slice::<T>(s1, l1, op)?, slice::<T>(s2, l2, op)?, slice::<T>(s3, l3, op)?);
        if l3.dims() != [self.pack.len] {
            candle_core::bail!("{op}: packed parameters {:?}, want [{}]", l3.dims(), self.pack.len)
        }
        let p = &self.pack;
        let [spec1, spec2, spec_s] = self.specs;
        let (w2_at, w2_dims) = &p.w2;
        let w2 = &pack[*w2_at..*w2_at + w2_dims.iter().product::<usize>()];
        let gb = |at: usize| &pack[at..at + 2 * p.channels];

        let layer = |x, w, spec, at, act| layer_forward(x, w, spec, gb(at), self.eps, act);
        let l1o = layer((l1.dims(), x), (l2.dims(), w1), spec1, p.gb1, Act::Relu)?;
        let l2o = layer((&l1o.dims, &l1o.y), (w2_dims, w2), spec2, p.gb2, Act::Identity)?;
        let d2 = l2o.dims;
        let shortcut = match &p.shortcut {
            Some(((ws_at, ws_dims), gbs_at)) => {
                let ws = &pack[*ws_at..*ws_at + ws_dims.iter().product::<usize>()];
                let out = layer((l1.dims(), x), (ws_dims, ws), spec_s, *gbs_at, Act::Identity)?;
                if out.dims != d2 {
                    candle_core::bail!("{op}: shortcut output {:?} against the block's {d2:?}", out.dims)
                }
                Some(out)
            }
            None => {
                if l1.dims() != d2 {
                    candle_core::bail!("{op}: identity shortcut from {:?} to {d2:?}", l1.dims())
                }
                None
            }
        };
        let skip = shortcut.as_ref().map_or(x, |s| s.y.as_slice());
        let y = Act::Relu.zip_map(&l2o.y, skip, |act, a, b| act.apply(a + b));

        let cpu = &Device::Cpu;
        let tensor = |v: Vec<T>, dims: [usize; 4]| Tensor::from_vec(v, dims.to_vec(), cpu);
        let stats = |v: Vec<T>| {
            let c = v.len() / 2;
            Tensor::from_vec(v, (2, c), cpu)
        };
        let mut all_stats = vec![stats(l1o.stats)?, stats(l2o.stats)?];
        let shortcut = match shortcut {
            Some(s) => {
                all_stats.push(stats(s.stats)?);
                Some((tensor(s.conv, s.dims)?, s.bn))
            }
            None => None,
        };
        let saved = Saved {
            conv1: tensor(l1o.conv, l1o.dims)?,
            bn1: l1o.bn,
            y1: tensor(l1o.y, l1o.dims)?,
            conv2: tensor(l2o.conv, d2)?,
            bn2: l2o.bn,
            shortcut,
            stats: all_stats,
        };
        *self.saved.lock().expect("residual_block: saved state poisoned") = Some(saved);
        Ok((y, Shape::from(d2.to_vec())))
    }
}

/// A basic block in training mode (batch statistics) as one node: `x` `[B, C, H, W]` and
/// the parameters on the CPU, f32 or f64.
pub fn residual_block_train_cpu(x: &Tensor, p: &BlockParams, eps: f64) -> candle_core::Result<BlockOut> {
    let saved = Arc::new(Mutex::new(None));
    let op = ResidualBlockTrain {
        specs: [p.conv1.spec, p.conv2.spec, p.shortcut.map(|s| s.spec).unwrap_or(p.conv1.spec)],
        eps,
        pack: Pack::of(p)?,
        saved: saved.clone(),
    };
    let pack = Pack::build(p)?;
    let y = x.contiguous()?.apply_op3(&p.conv1.weight.contiguous()?, &pack, op)?;
    let stats = saved
        .lock()
        .expect("residual_block: saved state poisoned")
        .as_ref()
        .map(|s| s.stats.clone())
        .ok_or_else(|| candle_core::Error::Msg("residual_block: the forward pass left no statistics".into()))?;
    let stats = stats
        .iter()
        .map(|s| Ok((s.get(0)?, s.get(1)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(BlockOut { y, stats })
}
