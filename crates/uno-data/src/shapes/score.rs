//! Per-category aggregation of judged prompts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Category;

/// Correct and judged images per category. The overall score is GenEval's: the mean of the
/// category accuracies, so a category with many prompts does not outweigh the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchScores {
    /// `(correct, judged)` per category that has judged images.
    pub per_category: BTreeMap<Category, (usize, usize)>,
}

impl BenchScores {
    /// Count one judged image.
    pub fn record(&mut self, category: Category, correct: bool) {
        let entry = self.per_category.entry(category).or_default();
        entry.0 += usize::from(correct);
        entry.1 += 1;
    }

    /// Fraction correct in `category`, `None` if none was judged.
    pub fn accuracy(&self, category: Category) -> Option<f64> {
        let &(correct, judged) = self.per_category.get(&category)?;
        Some(correct as f64 / judged as f64)
    }

    /// Mean of the category accuracies over the categories judged, `None` if none was.
    pub fn overall(&self) -> Option<f64> {
        let accuracies: Vec<f64> = Category::ALL
            .iter()
            .filter_map(|&c| self.accuracy(c))
            .collect();
        (!accuracies.is_empty()).then(|| accuracies.iter().sum::<f64>() / accuracies.len() as f64)
    }
}
