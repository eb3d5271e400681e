//! Per-channel kernels on NCHW data shared by the BatchNorm ops: statistics, the fused
//! affine (+ ReLU) map, and the two passes of its backward.
//!
//! Reductions are parallel over channels; each channel is summed image by image in a fixed
//! order (16 f32 lanes within a row, f64 across rows), so results do not depend on the
//! number of threads.

use rayon::prelude::*;

use super::storage::{multiversion, Uninit};

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

multiversion! {
    /// `(Σ (v - shift), Σ (v - shift)²)` over one row, in 16 f32 lanes summed in f64.
    fn row_moments(row: &[f32], shift: f32) -> (f64, f64) {
        let (mut a, mut q) = ([0f32; LANES], [0f32; LANES]);
        let mut it = row.chunks_exact(LANES);
        for ch in &mut it {
            let ch: &[f32; LANES] = ch.try_into().expect("exact chunk");
            for i in 0..LANES {
                let d = ch[i] - shift;
                a[i] += d;
                q[i] += d * d;
            }
        }
        for (i, &v) in it.remainder().iter().enumerate() {
            let d = v - shift;
            a[i] += d;
            q[i] += d * d;
        }
        (lane_sum(&a), lane_sum(&q))
    }
}

/// Per-channel `(Σ (x - s), Σ (x - s)²)` with the shift `s = x[0, c, 0, 0]`, which keeps the
/// variance free of cancellation when the mean is large.
fn shifted_moments(p: Planes, x: &[f32], c: usize) -> (f64, f64, f32) {
    let shift = if p.per_channel() > 0 {
        p.plane(x, 0, c)[0]
    } else {
        0.0
    };
    let (mut s1, mut s2) = (0f64, 0f64);
    for n in 0..p.n {
        let (a, q) = row_moments(p.plane(x, n, c), shift);
        s1 += a;
        s2 += q;
    }
    (s1, s2, shift)
}

/// Per-channel batch mean and biased variance, computed in f64.
pub(crate) fn mean_var(p: Planes, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let m = p.per_channel().max(1) as f64;
    (0..p.c)
        .into_par_iter()
        .map(|c| {
            let (s1, s2, shift) = shifted_moments(p, x, c);
            let d = s1 / m;
            (f64::from(shift) + d, (s2 / m - d * d).max(0.0))
        })
        .unzip()
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
            .for_each(|(yi, xi)| {
                for c in 0..p.c {
                    let r = c * p.hw..(c + 1) * p.hw;
                    affine_plane(&mut yi[r.clone()], &xi[r], scale[c], shift[c], relu);
                }
            });
    }
    // SAFETY: every plane of every image was written.
    unsafe { y.assume_init() }
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

/// The gradient reaching the affine map: `dy`, masked by `x * scale + shift > 0` when the
/// forward applied a ReLU (same arithmetic as the forward, so the same mask).
#[derive(Clone, Copy)]
pub(crate) struct Masked<'a> {
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    pub(crate) relu: bool,
}

multiversion! {
    /// `(Σ g, Σ g * (x - center))` over one row, `g = dy` masked by `x * sc + sh > 0` when
    /// `relu`; 16 f32 lanes summed in f64.
    fn row_grad_sums(xr: &[f32], gr: &[f32], sc: f32, sh: f32, relu: bool, ce: f32) -> (f64, f64) {
        let (mut a, mut q) = ([0f32; LANES], [0f32; LANES]);
        // all-ones bits where the gradient passes, zero where the ReLU blocked it
        let pass = |xv: f32| if !relu || xv * sc + sh > 0.0 { u32::MAX } else { 0 };
        let mut xi = xr.chunks_exact(LANES);
        let mut gi = gr.chunks_exact(LANES);
        for (xc, gc) in (&mut xi).zip(&mut gi) {
            let xc: &[f32; LANES] = xc.try_into().expect("exact chunk");
            let gc: &[f32; LANES] = gc.try_into().expect("exact chunk");
            let mut m = [0u32; LANES];
            for i in 0..LANES {
                m[i] = pass(xc[i]);
            }
            for i in 0..LANES {
                let g = f32::from_bits(gc[i].to_bits() & m[i]);
                a[i] += g;
                q[i] += g * (xc[i] - ce);
            }
        }
        for (i, (&xv, &gv)) in xi.remainder().iter().zip(gi.remainder()).enumerate() {
            let g = f32::from_bits(gv.to_bits() & pass(xv));
            a[i] += g;
            q[i] += g * (xv - ce);
        }
        (lane_sum(&a), lane_sum(&q))
    }
}

/// Per-channel `(Σ g, Σ g * (x - center[c]))` where `g` is the (masked) gradient.
pub(crate) fn grad_sums(
    p: Planes,
    x: &[f32],
    dy: &[f32],
    m: Masked<'_>,
    center: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    (0..p.c)
        .into_par_iter()
        .map(|c| {
            let (mut s1, mut s2) = (0f64, 0f64);
            for n in 0..p.n {
                let (xr, gr) = (p.plane(x, n, c), p.plane(dy, n, c));
                let (a, q) = row_grad_sums(xr, gr, m.scale[c], m.shift[c], m.relu, center[c]);
                s1 += a;
                s2 += q;
            }
            (s1, s2)
        })
        .unzip()
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
            .for_each(|(di, (xi, gi))| {
                for c in 0..p.c {
                    let r = c * p.hw..(c + 1) * p.hw;
                    let coef = [m.scale[c], m.shift[c], k.k[c], k.center[c], k.a[c], k.b[c]];
                    grad_input_plane(&mut di[r.clone()], &xi[r.clone()], &gi[r], coef, m.relu);
                }
            });
    }
    // SAFETY: every plane of every image was written.
    unsafe { dx.assume_init() }
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
