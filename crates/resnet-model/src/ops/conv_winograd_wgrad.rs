//! The backward of a 3x3, stride-1, padding-1 convolution with the weight gradient by
//! Winograd F(2x2, 3x3); the input gradient runs [`super::conv_direct`]'s kernel for the
//! transposed convolution (itself a fused Winograd kernel where one takes it).
//!
//! With the transforms of [`super::winograd`] the weight gradient is `dW[co, ci] = G^T
//! dU[co, ci] G`, where `dU[ξ][co][ci] = Σ_tiles dM[ξ][tile][co] · V[ξ][tile][ci]`, `dM = A dy
//! A^T` per 2x2 tile of the output gradient and `V = B^T d B` per 4x4 window of the input: 16
//! multiply-adds per tile and channel pair instead of the direct weight gradient's 36 (2.25x
//! fewer), plus the transforms, which are additions only.
//!
//! Per image, with `L` lanes per vector (16 for AVX-512, 8 for AVX2):
//! - `x` and `dy` transposed to channels-last (`[pixel][channel]`, [`transpose_into`]), so
//!   that both transforms run with the channels in vector lanes;
//! - per block of tiles, the transforms of each tile's window, written next to each other
//!   (`[tile][channel / L][ξ][L]`: one contiguous run of stores per tile; written one
//!   transformed plane `ξ` after another, the 16 streams 16 KiB apart had stalled the stores);
//! - then for every `ξ` a register-blocked product over the block's tiles: `R` output channels
//!   times `NV` vectors of input channels in accumulators, per tile `NV` vector loads of `V`
//!   and `R` broadcasts of `dM`, all from one cache line each.
//!
//! Where `dU` is small (ResNet-20's first stage, 16 KiB) the blocks are a few tiles, so the
//! transforms stay in L1 and `dU` is re-read from there per block; else the block is the whole
//! image (its `V` and `dM` in L2).
//!
//! Images are taken in fixed chunks of [`IMAGES`]: the accumulators of a block start from the
//! previous block's and image's sums, so every element of a chunk's `dU` is one chain of fused
//! multiply-adds over the chunk's tiles in order; chunk sums are added in chunk order. The
//! chunks depend on the batch size only, so the result does not depend on the number of
//! threads, and the AVX2 and AVX-512 kernels and the scalar twin give the same bits. The
//! arithmetic differs from the direct weight gradient's by rounding only (the transforms'
//! coefficients are 0, ±1 and ±1/2).
//!
//! It takes every stride-1 3x3 convolution whose channels fit a blocking (AVX-512: multiples
//! of 16; AVX2: of 8) and whose input gradient a direct kernel takes: in ResNet-20, all but the
//! stem. Against the register-blocked direct weight gradient ([`super::conv_wgrad`], 32x32 and
//! 16x16) and im2col + GEMM (8x8) it saves 6-10% of the CPU time of a training step (A/B in
//! bench/README.md). `RESNET_WINOGRAD_WGRAD=0` (or `RESNET_FUSED_WINOGRAD=0`) at start-up
//! switches it off.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv_direct::{self, Direct};
use super::conv_util::{sum_partials, transpose_into, transposed, Images, Stored};
use super::im2col::ConvGeom;
use super::storage::{assume_init_mut, fused_winograd_on, with_scratch, Uninit};
use super::winograd::{self, XI};

/// Images per chunk of the weight gradient's sums (fixed: the sums' order must not depend
/// on the number of threads).
const IMAGES: usize = 8;

/// Input channels from which the AVX-512 kernel runs (below them the AVX2 one does, where
/// the channels allow).
const MIN_CIN_AVX512: usize = 16;

/// The product kernel and its blocking: `nv` vectors of input channels times `r` output
/// channels of accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// 16 lanes per vector.
    Avx512 { nv: usize, r: usize },
    /// 8 lanes per vector.
    Avx2 { nv: usize, r: usize },
}

/// Whether the process may use this path: on unless started with `RESNET_WINOGRAD_WGRAD=0`
/// or `RESNET_FUSED_WINOGRAD=0`.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    fused_winograd_on()
        && *ON.get_or_init(|| std::env::var("RESNET_WINOGRAD_WGRAD").map_or(true, |v| v != "0"))
}

/// The AVX-512 blocking for `cin x cout` channels, where it fits (the transforms run whole
/// vectors of input and output channels).
fn avx512_for(cin: usize, cout: usize) -> Option<Kernel> {
    let ok = conv_direct::avx512_available()
        && cin >= MIN_CIN_AVX512
        && cin.is_multiple_of(16)
        && cout.is_multiple_of(16);
    let nv = if cin.is_multiple_of(32) { 2 } else { 1 };
    let r = if nv == 1 { 16 } else { 8 };
    ok.then_some(Kernel::Avx512 { nv, r })
}

/// The AVX2 blocking for `cin x cout` channels, where it fits.
fn avx2_for(cin: usize, cout: usize) -> Option<Kernel> {
    let ok =
        super::conv_direct_avx2::available() && cin.is_multiple_of(8) && cout.is_multiple_of(8);
    let (nv, r) = if cin.is_multiple_of(16) {
        (2, 4)
    } else {
        (1, 8)
    };
    ok.then_some(Kernel::Avx2 { nv, r })
}

/// The kernel for `g` on this CPU, `None` when `g` is not a 3x3, stride-1, padding-1
/// convolution whose channels fit a blocking and whose input gradient a direct kernel takes.
fn kernel(g: &ConvGeom) -> Option<Kernel> {
    if g.k != 3 || g.stride != 1 || g.pad != 1 || !enabled() {
        return None;
    }
    let gt = ConvGeom::new(&[g.n, g.cout, g.h, g.w], &[g.cin, g.cout, 3, 3], 1, 1).ok()?;
    if !conv_direct::applies(&gt) {
        return None;
    }
    avx512_for(g.cin, g.cout).or_else(|| avx2_for(g.cin, g.cout))
}

/// `true` when [`backward`] takes `g` on this CPU.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    kernel(g).is_some()
}

/// The name of the kernel that takes `g`'s weight gradient here, `None` where none does.
pub(crate) fn kernel_name(g: &ConvGeom) -> Option<&'static str> {
    kernel(g).map(|k| match k {
        Kernel::Avx512 { .. } => "avx512-winograd",
        Kernel::Avx2 { .. } => "avx2-winograd",
    })
}

/// `(dx, dW)` of `conv2d(x, w)` (stride 1, padding 1, 3x3) for the output gradient `dy`;
/// `g` must satisfy [`applies`].
pub(crate) fn backward(g: &ConvGeom, x: &[f32], dy: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (x, dy) = (Stored::new(x, g.in_img()), Stored::new(dy, g.out_img()));
    let (dx, dw, _) = backward_images(g, &x, w, &dy, |_, _| ());
    (dx, dw)
}

/// [`backward`] with the input and the output gradient taken image by image from `x` and
/// `dy`, either of which may be computed per image (a BatchNorm's output or input gradient,
/// which then never goes through memory as a whole batch), and `after` run on each image's
/// input gradient as soon as it is written, while it is in cache (it may change it, and its
/// results come back in image order). The weight gradient's sums are those of [`backward`]
/// on the same values, bit for bit.
pub(crate) fn backward_images<T: Send>(
    g: &ConvGeom,
    x: &impl Images,
    w: &[f32],
    dy: &impl Images,
    after: impl Fn(usize, &mut [f32]) -> T + Sync,
) -> (Vec<f32>, Vec<f32>, Vec<T>) {
    let k = kernel(g).expect("conv_winograd_wgrad::backward: no kernel takes this convolution");
    let (gt, wt) = transposed(g, w).expect("a stride-1 3x3 convolution has a transposed form");
    let direct = Direct::new(&gt, &wt);
    let plen = XI * g.cout * g.cin;
    if g.n == 0 {
        return (Vec::new(), vec![0f32; g.cout * g.cin * 9], Vec::new());
    }
    let s = Shape::new(g);
    let mut dx = Uninit::new(g.n * g.in_img());
    let mut partial = Uninit::new(g.n.div_ceil(IMAGES) * plen);
    let mut outs: Vec<Option<T>> = std::iter::repeat_with(|| None).take(g.n).collect();
    let x_len = if x.computed() { g.in_img() } else { 0 };
    let dy_len = if dy.computed() { g.out_img() } else { 0 };
    dx.slots()
        .par_chunks_mut(IMAGES * g.in_img())
        .zip(outs.par_chunks_mut(IMAGES))
        .zip(partial.slots().par_chunks_mut(plen))
        .enumerate()
        .for_each(|(chunk, ((dxc, oc), du))| {
            let (mut xbuf, mut dybuf) = (vec![0f32; x_len], vec![0f32; dy_len]);
            for (b, (dxb, o)) in dxc.chunks_mut(g.in_img()).zip(oc).enumerate() {
                let n = chunk * IMAGES + b;
                let dyb = dy.image(n, &mut dybuf);
                direct.image(dyb, dxb);
                image(k, &s, x.image(n, &mut xbuf), dyb, du, b > 0);
                // SAFETY: the direct kernel wrote the whole image.
                *o = Some(after(n, unsafe { assume_init_mut(dxb) }));
            }
        });
    // SAFETY: every image's dx was written by the direct kernel, and every chunk's dU by its
    // first image's products (all `plen` elements, see `products`).
    let (dx, partial) = unsafe { (dx.assume_init(), partial.assume_init()) };
    let du = sum_partials(&partial, plen);
    let outs = outs
        .into_iter()
        .map(|o| o.expect("every image ran `after`"))
        .collect();
    (dx, winograd::weight_grad_transform(g, &du, true), outs)
}

/// The sizes the kernels need.
#[derive(Clone, Copy, Debug)]
struct Shape {
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
}

impl Shape {
    fn new(g: &ConvGeom) -> Self {
        Self {
            h: g.h,
            w: g.w,
            cin: g.cin,
            cout: g.cout,
        }
    }

    /// Rows of 2x2 tiles (the last one partial for odd heights).
    fn th(&self) -> usize {
        self.h.div_ceil(2)
    }

    /// Columns of 2x2 tiles (the last one partial for odd widths).
    fn tw(&self) -> usize {
        self.w.div_ceil(2)
    }

    /// 2x2 tiles per image.
    fn tiles(&self) -> usize {
        self.th() * self.tw()
    }

    /// Pixels per plane.
    fn p(&self) -> usize {
        self.h * self.w
    }

    /// Tiles per block: the products run over the tiles of a block, whose transforms stay
    /// in L1 (16 KiB) where `dU` is small enough to be re-read from L1 per block (stage 1 of
    /// ResNet-20), else over the whole image.
    fn block(&self) -> usize {
        if XI * self.cin * self.cout <= 4096 {
            (4096 / (XI * (self.cin + self.cout))).max(1)
        } else {
            self.tiles()
        }
    }

    /// Elements of one block's `V` (`[tile][ci / L][ξ][L]` for `L` lanes per vector).
    fn v_len(&self) -> usize {
        XI * self.block().min(self.tiles()) * self.cin
    }

    /// Elements of one block's `dM` (`[tile][co / L][ξ][L]`).
    fn dm_len(&self) -> usize {
        XI * self.block().min(self.tiles()) * self.cout
    }
}

/// Adds one image's `dU` (`[ξ][co][ci]`) into `du`, or with `accumulate == false` writes it
/// there, from the image `x` (`[cin, h, w]`) and its output gradient `dy` (`[cout, h, w]`).
fn image(
    k: Kernel,
    s: &Shape,
    x: &[f32],
    dy: &[f32],
    du: &mut [MaybeUninit<f32>],
    accumulate: bool,
) {
    let p = s.p();
    assert_eq!(
        x.len(),
        s.cin * p,
        "conv_winograd_wgrad: input image length"
    );
    assert_eq!(
        dy.len(),
        s.cout * p,
        "conv_winograd_wgrad: gradient image length"
    );
    assert_eq!(
        du.len(),
        XI * s.cout * s.cin,
        "conv_winograd_wgrad: dU length"
    );
    let (vl, dl) = (s.v_len(), s.dm_len());
    with_scratch(p * s.cin + vl, p * s.cout + dl, |a, b| {
        let (xt, v) = a.split_at_mut(p * s.cin);
        let (dyt, dm) = b.split_at_mut(p * s.cout);
        transpose_into(x, s.cin, p, xt);
        transpose_into(dy, s.cout, p, dyt);
        let (tiles, block) = (s.tiles(), s.block());
        for t0 in (0..tiles).step_by(block) {
            let args = Args {
                s,
                xt: xt.as_ptr(),
                dyt: dyt.as_ptr(),
                v: v.as_mut_ptr(),
                dm: dm.as_mut_ptr(),
                du: du.as_mut_ptr().cast::<f32>(),
                t0,
                t1: (t0 + block).min(tiles),
                accumulate: accumulate || t0 > 0,
            };
            run(k, &args);
        }
    });
}

/// The transforms and products of the block of tiles `a.t0..a.t1` with the kernel `k`
/// (the buffers as [`image`] sets them up).
fn run(k: Kernel, a: &Args<'_>) {
    let s = a.s;
    let fits = |lanes: usize, nv: usize, r: usize| {
        s.cin.is_multiple_of(lanes * nv) && s.cout.is_multiple_of(lanes) && lanes.is_multiple_of(r)
    };
    assert!(
        a.t0 < a.t1 && a.t1 <= s.tiles() && a.t1 - a.t0 <= s.block(),
        "conv_winograd_wgrad: tile block"
    );
    match k {
        Kernel::Avx512 { nv, r } => {
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            {
                assert!(
                    conv_direct::avx512_available() && fits(16, nv, r),
                    "conv_winograd_wgrad: AVX-512 not available or {k:?} does not fit"
                );
                // SAFETY: AVX-512F is available and the blocking fits the channels (checked
                // above); the buffers hold what the kernel reads and writes (`xt`, `dyt`: the
                // transposed planes; `v`, `dm`: one block of tiles, `v_len`, `dm_len`; `du`:
                // `16 * cout * cin`, checked by `image`).
                unsafe {
                    kernels::avx512::transforms(a);
                    match (nv, r) {
                        (1, 16) => kernels::avx512::products::<1, 16>(a),
                        (2, 8) => kernels::avx512::products::<2, 8>(a),
                        _ => unreachable!("conv_winograd_wgrad: no {k:?} instance"),
                    }
                }
            }
            #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
            {
                let _ = (nv, r, fits);
                unreachable!("conv_winograd_wgrad: {k:?} without AVX-512")
            }
        }
        Kernel::Avx2 { nv, r } => {
            assert!(
                super::conv_direct_avx2::available() && fits(8, nv, r),
                "conv_winograd_wgrad: AVX2 not available or {k:?} does not fit"
            );
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA are available and the blocking fits the channels (checked
            // above); the buffers hold what the kernel reads and writes.
            unsafe {
                kernels::avx2::transforms(a);
                match (nv, r) {
                    (2, 4) => kernels::avx2::products::<2, 4>(a),
                    (1, 8) => kernels::avx2::products::<1, 8>(a),
                    _ => unreachable!("conv_winograd_wgrad: no {k:?} instance"),
                }
            }
        }
    }
}

/// What the kernels read and write: `xt` (`x` channels-last, `[pixel][ci]`), `dyt` (`dy`
/// channels-last), `V` (`[tile][ci / L][ξ][L]` for `L` lanes per vector: a tile's 16
/// transformed vectors next to each other), `dM` (`[tile][co / L][ξ][L]`), `dU`
/// (`[ξ][co][ci]`).
struct Args<'a> {
    s: &'a Shape,
    xt: *const f32,
    dyt: *const f32,
    v: *mut f32,
    dm: *mut f32,
    du: *mut f32,
    /// The block of tiles (`t1 - t0 <= block()`).
    t0: usize,
    t1: usize,
    /// Whether the products add to `dU` (else they overwrite it).
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    /// Defines the module `$name` of one vector width: the transforms and the products (see
    /// [`super::image`]). The transforms are additions in a fixed order, so every width (and
    /// the scalar twin) computes the same bits.
    macro_rules! wgrad_kernels {
        ($name:ident, $feature:literal, $vec:ty, $lanes:expr, $zero:ident, $load:ident,
         $store:ident, $set1:ident, $add:ident, $sub:ident, $fma:ident) => {
            pub(super) mod $name {
                use std::arch::x86_64::*;

                use super::super::{Args, XI};

                const L: usize = $lanes;

                /// `V = B^T d B` of every tile's 4x4 window (zero outside the image) and
                /// `dM = A dy A^T` of every tile, with the channels in vector lanes.
                ///
                /// # Safety
                /// The CPU has the target features; `cin` and `cout` are multiples of the
                /// lanes; the buffers are as [`Args`] says.
                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn transforms(a: &Args<'_>) {
                    let s = a.s;
                    let (h, w, cin, cout) = (s.h, s.w, s.cin, s.cout);
                    // SAFETY: pixel `(r, c)` is read only for `r < h`, `c < w`, channel
                    // vectors end at `cin` / `cout`, and tile `ti * tw + tj < tiles`.
                    unsafe {
                        let z = $zero();
                        for tile in a.t0..a.t1 {
                            let (ti, tj) = (tile / s.tw(), tile % s.tw());
                            {
                                // this tile's 16 vectors per block of channels
                                let vt = a.v.add((tile - a.t0) * cin * XI);
                                let dmt = a.dm.add((tile - a.t0) * cout * XI);
                                for k0 in (0..cin).step_by(L) {
                                    // the window: rows 2 ti - 1 .. 2 ti + 2, same columns
                                    let mut d = [[z; 4]; 4];
                                    for (i, row) in d.iter_mut().enumerate() {
                                        let r = (2 * ti + i).wrapping_sub(1);
                                        for (j, e) in row.iter_mut().enumerate() {
                                            let c = (2 * tj + j).wrapping_sub(1);
                                            if r < h && c < w {
                                                *e = $load(a.xt.add((r * w + c) * cin + k0));
                                            }
                                        }
                                    }
                                    // rows (B^T d): r0 - r2, r1 + r2, r2 - r1, r1 - r3
                                    let mut t = [[z; 4]; 4];
                                    for j in 0..4 {
                                        t[0][j] = $sub(d[0][j], d[2][j]);
                                        t[1][j] = $add(d[1][j], d[2][j]);
                                        t[2][j] = $sub(d[2][j], d[1][j]);
                                        t[3][j] = $sub(d[1][j], d[3][j]);
                                    }
                                    // columns: c0 - c2, c1 + c2, c2 - c1, c1 - c3
                                    for (i, [c0, c1, c2, c3]) in t.into_iter().enumerate() {
                                        let o = [
                                            $sub(c0, c2),
                                            $add(c1, c2),
                                            $sub(c2, c1),
                                            $sub(c1, c3),
                                        ];
                                        for (j, o) in o.into_iter().enumerate() {
                                            $store(vt.add((k0 * XI) + (i * 4 + j) * L), o);
                                        }
                                    }
                                }
                                for k0 in (0..cout).step_by(L) {
                                    let mut d = [[z; 2]; 2];
                                    for (i, row) in d.iter_mut().enumerate() {
                                        let r = 2 * ti + i;
                                        for (j, e) in row.iter_mut().enumerate() {
                                            let c = 2 * tj + j;
                                            if r < h && c < w {
                                                *e = $load(a.dyt.add((r * w + c) * cout + k0));
                                            }
                                        }
                                    }
                                    // rows (A dy): a, a + b, a - b, 0 - b
                                    let t = [
                                        d[0],
                                        [$add(d[0][0], d[1][0]), $add(d[0][1], d[1][1])],
                                        [$sub(d[0][0], d[1][0]), $sub(d[0][1], d[1][1])],
                                        [$sub(z, d[1][0]), $sub(z, d[1][1])],
                                    ];
                                    // columns: e, e + o, e - o, 0 - o
                                    for (i, [e, o]) in t.into_iter().enumerate() {
                                        let o = [e, $add(e, o), $sub(e, o), $sub(z, o)];
                                        for (j, o) in o.into_iter().enumerate() {
                                            $store(dmt.add((k0 * XI) + (i * 4 + j) * L), o);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }

                /// `dU[ξ][co][ci] (+)= Σ_tiles dM[ξ][tile][co] · V[ξ][tile][ci]`: `R`
                /// output channels times `NV` vectors of input channels in accumulators,
                /// one fused multiply-add per tile, in tile order, per element (the whole of
                /// `dU` is written).
                ///
                /// # Safety
                /// The CPU has the target features; `cin` is a multiple of `NV` vectors and
                /// `cout` of `R`; the buffers are as [`Args`] says, `V` and `dM` written.
                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn products<const NV: usize, const R: usize>(
                    a: &Args<'_>,
                ) {
                    let s = a.s;
                    let (cin, cout, tiles) = (s.cin, s.cout, a.t1 - a.t0);
                    // SAFETY: every offset stays inside `V`, `dM` and `dU`:
                    // `ci0 + NV * L <= cin`, `co0 + R <= cout` within one vector of `dM`
                    // (`R` divides `L`), `t < tiles`.
                    unsafe {
                        for xi in 0..XI {
                            let vx = a.v.add(xi * L);
                            let dmx = a.dm.add(xi * L);
                            let dux = a.du.add(xi * cout * cin);
                            for co0 in (0..cout).step_by(R) {
                                for ci0 in (0..cin).step_by(NV * L) {
                                    let out = dux.add(co0 * cin + ci0);
                                    let mut acc: [[$vec; NV]; R] = [[$zero(); NV]; R];
                                    if a.accumulate {
                                        for (r, row) in acc.iter_mut().enumerate() {
                                            for (j, e) in row.iter_mut().enumerate() {
                                                *e = $load(out.add(r * cin + j * L));
                                            }
                                        }
                                    }
                                    let mut vp = vx.add(ci0 * XI).cast_const();
                                    let mut dp = dmx.add((co0 / L) * L * XI + co0 % L).cast_const();
                                    for _ in 0..tiles {
                                        let mut vv = [$zero(); NV];
                                        for (j, x) in vv.iter_mut().enumerate() {
                                            *x = $load(vp.add(j * L * XI));
                                        }
                                        for (r, row) in acc.iter_mut().enumerate() {
                                            let b = $set1(*dp.add(r));
                                            for (e, &x) in row.iter_mut().zip(&vv) {
                                                *e = $fma(b, x, *e);
                                            }
                                        }
                                        vp = vp.add(cin * XI);
                                        dp = dp.add(cout * XI);
                                    }
                                    for (r, row) in acc.iter().enumerate() {
                                        for (j, &e) in row.iter().enumerate() {
                                            $store(out.add(r * cin + j * L), e);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    #[cfg(feature = "avx512")]
    wgrad_kernels!(
        avx512,
        "avx512f",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_fmadd_ps
    );

    wgrad_kernels!(
        avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_fmadd_ps
    );
}

#[cfg(test)]
mod tests {
    use super::super::conv_util::test_values;
    use super::*;

    /// One image's `dU` by the scalar twin: the kernels' transforms and chains of fused
    /// multiply-adds, element by element. Returns `(V, dM)` too.
    fn image_twin(
        s: &Shape,
        x: &[f32],
        dy: &[f32],
        du: &mut [f32],
        accumulate: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let (h, w, tiles) = (s.h, s.w, s.tiles());
        let px = |p: &[f32], ch: usize, r: usize, c: usize| {
            if r < h && c < w {
                p[(ch * h + r) * w + c]
            } else {
                0.0
            }
        };
        let mut v = vec![0f32; XI * tiles * s.cin];
        let mut dm = vec![0f32; XI * tiles * s.cout];
        for (ti, tj) in (0..s.th()).flat_map(|a| (0..s.tw()).map(move |b| (a, b))) {
            let tile = ti * s.tw() + tj;
            for ci in 0..s.cin {
                let d = |i: usize, j: usize| {
                    px(
                        x,
                        ci,
                        (2 * ti + i).wrapping_sub(1),
                        (2 * tj + j).wrapping_sub(1),
                    )
                };
                let t: [[f32; 4]; 4] = std::array::from_fn(|j| {
                    [
                        d(0, j) - d(2, j),
                        d(1, j) + d(2, j),
                        d(2, j) - d(1, j),
                        d(1, j) - d(3, j),
                    ]
                });
                for i in 0..4 {
                    let [c0, c1, c2, c3] = [t[0][i], t[1][i], t[2][i], t[3][i]];
                    for (j, o) in [c0 - c2, c1 + c2, c2 - c1, c1 - c3].into_iter().enumerate() {
                        v[((i * 4 + j) * tiles + tile) * s.cin + ci] = o;
                    }
                }
            }
            for co in 0..s.cout {
                let d = |i: usize, j: usize| px(dy, co, 2 * ti + i, 2 * tj + j);
                let t = [
                    [d(0, 0), d(0, 1)],
                    [d(0, 0) + d(1, 0), d(0, 1) + d(1, 1)],
                    [d(0, 0) - d(1, 0), d(0, 1) - d(1, 1)],
                    [0.0 - d(1, 0), 0.0 - d(1, 1)],
                ];
                for (i, [e, o]) in t.into_iter().enumerate() {
                    for (j, o) in [e, e + o, e - o, 0.0 - o].into_iter().enumerate() {
                        dm[((i * 4 + j) * tiles + tile) * s.cout + co] = o;
                    }
                }
            }
        }
        for xi in 0..XI {
            for co in 0..s.cout {
                for ci in 0..s.cin {
                    let o = &mut du[(xi * s.cout + co) * s.cin + ci];
                    let mut acc = if accumulate { *o } else { 0.0 };
                    for t in 0..tiles {
                        let a = dm[(xi * tiles + t) * s.cout + co];
                        acc = a.mul_add(v[(xi * tiles + t) * s.cin + ci], acc);
                    }
                    *o = acc;
                }
            }
        }
        (v, dm)
    }

    /// The kernels this CPU runs for `cin x cout` channels.
    fn kernels_here(cin: usize, cout: usize) -> Vec<Kernel> {
        [avx512_for(cin, cout), avx2_for(cin, cout)]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Every kernel bit for bit against the scalar twin, writing and accumulating, on
    /// ResNet-20's three stages and odd sizes / other blockings.
    #[test]
    fn image_matches_scalar_twin() {
        for (i, (cin, cout, h, w)) in [
            (16, 16, 32, 32),
            (32, 32, 16, 16),
            (64, 64, 8, 8),
            (8, 16, 6, 10),
            (16, 8, 5, 7),
            (48, 24, 3, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let g = ConvGeom::new(&[1, cin, h, w], &[cout, cin, 3, 3], 1, 1).unwrap();
            let s = Shape::new(&g);
            let x = test_values(cin * h * w, 3 * i as u64);
            let dy = test_values(cout * h * w, 3 * i as u64 + 1);
            let start = test_values(XI * cout * cin, 3 * i as u64 + 2);
            for accumulate in [false, true] {
                let mut want = start.clone();
                image_twin(&s, &x, &dy, &mut want, accumulate);
                for k in kernels_here(cin, cout) {
                    let mut got: Vec<_> = start.iter().map(|&x| MaybeUninit::new(x)).collect();
                    image(k, &s, &x, &dy, &mut got, accumulate);
                    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                        // SAFETY: initialised above.
                        let g = unsafe { g.assume_init() };
                        assert_eq!(g.to_bits(), w.to_bits(), "{k:?} {cin} {cout} {h} {w}: {j}");
                    }
                }
            }
        }
    }

    /// The twin's `V` and `dM` against `B^T d B` and `A dy A^T` computed plainly in f64.
    #[test]
    fn twin_transforms_match_definition() {
        let bt = [
            [1., 0., -1., 0.],
            [0., 1., 1., 0.],
            [0., -1., 1., 0.],
            [0., 1., 0., -1.],
        ];
        let at = [[1., 1., 1., 0.], [0., 1., -1., -1.]];
        for (cin, h, w) in [(8, 5, 7), (16, 4, 4)] {
            let g = ConvGeom::new(&[1, cin, h, w], &[cin, cin, 3, 3], 1, 1).unwrap();
            let s = Shape::new(&g);
            let x = test_values(cin * h * w, 5);
            let dy = test_values(cin * h * w, 6);
            let (v, dm) = image_twin(&s, &x, &dy, &mut vec![0.0; XI * cin * cin], false);
            let px = |p: &[f32], c: usize, r: isize, q: isize| {
                let inside = r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w;
                if inside {
                    f64::from(p[(c * h + r as usize) * w + q as usize])
                } else {
                    0.0
                }
            };
            for (ti, tj, c) in (0..s.th())
                .flat_map(|a| (0..s.tw()).flat_map(move |b| (0..cin).map(move |c| (a, b, c))))
            {
                let (r0, c0) = (2 * ti as isize, 2 * tj as isize);
                for (i, j) in (0..4).flat_map(|i| (0..4).map(move |j| (i, j))) {
                    let at_tile = ((i * 4 + j) * s.tiles() + ti * s.tw() + tj) * cin + c;
                    let want_v: f64 = (0..16)
                        .map(|k| {
                            bt[i][k / 4]
                                * px(&x, c, r0 - 1 + k as isize / 4, c0 - 1 + k as isize % 4)
                                * bt[j][k % 4]
                        })
                        .sum();
                    let want_dm: f64 = (0..4)
                        .map(|k| {
                            at[k / 2][i]
                                * px(&dy, c, r0 + k as isize / 2, c0 + k as isize % 2)
                                * at[k % 2][j]
                        })
                        .sum();
                    assert!(
                        (f64::from(v[at_tile]) - want_v).abs() < 1e-6,
                        "V {cin} {h} {w}: {ti} {tj} {c} {i}{j}"
                    );
                    assert!(
                        (f64::from(dm[at_tile]) - want_dm).abs() < 1e-6,
                        "dM {cin} {h} {w}: {ti} {tj} {c} {i}{j}"
                    );
                }
            }
        }
    }

    /// The whole backward against the f64 definition of both gradients, on ResNet-20's
    /// shapes and odd ones, with batches that end in a partial chunk.
    #[test]
    fn backward_matches_definition() {
        for (i, (cin, cout, h, w, n)) in [
            (16, 16, 32, 32, 3),
            (32, 32, 16, 16, 2),
            (64, 64, 8, 8, 10),
            (32, 16, 6, 16, 9),
        ]
        .into_iter()
        .enumerate()
        {
            let g = ConvGeom::new(&[n, cin, h, w], &[cout, cin, 3, 3], 1, 1).unwrap();
            if !applies(&g) {
                eprintln!("no kernel for {g:?} on this CPU: not tested");
                continue;
            }
            eprintln!("{g:?}: {:?}", kernel(&g));
            let x = test_values(n * cin * h * w, 7 * i as u64);
            let dy = test_values(n * cout * h * w, 7 * i as u64 + 1);
            let wt = test_values(cout * cin * 9, 7 * i as u64 + 2);
            let (dx, dw) = backward(&g, &x, &dy, &wt);
            let at = |b: usize, c: usize, ch: usize, r: isize, q: isize| -> Option<usize> {
                let ok = r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < w;
                ok.then(|| ((b * c + ch) * h + r as usize) * w + q as usize)
            };
            let mut want_dw = vec![0f64; cout * cin * 9];
            let mut want_dx = vec![0f64; n * cin * h * w];
            for (b, co, ci) in (0..n)
                .flat_map(|b| (0..cout).flat_map(move |co| (0..cin).map(move |ci| (b, co, ci))))
            {
                for (r, q, t) in
                    (0..h).flat_map(|r| (0..w).flat_map(move |q| (0..9).map(move |t| (r, q, t))))
                {
                    let (sr, sq) = (
                        r as isize + t as isize / 3 - 1,
                        q as isize + t as isize % 3 - 1,
                    );
                    if let Some(xi) = at(b, cin, ci, sr, sq) {
                        let d = f64::from(dy[at(b, cout, co, r as isize, q as isize).unwrap()]);
                        want_dw[(co * cin + ci) * 9 + t] += d * f64::from(x[xi]);
                        want_dx[xi] += d * f64::from(wt[(co * cin + ci) * 9 + t]);
                    }
                }
            }
            for (name, got, want) in [("dW", &dw, &want_dw), ("dx", &dx, &want_dx)] {
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (j, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (f64::from(g) - w).abs() <= 1e-5 * scale,
                        "{name} {cin} {cout} {h} {w} n{n}: {j}: {g} vs {w} (max {scale})"
                    );
                }
            }
        }
    }

    /// Single-thread time per image of the transposes, the transforms and the products of
    /// every kernel this CPU runs, and their rate in GFLOP/s-equivalent (the direct weight
    /// gradient's `2 * 9 * cin * cout * h * w` FLOPs per image; not a test: `cargo test
    /// --release -p resnet-model --lib conv_winograd_wgrad -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kernel_speed() {
        for (cin, hw) in [(16, 32), (32, 16), (64, 8)] {
            let g = ConvGeom::new(&[1, cin, hw, hw], &[cin, cin, 3, 3], 1, 1).unwrap();
            let s = Shape::new(&g);
            let p = hw * hw;
            let (x, dy) = (test_values(cin * p, 1), test_values(cin * p, 2));
            let (mut xt, mut dyt) = (vec![0f32; cin * p], vec![0f32; cin * p]);
            let (mut v, mut dm) = (vec![0f32; s.v_len()], vec![0f32; s.dm_len()]);
            let mut du = vec![0f32; XI * cin * cin];
            let flops = 2.0 * (9 * cin * cin * p) as f64;
            for k in kernels_here(cin, cin) {
                let reps = 4_000_000 / (cin * p);
                for round in 0..3 {
                    let time = |f: &mut dyn FnMut()| {
                        let t = std::time::Instant::now();
                        for _ in 0..reps {
                            f();
                        }
                        t.elapsed().as_secs_f64() / reps as f64
                    };
                    let tt = time(&mut || {
                        transpose_into(std::hint::black_box(&x), cin, p, &mut xt);
                        transpose_into(&dy, cin, p, &mut dyt);
                    });
                    let tr = time(&mut || {
                        for t0 in (0..s.tiles()).step_by(s.block()) {
                            let args = Args {
                                s: &s,
                                xt: xt.as_ptr(),
                                dyt: dyt.as_ptr(),
                                v: v.as_mut_ptr(),
                                dm: dm.as_mut_ptr(),
                                du: du.as_mut_ptr(),
                                t0,
                                t1: (t0 + s.block()).min(s.tiles()),
                                accumulate: true,
                            };
                            run(k, &args);
                        }
                    });
                    let all = tt + tr;
                    println!(
                        "{k:?} {cin} ch at {hw}x{hw}, {} tiles per block, round {round}: transposes {:.1} us, transforms and products {:.1} us; all {:.1} us = {:.0} GFLOP/s-eq",
                        s.block(),
                        tt * 1e6,
                        tr * 1e6,
                        all * 1e6,
                        flops / all / 1e9
                    );
                }
            }
        }
    }
}
