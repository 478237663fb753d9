//! The report's plots, drawn with plotters as SVG and PNG.
//!
//! Text is laid out (and, in PNGs, rasterised) with DejaVu Sans from the `dejavu` crate,
//! registered once with plotters' `ab_glyph` font table, so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use cgfed_core::{Error, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{human_bytes, preferred_accuracy, Report, RunRecord};

/// Pixel size of every plot.
const SIZE: (u32, u32) = (900, 560);

/// Tableau 10: distinct colours, one per run (cycled beyond ten).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A plot written by [`write_plots`]: `<stem>.svg` and `<stem>.png`.
pub(super) struct Plot {
    /// File name without extension.
    pub stem: &'static str,
    /// Alt text in `report.md`.
    pub title: String,
    /// The line under the plot in `report.md`.
    pub caption: String,
    /// The SVG and the PNG.
    pub files: Vec<PathBuf>,
}

/// Register DejaVu Sans for the families plotters asks for (once per process).
fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for (style, bytes) in [
                (FontStyle::Normal, dejavu::sans::regular()),
                (FontStyle::Bold, dejavu::sans::bold()),
                (FontStyle::Oblique, dejavu::sans::oblique()),
                (FontStyle::Italic, dejavu::sans::oblique()),
            ] {
                // The embedded fonts are valid TrueType; a failure would only leave that
                // style to fall back to the normal one.
                let _ = register_font(family, style, bytes);
            }
        }
    });
}

/// One line (with markers) of a chart.
struct Series {
    label: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// What to draw: series against a linear (round) or logarithmic (bytes) x axis.
struct LineChart {
    caption: String,
    x_desc: &'static str,
    y_desc: String,
    /// Logarithmic x axis with byte labels; otherwise linear with round numbers.
    x_log: bool,
    series: Vec<Series>,
    /// A horizontal dashed line (the target loss).
    target: Option<f64>,
    legend: SeriesLabelPosition,
}

/// Draw the plots of `report` into `out_dir`; plots without data are left out.
pub(super) fn write_plots(
    report: &Report,
    records: &[RunRecord],
    out_dir: &Path,
) -> Result<Vec<Plot>> {
    register_fonts();
    let colour = |i: usize| PALETTE[i % PALETTE.len()];
    let mut plots = Vec::new();

    // Eval loss against cumulative uplink.
    let series: Vec<Series> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: r.label.clone(),
            colour: colour(i),
            points: r
                .rounds
                .iter()
                .filter_map(|m| {
                    let l = m.eval_loss.filter(|l| l.is_finite())?;
                    (m.cum_uplink_bytes > 0).then_some((m.cum_uplink_bytes as f64, l))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !series.is_empty() {
        let chart = LineChart {
            caption: "eval loss vs cumulative uplink".into(),
            x_desc: "cumulative uplink bytes (log)",
            y_desc: "eval loss (nats/token)".into(),
            x_log: true,
            series,
            target: report.target_eval_loss,
            legend: SeriesLabelPosition::UpperRight,
        };
        let target = report
            .target_eval_loss
            .map_or_else(String::new, |t| format!("; dashed line: target {t:.4}"));
        plots.push(Plot {
            stem: "loss_vs_uplink",
            title: "eval loss vs cumulative uplink".into(),
            caption: format!(
                "Held-out loss after each evaluated round against the uplink bytes sent so far \
                 (log scale; further left at the same height is cheaper){target}. Round 0 \
                 (before any uplink) is not on the log axis."
            ),
            files: render(out_dir, "loss_vs_uplink", &chart)?,
        });
    }

    // Accuracy per round (round 0 is the initial accuracy).
    let metric = preferred_accuracy(records.iter().flat_map(|r| {
        r.summary
            .initial_accuracy
            .keys()
            .chain(r.summary.final_accuracy.keys())
            .chain(r.rounds.iter().flat_map(|m| m.accuracy.keys()))
    }));
    if let Some(metric) = metric {
        let series: Vec<Series> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut points: Vec<(f64, f64)> = Vec::new();
                if let Some(&a) = r.summary.initial_accuracy.get(&metric) {
                    points.push((0.0, a));
                }
                for m in &r.rounds {
                    if let Some(&a) = m.accuracy.get(&metric) {
                        points.push((m.round as f64, a));
                    }
                }
                // The summary's final accuracy belongs to the last round.
                if let (Some(&a), Some(last)) =
                    (r.summary.final_accuracy.get(&metric), r.rounds.last())
                {
                    if !last.accuracy.contains_key(&metric) {
                        points.push((last.round as f64, a));
                    }
                }
                points.retain(|p| p.1.is_finite());
                for p in &mut points {
                    p.1 *= 100.0;
                }
                Series {
                    label: r.label.clone(),
                    colour: colour(i),
                    points,
                }
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if !series.is_empty() {
            let chart = LineChart {
                caption: format!("{metric} per round"),
                x_desc: "round",
                y_desc: format!("{metric} (%)"),
                x_log: false,
                series,
                target: None,
                legend: SeriesLabelPosition::LowerRight,
            };
            plots.push(Plot {
                stem: "accuracy_vs_round",
                title: format!("{metric} per round"),
                caption: format!(
                    "Multiple-choice accuracy ({metric}) on the evaluation items after each \
                     round where it was measured; round 0 is before training."
                ),
                files: render(out_dir, "accuracy_vs_round", &chart)?,
            });
        }
    }

    // Mean SNR per round; runs that were always exact have no finite SNR to show.
    let mut exact = Vec::new();
    let mut series = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let points: Vec<(f64, f64)> = r
            .rounds
            .iter()
            .filter_map(|m| {
                let s = m.quality.snr_db.filter(|s| s.is_finite())?;
                Some((m.round as f64, s))
            })
            .collect();
        if points.is_empty() {
            exact.push(r.label.clone());
        } else {
            series.push(Series {
                label: r.label.clone(),
                colour: colour(i),
                points,
            });
        }
    }
    if !series.is_empty() {
        let note = if exact.is_empty() {
            String::new()
        } else {
            format!(" (exact, not shown: {})", exact.join(", "))
        };
        let chart = LineChart {
            caption: format!("reconstruction SNR per round{note}"),
            x_desc: "round",
            y_desc: "mean SNR (dB)".into(),
            x_log: false,
            series,
            target: None,
            legend: SeriesLabelPosition::UpperRight,
        };
        let note = if exact.is_empty() {
            String::new()
        } else {
            format!(
                " Not shown, every reconstruction exact: {}.",
                exact
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        plots.push(Plot {
            stem: "snr_vs_round",
            title: "reconstruction SNR per round".into(),
            caption: format!(
                "Mean over clients of 10·log10(‖x‖²/‖x−x̂‖²) of the decoded updates per round \
                 (higher is more faithful; exact rounds are skipped).{note}"
            ),
            files: render(out_dir, "snr_vs_round", &chart)?,
        });
    }
    Ok(plots)
}

/// Draw `chart` as `<stem>.svg` and `<stem>.png` in `out_dir`.
fn render(out_dir: &Path, stem: &str, chart: &LineChart) -> Result<Vec<PathBuf>> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| {
        Error::Other(format!("{}: drawing the plot failed: {e}", path.display()))
    };
    let svg = out_dir.join(format!("{stem}.svg"));
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, chart).map_err(|e| fail(&svg, &e))?;
        root.present().map_err(|e| fail(&svg, &e))?;
    }
    let png = out_dir.join(format!("{stem}.png"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, chart).map_err(|e| fail(&png, &e))?;
        root.present().map_err(|e| fail(&png, &e))?;
    }
    Ok(vec![svg, png])
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// `lo..hi` widened by `pad` on both sides, and by a little when it is a single value.
fn padded(lo: f64, hi: f64, rel: f64, min_pad: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        (span * rel).max(min_pad)
    } else {
        (lo.abs() * 0.05).max(min_pad).max(1e-6)
    };
    (lo - pad, hi + pad)
}

/// Labelled and grid-only ticks of a log axis over `lo..hi`: 1-2-5 per decade (decades
/// alone over a wide range, every digit over a narrow one), light lines at the digits.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let pick = |mults: &[f64]| -> Vec<f64> {
        (d0..=d1)
            .flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    const DIGITS: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let mut bold = pick(&[1.0, 2.0, 5.0]);
    if bold.len() > 10 {
        bold = pick(&[1.0]);
    } else if bold.len() < 3 {
        bold = pick(&DIGITS);
    }
    if bold.len() < 3 {
        // Narrower than a few digits: five geometric steps at two significant digits.
        bold = (0..5)
            .map(|i| {
                let v = lo * (hi / lo).powf((i as f64 + 0.5) / 5.0);
                let scale = 10f64.powi(v.log10().floor() as i32 - 1);
                (v / scale).round() * scale
            })
            .collect();
        bold.dedup();
    }
    let light = if d1 - d0 <= 6 {
        pick(&DIGITS)
            .into_iter()
            .filter(|v| !bold.contains(v))
            .collect()
    } else {
        Vec::new()
    };
    (bold, light)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &LineChart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(chart.target);
    let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (ymin, ymax) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (y0, y1) = padded(ymin, ymax, 0.08, 0.0);

    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.caption, ("sans-serif", 22))
        .margin(18)
        .x_label_area_size(56)
        .y_label_area_size(76);
    if chart.x_log {
        let (x0, x1) = (xmin / 1.3, xmax * 1.3);
        let (bold, light) = log_ticks(x0, x1);
        let x = (x0..x1)
            .log_scale()
            .with_key_points(bold)
            .with_light_points(light);
        let mut ctx = builder.build_cartesian_2d(x, y0..y1)?;
        finish(&mut ctx, chart, (x0, x1), 10, &|x| {
            human_bytes(x.round() as usize)
        })
    } else {
        let (x0, x1) = padded(xmin, xmax, 0.03, 0.25);
        let labels = ((xmax - xmin).round() as usize + 1).clamp(2, 12);
        let mut ctx = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        finish(&mut ctx, chart, (x0, x1), labels, &|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
    }
}

fn finish<'a, DB, X>(
    ctx: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    chart: &LineChart,
    (x0, x1): (f64, f64),
    x_labels: usize,
    x_format: &dyn Fn(&f64) -> String,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    ctx.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc.as_str())
        .x_labels(x_labels)
        .y_labels(8)
        .x_label_formatter(x_format)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    for s in &chart.series {
        let colour = s.colour;
        let style = ShapeStyle::from(&colour).filled().stroke_width(2);
        ctx.draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(4))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    if let Some(t) = chart.target {
        let style = ShapeStyle::from(&BLACK).stroke_width(1);
        ctx.draw_series(DashedLineSeries::new(vec![(x0, t), (x1, t)], 10, 6, style))?
            .label(format!("target {t:.4}"))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, style));
    }
    ctx.configure_series_labels()
        .position(chart.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_ticks;

    #[test]
    fn log_ticks_are_round_byte_counts() {
        let (bold, light) = log_ticks(1_700.0, 75_000.0);
        assert_eq!(bold, [2e3, 5e3, 1e4, 2e4, 5e4]);
        assert!(light.contains(&3e3) && !light.contains(&2e3));
        let (bold, _) = log_ticks(0.5, 2e12);
        assert_eq!(bold.len(), 13, "decades only: {bold:?}");
        let (bold, _) = log_ticks(1_500.0, 6_000.0);
        assert_eq!(bold, [2e3, 3e3, 4e3, 5e3, 6e3]);
        let (bold, _) = log_ticks(2_500.0, 4_500.0);
        assert_eq!(bold, [2.7e3, 3e3, 3.4e3, 3.8e3, 4.2e3]);
        let (bold, _) = log_ticks(1_000.0, 1_500.0);
        assert!(
            bold.len() >= 3 && bold.iter().all(|v| (1e3..=1.5e3).contains(v)),
            "{bold:?}"
        );
    }
}
