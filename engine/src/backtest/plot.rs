//! SVG plots (plotters, SVG backend: text stays SVG `<text>`): the lead-time histogram and
//! one time-series plot per entity.

use std::ops::Range;

use chrono::{DateTime, Timelike, Utc};
use forewarn_rules::ir::Millis;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{BacktestError, Levels, PlotSeries, MINUTE};
use crate::time::Zone;

/// Width and height of one entity plot.
const PLOT_SIZE: (u32, u32) = (900, 300);
/// Width and height of the histogram.
const HIST_SIZE: (u32, u32) = (900, 280);
/// Width of the legend column right of an entity plot.
const LEGEND_WIDTH: u32 = 190;
/// Leads beyond ± this many minutes (a week) go into the outermost histogram bins.
pub(crate) const HIST_CLAMP_MIN: f64 = 7.0 * 24.0 * 60.0;
/// Histogram bin width in minutes.
pub(crate) const BIN_MIN: f64 = 10.0;
const FONT: &str = "sans-serif";

/// Line colours of the plotted series (kept apart from the level colours).
const SERIES_COLOURS: [RGBColor; 6] = [
    RGBColor(20, 20, 20),
    RGBColor(0, 110, 90),
    RGBColor(110, 50, 160),
    RGBColor(140, 80, 20),
    RGBColor(0, 90, 160),
    RGBColor(200, 0, 120),
];
/// Histogram bars: warned ahead, and late.
const AHEAD: RGBColor = RGBColor(40, 110, 180);
const LATE: RGBColor = RGBColor(205, 60, 40);

/// The colour of a level: warning colours by name (blue, yellow, orange/amber, red, green,
/// also as part of a name like `red_alert`), else a neutral ramp from light to dark by the
/// level's rank in the first rule that has it.
pub(crate) fn level_rgb(name: &str, levels: &Levels) -> (u8, u8, u8) {
    let n = name.to_ascii_lowercase();
    for (key, rgb) in [
        ("red", (210, 35, 42)),
        ("orange", (245, 135, 30)),
        ("amber", (245, 135, 30)),
        ("yellow", (245, 205, 20)),
        ("blue", (40, 110, 210)),
        ("green", (60, 160, 70)),
    ] {
        if n.contains(key) {
            return rgb;
        }
    }
    let (i, len) = levels
        .values()
        .find_map(|lv| lv.iter().position(|l| l == name).map(|i| (i, lv.len())))
        .unwrap_or((0, 1));
    let f = if len > 1 {
        i as f64 / (len - 1) as f64
    } else {
        0.5
    };
    let lerp = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    (lerp(190.0, 70.0), lerp(185.0, 60.0), lerp(215.0, 120.0))
}

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

fn plot_err(plot: &str, e: impl std::fmt::Display) -> BacktestError {
    BacktestError::Plot {
        plot: plot.to_string(),
        message: e.to_string(),
    }
}

/// A time axis in UTC ms whose ticks fall on round local times of a zone.
struct TimeAxis {
    start: Millis,
    end: Millis,
    zone: Zone,
}

/// Tick steps in minutes, finest first.
const STEPS: [i64; 15] = [
    1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 4320, 10080,
];

impl TimeAxis {
    fn ticks(&self, max: usize) -> Vec<Millis> {
        if max == 0 || self.end <= self.start {
            return Vec::new();
        }
        let span = self.end - self.start;
        let step = STEPS
            .iter()
            .map(|m| m * MINUTE)
            .find(|s| (span / s + 1) as usize <= max)
            .unwrap_or(STEPS[STEPS.len() - 1] * MINUTE);
        let off = Millis::from(self.zone.offset_at(self.start).local_minus_utc()) * 1000;
        let mut k = (self.start + off).div_euclid(step);
        if k * step - off < self.start {
            k += 1;
        }
        let mut out = Vec::new();
        while k * step - off <= self.end && out.len() < max {
            out.push(k * step - off);
            k += 1;
        }
        out
    }

    /// `HH:MM` in the zone; the date at local midnight and on the first tick.
    fn label(&self, t: Millis, first: Option<Millis>) -> String {
        let local = DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap_or_default()
            .with_timezone(&self.zone.offset_at(t));
        if local.hour() == 0 && local.minute() == 0 {
            local.format("%d %b").to_string()
        } else if Some(t) == first {
            local.format("%d %b %H:%M").to_string()
        } else {
            local.format("%H:%M").to_string()
        }
    }
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = Millis;

    fn map(&self, v: &Millis, limit: (i32, i32)) -> i32 {
        let span = (self.end - self.start).max(1) as f64;
        let f = (*v - self.start) as f64 / span;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<Millis> {
        self.ticks(hint.max_num_points())
    }

    fn range(&self) -> Range<Millis> {
        self.start..self.end
    }
}

impl ValueFormatter<Millis> for TimeAxis {
    fn format_ext(&self, v: &Millis) -> String {
        self.label(*v, None)
    }
}

/// The unit in the last parentheses of each series label (`rain 1 h (mm)` → `mm`), joined
/// when they differ.
fn unit_of(series: &[(String, Vec<(Millis, f64)>)]) -> String {
    let mut units: Vec<&str> = Vec::new();
    for (label, _) in series {
        let unit = label
            .rfind('(')
            .and_then(|i| label[i + 1..].split_once(')').map(|(u, _)| u.trim()));
        if let Some(u) = unit.filter(|u| !u.is_empty()) {
            if !units.contains(&u) {
                units.push(u);
            }
        }
    }
    if units.is_empty() {
        "value".to_string()
    } else {
        units.join(", ")
    }
}

/// The lead-time histogram: 10-minute bins, late hits (lead < 0) in another colour. `None`
/// without hits. Leads beyond ±[`HIST_CLAMP_MIN`] are drawn in the outermost bins.
pub(crate) fn lead_histogram(leads_min: &[f64]) -> Result<Option<String>, BacktestError> {
    let leads: Vec<f64> = leads_min
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .map(|l| l.clamp(-HIST_CLAMP_MIN, HIST_CLAMP_MIN - BIN_MIN / 2.0))
        .collect();
    if leads.is_empty() {
        return Ok(None);
    }
    let bin = |l: f64| (l / BIN_MIN).floor() as i64;
    let kmin = leads.iter().map(|&l| bin(l)).min().unwrap_or(0).min(0);
    let kmax = leads.iter().map(|&l| bin(l)).max().unwrap_or(0).max(0);
    let mut counts = vec![0i32; (kmax - kmin + 1) as usize];
    for &l in &leads {
        counts[(bin(l) - kmin) as usize] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0) + 1;
    let (x0, x1) = (kmin as f64 * BIN_MIN, (kmax + 1) as f64 * BIN_MIN);
    let name = "lead-time histogram";
    let e = |err| plot_err(name, err);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, HIST_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Lead time of hits (10-minute bins)", (FONT, 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, 0i32..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(16)
            .y_labels(top.min(10) as usize + 1)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("lead time (min; negative = late)")
            .y_desc("hits")
            .axis_desc_style((FONT, 13))
            .label_style((FONT, 12))
            .draw()
            .map_err(e)?;
        let bars = |late: bool| {
            counts
                .iter()
                .enumerate()
                .filter(move |(k, c)| **c > 0 && ((*k as i64 + kmin) < 0) == late)
                .map(move |(k, c)| {
                    let left = (k as i64 + kmin) as f64 * BIN_MIN;
                    let colour = if late { LATE } else { AHEAD };
                    Rectangle::new(
                        [(left + 0.4, 0), (left + BIN_MIN - 0.4, *c)],
                        colour.filled(),
                    )
                })
        };
        chart
            .draw_series(bars(false))
            .map_err(e)?
            .label("warned ahead (lead ≥ 0)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], AHEAD.filled()));
        chart
            .draw_series(bars(true))
            .map_err(e)?
            .label("late (lead < 0)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], LATE.filled()));
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0), (0.0, top)],
                BLACK.stroke_width(1),
            )))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 12))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(Some(svg))
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    /// A translucent band (candidate warning).
    Band,
    /// A thin solid bar (reference event).
    Bar,
    /// A line (a series).
    Line,
}

/// Draw legend entries top-down in `area` (labels longer than fits are cut with `…`).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(Swatch, RGBColor, String)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    const ROW: i32 = 18;
    const MAX_CHARS: usize = 26;
    let (x, mut y) = (6, 40);
    let (_, height) = area.dim_in_pixel();
    for (swatch, c, label) in entries {
        if y + ROW > height as i32 - 10 {
            area.draw(&Text::new("…", (x, y), (FONT, 11).into_font()))?;
            break;
        }
        match swatch {
            Swatch::Band => area.draw(&Rectangle::new(
                [(x, y - 6), (x + 18, y + 6)],
                c.mix(0.35).filled(),
            ))?,
            Swatch::Bar => area.draw(&Rectangle::new([(x, y - 3), (x + 18, y + 3)], c.filled()))?,
            Swatch::Line => area.draw(&PathElement::new(
                vec![(x, y), (x + 18, y)],
                c.stroke_width(2),
            ))?,
        }
        let text: String = if label.chars().count() > MAX_CHARS {
            label.chars().take(MAX_CHARS - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        let style = TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(text, (x + 24, y), style))?;
        y += ROW;
    }
    Ok(())
}

/// One entity's time-series plot: warning bands behind, lines, dashed thresholds, reference
/// events as a bar along the bottom. `None` when there is nothing to plot.
pub(crate) fn entity_plot(
    p: &PlotSeries,
    zone: &Zone,
    levels: &Levels,
) -> Result<Option<String>, BacktestError> {
    let times = p
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(t, _)| *t))
        .chain(p.bands.iter().flat_map(|(s, e, _)| [*s, *e]))
        .chain(p.reference.iter().flat_map(|(s, e, _)| [*s, *e]));
    let (Some(t0), Some(t1)) = (times.clone().min(), times.max()) else {
        return Ok(None);
    };
    let t1 = t1.max(t0.saturating_add(MINUTE));
    let values: Vec<f64> = p
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(_, v)| *v))
        .chain(p.thresholds.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .collect();
    let vmax = values.iter().copied().fold(0.0f64, f64::max);
    let vmin = values.iter().copied().fold(0.0f64, f64::min);
    let span = if vmax > vmin { vmax - vmin } else { 1.0 };
    let (top, bottom) = (vmax + 0.12 * span, vmin - 0.12 * span);
    let bar = (bottom + 0.02 * span, bottom + 0.08 * span);

    let name = format!("entity {}", p.entity);
    let e = |err| plot_err(&name, err);
    let axis = TimeAxis {
        start: t0,
        end: t1,
        zone: *zone,
    };
    let first_tick = axis.ticks(10).first().copied();
    let fmt_x = |t: &Millis| axis.label(*t, first_tick);
    let fmt_y = |v: &f64| {
        if span >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let caption = if p.title.is_empty() {
        p.entity.clone()
    } else {
        p.title.clone()
    };
    // Legend entries, drawn in a column right of the plot so they never hide data.
    let mut legend: Vec<(Swatch, RGBColor, String)> = Vec::new();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (plot_area, legend_area) = root.split_horizontally(PLOT_SIZE.0 - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&caption, (FONT, 16))
            .margin(10)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(
                TimeAxis {
                    start: t0,
                    end: t1,
                    zone: *zone,
                },
                bottom..top,
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .x_desc(format!("time ({zone})"))
            .y_desc(unit_of(&p.series))
            .axis_desc_style((FONT, 13))
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;

        // Candidate bands behind everything.
        let mut band_levels: Vec<&str> = Vec::new();
        for (_, _, l) in &p.bands {
            if !band_levels.contains(&l.as_str()) {
                band_levels.push(l);
            }
        }
        for level in band_levels {
            let c = rgb(level_rgb(level, levels));
            chart
                .draw_series(p.bands.iter().filter(|b| b.2 == level).map(|(s, end, _)| {
                    Rectangle::new(
                        [(*s, bar.1 + 0.01 * span), (*end, top)],
                        c.mix(0.22).filled(),
                    )
                }))
                .map_err(e)?;
            legend.push((Swatch::Band, c, format!("warning: {level}")));
        }
        // Reference events along the bottom.
        let mut ref_levels: Vec<&str> = Vec::new();
        for (_, _, l) in &p.reference {
            if !ref_levels.contains(&l.as_str()) {
                ref_levels.push(l);
            }
        }
        for level in ref_levels {
            let c = rgb(level_rgb(level, levels));
            chart
                .draw_series(
                    p.reference
                        .iter()
                        .filter(|r| r.2 == level)
                        .map(|(s, end, _)| {
                            Rectangle::new([(*s, bar.0), (*end, bar.1)], c.filled())
                        }),
                )
                .map_err(e)?;
            legend.push((Swatch::Bar, c, format!("reference: {level}")));
        }
        // Thresholds: dashed, labelled at the right end.
        for (label, v) in &p.thresholds {
            if !v.is_finite() {
                continue;
            }
            let c = match levels
                .values()
                .flatten()
                .find(|l| label.to_ascii_lowercase().contains(&l.to_ascii_lowercase()))
            {
                Some(l) => rgb(level_rgb(l, levels)),
                None => RGBColor(90, 90, 90),
            };
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(t0, *v), (t1, *v)],
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(e)?;
            let style = TextStyle::from((FONT, 11).into_font())
                .color(&c)
                .pos(Pos::new(HPos::Right, VPos::Bottom));
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (t1 - (t1 - t0) / 150, *v),
                    style,
                )))
                .map_err(e)?;
        }
        // The series.
        for (k, (label, pts)) in p.series.iter().enumerate() {
            let c = SERIES_COLOURS[k % SERIES_COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied().filter(|(_, v)| v.is_finite()),
                    c.stroke_width(2),
                ))
                .map_err(e)?;
            legend.push((Swatch::Line, c, label.clone()));
        }
        draw_legend(&legend_area, &legend).map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_round_local_times() {
        // 2017-08-26T10:07:00Z .. +6 h, zone -05:00: hourly ticks at local :00.
        let start = 1_503_742_020_000;
        let zone: Zone = "-05:00".parse().expect("zone");
        let axis = TimeAxis {
            start,
            end: start + 6 * 60 * MINUTE,
            zone,
        };
        let ticks = axis.ticks(8);
        // 6 h fits at most 8 ticks with 1 h steps (7 points); first at 11:00Z = 06:00-05:00.
        assert_eq!(ticks.first(), Some(&(start + 53 * MINUTE)));
        assert!(ticks.windows(2).all(|w| w[1] - w[0] == 60 * MINUTE));
        assert_eq!(axis.label(ticks[0], Some(ticks[0])), "26 Aug 06:00");
        assert_eq!(axis.label(ticks[1], Some(ticks[0])), "07:00");
    }

    #[test]
    fn level_colours() {
        let levels = Levels::from([(
            "r".to_string(),
            vec!["low".to_string(), "mid".to_string(), "high".to_string()],
        )]);
        assert_eq!(level_rgb("Red", &levels), (210, 35, 42));
        assert_eq!(level_rgb("low", &levels), (190, 185, 215));
        assert_eq!(level_rgb("high", &levels), (70, 60, 120));
        assert_eq!(unit_of(&[("rain 1 h (mm)".into(), vec![])]), "mm");
    }

    #[test]
    fn histogram_colours_late_bins_and_clamps_far_leads() {
        let svg = lead_histogram(&[-10.0, 70.0, 75.0])
            .expect("draw")
            .expect("svg");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("#CD3C28")); // late
        assert!(svg.contains("#286EB4")); // ahead
                                          // A lead of ~2000 years does not make 10^8 bins.
        let svg = lead_histogram(&[1e12, -5.0]).expect("draw").expect("svg");
        assert!(svg.len() < 50_000);
        assert_eq!(lead_histogram(&[f64::NAN]).expect("draw"), None);
    }
}
