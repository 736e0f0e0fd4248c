//! Differentiable building blocks whose backward passes are verified against finite
//! differences (tests in `tests/gradcheck.rs`). candle 0.11 silently drops or gets wrong
//! some gradients (README "Exact gradients": fused layer-norm, `softmax_last_dim`, pooling, bilinear
//! upsampling), so every forward path that a gradient must cross is built from this
//! module and from candle ops measured to be correct.
//!
//! On the CPU (f32, f64) the convolutions, pooling and training batch norm run on this
//! module's own kernels (`conv_gemm`, `depthwise`, `pool`, `batch_norm`, with `act`'s
//! fused activations), checked in `tests/kernels.rs`; elsewhere, and for the benchmark's
//! before column (`cpu::set_composed_only`), on compositions of candle ops.

pub mod act;
pub mod adamw;
pub mod batch_norm;
pub mod conv;
pub mod conv_bn;
pub mod conv_gemm;
pub mod cpu;
pub mod depthwise;
pub mod gemm_kernels;
pub mod gradcheck;
pub mod isa;
pub(crate) mod lane_sums;
pub mod norm;
pub mod pool;
pub mod residual;
pub mod residual_block;
pub mod resize;

pub use conv::{conv2d_same_tf, pointwise_conv};
pub use depthwise::depthwise_conv2d;
pub use resize::{bilinear_matrix, resize_bilinear};
