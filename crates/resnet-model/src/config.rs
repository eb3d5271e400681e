//! [`ResNetConfig`]: which CIFAR ResNet to build.

use serde::{Deserialize, Serialize};

use crate::Shortcut;

/// Configuration of a CIFAR-10 ResNet (He et al. 2016, section 4.2).
///
/// The network has `depth = 6n + 2` weighted layers: a 3x3 stem convolution, three stages of
/// `n` basic blocks (two 3x3 convolutions each) with `base_width`, `2 * base_width` and
/// `4 * base_width` channels, and a final linear layer.
///
/// Defaults (also used for fields missing from a YAML/JSON document): ResNet-20
/// (`depth: 20`), option-A shortcuts (`shortcut: identity_pad`), `num_classes: 10`,
/// `base_width: 16`.
///
/// ```
/// use resnet_model::{ResNetConfig, Shortcut};
/// let cfg: ResNetConfig = serde_yaml::from_str("depth: 56\nshortcut: B").unwrap();
/// assert_eq!(cfg.n(), 9);
/// assert_eq!(cfg.shortcut, Shortcut::Projection);
/// cfg.validate().unwrap();
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResNetConfig {
    /// Number of weighted layers, `6n + 2` with `n >= 1` (20, 32, 44, 56, 110, 1202, ...).
    /// Default 20.
    pub depth: usize,
    /// Shortcut connection type (the paper's options A, B and C). Default option A.
    pub shortcut: Shortcut,
    /// Number of output classes. Default 10.
    pub num_classes: usize,
    /// Channels of the first stage; the later stages have 2x and 4x as many. Default 16.
    pub base_width: usize,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self::resnet20()
    }
}

impl ResNetConfig {
    /// A config of the given depth with the other fields at their defaults.
    /// Call [`validate`](Self::validate) to check the depth.
    pub fn with_depth(depth: usize) -> Self {
        Self {
            depth,
            shortcut: Shortcut::default(),
            num_classes: 10,
            base_width: 16,
        }
    }

    /// The same config with another shortcut type.
    pub fn with_shortcut(mut self, shortcut: Shortcut) -> Self {
        self.shortcut = shortcut;
        self
    }

    /// ResNet-20 (n = 3), option A, 10 classes: 269,722 parameters.
    pub fn resnet20() -> Self {
        Self::with_depth(20)
    }

    /// ResNet-32 (n = 5), option A, 10 classes.
    pub fn resnet32() -> Self {
        Self::with_depth(32)
    }

    /// ResNet-44 (n = 7), option A, 10 classes.
    pub fn resnet44() -> Self {
        Self::with_depth(44)
    }

    /// ResNet-56 (n = 9), option A, 10 classes.
    pub fn resnet56() -> Self {
        Self::with_depth(56)
    }

    /// ResNet-110 (n = 18), option A, 10 classes.
    pub fn resnet110() -> Self {
        Self::with_depth(110)
    }

    /// Checks that `depth` is `6n + 2` with `n >= 1`, that `num_classes` and `base_width` are
    /// positive, and that `base_width` is even with option A (whose shortcut pads half the
    /// new channels on each side).
    pub fn validate(&self) -> candle_core::Result<()> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            candle_core::bail!(
                "invalid ResNet config: `depth` must be 6n + 2 with n >= 1 \
                 (8, 14, 20, 32, 44, 56, 110, ...), got {}",
                self.depth
            );
        }
        if self.num_classes == 0 {
            candle_core::bail!("invalid ResNet config: `num_classes` must be at least 1, got 0");
        }
        if self.base_width == 0 {
            candle_core::bail!("invalid ResNet config: `base_width` must be at least 1, got 0");
        }
        if self.shortcut == Shortcut::IdentityPad && !self.base_width.is_multiple_of(2) {
            candle_core::bail!(
                "invalid ResNet config: `base_width` must be even with shortcut option A \
                 (identity_pad), got {}",
                self.base_width
            );
        }
        Ok(())
    }

    /// Blocks per stage, `n = (depth - 2) / 6` (meaningful once [`validate`](Self::validate)
    /// has passed).
    pub fn n(&self) -> usize {
        self.depth.saturating_sub(2) / 6
    }

    /// Output channels of stage `stage` (0, 1 or 2): `base_width << stage`.
    pub fn stage_width(&self, stage: usize) -> usize {
        self.base_width << stage
    }

    /// A short name such as `resnet20-a`.
    pub fn name(&self) -> String {
        format!("resnet{}-{}", self.depth, self.shortcut.letter())
    }
}
