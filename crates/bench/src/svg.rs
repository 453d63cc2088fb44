//! A hand-written SVG plot: throughput (top) and p99 latency (bottom), both on log scales, against
//! concurrency, one line per workload; and a soak's timeline, one small linear chart per series
//! over time. No plotting library: the picture is a few dozen
//! elements, and writing them keeps the dependency tree small.
//!
//! Pixel coordinates are floats; no money ever reaches this module, so the workspace's
//! float-arithmetic lint is lifted here and only here.
#![allow(clippy::float_arithmetic)]

use std::fmt::Write;

/// One measured point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub concurrency: u32,
    pub ops_per_s: u64,
    pub p99_ns: u64,
}

/// One line of the plot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const PANEL_H: f64 = 230.0;
const TOP1: f64 = 50.0;
const TOP2: f64 = TOP1 + PANEL_H + 70.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Escapes text for SVG content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The decades (powers of ten) that enclose every positive value of `values`: (low, high)
/// exponents with high > low.
pub fn decades(values: impl Iterator<Item = u64>) -> (i32, i32) {
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for v in values.filter(|&v| v > 0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi == 0 {
        return (0, 1);
    }
    let lo_exp = lo.ilog10() as i32;
    // The smallest power of ten at or above `hi`.
    let mut hi_exp = hi.ilog10() as i32;
    if 10u64.checked_pow(hi_exp.unsigned_abs()) != Some(hi) {
        hi_exp += 1;
    }
    (lo_exp, hi_exp.max(lo_exp + 1))
}

fn fmt_rate(x: u64) -> String {
    match x {
        x if x >= 1_000_000 => format!("{}M", x / 1_000_000),
        x if x >= 1_000 => format!("{}k", x / 1_000),
        x => x.to_string(),
    }
}

fn fmt_latency(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{}s", n / 1_000_000_000),
        n if n >= 1_000_000 => format!("{}ms", n / 1_000_000),
        n if n >= 1_000 => format!("{}µs", n / 1_000),
        n => format!("{n}ns"),
    }
}

/// The SVG document for `series` under `title`.
pub fn plot(title: &str, series: &[Series]) -> String {
    let mut xs: Vec<u32> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.concurrency))
        .collect();
    xs.sort_unstable();
    xs.dedup();
    let plot_w = WIDTH - LEFT - RIGHT;
    // Concurrency levels are spaced evenly (they are usually powers of 2 or 4, so this is a
    // log axis without the logarithms).
    let x_of = |c: u32| -> f64 {
        let i = xs.iter().position(|&x| x == c).unwrap_or(0);
        if xs.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (xs.len() - 1) as f64
        }
    };
    let points = || series.iter().flat_map(|s| s.points.iter());
    // Both panels are logarithmic: the baselines run at ten to a hundred times the gateway's
    // figures, and a linear axis would flatten the gateway's lines onto the floor.
    let rate_decades = decades(points().map(|p| p.ops_per_s));
    let lat_decades = decades(points().map(|p| p.p99_ns));
    let y_log = |v: u64, (lo, hi): (i32, i32), top: f64| {
        let l = (v.max(1) as f64).log10();
        let f = (l - f64::from(lo)) / f64::from(hi - lo);
        top + PANEL_H - PANEL_H * f.clamp(0.0, 1.0)
    };
    let y_rate = |r: u64| y_log(r, rate_decades, TOP1);
    let y_lat = |ns: u64| y_log(ns, lat_decades, TOP2);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    if xs.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }

    // Frames, grid lines and axis labels.
    for (top, label) in [
        (TOP1, "throughput, operations/s (log scale)"),
        (TOP2, "p99 latency (log scale)"),
    ] {
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="13">{label}</text>"#,
            top - 8.0
        );
    }
    for d in rate_decades.0..=rate_decades.1 {
        let r = 10u64.saturating_pow(d.max(0).unsigned_abs());
        let y = y_rate(r);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            fmt_rate(r)
        );
    }
    for d in lat_decades.0..=lat_decades.1 {
        let ns = 10u64.saturating_pow(d.max(0).unsigned_abs());
        let y = y_lat(ns);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            fmt_latency(ns)
        );
    }
    for &c in &xs {
        let x = x_of(c);
        for top in [TOP1, TOP2] {
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{c}</text>"#,
                top + PANEL_H + 16.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent connections</text>"#,
        LEFT + plot_w / 2.0,
        TOP2 + PANEL_H + 36.0
    );

    // One line per series in each panel, and the legend.
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<Point> = series.points.clone();
        pts.sort_by_key(|p| p.concurrency);
        for (values, dash) in [(true, ""), (false, r#" stroke-dasharray="6 3""#)] {
            let coords: Vec<String> = pts
                .iter()
                .map(|p| {
                    let y = if values {
                        y_rate(p.ops_per_s)
                    } else {
                        y_lat(p.p99_ns)
                    };
                    format!("{:.1},{:.1}", x_of(p.concurrency), y)
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                coords.join(" ")
            );
            for c in &coords {
                if let Some((x, y)) = c.split_once(',') {
                    let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
                }
            }
        }
        let ly = TOP1 + 10.0 + 20.0 * i as f64;
        let lx = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One small chart of a soak: a value over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    pub title: String,
    /// (seconds since the start, value); a missing reading is left out.
    pub points: Vec<(u64, u64)>,
    /// How an axis label of this panel's values reads.
    pub unit: Unit,
}

/// How a panel's values are printed on its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Nanoseconds,
    Bytes,
}

impl Unit {
    fn label(self, v: u64) -> String {
        match self {
            Unit::Count => fmt_rate(v),
            Unit::Nanoseconds => fmt_latency(v),
            Unit::Bytes => format!("{}MiB", v / MIB),
        }
    }

    /// The top of a linear axis that holds `max`: a round number in this unit.
    fn top(self, max: u64) -> u64 {
        match self {
            Unit::Bytes => nice_ceiling(max.div_ceil(MIB)).saturating_mul(MIB),
            Unit::Count | Unit::Nanoseconds => nice_ceiling(max),
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `v`, at least 1: the
/// top of a linear axis.
pub fn nice_ceiling(v: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let c = base.saturating_mul(m);
            if c >= v || c == u64::MAX {
                return c.max(1);
            }
        }
        if base > u64::MAX / 10 {
            return u64::MAX;
        }
        base *= 10;
    }
}

const T_WIDTH: f64 = 900.0;
const T_LEFT: f64 = 90.0;
const T_RIGHT: f64 = 30.0;
const T_PANEL_H: f64 = 110.0;
const T_GAP: f64 = 55.0;
const T_TOP: f64 = 60.0;

/// The SVG document of a soak: one linear chart per panel, stacked, sharing the time axis; a
/// dashed vertical line at `load_end_s` marks where the load stopped and the drain began.
pub fn timeline(title: &str, panels: &[Panel], load_end_s: Option<u64>) -> String {
    let height = T_TOP + (T_PANEL_H + T_GAP) * panels.len() as f64 + 10.0;
    let plot_w = T_WIDTH - T_LEFT - T_RIGHT;
    let t_max = panels
        .iter()
        .flat_map(|p| p.points.iter().map(|&(t, _)| t))
        .chain(load_end_s)
        .max()
        .unwrap_or(0)
        .max(1);
    let x_of = |t: u64| T_LEFT + plot_w * (t.min(t_max) as f64) / (t_max as f64);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{T_WIDTH}" height="{height}" viewBox="0 0 {T_WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        T_WIDTH / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let top = T_TOP + (T_PANEL_H + T_GAP) * i as f64;
        let bottom = top + T_PANEL_H;
        let y_max = panel
            .unit
            .top(panel.points.iter().map(|&(_, v)| v).max().unwrap_or(0));
        let y_of = |v: u64| bottom - T_PANEL_H * (v.min(y_max) as f64) / (y_max as f64);
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r##"<rect x="{T_LEFT}" y="{top}" width="{plot_w}" height="{T_PANEL_H}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{T_LEFT}" y="{:.1}" font-size="13">{}</text>"#,
            top - 8.0,
            escape(&panel.title)
        );
        for v in [0, y_max / 2, y_max] {
            let y = y_of(v);
            let _ = writeln!(
                s,
                r##"<line x1="{T_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                T_LEFT + plot_w,
                T_LEFT - 6.0,
                y + 4.0,
                panel.unit.label(v)
            );
        }
        for k in 0..=4u64 {
            let t = t_max * k / 4;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"#,
                x_of(t),
                bottom + 15.0
            );
        }
        if let Some(end) = load_end_s {
            let x = x_of(end);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#888" stroke-dasharray="4 3"/>"##
            );
        }
        let coords: Vec<String> = panel
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x_of(t), y_of(v)))
            .collect();
        if !coords.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                coords.join(" ")
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, pts: &[(u32, u64, u64)]) -> Series {
        Series {
            name: name.into(),
            points: pts
                .iter()
                .map(|&(concurrency, ops_per_s, p99_ns)| Point {
                    concurrency,
                    ops_per_s,
                    p99_ns,
                })
                .collect(),
        }
    }

    #[test]
    fn every_series_gets_a_line_in_both_panels_and_a_legend_entry() {
        let s = plot(
            "refunds <sqlite> & more",
            &[
                series(
                    "refund",
                    &[
                        (1, 900, 1_100_000),
                        (4, 3_000, 1_300_000),
                        (16, 5_000, 3_000_000),
                    ],
                ),
                series(
                    "baseline-http",
                    &[(1, 8_000, 150_000), (16, 30_000, 900_000)],
                ),
            ],
        );
        assert!(s.starts_with("<svg "));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert_eq!(s.matches("<circle").count(), 10);
        assert!(s.contains("refunds &lt;sqlite&gt; &amp; more"));
        assert!(s.contains(">baseline-http</text>"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // The three concurrency levels label both panels.
        assert_eq!(s.matches(">16</text>").count(), 2);
    }

    #[test]
    fn points_lie_inside_their_panels() {
        let s = plot(
            "t",
            &[series("a", &[(1, 0, 1), (256, 123_456, 9_999_999_999)])],
        );
        for c in s.split("<circle ").skip(1) {
            let cy: f64 = c
                .split("cy=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap();
            let in1 = (TOP1..=TOP1 + PANEL_H).contains(&cy);
            let in2 = (TOP2..=TOP2 + PANEL_H).contains(&cy);
            assert!(in1 || in2, "cy {cy} outside both panels");
        }
    }

    #[test]
    fn no_data_is_still_a_valid_picture() {
        let s = plot("empty", &[]);
        assert!(s.contains("no data"));
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn log_axes_span_whole_decades() {
        assert_eq!(decades([1_500u64, 80_000].into_iter()), (3, 5));
        assert_eq!(decades([1_000u64, 100_000].into_iter()), (3, 5));
        assert_eq!(decades([7u64].into_iter()), (0, 1));
        assert_eq!(decades([0u64].into_iter()), (0, 1));
        assert_eq!(decades(std::iter::empty()), (0, 1));
        assert_eq!(decades([u64::MAX].into_iter()), (19, 20));
    }

    #[test]
    fn rates_print_short() {
        assert_eq!(fmt_rate(100), "100");
        assert_eq!(fmt_rate(10_000), "10k");
        assert_eq!(fmt_rate(1_000_000), "1M");
    }

    #[test]
    fn nice_ceilings_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(1_234), 2_000);
        assert_eq!(nice_ceiling(50_000_000), 50_000_000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_timeline_has_one_chart_per_panel_inside_its_frame() {
        let panels = vec![
            Panel {
                title: "ops/s".into(),
                points: vec![(5, 900), (10, 1_100), (15, 0)],
                unit: Unit::Count,
            },
            Panel {
                title: "RSS <MiB>".into(),
                points: vec![(5, 40 << 20), (10, 41 << 20)],
                unit: Unit::Bytes,
            },
            Panel {
                title: "empty".into(),
                points: vec![],
                unit: Unit::Nanoseconds,
            },
        ];
        let s = timeline("soak", &panels, Some(10));
        assert!(s.starts_with("<svg ") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(
            s.matches("stroke-dasharray").count(),
            3,
            "the drain line in each panel"
        );
        assert!(s.contains("RSS &lt;MiB&gt;"));
        assert!(s.contains(">50MiB</text>"));
        assert!(s.contains(">2k</text>"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        for (i, line) in s.lines().filter(|l| l.starts_with("<polyline")).enumerate() {
            let top = T_TOP + (T_PANEL_H + T_GAP) * i as f64;
            let pts = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((T_LEFT..=T_WIDTH - T_RIGHT).contains(&x), "x {x}");
                assert!(
                    (top..=top + T_PANEL_H).contains(&y),
                    "y {y} outside panel {i}"
                );
            }
        }
    }

    #[test]
    fn a_timeline_without_points_is_still_a_picture() {
        let s = timeline("nothing", &[], None);
        assert!(s.trim_end().ends_with("</svg>"));
    }
}
