//! Winograd F(2x2, 3x3) for stride-1 3x3 convolutions with padding 1 (16 of ResNet-20's 19
//! convolutions): forward, input gradient and weight gradient.
//!
//! The output is cut into 2x2 tiles; tile `t` reads the 4x4 input window that starts one
//! row and one column above-left of it. With the standard transforms (Lavin & Gray 2016)
//!
//! ```text
//! B^T = [1  0 -1  0]    G = [1    0    0 ]    A^T = [1  1  1  0]
//!       [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
//!       [0 -1  1  0]        [1/2 -1/2  1/2]
//!       [0  1  0 -1]        [0    0    1 ]
//! ```
//!
//! a tile of the output is `A^T [Σ_ci U[co, ci] ⊙ V[ci]] A` with `U = G g G^T` (the 3x3
//! kernel, transformed once per call) and `V = B^T d B` (the 4x4 input window). For each of
//! the 16 positions `ξ` of the 4x4 Winograd domain the sum over channels is one GEMM
//! `M[ξ] (tiles x cout) = V[ξ] (tiles x cin) · U[ξ]^T (cin x cout)`: 16 multiplications per
//! 4 outputs and channel pair instead of 36, i.e. 2.25x fewer FLOPs than the direct
//! convolution (im2col + GEMM), paid for with the transforms, which are additions only.
//!
//! The backward is the transpose of the same algorithm, so it needs no other tiling: with
//! `dM = A dy A^T` per tile (one cheap transform of `dy`),
//! - the input gradient is `dV[ξ] = dM[ξ] · U[ξ]` (16 GEMMs), then `B dV B^T` added into the
//!   overlapping 4x4 windows of `dx`;
//! - the weight gradient is `dU[ξ] = dM[ξ]^T · V[ξ]` (16 GEMMs over the tiles, `V`
//!   recomputed from `x`), then `dW = G^T dU G`.
//!
//! Planes are split into their polyphase components (even/odd rows x even/odd columns), so
//! every transform is a few contiguous vector loops over all tile slots of a plane (see
//! [`Tiles`]). Work is parallel over chunks of images whose size depends only on the shapes;
//! weight-gradient partials are summed in chunk order, so results do not depend on the number
//! of threads. The arithmetic differs from the direct convolution's by rounding only (the
//! transforms' coefficients are 0, ±1 and ±1/2); the tests hold it to the same tolerance
//! against candle's conv2d and f64 finite differences.
//!
//! Off by default ([`super::with_winograd`], `RESNET_WINOGRAD=1`): on the machines measured
//! so far it is slower than the direct path, whose GEMMs are 3-9x deeper (bench/README.md).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv_util::sum_partials;
use super::gemm::{sgemm, MatMut, MatRef};
use super::im2col::ConvGeom;
use super::storage::{multiversion, winograd_on, with_scratch, Uninit};

/// Input and output channels below which the GEMMs (depth `cin` forward, `cout` backward)
/// are too thin to pay for the transforms (the 3-channel stem keeps im2col).
const MIN_CHANNELS: usize = 8;

/// Target size (f32 elements) of one chunk's transformed input `V` (`16 * cin * tiles`):
/// large enough for efficient GEMMs, small enough to stay in a core's L2 cache.
const CHUNK_BUDGET: usize = 64 * 1024;

/// Positions of the 4x4 Winograd domain.
pub(super) const XI: usize = 16;

/// `true` when Winograd is on for the current thread (see [`super::with_winograd`]) and `g`
/// is a 3x3, stride-1, padding-1 convolution with enough channels.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    winograd_on()
        && g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.cin >= MIN_CHANNELS
        && g.cout >= MIN_CHANNELS
}

/// The tiling of one image: `th x tw` tiles of 2x2 output pixels (the last row/column of
/// tiles is partial for odd sizes). Each row of tiles has one extra slot, a dummy tile, so
/// that every transform runs as one contiguous loop over all `th * (tw + 1)` slots of an
/// image: tile `(ti, tj)` is slot `ti * (tw + 1) + tj`, and the neighbours a transform reads
/// (`+1`, `+(tw + 1)`) are then at fixed offsets. Dummy tiles cost `1 / tw` more GEMM work;
/// the forward ignores their outputs, and their output gradient is zero, so they add nothing
/// to the gradients.
///
/// Planes are handled in polyphase form: the four components `P[pr][pc][q * (tw + 1) + j]
/// = x[2q - 1 + pr][2j - 1 + pc]` (zero outside the image), so that the 4x4 window of tile
/// slot `k` is rows `P[0][.][k]`, `P[1][.][k]`, `P[0][.][k + tw + 1]`, `P[1][.][k + tw + 1]`
/// and within each row the columns `P[.][0][k]`, `P[.][1][k]`, `P[.][0][k + 1]`,
/// `P[.][1][k + 1]`.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    /// Input (= output) rows and columns.
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiles {
    fn new(g: &ConvGeom) -> Self {
        Self {
            h: g.h,
            w: g.w,
            th: g.h.div_ceil(2),
            tw: g.w.div_ceil(2),
        }
    }

    /// Tile slots per row of tiles (the last one is the dummy).
    fn c(&self) -> usize {
        self.tw + 1
    }

    /// Tile slots per image.
    fn per_img(&self) -> usize {
        self.th * self.c()
    }

    /// Elements of one polyphase component (`th + 1` rows, plus one for the last dummy's
    /// right neighbour).
    fn phase_len(&self) -> usize {
        (self.th + 1) * self.c() + 1
    }

    /// Scratch elements the per-plane transforms need.
    fn aux_len(&self) -> usize {
        4 * self.phase_len() + 20 * (self.per_img() + 1)
    }
}

/// Images per chunk (depends on the shapes only).
fn chunk(g: &ConvGeom, t: &Tiles) -> usize {
    (CHUNK_BUDGET / (XI * g.cin.max(g.cout) * t.per_img()).max(1)).clamp(1, g.n.max(1))
}

/// `G g G^T` of one 3x3 kernel `g` (row-major), row-major over the 4x4 positions `ξ`; also
/// for [`super::conv_winograd_avx2::weights`].
pub(super) fn kernel_transform(g: &[f32]) -> [f32; XI] {
    // rows: G g (4x3)
    let mut r = [[0f32; 3]; 4];
    for c in 0..3 {
        let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
        r[0][c] = a;
        r[1][c] = 0.5 * (a + b + d);
        r[2][c] = 0.5 * (a - b + d);
        r[3][c] = d;
    }
    // columns: (G g) G^T (4x4)
    let mut u = [0f32; XI];
    for (i, row) in r.iter().enumerate() {
        let [a, b, d] = *row;
        u[i * 4..][..4].copy_from_slice(&[a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]);
    }
    u
}

/// `U[ξ][co][ci] = (G g[co, ci] G^T)[ξ]` for the weight `[cout, cin, 3, 3]`; with
/// `transpose`, laid out `[ξ][ci][co]` instead.
fn weight_transform(g: &ConvGeom, w: &[f32], transpose: bool) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let mut u = vec![0f32; XI * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            let at = if transpose {
                ci * cout + co
            } else {
                co * cin + ci
            };
            let t = kernel_transform(&w[(co * cin + ci) * 9..][..9]);
            for (xi, v) in t.into_iter().enumerate() {
                u[xi * cin * cout + at] = v;
            }
        }
    }
    u
}

/// `dW[co, ci] = G^T dU[co, ci] G` from `du` laid out `[ξ][ci][co]`, or with `co_major`
/// `[ξ][co][ci]` (as [`super::conv_winograd_wgrad`] writes it).
pub(super) fn weight_grad_transform(g: &ConvGeom, du: &[f32], co_major: bool) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let mut dw = vec![0f32; cout * cin * 9];
    for co in 0..cout {
        for ci in 0..cin {
            let at = if co_major {
                co * cin + ci
            } else {
                ci * cout + co
            };
            let x = |i: usize, j: usize| du[(i * 4 + j) * cin * cout + at];
            // rows: G^T X (3x4)
            let r: [[f32; 4]; 3] = [
                std::array::from_fn(|j| x(0, j) + 0.5 * (x(1, j) + x(2, j))),
                std::array::from_fn(|j| 0.5 * (x(1, j) - x(2, j))),
                std::array::from_fn(|j| 0.5 * (x(1, j) + x(2, j)) + x(3, j)),
            ];
            // columns: (G^T X) G (3x3)
            let out = &mut dw[(co * cin + ci) * 9..][..9];
            for (a, row) in r.iter().enumerate() {
                let [x0, x1, x2, x3] = *row;
                out[a * 3] = x0 + 0.5 * (x1 + x2);
                out[a * 3 + 1] = 0.5 * (x1 - x2);
                out[a * 3 + 2] = 0.5 * (x1 + x2) + x3;
            }
        }
    }
    dw
}

/// Four disjoint `len`-element slices of `v`, at `first + k * stride` (`stride >= len`).
fn four(v: &mut [f32], first: usize, stride: usize, len: usize) -> [&mut [f32]; 4] {
    let rest = &mut v[first..];
    let (a, rest) = rest.split_at_mut(stride);
    let (b, rest) = rest.split_at_mut(stride);
    let (c, d) = rest.split_at_mut(stride);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// Four `len`-element slices of `v`, at `first + k * stride`.
fn four_ref(v: &[f32], first: usize, stride: usize, len: usize) -> [&[f32]; 4] {
    let at = |k: usize| &v[first + k * stride..][..len];
    [at(0), at(1), at(2), at(3)]
}

/// `even[j] = row[2j]`, `odd[j] = row[2j + 1]` for the columns that exist in `row`.
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let pairs = row.len() / 2;
    for ((pair, e), o) in row
        .chunks_exact(2)
        .zip(&mut even[..pairs])
        .zip(&mut odd[..pairs])
    {
        *e = pair[0];
        *o = pair[1];
    }
    if row.len() % 2 == 1 {
        even[pairs] = row[row.len() - 1];
    }
}

/// `row[2j] = even[j]`, `row[2j + 1] = odd[j]` for every column of `row`.
#[inline(always)]
fn interleave(row: &mut [MaybeUninit<f32>], even: &[f32], odd: &[f32]) {
    let pairs = row.len() / 2;
    for ((pair, &e), &o) in row
        .chunks_exact_mut(2)
        .zip(&even[..pairs])
        .zip(&odd[..pairs])
    {
        pair[0].write(e);
        pair[1].write(o);
    }
    if row.len() % 2 == 1 {
        row[row.len() - 1].write(even[pairs]);
    }
}

multiversion! {
/// The polyphase components of the plane `x` (`[h, w]`) into `ph` (`4 * phase_len`, laid
/// out `[pr][pc]`; see [`Tiles`]), overwriting every element.
fn split_plane(x: &[f32], t: Tiles, ph: &mut [f32]) {
    let (c, l) = (t.c(), t.phase_len());
    ph[..4 * l].fill(0.0);
    for (r, row) in x.chunks_exact(t.w).take(t.h).enumerate() {
        // input row r is padded row r + 1; columns 2j -> P[.][1][j], 2j + 1 -> P[.][0][j + 1]
        let (pr, q) = ((r + 1) % 2, r.div_ceil(2));
        let (p0, p1) = ph[2 * pr * l..][..2 * l].split_at_mut(l);
        deinterleave(row, &mut p1[q * c..][..c], &mut p0[q * c + 1..][..c - 1]);
    }
}
}

multiversion! {
/// `V = B^T d B` for every tile slot of one plane, from its polyphase components `ph`,
/// written to `v[ξ * sx + off + k]` (`k` over the image's slots). `tmp`: `8 * (slots + 1)`.
fn input_tiles(ph: &[f32], t: Tiles, v: &mut [f32], sx: usize, off: usize, tmp: &mut [f32]) {
    let (c, l, n) = (t.c(), t.phase_len(), t.per_img());
    let m = n + 1;
    let (se, so) = tmp[..8 * m].split_at_mut(4 * m);
    // rows (B^T d): r0 - r2, r1 + r2, r2 - r1, r1 - r3, per column phase
    for (pc, s) in [(0, &mut *se), (1, &mut *so)] {
        let (ev, od) = (&ph[pc * l..][..l], &ph[(2 + pc) * l..][..l]);
        let (r0, r1, r2, r3) = (&ev[..m], &od[..m], &ev[c..c + m], &od[c..c + m]);
        let [s0, s1, s2, s3] = four(s, 0, m, m);
        for k in 0..m {
            s0[k] = r0[k] - r2[k];
            s1[k] = r1[k] + r2[k];
            s2[k] = r2[k] - r1[k];
            s3[k] = r1[k] - r3[k];
        }
    }
    // columns: c0 - c2, c1 + c2, c2 - c1, c1 - c3 with c0..c3 = E[k], O[k], E[k+1], O[k+1]
    for i in 0..4 {
        let (e, o) = (&se[i * m..][..m], &so[i * m..][..m]);
        let (e0, e1, o0, o1) = (&e[..n], &e[1..], &o[..n], &o[1..]);
        let [d0, d1, d2, d3] = four(v, 4 * i * sx + off, sx, n);
        for k in 0..n {
            d0[k] = e0[k] - e1[k];
            d1[k] = o0[k] + e1[k];
            d2[k] = e1[k] - o0[k];
            d3[k] = o0[k] - o1[k];
        }
    }
}
}

multiversion! {
/// `y = A^T M A` for every tile of one output plane `y` (`[h, w]`, every pixel written),
/// reading `m[ξ * sx + off + k]`. `tmp`: `12 * slots`.
fn output_tiles(m: &[f32], sx: usize, off: usize, t: Tiles, y: &mut [MaybeUninit<f32>], tmp: &mut [f32]) {
    let (c, n) = (t.c(), t.per_img());
    let (u, ys) = tmp[..12 * n].split_at_mut(8 * n);
    // rows (A^T M): m0 + m1 + m2, m1 - m2 - m3, per column j
    for j in 0..4 {
        let [a, b, cc, d] = four_ref(m, j * sx + off, 4 * sx, n);
        let (p, q) = u.split_at_mut(4 * n);
        let (p, q) = (&mut p[j * n..][..n], &mut q[j * n..][..n]);
        for k in 0..n {
            p[k] = a[k] + b[k] + cc[k];
            q[k] = b[k] - cc[k] - d[k];
        }
    }
    // columns, for output rows 2ti (u0) and 2ti + 1 (u1)
    for (half, out) in ys.chunks_exact_mut(2 * n).enumerate() {
        let [a, b, cc, d] = four_ref(u, 4 * n * half, n, n);
        let (y0, y1) = out.split_at_mut(n);
        for k in 0..n {
            y0[k] = a[k] + b[k] + cc[k];
            y1[k] = b[k] - cc[k] - d[k];
        }
    }
    for (r, row) in y.chunks_exact_mut(t.w).take(t.h).enumerate() {
        let (ti, half) = (r / 2, r % 2);
        let at = |col: usize| &ys[(2 * half + col) * n + ti * c..][..c];
        interleave(row, at(0), at(1));
    }
}
}

multiversion! {
/// `dM = A dy A^T` for every tile slot of one output-gradient plane `dy` (`[h, w]`; zero
/// past the edges and for dummy slots), written to `dm[ξ * sx + off + k]`. `tmp`:
/// `6 * slots`.
fn dy_tiles(dy: &[f32], t: Tiles, dm: &mut [f32], sx: usize, off: usize, tmp: &mut [f32]) {
    let (c, n) = (t.c(), t.per_img());
    let d = &mut tmp[..4 * n];
    d.fill(0.0);
    // d[pr][pc][ti * c + tj] = dy[2ti + pr][2tj + pc]
    for (r, row) in dy.chunks_exact(t.w).take(t.h).enumerate() {
        let (ti, pr) = (r / 2, r % 2);
        let (de, dodd) = d[2 * pr * n..][..2 * n].split_at_mut(n);
        deinterleave(row, &mut de[ti * c..][..c], &mut dodd[ti * c..][..c]);
    }
    let (d, eo) = tmp[..6 * n].split_at_mut(4 * n);
    let [ae, ao, be, bo] = four_ref(d, 0, n, n);
    let (ce, co) = eo.split_at_mut(n);
    // rows (A dy): a, a + b, a - b, -b; then the same over columns (even e, odd o):
    // e, e + o, e - o, -o
    for i in 0..4 {
        for k in 0..n {
            (ce[k], co[k]) = match i {
                0 => (ae[k], ao[k]),
                1 => (ae[k] + be[k], ao[k] + bo[k]),
                2 => (ae[k] - be[k], ao[k] - bo[k]),
                _ => (-be[k], -bo[k]),
            };
        }
        let [d0, d1, d2, d3] = four(dm, 4 * i * sx + off, sx, n);
        for k in 0..n {
            let (e, o) = (ce[k], co[k]);
            d0[k] = e;
            d1[k] = e + o;
            d2[k] = e - o;
            d3[k] = -o;
        }
    }
}
}

/// `dst += src`, element by element.
#[inline(always)]
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

multiversion! {
/// Adds `B dV B^T` of every tile slot (reading `dv[ξ * sx + off + k]`) into the overlapping
/// 4x4 windows of the polyphase accumulator `acc` (`4 * phase_len`, zeroed by the caller).
/// `tmp`: `20 * slots`.
fn scatter_tiles(dv: &[f32], sx: usize, off: usize, t: Tiles, acc: &mut [f32], tmp: &mut [f32]) {
    let (c, l, n) = (t.c(), t.phase_len(), t.per_img());
    let (q, cols) = tmp[..20 * n].split_at_mut(16 * n);
    // q[r][j] = (B dV)[r][j]: V0j, V1j - V2j + V3j, V1j + V2j - V0j, -V3j
    for j in 0..4 {
        let [a, b, cc, d] = four_ref(dv, j * sx + off, 4 * sx, n);
        let [q0, q1, q2, q3] = four(q, j * n, 4 * n, n);
        for k in 0..n {
            q0[k] = a[k];
            q1[k] = b[k] - cc[k] + d[k];
            q2[k] = b[k] + cc[k] - a[k];
            q3[k] = -d[k];
        }
    }
    for r in 0..4 {
        // columns of row r: c0, c1 - c2 + c3, c1 + c2 - c0, -c3
        let [a, b, cc, d] = four_ref(q, 4 * r * n, n, n);
        let [x0, x1, x2, x3] = four(cols, 0, n, n);
        for k in 0..n {
            x0[k] = a[k];
            x1[k] = b[k] - cc[k] + d[k];
            x2[k] = b[k] + cc[k] - a[k];
            x3[k] = -d[k];
        }
        // row r of tile slot k is polyphase row (r % 2) at slot offset (r / 2) * c; its
        // columns go to E[k], O[k], E[k + 1], O[k + 1]
        let (pr, o) = (r % 2, (r / 2) * c);
        let (pe, po) = acc[2 * pr * l..][..2 * l].split_at_mut(l);
        let [x0, x1, x2, x3] = four_ref(cols, 0, n, n);
        add_into(&mut pe[o..o + n], x0);
        add_into(&mut po[o..o + n], x1);
        add_into(&mut pe[o + 1..o + 1 + n], x2);
        add_into(&mut po[o + 1..o + 1 + n], x3);
    }
}
}

multiversion! {
/// Writes the image part of the polyphase accumulator `acc` into the plane `x` (`[h, w]`).
fn merge_plane(acc: &[f32], t: Tiles, x: &mut [MaybeUninit<f32>]) {
    let (c, l) = (t.c(), t.phase_len());
    for (r, row) in x.chunks_exact_mut(t.w).take(t.h).enumerate() {
        let (pr, q) = ((r + 1) % 2, r.div_ceil(2));
        let (e, o) = (&acc[2 * pr * l + q * c..][..c], &acc[(2 * pr + 1) * l + q * c..][..c]);
        interleave(row, o, &e[1..]);
    }
}
}

/// The `tiles x cols` matrix stored column by column (`[col][tile]`, `tc` tiles): how `V`,
/// `M`, `dM` and `dV` of one `ξ` are laid out.
fn by_tiles(data: &[f32], tc: usize, cols: usize) -> MatRef<'_> {
    MatRef {
        data: &data[..tc * cols],
        rows: tc,
        cols,
        rs: 1,
        cs: tc,
    }
}

/// `V` of every plane of the `nb` images in `x` (`[nb, cin, h, w]`), written to
/// `v[ξ * cin * tc + ci * tc + b * tiles_per_image + k]`.
fn input_chunk(x: &[f32], nb: usize, cin: usize, t: Tiles, v: &mut [f32], aux: &mut [f32]) {
    let (tc, hw) = (nb * t.per_img(), t.h * t.w);
    let (pl, tmp) = aux.split_at_mut(4 * t.phase_len());
    for (p, plane) in x.chunks_exact(hw).take(nb * cin).enumerate() {
        let (b, ci) = (p / cin, p % cin);
        split_plane(plane, t, pl);
        input_tiles(pl, t, v, cin * tc, ci * tc + b * t.per_img(), tmp);
    }
}

/// `conv2d(x, w)` (stride 1, padding 1, 3x3) by Winograd F(2x2, 3x3); `g` must satisfy
/// [`applies`].
pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let t = Tiles::new(g);
    let u = weight_transform(g, w, false);
    let (nb, tp, hw) = (chunk(g, &t), t.per_img(), g.h * g.w);
    let (cin, cout) = (g.cin, g.cout);
    let mut out = Uninit::new(g.n * g.out_img());
    out.slots()
        .par_chunks_mut(nb * g.out_img())
        .zip(x.par_chunks(nb * g.in_img()))
        .for_each(|(y, x)| {
            let nb = y.len() / g.out_img();
            let tc = nb * tp;
            let mut aux = vec![0f32; t.aux_len()];
            with_scratch(XI * cin * tc, XI * cout * tc, |v, m| {
                input_chunk(x, nb, cin, t, v, &mut aux);
                let tmp = &mut aux[4 * t.phase_len()..];
                for xi in 0..XI {
                    // M[ξ]^T (tiles x cout) = V[ξ]^T (tiles x cin) · U[ξ]^T (cin x cout)
                    let lhs = by_tiles(&v[xi * cin * tc..], tc, cin);
                    let rhs = MatRef {
                        data: &u[xi * cin * cout..][..cin * cout],
                        rows: cin,
                        cols: cout,
                        rs: 1,
                        cs: cin,
                    };
                    let dst = &mut m[xi * cout * tc..][..cout * tc];
                    sgemm(MatMut::new(dst, tc, cout, 1, tc), false, lhs, rhs);
                }
                for b in 0..nb {
                    for co in 0..cout {
                        let yp = &mut y[(b * cout + co) * hw..][..hw];
                        output_tiles(m, cout * tc, co * tc + b * tp, t, yp, tmp);
                    }
                }
            });
        });
    // SAFETY: every pixel of every output plane was written by `output_tiles`.
    unsafe { out.assume_init() }
}

/// `(dx, dW)` of `conv2d(x, w)` (stride 1, padding 1, 3x3) for the output gradient `dy`, by
/// the transposed Winograd algorithm; `g` must satisfy [`applies`].
pub(crate) fn backward(g: &ConvGeom, x: &[f32], dy: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    if g.n == 0 {
        return (Vec::new(), vec![0f32; g.cout * g.cin * 9]);
    }
    let t = Tiles::new(g);
    let ut = weight_transform(g, w, true);
    let (nb, tp, hw) = (chunk(g, &t), t.per_img(), g.h * g.w);
    let (cin, cout) = (g.cin, g.cout);
    let plen = XI * cin * cout;
    let mut dx = Uninit::new(g.n * g.in_img());
    let mut partial = Uninit::new(g.n.div_ceil(nb) * plen);
    dx.slots()
        .par_chunks_mut(nb * g.in_img())
        .zip(dy.par_chunks(nb * g.out_img()))
        .zip(
            x.par_chunks(nb * g.in_img())
                .zip(partial.slots().par_chunks_mut(plen)),
        )
        .for_each(|((dxc, dyc), (xc, part))| {
            let nb = dxc.len() / g.in_img();
            let tc = nb * tp;
            let mut aux = vec![0f32; t.aux_len()];
            with_scratch(XI * cin * tc, XI * cout * tc, |v, dm| {
                input_chunk(xc, nb, cin, t, v, &mut aux);
                let (pl, tmp) = aux.split_at_mut(4 * t.phase_len());
                for b in 0..nb {
                    for co in 0..cout {
                        let dyp = &dyc[(b * cout + co) * hw..][..hw];
                        dy_tiles(dyp, t, dm, cout * tc, co * tc + b * tp, tmp);
                    }
                }
                for xi in 0..XI {
                    let dmx = &dm[xi * cout * tc..][..cout * tc];
                    // dU[ξ] (cout x cin, stored [ci][co]) = dM[ξ] (cout x tiles) · V[ξ]^T
                    let lhs = MatRef {
                        data: dmx,
                        rows: cout,
                        cols: tc,
                        rs: tc,
                        cs: 1,
                    };
                    let rhs = by_tiles(&v[xi * cin * tc..], tc, cin);
                    let dst = &mut part[xi * cin * cout..][..cin * cout];
                    sgemm(MatMut::uninit(dst, cout, cin, 1, cout), false, lhs, rhs);
                    // dV[ξ]^T (tiles x cin) = dM[ξ]^T (tiles x cout) · U[ξ] (cout x cin),
                    // overwriting V[ξ], which is no longer needed
                    let lhs = by_tiles(dmx, tc, cout);
                    let rhs = MatRef {
                        data: &ut[xi * cin * cout..][..cin * cout],
                        rows: cout,
                        cols: cin,
                        rs: 1,
                        cs: cout,
                    };
                    let dst = &mut v[xi * cin * tc..][..cin * tc];
                    sgemm(MatMut::new(dst, tc, cin, 1, tc), false, lhs, rhs);
                }
                for b in 0..nb {
                    for ci in 0..cin {
                        pl.fill(0.0);
                        scatter_tiles(v, cin * tc, ci * tc + b * tp, t, pl, tmp);
                        merge_plane(pl, t, &mut dxc[(b * cin + ci) * hw..][..hw]);
                    }
                }
            });
        });
    // SAFETY: every chunk wrote its whole partial (16 GEMMs) and every dx plane (merge_plane).
    let (dx, partial) = unsafe { (dx.assume_init(), partial.assume_init()) };
    let du = sum_partials(&partial, plen);
    (dx, weight_grad_transform(g, &du, false))
}
