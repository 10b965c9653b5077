//! The one table the benchmark prints (Markdown, so it goes into docs/BENCHMARKS.md as is).

use std::fmt::Write;

pub struct Row {
    name: String,
    unit: &'static str,
    /// direct, rathole, ours, relays
    vals: [Option<f64>; 4],
}

impl Row {
    pub fn new(name: impl Into<String>, unit: &'static str, vals: [Option<f64>; 4]) -> Row {
        Row {
            name: name.into(),
            unit,
            vals,
        }
    }
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

impl Table {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The last column says how far the shape alone (three plain relays) is from rathole,
    /// next to how far ours is.
    pub fn render(&self, paths: &[&str; 4]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| figure | unit | {} | {} | {} | {} | ours / rathole | ours / direct | relays / rathole |",
            paths[0], paths[1], paths[2], paths[3]
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let [d, rh, o, rl] = r.vals;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.unit,
                cell(d),
                cell(rh),
                cell(o),
                cell(rl),
                ratio(o, rh),
                ratio(o, d),
                ratio(rl, rh)
            );
        }
        out
    }
}
