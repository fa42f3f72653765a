//! The report page: one self-contained HTML file (inline CSS, SVG and a little script;
//! nothing loaded from anywhere, which its Content-Security-Policy also enforces).
//!
//! Every piece of text from the run's events goes through [`esc`]: the events are a
//! file anyone can edit, and the page must show them, never run them. No event text
//! enters the script; it reads what it needs from escaped attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::Report;
use super::timeline::{Bar, Lane};
use crate::events::human::duration;

/// Width of the row labels, in SVG units.
const LABEL_W: f64 = 130.0;
/// Width of the time axis.
const CHART_W: f64 = 1000.0;
/// Height of a row, and of a bar in it.
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 16.0;
/// Height of the axis above the rows.
const AXIS_H: f64 = 22.0;
/// Rows of the slowest-instances table.
const SLOWEST: usize = 15;

/// `s` as HTML text or attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline have no business in a page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .2em .8em .2em 0; vertical-align: top; }
th { border-bottom: 1px solid #ccc; }
td.num, th.num { text-align: right; }
tr:hover td, tr.hl td { background: #f3f3f6; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .1em 1.2em; }
dl.summary dt { color: #666; }
dl.summary dd { margin: 0; }
.status-succeeded { color: #2e7d32; font-weight: 600; }
.status-failed, .status-interrupted { color: #c62828; font-weight: 600; }
.status-unfinished { color: #8d6e00; font-weight: 600; }
.note { background: #fff8e1; border-left: 3px solid #ffb300; padding: .4em .8em; }
.legend span { display: inline-block; margin-right: 1em; }
.swatch { display: inline-block; width: .9em; height: .9em; vertical-align: -.1em; margin-right: .3em; border-radius: 2px; }
svg { background: #fff; border: 1px solid #e3e3e3; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .axis line { stroke: #eee; }
svg .barlabel { fill: #fff; pointer-events: none; }
.ok { fill: #43a047; background: #43a047; }
.cached { fill: #1e88e5; background: #1e88e5; }
.failed { fill: #e53935; background: #e53935; }
.stopped { fill: #9e9e9e; background: #9e9e9e; }
.crit-swatch { background: #fff; border: 2px solid #111; box-sizing: border-box; }
svg .bar.crit { stroke: #111; stroke-width: 2; }
body.no-crit svg .bar.crit { stroke: none; }
svg .bar.hl { stroke: #ff9800; stroke-width: 3; }
td.failed-cell { color: #c62828; }
#js-errors { color: #c62828; }
"#;

/// Records script errors in the page itself, so a test reading the DOM sees them.
const ERRORS_SCRIPT: &str = r#"
window.orchErrors = [];
window.onerror = function (message, source, line) {
  window.orchErrors.push(String(message) + " (line " + line + ")");
  var out = document.getElementById("js-errors");
  if (out) { out.textContent = window.orchErrors.join("\n"); out.hidden = false; }
};
"#;

/// Highlighting: the critical path on and off, and an instance's bars while its table
/// row is hovered.
const MAIN_SCRIPT: &str = r#"
(function () {
  var out = document.getElementById("js-errors");
  if (window.orchErrors.length) { out.textContent = window.orchErrors.join("\n"); out.hidden = false; }
  var toggle = document.getElementById("show-critical");
  if (toggle) {
    toggle.addEventListener("change", function () {
      document.body.classList.toggle("no-crit", !toggle.checked);
    });
  }
  var bars = Array.prototype.slice.call(document.querySelectorAll("svg .bar"));
  var byInstance = {};
  bars.forEach(function (b) {
    var name = b.getAttribute("data-instance");
    (byInstance[name] = byInstance[name] || []).push(b);
  });
  Array.prototype.forEach.call(document.querySelectorAll("tr[data-instance]"), function (tr) {
    var mine = byInstance[tr.getAttribute("data-instance")] || [];
    tr.addEventListener("mouseenter", function () { mine.forEach(function (b) { b.classList.add("hl"); }); });
    tr.addEventListener("mouseleave", function () { mine.forEach(function (b) { b.classList.remove("hl"); }); });
  });
  document.body.setAttribute("data-ready", "1");
})();
"#;

/// The whole page.
pub fn page(report: &Report) -> String {
    let t = &report.timeline;
    let mut h = String::with_capacity(16 * 1024 + t.bars.len() * 400);
    let title = format!("orch run {}", t.run_id);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n<script>{ERRORS_SCRIPT}</script>\n\
         </head>\n<body>\n<h1>{}</h1>\n<pre id=\"js-errors\" hidden></pre>\n",
        esc(&title),
        esc(&title)
    );
    summary(&mut h, report);
    timeline(&mut h, report);
    critical(&mut h, report);
    slowest(&mut h, report);
    cache_hits(&mut h, report);
    failures(&mut h, report);
    instances(&mut h, report);
    let _ = write!(
        h,
        "<p class=\"note-small\">Written by orch {}; the Chrome trace beside this page \
         (<code>trace.json</code>) opens in <code>ui.perfetto.dev</code> or \
         <code>chrome://tracing</code>.</p>\n<script>{MAIN_SCRIPT}</script>\n</body>\n</html>\n",
        esc(env!("CARGO_PKG_VERSION"))
    );
    h
}

fn summary(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"summary\">\n<dl class=\"summary\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    row("run", format!("<code>{}</code>", esc(&t.run_id)));
    row(
        "status",
        format!(
            "<span class=\"status-{}\">{}</span>",
            esc(&t.status),
            esc(&t.status)
        ),
    );
    if !t.started.is_empty() {
        row("started", esc(&t.started));
    }
    row("wall time", esc(&duration(t.duration_ms)));
    if let Some(j) = t.jobs {
        row("jobs", j.to_string());
    }
    if !t.counts.is_empty() {
        let order = [
            "total",
            "succeeded",
            "cached",
            "up_to_date",
            "failed",
            "blocked",
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|k| {
                t.counts
                    .get(*k)
                    .map(|n| format!("{n} {}", k.replace('_', " ")))
            })
            .collect();
        row("instances", esc(&parts.join(", ")));
    }
    let busy: u64 = t
        .bars
        .iter()
        .filter(|b| b.lane != Lane::Cache)
        .map(Bar::duration_ms)
        .sum();
    row("time in commands", esc(&duration(busy)));
    if !t.cache_hits.is_empty() {
        let saved: u64 = t.cache_hits.iter().map(|c| c.saved_ms).sum();
        row(
            "cache",
            esc(&format!(
                "{} {} restored, {} saved",
                t.cache_hits.len(),
                plural(t.cache_hits.len(), "instance"),
                duration(saved)
            )),
        );
    }
    h.push_str("</dl>\n");
    if t.unreadable > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} {} of the run's events could not be read and {} left out.</p>",
            t.unreadable,
            plural(t.unreadable, "line"),
            if t.unreadable == 1 { "is" } else { "are" }
        );
    }
    h.push_str("</section>\n");
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// A step between axis ticks that gives at most about ten of them.
fn tick_step(total_ms: u64) -> u64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            let s = step * m;
            if total_ms / s <= 10 {
                return s;
            }
        }
        step = step.saturating_mul(10);
        if step >= u64::MAX / 10 {
            return step;
        }
    }
}

fn timeline(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"timeline\">\n<h2>Timeline</h2>\n");
    if t.bars.is_empty() {
        h.push_str("<p>Nothing ran in this run: every instance was up to date or blocked.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<p class=\"legend\"><span><i class=\"swatch ok\"></i>ran</span>\
         <span><i class=\"swatch cached\"></i>restored from the cache</span>\
         <span><i class=\"swatch failed\"></i>failed</span>\
         <span><i class=\"swatch stopped\"></i>stopped</span>\
         <span><i class=\"swatch crit-swatch\"></i>critical path</span>\
         <label><input type=\"checkbox\" id=\"show-critical\" checked> highlight the critical path</label></p>\n",
    );
    let rows: BTreeSet<&Lane> = t.bars.iter().map(|b| &b.lane).collect();
    let row_of: BTreeMap<&Lane, usize> = rows.iter().enumerate().map(|(k, l)| (*l, k)).collect();
    let end = t
        .bars
        .iter()
        .map(|b| b.end_ms)
        .max()
        .unwrap_or(0)
        .max(t.duration_ms)
        .max(1);
    let x = |ms: u64| LABEL_W + ms as f64 * CHART_W / end as f64;
    let height = AXIS_H + rows.len() as f64 * ROW_H + 4.0;
    let _ = writeln!(
        h,
        "<svg id=\"timeline-svg\" viewBox=\"0 0 {:.0} {height:.0}\" width=\"100%\" \
         role=\"img\" aria-label=\"timeline of the run, one row per worker\">",
        LABEL_W + CHART_W + 10.0
    );
    h.push_str("<g class=\"axis\">\n");
    let step = tick_step(end);
    let mut at = 0;
    while at <= end {
        let _ = writeln!(
            h,
            "<line x1=\"{0:.1}\" y1=\"{1:.0}\" x2=\"{0:.1}\" y2=\"{height:.0}\"/>\
             <text x=\"{0:.1}\" y=\"14\" text-anchor=\"middle\">{2}</text>",
            x(at),
            AXIS_H - 4.0,
            esc(&duration(at))
        );
        match at.checked_add(step) {
            Some(next) => at = next,
            None => break,
        }
    }
    h.push_str("</g>\n");
    for (k, lane) in rows.iter().enumerate() {
        let _ = writeln!(
            h,
            "<text class=\"rowlabel\" x=\"4\" y=\"{:.1}\">{}</text>",
            AXIS_H + k as f64 * ROW_H + ROW_H * 0.68,
            esc(&lane.label())
        );
    }
    for b in &t.bars {
        let row = row_of.get(&b.lane).copied().unwrap_or(0);
        let y = AXIS_H + row as f64 * ROW_H + (ROW_H - BAR_H) / 2.0;
        let x0 = x(b.start_ms);
        let w = (x(b.end_ms) - x0).max(2.0);
        let crit = if report.is_critical(&b.instance) {
            " crit"
        } else {
            ""
        };
        let mut tip = format!(
            "{} — {} ({}",
            b.name,
            duration(b.duration_ms()),
            b.outcome.word()
        );
        if b.attempts > 1 {
            let _ = write!(tip, ", {} attempts", b.attempts);
        }
        if let Some(id) = &b.job_id {
            let _ = write!(tip, ", job {id}");
        }
        tip.push(')');
        let _ = writeln!(
            h,
            "<rect class=\"bar {}{crit}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
             height=\"{BAR_H:.0}\" data-instance=\"{}\" data-name=\"{}\"><title>{}</title></rect>",
            b.outcome.word(),
            esc(&b.instance),
            esc(&b.name),
            esc(&tip)
        );
        // A label only where it fits (about 6.5 units a character).
        if w > 6.5 * b.name.chars().count() as f64 + 6.0 {
            let _ = writeln!(
                h,
                "<text class=\"barlabel\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x0 + 3.0,
                y + BAR_H * 0.75,
                esc(&b.name)
            );
        }
    }
    h.push_str("</svg>\n</section>\n");
}

fn critical(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"critical-path\">\n<h2>Critical path</h2>\n");
    let ran: Vec<(&str, u64)> = report
        .critical
        .iter()
        .filter_map(|n| t.items.get(n).map(|i| (n.as_str(), i.duration_ms())))
        .collect();
    if ran.is_empty() {
        h.push_str("<p>No instance ran.</p>\n</section>\n");
        return;
    }
    if let Some(note) = &report.graph_note {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    let total: u64 = ran.iter().map(|(_, d)| d).sum();
    let _ = writeln!(
        h,
        "<p>The chain of dependent instances that took longest: {} in all, of {} wall time. \
         No number of jobs makes the run shorter than this chain.</p>\n<table>\n\
         <tr><th>#</th><th>instance</th><th class=\"num\">duration</th></tr>",
        esc(&duration(total)),
        esc(&duration(t.duration_ms))
    );
    for (k, (name, d)) in ran.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr data-instance=\"{0}\"><td>{1}</td><td class=\"mono\">{0}</td><td class=\"num\">{2}</td></tr>",
            esc(name),
            k + 1,
            esc(&duration(*d))
        );
    }
    h.push_str("</table>\n</section>\n");
}

fn slowest(h: &mut String, report: &Report) {
    let t = &report.timeline;
    // Restores took no time worth ranking; the cache section lists them.
    let mut ran: Vec<_> = t
        .items
        .values()
        .filter(|i| i.start_ms.is_some() && i.status != "cached")
        .collect();
    ran.sort_by(|a, b| {
        b.duration_ms()
            .cmp(&a.duration_ms())
            .then_with(|| a.name.cmp(&b.name))
    });
    h.push_str("<section id=\"slowest\">\n<h2>Slowest instances</h2>\n");
    if ran.is_empty() {
        h.push_str("<p>No instance ran.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>instance</th><th>outcome</th><th class=\"num\">duration</th></tr>\n",
    );
    for i in ran.iter().take(SLOWEST) {
        let _ = writeln!(
            h,
            "<tr data-instance=\"{0}\"><td class=\"mono\">{0}</td><td>{1}</td><td class=\"num\">{2}</td></tr>",
            esc(&i.name),
            esc(i.status),
            esc(&duration(i.duration_ms()))
        );
    }
    h.push_str("</table>\n</section>\n");
}

fn cache_hits(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"cache-hits\">\n<h2>Cache hits</h2>\n");
    if t.cache_hits.is_empty() {
        h.push_str("<p>Nothing was restored from the cache.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>instance</th><th>from</th><th class=\"num\">size</th>\
         <th class=\"num\">time saved</th></tr>\n",
    );
    for c in &t.cache_hits {
        let _ = writeln!(
            h,
            "<tr data-instance=\"{0}\"><td class=\"mono\">{0}</td><td>{1}</td><td class=\"num\">{2}</td><td class=\"num\">{3}</td></tr>",
            esc(&c.name),
            esc(&c.source),
            esc(&crate::events::human::size(c.bytes)),
            esc(&duration(c.saved_ms))
        );
    }
    h.push_str("</table>\n</section>\n");
}

fn failures(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"failures\">\n<h2>Failures</h2>\n");
    if t.failures.is_empty() && t.blocked.is_empty() {
        h.push_str("<p>Nothing failed.</p>\n</section>\n");
        return;
    }
    if !t.failures.is_empty() {
        h.push_str("<table>\n<tr><th>instance</th><th>how</th><th>message</th><th>log</th></tr>\n");
        for f in &t.failures {
            let how = match f.exit_code {
                Some(c) => format!("{} {c}", f.kind),
                None => f.kind.clone(),
            };
            let _ = writeln!(
                h,
                "<tr data-instance=\"{}\"><td class=\"mono failed-cell\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                esc(super::timeline::instance_of(&f.name)),
                esc(&f.name),
                esc(&how),
                esc(&f.message),
                esc(&f.log)
            );
        }
        h.push_str("</table>\n");
    }
    if !t.blocked.is_empty() {
        let _ = writeln!(
            h,
            "<p>{} {} did not run:</p>\n<table>\n<tr><th>instance</th><th>why</th><th>blocked by</th></tr>",
            t.blocked.len(),
            plural(t.blocked.len(), "instance")
        );
        for b in &t.blocked {
            let _ = writeln!(
                h,
                "<tr data-instance=\"{0}\"><td class=\"mono\">{0}</td><td>{1}</td><td class=\"mono\">{2}</td></tr>",
                esc(&b.name),
                esc(&b.reason.replace('_', " ")),
                esc(&b.by.join(", "))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
}

fn instances(h: &mut String, report: &Report) {
    let t = &report.timeline;
    h.push_str("<section id=\"instances\">\n<h2>Every instance</h2>\n");
    if t.items.is_empty() {
        h.push_str("<p>No instance has an event in this run.</p>\n</section>\n");
        return;
    }
    let mut rows: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for b in &t.bars {
        rows.entry(b.instance.as_str())
            .or_default()
            .insert(b.lane.label());
    }
    h.push_str(
        "<table>\n<tr><th>instance</th><th>outcome</th><th class=\"num\">start</th>\
         <th class=\"num\">duration</th><th>rows</th></tr>\n",
    );
    for i in t.items.values() {
        let start = i.start_ms.map(duration).unwrap_or_default();
        let took = match i.start_ms {
            Some(_) if i.shards > 0 => {
                format!(
                    "{} ({} {})",
                    duration(i.duration_ms()),
                    i.shards,
                    plural(i.shards, "shard")
                )
            }
            Some(_) => duration(i.duration_ms()),
            None => String::new(),
        };
        let on: Vec<String> = rows
            .get(i.name.as_str())
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr data-instance=\"{0}\"><td class=\"mono\">{0}</td><td>{1}</td><td class=\"num\">{2}</td><td class=\"num\">{3}</td><td>{4}</td></tr>",
            esc(&i.name),
            esc(i.status),
            esc(&start),
            esc(&took),
            esc(&on.join(", "))
        );
    }
    h.push_str("</table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::timeline::Timeline;

    #[test]
    fn escapes_everything_from_events() {
        assert_eq!(
            esc("<a href='x'>&\"\u{7}"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;\u{fffd}"
        );
        let evil = "<script>alert(1)</script>";
        let text = format!(
            r#"{{"type":"run_started","ts":"2026-01-01T00:00:00.000Z","run_id":"{0}"}}
{{"type":"instance_started","instance":"{0}","ts":"2026-01-01T00:00:00.000Z","worker":0}}
{{"type":"instance_failed","instance":"{0}","kind":"{0}","message":"{0}","log":"{0}\"><img src=x onerror=alert(1)>","ts":"2026-01-01T00:00:01.000Z"}}
{{"type":"instance_cached","instance":"c","source":"{0}","ts":"2026-01-01T00:00:00.000Z"}}
{{"type":"instance_blocked","instance":"b","reason":"{0}","blocked_by":["{0}"]}}
{{"type":"run_failed","counts":{{"{0}":1}},"ts":"2026-01-01T00:00:01.000Z"}}
"#,
            evil.replace('"', "\\\"")
        );
        let t = Timeline::from_events(evil, text.as_bytes());
        let page = page(&Report::new(t, None));
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // The page's own two scripts, and no other.
        assert_eq!(page.matches("<script>").count(), 2);
    }

    #[test]
    fn every_section_and_every_instance_is_on_the_page() {
        let text = r#"{"type":"run_started","ts":"2026-01-01T00:00:00.000Z","jobs":2}
{"type":"instance_started","instance":"a[x=1]","ts":"2026-01-01T00:00:00.000Z","worker":0}
{"type":"instance_completed","instance":"a[x=1]","ts":"2026-01-01T00:00:02.000Z"}
{"type":"instance_cached","instance":"c","ts":"2026-01-01T00:00:00.100Z","bytes":2048,"saved_ms":900,"source":"local"}
{"type":"run_completed","ts":"2026-01-01T00:00:02.000Z","counts":{"total":2,"succeeded":1,"cached":1}}
"#;
        let page = page(&Report::new(
            Timeline::from_events("r1", text.as_bytes()),
            None,
        ));
        for id in [
            "summary",
            "timeline",
            "critical-path",
            "slowest",
            "cache-hits",
            "failures",
            "instances",
        ] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(page.contains("class=\"bar ok crit\""), "{page}");
        assert!(page.contains("data-instance=\"a[x=1]\""));
        assert!(page.contains("class=\"bar cached\""));
        assert!(page.contains("2.0 KiB"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn ticks_stay_few() {
        assert_eq!(tick_step(1), 1);
        assert_eq!(tick_step(95), 10);
        assert_eq!(tick_step(60_000), 10_000);
        assert!(tick_step(u64::MAX) > 0);
    }
}
