//! PNG line charts of training curves, drawn with plotters' bitmap backend.
//!
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate, registered through
//! plotters' `ab_glyph` feature), so charts render identically on machines without any system
//! fonts. The chart is drawn into memory, encoded as PNG (the `image` crate) and written
//! atomically (`resnet_model::io::write_atomic`: temporary file, fsync, rename).
//!
//! Non-finite points (and, on a log axis, points `<= 0`) are left out and break the line, so a
//! diverging run still plots; an empty series or chart draws empty axes.
//!
//! ```
//! use trainer::plots::{line_chart, Series};
//!
//! let dir = std::env::temp_dir().join(format!("plot-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let loss = Series { name: "train".into(), points: vec![(0.0, 2.3), (100.0, 1.1), (200.0, 0.7)] };
//! line_chart(&dir.join("loss.png"), "Loss", "iteration", "loss", &[loss], true).unwrap();
//! assert!(dir.join("loss.png").is_file());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Width and height of the charts, in pixels.
pub const CHART_SIZE: (u32, u32) = (960, 600);

/// Family name under which the embedded font is registered.
const FONT: &str = "sans-serif";

/// Line colours, cycled through by series index.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

/// One named curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Errors while drawing or writing a chart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Creating, writing or renaming the file failed.
    #[error("cannot write chart {}: {source}", path.display())]
    Io {
        /// The chart's destination.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// plotters failed to draw or encode the chart.
    #[error("cannot draw chart {}: {message}", path.display())]
    Draw {
        /// The chart's destination.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// The embedded font could not be loaded.
    #[error("cannot load the embedded chart font")]
    Font,
}

fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Splits a series into runs of drawable points.
fn segments(points: &[(f64, f64)], log_y: bool) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![vec![]];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() && (!log_y || y > 0.0) {
            out.last_mut().expect("non-empty").push((x, y));
        } else if !out.last().expect("non-empty").is_empty() {
            out.push(vec![]);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Draws `series` as lines into a PNG at `path` (written atomically); `log_y` uses a
/// logarithmic y axis.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), PlotError> {
    ensure_font()?;
    let segs: Vec<Vec<Vec<(f64, f64)>>> =
        series.iter().map(|s| segments(&s.points, log_y)).collect();
    let all = || segs.iter().flatten().flatten();
    let (x0, x1) = match extent(all().map(|p| p.0)) {
        Some((a, b)) if a < b => (a, b),
        Some((a, _)) => (a - 1.0, a + 1.0),
        None => (0.0, 1.0),
    };
    let y = extent(all().map(|p| p.1));

    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };

    let (w, h) = CHART_SIZE;
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    let drawn = {
        let root = BitMapBackend::with_buffer(&mut pixels, CHART_SIZE).into_drawing_area();
        let labels = Labels {
            log_y,
            legend: Corner::UpperRight,
            title,
            x_label,
            y_label,
        };
        let res = if log_y {
            let (lo, hi) = match y {
                Some((a, b)) if a < b => (log_lower_bound(a / 1.25, b * 1.25), b * 1.25),
                Some((a, _)) => (a / 2.0, a * 2.0),
                None => (0.01, 1.0),
            };
            let legend = legend_corner(&segs, (x0, x1), (lo.log10(), hi.log10()), f64::log10);
            let labels = Labels { legend, ..labels };
            draw(&root, &labels, x0..x1, (lo..hi).log_scale(), series, &segs)
        } else {
            let (lo, hi) = match y {
                Some((a, b)) if a < b => (a - 0.05 * (b - a), b + 0.05 * (b - a)),
                Some((a, _)) => (a - 0.5f64.max(a.abs() * 0.1), a + 0.5f64.max(a.abs() * 0.1)),
                None => (0.0, 1.0),
            };
            let legend = legend_corner(&segs, (x0, x1), (lo, hi), |v| v);
            let labels = Labels { legend, ..labels };
            draw(&root, &labels, x0..x1, lo..hi, series, &segs)
        };
        res.and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    if let Err(message) = drawn {
        return Err(PlotError::Draw {
            path: path.to_path_buf(),
            message,
        });
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: format!("encoding the PNG: {e}"),
    })?;
    resnet_model::io::write_atomic(path, &png).map_err(io_err)
}

/// Lower end of a log axis ending at `hi`, at most `lo`. plotters labels a log axis from the
/// lowest power of ten inside the range upwards; when less than a decade lies above that power,
/// the range is extended just below the previous power of ten so the lower part gets labels.
fn log_lower_bound(lo: f64, hi: f64) -> f64 {
    let first = 10f64.powf((lo.log10() - 1e-9).ceil());
    if hi / first >= 10.0 {
        lo
    } else {
        lo.min(0.999 * first / 10.0)
    }
}

/// Tick label: plain decimals without trailing zeros (`200`, `0.25`), scientific notation
/// for very large or small magnitudes (`1e-4`, `1.5e6`).
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A corner of the plot area, for the legend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Corner {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

impl Corner {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// The corner of the plot area whose legend box covers the fewest data points (upper right,
/// upper left, lower right, lower left on ties), so the legend does not hide the curves:
/// rising accuracy curves get it at the upper left, falling losses at the upper right.
/// `y` is the drawn range after `ty` (the axis transform).
fn legend_corner(
    segs: &[Vec<Vec<(f64, f64)>>],
    x: (f64, f64),
    y: (f64, f64),
    ty: impl Fn(f64) -> f64,
) -> Corner {
    // legend size as a fraction of the plot area: ~250 px wide, one ~24 px row per series
    let w = 0.3;
    let h = (0.06 * segs.len() as f64 + 0.04).min(0.6);
    let corners = [
        (Corner::UpperRight, 1.0 - w, 1.0 - h),
        (Corner::UpperLeft, 0.0, 1.0 - h),
        (Corner::LowerRight, 1.0 - w, 0.0),
        (Corner::LowerLeft, 0.0, 0.0),
    ];
    let (xs, ys) = (
        (x.1 - x.0).max(f64::MIN_POSITIVE),
        (y.1 - y.0).max(f64::MIN_POSITIVE),
    );
    let mut counts = [0usize; 4];
    for &(px, py) in segs.iter().flatten().flatten() {
        let (u, v) = ((px - x.0) / xs, (ty(py) - y.0) / ys);
        for (count, &(_, u0, v0)) in counts.iter_mut().zip(&corners) {
            if (u0..=u0 + w).contains(&u) && (v0..=v0 + h).contains(&v) {
                *count += 1;
            }
        }
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best].0
}

struct Labels<'a> {
    log_y: bool,
    legend: Corner,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
}

fn draw<Y>(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    labels: &Labels<'_>,
    x: std::ops::Range<f64>,
    y: Y,
    series: &[Series],
    segs: &[Vec<Vec<(f64, f64)>>],
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(root)
        .caption(labels.title, (FONT, 26))
        .margin(16)
        .margin_right(36)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc(labels.x_label)
        .y_desc(labels.y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        // plotters crowds the light lines of a log axis near powers of ten; the labelled
        // lines suffice there.
        .y_max_light_lines(if labels.log_y { 0 } else { 10 })
        .draw()
        .map_err(e)?;
    for (i, (s, parts)) in series.iter().zip(segs).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let mut first = true;
        for part in parts {
            let ann = chart
                .draw_series(LineSeries::new(part.iter().copied(), style))
                .map_err(e)?;
            if std::mem::take(&mut first) {
                ann.label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
        }
    }
    if segs.iter().any(|p| !p.is_empty()) {
        chart
            .configure_series_labels()
            .position(labels.legend.position())
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_goes_where_the_curves_are_not() {
        let line = |f: fn(f64) -> f64| -> Vec<Vec<Vec<(f64, f64)>>> {
            vec![vec![(0..=100)
                .map(|i| (i as f64, f(i as f64 / 100.0)))
                .collect()]]
        };
        let corner =
            |segs: &[Vec<Vec<(f64, f64)>>]| legend_corner(segs, (0.0, 100.0), (0.0, 1.0), |v| v);
        // a falling loss leaves the upper right free, a rising accuracy the upper left
        assert_eq!(corner(&line(|t| 1.0 - t)), Corner::UpperRight);
        assert_eq!(corner(&line(|t| t)), Corner::UpperLeft);
        // a curve along the top edge pushes it down
        assert_eq!(corner(&line(|_| 0.99)), Corner::LowerRight);
    }

    #[test]
    fn log_axis_lower_bound() {
        // Learning rates 0.001..0.1: several decades, keep the padded minimum.
        assert_eq!(log_lower_bound(0.0008, 0.125), 0.0008);
        // Losses 0.13..3.2: extend to just below 0.1 so 0.2..0.9 get labels.
        let lo = log_lower_bound(0.13 / 1.25, 4.0);
        assert!(lo < 0.1 && lo > 0.099, "{lo}");
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(-0.25), "-0.25");
        assert_eq!(tick(0.001), "0.001");
        assert_eq!(tick(1e-4), "1e-4");
        assert_eq!(tick(1.5e6), "1.5e6");
    }

    #[test]
    fn segments_break_on_non_finite() {
        let p = [
            (0.0, 1.0),
            (1.0, f64::NAN),
            (2.0, 3.0),
            (3.0, 4.0),
            (f64::INFINITY, 1.0),
        ];
        assert_eq!(
            segments(&p, false),
            vec![vec![(0.0, 1.0)], vec![(2.0, 3.0), (3.0, 4.0)]]
        );
        let q = [(0.0, 1.0), (1.0, 0.0), (2.0, -1.0), (3.0, 2.0)];
        assert_eq!(segments(&q, true), vec![vec![(0.0, 1.0)], vec![(3.0, 2.0)]]);
        assert!(segments(&[], false).is_empty());
    }
}
