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
        let mut rows = Vec::new();
        let mut row = |layer: &str, kind: &str, output_shape: Vec<usize>, params: usize| {
            rows.push(SummaryRow {
                layer: layer.to_string(),
                kind: kind.to_string(),
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
        Self {
            model: cfg.name(),
            rows,
            total_params,
            buffer_elements: count("", TensorKind::Buffer),
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
        let cells: Vec<[String; 3]> = self
            .rows
            .iter()
            .map(|r| {
                let dims: Vec<String> = r.output_shape.iter().map(|d| d.to_string()).collect();
                [
                    format!("{} ({})", r.layer, r.kind),
                    format!("[N, {}]", dims.join(", ")),
                    thousands(r.params),
                ]
            })
            .collect();
        let headers = ["Layer (type)", "Output Shape", "Param #"];
        let mut widths = headers.map(str::len);
        for c in &cells {
            for (w, s) in widths.iter_mut().zip(c) {
                *w = (*w).max(s.len());
            }
        }
        let total_width = widths.iter().sum::<usize>() + 6;
        writeln!(f, "Model: \"{}\"", self.model)?;
        writeln!(f, "{}", "_".repeat(total_width))?;
        writeln!(
            f,
            "{:<w0$}   {:<w1$}   {:>w2$}",
            headers[0],
            headers[1],
            headers[2],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )?;
        writeln!(f, "{}", "=".repeat(total_width))?;
        for c in &cells {
            writeln!(
                f,
                "{:<w0$}   {:<w1$}   {:>w2$}",
                c[0],
                c[1],
                c[2],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
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
        write!(f, "{}", "_".repeat(total_width))
    }
}
