//! The block's BatchNorm passes folded into the convolutions next to them, image by image
//! (over [`Images`]; see [`conv_backward::backward_images`] and
//! `conv::forward_stats_images`). Forward: conv2 reads `relu(bn1(y1))` made per image
//! ([`BnOutput`]), so it is never kept for the batch; its backward makes it again. Backward: a
//! BatchNorm's input gradient is made per image right where the convolution in front of it
//! reads its output gradient ([`BnInputGrad`]), and the shortcut's gradient, the ReLU mask and
//! the reduction of the layer in front ([`Handoff`]) are applied to each input-gradient image
//! the convolution has just written. At ResNet-20's first stage an activation is 8 MiB for a
//! batch of 128, an image 64 KiB: this way these passes read and write an image in cache
//! instead of the whole batch through memory.
//!
//! The kernels are the separate passes' ([`affine_image`], [`grad_input_image`],
//! [`image_grad_sums`]), per image, with the per-image sums added in image order as before, so
//! the results are the same bits.

use crate::ops::batch_norm::{masked, BackwardCoef, Saved};
use crate::ops::channel::{
    affine_image, grad_input_image, image_grad_sums, sum_in_image_order, GradCoef, Masked, Planes,
};
use crate::ops::conv_backward;
use crate::ops::conv_util::{as_slots, Images};
use crate::ops::elementwise::relu_mask_in_place;
use crate::ops::im2col::ConvGeom;

/// Per-channel `(Σ g, Σ g * (y - mean))` of a BatchNorm's masked output gradient.
pub(crate) type Sums = (Vec<f64>, Vec<f64>);

/// A training-mode BatchNorm's (+ ReLU's) input gradient, image by image, from its input
/// `x` and its output gradient `dy` (both `[n, c, h, w]`).
pub(crate) struct BnInputGrad<'a> {
    p: Planes,
    x: &'a [f32],
    dy: &'a [f32],
    mask: Masked<'a>,
    coef: GradCoef<'a>,
}

impl<'a> BnInputGrad<'a> {
    pub(crate) fn new(
        p: Planes,
        x: &'a [f32],
        dy: &'a [f32],
        s: &'a Saved,
        relu: bool,
        coef: &'a BackwardCoef,
    ) -> Self {
        Self {
            p,
            x,
            dy,
            mask: masked(s, relu),
            coef: coef.grad_coef(s),
        }
    }
}

impl Images for BnInputGrad<'_> {
    fn image<'b>(&'b self, b: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let len = self.p.c * self.p.hw;
        let (xi, gi) = (&self.x[b * len..][..len], &self.dy[b * len..][..len]);
        // SAFETY: f32 storage viewed as slots, only written with values.
        grad_input_image(self.p, xi, gi, self.mask, &self.coef, unsafe {
            as_slots(buf)
        });
        buf
    }
}

/// A training-mode BatchNorm's (+ ReLU's) output, image by image, from its input `y` and its
/// statistics: what conv2 reads, made where it reads it instead of kept for the whole batch.
pub(crate) struct BnOutput<'a> {
    p: Planes,
    y: &'a [f32],
    s: &'a Saved,
    relu: bool,
}

impl<'a> BnOutput<'a> {
    pub(crate) fn new(p: Planes, y: &'a [f32], s: &'a Saved, relu: bool) -> Self {
        Self { p, y, s, relu }
    }
}

impl Images for BnOutput<'_> {
    fn image<'b>(&'b self, b: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let len = self.p.c * self.p.hw;
        let yi = &self.y[b * len..][..len];
        // SAFETY: f32 storage viewed as slots, only written with values.
        let out = unsafe { as_slots(buf) };
        affine_image(self.p, yi, &self.s.scale, &self.s.shift, self.relu, out);
        buf
    }
}

/// Whether [`conv_backward::backward_images`] takes `g`.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    conv_backward::images_apply(g)
}

/// What the layer in front of a convolution does with each of the convolution's input-gradient
/// images while it is in cache: a ReLU's mask (by its output `z`, where the layer is the
/// previous block's final ReLU; a BatchNorm + ReLU applies its own mask with its sums), then
/// the per-channel `(Σ g, Σ g * (y - center))` of the masked gradient `g` that the BatchNorm
/// in front needs (`y`: its input, planes `p`).
pub(crate) struct Handoff<'a> {
    pub(crate) z: Option<&'a [f32]>,
    pub(crate) p: Planes,
    pub(crate) y: &'a [f32],
    pub(crate) mask: Masked<'a>,
    pub(crate) center: &'a [f32],
}

impl Handoff<'_> {
    /// Image `b`'s mask (in place) and per-row sums.
    fn image(&self, b: usize, g: &mut [f32]) -> Vec<(f64, f64)> {
        let len = self.p.c * self.p.hw;
        if let Some(z) = self.z {
            relu_mask_in_place(g, &z[b * len..][..len]);
        }
        let mut out = vec![(0f64, 0f64); self.p.c];
        image_grad_sums(
            self.p,
            &self.y[b * len..][..len],
            g,
            self.mask,
            self.center,
            &mut out,
        );
        out
    }

    /// The per-channel totals of [`Handoff::image`]'s rows, in image order.
    fn total(&self, rows: Vec<Vec<(f64, f64)>>) -> Sums {
        let rows: Vec<(f64, f64)> = rows.into_iter().flatten().collect();
        sum_in_image_order(self.p, &rows)
    }
}

/// `(dx, dW, sums)` of the convolution `g` (input `x`, weight `w`) whose output gradient is
/// `dy`'s, with `dx` handed to `h` image by image: `dx` comes back masked where `h` has a
/// ReLU output, and `sums` are `h`'s.
pub(crate) fn backward_sums(
    g: &ConvGeom,
    x: &impl Images,
    w: &[f32],
    dy: &BnInputGrad<'_>,
    h: &Handoff<'_>,
) -> (Vec<f32>, Vec<f32>, Sums) {
    let (dx, dw, rows) = conv_backward::backward_images(g, x, w, dy, |b, dxb| h.image(b, dxb));
    (dx, dw, h.total(rows))
}

/// `(dx + res, dW, sums)` of the convolution `g` whose output gradient is `dy`'s: the
/// residual gradient `res` (`dx`'s shape) added to each image while it is in cache, which then
/// goes to `h` as in [`backward_sums`] where there is one.
pub(crate) fn backward_add(
    g: &ConvGeom,
    x: &impl Images,
    w: &[f32],
    dy: &BnInputGrad<'_>,
    res: &[f32],
    h: Option<&Handoff<'_>>,
) -> (Vec<f32>, Vec<f32>, Option<Sums>) {
    let len = g.in_img();
    let (dx, dw, rows) = conv_backward::backward_images(g, x, w, dy, |b, dxb| {
        for (d, &r) in dxb.iter_mut().zip(&res[b * len..][..len]) {
            *d += r;
        }
        h.map(|h| h.image(b, dxb))
    });
    let sums = h.map(|h| h.total(rows.into_iter().map(|r| r.unwrap_or_default()).collect()));
    (dx, dw, sums)
}
