//! Sweeps: a grid of config overrides, or a seeded random sample of it, one trial per point.
//!
//! Trials are numbered deterministically from the plan alone, so any scheduler (local child
//! processes, a Kubernetes Indexed Job, a Slurm array) can run any subset in any order, and a
//! sweep stopped anywhere resumes by running each unfinished trial again.

use std::path::{Path, PathBuf};

use kiln_data::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// File that holds a sweep's plan and results, in the sweep directory.
pub const SWEEP_FILE: &str = "sweep.json";
/// The resolved base config every trial starts from, in the sweep directory.
pub const BASE_CONFIG: &str = "base.toml";

/// One axis of a grid: a config key and the values it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// Dotted config key, e.g. `training.optimizer.lr`.
    pub key: String,
    /// Values as written after `=` in `--set` (TOML, or a bare string).
    pub values: Vec<String>,
}

impl Axis {
    /// Parses `key=v1,v2,...`. Commas inside brackets or quotes belong to one value, so
    /// `model.hidden=[64,32],[128]` has two values.
    ///
    /// # Errors
    /// [`TrainError::Config`] when there is no `=`, no key or no value.
    pub fn parse(spec: &str) -> Result<Self, TrainError> {
        let bad = |why: &str| TrainError::Config(format!("--grid {spec:?}: {why}"));
        let (key, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected key=v1,v2"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let values = split_top_level(values);
        if values.iter().any(String::is_empty) {
            return Err(bad("empty value"));
        }
        Ok(Self {
            key: key.to_string(),
            values,
        })
    }
}

fn split_top_level(text: &str) -> Vec<String> {
    let (mut out, mut current, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => depth += 1,
            ']' | '}' if !quoted => depth -= 1,
            ',' if depth == 0 && !quoted => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current.trim().to_string());
    out
}

/// What a sweep runs: the grid, and optionally a seeded random sample of its points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The grid's axes, in the order given.
    pub axes: Vec<Axis>,
    /// Run only this many points, drawn without replacement.
    pub random: Option<usize>,
    /// Seed of the draw.
    pub seed: u64,
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based trial number.
    pub index: usize,
    /// `key=value` overrides of this trial.
    pub overrides: Vec<String>,
}

impl Trial {
    /// The trial's experiment name, which is also its directory under the sweep directory.
    #[must_use]
    pub fn name(&self) -> String {
        format!("trial-{:03}", self.index)
    }

    /// The trial's directory under `sweep_dir` (its run directory is inside).
    #[must_use]
    pub fn dir(&self, sweep_dir: &Path) -> PathBuf {
        sweep_dir.join(self.name())
    }
}

impl Plan {
    /// Every trial, numbered: the grid's points in row-major order (the last axis varies
    /// fastest), or the random sample of them in draw order.
    #[must_use]
    pub fn trials(&self) -> Vec<Trial> {
        let mut points: Vec<Vec<String>> = vec![Vec::new()];
        for axis in &self.axes {
            points = points
                .into_iter()
                .flat_map(|point| {
                    axis.values.iter().map(move |v| {
                        let mut next = point.clone();
                        next.push(format!("{}={v}", axis.key));
                        next
                    })
                })
                .collect();
        }
        if let Some(n) = self.random {
            let mut rng = SplitMix64::new(self.seed);
            rng.shuffle(&mut points);
            points.truncate(n);
        }
        points
            .into_iter()
            .enumerate()
            .map(|(index, overrides)| Trial { index, overrides })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(specs: &[&str], random: Option<usize>) -> Plan {
        Plan {
            axes: specs.iter().map(|s| Axis::parse(s).unwrap()).collect(),
            random,
            seed: 3,
        }
    }

    #[test]
    fn a_grid_is_the_product_in_row_major_order() {
        let trials = plan(&["a.x=1,2", "b.y=\"p,q\",[3,4]"], None).trials();
        let got: Vec<Vec<String>> = trials.iter().map(|t| t.overrides.clone()).collect();
        assert_eq!(
            got,
            [
                ["a.x=1", "b.y=\"p,q\""],
                ["a.x=1", "b.y=[3,4]"],
                ["a.x=2", "b.y=\"p,q\""],
                ["a.x=2", "b.y=[3,4]"],
            ]
        );
        assert_eq!(trials[3].name(), "trial-003");
    }

    #[test]
    fn a_random_sample_is_a_deterministic_subset() {
        let all = plan(&["a=1,2,3,4", "b=5,6,7"], None).trials();
        let sample = plan(&["a=1,2,3,4", "b=5,6,7"], Some(5)).trials();
        assert_eq!(sample.len(), 5);
        assert_eq!(sample, plan(&["a=1,2,3,4", "b=5,6,7"], Some(5)).trials());
        for t in &sample {
            assert!(all.iter().any(|a| a.overrides == t.overrides));
        }
        let distinct: std::collections::BTreeSet<_> = sample.iter().map(|t| &t.overrides).collect();
        assert_eq!(distinct.len(), 5, "drawn without replacement");
    }

    #[test]
    fn malformed_axes_are_refused() {
        for spec in ["novalue", "=1,2", "a=1,,2"] {
            assert!(Axis::parse(spec).is_err(), "{spec}");
        }
    }
}
