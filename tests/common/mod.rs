//! Shared by the integration tests: paths to the bundled data and a tiny experiment.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod workbench;

pub const WEIGHTS: &str = "sample-data/foundation/efficientnet-lite0.safetensors";
pub const DIGITS: &str = "sample-data/digits";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Deterministic values in [-1, 1) (candle's CPU RNG cannot be seeded).
pub fn randn(shape: &[usize], seed: u64) -> candle_core::Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}

/// The largest absolute value of a tensor, in f64.
pub fn max_abs(t: &candle_core::Tensor) -> f64 {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The largest absolute difference between two tensors of one shape, in f64.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let f64 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
    max_abs(&(f64(a) - f64(b)).unwrap())
}

/// The bits of an f32 tensor's values, for comparisons that allow no rounding.
pub fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// A scalar that weights every output element differently, so no gradient cancels.
pub fn weighted_sum(y: &candle_core::Tensor, seed: u64) -> candle_core::Result<candle_core::Tensor> {
    (y * randn(y.dims(), seed).to_dtype(y.dtype())?)?.sum_all()
}

/// A tolerance scale: the largest absolute value, at least 1.
pub fn scale(t: &candle_core::Tensor) -> f64 {
    max_abs(t).max(1.0)
}

/// Output, input gradient and weight gradient of `f(x, w)` under one weighted sum.
pub fn run2(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    f: impl Fn(&candle_core::Tensor, &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
) -> (candle_core::Tensor, candle_core::Tensor, candle_core::Tensor) {
    let (xv, wv) = (candle_core::Var::from_tensor(x).unwrap(), candle_core::Var::from_tensor(w).unwrap());
    let y = f(xv.as_tensor(), wv.as_tensor()).unwrap();
    let g = weighted_sum(&y, 11).unwrap().backward().unwrap();
    (y, g.get(&xv).unwrap().clone(), g.get(&wv).unwrap().clone())
}

/// The convolution by its definition: for each tap, the strided input pixels it reads
/// (`index_select`) times that tap's `[O, C]` weights, summed. Autograd differentiates
/// it exactly. (candle's own conv2d backward fails when the stride does not divide
/// the padded size minus the kernel.)
pub fn reference_conv(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    spec: tdmr::ops::conv_gemm::ConvSpec,
) -> candle_core::Result<candle_core::Tensor> {
    let [t, bo, l, r] = spec.pad;
    let x = x.pad_with_zeros(2, t, bo)?.pad_with_zeros(3, l, r)?;
    let (b, c, h, wd) = x.dims4()?;
    let (o, _, kh, kw) = w.dims4()?;
    let (ho, wo) = ((h - kh) / spec.stride + 1, (wd - kw) / spec.stride + 1);
    let rows = |start: usize, n: usize| {
        let idx: Vec<u32> = (0..n).map(|i| (start + i * spec.stride) as u32).collect();
        candle_core::Tensor::new(idx, x.device())
    };
    let mut y: Option<candle_core::Tensor> = None;
    for ky in 0..kh {
        for kx in 0..kw {
            let tap = x.index_select(&rows(ky, ho)?, 2)?.index_select(&rows(kx, wo)?, 3)?;
            let wk = w.narrow(2, ky, 1)?.narrow(3, kx, 1)?.reshape((o, c))?;
            let yk = wk.broadcast_left(b)?.matmul(&tap.reshape((b, c, ho * wo))?)?;
            y = Some(match y {
                Some(a) => (a + yk)?,
                None => yk,
            });
        }
    }
    y.unwrap().reshape((b, o, ho, wo))
}

/// The events of kind `kind` (`epoch`, `data-loaded`...) a run recorded.
pub fn events(run: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("metrics line is JSON"))
        .filter(|v| v["event"] == kind)
        .collect()
}

/// Assert the gradient of the scalar `f(x)` with respect to `x` matches central
/// differences with step `eps` at 24 coordinates (max relative error < 1e-2).
pub fn check_gradient(
    name: &str,
    x: &candle_core::Tensor,
    eps: f64,
    f: impl Fn(&candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
) {
    let r = tdmr::ops::gradcheck::max_relative_error(x, 24, eps, f).unwrap();
    assert!(
        r.max_err < 1e-2,
        "{name}: max relative error {:.3e} (scale {:.3e})\nnumeric  {:?}\nanalytic {:?}",
        r.max_err,
        r.scale,
        r.numeric,
        r.analytic
    );
}

/// A complete experiment shrunk to run in seconds: every method, every stage.
pub fn tiny_experiment() -> tdmr::config::Experiment {
    tdmr::config::Experiment::parse(&tiny_text(), "tiny.toml", &[]).expect("tiny experiment parses")
}

/// The tiny experiment as a file's text, with absolute paths to the bundled data.
pub fn tiny_text() -> String {
    let quoted = |p: &str| format!("{:?}", root().join(p).display().to_string());
    TINY.replace("\"@DIGITS@\"", &quoted(DIGITS))
        .replace("\"@WEIGHTS@\"", &quoted(WEIGHTS))
}

const TINY: &str = r#"
name = "tiny"
seed = 3
device = "cpu"
[data]
path = "@DIGITS@"
k = 2
views = 2
eval_every = 1
[foundation]
path = "@WEIGHTS@"
image_size = 32
inner_size = 24
[reprogram]
pad = 4
proxy_dim = 16
[stage1]
epochs = 2
batch_size = 8
[baselines]
linear_probe_epochs = 3
[target]
image_size = 16
[distill]
batch_size = 10
[[distill.stages]]
name = "align"
epochs = 1
lr = 3e-3
train = ["backbone", "projector"]
weights = { align = 1.0 }
[[distill.stages]]
name = "align+kd"
epochs = 1
lr = 3e-3
weights = { align = 1.0, kd = 1.0, ce = 0.1 }
[[distill.stages]]
name = "task"
epochs = 1
lr = 1e-3
weights = { kd = 0.2, ce = 1.0 }
"#;

/// The bytes of `tests/fixtures/tiny.pth` (made by `scripts/make-test-pth.py`).
pub fn pth_fixture() -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/tiny.pth")).unwrap()
}

/// The fixture checkpoint's zip with its pickle program (`archive/data.pkl`) replaced
/// and its storages kept.
pub fn pth_with_program(program: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut seed = zip::ZipArchive::new(std::io::Cursor::new(pth_fixture())).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..seed.len() {
        let mut f = seed.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        out.start_file(&name, opts).unwrap();
        out.write_all(if name.ends_with("data.pkl") { program } else { &data }).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// Drop the timing fields (and paths) so two runs' metrics can be compared.
pub fn without_timings(jsonl: &str) -> Vec<serde_json::Value> {
    jsonl
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("metrics line is JSON");
            strip(&mut v);
            v
        })
        .collect()
}

fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for k in ["wall_s", "images_per_s", "data_wait_s", "run_dir", "path"] {
                m.remove(k);
            }
            m.values_mut().for_each(strip);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

/// `check(path)` once on each GEMM kernel choice this CPU has (process-wide), with
/// the name of the convolution path that choice takes ("direct (avx512)" on the
/// AVX-512 kernels, "im2col + GEMM" otherwise), then the CPU's own choice back.
pub fn on_each_gemm_kernels(mut check: impl FnMut(&str)) {
    use tdmr::ops::gemm_kernels::{choose, GemmKernels};
    let available = GemmKernels::available();
    for kernels in available.iter().copied() {
        choose(Some(kernels)).unwrap();
        let path = if kernels == GemmKernels::Avx512 {
            "direct (avx512)"
        } else {
            "im2col + GEMM"
        };
        check(path);
        eprintln!("checked on the {path} path ({})", kernels.name());
    }
    choose(None).unwrap();
    eprintln!("GEMM kernels checked on this CPU ({}): {available:?}", tdmr::ops::isa::cpu_model());
}
