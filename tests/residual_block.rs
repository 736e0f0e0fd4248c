//! The one-node ResNet basic block (`ops::residual_block`) against the three nodes it
//! replaces (two convolution + batch norm nodes and the residual join): the same output,
//! batch statistics and gradients to the bit, and gradients against finite differences.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{bits, check_gradient, randn, weighted_sum};
use tdmr::models::targets::resnet::ResNet;
use tdmr::ops::act::Act;
use tdmr::ops::conv::pad4;
use tdmr::ops::conv_bn::conv_bn_train_cpu;
use tdmr::ops::conv_gemm::ConvSpec;
use tdmr::ops::residual::add_act;
use tdmr::ops::residual_block::{residual_block_train_cpu, set_three_nodes, worth_fusing, BlockParams, ConvBnParams};
use tdmr::params::Params;

const EPS: f64 = 1e-5;

/// One convolution's weight, γ and β (γ near 1 so no channel is switched off), seeded.
struct Layer {
    w: Var,
    g: Var,
    b: Var,
    spec: ConvSpec,
}

impl Layer {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, seed: u64, dtype: DType) -> Layer {
        let t = |shape: &[usize], s: u64| randn(shape, s).to_dtype(dtype).unwrap();
        let w = (t(&[cout, cin, k, k], seed) * (1.0 / ((cin * k * k) as f64).sqrt())).unwrap();
        Layer {
            w: Var::from_tensor(&w).unwrap(),
            g: Var::from_tensor(&((t(&[cout], seed + 1) * 0.5).unwrap() + 1.0).unwrap()).unwrap(),
            b: Var::from_tensor(&(t(&[cout], seed + 2) * 0.5).unwrap()).unwrap(),
            spec: ConvSpec { stride, pad: pad4(k / 2) },
        }
    }

    fn params(&self) -> ConvBnParams<'_> {
        ConvBnParams {
            weight: self.w.as_tensor(),
            gamma: self.g.as_tensor(),
            beta: self.b.as_tensor(),
            spec: self.spec,
        }
    }

    fn vars(&self) -> [&Var; 3] {
        [&self.w, &self.g, &self.b]
    }
}

/// A block's layers: `cin → cout` with `stride`; a 1×1 projection where either changes.
struct Block {
    conv1: Layer,
    conv2: Layer,
    shortcut: Option<Layer>,
}

impl Block {
    fn new(cin: usize, cout: usize, stride: usize, dtype: DType) -> Block {
        Block {
            conv1: Layer::new(cin, cout, 3, stride, 10, dtype),
            conv2: Layer::new(cout, cout, 3, 1, 20, dtype),
            shortcut: (stride != 1 || cin != cout).then(|| Layer::new(cin, cout, 1, stride, 30, dtype)),
        }
    }

    fn params(&self) -> BlockParams<'_> {
        BlockParams {
            conv1: self.conv1.params(),
            conv2: self.conv2.params(),
            shortcut: self.shortcut.as_ref().map(Layer::params),
        }
    }

    fn vars(&self) -> Vec<&Var> {
        let mut v: Vec<&Var> = self.conv1.vars().into_iter().chain(self.conv2.vars()).collect();
        if let Some(s) = &self.shortcut {
            v.extend(s.vars());
        }
        v
    }

    /// The block as three nodes: its output and each batch norm's mean and variance.
    fn three_nodes(&self, x: &Tensor) -> (Tensor, Vec<(Tensor, Tensor)>) {
        let node =
            |l: &Layer, x: &Tensor, act| conv_bn_train_cpu(x, l.w.as_tensor(), l.g.as_tensor(), l.b.as_tensor(), l.spec, EPS, act).unwrap();
        let a = node(&self.conv1, x, Act::Relu);
        let b = node(&self.conv2, &a.y, Act::Identity);
        let mut stats = vec![(a.mean, a.var), (b.mean, b.var)];
        let skip = match &self.shortcut {
            Some(s) => {
                let c = node(s, x, Act::Identity);
                stats.push((c.mean, c.var));
                c.y
            }
            None => x.clone(),
        };
        (add_act(&b.y, &skip, Act::Relu).unwrap(), stats)
    }
}

/// Same bits for the output, each batch norm's statistics, and the gradients of the
/// input and of every parameter.
#[test]
fn one_node_gives_the_bits_of_three_nodes() {
    // An identity block, and a strided, widening one on an odd side (a partial last
    // window), each on several images.
    for (cin, cout, stride, side) in [(8, 8, 1, 9), (5, 8, 2, 9), (16, 16, 1, 4)] {
        let case = format!("{cin}→{cout}, stride {stride}, {side}²");
        let block = Block::new(cin, cout, stride, DType::F32);
        let x = Var::from_tensor(&randn(&[3, cin, side, side], 1)).unwrap();

        let fused = residual_block_train_cpu(x.as_tensor(), &block.params(), EPS).unwrap();
        let (y, stats) = block.three_nodes(x.as_tensor());
        assert_eq!(bits(&fused.y), bits(&y), "{case}: output");
        assert_eq!(fused.stats.len(), stats.len(), "{case}: batch norms");
        for (i, ((m1, v1), (m2, v2))) in fused.stats.iter().zip(&stats).enumerate() {
            assert_eq!(bits(m1), bits(m2), "{case}: mean of batch norm {i}");
            assert_eq!(bits(v1), bits(v2), "{case}: variance of batch norm {i}");
        }

        let g_fused = weighted_sum(&fused.y, 7).unwrap().backward().unwrap();
        let g_three = weighted_sum(&y, 7).unwrap().backward().unwrap();
        for (i, v) in std::iter::once(&x).chain(block.vars()).enumerate() {
            let get =
                |g: &candle_core::backprop::GradStore| g.get(v).cloned().unwrap_or_else(|| panic!("{case}: no gradient for tensor {i}"));
            // ±0 compare equal: a zero's sign may depend on which summand arrived first.
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (a, b) = (values(&get(&g_fused)), values(&get(&g_three)));
            assert!(
                a.iter().zip(&b).all(|(p, q)| p == q),
                "{case}: gradient of tensor {i} (0 is the input)"
            );
            assert!(a.iter().any(|v| *v != 0.0), "{case}: gradient of tensor {i} is all zeros");
        }
    }
}

/// Finite differences in f64 through the one node, for the input and for a weight,
/// γ and β of each layer, the packed ones included.
#[test]
fn one_node_gradients_match_finite_differences() {
    for (cin, cout, stride) in [(4, 4, 1), (3, 4, 2)] {
        let block = Block::new(cin, cout, stride, DType::F64);
        let x = randn(&[2, cin, 5, 5], 3).to_dtype(DType::F64).unwrap();
        let case = |what: &str| format!("{cin}→{cout} stride {stride}: {what}");
        let out = |x: &Tensor, p: &BlockParams| weighted_sum(&residual_block_train_cpu(x, p, EPS)?.y, 5);
        check_gradient(&case("input"), &x, 1e-6, |x| out(x, &block.params()));
        let layers = [
            Some(("conv1", &block.conv1)),
            Some(("conv2", &block.conv2)),
            block.shortcut.as_ref().map(|s| ("shortcut", s)),
        ];
        for (name, layer) in layers.into_iter().flatten() {
            for (what, var) in ["weight", "γ", "β"].into_iter().zip(layer.vars()) {
                check_gradient(&case(&format!("{name} {what}")), var.as_tensor(), 1e-6, |t| {
                    let mut p = block.params();
                    let l = match name {
                        "conv1" => &mut p.conv1,
                        "conv2" => &mut p.conv2,
                        _ => p.shortcut.as_mut().unwrap(),
                    };
                    match what {
                        "weight" => l.weight = t,
                        "γ" => l.gamma = t,
                        _ => l.beta = t,
                    }
                    out(&x, &p)
                });
            }
        }
    }
}

/// A ResNet-18 (narrow, so that its first stages fuse) trained one step each way: the
/// features, every parameter's gradient and every running statistic the same bits.
#[test]
fn resnet_with_fused_blocks_matches_three_nodes() {
    let x = randn(&[4, 3, 16, 16], 9);
    // The first stage's blocks fuse at this size (16 channels on 16², 2.4k packed
    // weights): otherwise the comparison below would hold trivially.
    let probe = Block::new(16, 16, 1, DType::F32);
    assert!(worth_fusing(&randn(&[4, 16, 16, 16], 1), &probe.params()).unwrap());

    let run = |three: bool| {
        set_three_nodes(three);
        let mut p = Params::new(&Device::Cpu, 4);
        let net = ResNet::new(&mut p, "r.", 18, 0.25, 3, 16).unwrap();
        let f = net.features(&x, true).unwrap();
        let grads = weighted_sum(&f, 2).unwrap().backward().unwrap();
        set_three_nodes(false);
        let g: Vec<(String, Vec<u32>)> = p
            .named_vars(&["r.".into()])
            .into_iter()
            .map(|(n, v)| {
                let g = grads.get(&v).unwrap_or_else(|| panic!("no gradient for {n}"));
                (n, bits(&(g + 0.0).unwrap()))
            })
            .collect();
        let state: Vec<(String, Vec<u32>)> = p.tensors().into_iter().map(|(n, t)| (n, bits(&t))).collect();
        (bits(&f), g, state)
    };
    let (f1, g1, s1) = run(false);
    let (f3, g3, s3) = run(true);
    assert_eq!(f1, f3, "features");
    assert_eq!(g1.len(), g3.len());
    for ((n, a), (_, b)) in g1.iter().zip(&g3) {
        assert_eq!(a, b, "gradient of {n}");
    }
    for ((n, a), (_, b)) in s1.iter().zip(&s3) {
        assert_eq!(a, b, "{n} after the step (running statistics included)");
    }
}
