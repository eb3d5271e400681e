//! Hot kernels of the network: conv2d and BatchNorm (forward and backward).
//!
//! Every fast op is a candle custom op with its own backward, so `loss.backward()` works
//! through it, and has a `_slow` twin built from plain candle ops; the tests compare the two
//! and both against the PyTorch fixtures. The fast kernels run for f32 tensors on the CPU;
//! on other devices or dtypes every op falls back to its `_slow` twin, so a CUDA build still
//! works.
//!
//! CPU design:
//! - conv2d: im2col / col2im on chunks of images plus one single-threaded GEMM (`gemm`
//!   crate) per chunk, rayon across chunks; stride-1 "same" convolutions on planes of at
//!   least 256 pixels read `K` horizontally shifted copies of each image instead of the
//!   `K * K` of im2col (`conv_same.rs`). The backward of a stride-1 convolution computes the
//!   input gradient as a convolution of `dy` and shares that convolution's copies of `dy`
//!   with the weight gradient. Chunk sizes depend only on the shapes and weight-gradient
//!   partials are summed in chunk order, so results are bit-identical for any number of
//!   threads.
//! - On CPUs with AVX-512F (the default `avx512` feature), the 3x3 stride-1 padding-1
//!   convolutions (every one of the CIFAR ResNets but the two stride-2 ones) skip the copies
//!   and the GEMM: a direct register-blocked kernel reads the input planes in place with
//!   masked loads, for the forward and the input gradient (`conv_direct.rs`), and the
//!   weight gradients at 32x32 / 16 channels and 16x16 / 32 channels run a kernel with 24
//!   accumulators where the `gemm` crate has 6 or 12 (`conv_wgrad.rs`). Each output element
//!   is one chain of fused multiply-adds in a fixed order, so thread counts change no bit.
//!   On CPUs with AVX2 and FMA but no AVX-512 (or builds without the feature) their AVX2
//!   twins run instead (`conv_direct_avx2.rs`, plain loads from a zero-padded copy of each
//!   image; the AVX2 weight-gradient kernel with 12 accumulators), with the same bits.
//! - Fused Winograd F(2x2, 3x3) for the forward and input gradient of those convolutions
//!   where it pays (`conv_winograd_avx2.rs`: from 8 input channels; `conv_winograd_avx512.rs`:
//!   from 32): per image and block of tiles, the input transform, 16 register-blocked channel
//!   sums and the output transform stay in L1/L2 (2.25x fewer multiplications). Both give the
//!   same bits; `RESNET_FUSED_WINOGRAD=0` switches them off ([`conv3x3_kernels`] says which
//!   kernel runs).
//! - Winograd F(2x2, 3x3) for the weight gradients of the same convolutions
//!   (`conv_winograd_wgrad.rs`): `x` and `dy` transposed to channels-last per image, both
//!   transforms with the channels in vector lanes, then per Winograd position a
//!   register-blocked product chained over fixed chunks of 8 images, the same bits on AVX2,
//!   AVX-512 and its scalar twin; `RESNET_WINOGRAD_WGRAD=0` switches it off
//!   ([`conv3x3_wgrad_kernels`] says which kernel runs).
//! - Winograd F(2x2, 3x3) as GEMMs over chunks of images (`winograd.rs`), forward and
//!   both gradients (the backward as the transposed algorithm): its 16 GEMMs per chunk are
//!   only `Cin` (16-64) deep and its transforms add memory passes, so it is slower than the
//!   direct and fused paths and is off by default ([`with_winograd`], `RESNET_WINOGRAD=1`).
//! - BatchNorm: two passes forward (statistics, normalise + ReLU) and two backward
//!   (reductions, input gradient), per-channel sums in a fixed order.
//!   [`batch_norm_train_synced`] is its synchronized (multi-process) variant, with the
//!   per-channel sums all-reduced through a [`crate::StatsReducer`]; it has no `_slow` twin
//!   and runs on the CPU only.
//! - `add_relu` and `subsample_pad`: single-pass kernels.
//! - [`basic_block_train`]: a whole residual block in training mode as one autograd node
//!   (the same kernels in the same order as the composed ops, so the same bits). candle's
//!   backward allocates a zero tensor and adds into it for every op argument, on the calling
//!   thread while the workers wait; with one activation-sized argument per block instead of
//!   six, most of that serial work disappears.
//! - [`basic_blocks_train`]: a chain of such blocks (ResNet's whole trunk) as one node, each
//!   block's input gradient handed to the block before inside the op instead of through
//!   candle's accumulation; [`stem_and_blocks_train`] puts the stem (conv + BN + ReLU) in
//!   front of it in the same node.
//!   Inside the blocks the BatchNorm passes run in the convolutions next to them, one image at
//!   a time while it is in cache (`block/images.rs`): conv2 makes its input `relu(bn1(y1))`
//!   per image (never kept for the batch), and the backward's input gradients, reductions,
//!   ReLU masks and shortcut adds are made where a convolution reads or writes each image;
//!   the same kernels per image, so the same bits.
//! - [`no_grad`]: inference without recording the graph, so activations are freed as soon as
//!   they have been read.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use resnet_model::ops;
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &dev)?;
//! let w = Var::ones((4, 3, 3, 3), candle_core::DType::F32, &dev)?;
//! let gamma = Var::ones(4, candle_core::DType::F32, &dev)?;
//! let beta = Var::zeros(4, candle_core::DType::F32, &dev)?;
//! let y = ops::conv2d(&x, &w, 1, 1)?;
//! let bn = ops::batch_norm_train(&y, &gamma, &beta, 1e-5, true)?;
//! let grads = bn.y.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
//! # Ok(())
//! # }
//! ```

mod batch_norm;
mod batch_norm_sync;
mod block;
mod channel;
mod conv;
mod conv_backward;
mod conv_bn_eval;
mod conv_direct;
mod conv_direct_avx2;
mod conv_same;
mod conv_util;
mod conv_wgrad;
mod conv_winograd_avx2;
mod conv_winograd_avx512;
mod conv_winograd_wgrad;
mod custom;
mod elementwise;
mod gemm;
mod im2col;
mod reference;
mod storage;
mod winograd;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Result, Tensor};

pub use batch_norm_sync::{batch_norm_train_synced, SyncedBatchNormOutput};
pub use block::{
    basic_block_train, basic_blocks_train, stem_and_blocks_train, BasicBlockOutput,
    BasicBlockParams, BasicBlocksOutput, BlockBnStats, BlockShortcut, BlockStats, StemParams,
};
pub use conv_bn_eval::{conv2d_batch_norm_eval, AfterBatchNorm, EvalBatchNorm};
pub use reference::{
    add_relu_slow, basic_block_train_slow, batch_norm_eval_slow, batch_norm_train_slow,
    conv2d_slow, subsample_pad_slow,
};
use storage::{arg, fast_path};

/// Output of a training-mode BatchNorm: the normalized (and optionally ReLU'd) activations,
/// plus the per-channel batch statistics needed to update the running statistics.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// `relu?(gamma * (x - mean) / sqrt(var + eps) + beta)`, differentiable w.r.t. x, gamma, beta.
    pub y: Tensor,
    /// Per-channel batch mean, shape `[C]`, detached from the graph.
    pub mean: Tensor,
    /// Per-channel *biased* batch variance (divided by N*H*W), shape `[C]`, detached.
    pub var: Tensor,
}

/// Runs `f` with every op of this module (forward and backward) replaced by its `_slow`
/// reference twin, on the current thread only; nests and restores the previous mode on exit.
///
/// Useful to check a whole model against golden values with the reference numerics: the
/// fast kernels sum in a different order, which moves f32 results by ~1e-7 relative, and a
/// pre-activation that lies closer than that to a ReLU kink can flip and change upstream
/// gradients visibly (see `bench/README.md`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use resnet_model::ops;
/// # fn main() -> candle_core::Result<()> {
/// let a = Tensor::new(&[-1f32, 2.0], &Device::Cpu)?;
/// let z = ops::with_reference_ops(|| ops::add_relu(&a, &a))?;
/// assert_eq!(z.to_vec1::<f32>()?, [0.0, 4.0]);
/// # Ok(())
/// # }
/// ```
pub fn with_reference_ops<R>(f: impl FnOnce() -> R) -> R {
    storage::with_reference(f)
}

/// Runs `f` with the Winograd F(2x2, 3x3) convolutions on (`true`) or off on the current
/// thread. With Winograd on, 3x3 stride-1 padding-1 convolutions of at least 8 input and
/// output channels (forward, input and weight gradient) use `ops/winograd.rs` instead of the
/// direct im2col / shifted-copy + GEMM path; the two agree to rounding. Off by default: on
/// the machines measured so far it is slower than the direct path (see bench/README.md);
/// the process default can be switched on with the environment variable `RESNET_WINOGRAD=1`
/// (for benchmarks on other CPUs). Results then differ from the default by rounding, so a
/// run resumed with a different setting is no longer bit-exact.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use resnet_model::ops;
///
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::ones((1, 8, 6, 6), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((8, 8, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let direct = ops::with_winograd(false, || ops::conv2d(&x, &w, 1, 1))?;
/// let winograd = ops::with_winograd(true, || ops::conv2d(&x, &w, 1, 1))?;
/// let d = (winograd - direct)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(d < 1e-4);
/// # Ok(())
/// # }
/// ```
pub fn with_winograd<R>(on: bool, f: impl FnOnce() -> R) -> R {
    storage::with_winograd_set(on, f)
}

/// The SGEMM micro-kernels the convolutions run on this CPU in this build: `"avx512f"`
/// (with the default `avx512` feature, on a CPU that has AVX-512F), `"avx2+fma"`, `"neon"`
/// or `"scalar"` (picked at run time; benchmarks print it beside their figures).
///
/// ```
/// let k = resnet_model::ops::gemm_kernels();
/// assert!(["avx512f", "avx2+fma", "neon", "scalar"].contains(&k));
/// ```
pub fn gemm_kernels() -> &'static str {
    gemm::kernels()
}

/// The kernels that run the 3x3 stride-1 padding-1 convolutions of the CIFAR ResNets on the
/// current thread (forward and input gradient), for the three stages (16 channels at 32x32,
/// 32 at 16x16, 64 at 8x8), joined by `/`. Each is `"winograd-gemm"` ([`with_winograd`]);
/// with AVX-512F and the `avx512` feature `"avx512-winograd"` (fused Winograd F(2x2, 3x3),
/// `ops/conv_winograd_avx512.rs`; from 32 input channels) or `"avx512-direct"`; with
/// AVX2+FMA `"avx2-winograd"` (`ops/conv_winograd_avx2.rs`) or `"avx2-direct"`; else
/// `"gemm"`. The environment variable `RESNET_FUSED_WINOGRAD=0` at start-up switches the
/// fused Winograd kernels off (the direct ones run).
///
/// ```
/// let k = resnet_model::ops::conv3x3_kernels();
/// let all = ["winograd-gemm", "avx512-winograd", "avx512-direct", "avx2-winograd", "avx2-direct", "gemm"];
/// assert!(k.split('/').all(|s| all.contains(&s)), "{k}");
/// ```
pub fn conv3x3_kernels() -> String {
    let stage = |c: usize, hw: usize| {
        if storage::winograd_on() {
            return "winograd-gemm";
        }
        let g = im2col::ConvGeom::new(&[1, c, hw, hw], &[c, c, 3, 3], 1, 1);
        g.map_or("gemm", |g| conv_direct::kernel_name(&g))
    };
    [stage(16, 32), stage(32, 16), stage(64, 8)].join("/")
}

/// The kernels that compute the weight gradients of the same convolutions as
/// [`conv3x3_kernels`], per stage, joined by `/`: `"winograd-gemm"` ([`with_winograd`]);
/// `"avx512-winograd"` / `"avx2-winograd"` (Winograd F(2x2, 3x3) with register-blocked
/// products, `ops/conv_winograd_wgrad.rs`); `"avx512-direct"` / `"avx2-direct"` (the
/// register-blocked direct kernels of `ops/conv_wgrad.rs`); else `"gemm"`. The environment
/// variable `RESNET_WINOGRAD_WGRAD=0` (or `RESNET_FUSED_WINOGRAD=0`) at start-up switches the
/// Winograd weight gradient off.
///
/// ```
/// let k = resnet_model::ops::conv3x3_wgrad_kernels();
/// let all = ["winograd-gemm", "avx512-winograd", "avx512-direct", "avx2-winograd", "avx2-direct", "gemm"];
/// assert!(k.split('/').all(|s| all.contains(&s)), "{k}");
/// ```
pub fn conv3x3_wgrad_kernels() -> String {
    let stage = |c: usize, hw: usize| {
        if storage::winograd_on() {
            return "winograd-gemm";
        }
        let Ok(g) = im2col::ConvGeom::new(&[1, c, hw, hw], &[c, c, 3, 3], 1, 1) else {
            return "gemm";
        };
        if let Some(k) = conv_winograd_wgrad::kernel_name(&g) {
            return k;
        }
        if conv_same::applies_backward(&g) {
            if let Some(k) = conv_wgrad::kernel_name(&g) {
                return k;
            }
        }
        "gemm"
    };
    [stage(16, 32), stage(32, 16), stage(64, 8)].join("/")
}

/// Whether this module's 3x3 stride-1 convolutions take the Winograd path on the current
/// thread ([`with_winograd`], else the process default from `RESNET_WINOGRAD=1`).
pub fn winograd_active() -> bool {
    storage::winograd_on()
}

/// Whether the current thread is inside [`with_reference_ops`] (this module's ops run their
/// `_slow` twins).
pub fn reference_ops_active() -> bool {
    storage::reference_active()
}

/// Runs `f` without recording the autograd graph through this module's ops on the current
/// thread, like PyTorch's `torch.no_grad()`: their inputs are detached, so their outputs
/// track nothing and every intermediate activation is freed as soon as the next op has read
/// it. Use it for inference; with parameters that are `Var`s, an eval-mode forward otherwise
/// keeps every activation alive until the output is dropped. Nests; restores the previous
/// mode on exit.
///
/// ```
/// use candle_core::{DType, Device, Tensor, Var};
/// use resnet_model::ops;
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::ones((1, 2, 4, 4), DType::F32, &Device::Cpu)?;
/// let w = Var::ones((2, 2, 3, 3), DType::F32, &Device::Cpu)?;
/// assert!(ops::conv2d(&x, &w, 1, 1)?.track_op());
/// assert!(!ops::no_grad(|| ops::conv2d(&x, &w, 1, 1))?.track_op());
/// # Ok(())
/// # }
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    storage::with_no_grad(f)
}

/// 2-D convolution without bias, square kernel, `padding` on every side, dilation 1, groups 1.
/// `x`: `[N, Cin, H, W]`, `w`: `[Cout, Cin, K, K]`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (x, w) = (&arg(x), &arg(w));
    if !fast_path(&[x, w]) {
        return conv2d_slow(x, w, stride, padding);
    }
    x.contiguous()?.apply_op2(
        &w.contiguous()?,
        conv::Conv2d {
            stride,
            pad: padding,
        },
    )
}

/// Training-mode BatchNorm2d over `[N, C, H, W]` with batch statistics, optionally fused with
/// a ReLU. `weight`/`bias` are `[C]`.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormOutput> {
    let (x, weight, bias) = (&arg(x), &arg(weight), &arg(bias));
    if !fast_path(&[x, weight, bias]) {
        return batch_norm_train_slow(x, weight, bias, eps, relu);
    }
    let saved = Arc::new(Mutex::new(None));
    let op = batch_norm::BatchNormTrain {
        eps,
        relu,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let guard = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(s) = guard.as_ref() else {
        bail!("batch_norm_train: the forward kernel did not record its statistics")
    };
    let c = s.mean.len();
    Ok(BatchNormOutput {
        y,
        mean: Tensor::from_vec(s.mean.clone(), c, x.device())?,
        var: Tensor::from_vec(s.var.clone(), c, x.device())?,
    })
}

/// Eval-mode BatchNorm2d with running statistics, optionally fused with a ReLU.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (x, weight, bias) = (&arg(x), &arg(weight), &arg(bias));
    let (running_mean, running_var) = (&arg(running_mean), &arg(running_var));
    if !fast_path(&[x, weight, bias, running_mean, running_var]) {
        return batch_norm_eval_slow(x, weight, bias, running_mean, running_var, eps, relu);
    }
    // Fold the statistics into one per-channel affine map (tiny [C] ops, differentiable in
    // weight and bias), then apply it in a single pass.
    let scale = weight.mul(&(running_var + eps)?.sqrt()?.recip()?)?;
    let shift = bias.sub(&running_mean.mul(&scale)?)?;
    x.contiguous()?
        .apply_op3(&scale, &shift, batch_norm::ChannelAffine { relu })
}

/// `relu(a + b)`, the end of a residual block.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = (&arg(a), &arg(b));
    if !fast_path(&[a, b]) {
        return add_relu_slow(a, b);
    }
    a.contiguous()?
        .apply_op2(&b.contiguous()?, elementwise::AddRelu)
}

/// Option-A shortcut: `x[:, :, ::2, ::2]` zero-padded on the channel dimension with
/// `(out_channels - C) / 2` channels on each side (`out_channels - C` must be even).
pub fn subsample_pad(x: &Tensor, out_channels: usize) -> Result<Tensor> {
    let x = &arg(x);
    if !fast_path(&[x]) {
        return subsample_pad_slow(x, out_channels);
    }
    x.contiguous()?
        .apply_op1(elementwise::SubsamplePad { out_channels })
}
