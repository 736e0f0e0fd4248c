//! The confusion matrix as a heatmap, for `tdmr eval --plot`.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::*;

/// `confusion[true][predicted]` as a heatmap of row-normalised recall (cividis-like
/// ramp, readable without red–green), with the counts written in the cells.
pub fn confusion_plot(classes: &[String], confusion: &[Vec<usize>], title: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let n = classes.len().max(1);
    let cell = (560 / n as u32).clamp(28, 64);
    let side = cell * n as u32;
    let size = (side + 260, side + 200);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("confusion matrix", e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, font(17))
            .margin(14)
            .margin_right(130)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..n as f64, n as f64..0f64)
            .map_err(|e| plot_err("confusion matrix", e))?;
        let label = |x: &f64| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                classes.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * n + 1)
            .y_labels(2 * n + 1)
            .x_label_formatter(&label)
            .y_label_formatter(&label)
            .x_desc("predicted class")
            .y_desc("true class")
            .label_style(font(12))
            .axis_desc_style(font(14))
            .draw()
            .map_err(|e| plot_err("confusion matrix", e))?;
        let mut cells = Vec::new();
        let mut counts = Vec::new();
        for (t, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (p, &c) in row.iter().enumerate() {
                let frac = if total == 0 { 0.0 } else { c as f64 / total as f64 };
                let fill = ramp(frac);
                cells.push(Rectangle::new(
                    [(p as f64, t as f64), (p as f64 + 1.0, t as f64 + 1.0)],
                    fill.filled(),
                ));
                let ink: &'static RGBColor = if frac > 0.55 { &BLACK } else { &WHITE };
                counts.push(Text::new(
                    c.to_string(),
                    (p as f64 + 0.5, t as f64 + 0.5),
                    font(12).color(ink).pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    )),
                ));
            }
        }
        chart.draw_series(cells).map_err(|e| plot_err("confusion matrix", e))?;
        chart.draw_series(counts).map_err(|e| plot_err("confusion matrix", e))?;
        // The colour scale, as ten swatches to the right of the matrix.
        let (x0, y0) = (size.0 as i32 - 100, 80);
        let swatch = (side as i32 / 10).max(12);
        for i in 0..10 {
            let frac = 1.0 - i as f64 / 9.0;
            root.draw(&Rectangle::new(
                [(x0, y0 + i * swatch), (x0 + 18, y0 + (i + 1) * swatch)],
                ramp(frac).filled(),
            ))
            .map_err(|e| plot_err("confusion matrix", e))?;
        }
        root.draw(&Text::new("recall", (x0 - 4, y0 - 34), font(12)))
            .map_err(|e| plot_err("confusion matrix", e))?;
        root.draw(&Text::new("100%", (x0 + 24, y0 + 2), font(12)))
            .map_err(|e| plot_err("confusion matrix", e))?;
        root.draw(&Text::new("0%", (x0 + 24, y0 + 10 * swatch - 12), font(12)))
            .map_err(|e| plot_err("confusion matrix", e))?;
        root.present().map_err(|e| plot_err("confusion matrix", e))?;
    }
    save(&svg, stem, size)
}

/// Dark blue to yellow through grey (cividis's ends), monotone in lightness.
fn ramp(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let stops = [(0.0, (0u8, 34u8, 78u8)), (0.5, (124, 123, 120)), (1.0, (254, 232, 56))];
    let (a, b) = if t <= 0.5 { (stops[0], stops[1]) } else { (stops[1], stops[2]) };
    let u = (t - a.0) / (b.0 - a.0);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * u).round() as u8;
    RGBColor(mix(a.1 .0, b.1 .0), mix(a.1 .1, b.1 .1), mix(a.1 .2, b.1 .2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_monotone_in_lightness() {
        let light = |c: RGBColor| 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
        let l: Vec<f64> = (0..=20).map(|i| light(ramp(i as f64 / 20.0))).collect();
        assert!(l.windows(2).all(|w| w[1] > w[0]), "{l:?}");
    }
}
