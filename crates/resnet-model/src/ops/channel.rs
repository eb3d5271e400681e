//! Per-channel kernels on NCHW data shared by the BatchNorm ops: statistics, the fused
//! affine (+ ReLU) map, and the two passes of its backward.
//!
//! Reductions are parallel over channels or images; each channel is summed image by image
//! in a fixed order (16 f32 lanes within a row, f64 across rows), so results do not depend
//! on the number of threads.

use rayon::prelude::*;

use super::elementwise::relu_mask_block;
use super::storage::{assume_init_mut, multiversion, Uninit};

/// Dimensions of an NCHW tensor seen as `n` images of `c` planes of `hw` elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) hw: usize,
}

impl Planes {
    pub(crate) fn from_dims(op: &str, dims: &[usize]) -> candle_core::Result<Self> {
        match *dims {
            [n, c, h, w] => Ok(Self { n, c, hw: h * w }),
            _ => candle_core::bail!("{op}: expected an [N, C, H, W] tensor, got shape {dims:?}"),
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// Number of elements reduced per channel.
    pub(crate) fn per_channel(&self) -> usize {
        self.n * self.hw
    }
    fn plane<'a>(&self, t: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &t[(n * self.c + c) * self.hw..][..self.hw]
    }
}

const LANES: usize = 16;

#[inline(always)]
fn lane_sum(l: &[f32; LANES]) -> f64 {
    l.iter().map(|&v| f64::from(v)).sum()
}

/// `Σ f(row[j])` in 16 f32 lanes (lane `i` takes the elements `j ≡ i mod 16`, in order).
///
/// One accumulator per pass on purpose: with two (a sum and a sum of squares) in the same
/// loop, LLVM's SLP vectoriser paired `a[i]` with `q[i]` into 2-wide vectors built one
/// element at a time (`vinsertps`), ~4x slower than two passes over the (cached) row.
#[inline(always)]
fn lanes(row: &[f32], f: impl Fn(f32) -> f32) -> [f32; LANES] {
    let mut a = [0f32; LANES];
    let mut it = row.chunks_exact(LANES);
    for ch in &mut it {
        let ch: &[f32; LANES] = ch.try_into().expect("exact chunk");
        for i in 0..LANES {
            a[i] += f(ch[i]);
        }
    }
    for (i, &v) in it.remainder().iter().enumerate() {
        a[i] += f(v);
    }
    a
}

multiversion! {
    /// `(Σ (v - shift), Σ (v - shift)²)` over one row, in 16 f32 lanes summed in f64.
    fn row_moments(row: &[f32], shift: f32) -> (f64, f64) {
        let a = lanes(row, |v| v - shift);
        let q = lanes(row, |v| {
            let d = v - shift;
            d * d
        });
        (lane_sum(&a), lane_sum(&q))
    }
}

/// `(Σ (v - s), Σ (v - s)²)` of one plane about its own first value `s`: the pieces the
/// BatchNorm statistics are combined from ([`combine_moments`]). A shift inside the data
/// keeps the variance free of cancellation when the mean is large, and one per plane lets a
/// convolution compute its output's moments image by image while the image is still in
/// cache (`conv::forward_stats`), with the same bits as [`mean_var`] computes them later.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PlaneMoments {
    s1: f64,
    s2: f64,
    shift: f32,
}

/// The moments of one plane (see [`PlaneMoments`]).
pub(crate) fn plane_moments(plane: &[f32]) -> PlaneMoments {
    let shift = plane.first().copied().unwrap_or(0.0);
    let (s1, s2) = row_moments(plane, shift);
    PlaneMoments { s1, s2, shift }
}

/// Writes the moments of the `out.len()` planes of `hw` elements that make up `img`.
pub(crate) fn image_moments(img: &[f32], hw: usize, out: &mut [PlaneMoments]) {
    for (c, m) in out.iter_mut().enumerate() {
        *m = plane_moments(&img[c * hw..][..hw]);
    }
}

/// Per-channel batch mean and biased variance (f64) from the moments of every plane
/// (`[n][c]`), combined image by image in order (Chan et al.'s pairwise update), so the
/// result does not depend on the number of threads or on who computed the moments.
pub(crate) fn combine_moments(p: Planes, m: &[PlaneMoments]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), p.n * p.c, "combine_moments: one entry per plane");
    if p.per_channel() == 0 {
        return (vec![0.0; p.c], vec![0.0; p.c]);
    }
    let (h, total) = (p.hw as f64, p.per_channel() as f64);
    (0..p.c)
        .map(|c| {
            let planes = || m.iter().skip(c).step_by(p.c);
            let mean = planes()
                .map(|pm| f64::from(pm.shift) * h + pm.s1)
                .sum::<f64>()
                / total;
            let m2: f64 = planes()
                .map(|pm| {
                    let d = pm.s1 / h;
                    let mu = f64::from(pm.shift) + d;
                    (pm.s2 - pm.s1 * d) + h * (mu - mean) * (mu - mean)
                })
                .sum();
            (mean, (m2 / total).max(0.0))
        })
        .unzip()
}

/// Per-channel batch mean and biased variance of `x`, computed in f64 from per-plane
/// moments (see [`combine_moments`]), parallel over images.
pub(crate) fn mean_var(p: Planes, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut m = vec![PlaneMoments::default(); p.n * p.c];
    let img = p.c * p.hw;
    if img > 0 {
        m.par_chunks_mut(p.c)
            .zip(x.par_chunks(img))
            .for_each(|(mi, xi)| image_moments(xi, p.hw, mi));
    }
    combine_moments(p, &m)
}

/// Per-channel `(Σ (x - shift[c]), Σ (x - shift[c])²)`, summed like [`mean_var`] (16 f32
/// lanes within a row, f64 across rows, images in order).
pub(crate) fn channel_moments(p: Planes, x: &[f32], shift: &[f32]) -> (Vec<f64>, Vec<f64>) {
    (0..p.c)
        .into_par_iter()
        .map(|c| {
            let (mut s1, mut s2) = (0f64, 0f64);
            for n in 0..p.n {
                let (a, q) = row_moments(p.plane(x, n, c), shift[c]);
                s1 += a;
                s2 += q;
            }
            (s1, s2)
        })
        .unzip()
}

multiversion! {
    /// `dst = relu?(src * scale + shift)` over one plane.
    fn affine_plane(
        dst: &mut [std::mem::MaybeUninit<f32>],
        src: &[f32],
        scale: f32,
        shift: f32,
        relu: bool,
    ) {
        if relu {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write((v * scale + shift).max(0.0));
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(v * scale + shift);
            }
        }
    }
}

/// `y = x * scale[c] + shift[c]`, then `max(y, 0)` when `relu`.
pub(crate) fn affine(p: Planes, x: &[f32], scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let mut y = Uninit::new(p.len());
    let img = p.c * p.hw;
    if img > 0 {
        y.slots()
            .par_chunks_mut(img)
            .zip(x.par_chunks(img))
            .for_each(|(yi, xi)| affine_image(p, xi, scale, shift, relu, yi));
    }
    // SAFETY: every plane of every image was written.
    unsafe { y.assume_init() }
}

/// [`affine`] of one image (`xi` and `yi`: its `[c, hw]` planes).
pub(crate) fn affine_image(
    p: Planes,
    xi: &[f32],
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    yi: &mut [std::mem::MaybeUninit<f32>],
) {
    for c in 0..p.c {
        let r = c * p.hw..(c + 1) * p.hw;
        affine_plane(&mut yi[r.clone()], &xi[r], scale[c], shift[c], relu);
    }
}

/// `relu(x * scale[c] + shift[c] + s)`: a BatchNorm's affine map, a residual add and a
/// ReLU in one pass (same arithmetic, so the same bits, as [`affine`] then an add + ReLU).
pub(crate) fn affine_add_relu(
    p: Planes,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    s: &[f32],
) -> Vec<f32> {
    let mut y = Uninit::new(p.len());
    let img = p.c * p.hw;
    if img > 0 {
        y.slots()
            .par_chunks_mut(img)
            .zip(x.par_chunks(img).zip(s.par_chunks(img)))
            .for_each(|(yi, (xi, si))| {
                for c in 0..p.c {
                    let r = c * p.hw..(c + 1) * p.hw;
                    affine_add_relu_plane(
                        &mut yi[r.clone()],
                        &xi[r.clone()],
                        &si[r],
                        scale[c],
                        shift[c],
                    );
                }
            });
    }
    // SAFETY: every plane of every image was written.
    unsafe { y.assume_init() }
}

multiversion! {
    /// One plane of [`affine_add_relu`].
    fn affine_add_relu_plane(
        dst: &mut [std::mem::MaybeUninit<f32>],
        src: &[f32],
        res: &[f32],
        scale: f32,
        shift: f32,
    ) {
        for ((d, &v), &r) in dst.iter_mut().zip(src).zip(res) {
            d.write((v * scale + shift + r).max(0.0));
        }
    }
}

/// An eval-mode BatchNorm folded into one per-channel affine map, applied in place to a
/// convolution's output image right after its GEMMs (see `conv::forward_affine`): `y =
/// relu?(y * scale[c] + shift[c])`, or with `residual` (the image's shortcut, same shape)
/// `y = relu(y * scale[c] + shift[c] + residual)`. The arithmetic is that of [`affine`] and
/// [`affine_add_relu`], so the bits are those of the separate passes.
#[derive(Clone, Copy)]
pub(crate) struct AffineEpilogue<'a> {
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    /// ReLU after the affine map (always applied when `residual` is set).
    pub(crate) relu: bool,
    /// The residual for every image, `[n, c, h, w]` like the output.
    pub(crate) residual: Option<&'a [f32]>,
}

impl AffineEpilogue<'_> {
    /// Applies the map to output image `b` (`img`: its `scale.len()` planes of `hw`).
    pub(crate) fn apply(&self, img: &mut [f32], b: usize, hw: usize) {
        let c = self.scale.len();
        for (ch, plane) in img.chunks_mut(hw).enumerate().take(c) {
            let (sc, sh) = (self.scale[ch], self.shift[ch]);
            match self.residual {
                Some(r) => affine_add_relu_in_place(plane, &r[(b * c + ch) * hw..][..hw], sc, sh),
                None => affine_in_place(plane, sc, sh, self.relu),
            }
        }
    }
}

multiversion! {
    /// [`affine_plane`] in place.
    fn affine_in_place(y: &mut [f32], scale: f32, shift: f32, relu: bool) {
        if relu {
            for v in y.iter_mut() {
                *v = (*v * scale + shift).max(0.0);
            }
        } else {
            for v in y.iter_mut() {
                *v = *v * scale + shift;
            }
        }
    }
}

multiversion! {
    /// [`affine_add_relu_plane`] in place.
    fn affine_add_relu_in_place(y: &mut [f32], res: &[f32], scale: f32, shift: f32) {
        for (v, &r) in y.iter_mut().zip(res) {
            *v = (*v * scale + shift + r).max(0.0);
        }
    }
}

/// The gradient reaching the affine map: `dy`, masked by `x * scale + shift > 0` when the
/// forward applied a ReLU (same arithmetic as the forward, so the same mask).
#[derive(Clone, Copy)]
pub(crate) struct Masked<'a> {
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    pub(crate) relu: bool,
}

/// `(Σ g, Σ g * (x - center))` over one row, `g = dy` masked by `x * sc + sh > 0` when
/// `relu`; 16 f32 lanes summed in f64. Explicit AVX2 where the CPU has it: LLVM's SLP
/// vectoriser built the two accumulators of [`row_grad_sums_generic`] from shuffles (~4x
/// slower); the same operations in the same order, so the same bits.
fn row_grad_sums(xr: &[f32], gr: &[f32], sc: f32, sh: f32, relu: bool, ce: f32) -> (f64, f64) {
    assert_eq!(xr.len(), gr.len(), "row_grad_sums: row lengths");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above); equal lengths (asserted).
        return unsafe {
            if relu {
                row_grad_sums_avx2::<true>(xr, gr, sc, sh, ce)
            } else {
                row_grad_sums_avx2::<false>(xr, gr, sc, sh, ce)
            }
        };
    }
    row_grad_sums_generic(xr, gr, sc, sh, relu, ce)
}

/// The portable [`row_grad_sums`].
fn row_grad_sums_generic(
    xr: &[f32],
    gr: &[f32],
    sc: f32,
    sh: f32,
    relu: bool,
    ce: f32,
) -> (f64, f64) {
    let (mut a, mut q) = ([0f32; LANES], [0f32; LANES]);
    let full = xr.len() / LANES * LANES;
    for (xc, gc) in xr[..full].chunks_exact(LANES).zip(gr.chunks_exact(LANES)) {
        for i in 0..LANES {
            row_grad_step(&mut a[i], &mut q[i], xc[i], gc[i], sc, sh, relu, ce);
        }
    }
    for (i, (&xv, &gv)) in xr[full..].iter().zip(&gr[full..]).enumerate() {
        row_grad_step(&mut a[i], &mut q[i], xv, gv, sc, sh, relu, ce);
    }
    (lane_sum(&a), lane_sum(&q))
}

/// One element of [`row_grad_sums`] into lane accumulators `a` and `q`.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "one element's operands, inlined")]
fn row_grad_step(
    a: &mut f32,
    q: &mut f32,
    xv: f32,
    gv: f32,
    sc: f32,
    sh: f32,
    relu: bool,
    ce: f32,
) {
    // all-ones bits where the gradient passes, zero where the ReLU blocked it
    let m = if !relu || xv * sc + sh > 0.0 {
        u32::MAX
    } else {
        0
    };
    let g = f32::from_bits(gv.to_bits() & m);
    *a += g;
    *q += g * (xv - ce);
}

/// [`row_grad_sums`] with AVX2: lanes 0-7 and 8-15 in two registers each.
///
/// # Safety
/// The CPU must support AVX2, and `xr` and `gr` must have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_grad_sums_avx2<const RELU: bool>(
    xr: &[f32],
    gr: &[f32],
    sc: f32,
    sh: f32,
    ce: f32,
) -> (f64, f64) {
    use std::arch::x86_64::*;
    let full = xr.len() / LANES * LANES;
    let (vsc, vsh, vce) = (_mm256_set1_ps(sc), _mm256_set1_ps(sh), _mm256_set1_ps(ce));
    let zero = _mm256_setzero_ps();
    let [mut a0, mut a1, mut q0, mut q1] = [zero; 4];
    let (xp, gp) = (xr.as_ptr(), gr.as_ptr());
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= full <= both lengths.
        let (x0, x1, mut g0, mut g1) = unsafe {
            (
                _mm256_loadu_ps(xp.add(i)),
                _mm256_loadu_ps(xp.add(i + 8)),
                _mm256_loadu_ps(gp.add(i)),
                _mm256_loadu_ps(gp.add(i + 8)),
            )
        };
        if RELU {
            // x * sc + sh > 0 (ordered: NaN blocks, as the scalar `>`), not fused
            let t0 = _mm256_add_ps(_mm256_mul_ps(x0, vsc), vsh);
            let t1 = _mm256_add_ps(_mm256_mul_ps(x1, vsc), vsh);
            g0 = _mm256_and_ps(g0, _mm256_cmp_ps::<_CMP_GT_OQ>(t0, zero));
            g1 = _mm256_and_ps(g1, _mm256_cmp_ps::<_CMP_GT_OQ>(t1, zero));
        }
        a0 = _mm256_add_ps(a0, g0);
        a1 = _mm256_add_ps(a1, g1);
        q0 = _mm256_add_ps(q0, _mm256_mul_ps(g0, _mm256_sub_ps(x0, vce)));
        q1 = _mm256_add_ps(q1, _mm256_mul_ps(g1, _mm256_sub_ps(x1, vce)));
        i += LANES;
    }
    let (mut a, mut q) = ([0f32; LANES], [0f32; LANES]);
    // SAFETY: each array holds 16 f32, two registers' worth.
    unsafe {
        _mm256_storeu_ps(a.as_mut_ptr(), a0);
        _mm256_storeu_ps(a.as_mut_ptr().add(8), a1);
        _mm256_storeu_ps(q.as_mut_ptr(), q0);
        _mm256_storeu_ps(q.as_mut_ptr().add(8), q1);
    }
    for (i, (&xv, &gv)) in xr[full..].iter().zip(&gr[full..]).enumerate() {
        row_grad_step(&mut a[i], &mut q[i], xv, gv, sc, sh, RELU, ce);
    }
    (lane_sum(&a), lane_sum(&q))
}

/// Per-channel `(Σ g, Σ g * (x - center[c]))` where `g` is the (masked) gradient.
///
/// Parallel over images (each reads its contiguous `[c, hw]` block, which streams better
/// than one channel's planes scattered across the batch); the per-row sums are then added
/// per channel in image order, as a serial loop over the images would.
pub(crate) fn grad_sums(
    p: Planes,
    x: &[f32],
    dy: &[f32],
    m: Masked<'_>,
    center: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let mut part = vec![(0f64, 0f64); p.n * p.c];
    let img = p.c * p.hw;
    if img > 0 {
        part.par_chunks_mut(p.c)
            .zip(x.par_chunks(img).zip(dy.par_chunks(img)))
            .for_each(|(pi, (xi, gi))| image_grad_sums(p, xi, gi, m, center, pi));
    }
    sum_in_image_order(p, &part)
}

/// [`grad_sums`] of the gradient `g = relu_mask(z, dz)` (the backward of a ReLU with output
/// `z` and output gradient `dz`), which it also returns: each image's `g` is summed right
/// after it is written, while it is in cache, instead of in a second pass.
pub(crate) fn relu_mask_grad_sums(
    p: Planes,
    x: &[f32],
    z: &[f32],
    dz: &[f32],
    m: Masked<'_>,
    center: &[f32],
) -> (Vec<f32>, (Vec<f64>, Vec<f64>)) {
    let mut g = Uninit::new(p.len());
    let mut part = vec![(0f64, 0f64); p.n * p.c];
    let img = p.c * p.hw;
    if img > 0 {
        g.slots()
            .par_chunks_mut(img)
            .zip(part.par_chunks_mut(p.c))
            .zip(
                x.par_chunks(img)
                    .zip(z.par_chunks(img).zip(dz.par_chunks(img))),
            )
            .for_each(|((gi, pi), (xi, (zi, dzi)))| {
                relu_mask_block(gi, zi, dzi);
                // SAFETY: written just above.
                let gi = unsafe { assume_init_mut(gi) };
                image_grad_sums(p, xi, gi, m, center, pi);
            });
    }
    // SAFETY: every image was written by `relu_mask_block`.
    (unsafe { g.assume_init() }, sum_in_image_order(p, &part))
}

/// The per-row sums of one image's planes: `out[c]` is row `c`'s `(Σ g, Σ g * (x -
/// center[c]))`; [`sum_in_image_order`] adds the rows of all images.
pub(crate) fn image_grad_sums(
    p: Planes,
    xi: &[f32],
    gi: &[f32],
    m: Masked<'_>,
    center: &[f32],
    out: &mut [(f64, f64)],
) {
    for (c, o) in out.iter_mut().enumerate() {
        let r = c * p.hw..(c + 1) * p.hw;
        *o = row_grad_sums(
            &xi[r.clone()],
            &gi[r],
            m.scale[c],
            m.shift[c],
            m.relu,
            center[c],
        );
    }
}

/// Per-channel totals of per-row partials `[n][c]`, each channel added in image order.
pub(crate) fn sum_in_image_order(p: Planes, part: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    let (mut s1, mut s2) = (vec![0f64; p.c], vec![0f64; p.c]);
    for row in part.chunks_exact(p.c.max(1)) {
        for (c, &(a, q)) in row.iter().enumerate() {
            s1[c] += a;
            s2[c] += q;
        }
    }
    (s1, s2)
}

/// Per-channel coefficients of the input gradient
/// `dx = g * k[c] + (x - center[c]) * a[c] + b[c]` with `g` the masked gradient.
pub(crate) struct GradCoef<'a> {
    pub(crate) k: &'a [f32],
    pub(crate) center: &'a [f32],
    pub(crate) a: &'a [f32],
    pub(crate) b: &'a [f32],
}

/// Input gradient of the affine map (and of BatchNorm, through `GradCoef`).
pub(crate) fn grad_input(
    p: Planes,
    x: &[f32],
    dy: &[f32],
    m: Masked<'_>,
    k: &GradCoef<'_>,
) -> Vec<f32> {
    let mut dx = Uninit::new(p.len());
    let img = p.c * p.hw;
    if img > 0 {
        dx.slots()
            .par_chunks_mut(img)
            .zip(x.par_chunks(img).zip(dy.par_chunks(img)))
            .for_each(|(di, (xi, gi))| grad_input_image(p, xi, gi, m, k, di));
    }
    // SAFETY: every plane of every image was written.
    unsafe { dx.assume_init() }
}

/// [`grad_input`] of one image (`xi`, `gi` and `di`: its `[c, hw]` planes), for the kernels
/// that make a convolution's output gradient image by image, while it is in cache.
pub(crate) fn grad_input_image(
    p: Planes,
    xi: &[f32],
    gi: &[f32],
    m: Masked<'_>,
    k: &GradCoef<'_>,
    di: &mut [std::mem::MaybeUninit<f32>],
) {
    for c in 0..p.c {
        let r = c * p.hw..(c + 1) * p.hw;
        let coef = [m.scale[c], m.shift[c], k.k[c], k.center[c], k.a[c], k.b[c]];
        grad_input_plane(&mut di[r.clone()], &xi[r.clone()], &gi[r], coef, m.relu);
    }
}

multiversion! {
    /// One plane of [`grad_input`]; `coef = [scale, shift, k, center, a, b]`.
    fn grad_input_plane(
        dst: &mut [std::mem::MaybeUninit<f32>],
        x: &[f32],
        dy: &[f32],
        coef: [f32; 6],
        relu: bool,
    ) {
        let [sc, sh, kc, ce, ac, bc] = coef;
        if relu {
            for ((d, &xv), &gv) in dst.iter_mut().zip(x).zip(dy) {
                let m = if xv * sc + sh > 0.0 { u32::MAX } else { 0 };
                let g = f32::from_bits(gv.to_bits() & m);
                d.write(g * kc + ((xv - ce) * ac + bc));
            }
        } else {
            for ((d, &xv), &gv) in dst.iter_mut().zip(x).zip(dy) {
                d.write(gv * kc + ((xv - ce) * ac + bc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::conv_util::test_values;

    /// The AVX2 row sums give the portable loop's bits: rows that are and are not a multiple
    /// of the 16 lanes, with and without the ReLU mask, with values at the mask's edge
    /// (`x * sc + sh` exactly 0), signed zeros and NaNs in `x`.
    #[test]
    fn row_grad_sums_match_generic_bits() {
        // (a NaN in x makes Σ g * (x - center) NaN: a case of its own)
        for (len, nan) in [0, 1, 15, 16, 17, 64, 1024, 1031]
            .into_iter()
            .flat_map(|l| [(l, false), (l, true)])
        {
            let mut x = test_values(len, 3);
            let g = test_values(len, 4);
            for (i, v) in x.iter_mut().enumerate() {
                match i % 11 {
                    3 => *v = 0.25, // 0.25 * 4 - 1 = 0: blocked
                    5 => *v = -0.0,
                    7 if nan => *v = f32::NAN,
                    _ => {}
                }
            }
            for relu in [false, true] {
                let (sc, sh, ce) = (4.0, -1.0, 0.125);
                let want = row_grad_sums_generic(&x, &g, sc, sh, relu, ce);
                let got = row_grad_sums(&x, &g, sc, sh, relu, ce);
                // a NaN's payload may depend on the operand order the compiler picked
                let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                assert!(
                    same(got.0, want.0) && same(got.1, want.1),
                    "length {len}, NaN {nan}, relu {relu}: {got:?} vs {want:?}"
                );
            }
        }
    }

    /// Mean and variance from per-plane moments against a two-pass f64 computation, on data
    /// whose mean is 10^4 times its spread (cancellation) and whose planes differ in mean
    /// (the between-image term of the combination), with planes that are not a multiple of
    /// the 16 lanes long.
    #[test]
    fn combined_moments_match_two_pass_f64() {
        let p = Planes { n: 5, c: 3, hw: 37 };
        let x: Vec<f32> = (0..p.len())
            .map(|i| {
                let (img, c) = (i / (p.c * p.hw), (i / p.hw) % p.c);
                let noise = ((i * 7919) % 101) as f32 / 101.0 - 0.5;
                1e4 * (c as f32 + 1.0) + img as f32 * 0.3 + noise
            })
            .collect();
        let (mean, var) = mean_var(p, &x);
        for c in 0..p.c {
            let vals: Vec<f64> = (0..p.n)
                .flat_map(|n| p.plane(&x, n, c).iter().map(|&v| f64::from(v)))
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
            assert!(
                (mean[c] - m).abs() <= 1e-9 * m.abs(),
                "channel {c}: mean {} vs {m}",
                mean[c]
            );
            assert!(
                (var[c] - v).abs() <= 1e-6 * v,
                "channel {c}: variance {} vs {v}",
                var[c]
            );
        }
    }
}
