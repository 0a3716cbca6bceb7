//! `--plot FILE.svg`: latency by percentile, one curve per job, as a standalone SVG.
//!
//! The x axis is the percentile on the usual "nines" scale (log10 of 1 / (1 − q), so 90%,
//! 99%, 99.9% … are evenly spaced); the y axis is latency in milliseconds, linear from 0.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The x axis ends at 99.999%.
const MAX_NINES: f64 = 5.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10().min(MAX_NINES)
}

/// Writes the curves of `series` (name, latency histogram in µs) to `path`.
pub fn write_svg(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) -> Result<()> {
    let max_us = series
        .iter()
        .map(|(_, h)| h.max())
        .max()
        .unwrap_or(1)
        .max(1);
    let y_max_ms = nice_ceiling(max_us as f64 / 1000.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |n: f64| LEFT + n / MAX_NINES * plot_w;
    let y = |ms: f64| TOP + plot_h - ms / y_max_ms * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let px = x(i as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{px}" y1="{TOP}" x2="{px}" y2="{}" stroke="#ddd"/><text x="{px}" y="{}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let ms = y_max_ms * f64::from(i) / 5.0;
        let py = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            trim(ms)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        for v in h.iter_quantiles(4) {
            let q = v.quantile_iterated_to();
            let ms = v.value_iterated_to() as f64 / 1000.0;
            let _ = write!(points, "{:.1},{:.1} ", x(nines(q)), y(ms));
            if nines(q) >= MAX_NINES {
                break;
            }
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#
        );
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{}">{} (p50 {} ms, p99 {} ms)</text>"#,
            LEFT + 12.0,
            ly - 6.0,
            LEFT + 32.0,
            ly,
            escape(name),
            trim(h.value_at_quantile(0.5) as f64 / 1000.0),
            trim(h.value_at_quantile(0.99) as f64 / 1000.0)
        );
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).with_context(|| format!("writing the plot {}", path.display()))
}

/// The smallest of 1, 2 or 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mut step = 10f64.powf(v.max(0.001).log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if step * m >= v {
            step *= m;
            return step;
        }
    }
    step * 10.0
}

fn trim(ms: f64) -> String {
    let s = format!("{ms:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_curve_per_series_with_its_percentiles() {
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            a.record(v * 10).unwrap();
            b.record(v * 20).unwrap();
        }
        let path = std::env::temp_dir().join(format!("hexad-plot-{}.svg", std::process::id()));
        write_svg(&path, "t <1>", &[("write".into(), &a), ("read".into(), &b)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(
            svg.contains("write (p50 5") && svg.contains("read (p50 10"),
            "{svg}"
        );
        assert!((nice_ceiling(17.0) - 20.0).abs() < 1e-9);
        assert!((nice_ceiling(0.3) - 0.5).abs() < 1e-9);
    }
}
