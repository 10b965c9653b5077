//! The charts page: the last hour of [`super::history`] drawn as inline SVG on the server.
//!
//! Inline SVG needs no script and no asset, passes the pages' `default-src 'none'`
//! Content-Security-Policy, prints and zooms. Each chart is an image to assistive
//! technology (`role="img"`, a `<title>` and a `<desc>` saying the latest and highest
//! values), has text axis labels, and the page carries the same numbers as a table.

use std::fmt::Write;

use super::history::{Point, INTERVAL};
use super::pages::esc;

/// Drawing area, in SVG user units (the SVG scales to the page's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 64.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
const SPAN_SECS: u64 = 3600;

/// What a chart's values are.
#[derive(Clone, Copy)]
enum Unit {
    PerSecond,
    BytesPerSecond,
    Millis,
    Count,
}

impl Unit {
    fn format(self, v: f64) -> String {
        let n = short(v);
        match self {
            Unit::PerSecond => format!("{n}/s"),
            Unit::BytesPerSecond => format!("{n}B/s"),
            Unit::Millis => format!("{n} ms"),
            Unit::Count => n,
        }
    }
}

/// One line of a chart: its label, its CSS class (the colour) and a value per point.
struct Line {
    label: &'static str,
    class: &'static str,
    values: Vec<Option<f64>>,
}

struct Chart {
    id: &'static str,
    title: &'static str,
    unit: Unit,
    lines: Vec<Line>,
}

/// `v` with three significant digits at most and an SI suffix: `0.42`, `12.3`, `4.1k`, `1.2M`.
fn short(v: f64) -> String {
    let (v, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match v.abs() {
        a if a >= 100.0 || a == 0.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let s = format!("{v:.digits$}");
    let s = match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    };
    format!("{s}{suffix}")
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (a grid step that is a round number).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn x_of(at: u64, now: u64) -> f64 {
    let from = now.saturating_sub(SPAN_SECS);
    let t = at.saturating_sub(from).min(SPAN_SECS) as f64;
    LEFT + t / SPAN_SECS as f64 * (WIDTH - LEFT - 8.0)
}

/// The chart as an `<svg>`: axes, grid, labels and one path per line (broken where a
/// point has no value).
fn svg(chart: &Chart, times: &[u64], now: u64) -> String {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let highest = chart
        .lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    // Four grid steps of a round size.
    let top = 4.0 * nice_ceiling(highest / 4.0);
    let y_of = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let id = chart.id;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        esc(chart.title),
        esc(&describe(chart)),
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let y = y_of(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - 8.0,
            LEFT - 6.0,
            y + 4.0,
            esc(&chart.unit.format(v))
        );
    }
    for minutes_ago in (0..=60).step_by(10) {
        let x = x_of(now.saturating_sub(minutes_ago * 60), now);
        let (label, anchor) = match minutes_ago {
            0 => ("now".to_string(), "end"),
            m => (format!("−{m} min"), "middle"),
        };
        let _ = write!(
            s,
            r#"<text class="axis" x="{x:.1}" y="{}" text-anchor="{anchor}">{label}</text>"#,
            HEIGHT - 8.0
        );
    }
    for line in &chart.lines {
        let xy: Vec<Option<(f64, f64)>> = times
            .iter()
            .zip(&line.values)
            .map(|(at, v)| v.map(|v| (x_of(*at, now), y_of(v))))
            .collect();
        s.push_str(&draw(&xy, line.class));
    }
    s.push_str("</svg>");
    s
}

/// A path through the points, broken where one has no value; a point with no neighbour
/// to join (the first minute of a hub's life, one stream after a quiet spell) is a dot.
fn draw(xy: &[Option<(f64, f64)>], class: &str) -> String {
    let mut d = String::new();
    let mut dots = String::new();
    for (i, p) in xy.iter().enumerate() {
        let Some((x, y)) = p else { continue };
        let before = i > 0 && xy[i - 1].is_some();
        let after = xy.get(i + 1).is_some_and(Option::is_some);
        match (before, after) {
            (false, false) => {
                let _ = write!(
                    dots,
                    r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="2.5"/>"#
                );
            }
            (false, true) => {
                let _ = write!(d, "M{x:.1} {y:.1}");
            }
            (true, _) => {
                let _ = write!(d, "L{x:.1} {y:.1}");
            }
        }
    }
    match d.is_empty() {
        true => dots,
        false => format!(r#"<path class="{class}" d="{d}"/>{dots}"#),
    }
}

/// The chart in words: each line's latest and highest value.
fn describe(chart: &Chart) -> String {
    let mut parts = Vec::new();
    for line in &chart.lines {
        let values: Vec<f64> = line.values.iter().flatten().copied().collect();
        parts.push(match values.last() {
            Some(&latest) => format!(
                "{}: now {}, highest {}",
                line.label,
                chart.unit.format(latest),
                chart
                    .unit
                    .format(values.iter().fold(0.0f64, |a, &b| a.max(b)))
            ),
            None => format!("{}: no data in the last hour", line.label),
        });
    }
    format!("Last hour. {}.", parts.join("; "))
}

fn figure(chart: &Chart, times: &[u64], now: u64) -> String {
    let legend: String = chart
        .lines
        .iter()
        .map(|l| format!(r#"<span class="key {}">{}</span>"#, l.class, esc(l.label)))
        .collect();
    format!(
        r#"<figure id="{}">{}<figcaption>{} {legend}</figcaption></figure>"#,
        chart.id,
        svg(chart, times, now),
        esc(chart.title)
    )
}

fn charts(points: &[Point]) -> Vec<Chart> {
    let series = |f: &dyn Fn(&Point) -> Option<f64>| points.iter().map(f).collect::<Vec<_>>();
    let line = |label, class, values| Line {
        label,
        class,
        values,
    };
    let pct = |i: usize| series(&|p: &Point| p.setup_ms.map(|m| m[i]));
    vec![
        Chart {
            id: "chart-streams",
            title: "Stream requests per second",
            unit: Unit::PerSecond,
            lines: vec![
                line("all", "s1", series(&|p: &Point| Some(p.streams_per_s))),
                line(
                    "accepted",
                    "s2",
                    series(&|p: &Point| Some(p.accepted_per_s)),
                ),
            ],
        },
        Chart {
            id: "chart-setup",
            title: "Stream set-up time",
            unit: Unit::Millis,
            lines: vec![
                line("p50", "s1", pct(0)),
                line("p90", "s2", pct(1)),
                line("p99", "s3", pct(2)),
            ],
        },
        Chart {
            id: "chart-bytes",
            title: "Bytes relayed per second (both ways)",
            unit: Unit::BytesPerSecond,
            lines: vec![line(
                "bytes",
                "s1",
                series(&|p: &Point| Some(p.bytes_per_s)),
            )],
        },
        Chart {
            id: "chart-devices",
            title: "Connected devices",
            unit: Unit::Count,
            lines: vec![line(
                "devices",
                "s1",
                series(&|p: &Point| Some(p.devices as f64)),
            )],
        },
    ]
}

/// `/charts`: the four charts and the table, `node` naming this node in a cluster.
pub fn page(points: &[Point], now: u64, node: Option<&str>) -> String {
    let times: Vec<u64> = points.iter().map(|p| p.at).collect();
    let whose = match node {
        Some(n) => format!(
            "this node's own metrics (node <strong>{}</strong>; every node keeps its own history)",
            esc(n)
        ),
        None => "the hub's own metrics".to_string(),
    };
    let mut b = format!(
        r#"<h1>Charts</h1><p>The last hour of {whose}, sampled every {} s; stream requests are counted as they end. This page reloads every {} s.</p><div class="charts">"#,
        INTERVAL.as_secs(),
        INTERVAL.as_secs()
    );
    for chart in charts(points) {
        b.push_str(&figure(&chart, &times, now));
    }
    b.push_str("</div>");
    b.push_str(&table(points));
    b
}

/// The charts' numbers as a table, newest first.
fn table(points: &[Point]) -> String {
    let mut b = String::with_capacity(200 + points.len() * 200);
    let _ = write!(
        b,
        r#"<details><summary>The same numbers as a table</summary><table id="chart-data"><caption>{} interval(s) of the last hour, newest first</caption><thead><tr><th scope="col">Until (UTC)</th><th scope="col" class="num">Requests/s</th><th scope="col" class="num">Accepted/s</th><th scope="col" class="num">Set-up p50 ms</th><th scope="col" class="num">p90 ms</th><th scope="col" class="num">p99 ms</th><th scope="col" class="num">Bytes/s</th><th scope="col" class="num">Devices</th></tr></thead><tbody>"#,
        points.len()
    );
    for p in points.iter().rev() {
        let ms = |i: usize| p.setup_ms.map(|m| short(m[i])).unwrap_or_default();
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            super::pages::time(p.at.saturating_mul(1000)),
            short(p.streams_per_s),
            short(p.accepted_per_s),
            ms(0),
            ms(1),
            ms(2),
            short(p.bytes_per_s),
            p.devices
        );
    }
    b.push_str("</tbody></table></details>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_axes_end_on_round_values() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.4249), "0.42");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(4100.0), "4.1k");
        assert_eq!(short(1_250_000.0), "1.25M");
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(700.0), 1000.0);
    }

    #[test]
    fn the_page_draws_each_chart_with_a_description_and_a_table() {
        let point = |at, setup| Point {
            at,
            streams_per_s: 2.5,
            accepted_per_s: 2.0,
            bytes_per_s: 1e6,
            setup_ms: setup,
            devices: 7,
        };
        let now = 10_000;
        let points = [
            point(now - 30, Some([1.0, 2.0, 3.0])),
            point(now - 20, Some([1.0, 2.0, 3.0])),
            point(now - 10, None),
            point(now, Some([1.5, 2.5, 9.0])),
        ];
        let html = page(&points, now, Some("node-a"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains(r#"role="img""#) && html.contains("node-a"));
        assert!(html.contains("p99: now 9 ms, highest 9 ms"), "{html}");
        assert!(html.contains("devices: now 7"));
        // A gap where no stream paired: a line before it, a dot after it.
        let setup = &html[html.find(r#"id="chart-setup""#).unwrap()..];
        let setup = &setup[..setup.find("</figure>").unwrap()];
        let path = &setup[setup.find("<path").unwrap()..];
        assert_eq!(path[..path.find("/>").unwrap()].matches('M').count(), 1);
        assert_eq!(
            setup.matches("<circle").count(),
            3,
            "p50, p90, p99 of the last point alone"
        );
        assert_eq!(html.matches("<tr><td>").count(), 4);
    }

    /// A full hour renders in well under the page budget (printed: a timed assertion
    /// would fail on a busy machine, not on a slow page).
    #[test]
    fn a_full_hour_renders_quickly() {
        let now = 1_000_000;
        let points: Vec<Point> = (0..360u64)
            .map(|i| Point {
                at: now - 3600 + i * 10,
                streams_per_s: i as f64,
                accepted_per_s: i as f64 / 2.0,
                bytes_per_s: 1e6 * i as f64,
                setup_ms: Some([1.0, 2.0, i as f64]),
                devices: i,
            })
            .collect();
        let started = std::time::Instant::now();
        let html = page(&points, now, None);
        eprintln!(
            "charts of a full hour: {:?}, {} bytes",
            started.elapsed(),
            html.len()
        );
        assert_eq!(html.matches("<path").count(), 7);
    }
}
