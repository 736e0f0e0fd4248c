//! Pictures for reports: loss and accuracy curves of a run, a bar chart of methods over
//! seeds or runs, and a confusion-matrix heatmap. plotters draws SVG; resvg rasterises
//! the same SVG to PNG with the bundled DejaVu Sans, so both files look alike and no
//! system font is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::events::{Event, LossParts};
use super::report::ORDER;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../../themes/fonts/DejaVuSans.ttf");
const FAMILY: &str = "DejaVu Sans";

/// Okabe–Ito: distinguishable with any common colour-vision deficiency.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(86, 180, 233),
    RGBColor(204, 121, 167),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn plot_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Data(format!("drawing {what}: {e}"))
}

/// One epoch of one method, as `metrics.jsonl` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPoint {
    pub stage: String,
    pub epoch: usize,
    pub loss: LossParts,
    pub train_acc: f64,
    pub eval_acc: Option<f64>,
}

/// Each method's epochs in training order. A resumed run replays epochs from its
/// checkpoint; the replay replaces what it repeats.
pub fn epochs_of(run: &Path) -> Result<BTreeMap<String, Vec<EpochPoint>>> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::File {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    let mut out: BTreeMap<String, Vec<EpochPoint>> = BTreeMap::new();
    for line in text.lines() {
        // A line cut short by a crash is the run's last; nothing after it exists.
        let Ok(Event::Epoch {
            method,
            stage,
            epoch,
            loss,
            train_acc,
            test_acc,
            ..
        }) = serde_json::from_str::<Event>(line)
        else {
            continue;
        };
        let points = out.entry(method).or_default();
        if let Some(at) = points.iter().position(|p| p.stage == stage && p.epoch == epoch) {
            points.truncate(at);
        }
        points.push(EpochPoint {
            stage,
            epoch,
            loss,
            train_acc,
            eval_acc: test_acc,
        });
    }
    Ok(out)
}

/// Methods in report order, then any others by name.
fn ordered<T>(map: &BTreeMap<String, T>) -> Vec<(&str, &T)> {
    let mut v: Vec<(&str, &T)> = ORDER
        .iter()
        .filter_map(|m| map.get_key_value(*m).map(|(k, t)| (k.as_str(), t)))
        .collect();
    v.extend(
        map.iter()
            .filter(|(k, _)| !ORDER.contains(&k.as_str()))
            .map(|(k, t)| (k.as_str(), t)),
    );
    v
}

/// Writes `stem.svg` and `stem.png` and returns both paths.
fn save(svg: &str, stem: &Path, size: (u32, u32)) -> Result<Vec<PathBuf>> {
    let (svg_path, png_path) = (stem.with_extension("svg"), stem.with_extension("png"));
    crate::engine::run_dir::write_text_atomic(&svg_path, svg)?;
    let mut opt = resvg::usvg::Options {
        font_family: FAMILY.into(),
        ..Default::default()
    };
    let db = opt.fontdb_mut();
    db.load_font_data(FONT.to_vec());
    db.set_sans_serif_family(FAMILY);
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| plot_err(&svg_path.display().to_string(), e))?;
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.0, size.1).ok_or_else(|| plot_err(&png_path.display().to_string(), "empty image"))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    // Opaque on white, so premultiplied RGBA is plain RGBA.
    let img = image::RgbaImage::from_raw(size.0, size.1, pixmap.take())
        .ok_or_else(|| plot_err(&png_path.display().to_string(), "pixel buffer"))?;
    let tmp = png_path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png).map_err(|e| Error::File {
        path: png_path.clone(),
        msg: e.to_string(),
    })?;
    std::fs::rename(&tmp, &png_path).map_err(|e| Error::File {
        path: png_path.clone(),
        msg: e.to_string(),
    })?;
    Ok(vec![svg_path, png_path])
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

/// A tick label with two significant digits: 0.0031, 0.25, 1.5, 12.
fn tick(v: f64) -> String {
    if v <= 0.0 || v >= 10.0 {
        return format!("{v:.0}");
    }
    let decimals = (1.0 - v.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Where each stage after the first begins, on the all-stages epoch axis.
fn stage_starts(points: &[EpochPoint]) -> Vec<(usize, &str)> {
    let mut v = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if i == 0 || points[i - 1].stage != p.stage {
            v.push((i, p.stage.as_str()));
        }
    }
    v
}

/// A loss term: its legend name, how to read it, its colour.
type Term = (&'static str, fn(&LossParts) -> f64, RGBColor);

/// `loss.svg|png`: one panel per method, the epoch-mean loss and its align, kd and ce
/// terms on a log axis, with the stage boundaries marked.
pub fn loss_plot(runs: &BTreeMap<String, Vec<EpochPoint>>, stem: &Path) -> Result<Vec<PathBuf>> {
    let methods = ordered(runs);
    let cols = 2usize.min(methods.len().max(1));
    let rows = methods.len().div_ceil(cols).max(1);
    let size = (560 * cols as u32, 330 * rows as u32 + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("loss", e))?;
        let root = root
            .titled("Training loss per epoch (mean over the epoch's steps)", font(20))
            .map_err(|e| plot_err("loss", e))?;
        let panels = root.split_evenly((rows, cols));
        for ((method, points), area) in methods.iter().zip(panels.iter()) {
            let terms: [Term; 4] = [
                ("total", |l| l.total, colour(6)),
                ("align", |l| l.align, colour(0)),
                ("kd", |l| l.kd, colour(1)),
                ("ce", |l| l.ce, colour(2)),
            ];
            let values = points
                .iter()
                .flat_map(|p| terms.iter().map(|t| (t.1)(&p.loss)))
                .filter(|v| *v > 0.0);
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo > hi { (1e-3, 1.0) } else { (lo * 0.8, hi * 1.25) };
            let n = points.len().max(2);
            let mut chart = ChartBuilder::on(area)
                .caption(*method, font(16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1f64..n as f64, (lo..hi).log_scale())
                .map_err(|e| plot_err("loss", e))?;
            chart
                .configure_mesh()
                .x_desc("epoch (all stages)")
                .y_desc("loss (log scale)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| tick(*y))
                .label_style(font(12))
                .axis_desc_style(font(13))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| plot_err("loss", e))?;
            for (i, stage) in stage_starts(points) {
                let x = i as f64 + 0.5;
                if i > 0 {
                    chart
                        .draw_series(DashedLineSeries::new([(x, lo), (x, hi)], 4, 4, RGBColor(120, 120, 120).into()))
                        .map_err(|e| plot_err("loss", e))?;
                }
                chart
                    .draw_series([Text::new(
                        stage.to_string(),
                        (x.max(1.0), hi / 1.1),
                        font(11).color(&RGBColor(90, 90, 90)),
                    )])
                    .map_err(|e| plot_err("loss", e))?;
            }
            for (name, get, c) in terms {
                if !points.iter().any(|p| get(&p.loss) > 0.0) || (name != "total" && only_term(points, get)) {
                    continue;
                }
                let line = points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| get(&p.loss) > 0.0)
                    .map(|(i, p)| (i as f64 + 1.0, get(&p.loss)));
                chart
                    .draw_series(LineSeries::new(line, c.stroke_width(2)))
                    .map_err(|e| plot_err("loss", e))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .label_font(font(12))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| plot_err("loss", e))?;
        }
        root.present().map_err(|e| plot_err("loss", e))?;
    }
    save(&svg, stem, size)
}

/// A term equal to the total everywhere (a CE-only method) is the total line again.
fn only_term(points: &[EpochPoint], get: fn(&LossParts) -> f64) -> bool {
    points
        .iter()
        .all(|p| (get(&p.loss) - p.loss.total).abs() <= 1e-12 * p.loss.total.abs().max(1.0))
}

/// `accuracy.svg|png`: training accuracy (solid) and accuracy on `eval_set` (dashed,
/// where evaluated) per epoch, one colour per method.
pub fn accuracy_plot(runs: &BTreeMap<String, Vec<EpochPoint>>, eval_set: &str, stem: &Path) -> Result<Vec<PathBuf>> {
    let size = (1000u32, 560u32);
    let n = runs.values().map(Vec::len).max().unwrap_or(0).max(2);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("accuracy", e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Accuracy per epoch: training views (solid), {eval_set} (dashed)"), font(18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..n as f64, 0f64..100f64)
            .map_err(|e| plot_err("accuracy", e))?;
        chart
            .configure_mesh()
            .x_desc("epoch (all stages of the method)")
            .y_desc("accuracy (%)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(font(13))
            .axis_desc_style(font(14))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| plot_err("accuracy", e))?;
        for (i, (method, points)) in ordered(runs).into_iter().enumerate() {
            let c = colour(i);
            let train = points.iter().enumerate().map(|(j, p)| (j as f64 + 1.0, 100.0 * p.train_acc));
            chart
                .draw_series(LineSeries::new(train, c.stroke_width(2)))
                .map_err(|e| plot_err("accuracy", e))?
                .label(method)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(3)));
            let eval: Vec<(f64, f64)> = points
                .iter()
                .enumerate()
                .filter_map(|(j, p)| p.eval_acc.map(|a| (j as f64 + 1.0, 100.0 * a)))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(eval, 6, 4, c.stroke_width(2)))
                .map_err(|e| plot_err("accuracy", e))?;
        }
        chart
            .configure_series_labels()
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| plot_err("accuracy", e))?;
        root.present().map_err(|e| plot_err("accuracy", e))?;
    }
    save(&svg, stem, size)
}

/// One bar group of [`bar_chart`]: a method's mean and standard deviation (percent) in
/// each series (a seed aggregate, or one per compared run).
pub struct Bars {
    pub method: String,
    pub values: Vec<Option<(f64, f64)>>,
}

/// Bars of methods with ± one standard deviation whiskers; `series` names the bars of
/// each group (one name: a single colour and no legend).
pub fn bar_chart(title: &str, y_desc: &str, series: &[String], groups: &[Bars], stem: &Path) -> Result<Vec<PathBuf>> {
    let size = ((140 * groups.len() as u32).max(600) + 120, 520u32);
    let top = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().map(|(m, s)| m + s))
        .fold(0f64, f64::max);
    let top = (top * 1.15).clamp(10.0, 100.0);
    let k = series.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("bar chart", e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, font(18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..groups.len().max(1) as f64, 0f64..top)
            .map_err(|e| plot_err("bar chart", e))?;
        let names: Vec<String> = groups.iter().map(|g| g.method.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(font(13))
            .axis_desc_style(font(14))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| plot_err("bar chart", e))?;
        let width = 0.8 / k as f64;
        for (s, name) in series.iter().enumerate() {
            let c = colour(s);
            let mut rects = Vec::new();
            let mut whiskers = Vec::new();
            let mut labels = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let Some(Some((mean, std))) = group.values.get(s) else { continue };
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let mid = x0 + width / 2.0;
                rects.push(Rectangle::new([(x0, 0.0), (x0 + width * 0.92, *mean)], c.filled()));
                if *std > 0.0 {
                    let (lo, hi) = ((mean - std).max(0.0), mean + std);
                    let cap = width * 0.2;
                    for seg in [
                        [(mid, lo), (mid, hi)],
                        [(mid - cap, lo), (mid + cap, lo)],
                        [(mid - cap, hi), (mid + cap, hi)],
                    ] {
                        whiskers.push(PathElement::new(seg, BLACK.stroke_width(1)));
                    }
                }
                labels.push(Text::new(format!("{mean:.1}"), (x0, mean + std.max(0.0) + top * 0.01), font(11)));
            }
            let drawn = chart.draw_series(rects).map_err(|e| plot_err("bar chart", e))?;
            if k > 1 {
                drawn
                    .label(name.as_str())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            }
            chart.draw_series(whiskers).map_err(|e| plot_err("bar chart", e))?;
            chart.draw_series(labels).map_err(|e| plot_err("bar chart", e))?;
        }
        if k > 1 {
            chart
                .configure_series_labels()
                .label_font(font(13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| plot_err("bar chart", e))?;
        }
        root.present().map_err(|e| plot_err("bar chart", e))?;
    }
    save(&svg, stem, size)
}

mod confusion;
pub use confusion::confusion_plot;

/// `loss` and `accuracy` pictures of one run directory, beside its `report.md`.
pub fn run_plots(run: &Path, eval_set: &str) -> Result<Vec<PathBuf>> {
    let epochs = epochs_of(run)?;
    let mut files = loss_plot(&epochs, &run.join("loss"))?;
    files.extend(accuracy_plot(&epochs, eval_set, &run.join("accuracy"))?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(method: &str, stage: &str, epoch: usize, loss: f64) -> String {
        serde_json::to_string(&Event::Epoch {
            method: method.into(),
            stage: stage.into(),
            epoch,
            epochs: 3,
            loss: LossParts {
                total: loss,
                ..Default::default()
            },
            lr: 1e-3,
            train_acc: 0.5,
            test_acc: None,
            images_per_s: 1.0,
            gpu_memory_mib: None,
        })
        .unwrap()
    }

    #[test]
    fn a_resumed_runs_replay_replaces_the_epochs_it_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            epoch("tdmr", "align", 1, 3.0),
            epoch("scratch", "train", 1, 9.0),
            epoch("tdmr", "align", 2, 2.0),
            epoch("tdmr", "kd", 1, 1.0),
            // Resumed from the end of align epoch 1: align 2 and kd 1 run again.
            epoch("tdmr", "align", 2, 2.5),
            epoch("tdmr", "kd", 1, 1.5),
            epoch("tdmr", "kd", 2, 0.5),
            "{\"event\":\"epoch\",\"meth".into(),
        ];
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let got = epochs_of(dir.path()).unwrap();
        let tdmr: Vec<(&str, usize, f64)> = got["tdmr"].iter().map(|p| (p.stage.as_str(), p.epoch, p.loss.total)).collect();
        assert_eq!(tdmr, [("align", 1, 3.0), ("align", 2, 2.5), ("kd", 1, 1.5), ("kd", 2, 0.5)]);
        assert_eq!(got["scratch"].len(), 1);
        assert_eq!(stage_starts(&got["tdmr"]), [(0, "align"), (2, "kd")]);
    }

    #[test]
    fn ticks_keep_two_significant_digits() {
        let got: Vec<String> = [0.0031, 0.25, 0.7000000000000001, 1.5, 12.0].iter().map(|v| tick(*v)).collect();
        assert_eq!(got, ["0.0031", "0.25", "0.70", "1.5", "12"]);
    }
}
