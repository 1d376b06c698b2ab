//! The `[[forecast]]` configuration section: a forecast file to load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::parse::{parse_jsonl, parse_nws_gridpoint, JsonlDefaults};
use super::{Forecast, ForecastError, ForecastTarget};
use crate::time::parse_timestamp;

/// The format of a forecast file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastFormat {
    /// forewarn's native JSON Lines (`jsonl`), one forecast per line.
    Jsonl,
    /// One layer of an NWS API gridpoint forecast (`nws-gridpoint`).
    NwsGridpoint,
}

/// One `[[forecast]]` section.
///
/// ```toml
/// [[forecast]]
/// name = "tae-qpf"
/// format = "nws-gridpoint"
/// path = "fixtures/nws-gridpoint/detailed_forecast.json"
/// feed = "qpf"
/// layer = "quantitativePrecipitation"
/// area = "Apalachicola"
/// received = "2022-02-04T03:40:00Z"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ForecastSourceConfig {
    /// A name for messages.
    pub name: String,
    /// `jsonl` or `nws-gridpoint`.
    pub format: ForecastFormat,
    /// The file, relative to the configuration file's directory.
    pub path: PathBuf,
    /// The feed: the feed of an NWS layer (required there); for JSON Lines, the feed of
    /// lines without `feed` (optional: lines that name theirs need none).
    pub feed: Option<String>,
    /// The NWS layer (e.g. `quantitativePrecipitation`); required for `nws-gridpoint`.
    pub layer: Option<String>,
    /// The target area (NWS: this or `entity` is required; JSON Lines: for lines without one).
    pub area: Option<String>,
    /// The target entity (as `area`).
    pub entity: Option<String>,
    /// A fixed arrival time (RFC 3339 with offset) for forecasts without `received`.
    pub received: Option<String>,
}

impl ForecastSourceConfig {
    fn config_error(&self, message: impl Into<String>) -> ForecastError {
        ForecastError::Config {
            name: self.name.clone(),
            message: message.into(),
        }
    }

    fn target(&self) -> Result<Option<ForecastTarget>, ForecastError> {
        match (&self.area, &self.entity) {
            (Some(_), Some(_)) => Err(self.config_error("give `area` or `entity`, not both")),
            (Some(a), None) => Ok(Some(ForecastTarget::Area(a.clone()))),
            (None, Some(e)) => Ok(Some(ForecastTarget::Entity(e.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// Read and parse the file (`path` relative to `base_dir` unless absolute). The outer
    /// error is for the section or the file as a whole (unreadable, bad settings, an NWS file
    /// that does not parse); the inner results are per forecast (per line for JSON Lines), so
    /// bad lines can be dead-lettered. Errors name the file.
    pub fn load(
        &self,
        base_dir: &Path,
    ) -> Result<Vec<Result<Forecast, ForecastError>>, ForecastError> {
        let target = self.target()?;
        let received = self
            .received
            .as_deref()
            .map(|r| {
                parse_timestamp(r, None)
                    .map_err(|e| self.config_error(format!("bad `received`: {e}")))
            })
            .transpose()?;
        let path = base_dir.join(&self.path);
        let text = std::fs::read_to_string(&path).map_err(|e| ForecastError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        match self.format {
            ForecastFormat::Jsonl => {
                let defaults = JsonlDefaults {
                    feed: self.feed.clone(),
                    target,
                    received,
                };
                Ok(parse_jsonl(&text, &defaults)
                    .into_iter()
                    .map(|r| r.map_err(|e| e.with_file(&path)))
                    .collect())
            }
            ForecastFormat::NwsGridpoint => {
                let layer = self
                    .layer
                    .as_deref()
                    .ok_or_else(|| self.config_error("`layer` is required for nws-gridpoint"))?;
                let target = target.ok_or_else(|| {
                    self.config_error("`area` or `entity` is required for nws-gridpoint")
                })?;
                let feed = self
                    .feed
                    .as_deref()
                    .ok_or_else(|| self.config_error("`feed` is required for nws-gridpoint"))?;
                let mut forecast = parse_nws_gridpoint(&text, layer, feed, target)
                    .map_err(|e| e.with_file(&path))?;
                forecast.received = received;
                Ok(vec![Ok(forecast)])
            }
        }
    }
}
