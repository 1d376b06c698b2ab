//! Instants, zones and timestamp parsing.
//!
//! Internally every instant is UTC milliseconds since the Unix epoch ([`Millis`]). Inputs may
//! give RFC 3339 with an offset, or epoch seconds/milliseconds; a timestamp without an offset
//! is an error unless the source names a zone (semantics.md, Time).

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use forewarn_rules::ir::Millis;

/// A time zone: a fixed offset or an IANA zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// A fixed UTC offset such as `+08:00` or `-05:00`.
    Fixed(FixedOffset),
    /// An IANA zone such as `Asia/Shanghai`.
    Iana(chrono_tz::Tz),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"))
    }
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not a timestamp forewarn understands.
    #[error(
        "not a timestamp: {0:?} (expected RFC 3339 with an offset, or epoch seconds/milliseconds)"
    )]
    Malformed(String),
    /// A local time without an offset, and no zone configured for the source.
    #[error("timestamp {0:?} has no UTC offset and the source names no time zone")]
    NoOffset(String),
    /// A local time that does not exist in the zone (a DST gap).
    #[error("local time {0:?} does not exist in the zone (daylight-saving gap)")]
    Nonexistent(String),
    /// A local time that occurs twice in the zone (the hour repeated when DST ends).
    #[error("local time {0:?} is ambiguous in the zone (it occurs twice when daylight saving ends); send an offset")]
    Ambiguous(String),
}

/// An unknown zone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?} (use an IANA name like Asia/Shanghai or an offset like +08:00)")]
pub struct UnknownZone(pub String);

impl FromStr for Zone {
    type Err = UnknownZone;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::default());
        }
        if let Some(off) = parse_offset(t) {
            return Ok(Zone::Fixed(off));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Iana)
            .map_err(|_| UnknownZone(s.to_string()))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(o) => write!(f, "{o}"),
            Zone::Iana(tz) => write!(f, "{}", tz.name()),
        }
    }
}

fn parse_offset(t: &str) -> Option<FixedOffset> {
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None if rest.len() <= 2 => (rest, "0"),
        None => return None,
    };
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

impl Zone {
    /// The instant of a local date-time in this zone; an error when it does not exist or
    /// occurs twice (readings must not silently collide).
    pub fn local_to_utc_strict(
        &self,
        local: NaiveDateTime,
        text: &str,
    ) -> Result<Millis, TimeError> {
        fn strict<T: TimeZone>(
            r: LocalResult<DateTime<T>>,
            text: &str,
        ) -> Result<Millis, TimeError> {
            match r {
                LocalResult::Single(d) => Ok(d.timestamp_millis()),
                LocalResult::Ambiguous(..) => Err(TimeError::Ambiguous(text.to_string())),
                LocalResult::None => Err(TimeError::Nonexistent(text.to_string())),
            }
        }
        match self {
            Zone::Fixed(o) => strict(o.from_local_datetime(&local), text),
            Zone::Iana(tz) => strict(tz.from_local_datetime(&local), text),
        }
    }

    /// The instant of a local date-time in this zone (the earlier one when ambiguous).
    pub fn local_to_utc(&self, local: NaiveDateTime) -> Option<Millis> {
        match self {
            Zone::Fixed(o) => {
                map_local(o.from_local_datetime(&local)).map(|dt| dt.timestamp_millis())
            }
            Zone::Iana(tz) => {
                map_local(tz.from_local_datetime(&local)).map(|dt| dt.timestamp_millis())
            }
        }
    }

    /// The offset in force at an instant.
    pub fn offset_at(&self, t: Millis) -> FixedOffset {
        let utc = DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap_or_default()
            .naive_utc();
        match self {
            Zone::Fixed(o) => *o,
            Zone::Iana(tz) => tz.offset_from_utc_datetime(&utc).fix(),
        }
    }

    /// Render an instant as RFC 3339 in this zone (`2017-08-26T22:00:00-05:00`); milliseconds
    /// are shown only when not zero.
    pub fn format(&self, t: Millis) -> String {
        let off = self.offset_at(t);
        let dt = DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap_or_default()
            .with_timezone(&off);
        if t.rem_euclid(1000) == 0 {
            dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
        } else {
            dt.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
        }
    }

    /// The most recent local `hour:minute` strictly before `t` (the start of a calendar
    /// window `(anchor, t]`).
    pub fn anchor_before(&self, t: Millis, hour: u32, minute: u32) -> Millis {
        let local = DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap_or_default()
            .with_timezone(&self.offset_at(t))
            .naive_local();
        let at = NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or_default();
        let mut day = local.date();
        for _ in 0..3 {
            if let Some(a) = self.local_to_utc(day.and_time(at)) {
                if a < t {
                    return a;
                }
            }
            day -= Duration::days(1);
        }
        t - forewarn_rules::ir::DAY
    }

    /// The first local `hour:minute` strictly after `anchor` (the next day boundary).
    pub fn next_anchor(&self, anchor: Millis, hour: u32, minute: u32) -> Millis {
        // The boundary a day and a bit later, then back to the latest one before it.
        self.anchor_before(
            anchor + forewarn_rules::ir::DAY + 3 * forewarn_rules::ir::HOUR,
            hour,
            minute,
        )
    }
}

fn map_local<T: TimeZone>(r: LocalResult<DateTime<T>>) -> Option<DateTime<T>> {
    match r {
        LocalResult::Single(d) => Some(d),
        LocalResult::Ambiguous(a, _) => Some(a),
        LocalResult::None => None,
    }
}

/// Parse a timestamp: RFC 3339 (`T` or a space between date and time) with an offset, epoch
/// seconds (up to 11 digits) or epoch milliseconds, or a local date-time read in `zone`.
pub fn parse_timestamp(text: &str, zone: Option<&Zone>) -> Result<Millis, TimeError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(TimeError::Malformed(text.to_string()));
    }
    if let Some(ms) = parse_epoch(s) {
        return Ok(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_millis());
    }
    let spaced = s.replacen(' ', "T", 1);
    if let Ok(dt) = DateTime::parse_from_rfc3339(&spaced) {
        return Ok(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&spaced, fmt) {
            let Some(zone) = zone else {
                return Err(TimeError::NoOffset(text.to_string()));
            };
            return zone.local_to_utc_strict(naive, text);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let Some(zone) = zone else {
            return Err(TimeError::NoOffset(text.to_string()));
        };
        return zone
            .local_to_utc(d.and_time(NaiveTime::MIN))
            .ok_or_else(|| TimeError::Nonexistent(text.to_string()));
    }
    Err(TimeError::Malformed(text.to_string()))
}

fn parse_epoch(s: &str) -> Option<Millis> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if digits.len() <= 11 {
        let secs: f64 = s.parse().ok()?;
        Some((secs * 1000.0).round() as Millis)
    } else {
        int.parse().ok()
    }
}

/// Parse a duration such as `90s`, `30m`, `1h30m`, `2d`, `500ms` (for configuration files).
pub fn parse_duration(text: &str) -> Option<Millis> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: Millis = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit())?;
        if n_end == 0 {
            return None;
        }
        let n: Millis = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[u_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_epochs_and_local_times() {
        let z: Zone = "-05:00".parse().unwrap();
        let t = parse_timestamp("2017-08-25 00:05:00", Some(&z)).unwrap();
        assert_eq!(z.format(t), "2017-08-25T00:05:00-05:00");
        assert_eq!(Zone::default().format(t), "2017-08-25T05:05:00+00:00");
        assert_eq!(parse_timestamp("2017-08-25T05:05:00Z", None), Ok(t));
        assert_eq!(parse_timestamp("1503637500", None), Ok(t));
        assert_eq!(parse_timestamp("1503637500000", None), Ok(t));
        assert!(matches!(
            parse_timestamp("2024-07-01 10:05:00", None),
            Err(TimeError::NoOffset(_))
        ));
        assert!(matches!(
            parse_timestamp("yesterday", None),
            Err(TimeError::Malformed(_))
        ));
    }

    #[test]
    fn dst_ambiguous_and_missing_local_times_are_errors() {
        let z: Zone = "America/Chicago".parse().unwrap();
        assert!(matches!(
            parse_timestamp("2017-11-05 01:30:00", Some(&z)),
            Err(TimeError::Ambiguous(_))
        ));
        assert!(matches!(
            parse_timestamp("2017-03-12 02:30:00", Some(&z)),
            Err(TimeError::Nonexistent(_))
        ));
        assert!(parse_timestamp("2017-11-05 02:30:00", Some(&z)).is_ok());
    }

    #[test]
    fn hydrological_day_anchor() {
        let z: Zone = "Asia/Shanghai".parse().unwrap();
        let at = |s: &str| parse_timestamp(s, None).unwrap();
        // 08:00 belongs to the previous day: the anchor before 08:00 is yesterday's 08:00.
        assert_eq!(
            z.anchor_before(at("2024-07-01T08:00:00+08:00"), 8, 0),
            at("2024-06-30T08:00:00+08:00")
        );
        assert_eq!(
            z.anchor_before(at("2024-07-01T08:00:01+08:00"), 8, 0),
            at("2024-07-01T08:00:00+08:00")
        );
        assert_eq!(
            z.next_anchor(at("2024-07-01T08:00:00+08:00"), 8, 0),
            at("2024-07-02T08:00:00+08:00")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("5 minutes"), None);
    }
}
