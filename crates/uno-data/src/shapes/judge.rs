//! Scoring an image against a prompt spec as GenEval does: 1 when every constraint holds.

use super::{Category, Detection, PixelJudge, PromptSpec};
use crate::RgbImage;

impl PixelJudge {
    /// Whether `image` shows what `spec` asks for ([`Self::satisfied`] on [`Self::detect`]).
    pub fn score(&self, image: &RgbImage, spec: &PromptSpec) -> bool {
        let side = image.height.max(image.width) as f32;
        self.satisfied(spec, &self.detect(image), side)
    }

    /// GenEval's rules on detected objects:
    /// * every object phrase is matched by at least `count` detections of its shape (and
    ///   of its colour when the prompt names one), so extra objects are allowed;
    /// * [`Category::Counting`] asks for exactly `count` objects of the shape;
    /// * a relation holds between some detection matching the first phrase and another
    ///   matching the second, by more than `position_margin * side` pixels.
    pub fn satisfied(&self, spec: &PromptSpec, detections: &[Detection], side: f32) -> bool {
        let matching = |i: usize| -> Vec<&Detection> {
            let object = &spec.objects[i];
            detections
                .iter()
                .filter(|d| d.shape == object.shape && object.color.is_none_or(|c| c == d.color))
                .collect()
        };
        let counts_hold = spec.objects.iter().enumerate().all(|(i, object)| {
            let found = matching(i).len();
            match spec.category {
                Category::Counting => found == object.count,
                _ => found >= object.count,
            }
        });
        let relation_holds = match (spec.relation, spec.objects.len()) {
            (None, _) => true,
            (Some(relation), 2) => {
                let (first, second) = (matching(0), matching(1));
                first.iter().any(|a| {
                    second.iter().any(|b| {
                        !std::ptr::eq(*a, *b)
                            && relation.holds(a.centroid, b.centroid, self.position_margin * side)
                    })
                })
            }
            (Some(_), _) => false,
        };
        counts_hold && relation_holds
    }
}
