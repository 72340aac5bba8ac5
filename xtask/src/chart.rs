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

/// Draws `bars` as a horizontal bar chart into `path`.
pub fn horizontal_bars(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    let max = bars.iter().map(|b| b.value_k).fold(1.0, f64::max) * 1.15;
    let height = 60 + 26 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..max, 0..n)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|i| {
            bars.get((n - 1 - *i) as usize)
                .map(|b| b.label.clone())
                .unwrap_or_default()
        })
        .x_desc("thousand guest instructions per connect, above baseline")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = n - 1 - i as i32;
            Rectangle::new([(0.0, y), (b.value_k, y + 1)], b.color.filled())
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = n - 1 - i as i32;
            Text::new(
                format!("{:.1}k", b.value_k),
                (b.value_k + max * 0.01, y + 1),
                ("sans-serif", 13),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
