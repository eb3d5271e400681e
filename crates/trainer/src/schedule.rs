//! Learning-rate schedules indexed by iteration.
//!
//! A schedule maps the 0-based index of the optimizer step about to run to the learning rate
//! it uses. The default is the paper's CIFAR-10 recipe (He et al. 2016, sec. 4.2): start at
//! 0.1 and divide by 10 at 32,000 and again at 48,000 iterations. An optional warm-up overrides
//! the first iterations without shifting the main schedule (the paper trains ResNet-110 at 0.01
//! for the first 400 iterations, then goes back to 0.1).
//!
//! ```
//! use trainer::schedule::{LrScheduleConfig, Warmup, WarmupMode};
//!
//! let paper = LrScheduleConfig::paper();
//! assert_eq!(paper.lr_at(31_999), 0.1);
//! assert!((paper.lr_at(32_000) - 0.01).abs() < 1e-12);
//!
//! let resnet110 = LrScheduleConfig {
//!     warmup: Some(Warmup { iterations: 400, mode: WarmupMode::Constant { lr: 0.01 } }),
//!     ..LrScheduleConfig::paper()
//! };
//! resnet110.validate().unwrap();
//! assert_eq!(resnet110.lr_at(399), 0.01);
//! assert_eq!(resnet110.lr_at(400), 0.1);
//! ```

use serde::{Deserialize, Serialize};

/// An invalid value in a learning-rate schedule configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid learning-rate schedule `{field}`: {message}")]
#[non_exhaustive]
pub struct ScheduleConfigError {
    /// Dotted path of the offending field relative to the schedule, e.g. `kind.milestones`.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ScheduleConfigError {
    ScheduleConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Learning-rate schedule configuration.
///
/// Defaults (used for omitted fields): `base_lr: 0.1`, `kind`: the paper's piecewise schedule
/// (`milestones: [32000, 48000]`, `gamma: 0.1`), no warm-up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LrScheduleConfig {
    /// Learning rate of the main schedule at iteration 0 (default 0.1).
    pub base_lr: f64,
    /// Shape of the main schedule.
    pub kind: ScheduleKind,
    /// Optional warm-up that overrides the first iterations.
    pub warmup: Option<Warmup>,
}

/// Shape of the main schedule. In YAML: `type: piecewise | cosine | constant`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleKind {
    /// `base_lr * gamma^k` where `k` is the number of milestones `<= iteration`.
    Piecewise {
        /// Iterations at which the rate is multiplied by `gamma`, strictly increasing.
        milestones: Vec<u64>,
        /// Multiplicative factor at each milestone, in (0, 1].
        gamma: f64,
    },
    /// Cosine annealing from `base_lr` at iteration 0 to `min_lr` at `total_iterations`, then
    /// `min_lr`: `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2`.
    Cosine {
        /// Length `T` of the cosine, in iterations (> 0).
        total_iterations: u64,
        /// Final learning rate, in [0, base_lr].
        min_lr: f64,
    },
    /// `base_lr` throughout.
    Constant,
}

impl Default for ScheduleKind {
    fn default() -> Self {
        ScheduleKind::Piecewise {
            milestones: vec![32_000, 48_000],
            gamma: 0.1,
        }
    }
}

/// Warm-up applied to iterations `0..iterations`; from `iterations` on the main schedule rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// Number of warm-up iterations (> 0).
    pub iterations: u64,
    /// How the warm-up rate is chosen.
    pub mode: WarmupMode,
}

/// Warm-up rate rule. In YAML: `type: constant | linear`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WarmupMode {
    /// A fixed rate (the paper's ResNet-110: 0.01 for the first 400 iterations).
    Constant {
        /// The warm-up learning rate (> 0).
        lr: f64,
    },
    /// Linear ramp `start_lr + (base_lr - start_lr) * iteration / iterations`, so the rate
    /// reaches `base_lr` exactly at the first iteration after the warm-up.
    Linear {
        /// Learning rate at iteration 0 (>= 0).
        start_lr: f64,
    },
}

impl Default for LrScheduleConfig {
    fn default() -> Self {
        Self::paper()
    }
}

fn check_finite_nonneg(field: &str, v: f64) -> Result<(), ScheduleConfigError> {
    if !v.is_finite() || v < 0.0 {
        return Err(err(
            field,
            format!("expected a finite number >= 0, got {v}"),
        ));
    }
    Ok(())
}

fn check_positive(field: &str, v: f64) -> Result<(), ScheduleConfigError> {
    if !v.is_finite() || v <= 0.0 {
        return Err(err(field, format!("expected a finite number > 0, got {v}")));
    }
    Ok(())
}

impl LrScheduleConfig {
    /// The paper's schedule: 0.1, divided by 10 at 32,000 and 48,000 iterations, no warm-up.
    pub fn paper() -> Self {
        Self {
            base_lr: 0.1,
            kind: ScheduleKind::default(),
            warmup: None,
        }
    }

    /// Checks every value; the error names the offending field.
    pub fn validate(&self) -> Result<(), ScheduleConfigError> {
        check_positive("base_lr", self.base_lr)?;
        match &self.kind {
            ScheduleKind::Piecewise { milestones, gamma } => {
                if !gamma.is_finite() || *gamma <= 0.0 || *gamma > 1.0 {
                    return Err(err(
                        "kind.gamma",
                        format!("expected a number in (0, 1], got {gamma}"),
                    ));
                }
                if let Some(w) = milestones.windows(2).find(|w| w[0] >= w[1]) {
                    return Err(err(
                        "kind.milestones",
                        format!(
                            "expected strictly increasing iterations, got {} then {}",
                            w[0], w[1]
                        ),
                    ));
                }
            }
            ScheduleKind::Cosine {
                total_iterations,
                min_lr,
            } => {
                if *total_iterations == 0 {
                    return Err(err(
                        "kind.total_iterations",
                        "expected at least 1 iteration, got 0",
                    ));
                }
                check_finite_nonneg("kind.min_lr", *min_lr)?;
                if *min_lr > self.base_lr {
                    return Err(err(
                        "kind.min_lr",
                        format!("must not exceed base_lr {}, got {min_lr}", self.base_lr),
                    ));
                }
            }
            ScheduleKind::Constant => {}
        }
        if let Some(w) = &self.warmup {
            if w.iterations == 0 {
                return Err(err(
                    "warmup.iterations",
                    "expected at least 1 iteration, got 0",
                ));
            }
            match w.mode {
                WarmupMode::Constant { lr } => check_positive("warmup.mode.lr", lr)?,
                WarmupMode::Linear { start_lr } => {
                    check_finite_nonneg("warmup.mode.start_lr", start_lr)?
                }
            }
        }
        Ok(())
    }

    /// Learning rate for the step with 0-based index `iteration`.
    pub fn lr_at(&self, iteration: u64) -> f64 {
        if let Some(w) = &self.warmup {
            if iteration < w.iterations {
                return match w.mode {
                    WarmupMode::Constant { lr } => lr,
                    WarmupMode::Linear { start_lr } => {
                        start_lr
                            + (self.base_lr - start_lr) * (iteration as f64 / w.iterations as f64)
                    }
                };
            }
        }
        self.main_lr_at(iteration)
    }

    fn main_lr_at(&self, iteration: u64) -> f64 {
        match &self.kind {
            ScheduleKind::Piecewise { milestones, gamma } => {
                let k = milestones.iter().filter(|&&m| m <= iteration).count();
                // Repeated multiplication, as PyTorch's MultiStepLR applies it.
                (0..k).fold(self.base_lr, |lr, _| lr * gamma)
            }
            ScheduleKind::Cosine {
                total_iterations,
                min_lr,
            } => {
                let t = iteration.min(*total_iterations) as f64 / *total_iterations as f64;
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            ScheduleKind::Constant => self.base_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn paper_boundaries() {
        let s = LrScheduleConfig::default();
        assert_eq!(s, LrScheduleConfig::paper());
        s.validate().unwrap();
        assert_eq!(s.lr_at(0), 0.1);
        assert_eq!(s.lr_at(31_999), 0.1);
        assert!(close(s.lr_at(32_000), 0.01));
        assert!(close(s.lr_at(47_999), 0.01));
        assert!(close(s.lr_at(48_000), 0.001));
        assert!(close(s.lr_at(63_999), 0.001));
        assert!(close(s.lr_at(1_000_000), 0.001));
    }

    #[test]
    fn constant_warmup_then_paper() {
        let s = LrScheduleConfig {
            warmup: Some(Warmup {
                iterations: 400,
                mode: WarmupMode::Constant { lr: 0.01 },
            }),
            ..LrScheduleConfig::paper()
        };
        s.validate().unwrap();
        assert_eq!(s.lr_at(0), 0.01);
        assert_eq!(s.lr_at(399), 0.01);
        assert_eq!(s.lr_at(400), 0.1);
        assert_eq!(s.lr_at(31_999), 0.1);
        assert!(close(s.lr_at(32_000), 0.01));
    }

    #[test]
    fn linear_warmup() {
        let s = LrScheduleConfig {
            base_lr: 0.1,
            kind: ScheduleKind::Constant,
            warmup: Some(Warmup {
                iterations: 100,
                mode: WarmupMode::Linear { start_lr: 0.0 },
            }),
        };
        s.validate().unwrap();
        assert_eq!(s.lr_at(0), 0.0);
        assert!(close(s.lr_at(50), 0.05));
        assert!(close(s.lr_at(99), 0.099));
        assert_eq!(s.lr_at(100), 0.1);
        assert_eq!(s.lr_at(5000), 0.1);
    }

    #[test]
    fn cosine_endpoints() {
        let s = LrScheduleConfig {
            base_lr: 0.1,
            kind: ScheduleKind::Cosine {
                total_iterations: 1000,
                min_lr: 0.001,
            },
            warmup: None,
        };
        s.validate().unwrap();
        assert!(close(s.lr_at(0), 0.1));
        assert!(close(s.lr_at(500), 0.0505));
        assert!(close(s.lr_at(1000), 0.001));
        assert!(close(s.lr_at(2000), 0.001));
        assert!(s.lr_at(999) > 0.001 && s.lr_at(999) < 0.0011);
        // Monotonically non-increasing.
        assert!((0..1000).all(|i| s.lr_at(i + 1) <= s.lr_at(i)));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |f: &dyn Fn(&mut LrScheduleConfig)| {
            let mut s = LrScheduleConfig::paper();
            f(&mut s);
            s.validate().unwrap_err().field
        };
        assert_eq!(bad(&|s| s.base_lr = -0.1), "base_lr");
        assert_eq!(bad(&|s| s.base_lr = f64::NAN), "base_lr");
        assert_eq!(
            bad(&|s| s.kind = ScheduleKind::Piecewise {
                milestones: vec![48_000, 32_000],
                gamma: 0.1
            }),
            "kind.milestones"
        );
        assert_eq!(
            bad(&|s| s.kind = ScheduleKind::Piecewise {
                milestones: vec![1],
                gamma: 0.0
            }),
            "kind.gamma"
        );
        assert_eq!(
            bad(&|s| s.kind = ScheduleKind::Cosine {
                total_iterations: 0,
                min_lr: 0.0
            }),
            "kind.total_iterations"
        );
        assert_eq!(
            bad(&|s| s.kind = ScheduleKind::Cosine {
                total_iterations: 10,
                min_lr: 0.5
            }),
            "kind.min_lr"
        );
        assert_eq!(
            bad(&|s| s.warmup = Some(Warmup {
                iterations: 0,
                mode: WarmupMode::Constant { lr: 0.01 }
            })),
            "warmup.iterations"
        );
        assert_eq!(
            bad(&|s| s.warmup = Some(Warmup {
                iterations: 5,
                mode: WarmupMode::Constant { lr: -1.0 }
            })),
            "warmup.mode.lr"
        );
        let msg = LrScheduleConfig {
            base_lr: -1.0,
            ..LrScheduleConfig::paper()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(msg.contains("base_lr") && msg.contains("-1"), "{msg}");
    }
}
