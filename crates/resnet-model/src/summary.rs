//! [`Summary`]: a Keras-style layer table of a model.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::ResNetConfig;
use crate::resnet::IN_CHANNELS;
use crate::spec::{TensorKind, TensorSpec};

/// Input height and width the summary assumes (CIFAR images).
pub const SUMMARY_IMAGE_SIZE: usize = 32;

/// One row of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// PyTorch module path, e.g. `layer2.0`.
    pub layer: String,
    /// Module type, e.g. `BasicBlock`.
    pub kind: String,
    /// Output shape without the batch dimension, e.g. `[32, 16, 16]`.
    pub output_shape: Vec<usize>,
    /// Trainable parameters of the module.
    pub params: usize,
    /// Multiply-accumulates of the module's convolutions and linear layer for one image
    /// (torchinfo's "Mult-Adds"; BatchNorm, ReLU, shortcuts and pooling not counted).
    pub macs: usize,
}

/// Layer table of a model for `[N, 3, 32, 32]` inputs; `Display` prints it like Keras'
/// `model.summary()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Short model name, e.g. `resnet20-a`.
    pub model: String,
    /// Rows in forward order.
    pub rows: Vec<SummaryRow>,
    /// Total trainable parameters (the sum of the rows).
    pub total_params: usize,
    /// Scalars in BatchNorm running statistics (not trainable).
    pub buffer_elements: usize,
    /// Multiply-accumulates of one image's forward pass (the sum of the rows' `macs`; one
    /// MAC is two FLOPs). A training step costs about three times as many: the forward, the
    /// input gradient and the weight gradient of every layer.
    pub total_macs: usize,
}

impl Summary {
    pub(crate) fn new(cfg: &ResNetConfig, spec: &BTreeMap<String, TensorSpec>) -> Self {
        let count = |prefix: &str, kind: TensorKind| -> usize {
            spec.iter()
                .filter(|(name, s)| name.starts_with(prefix) && s.kind == kind)
                .map(|(_, s)| s.shape.iter().product::<usize>())
                .sum()
        };
        let params = |prefix: &str| count(prefix, TensorKind::Parameter);
        // Every convolution of a row writes that row's output plane (a block's strided conv1
        // and its projection included), and a linear layer's weight is one MAC per element.
        let macs = |prefix: &str, size: usize| -> usize {
            spec.iter()
                .filter(|(name, _)| name.starts_with(prefix) && name.ends_with(".weight"))
                .map(|(_, s)| match s.shape.len() {
                    4 => s.shape.iter().product::<usize>() * size * size,
                    2 => s.shape.iter().product(),
                    _ => 0,
                })
                .sum()
        };
        let mut rows = Vec::new();
        let mut row = |layer: &str, kind: &str, output_shape: Vec<usize>, params: usize| {
            let size = match output_shape[..] {
                [_, h, _] => h,
                _ => 1,
            };
            rows.push(SummaryRow {
                layer: layer.to_string(),
                kind: kind.to_string(),
                macs: if params > 0 {
                    macs(&format!("{layer}."), size)
                } else {
                    0
                },
                output_shape,
                params,
            })
        };
        let mut size = SUMMARY_IMAGE_SIZE;
        let w = cfg.base_width;
        row("input", "Input", vec![IN_CHANNELS, size, size], 0);
        row("conv1", "Conv2d 3x3", vec![w, size, size], params("conv1."));
        row(
            "bn1",
            "BatchNorm2d+ReLU",
            vec![w, size, size],
            params("bn1."),
        );
        for stage in 0..3 {
            for i in 0..cfg.n() {
                if stage > 0 && i == 0 {
                    size = size.div_ceil(2);
                }
                let name = format!("layer{}.{i}", stage + 1);
                let p = params(&format!("{name}."));
                row(
                    &name,
                    "BasicBlock",
                    vec![cfg.stage_width(stage), size, size],
                    p,
                );
            }
        }
        row("avgpool", "GlobalAvgPool", vec![cfg.stage_width(2)], 0);
        row("linear", "Linear", vec![cfg.num_classes], params("linear."));
        let total_params = rows.iter().map(|r| r.params).sum();
        let total_macs = rows.iter().map(|r| r.macs).sum();
        Self {
            model: cfg.name(),
            rows,
            total_params,
            buffer_elements: count("", TensorKind::Buffer),
            total_macs,
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                let dims: Vec<String> = r.output_shape.iter().map(|d| d.to_string()).collect();
                [
                    format!("{} ({})", r.layer, r.kind),
                    format!("[N, {}]", dims.join(", ")),
                    thousands(r.params),
                    thousands(r.macs),
                ]
            })
            .collect();
        let headers = ["Layer (type)", "Output Shape", "Param #", "Mult-Adds"];
        let mut widths = headers.map(str::len);
        for c in &cells {
            for (w, s) in widths.iter_mut().zip(c) {
                *w = (*w).max(s.len());
            }
        }
        let total_width = widths.iter().sum::<usize>() + 9;
        writeln!(f, "Model: \"{}\"", self.model)?;
        writeln!(f, "{}", "_".repeat(total_width))?;
        writeln!(
            f,
            "{:<w0$}   {:<w1$}   {:>w2$}   {:>w3$}",
            headers[0],
            headers[1],
            headers[2],
            headers[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )?;
        writeln!(f, "{}", "=".repeat(total_width))?;
        for c in &cells {
            writeln!(
                f,
                "{:<w0$}   {:<w1$}   {:>w2$}   {:>w3$}",
                c[0],
                c[1],
                c[2],
                c[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )?;
        }
        writeln!(f, "{}", "=".repeat(total_width))?;
        writeln!(f, "Total params: {}", thousands(self.total_params))?;
        writeln!(f, "Trainable params: {}", thousands(self.total_params))?;
        writeln!(
            f,
            "Non-trainable (BatchNorm running statistics): {}",
            thousands(self.buffer_elements)
        )?;
        writeln!(
            f,
            "Mult-adds per image: {} (forward; a training step ~3x)",
            thousands(self.total_macs)
        )?;
        write!(f, "{}", "_".repeat(total_width))
    }
}
