//! The TOML configuration of `forewarn run`: rules, engine settings, sources and outputs.
//!
//! Relative paths are resolved against the directory of the configuration file. Every
//! problem in a file is reported together ([`ConfigError::Invalid`] lists them all).

use std::path::{Path, PathBuf};

use forewarn_rules::ir::Millis;
use serde::Deserialize;

use crate::cap::{CapConfig, CapStatus, CapWriter, DEFAULT_EXPIRES_AFTER};
use crate::engine::{ClockMode, EngineConfig};
use crate::forecast::{AsOf, ForecastSourceConfig};
use crate::time::{parse_duration, Zone};

/// Errors reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (with line and column).
        message: String,
    },
    /// Values that parse but make no sense; every one is listed.
    #[error("invalid config {path}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// The rule file.
    rules: String,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    output: RawOutput,
    history: Option<RawHistory>,
    cap: Option<RawCap>,
    #[serde(default, rename = "forecast")]
    forecasts: Vec<ForecastSourceConfig>,
}

/// The `[cap]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCap {
    sender: Option<String>,
    identifier_prefix: Option<String>,
    status: Option<String>,
    category: Option<String>,
    sender_name: Option<String>,
    expires_after: Option<String>,
    #[serde(default)]
    languages: Vec<String>,
    area_column: Option<String>,
    geocodes: Option<Vec<RawGeocode>>,
}

/// One `geocodes` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGeocode {
    value_name: String,
    column: String,
}

impl RawCap {
    /// Validate against the CAP writer's rules; problems are appended to `problems`.
    pub(crate) fn resolve(&self, zone: Zone, problems: &mut Vec<String>) -> Option<CapSettings> {
        let Some(sender) = self.sender.clone() else {
            problems.push(
                "cap.sender: required when output.cap is set (e.g. sender = \"forewarn.example.org\")"
                    .into(),
            );
            return None;
        };
        let prefix = self
            .identifier_prefix
            .clone()
            .unwrap_or_else(|| sender.clone());
        let mut config = CapConfig::new(sender, prefix);
        config.zone = zone;
        if let Some(s) = &self.status {
            match s.parse::<CapStatus>() {
                Ok(v) => config.status = v,
                Err(e) => problems.push(format!("cap.status: {e}")),
            }
        }
        if let Some(c) = &self.category {
            config.category = c.clone();
        }
        config.sender_name = self.sender_name.clone();
        config.expires_after = match &self.expires_after {
            None => Some(DEFAULT_EXPIRES_AFTER),
            Some(s) => match parse_duration(s) {
                Some(d) if d > 0 => Some(d),
                _ => {
                    problems.push(format!(
                        "cap.expires-after: {s:?} is not a positive duration (e.g. 6h, 90m)"
                    ));
                    Some(DEFAULT_EXPIRES_AFTER)
                }
            },
        };
        config.languages = self.languages.clone();
        // the writer checks the sender, the category and the language tags
        if let Err(e) = CapWriter::new(config.clone()) {
            problems.push(format!("cap: {e}"));
        }
        let geocodes = match &self.geocodes {
            None => Vec::new(),
            Some(g) => {
                for (i, code) in g.iter().enumerate() {
                    if code.value_name.trim().is_empty() || code.column.trim().is_empty() {
                        problems.push(format!(
                            "cap.geocodes[{i}]: value-name and column must not be empty"
                        ));
                    }
                }
                g.iter()
                    .map(|c| (c.value_name.clone(), c.column.clone()))
                    .collect()
            }
        };
        Some(CapSettings {
            config,
            area_column: self.area_column.clone(),
            geocodes,
        })
    }
}

/// CAP output settings (`[cap]`, used when `[output] cap` names a directory).
#[derive(Debug, Clone, PartialEq)]
pub struct CapSettings {
    /// Sender, identifier prefix, status, category, sender name, expiry, languages; times in
    /// the display zone.
    pub config: CapConfig,
    /// A table column holding each entity's area description (`areaDesc`); none: the entity id.
    pub area_column: Option<String>,
    /// `(valueName, column)`: geocodes taken from table columns; empty: one geocode
    /// `forewarn:entity` = the entity id.
    pub geocodes: Vec<(String, String)>,
}

/// The `[history]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawHistory {
    pub(crate) dir: String,
    pub(crate) checkpoint_every: Option<u64>,
    pub(crate) checkpoint_interval: Option<String>,
    pub(crate) segment_rows: Option<u64>,
}

impl RawHistory {
    /// Validate; problems are appended to `problems`.
    pub(crate) fn resolve(
        &self,
        rel: &dyn Fn(&str) -> PathBuf,
        problems: &mut Vec<String>,
    ) -> HistoryConfig {
        let d = HistoryConfig::defaults(rel(&self.dir));
        let interval = match &self.checkpoint_interval {
            None => d.checkpoint_interval,
            Some(s) => parse_duration(s).unwrap_or_else(|| {
                problems.push(format!(
                    "history.checkpoint-interval: {s:?} is not a duration (e.g. 10s, 1m)"
                ));
                d.checkpoint_interval
            }),
        };
        let positive = |key: &str, v: Option<u64>, default: u64, problems: &mut Vec<String>| match v
        {
            Some(0) => {
                problems.push(format!("history.{key}: must be at least 1"));
                default
            }
            Some(n) => n,
            None => default,
        };
        HistoryConfig {
            checkpoint_every: positive(
                "checkpoint-every",
                self.checkpoint_every,
                d.checkpoint_every,
                problems,
            ),
            checkpoint_interval: interval,
            segment_rows: positive("segment-rows", self.segment_rows, d.segment_rows, problems),
            dir: d.dir,
        }
    }
}

/// Where history, the journal and checkpoints are kept, and how often state is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The data directory: Parquet history by kind and day, `_journal/`, `_checkpoints/`.
    pub dir: PathBuf,
    /// Take a checkpoint after this many readings.
    pub checkpoint_every: u64,
    /// … or after this much wall time (ms), whichever comes first.
    pub checkpoint_interval: Millis,
    /// Seal the journal segment into Parquet once it holds this many readings.
    pub segment_rows: u64,
}

impl HistoryConfig {
    /// Defaults for a data directory: a checkpoint every 100,000 readings or 10 s; Parquet
    /// segments of 1,000,000 readings.
    pub fn defaults(dir: PathBuf) -> Self {
        HistoryConfig {
            dir,
            checkpoint_every: 100_000,
            checkpoint_interval: 10_000,
            segment_rows: 1_000_000,
        }
    }
}

/// The `[engine]` table as written (shared with the daemon's configuration).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawEngine {
    pub(crate) clock: Option<String>,
    pub(crate) watermark_delay: Option<String>,
    pub(crate) display_zone: Option<String>,
    pub(crate) future_skew: Option<String>,
    pub(crate) max_age: Option<String>,
    pub(crate) delayed_after: Option<String>,
    #[serde(default)]
    pub(crate) require_known_entities: bool,
    pub(crate) forecast_as_of: Option<String>,
}

impl RawEngine {
    /// Validate: engine settings and display zone; problems are appended to `problems`.
    pub(crate) fn resolve(&self, problems: &mut Vec<String>) -> (EngineConfig, Zone) {
        let mut dur = |key: &str, v: &Option<String>, default: Millis| -> Millis {
            match v {
                None => default,
                Some(s) => parse_duration(s).unwrap_or_else(|| {
                    problems.push(format!(
                        "engine.{key}: {s:?} is not a duration (e.g. 90s, 5m, 1h30m)"
                    ));
                    default
                }),
            }
        };
        let defaults = EngineConfig::default();
        let watermark_delay = dur(
            "watermark-delay",
            &self.watermark_delay,
            defaults.watermark_delay,
        );
        let future_skew = self
            .future_skew
            .as_ref()
            .map(|_| dur("future-skew", &self.future_skew, 0));
        let max_age = dur("max-age", &self.max_age, defaults.max_age);
        let delayed_after = dur("delayed-after", &self.delayed_after, defaults.delayed_after);
        let clock = match self.clock.as_deref() {
            None | Some("event") => ClockMode::Event,
            Some("wall") => ClockMode::Wall,
            Some(other) => {
                problems.push(format!(
                    "engine.clock: {other:?} is neither \"event\" nor \"wall\""
                ));
                ClockMode::Event
            }
        };
        let forecast_as_of = match self.forecast_as_of.as_deref() {
            None | Some("received") => AsOf::Received,
            Some("issued") => AsOf::Issued,
            Some(other) => {
                problems.push(format!(
                    "engine.forecast-as-of: {other:?} is neither \"received\" nor \"issued\""
                ));
                AsOf::Received
            }
        };
        let display_zone =
            parse_zone(problems, "engine.display-zone", &self.display_zone).unwrap_or_default();
        (
            EngineConfig {
                clock,
                watermark_delay,
                future_skew,
                max_age,
                delayed_after,
                require_known_entities: self.require_known_entities,
                forecast_as_of,
                ..defaults
            },
            display_zone,
        )
    }
}

/// Parse an optional zone setting, recording a problem when it is not a zone.
pub(crate) fn parse_zone(
    problems: &mut Vec<String>,
    key: &str,
    v: &Option<String>,
) -> Option<Zone> {
    let s = v.as_ref()?;
    match s.parse() {
        Ok(z) => Some(z),
        Err(e) => {
            problems.push(format!("{key}: {e}"));
            None
        }
    }
}

/// A `[[source]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSource {
    name: Option<String>,
    format: String,
    path: String,
    feed: Option<String>,
    time_column: Option<String>,
    time_zone: Option<String>,
    entity_column: Option<String>,
    value_column: Option<String>,
    feed_column: Option<String>,
    #[serde(default)]
    skip_columns: Vec<String>,
    header: Option<bool>,
    max_line_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutput {
    warnings: Option<String>,
    status: Option<String>,
    dead_letter: Option<String>,
    console: Option<bool>,
    cap: Option<String>,
}

/// Validate `[[source]]` tables (shared by `forewarn run` and `forewarn serve`).
pub(crate) fn resolve_sources(
    raw: &[RawSource],
    rel: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Vec<SourceConfig> {
    let mut sources = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let name = s.name.clone().unwrap_or_else(|| format!("source{}", i + 1));
        let format = match s.format.as_str() {
            "csv-wide" => SourceFormat::CsvWide,
            "csv" => SourceFormat::Csv,
            "jsonl" | "json-lines" => SourceFormat::Jsonl,
            "history" => SourceFormat::History,
            other => {
                problems.push(format!(
                    "source {name}: format {other:?} is not one of csv-wide, csv, jsonl, history"
                ));
                continue;
            }
        };
        if format == SourceFormat::CsvWide && s.feed.is_none() {
            problems.push(format!("source {name}: a csv-wide source needs `feed`"));
        }
        let time_zone = parse_zone(problems, &format!("source {name}: time-zone"), &s.time_zone);
        sources.push(SourceConfig {
            name,
            format,
            path: rel(&s.path),
            feed: s.feed.clone(),
            time_column: s.time_column.clone().unwrap_or_else(|| "ts".into()),
            time_zone,
            entity_column: s.entity_column.clone().unwrap_or_else(|| "entity".into()),
            value_column: s.value_column.clone().unwrap_or_else(|| "value".into()),
            feed_column: s.feed_column.clone(),
            skip_columns: s.skip_columns.clone(),
            header: s.header.unwrap_or(true),
            max_line_bytes: s.max_line_bytes.unwrap_or(1 << 20),
        });
    }
    sources
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// One row per instant, one column per entity (like the Harvey export); a row is a batch.
    CsvWide,
    /// One reading per row: entity, time, value (and optionally feed) columns.
    Csv,
    /// One JSON payload per line: a reading object or an array of them (a batch).
    Jsonl,
    /// forewarn's Parquet history (a data directory): its accepted readings, replayed in
    /// arrival order, batches as they arrived (backfilling new rules over past data).
    History,
}

/// A configured input.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Name used in dead letters and the summary.
    pub name: String,
    /// Format.
    pub format: SourceFormat,
    /// File path, or `-` for stdin.
    pub path: PathBuf,
    /// Feed for readings that do not name one.
    pub feed: Option<String>,
    /// Time column (CSV formats): default `ts`.
    pub time_column: String,
    /// Zone for timestamps without an offset; without it they are rejected.
    pub time_zone: Option<Zone>,
    /// Entity column (long CSV): default `entity`.
    pub entity_column: String,
    /// Value column (long CSV): default `value`.
    pub value_column: String,
    /// Feed column (long CSV), if any.
    pub feed_column: Option<String>,
    /// Wide CSV: columns that are not entities (the time column is skipped anyway).
    pub skip_columns: Vec<String>,
    /// Whether a CSV file has a header row (default true; without one the columns are
    /// entity, ts, value).
    pub header: bool,
    /// Lines longer than this are rejected as too large (default 1 MiB).
    pub max_line_bytes: usize,
}

/// Where output goes.
#[derive(Debug, Clone, Default)]
pub struct OutputConfig {
    /// Warning records as JSON Lines: a path, or `None` for stdout.
    pub warnings: Option<PathBuf>,
    /// Data-status events as JSON Lines.
    pub status: Option<PathBuf>,
    /// Rejected input with its reason.
    pub dead_letter: Option<PathBuf>,
    /// Also print one human-readable line per warning on stdout.
    pub console: bool,
    /// A directory for CAP 1.2 messages, one file per warning transition (`[cap]` settings).
    pub cap: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The rule file.
    pub rules: PathBuf,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Zone times are displayed in (stored as UTC regardless).
    pub display_zone: Zone,
    /// Inputs, replayed in order.
    pub sources: Vec<SourceConfig>,
    /// Outputs.
    pub output: OutputConfig,
    /// History and durable state (`[history]`); none: nothing is kept, nothing resumes.
    pub history: Option<HistoryConfig>,
    /// CAP settings (`[cap]`); present whenever `output.cap` is.
    pub cap: Option<CapSettings>,
    /// Forecast files (`[[forecast]]`), paths resolved against the configuration file.
    pub forecasts: Vec<ForecastSourceConfig>,
}

/// Read a configuration file's text.
pub(crate) fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Deserialize configuration TOML; syntax errors name the file, line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Resolve paths written in a configuration file against its directory (`-` is stdin/stdout).
pub(crate) fn relative_to(config: &Path) -> impl Fn(&str) -> PathBuf + Copy + '_ {
    let base = config.parent().unwrap_or(Path::new("."));
    move |p: &str| {
        if p == "-" {
            PathBuf::from("-")
        } else {
            base.join(p)
        }
    }
}

impl RunConfig {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        Self::parse(&read_config(path)?, path)
    }

    /// Parse configuration text; `path` locates relative paths and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<RunConfig, ConfigError> {
        let raw: RawConfig = parse_toml(text, path)?;
        let rel = relative_to(path);
        let mut problems = Vec::new();
        let (engine, display_zone) = raw.engine.resolve(&mut problems);
        let sources = resolve_sources(&raw.sources, &rel, &mut problems);
        let history = raw.history.as_ref().map(|h| h.resolve(&rel, &mut problems));
        if raw.sources.is_empty() {
            problems.push("no [[source]] configured".into());
        }
        let cap = match (&raw.output.cap, &raw.cap) {
            (None, _) => None,
            (Some(_), None) => {
                problems.push(
                    "output.cap is set but there is no [cap] section (at least `sender` is required)"
                        .into(),
                );
                None
            }
            (Some(_), Some(c)) => c.resolve(display_zone, &mut problems),
        };
        let mut forecasts = raw.forecasts.clone();
        let mut names = std::collections::HashSet::new();
        for f in &mut forecasts {
            if !names.insert(f.name.clone()) {
                problems.push(format!("forecast {:?}: the name is used twice", f.name));
            }
            if f.area.is_some() && f.entity.is_some() {
                problems.push(format!(
                    "forecast {:?}: give `area` or `entity`, not both",
                    f.name
                ));
            }
            if let Some(p) = f.path.to_str() {
                f.path = rel(p);
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        let out = |v: &Option<String>| v.as_deref().filter(|p| *p != "-").map(rel);
        Ok(RunConfig {
            rules: rel(&raw.rules),
            engine,
            display_zone,
            sources,
            output: OutputConfig {
                warnings: out(&raw.output.warnings),
                status: out(&raw.output.status),
                dead_letter: out(&raw.output.dead_letter),
                console: raw.output.console.unwrap_or(false),
                cap: raw.output.cap.as_deref().map(rel),
            },
            history,
            cap,
            forecasts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
rules = "r.rules"
[engine]
clock = "sundial"
watermark-delay = "soon"
display-zone = "Mars/Olympus"
[[source]]
format = "xml"
path = "x"
"#;
        let err = RunConfig::parse(text, Path::new("/etc/forewarn/f.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let text = "rules = \"r.rules\"\n[[source]]\nformat = \"csv\"\npath = \"-\"\n[output]\ndead-letter = \"dl.jsonl\"\n";
        let c = RunConfig::parse(text, Path::new("/etc/fw/f.toml")).unwrap();
        assert_eq!(c.rules, PathBuf::from("/etc/fw/r.rules"));
        assert_eq!(c.sources[0].path, PathBuf::from("-"));
        assert_eq!(
            c.output.dead_letter,
            Some(PathBuf::from("/etc/fw/dl.jsonl"))
        );
        assert_eq!(c.engine.watermark_delay, 60_000);
    }

    #[test]
    fn cap_and_forecast_sections() {
        let text = r#"
rules = "r.rules"
[engine]
forecast-as-of = "issued"
[[source]]
format = "csv"
path = "in.csv"
[output]
cap = "cap"
[cap]
sender = "forewarn.example.org"
languages = ["zh-CN", "en"]
geocodes = [{ value-name = "admin", column = "area" }]
[[forecast]]
name = "qpf"
format = "jsonl"
path = "fc/qpf.jsonl"
feed = "qpf"
area = "north"
"#;
        let c = RunConfig::parse(text, Path::new("/etc/fw/f.toml")).unwrap();
        assert_eq!(c.engine.forecast_as_of, AsOf::Issued);
        assert_eq!(c.output.cap, Some(PathBuf::from("/etc/fw/cap")));
        let cap = c.cap.unwrap();
        // defaults: prefix = sender, Actual, Met, 6 h
        assert_eq!(cap.config.identifier_prefix, "forewarn.example.org");
        assert_eq!(cap.config.status, CapStatus::Actual);
        assert_eq!(cap.config.category, "Met");
        assert_eq!(cap.config.expires_after, Some(6 * 3_600_000));
        assert_eq!(cap.config.languages, ["zh-CN", "en"]);
        assert_eq!(cap.geocodes, [("admin".to_string(), "area".to_string())]);
        assert_eq!(cap.area_column, None);
        assert_eq!(c.forecasts.len(), 1);
        assert_eq!(c.forecasts[0].path, PathBuf::from("/etc/fw/fc/qpf.jsonl"));
        // defaults without the sections
        let plain = "rules = \"r\"\n[[source]]\nformat = \"csv\"\npath = \"-\"\n";
        let c = RunConfig::parse(plain, Path::new("f.toml")).unwrap();
        assert_eq!(c.engine.forecast_as_of, AsOf::Received);
        assert!(c.cap.is_none() && c.forecasts.is_empty() && c.output.cap.is_none());
        // cap without [cap], and a bad category and language
        let bad = format!("{plain}[output]\ncap = \"cap\"\n");
        let err = RunConfig::parse(&bad, Path::new("f.toml")).unwrap_err();
        assert!(err.to_string().contains("no [cap] section"), "{err}");
        let bad = format!(
            "{plain}[output]\ncap = \"cap\"\n[cap]\nsender = \"s\"\ncategory = \"Weather\"\nexpires-after = \"soon\"\n"
        );
        let err = RunConfig::parse(&bad, Path::new("f.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("cap.expires-after"), "{problems:?}");
        assert!(problems[1].contains("Weather"), "{problems:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "rules = \"r\"\nrulez = 1\n";
        assert!(matches!(
            RunConfig::parse(text, Path::new("f.toml")),
            Err(ConfigError::Syntax { .. })
        ));
    }
}
