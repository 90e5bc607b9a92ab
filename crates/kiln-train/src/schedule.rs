//! Learning-rate schedules as pure functions of the global step, so a resumed run computes the
//! same rate at the same step with no scheduler state to save.

use crate::config::{ScheduleConfig, ScheduleKind};

/// The learning rate at optimizer step `step` (0-based) of a run of `total_steps` steps with
/// `steps_per_epoch` steps per epoch and peak rate `peak`.
#[must_use]
pub fn learning_rate(
    config: &ScheduleConfig,
    peak: f64,
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
) -> f64 {
    let warmup = (config.warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    match config.kind {
        ScheduleKind::Constant => peak,
        ScheduleKind::Step => {
            let epoch = step / steps_per_epoch.max(1);
            let decays = epoch / config.step_epochs.max(1) as u64;
            peak * config.gamma.powi(i32::try_from(decays).unwrap_or(i32::MAX))
        }
        ScheduleKind::Cosine => {
            let span = total_steps.saturating_sub(warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).min(1.0);
            let floor = peak * config.min_lr_fraction;
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_the_floor() {
        let c = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            min_lr_fraction: 0.1,
            ..Default::default()
        };
        assert!((learning_rate(&c, 1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&c, 1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&c, 1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&c, 1.0, 100, 10, 100) - 0.1).abs() < 1e-12);
        let mid = learning_rate(&c, 1.0, 55, 10, 100);
        assert!((mid - 0.55).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn step_decays_every_n_epochs() {
        let c = ScheduleConfig {
            kind: ScheduleKind::Step,
            step_epochs: 2,
            gamma: 0.5,
            ..Default::default()
        };
        assert_eq!(learning_rate(&c, 1.0, 19, 10, 100), 1.0);
        assert_eq!(learning_rate(&c, 1.0, 20, 10, 100), 0.5);
        assert_eq!(learning_rate(&c, 1.0, 40, 10, 100), 0.25);
    }
}
