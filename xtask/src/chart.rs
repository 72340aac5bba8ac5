//! The SVG bar chart of docs/benchmarks.md.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One bar: a label, a value in thousands of guest instructions per connect, and its colour.
pub struct Bar {
    pub label: String,
    pub value_k: f64,
    pub color: RGBColor,
}

/// Colours of the three kinds of bars.
pub const STAP: RGBColor = RGBColor(200, 80, 60);
pub const PROBE: RGBColor = RGBColor(40, 110, 180);
pub const TARGET: RGBColor = RGBColor(150, 150, 150);

/// Draws `bars` as a horizontal bar chart into `path`, first bar at the top.
pub fn horizontal_bars(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    let max = bars.iter().map(|b| b.value_k).fold(1.0, f64::max) * 1.15;
    let height = 60 + 26 * bars.len() as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = bars.len() as i32;
    // Row i of the chart (counted from the bottom) shows bars[n - 1 - i].
    let bar_at = |row: i32| bars.get((n - 1 - row) as usize);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(390)
        .build_cartesian_2d(0f64..max, (0..n).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) => {
                bar_at(*row).map(|b| b.label.clone()).unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc("thousand guest instructions per connect, above baseline")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series((0..n).filter_map(|row| {
            let b = bar_at(row)?;
            let corners = [
                (0.0, SegmentValue::Exact(row)),
                (b.value_k, SegmentValue::Exact(row + 1)),
            ];
            let mut rect = Rectangle::new(corners, b.color.filled());
            rect.set_margin(3, 3, 0, 0);
            Some(rect)
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series((0..n).filter_map(|row| {
            let b = bar_at(row)?;
            let at = (b.value_k + max * 0.01, SegmentValue::CenterOf(row));
            Some(Text::new(
                format!("{:.1}k", b.value_k),
                at,
                ("sans-serif", 13),
            ))
        }))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
