//! [`RunningStats`]: the training loop's sums over an epoch or a logging window (saved in
//! checkpoints, so a resumed run reports the same epoch figures).

use serde::{Deserialize, Serialize};

/// Sums over a stretch of training steps (an epoch, or a logging window).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningStats {
    /// Sum over steps of `loss * batch size`.
    pub loss_sum: f64,
    /// Correctly classified training images (top-1, before the step's update).
    pub correct: u64,
    /// Images seen.
    pub images: u64,
    /// Steps taken.
    pub steps: u64,
    /// Seconds spent in those steps (data wait included, evaluation excluded).
    pub seconds: f64,
}

impl RunningStats {
    /// Adds one step.
    pub fn add(&mut self, loss: f32, correct: u64, images: u64, seconds: f64) {
        self.loss_sum += f64::from(loss) * images as f64;
        self.correct += correct;
        self.images += images;
        self.steps += 1;
        self.seconds += seconds;
    }

    /// Mean loss per image.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Top-1 accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }

    /// Training images per second.
    pub fn images_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.images as f64 / self.seconds
        } else {
            0.0
        }
    }
}
