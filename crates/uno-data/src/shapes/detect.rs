//! Pixels to objects: every pixel far enough from the background grey takes the palette
//! colour it is a shade of, pixels of one colour that touch form an object, and an object's
//! outline gives its shape.
//!
//! Why not `imageproc`'s `connected_components`: it would add `nalgebra`, `ab_glyph` and
//! `rayon` to the data crate for a flood fill over images of a few thousand pixels, and we
//! need per-component features (bounding box, row profile) that it does not compute anyway.

use serde::{Deserialize, Serialize};

use super::Color;
use crate::synthetic::BACKGROUND;
use crate::{RgbImage, ShapeKind};

/// The judge's thresholds. The defaults are the benchmark's: fixed before any model is
/// judged, and tested on ground-truth renders (clean, noisy and blurred) of every category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixelJudge {
    /// A pixel closer than this to the background grey (Euclidean RGB distance, values in
    /// `[0, 1]`) is background. Palette colours are 0.8 to 1.1 from it, so a shape's edge
    /// blurred to about a third into the background still counts as the shape.
    pub foreground_threshold: f32,
    /// Objects smaller than this fraction of the image are noise, not objects. A drawn
    /// shape covers about 2.3 % (triangle) to 5 % (circle) of the image.
    pub min_area_fraction: f32,
    /// A relative position holds when the centroids differ by more than this fraction of
    /// the image side along its axis (neighbouring cells are a third apart).
    pub position_margin: f32,
    /// An object whose upper half holds less than this fraction of the pixels of its lower
    /// half is a triangle (apex up: a third; circles and squares: 1). Halves rather than
    /// thinner bands, so that a blurred, eroded apex still counts.
    pub triangle_taper: f32,
    /// A non-triangle filling at least this fraction of its bounding box is a square
    /// (squares 1, circles about pi / 4).
    pub square_fill: f32,
}

impl Default for PixelJudge {
    fn default() -> Self {
        Self {
            foreground_threshold: 0.35,
            min_area_fraction: 0.008,
            position_margin: 0.1,
            triangle_taper: 0.6,
            square_fill: 0.88,
        }
    }
}

/// One object found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Its colour.
    pub color: Color,
    /// Its shape.
    pub shape: ShapeKind,
    /// Pixels.
    pub area: usize,
    /// Mean `[row, col]` of its pixels, in pixels.
    pub centroid: [f32; 2],
}

impl PixelJudge {
    /// The objects of `image`, in raster order of their first pixel.
    pub fn detect(&self, image: &RgbImage) -> Vec<Detection> {
        let (height, width) = (image.height, image.width);
        let labels: Vec<Option<Color>> = (0..height * width)
            .map(|i| {
                let rgb = [0, 1, 2].map(|c| image.get(c, i / width, i % width));
                self.pixel_color(rgb)
            })
            .collect();
        let min_area = self.min_area_fraction * (height * width) as f32;
        let mut seen = vec![false; labels.len()];
        let mut detections = Vec::new();
        for start in 0..labels.len() {
            let Some(color) = labels[start] else { continue };
            if seen[start] {
                continue;
            }
            let pixels = flood_fill(&labels, &mut seen, width, start);
            if (pixels.len() as f32) < min_area {
                continue;
            }
            detections.push(Detection {
                color,
                shape: self.shape_of(&pixels, width),
                area: pixels.len(),
                centroid: centroid(&pixels, width),
            });
        }
        detections
    }

    /// The palette colour of a pixel, `None` for background: the colour whose offset from
    /// the background points the most the same way as the pixel's. A blur mixes a colour
    /// with the background, which shortens its offset but keeps its direction; the nearest
    /// colour would instead call the blurred edge of an orange shape yellow.
    fn pixel_color(&self, rgb: [f32; 3]) -> Option<Color> {
        let offset = |c: [f32; 3]| [0, 1, 2].map(|i| c[i] - BACKGROUND[i]);
        let dot = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let pixel = offset(rgb);
        if dot(pixel, pixel).sqrt() < self.foreground_threshold {
            return None;
        }
        let cosine = |c: Color| {
            let color = offset(c.rgb());
            dot(pixel, color) / dot(color, color).sqrt()
        };
        Color::ALL
            .into_iter()
            .max_by(|a, b| cosine(*a).total_cmp(&cosine(*b)))
    }

    /// Triangle when the upper half of the bounding box is much emptier than the lower half
    /// (apex up), else square or circle by how much of the box the object fills.
    fn shape_of(&self, pixels: &[usize], width: usize) -> ShapeKind {
        let rows = || pixels.iter().map(move |p| p / width);
        let cols = || pixels.iter().map(move |p| p % width);
        let (top, bottom) = (rows().min().unwrap_or(0), rows().max().unwrap_or(0));
        let (left, right) = (cols().min().unwrap_or(0), cols().max().unwrap_or(0));
        let height = (bottom - top + 1) as f32;
        let box_area = height * (right - left + 1) as f32;
        // A middle row (odd height) counts half to each side.
        let (mut upper, mut lower) = (0.0f32, 0.0f32);
        for row in rows() {
            let twice = 2 * (row - top) + 1;
            match twice.cmp(&(bottom - top + 1)) {
                std::cmp::Ordering::Less => upper += 1.0,
                std::cmp::Ordering::Greater => lower += 1.0,
                std::cmp::Ordering::Equal => (upper, lower) = (upper + 0.5, lower + 0.5),
            }
        }
        if upper < self.triangle_taper * lower {
            ShapeKind::Triangle
        } else if pixels.len() as f32 >= self.square_fill * box_area {
            ShapeKind::Square
        } else {
            ShapeKind::Circle
        }
    }
}

/// The pixels 4-connected to `start` that share its label, marked as seen.
fn flood_fill(
    labels: &[Option<Color>],
    seen: &mut [bool],
    width: usize,
    start: usize,
) -> Vec<usize> {
    let height = labels.len() / width;
    let label = labels[start];
    let mut pixels = Vec::new();
    let mut stack = vec![start];
    seen[start] = true;
    while let Some(p) = stack.pop() {
        pixels.push(p);
        let (row, col) = (p / width, p % width);
        let neighbours = [
            (row > 0).then(|| p - width),
            (row + 1 < height).then(|| p + width),
            (col > 0).then(|| p - 1),
            (col + 1 < width).then(|| p + 1),
        ];
        for q in neighbours.into_iter().flatten() {
            if !seen[q] && labels[q] == label {
                seen[q] = true;
                stack.push(q);
            }
        }
    }
    pixels
}

/// Mean `[row, col]` of pixel centres.
fn centroid(pixels: &[usize], width: usize) -> [f32; 2] {
    let n = pixels.len() as f32;
    let sum = pixels.iter().fold([0.0f32; 2], |[r, c], p| {
        [r + (p / width) as f32 + 0.5, c + (p % width) as f32 + 0.5]
    });
    [sum[0] / n, sum[1] / n]
}
