//! The benchmark's report: per arm, per category and overall, the mean and standard
//! deviation over seeds, as a markdown table like the paper's Table 7 and as JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uno_core::data::shapes::{BenchScores, Category};

use crate::{Arm, BenchError, CaptionAccuracy};

/// The judged images of one arm under one training seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmScores {
    /// The arm.
    pub arm: Arm,
    /// The stage 2 training seed.
    pub seed: u64,
    /// Correct / judged per category.
    pub scores: BenchScores,
    /// Images with non-finite pixels (a diverged run), counted wrong.
    pub non_finite: usize,
}

/// Mean and standard deviation of one figure over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (`n - 1` in the denominator); 0 for one value.
    pub std: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (`None` when there are none).
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, std, n })
    }

    /// `mean ± std` in percent, one decimal.
    fn percent(&self) -> String {
        format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.std)
    }
}

/// One row of the table: an arm's accuracies over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmRow {
    /// The arm.
    pub arm: Arm,
    /// Per category judged in every seed.
    pub per_category: BTreeMap<Category, Spread>,
    /// GenEval's overall score (the mean of the category accuracies), over seeds.
    pub overall: Spread,
    /// Images with non-finite pixels, summed over seeds.
    pub non_finite: usize,
}

/// Everything the benchmark reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The preset's name (`smoke`, `full`, ...).
    pub preset: String,
    /// The judge on the benchmark's own ground-truth renders of the same prompts, seeds
    /// and size: the ceiling of every row.
    pub ground_truth: BenchScores,
    /// Stage 1's caption accuracy on held-out scenes, when measured.
    pub caption: Option<CaptionAccuracy>,
    /// One row per arm, in [`Arm::ALL`] order.
    pub rows: Vec<ArmRow>,
    /// Every arm and seed, as judged.
    pub runs: Vec<ArmScores>,
    /// Wall time of the whole benchmark, when measured.
    pub wall_time_s: Option<f64>,
}

impl BenchReport {
    /// Aggregate `runs` per arm (mean and standard deviation over their seeds).
    pub fn new(
        preset: &str,
        ground_truth: BenchScores,
        caption: Option<CaptionAccuracy>,
        runs: Vec<ArmScores>,
    ) -> Self {
        let rows = Arm::ALL
            .into_iter()
            .filter_map(|arm| {
                let of_arm: Vec<&ArmScores> = runs.iter().filter(|r| r.arm == arm).collect();
                let overall: Vec<f64> = of_arm.iter().filter_map(|r| r.scores.overall()).collect();
                let overall = Spread::of(&overall)?;
                let per_category = Category::ALL
                    .into_iter()
                    .filter_map(|c| {
                        let values: Vec<f64> =
                            of_arm.iter().filter_map(|r| r.scores.accuracy(c)).collect();
                        Some((c, Spread::of(&values)?))
                    })
                    .collect();
                Some(ArmRow {
                    arm,
                    per_category,
                    overall,
                    non_finite: of_arm.iter().map(|r| r.non_finite).sum(),
                })
            })
            .collect();
        Self {
            preset: preset.to_string(),
            ground_truth,
            caption,
            rows,
            runs,
            wall_time_s: None,
        }
    }

    /// The table: arms as rows, the six categories and the overall score as columns,
    /// `mean ± std` in percent over seeds; the ground truth's accuracy as the first row.
    pub fn to_markdown(&self) -> String {
        let seeds = self.rows.iter().map(|r| r.overall.n).max().unwrap_or(0);
        let mut out = format!(
            "ShapesBench, preset `{}`: accuracy in %, mean ± std over {seeds} seed(s)\n\n",
            self.preset
        );
        let header: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
        out += &format!("| arm | {} | overall |\n", header.join(" | "));
        out += &format!("|---|{}---|\n", "---|".repeat(header.len()));
        let cell = |s: Option<f64>| s.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
        out += &format!(
            "| ground truth (judge) | {} | {} |\n",
            Category::ALL
                .iter()
                .map(|&c| cell(self.ground_truth.accuracy(c)))
                .collect::<Vec<_>>()
                .join(" | "),
            cell(self.ground_truth.overall())
        );
        for row in &self.rows {
            let cells: Vec<String> = Category::ALL
                .iter()
                .map(|c| row.per_category.get(c).map_or("-".into(), Spread::percent))
                .collect();
            out += &format!(
                "| {} | {} | {} |\n",
                row.arm.label(),
                cells.join(" | "),
                row.overall.percent()
            );
        }
        let non_finite: usize = self.rows.iter().map(|r| r.non_finite).sum();
        if non_finite > 0 {
            out += &format!("\n{non_finite} image(s) had non-finite pixels and count as wrong.\n");
        }
        if let Some(c) = &self.caption {
            out += &format!(
                "\nStage 1 captions of {} held-out scenes: exact match {:.1} %, word accuracy {:.1} %.\n",
                c.captions,
                100.0 * c.exact_match,
                100.0 * c.token_accuracy
            );
        }
        if let Some(t) = self.wall_time_s {
            out += &format!("\nWall time: {t:.0} s.\n");
        }
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|source| BenchError::Serialize {
            name: "the report",
            source,
        })
    }

    /// Write `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), BenchError> {
        for (name, text) in [
            ("results.md", self.to_markdown()),
            ("results.json", self.to_json()?),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| BenchError::io("write", path, e))?;
        }
        Ok(())
    }
}
