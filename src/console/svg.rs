//! Plots drawn by the server as SVG: grouped bars and lines with axes,
//! each series a `<g class="series" data-series="NAME">` whose marks carry
//! their value in `data-value`, so a test (or a screen reader) finds the
//! data in the page.

use std::fmt::Write;

/// Escape text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// One named series of values, one per label (`None`: no value).
pub struct Series<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub values: Vec<Option<f64>>,
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 24.0;
const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5"];

fn nice_max(m: f64) -> f64 {
    if m <= 0.0 || !m.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(m.log10().floor());
    for k in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if k * p >= m {
            return k * p;
        }
    }
    10.0 * p
}

fn frame(out: &mut String, title: &str, labels: &[String], max: f64, fmt: &dyn Fn(f64) -> String) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <title>{t}</title>",
        t = esc(title)
    );
    let ph = H - BOTTOM - TOP;
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = TOP + ph - ph * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{W}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{l}</text>",
            x = LEFT - 4.0,
            ty = y + 4.0,
            l = esc(&fmt(v))
        );
    }
    let n = labels.len().max(1);
    let step = (W - LEFT) / n as f64;
    let every = n.div_ceil(24).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % every == 0 {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{l}</text>",
                x = LEFT + step * (i as f64 + 0.5),
                y = H - 8.0,
                l = esc(l)
            );
        }
    }
}

fn legend(out: &mut String, series: &[Series]) {
    let mut x = LEFT;
    for (k, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{c}\"/>\
             <text class=\"legend\" x=\"{tx:.1}\" y=\"15\">{l}</text>",
            c = COLORS[k % COLORS.len()],
            tx = x + 14.0,
            l = esc(s.label)
        );
        x += 24.0 + 7.0 * s.label.chars().count() as f64;
    }
}

/// Grouped bars.
pub fn bars(
    title: &str,
    labels: &[String],
    series: &[Series],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let max = nice_max(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0, |a: f64, b| a.max(*b)),
    );
    let mut out = String::new();
    frame(&mut out, title, labels, max, fmt);
    let n = labels.len().max(1);
    let step = (W - LEFT) / n as f64;
    let bw = (step * 0.8) / series.len().max(1) as f64;
    let ph = H - BOTTOM - TOP;
    for (k, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            "<g class=\"series\" data-series=\"{}\" fill=\"{}\">",
            esc(s.name),
            COLORS[k % COLORS.len()]
        );
        for (i, v) in s.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let h = ph * (v / max).clamp(0.0, 1.0);
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{h:.1}\" data-key=\"{key}\" data-value=\"{v}\"><title>{key}: {f}</title></rect>",
                x = LEFT + step * i as f64 + step * 0.1 + bw * k as f64,
                y = TOP + ph - h,
                key = esc(labels.get(i).map_or("", |s| s)),
                f = esc(&fmt(*v)),
            );
        }
        out.push_str("</g>");
    }
    legend(&mut out, series);
    out.push_str("</svg>");
    out
}

/// Lines with a point per value; `target` draws a dashed horizontal line.
pub fn lines(
    title: &str,
    labels: &[String],
    series: &[Series],
    target: Option<f64>,
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .chain(target.iter())
        .fold(0.0, |a: f64, b| a.max(*b));
    let max = nice_max(top);
    let mut out = String::new();
    frame(&mut out, title, labels, max, fmt);
    let n = labels.len().max(1);
    let step = (W - LEFT) / n as f64;
    let ph = H - BOTTOM - TOP;
    let y_of = |v: f64| TOP + ph - ph * (v / max).clamp(0.0, 1.0);
    if let Some(t) = target {
        let _ = write!(
            out,
            "<line class=\"target\" data-value=\"{t}\" x1=\"{LEFT}\" x2=\"{W}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#c53030\" stroke-dasharray=\"6 4\"/>",
            y = y_of(t)
        );
    }
    for (k, s) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<(f64, f64, f64, usize)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (LEFT + step * (i as f64 + 0.5), y_of(v), v, i)))
            .collect();
        let _ = write!(out, "<g class=\"series\" data-series=\"{}\">", esc(s.name));
        let poly: Vec<String> = pts
            .iter()
            .map(|(x, y, _, _)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            poly.join(" ")
        );
        for (x, y, v, i) in pts {
            let _ = write!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{c}\" data-key=\"{key}\" data-value=\"{v}\"><title>{key}: {f}</title></circle>",
                key = esc(labels.get(i).map_or("", |s| s)),
                f = esc(&fmt(v)),
            );
        }
        out.push_str("</g>");
    }
    legend(&mut out, series);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_values() {
        let labels = vec!["a".to_string(), "<b>".to_string()];
        let s = bars(
            "t",
            &labels,
            &[Series {
                name: "answer_rate",
                label: "Answer rate",
                values: vec![Some(0.7), None],
            }],
            &|v| format!("{v}"),
        );
        assert!(s.contains("data-series=\"answer_rate\""));
        assert!(s.contains("data-value=\"0.7\""));
        assert!(!s.contains("<b>"));
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(130.0), 200.0);
    }
}
