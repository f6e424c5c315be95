//! SVG plots with `plotters` (SVG backend, its naive text layout: no system font library
//! needed): loss curves per arm from each run's `metrics.jsonl`, the score per arm, and
//! the gradient cosines per decoder layer.

use std::path::Path;

use plotters::prelude::*;

use crate::{BenchError, BenchReport};

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend label.
    pub label: String,
    /// `(x, y)` points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// `(step, value)` of `key` in a run's `metrics.jsonl`: the step lines' `loss`, or one of
/// their `components` (`flow`, `caption`, ...), or an evaluation line's value (`eval_flow`,
/// ...). Lines without it and non-finite values (`null`) are left out.
pub fn metric_series(path: &Path, key: &str) -> Result<Vec<(f64, f64)>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io("read", path, e))?;
    let mut points = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| BenchError::Metrics {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?;
        let Some(step) = value.get("step").and_then(serde_json::Value::as_f64) else {
            continue;
        };
        let found = match key {
            "loss" => value.get("loss"),
            _ => value
                .get("components")
                .and_then(|c| c.get(key))
                .or_else(|| value.get("eval").and_then(|e| e.get(key))),
        };
        if let Some(y) = found
            .and_then(serde_json::Value::as_f64)
            .filter(|y| y.is_finite())
        {
            points.push((step, y));
        }
    }
    Ok(points)
}

fn plot_error(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |reason| BenchError::Plot {
        path: path.to_path_buf(),
        reason,
    }
}

/// Line plot of `series`; `y_range` fixes the y axis (else it spans the data).
fn plot_lines(
    series: &[Series],
    title: &str,
    (x_desc, y_desc): (&str, &str),
    y_range: Option<(f64, f64)>,
    path: &Path,
) -> Result<(), BenchError> {
    let error = plot_error(path);
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(finite).collect();
    let (x_min, x_max) = bounds(all.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (y_min, y_max) = y_range
        .or_else(|| bounds(all.iter().map(|p| p.1)))
        .unwrap_or((0.0, 1.0));
    let pad = 0.05 * (y_max - y_min).max(1e-6);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max.max(x_min + 1.0), y_min - pad..y_max + pad)
        .map_err(|e| error(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| error(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(finite(s), color.stroke_width(2)))
            .map_err(|e| error(e.to_string()))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(e.to_string()))?;
    root.present().map_err(|e| error(e.to_string()))
}

/// The smallest and largest of `values` (`None` when empty).
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Training loss curves, one line per run, as log10 of the loss (non-positive values are
/// left out): the curves of a run span orders of magnitude.
pub fn plot_loss_curves(series: &[Series], title: &str, path: &Path) -> Result<(), BenchError> {
    let logged: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s
                .points
                .iter()
                .filter(|(_, y)| *y > 0.0)
                .map(|&(x, y)| (x, y.log10()))
                .collect(),
        })
        .collect();
    plot_lines(&logged, title, ("step", "log10 loss"), None, path)
}

/// Gradient cosines per decoder layer (the paper's Figure 8), one line per arm and term.
pub fn plot_alignment(series: &[Series], path: &Path) -> Result<(), BenchError> {
    plot_lines(
        series,
        "cosine with the flow-matching gradient, generation expert",
        ("decoder layer", "cosine"),
        Some((-1.0, 1.0)),
        path,
    )
}

/// Gradient cosines during training, one line per arm and term (x: the step).
pub fn plot_alignment_training(series: &[Series], path: &Path) -> Result<(), BenchError> {
    plot_lines(
        series,
        "cosine with the flow-matching gradient during training (mean over layers)",
        ("step", "cosine"),
        Some((-1.0, 1.0)),
        path,
    )
}

/// The overall score per arm as bars (mean over seeds, a whisker of one standard
/// deviation each way), with the ground truth's accuracy as a line.
pub fn plot_scores(report: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let error = plot_error(path);
    let n = report.rows.len().max(1);
    let labels: Vec<&str> = report.rows.iter().map(|r| r.arm.label()).collect();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ShapesBench overall accuracy, preset {}", report.preset),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0.0f64..1.05)
        .map_err(|e| error(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            match (i >= 0.0 && (x - i).abs() < 1e-6).then(|| labels.get(i as usize)) {
                Some(Some(label)) => label.to_string(),
                _ => String::new(),
            }
        })
        .y_desc("accuracy")
        .draw()
        .map_err(|e| error(e.to_string()))?;
    let bar = Palette99::pick(0).to_rgba();
    chart
        .draw_series(report.rows.iter().enumerate().map(|(i, row)| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, row.overall.mean)], bar.filled())
        }))
        .map_err(|e| error(e.to_string()))?
        .label("overall (mean over seeds)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], bar.filled()));
    chart
        .draw_series(report.rows.iter().enumerate().map(|(i, row)| {
            let (x, s) = (i as f64, row.overall);
            PathElement::new(
                vec![
                    (x, (s.mean - s.std).max(0.0)),
                    (x, (s.mean + s.std).min(1.05)),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(|e| error(e.to_string()))?;
    if let Some(gt) = report.ground_truth.overall() {
        let red = RED.to_rgba();
        chart
            .draw_series(LineSeries::new(
                [(-0.5, gt), (n as f64 - 0.5, gt)],
                red.stroke_width(2),
            ))
            .map_err(|e| error(e.to_string()))?
            .label("ground truth (judge)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(e.to_string()))?;
    root.present().map_err(|e| error(e.to_string()))
}
