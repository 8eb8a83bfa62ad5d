//! `keepwire chaos --report chaos.html`: one self-contained page (inline SVG and CSS, no
//! scripts, no network fetches) with a timeline per stream (state bands, fault markers,
//! recovery spans), a histogram of recovery times, and the violations with their seeds.

use std::fmt::Write as _;

/// A stretch of time one stream spent in one state.
#[derive(Clone, Debug)]
pub struct Band {
    /// Index into [`Timeline::streams`].
    pub stream: usize,
    /// Start, in ms since the run began.
    pub from_ms: u64,
    /// End, in ms since the run began.
    pub to_ms: u64,
    /// The state's name (`ready`, `backoff`, …).
    pub state: &'static str,
}

/// A fault injected at a moment.
#[derive(Clone, Debug)]
pub struct Marker {
    /// When, in ms since the run began.
    pub at_ms: u64,
    /// What was injected.
    pub name: String,
    /// Whether it was a hard fault.
    pub hard: bool,
}

/// What a run looked like over time.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Stream names, one row each.
    pub streams: Vec<String>,
    /// State bands.
    pub bands: Vec<Band>,
    /// Faults injected.
    pub faults: Vec<Marker>,
    /// From each fault to the moment every stream was fully back, in ms since the run began.
    pub recoveries: Vec<(u64, u64)>,
    /// How long the run lasted, in ms.
    pub end_ms: u64,
}

/// The summary lines and violations shown above the timeline.
pub struct Summary<'a> {
    /// Title line (seed, dialects, streams).
    pub title: String,
    /// Figure lines.
    pub lines: Vec<String>,
    /// Violations: what, and after which faults.
    pub violations: Vec<(String, String)>,
    /// Recovery times, sorted, ms.
    pub recoveries_ms: &'a [u64],
}

fn color(state: &str) -> &'static str {
    match state {
        "ready" => "#2e9e4f",
        "connecting" | "establishing" => "#e0b21c",
        "backoff" => "#e07b1c",
        "awaiting_login" => "#8a4fd1",
        "failed" => "#d1343a",
        _ => "#9a9a9a",
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const LEFT: f64 = 130.0;
const WIDTH: f64 = 1100.0;
const ROW: f64 = 18.0;

/// Renders the page.
pub fn render(summary: &Summary<'_>, t: &Timeline) -> String {
    let end = t.end_ms.max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 / end) * WIDTH;
    let top = 30.0;
    let height = top + ROW * t.streams.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}">"##,
        w = LEFT + WIDTH + 20.0
    );
    // Recovery spans across every row.
    for (from, to) in &t.recoveries {
        let _ = write!(
            svg,
            r##"<rect class="recovery" x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#3b7dd8" opacity="0.12"><title>recovery {} ms</title></rect>"##,
            x(*from),
            (x(*to) - x(*from)).max(1.0),
            ROW * t.streams.len() as f64,
            to.saturating_sub(*from)
        );
    }
    for (i, name) in t.streams.iter().enumerate() {
        let y = top + ROW * i as f64;
        let _ = write!(
            svg,
            r##"<g class="row" data-stream="{n}"><text x="4" y="{:.1}" font-size="12">{n}</text>"##,
            y + 13.0,
            n = escape(name)
        );
        for b in t.bands.iter().filter(|b| b.stream == i) {
            let _ = write!(
                svg,
                r##"<rect class="band {s}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"><title>{s} {}–{} ms</title></rect>"##,
                x(b.from_ms),
                y + 2.0,
                (x(b.to_ms) - x(b.from_ms)).max(0.5),
                ROW - 4.0,
                b.from_ms,
                b.to_ms,
                s = b.state,
                c = color(b.state)
            );
        }
        svg.push_str("</g>");
    }
    for f in &t.faults {
        let _ = write!(
            svg,
            r##"<line class="fault" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1.5"><title>{} ms: {}</title></line>"##,
            top - 8.0,
            top + ROW * t.streams.len() as f64,
            f.at_ms,
            escape(&f.name),
            x = x(f.at_ms),
            c = if f.hard { "#d1343a" } else { "#222" }
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="11">0 s</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{:.1} s</text></svg>"##,
        height - 8.0,
        LEFT + WIDTH,
        height - 8.0,
        end / 1000.0
    );

    // Histogram of recovery times, 20 bins.
    let mut hist = String::new();
    let rec = summary.recoveries_ms;
    let max = rec.last().copied().unwrap_or(0).max(1);
    let bins = 20usize;
    let mut counts = vec![0u64; bins];
    for &r in rec {
        let i = ((r as f64 / max as f64) * (bins as f64 - 1.0)).round() as usize;
        counts[i.min(bins - 1)] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(0).max(1);
    let _ = write!(
        hist,
        r##"<svg id="histogram" xmlns="http://www.w3.org/2000/svg" width="640" height="220" viewBox="0 0 640 220">"##
    );
    for (i, c) in counts.iter().enumerate() {
        let h = 170.0 * *c as f64 / peak as f64;
        let _ = write!(
            hist,
            r##"<rect class="bin" x="{:.1}" y="{:.1}" width="26" height="{h:.1}" fill="#3b7dd8"><title>{} recoveries ≤ {} ms</title></rect>"##,
            20.0 + 30.0 * i as f64,
            190.0 - h,
            c,
            ((i as u64 + 1) * max) / bins as u64
        );
    }
    let _ = write!(
        hist,
        r##"<text x="20" y="210" font-size="11">0 ms</text><text x="620" y="210" font-size="11" text-anchor="end">{max} ms</text></svg>"##
    );

    let mut page = String::new();
    let _ = write!(
        page,
        r##"<!doctype html><html><head><meta charset="utf-8"><title>keepwire chaos</title>
<style>body{{font-family:sans-serif;margin:16px;color:#222}} li.v{{color:#b01c22}} .legend span{{display:inline-block;padding:1px 6px;margin-right:6px;color:#fff;font-size:12px}}</style>
</head><body><h1>keepwire chaos</h1><p>{}</p><ul>"##,
        escape(&summary.title)
    );
    for l in &summary.lines {
        let _ = write!(page, "<li>{}</li>", escape(l));
    }
    page.push_str("</ul><h2>Violations</h2><ul id=\"violations\">");
    if summary.violations.is_empty() {
        page.push_str("<li>none</li>");
    }
    for (what, after) in &summary.violations {
        let _ = write!(
            page,
            r##"<li class="v">{} <br><small>after: {}</small></li>"##,
            escape(what),
            escape(after)
        );
    }
    page.push_str("</ul><h2>Timeline</h2><p class=\"legend\">");
    for s in [
        "ready",
        "connecting",
        "backoff",
        "awaiting_login",
        "failed",
        "starting",
    ] {
        let _ = write!(
            page,
            r##"<span style="background:{}">{s}</span>"##,
            color(s)
        );
    }
    page.push_str("(vertical lines: faults, red when hard; blue shade: recovery)</p>");
    page.push_str(&svg);
    page.push_str("<h2>Recovery times</h2>");
    page.push_str(&hist);
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_stream_and_names_are_escaped() {
        let t = Timeline {
            streams: vec!["a<b".into(), "c".into()],
            bands: vec![Band {
                stream: 0,
                from_ms: 0,
                to_ms: 10,
                state: "ready",
            }],
            faults: vec![Marker {
                at_ms: 5,
                name: "drop & <close>".into(),
                hard: false,
            }],
            recoveries: vec![(5, 8)],
            end_ms: 10,
        };
        let s = Summary {
            title: "t".into(),
            lines: vec![],
            violations: vec![],
            recoveries_ms: &[3],
        };
        let page = render(&s, &t);
        assert_eq!(page.matches(r##"<g class="row""##).count(), 2);
        assert!(page.contains("a&lt;b") && page.contains("drop &amp; &lt;close&gt;"));
        // Self-contained: nothing to fetch.
        assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("<script"));
    }
}
