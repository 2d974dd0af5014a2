//! Charts as SVG, drawn on the server from the usage store: no chart library, no script.
//! Every label is escaped here, because the page marks the finished SVG safe.

use std::fmt::Write as _;

use crate::page::escape_html;

/// One series of a stacked bar chart: a name and a value per bar.
pub(crate) struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
/// Colours by series index (classes in the stylesheet, so the CSP needs no inline style).
const PALETTE: usize = 8;

/// A stacked bar chart: one bar per label, the series stacked in order, a legend below.
pub(crate) fn stacked_bars(title: &str, labels: &[String], series: &[Series]) -> String {
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let max = nice_ceiling(totals.iter().copied().fold(0.0, f64::max));
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT - 8.0) / labels.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape_html(title)
    );
    for step in 0..=4 {
        let v = max * f64::from(step) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            short_number(v)
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let mut base = TOP + plot_h;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 || max <= 0.0 {
                continue;
            }
            let h = plot_h * v / max;
            base -= h;
            let _ = write!(
                svg,
                "<rect class=\"s{}\" x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\">\
                 <title>{}: {} on {}</title></rect>",
                k % PALETTE,
                escape_html(&s.name),
                short_number(v),
                escape_html(label)
            );
        }
        // Every label when they fit, else every few.
        let every = (labels.len() / 10).max(1);
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar_w / 2.0,
                HEIGHT - 10.0,
                escape_html(label)
            );
        }
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (k, s) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><span class=\"swatch s{}\"></span>{}</li>",
            k % PALETTE,
            escape_html(&s.name)
        );
    }
    svg.push_str("</ul>");
    svg
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v` (axis maximum).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn short_number(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v == v.trunc() => format!("{v:.0}"),
        v => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_series_names_are_escaped() {
        let svg = stacked_bars(
            "t<",
            &["<b>".into()],
            &[Series {
                name: "<script>alert(1)</script>".into(),
                values: vec![3.0],
            }],
        );
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn bars_stack_to_their_total() {
        let svg = stacked_bars(
            "t",
            &["a".into(), "b".into()],
            &[
                Series {
                    name: "x".into(),
                    values: vec![1.0, 0.0],
                },
                Series {
                    name: "y".into(),
                    values: vec![1.0, 4.0],
                },
            ],
        );
        // Three non-empty segments; the axis tops at 5 (the tallest bar, 4, rounded up).
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains(">5</text>"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2400.0), 2500.0);
    }
}
