//! The self-contained HTML report: inline CSS and inline SVG, no scripts, no external assets.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use forewarn_rules::ir::Millis;

use super::plot::{entity_plot, lead_histogram, level_rgb};
use super::{BacktestError, BacktestReport, Levels, PlotInputs, Score};
use crate::time::Zone;

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:960px;color:#222;background:#fff}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.subtitle{color:#555;margin:0 0 12px;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;white-space:pre-wrap}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:.9em}dl.meta dt{color:#666}dl.meta dd{margin:0}
table{border-collapse:collapse;font-size:.85em;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr.all td{font-weight:600;background:#fafafa}tr.ns td{color:#888}
td.lvl{text-align:center;font-weight:600}td.none{color:#aaa;text-align:center}
figure{margin:12px 0}figcaption{font-size:.85em;color:#555}svg{max-width:100%;height:auto}
.note{color:#666;font-size:.9em}details{margin:8px 0}summary{cursor:pointer}
";

/// Escape text for HTML content and attribute values.
fn esc(s: &str) -> String {
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

/// `YYYY-MM-DD HH:MM` in the zone.
fn local(zone: &Zone, t: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(t)
        .unwrap_or_default()
        .with_timezone(&zone.offset_at(t))
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
}

fn mins(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// A table cell coloured by level (`–` when none).
fn level_cell(level: Option<&str>, levels: &Levels) -> String {
    let Some(level) = level else {
        return "<td class=\"none\">–</td>".to_string();
    };
    let (r, g, b) = level_rgb(level, levels);
    // Dark text on light colours (yellow), white on dark ones.
    let luma = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
    let fg = if luma > 150.0 { "#222" } else { "#fff" };
    format!(
        "<td class=\"lvl\" style=\"background:#{r:02x}{g:02x}{b:02x};color:{fg}\">{}</td>",
        esc(level)
    )
}

fn score_cells(out: &mut String, s: &Score) {
    let _ = write!(
        out,
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        s.events,
        s.hits,
        s.misses,
        s.false_alarms,
        s.warnings,
        ratio(s.pod),
        ratio(s.far),
        ratio(s.csi),
        mins(s.lead.median),
        pct(s.lead.share_ge_60min),
    );
}

/// Render the report as one self-contained HTML page: a header (title and subtitle from
/// `plots`), the summary per rule and level, the lead-time histogram, the entities' peak
/// levels, one time-series plot per entity in `plots.entities`, the episodes and the notes.
/// Times are shown in `zone`.
pub fn render_html(
    report: &BacktestReport,
    plots: &PlotInputs,
    zone: &Zone,
) -> Result<String, BacktestError> {
    let lv = &report.levels;
    let mut h = String::new();
    let title = if plots.title.is_empty() {
        "forewarn backtest"
    } else {
        plots.title.as_str()
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    if !plots.subtitle.is_empty() {
        let _ = writeln!(h, "<p class=\"subtitle\">{}</p>", esc(&plots.subtitle));
    }
    let o = &report.overall;
    let reference = match report.reference_kind {
        "truth" => "ground-truth events",
        _ => "reference run (observed-only rules)",
    };
    let _ = write!(
        h,
        "<dl class=\"meta\"><dt>reference</dt><dd>{}</dd><dt>run end</dt><dd>{} ({})</dd>\
         <dt>overall</dt><dd>{} events: {} hits, {} misses; {} warnings, {} false alarms; \
         POD {}, FAR {}, CSI {}; median lead {} min</dd></dl>\n</header>\n",
        esc(reference),
        esc(&local(zone, report.run_end)),
        esc(&zone.to_string()),
        o.events,
        o.hits,
        o.misses,
        o.warnings,
        o.false_alarms,
        ratio(o.pod),
        ratio(o.far),
        ratio(o.csi),
        mins(o.lead.median),
    );

    // Summary per rule and level.
    h.push_str(
        "<section id=\"summary\">\n<h2>Summary per rule and level</h2>\n<table>\n<thead><tr>\
         <th class=\"l\">rule</th><th class=\"l\">level (≥)</th><th>events</th><th>hits</th>\
         <th>misses</th><th>false alarms</th><th>warnings</th><th>POD</th><th>FAR</th><th>CSI</th>\
         <th>median lead (min)</th><th>lead ≥ 60 min</th></tr></thead>\n<tbody>\n",
    );
    for r in &report.by_rule_level {
        match (&r.score, &r.not_scored) {
            (Some(s), _) => {
                let _ = write!(h, "<tr><td class=\"l\">{}</td>", esc(&r.rule));
                h.push_str(&level_cell(Some(&r.level), lv));
                score_cells(&mut h, s);
                h.push_str("</tr>\n");
            }
            (None, why) => {
                let _ = write!(h, "<tr class=\"ns\"><td class=\"l\">{}</td>", esc(&r.rule));
                h.push_str(&level_cell(Some(&r.level), lv));
                let _ = writeln!(
                    h,
                    "<td class=\"l\" colspan=\"10\">not scored: {}</td></tr>",
                    esc(why.as_deref().unwrap_or(""))
                );
            }
        }
    }
    if report.levels.len() > 1 {
        for l in &report.by_level {
            h.push_str("<tr class=\"all\"><td class=\"l\">all rules</td>");
            h.push_str(&level_cell(Some(&l.level), lv));
            score_cells(&mut h, &l.score);
            h.push_str("</tr>\n");
        }
    }
    h.push_str("<tr class=\"all\"><td class=\"l\">overall</td><td class=\"l\">all levels</td>");
    score_cells(&mut h, o);
    h.push_str("</tr>\n</tbody>\n</table>\n<p class=\"note\">POD = hits / events, FAR = false alarms / warnings, CSI = hits / (hits + misses + false alarms); lead = event start − start of the earliest warning span that intersects it.</p>\n</section>\n");

    // Lead-time histogram.
    h.push_str("<section id=\"leads\">\n<h2>Lead times</h2>\n");
    let leads: Vec<f64> = report.events.iter().filter_map(|e| e.lead_min).collect();
    match lead_histogram(&leads)? {
        Some(svg) => {
            let _ = write!(
                h,
                "<figure class=\"histogram\">\n{svg}\n<figcaption>{} hits at all levels; lead min {} / p10 {} / median {} / p90 {} / max {} min</figcaption>\n</figure>\n",
                o.lead.count,
                mins(o.lead.min),
                mins(o.lead.p10),
                mins(o.lead.median),
                mins(o.lead.p90),
                mins(o.lead.max),
            );
        }
        None => h.push_str("<p class=\"note\">No hits: no lead times.</p>\n"),
    }
    h.push_str("</section>\n");

    // Entities by level.
    h.push_str(
        "<section id=\"entities\">\n<h2>Entities by peak level</h2>\n<table>\n<thead><tr>\
         <th class=\"l\">rule</th><th class=\"l\">entity</th><th>candidate peak</th>\
         <th>reference peak</th><th>hits</th><th>misses</th><th>false alarms</th></tr></thead>\n<tbody>\n",
    );
    for p in &report.peaks {
        let (mut hits, mut misses, mut fa) = (0, 0, 0);
        for e in report
            .by_entity
            .iter()
            .filter(|e| e.rule == p.rule && e.entity == p.entity)
        {
            hits += e.score.hits;
            misses += e.score.misses;
            fa += e.score.false_alarms;
        }
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            esc(&p.rule),
            esc(&p.entity)
        );
        h.push_str(&level_cell(p.candidate.as_deref(), lv));
        h.push_str(&level_cell(p.reference.as_deref(), lv));
        let _ = writeln!(h, "<td>{hits}</td><td>{misses}</td><td>{fa}</td></tr>");
    }
    h.push_str("</tbody>\n</table>\n<p class=\"note\">Hits, misses and false alarms summed over the rule's scored levels.</p>\n</section>\n");

    // Per-entity plots.
    if !plots.entities.is_empty() {
        h.push_str("<section id=\"plots\">\n<h2>Entities</h2>\n");
        for p in &plots.entities {
            let _ = writeln!(
                h,
                "<figure class=\"entity-plot\" id=\"plot-{}\">",
                esc(&p.entity)
            );
            match entity_plot(p, zone, lv)? {
                Some(svg) => h.push_str(&svg),
                None => h.push_str("<p class=\"note\">No data to plot.</p>"),
            }
            let _ = write!(
                h,
                "\n<figcaption>{}: shaded = candidate warning, bar at the bottom = reference event, dashed = thresholds; times in {}</figcaption>\n</figure>\n",
                esc(&p.entity),
                esc(&zone.to_string())
            );
        }
        h.push_str("</section>\n");
    }

    // Episodes.
    let _ = write!(
        h,
        "<section id=\"episodes\">\n<h2>Episodes</h2>\n<details><summary>{} candidate episodes</summary>\n<table>\n<thead><tr>\
         <th class=\"l\">rule</th><th class=\"l\">entity</th><th>peak</th><th class=\"l\">start</th>\
         <th class=\"l\">end</th><th class=\"l\">branch</th><th class=\"l\">expected crossing</th>\
         <th class=\"l\">hits (level: lead min)</th></tr></thead>\n<tbody>\n",
        report.episodes.len()
    );
    for e in &report.episodes {
        let hits: Vec<String> = e
            .hits
            .iter()
            .map(|x| format!("{}: {}", x.level, mins(Some(x.lead_min))))
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            esc(&e.rule),
            esc(&e.entity)
        );
        h.push_str(&level_cell(Some(&e.peak), lv));
        let _ = writeln!(
            h,
            "<td class=\"l\">{}</td><td class=\"l\">{}{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            esc(&local(zone, e.start)),
            esc(&local(zone, e.end)),
            if e.open { " (open)" } else { "" },
            esc(e.branch.as_deref().unwrap_or("–")),
            esc(&e.expected_crossing.map_or_else(|| "–".to_string(), |t| local(zone, t))),
            esc(&if hits.is_empty() { "–".to_string() } else { hits.join(", ") }),
        );
    }
    h.push_str("</tbody>\n</table>\n</details>\n</section>\n");

    if !report.notes.is_empty() {
        h.push_str("<section id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
        for n in &report.notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        h.push_str("</ul>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}
