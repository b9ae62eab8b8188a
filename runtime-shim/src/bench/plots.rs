//! SVG plots of a group's figures (plotters, SVG backend only): the distribution of every
//! latency metric's samples, hull beside runc (log scale when the figures span a wide range),
//! and memory per idle pod against the pod count.

use std::path::Path;

use plotters::prelude::*;

use super::{BenchError, GroupResult, Metric};

const HULL_COLOR: RGBColor = RGBColor(200, 40, 40);
const RUNC_COLOR: RGBColor = RGBColor(40, 80, 200);
const WIDTH: u32 = 900;
const CHART_HEIGHT: u32 = 420;
const LINE: u32 = 16;

/// Draws the group's plot into `dir` (none for a skipped group or one without samples) and
/// records its file name in the group.
pub fn draw(dir: &Path, group: &mut GroupResult) -> Result<(), BenchError> {
    if group.skipped.is_some() {
        return Ok(());
    }
    let file = format!("{}.svg", group.name);
    let path = dir.join(&file);
    let drawn = if group.name == "memory" {
        memory_plot(&path, group)
    } else {
        distribution_plot(&path, group)
    };
    match drawn {
        Ok(true) => {
            group.plots.push(file);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(detail) => Err(BenchError::Plot { path, detail }),
    }
}

fn samples(m: &Metric) -> [(&'static str, RGBColor, Vec<f64>); 2] {
    let of = |s: &Option<super::stats::Summary>| {
        s.as_ref().map(|s| s.samples.clone()).unwrap_or_default()
    };
    [
        ("hull", HULL_COLOR, of(&m.hull)),
        ("runc", RUNC_COLOR, of(&m.runc)),
    ]
}

/// Each metric a column, hull's samples on its left, runc's on its right, medians as bars.
fn distribution_plot(path: &Path, group: &GroupResult) -> Result<bool, String> {
    let metrics: Vec<&Metric> = group
        .metrics
        .iter()
        .filter(|m| m.unit == "ms" && (m.hull.is_some() || m.runc.is_some()))
        .collect();
    let values: Vec<f64> = metrics
        .iter()
        .flat_map(|m| samples(m).into_iter().flat_map(|(_, _, v)| v))
        .filter(|v| *v > 0.0)
        .collect();
    if values.is_empty() {
        return Ok(false);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let legend_lines = metrics.len() as u32 + 2;
    let height = CHART_HEIGHT + LINE * legend_lines;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(CHART_HEIGHT);
    let caption = format!("{}: {} [{}]", group.name, group.title, group.where_);
    let columns = metrics.len() as f64;
    let mut builder = ChartBuilder::on(&upper);
    builder
        .caption(caption, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(24)
        .y_label_area_size(64);
    let points = |chart_points: &mut Vec<(f64, f64, RGBColor)>| {
        for (i, m) in metrics.iter().enumerate() {
            for (side, (_, color, v)) in samples(m).into_iter().enumerate() {
                let x = i as f64 + 0.3 + 0.4 * side as f64;
                for (j, y) in v.iter().enumerate() {
                    // A little spread so equal samples stay visible.
                    let jitter = ((j % 5) as f64 - 2.0) * 0.02;
                    chart_points.push((x + jitter, *y, color));
                }
            }
        }
    };
    let mut all = Vec::new();
    points(&mut all);
    let medians: Vec<(f64, f64, RGBColor)> = metrics
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            [(&m.hull, 0.3, HULL_COLOR), (&m.runc, 0.7, RUNC_COLOR)]
                .into_iter()
                .filter_map(move |(s, dx, c)| s.as_ref().map(|s| (i as f64 + dx, s.median, c)))
        })
        .collect();
    let label = |x: &f64| {
        let i = x.floor();
        if (x - i - 0.5).abs() < 0.01 {
            format!("{}", i as usize + 1)
        } else {
            String::new()
        }
    };
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels(metrics.len() * 2 + 1)
                .x_label_formatter(&label)
                .disable_x_mesh()
                .y_desc("ms")
                .draw()
                .map_err(|e| e.to_string())?;
            for (name, color) in [("hull", HULL_COLOR), ("runc", RUNC_COLOR)] {
                chart
                    .draw_series(
                        all.iter()
                            .filter(|p| p.2 == color)
                            .map(|p| Circle::new((p.0, p.1), 3, color.mix(0.6).filled())),
                    )
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
            }
            chart
                .draw_series(medians.iter().map(|p| {
                    PathElement::new(
                        vec![(p.0 - 0.15, p.1), (p.0 + 0.15, p.1)],
                        p.2.stroke_width(2),
                    )
                }))
                .map_err(|e| e.to_string())?;
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if hi / lo > 20.0 {
        finish!(builder
            .build_cartesian_2d(0f64..columns, (lo * 0.8..hi * 1.25).log_scale())
            .map_err(|e| e.to_string())?);
    } else {
        finish!(builder
            .build_cartesian_2d(0f64..columns, 0f64..hi * 1.1)
            .map_err(|e| e.to_string())?);
    }
    let mut text = vec!["columns (bar = median):".to_string()];
    text.extend(
        metrics
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}: {}", i + 1, m.name)),
    );
    for (k, line) in text.iter().enumerate() {
        lower
            .draw(&Text::new(
                line.clone(),
                (16, (k as u32 * LINE) as i32 + 4),
                ("sans-serif", 12),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

/// A line of the memory plot: runtime, colour, (pod count, MiB) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Median PSS per idle pod against the pod count, a line per runtime.
fn memory_plot(path: &Path, group: &GroupResult) -> Result<bool, String> {
    let mut series: [Series; 2] = [
        ("hull", HULL_COLOR, Vec::new()),
        ("runc", RUNC_COLOR, Vec::new()),
    ];
    for m in group.metrics.iter().filter(|m| m.unit == "MiB") {
        let Some(count) = pod_count(&m.name) else {
            continue;
        };
        for (k, s) in [&m.hull, &m.runc].into_iter().enumerate() {
            if let Some(s) = s {
                series[k].2.push((count, s.median));
            }
        }
    }
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.clone()).collect();
    if points.is_empty() {
        return Ok(false);
    }
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (WIDTH, CHART_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("host memory per idle pod (PSS) [{}]", group.where_),
            ("sans-serif", 14),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_x + 1.0, 0f64..max_y * 1.2)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("idle pods")
        .y_desc("MiB per pod (median)")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, line) in series {
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(line.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

/// The pod count in a memory metric's name ("PSS per idle pod, 5 pod(s)").
pub fn pod_count(name: &str) -> Option<f64> {
    let rest = name.split(", ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
