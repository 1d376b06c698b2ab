//! Parsers: forewarn's native JSON Lines, NWS API gridpoint layers, ISO-8601 durations and
//! intervals, units.

use forewarn_rules::ir::Millis;
use serde_json::{Map, Value};

use super::{Forecast, ForecastError, ForecastInterval, ForecastTarget, Location, Problem};
use crate::time::parse_timestamp;

/// A unit of forecast values. Lengths are depths and become millimetres (the canonical
/// unit); `percent` is kept as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Millimetres (`mm`, `wmoUnit:mm`).
    Millimetre,
    /// Centimetres (`cm`, `wmoUnit:cm`): ×10.
    Centimetre,
    /// Metres (`m`, `wmoUnit:m`): ×1000.
    Metre,
    /// Inches (`in`): ×25.4.
    Inch,
    /// Percent (`percent`, `%`, `wmoUnit:percent`): as given.
    Percent,
}

impl Unit {
    /// Read a unit name, with or without the NWS `wmoUnit:` prefix; `None` if unknown.
    pub fn parse(text: &str) -> Option<Unit> {
        let t = text.trim();
        let t = t.strip_prefix("wmoUnit:").unwrap_or(t);
        Some(match t {
            "mm" => Unit::Millimetre,
            "cm" => Unit::Centimetre,
            "m" => Unit::Metre,
            "in" => Unit::Inch,
            "percent" | "%" => Unit::Percent,
            _ => return None,
        })
    }

    /// A value in this unit in the canonical unit (mm for lengths).
    pub fn to_canonical(self, value: f64) -> f64 {
        match self {
            Unit::Millimetre | Unit::Percent => value,
            Unit::Centimetre => value * 10.0,
            Unit::Metre => value * 1000.0,
            Unit::Inch => value * 25.4,
        }
    }
}

fn duration_error(text: &str, why: &'static str) -> Problem {
    Problem::Duration {
        text: text.to_string(),
        why,
    }
}

/// Parse an ISO-8601 duration `PnW` or `PnDTnHnMnS` (any component may be absent but not all;
/// the last may have a decimal fraction) into milliseconds. Years and months (`P1Y`, `P1M`) are
/// refused: they have no fixed length.
pub fn parse_iso_duration(text: &str) -> Result<Millis, Problem> {
    const SECOND: i64 = 1000;
    let s = text.trim();
    let rest = s
        .strip_prefix('P')
        .ok_or_else(|| duration_error(text, "does not start with P"))?;
    let mut total: i64 = 0;
    let mut in_time = false;
    let mut any = false;
    let mut after_t = false;
    // Designators in the order they must come: date part then time part.
    let mut rank = 0u8;
    let mut fraction_seen = false;
    let mut bytes = rest;
    while !bytes.is_empty() {
        if let Some(r) = bytes.strip_prefix('T') {
            if in_time {
                return Err(duration_error(text, "T twice"));
            }
            in_time = true;
            after_t = true;
            bytes = r;
            continue;
        }
        if fraction_seen {
            return Err(duration_error(
                text,
                "only the last component may have a fraction",
            ));
        }
        let n_end = bytes
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
            .ok_or_else(|| duration_error(text, "number without a designator"))?;
        if n_end == 0 {
            return Err(duration_error(text, "designator without a number"));
        }
        let number = &bytes[..n_end];
        let designator = bytes[n_end..].chars().next().unwrap_or(' ');
        bytes = &bytes[n_end + designator.len_utf8()..];
        let (unit, r) = match (in_time, designator) {
            (false, 'Y') | (false, 'M') => {
                return Err(duration_error(
                    text,
                    "years and months have no fixed length",
                ))
            }
            (false, 'W') => (7 * 24 * 3600 * SECOND, 1),
            (false, 'D') => (24 * 3600 * SECOND, 2),
            (true, 'H') => (3600 * SECOND, 3),
            (true, 'M') => (60 * SECOND, 4),
            (true, 'S') => (SECOND, 5),
            _ => return Err(duration_error(text, "unknown designator")),
        };
        if r <= rank {
            return Err(duration_error(text, "designators out of order or repeated"));
        }
        rank = r;
        let (int, frac) = match number.find(['.', ',']) {
            Some(i) => (&number[..i], &number[i + 1..]),
            None => (number, ""),
        };
        if int.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(duration_error(text, "bad number"));
        }
        let n: i64 = int
            .parse()
            .map_err(|_| duration_error(text, "number too large"))?;
        let mut ms = n
            .checked_mul(unit)
            .ok_or_else(|| duration_error(text, "too long"))?;
        if !frac.is_empty() {
            fraction_seen = true;
            let f: f64 = format!("0.{frac}")
                .parse()
                .map_err(|_| duration_error(text, "bad number"))?;
            ms = ms
                .checked_add((f * unit as f64).round() as i64)
                .ok_or_else(|| duration_error(text, "too long"))?;
        }
        total = total
            .checked_add(ms)
            .ok_or_else(|| duration_error(text, "too long"))?;
        any = true;
        if in_time {
            after_t = false;
        }
    }
    if after_t {
        return Err(duration_error(text, "T without a time component"));
    }
    if !any {
        return Err(duration_error(text, "no components"));
    }
    Ok(total)
}

/// Parse an ISO-8601 interval `START/DURATION` (the NWS `validTime`), `START/END` or
/// `DURATION/END` into `(start, end)` UTC ms. Timestamps need an offset.
pub fn parse_valid_time(text: &str) -> Result<(Millis, Millis), Problem> {
    let (a, b) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| duration_error(text, "no '/' between start and duration"))?;
    let too_long = || duration_error(text, "too long");
    if a.starts_with('P') {
        let end = parse_timestamp(b, None)?;
        let d = parse_iso_duration(a)?;
        return Ok((end.checked_sub(d).ok_or_else(too_long)?, end));
    }
    let start = parse_timestamp(a, None)?;
    if b.starts_with('P') {
        let d = parse_iso_duration(b)?;
        return Ok((start, start.checked_add(d).ok_or_else(too_long)?));
    }
    Ok((start, parse_timestamp(b, None)?))
}

/// Check that `iv` may follow an interval ending at `prev_end` (see [`Forecast::validate`]).
pub(super) fn check_interval(
    index: usize,
    iv: &ForecastInterval,
    prev_end: Option<Millis>,
) -> Result<(), Problem> {
    if iv.start >= iv.end {
        return Err(Problem::EmptyInterval {
            index,
            start: iv.start,
            end: iv.end,
        });
    }
    if iv.end.checked_sub(iv.start).is_none() {
        return Err(Problem::TooLong { index });
    }
    if !iv.value.is_finite() {
        return Err(Problem::NotFinite { index });
    }
    match prev_end {
        Some(p) if iv.start < p => Err(Problem::Overlap {
            index,
            start: iv.start,
            previous_end: p,
        }),
        _ => Ok(()),
    }
}

/// Defaults for JSON Lines fields a line leaves out (from the `[[forecast]]` section).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonlDefaults {
    /// Feed for lines without `feed`.
    pub feed: Option<String>,
    /// Target for lines with neither `area` nor `entity`.
    pub target: Option<ForecastTarget>,
    /// Arrival time for lines without `received`.
    pub received: Option<Millis>,
}

/// Parse forewarn's native JSON Lines: one forecast per non-blank line, one result per such
/// line in order; errors carry the 1-based line number and JSON path, and a bad line does not
/// stop the rest. See `docs/forecasts.md` for the format.
pub fn parse_jsonl(text: &str, defaults: &JsonlDefaults) -> Vec<Result<Forecast, ForecastError>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l, i + 1, defaults))
        .collect()
}

/// Parse one forecast in the JSON Lines format, given as a whole document (an MQTT payload):
/// one JSON object, which may span several lines (raw line breaks can only be whitespace
/// between JSON tokens). Errors carry the JSON path but no line number.
pub fn parse_forecast_json(
    text: &str,
    defaults: &JsonlDefaults,
) -> Result<Forecast, ForecastError> {
    parse_object(text, Ctx { line: None }, defaults)
}

struct Ctx {
    line: Option<usize>,
}

impl Ctx {
    fn err(&self, path: impl Into<String>, problem: Problem) -> ForecastError {
        ForecastError::Invalid {
            at: Location {
                line: self.line,
                ..Location::default()
            }
            .at(path),
            problem,
        }
    }

    fn opt_str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<&'v str>, ForecastError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(
                format!("{path}.{key}"),
                Problem::Type {
                    expected: "a string",
                },
            )),
        }
    }

    fn req_str<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<&'v str, ForecastError> {
        self.opt_str(obj, key, path)?
            .ok_or_else(|| self.err(format!("{path}.{key}"), Problem::Missing))
    }

    /// A timestamp given as a string (RFC 3339 with offset, epoch digits) or a number (epoch).
    fn opt_time(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<Millis>, ForecastError> {
        let at = || format!("{path}.{key}");
        let text = match obj.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(self.err(
                    at(),
                    Problem::Type {
                        expected: "a timestamp string",
                    },
                ))
            }
        };
        parse_timestamp(&text, None)
            .map(Some)
            .map_err(|e| self.err(at(), Problem::Time(e)))
    }

    fn value(&self, obj: &Map<String, Value>, path: &str) -> Result<Option<f64>, ForecastError> {
        let at = || format!("{path}.value");
        match obj.get("value") {
            None => Err(self.err(at(), Problem::Missing)),
            Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| {
                self.err(
                    at(),
                    Problem::Type {
                        expected: "a number or null",
                    },
                )
            }),
            Some(_) => Err(self.err(
                at(),
                Problem::Type {
                    expected: "a number or null",
                },
            )),
        }
    }

    fn unit(&self, text: Option<&str>, path: &str) -> Result<Option<Unit>, ForecastError> {
        text.map(|u| {
            Unit::parse(u).ok_or_else(|| self.err(path, Problem::UnknownUnit(u.to_string())))
        })
        .transpose()
    }

    /// Append an interval (skipping a null value: a gap), checking the invariants.
    fn push(
        &self,
        intervals: &mut Vec<ForecastInterval>,
        (start, end): (Millis, Millis),
        value: Option<f64>,
        unit: Option<Unit>,
        path: &str,
    ) -> Result<(), ForecastError> {
        let Some(v) = value else {
            return Ok(());
        };
        let iv = ForecastInterval {
            start,
            end,
            value: unit.map_or(v, |u| u.to_canonical(v)),
        };
        check_interval(intervals.len(), &iv, intervals.last().map(|p| p.end))
            .map_err(|p| self.err(path, p))?;
        intervals.push(iv);
        Ok(())
    }
}

fn as_object<'v>(
    ctx: &Ctx,
    v: &'v Value,
    path: &str,
) -> Result<&'v Map<String, Value>, ForecastError> {
    v.as_object().ok_or_else(|| {
        ctx.err(
            path,
            Problem::Type {
                expected: "an object",
            },
        )
    })
}

fn parse_line(
    line: &str,
    number: usize,
    defaults: &JsonlDefaults,
) -> Result<Forecast, ForecastError> {
    parse_object(line, Ctx { line: Some(number) }, defaults)
}

fn parse_object(line: &str, ctx: Ctx, defaults: &JsonlDefaults) -> Result<Forecast, ForecastError> {
    let root: Value =
        serde_json::from_str(line).map_err(|e| ctx.err("$", Problem::Json(e.to_string())))?;
    let obj = as_object(&ctx, &root, "$")?;
    let feed = match ctx.opt_str(obj, "feed", "$")? {
        Some(f) => f.to_string(),
        None => defaults
            .feed
            .clone()
            .ok_or_else(|| ctx.err("$.feed", Problem::Missing))?,
    };
    let target = match (
        ctx.opt_str(obj, "area", "$")?,
        ctx.opt_str(obj, "entity", "$")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ctx.err("$", Problem::Target("both \"area\" and \"entity\"")))
        }
        (Some(a), None) => ForecastTarget::Area(a.to_string()),
        (None, Some(e)) => ForecastTarget::Entity(e.to_string()),
        (None, None) => defaults
            .target
            .clone()
            .ok_or_else(|| ctx.err("$", Problem::Target("neither \"area\" nor \"entity\"")))?,
    };
    let issued = ctx
        .opt_time(obj, "issued", "$")?
        .ok_or_else(|| ctx.err("$.issued", Problem::Missing))?;
    let received = ctx.opt_time(obj, "received", "$")?.or(defaults.received);
    let unit = ctx.unit(ctx.opt_str(obj, "unit", "$")?, "$.unit")?;
    let list = match obj.get("intervals") {
        None | Some(Value::Null) => return Err(ctx.err("$.intervals", Problem::Missing)),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ctx.err(
                "$.intervals",
                Problem::Type {
                    expected: "an array",
                },
            ))
        }
    };
    let mut intervals = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("$.intervals[{i}]");
        let iv = as_object(&ctx, item, &path)?;
        let span = match ctx.opt_str(iv, "valid", &path)? {
            Some(valid) => {
                parse_valid_time(valid).map_err(|p| ctx.err(format!("{path}.valid"), p))?
            }
            None => {
                let start = ctx.opt_time(iv, "start", &path)?;
                let end = ctx.opt_time(iv, "end", &path)?;
                let start =
                    start.ok_or_else(|| ctx.err(format!("{path}.start"), Problem::Missing))?;
                let end = end.ok_or_else(|| ctx.err(format!("{path}.end"), Problem::Missing))?;
                (start, end)
            }
        };
        let value = ctx.value(iv, &path)?;
        ctx.push(&mut intervals, span, value, unit, &path)?;
    }
    Ok(Forecast {
        feed,
        target,
        issued,
        received,
        intervals,
    })
}

/// Parse one layer (e.g. `quantitativePrecipitation`) of an NWS API gridpoint forecast
/// (`GET /gridpoints/{office}/{x},{y}`): issued = `properties.updateTime`; each
/// `values[i].validTime` is `START/DURATION`; a null value is a gap; lengths (`wmoUnit:mm`,
/// `wmoUnit:cm`, `wmoUnit:m`) become mm, `wmoUnit:percent` is kept, any other `uom` is an error
/// naming it. `received` is left unset.
pub fn parse_nws_gridpoint(
    json: &str,
    layer: &str,
    feed: &str,
    target: ForecastTarget,
) -> Result<Forecast, ForecastError> {
    let ctx = Ctx { line: None };
    let root: Value =
        serde_json::from_str(json).map_err(|e| ctx.err("$", Problem::Json(e.to_string())))?;
    let root = as_object(&ctx, &root, "$")?;
    let props = match root.get("properties") {
        None | Some(Value::Null) => return Err(ctx.err("$.properties", Problem::Missing)),
        Some(p) => as_object(&ctx, p, "$.properties")?,
    };
    let issued = ctx
        .opt_time(props, "updateTime", "$.properties")?
        .ok_or_else(|| ctx.err("$.properties.updateTime", Problem::Missing))?;
    let lpath = format!("$.properties.{layer}");
    let lobj = match props.get(layer) {
        None | Some(Value::Null) => return Err(ctx.err(lpath, Problem::Missing)),
        Some(l) => as_object(&ctx, l, &lpath)?,
    };
    let uom = ctx.req_str(lobj, "uom", &lpath)?;
    let unit = ctx.unit(Some(uom), &format!("{lpath}.uom"))?;
    let list = match lobj.get("values") {
        None | Some(Value::Null) => {
            return Err(ctx.err(format!("{lpath}.values"), Problem::Missing))
        }
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ctx.err(
                format!("{lpath}.values"),
                Problem::Type {
                    expected: "an array",
                },
            ))
        }
    };
    let mut intervals = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("{lpath}.values[{i}]");
        let v = as_object(&ctx, item, &path)?;
        let valid = ctx.req_str(v, "validTime", &path)?;
        let span = parse_valid_time(valid).map_err(|p| ctx.err(format!("{path}.validTime"), p))?;
        let value = ctx.value(v, &path)?;
        ctx.push(&mut intervals, span, value, unit, &path)?;
    }
    Ok(Forecast {
        feed: feed.to_string(),
        target,
        issued,
        received: None,
        intervals,
    })
}
