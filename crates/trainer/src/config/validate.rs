//! Validation of a [`RunConfig`]: every error names the dotted key, and its line in the file
//! (or the `--set` that gave the value).

use cifar_data::{NormalizationConfig, SplitStrategy};
use resnet_model::Shortcut;

use super::RunConfig;
use crate::error::{Result, TrainError};
use crate::overrides::{locate_key, Override};
use crate::schedule::{ScheduleKind, WarmupMode};

/// Deepest network accepted (`model.depth`): above the paper's ResNet-1202, below what
/// exhausts memory while building the model.
pub const MAX_DEPTH: usize = 2000;
/// Widest first stage accepted (`model.base_width`).
pub const MAX_BASE_WIDTH: usize = 1024;
/// Largest training or evaluation batch accepted.
pub const MAX_BATCH: usize = 65_536;

/// Where a config came from, for error messages and line lookup.
#[derive(Clone, Debug)]
pub(super) struct Source<'a> {
    pub(super) name: &'a str,
    pub(super) text: &'a str,
    pub(super) overrides: &'a [Override],
}

impl Source<'_> {
    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> TrainError {
        let set_by = self
            .overrides
            .iter()
            .rev()
            .find(|o| key == o.key() || key.starts_with(&format!("{}.", o.key())))
            .map(|o| o.arg.clone());
        let path: Vec<&str> = key.split('.').collect();
        TrainError::ConfigValue {
            source_name: self.name.to_string(),
            key: key.to_string(),
            line: locate_key(self.text, &path),
            set_by,
            reason: reason.into(),
        }
    }
}

impl RunConfig {
    pub(super) fn validate_with(&self, src: &Source<'_>) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(src.invalid(
                "name",
                format!(
                    "{:?} must be non-empty and use only letters, digits, `-`, `_` and `.` \
                     (it names the run directory)",
                    self.name
                ),
            ));
        }
        self.validate_model(src)?;
        self.validate_data(src)?;
        self.validate_optimizer(src)?;
        self.validate_schedule(src)?;
        self.validate_training(src)
    }

    fn validate_model(&self, src: &Source<'_>) -> Result<()> {
        let m = &self.model;
        if m.depth < 8 || !(m.depth - 2).is_multiple_of(6) {
            return Err(src.invalid(
                "model.depth",
                format!(
                    "must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {}",
                    m.depth
                ),
            ));
        }
        if m.depth > MAX_DEPTH {
            return Err(src.invalid(
                "model.depth",
                format!(
                    "at most {MAX_DEPTH} (the paper's deepest CIFAR net is ResNet-1202), got {}",
                    m.depth
                ),
            ));
        }
        if m.base_width > MAX_BASE_WIDTH {
            return Err(src.invalid(
                "model.base_width",
                format!(
                    "at most {MAX_BASE_WIDTH} (the paper uses 16; the last stage is 4x wider), \
                     got {}",
                    m.base_width
                ),
            ));
        }
        if m.num_classes != cifar_data::NUM_CLASSES {
            return Err(src.invalid(
                "model.num_classes",
                format!(
                    "CIFAR-10 has {} classes, got {}",
                    cifar_data::NUM_CLASSES,
                    m.num_classes
                ),
            ));
        }
        if m.base_width == 0
            || (m.shortcut == Shortcut::IdentityPad && !m.base_width.is_multiple_of(2))
        {
            return Err(src.invalid(
                "model.base_width",
                format!(
                    "must be positive (and even with shortcut option A), got {}",
                    m.base_width
                ),
            ));
        }
        m.validate()
            .map_err(|e| src.invalid("model", e.to_string()))
    }

    fn validate_data(&self, src: &Source<'_>) -> Result<()> {
        let d = &self.data;
        if d.split.strategy != SplitStrategy::None && d.split.val_size == 0 {
            return Err(src.invalid(
                "data.split.val_size",
                "must be at least 1 (use `strategy: none` for no validation set)",
            ));
        }
        for (key, v) in [
            ("data.train_limit", d.train_limit),
            ("data.val_limit", d.val_limit),
            ("data.test_limit", d.test_limit),
        ] {
            if v == Some(0) {
                return Err(src.invalid(key, "must be at least 1 (or null for all images)"));
            }
        }
        if let NormalizationConfig::PerChannel { mean, std } = d.normalization {
            if let Some(m) = mean {
                if m.iter().any(|x| !x.is_finite()) {
                    return Err(src.invalid(
                        "data.normalization.mean",
                        format!("values must be finite, got {m:?}"),
                    ));
                }
            }
            if let Some(s) = std {
                if s.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                    return Err(src.invalid(
                        "data.normalization.std",
                        format!("values must be finite and > 0, got {s:?}"),
                    ));
                }
            }
        }
        if let Some(a) = d.augment {
            if a.pad > 16 {
                return Err(src.invalid(
                    "data.augment.pad",
                    format!("must be at most 16 pixels, got {}", a.pad),
                ));
            }
        }
        Ok(())
    }

    fn validate_optimizer(&self, src: &Source<'_>) -> Result<()> {
        let o = &self.optimizer;
        let unit = |key: &str, v: f64, max_incl: bool| {
            let ok = v.is_finite() && v >= 0.0 && (v < 1.0 || (max_incl && v == 1.0));
            if ok {
                Ok(())
            } else {
                let range = if max_incl { "[0, 1]" } else { "[0, 1)" };
                Err(src.invalid(key, format!("must be in {range}, got {v}")))
            }
        };
        unit("optimizer.momentum", o.momentum, false)?;
        unit("optimizer.dampening", o.dampening, true)?;
        if !o.weight_decay.is_finite() || o.weight_decay < 0.0 {
            return Err(src.invalid(
                "optimizer.weight_decay",
                format!("must be a finite number >= 0, got {}", o.weight_decay),
            ));
        }
        if o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0) {
            return Err(src.invalid(
                "optimizer.nesterov",
                "Nesterov momentum requires momentum > 0 and dampening 0 (as in PyTorch)",
            ));
        }
        o.validate()
            .map_err(|e| src.invalid(&format!("optimizer.{}", e.field), e.message))
    }

    fn validate_schedule(&self, src: &Source<'_>) -> Result<()> {
        let s = &self.schedule;
        if !s.base_lr.is_finite() || s.base_lr <= 0.0 {
            return Err(src.invalid(
                "schedule.base_lr",
                format!(
                    "the learning rate must be a finite number > 0, got {}",
                    s.base_lr
                ),
            ));
        }
        if let Some(w) = &s.warmup {
            let lr = match w.mode {
                WarmupMode::Constant { lr } => ("schedule.warmup.mode.lr", lr, false),
                WarmupMode::Linear { start_lr } => {
                    ("schedule.warmup.mode.start_lr", start_lr, true)
                }
            };
            if !lr.1.is_finite() || lr.1 < 0.0 || (lr.1 == 0.0 && !lr.2) {
                return Err(src.invalid(
                    lr.0,
                    format!(
                        "the learning rate must be a finite number > 0, got {}",
                        lr.1
                    ),
                ));
            }
        }
        if let ScheduleKind::Cosine { min_lr, .. } = s.kind {
            if !min_lr.is_finite() || min_lr < 0.0 {
                return Err(src.invalid(
                    "schedule.kind.min_lr",
                    format!("must be a finite number >= 0, got {min_lr}"),
                ));
            }
        }
        s.validate()
            .map_err(|e| src.invalid(&format!("schedule.{}", e.field), e.message))
    }

    fn validate_training(&self, src: &Source<'_>) -> Result<()> {
        let t = &self.training;
        let at_least_one = |key: &str, v: u64| {
            if v == 0 {
                Err(src.invalid(key, "must be at least 1, got 0"))
            } else {
                Ok(())
            }
        };
        at_least_one("training.batch_size", t.batch_size as u64)?;
        at_least_one("training.max_iterations", t.max_iterations)?;
        at_least_one("training.eval_batch_size", t.eval_batch_size as u64)?;
        at_least_one("training.log_every", t.log_every)?;
        for (key, v) in [
            ("training.batch_size", t.batch_size),
            ("training.eval_batch_size", t.eval_batch_size),
        ] {
            if v > MAX_BATCH {
                return Err(src.invalid(
                    key,
                    format!("at most {MAX_BATCH} (CIFAR-10 has 60,000 images), got {v}"),
                ));
            }
        }
        at_least_one(
            "training.checkpoint_every_epochs",
            t.checkpoint_every_epochs,
        )?;
        at_least_one("training.keep_last", t.keep_last as u64)?;
        if let Some(n) = t.threads {
            at_least_one("training.threads", n as u64)?;
        }
        at_least_one("training.batch_norm_groups", t.batch_norm_groups as u64)?;
        if t.batch_norm_groups > 1 && t.sync_batch_norm {
            return Err(src.invalid(
                "training.batch_norm_groups",
                "must be 1 with training.sync_batch_norm (statistics over the whole batch)",
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(src.invalid(
                "training.label_smoothing",
                format!("must be in [0, 1), got {}", t.label_smoothing),
            ));
        }
        Ok(())
    }
}
