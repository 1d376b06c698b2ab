//! `forewarn run`: replay the configured sources through the rules and write warnings,
//! data-status events and dead letters; summarise what happened.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::cap_output::CapOutput;
use crate::config::{HistoryConfig, RunConfig, SourceFormat};
use crate::durable::checkpoint::{read_checkpoint, read_latest, write_checkpoint};
use crate::durable::outfile::{Open, OutFile};
use crate::durable::store::{
    prune_journal, reopen_at, seal, DataDir, Journal, JournalPosition, SharedJournal,
};
use crate::durable::{Batch, Entry, JournalWriter, Outcome, ReadingRow, RejectedRow};
use crate::engine::{ActiveWarning, Counters, Engine, Reading};
use crate::forecast::{Forecast, ForecastFormat};
use crate::loader::{load_rules, LoadError};
use crate::record::{RejectReason, Rejection, Sink, StatusEvent, TransitionKind, Warning};
use crate::source::{replay, Committed, DeadLetter, ReplayOutput, ReplayTarget, SourceStats};
use crate::time::Zone;
use forewarn_rules::diag::did_you_mean;
use forewarn_rules::ir::{Millis, Plan};

/// Errors that stop a run before or while it starts (bad input never does).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The rules do not load.
    #[error(transparent)]
    Rules(#[from] LoadError),
    /// Sources that cannot be used; every problem is listed. Checked before any output.
    #[error("cannot start the replay:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Sources(Vec<String>),
    /// The journal, a checkpoint or the history cannot be written or read back.
    #[error("history {0}")]
    History(String),
    /// CAP output cannot start: levels without a CAP mapping, unknown columns, an unusable
    /// directory; every problem is listed. Checked before any output.
    #[error("cannot write CAP messages:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Cap(Vec<String>),
    /// Forecast files that cannot be used (missing, unreadable, of a feed that is not a
    /// forecast feed of the rules); every problem is listed. Checked before any output.
    #[error("cannot load the forecasts:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Forecasts(Vec<String>),
    /// An input or output file cannot be opened or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a run did, for the summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Engine counters.
    pub counters: Counters,
    /// Per source: name and statistics.
    pub sources: Vec<(String, SourceStats)>,
    /// Rule names and their level names (ascending).
    pub rules: Vec<(String, Vec<String>)>,
    /// Warnings still active at the end.
    pub active: Vec<ActiveWarning>,
    /// Warnings written.
    pub warnings: u64,
    /// Data-status events written.
    pub status_events: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Wall time of the replay, seconds.
    pub seconds: f64,
    /// Display zone.
    pub zone: Zone,
    /// How the run started: fresh, or resumed from a checkpoint (and why).
    pub start: String,
    /// Checkpoints written and Parquet history sealed by this process (with `[history]`).
    pub history: Option<HistoryStats>,
    /// Forecasts loaded from `[[forecast]]` files and handed to the engine.
    pub forecasts: u64,
    /// Forecasts (lines, files' entries) that could not be used: dead-lettered.
    pub bad_forecasts: u64,
    /// CAP output (with `[output] cap`).
    pub cap: Option<CapStats>,
}

/// What CAP output did in a run.
#[derive(Debug, Clone, Default)]
pub struct CapStats {
    /// Messages written (or found already written, identical, after a resume).
    pub written: u64,
    /// Messages that could not be made or written (the run went on).
    pub failed: u64,
    /// The first few of those errors.
    pub errors: Vec<String>,
}

/// A forecast from a `[[forecast]]` file, with where it came from.
#[derive(Debug, Clone)]
struct LoadedForecast {
    forecast: Forecast,
    source: String,
    line: u64,
    /// The JSON Lines line (empty for an NWS document).
    raw: String,
}

/// A forecast entry that cannot be used, for the dead-letter output.
#[derive(Debug, Clone)]
struct BadForecast {
    source: String,
    line: u64,
    detail: String,
    raw: Vec<u8>,
}

impl BadForecast {
    fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            source: self.source.clone(),
            line: self.line,
            reason: RejectReason::Malformed,
            detail: self.detail.clone(),
            entity: None,
            feed: None,
            ts: None,
            value: None,
            raw: self.raw.clone(),
        }
    }
}

/// Read every `[[forecast]]` file: the forecasts, and the bad entries with their location
/// (source name, line) and error. A file that cannot be read or a section that makes no
/// sense is an error.
fn load_forecast_files(
    cfg: &RunConfig,
) -> Result<(Vec<LoadedForecast>, Vec<BadForecast>), RunError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut problems = Vec::new();
    for src in &cfg.forecasts {
        let results = match src.load(Path::new("")) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("forecast {}: {e}", src.name));
                continue;
            }
        };
        // JSON Lines: one result per non-blank line, in order
        let text = match src.format {
            ForecastFormat::Jsonl => std::fs::read_to_string(&src.path).unwrap_or_default(),
            ForecastFormat::NwsGridpoint => String::new(),
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i as u64 + 1, l));
        for r in results {
            let (line, raw) = lines.next().unwrap_or((0, ""));
            match r {
                Ok(forecast) => good.push(LoadedForecast {
                    forecast,
                    source: src.name.clone(),
                    line,
                    raw: raw.to_string(),
                }),
                Err(e) => bad.push(BadForecast {
                    source: src.name.clone(),
                    line: e.location().and_then(|l| l.line).map_or(line, |l| l as u64),
                    detail: e.to_string(),
                    raw: raw.as_bytes().to_vec(),
                }),
            }
        }
    }
    if problems.is_empty() {
        Ok((good, bad))
    } else {
        Err(RunError::Forecasts(problems))
    }
}

/// Forecast entries that cannot be used: `(where, error)`.
pub type BadForecasts = Vec<(String, String)>;

/// Load the forecasts of every `[[forecast]]` section: the forecasts, and the entries that
/// cannot be used as `(where, error)` — `where` is `source name:line` (line 0 when the file
/// has no lines, as an NWS document). A missing or unreadable file, or a section that makes
/// no sense, is an error. `forewarn run` dead-letters the bad entries.
pub fn load_forecasts(cfg: &RunConfig) -> Result<(Vec<Forecast>, BadForecasts), RunError> {
    let (good, bad) = load_forecast_files(cfg)?;
    Ok((
        good.into_iter().map(|f| f.forecast).collect(),
        bad.into_iter()
            .map(|b| (format!("{}:{}", b.source, b.line), b.detail))
            .collect(),
    ))
}

/// Forecasts of feeds the rules do not declare as forecast feeds: one problem each.
fn check_forecast_feeds(cfg: &RunConfig, plan: &Plan, forecasts: &[LoadedForecast]) -> Vec<String> {
    let forecast_feeds: Vec<&str> = plan
        .feeds
        .iter()
        .filter(|f| f.forecast)
        .map(|f| f.name.as_str())
        .collect();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in forecasts {
        let feed = f.forecast.feed.as_str();
        if forecast_feeds.contains(&feed) || !seen.insert((f.source.clone(), feed.to_string())) {
            continue;
        }
        let what = match plan.feed_by_name(feed) {
            Some(_) => "is a reading feed, not a forecast feed (`feed NAME: forecast …`),",
            None => "is not declared",
        };
        let known = if forecast_feeds.is_empty() {
            "the rules declare no forecast feed".to_string()
        } else {
            format!("forecast feeds: {}", forecast_feeds.join(", "))
        };
        problems.push(format!(
            "forecast {} (line {}): feed {feed:?} {what} in {} ({known})",
            f.source,
            f.line,
            cfg.rules.display()
        ));
    }
    problems
}

/// What keeping history and checkpoints cost a run.
#[derive(Debug, Clone, Default)]
pub struct HistoryStats {
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Size of the last checkpoint, bytes.
    pub checkpoint_bytes: u64,
    /// Time spent writing checkpoints (snapshot, encode, fsync, rename), seconds.
    pub checkpoint_seconds: f64,
    /// Journal segments sealed into Parquet.
    pub segments_sealed: u64,
    /// Parquet rows written (all kinds).
    pub parquet_rows: u64,
    /// Parquet bytes written.
    pub parquet_bytes: u64,
    /// Time spent sealing (reading the segment, encoding, compressing, fsync), seconds.
    pub seal_seconds: f64,
}

struct Outputs {
    zone: Zone,
    warnings: OutFile,
    status: Option<OutFile>,
    dead: Option<OutFile>,
    console: Option<Box<dyn Write>>,
    journal: Option<SharedJournal>,
    cap: Option<CapOutput>,
    n_warnings: u64,
    n_status: u64,
    n_dead: u64,
    n_bad_forecasts: u64,
    error: Option<std::io::Error>,
}

impl Outputs {
    fn keep(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }
}

impl Sink for Outputs {
    fn warning(&mut self, w: Warning) {
        self.n_warnings += 1;
        if let Some(j) = &self.journal {
            j.borrow_mut().append(&Entry::Warning((&w).into()));
        }
        let line = w.to_json(&self.zone).to_string();
        let r = self.warnings.line(&line);
        self.keep(r);
        if let Some(cap) = self.cap.as_mut() {
            let _ = cap.publish(&w);
        }
        if let Some(c) = self.console.as_mut() {
            let level = match w.kind {
                TransitionKind::Clear => format!("clear ({})", w.from.as_deref().unwrap_or("")),
                TransitionKind::Raise => format!("raise {}", w.to.as_deref().unwrap_or("")),
                _ => format!(
                    "{} {} -> {}",
                    w.kind,
                    w.from.as_deref().unwrap_or(""),
                    w.to.as_deref().unwrap_or("")
                ),
            };
            let r = writeln!(
                c,
                "{}  {:<14} {:<8} {:<28} {}",
                self.zone.format(w.event_time),
                w.rule,
                w.entity,
                level,
                w.message
            );
            self.keep(r);
        }
    }

    fn status(&mut self, s: StatusEvent) {
        self.n_status += 1;
        if let Some(j) = &self.journal {
            j.borrow_mut().append(&Entry::Status((&s).into()));
        }
        if let Some(f) = self.status.as_mut() {
            let r = f.line(&s.to_json(&self.zone).to_string());
            self.keep(r);
        }
    }

    fn rejected(&mut self, r: Rejection) {
        // Rejections reach a run through `ReplayOutput::dead_letter` (with their location);
        // this path only sees readings released later by a reorder delay.
        self.dead_letter(DeadLetter::from_rejection(r, "", &[]));
    }
}

impl ReplayOutput for Outputs {
    fn dead_letter(&mut self, d: DeadLetter) {
        self.n_dead += 1;
        if let Some(j) = &self.journal {
            let mut j = j.borrow_mut();
            let now = (j.now)();
            j.append(&Entry::Rejected(RejectedRow::new(&d, now)));
        }
        if let Some(f) = self.dead.as_mut() {
            let r = f.line(&d.to_json(&self.zone).to_string());
            self.keep(r);
        }
    }

    fn commit(&mut self) -> std::io::Result<Committed> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(c) = self.console.as_mut() {
            c.flush()?;
        }
        let mut lens = vec![self.warnings.commit()?];
        for f in [&mut self.status, &mut self.dead] {
            lens.push(match f {
                Some(f) => f.commit()?,
                None => 0,
            });
        }
        Ok(Committed {
            lengths: lens,
            counts: (self.n_warnings, self.n_status, self.n_dead),
        })
    }
}

/// Open every source and check what can be checked before any output is written: the feed
/// a source names exists, the file opens, a CSV header has the configured columns.
pub(crate) fn open_sources(
    cfg: &RunConfig,
    plan: &Plan,
) -> Result<Vec<Box<dyn BufRead>>, RunError> {
    let mut problems = Vec::new();
    let mut inputs: Vec<Box<dyn BufRead>> = Vec::new();
    for src in &cfg.sources {
        let name = &src.name;
        if let Some(feed) = &src.feed {
            if plan.feed_by_name(feed).is_none() {
                let hint = did_you_mean(feed, plan.feeds.iter().map(|f| f.name.as_str()))
                    .map(|h| format!(" (did you mean {h:?}?)"))
                    .unwrap_or_default();
                problems.push(format!(
                    "source {name}: feed {feed:?} is not declared in {}{hint}",
                    cfg.rules.display()
                ));
            }
        }
        if src.format == SourceFormat::History {
            if cfg!(not(feature = "history")) {
                problems.push(format!(
                    "source {name}: this forewarn was built without the `history` feature"
                ));
            } else if cfg.history.as_ref().is_some_and(|h| {
                let canon = |p: &Path| std::fs::canonicalize(p).ok();
                canon(&h.dir).is_some() && canon(&h.dir) == canon(&src.path)
            }) {
                problems.push(format!(
                    "source {name}: {} is this run's own [history] dir, which a run rewrites; replay another copy of it",
                    src.path.display()
                ));
            } else if !src.path.join("readings").is_dir() {
                problems.push(format!(
                    "source {name}: {} holds no history (no readings/ directory)",
                    src.path.display()
                ));
            }
            inputs.push(Box::new(BufReader::new(std::io::empty())));
            continue;
        }
        if src.path.as_os_str() == "-" {
            inputs.push(Box::new(BufReader::new(std::io::stdin())));
            continue;
        }
        let mut reader = match File::open(&src.path) {
            Ok(f) => BufReader::with_capacity(1 << 16, f),
            Err(e) => {
                problems.push(format!(
                    "source {name}: cannot open {}: {e}",
                    src.path.display()
                ));
                continue;
            }
        };
        let needs_header = match src.format {
            SourceFormat::CsvWide => Some(vec![src.time_column.as_str()]),
            SourceFormat::Csv if src.header => Some(vec![
                src.entity_column.as_str(),
                src.time_column.as_str(),
                src.value_column.as_str(),
            ]),
            _ => None,
        };
        let mut first = Vec::new();
        if let Some(columns) = needs_header {
            if let Err(e) = reader.read_until(b'\n', &mut first) {
                problems.push(format!(
                    "source {name}: cannot read {}: {e}",
                    src.path.display()
                ));
                continue;
            }
            let header = String::from_utf8_lossy(&first);
            let fields: Vec<&str> = header
                .trim_end()
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .collect();
            let missing: Vec<&str> = columns
                .into_iter()
                .filter(|c| !fields.contains(c))
                .collect();
            if !missing.is_empty() {
                let shown: Vec<&str> = fields.iter().take(8).copied().collect();
                let more = if fields.len() > 8 {
                    format!(" and {} more", fields.len() - 8)
                } else {
                    String::new()
                };
                problems.push(format!(
                    "source {name}: the header of {} lacks column(s) {missing:?} (it has {shown:?}{more})",
                    src.path.display()
                ));
            }
        }
        inputs.push(Box::new(BufReader::new(std::io::Read::chain(
            std::io::Cursor::new(first),
            reader,
        ))));
    }
    if problems.is_empty() {
        Ok(inputs)
    } else {
        Err(RunError::Sources(problems))
    }
}

/// Replay one configured source (a file, stdin, or a Parquet history directory).
pub(crate) fn replay_source(
    target: &mut dyn ReplayTarget,
    src: &crate::config::SourceConfig,
    input: &mut dyn BufRead,
    out: &mut dyn ReplayOutput,
) -> std::io::Result<SourceStats> {
    if src.format == SourceFormat::History {
        #[cfg(feature = "history")]
        return crate::history::replay_history(target, &src.path, out)
            .map_err(std::io::Error::other);
    }
    replay(target, src, input, out, None)
}

/// Checkpoint kind tag of `forewarn run` checkpoints.
const RUN_CHECKPOINT: u32 = 1;

/// What a `forewarn run` checkpoint records: where every input and output stood, and the
/// engine's state, at the end of one source line.
#[derive(Debug, Serialize, Deserialize)]
struct RunCheckpoint {
    /// Rules, sources and engine settings it belongs to.
    fingerprint: String,
    /// Written after the last source ended and the engine finished.
    finished: bool,
    journal: JournalPosition,
    next_seq: u64,
    rows_in_segment: u64,
    /// Index of the source being read, and its last line handled.
    source: usize,
    line: u64,
    /// Statistics of sources before `source`, and of `source` up to `line`.
    stats: Vec<(u64, u64, u64)>,
    /// Lengths of the warning, status and dead-letter files.
    outputs: Vec<u64>,
    counts: (u64, u64, u64),
    engine: Vec<u8>,
}

/// The engine during a run with `[history]`: journals every batch with its outcomes and
/// takes checkpoints between lines.
struct DurableTarget {
    engine: Engine,
    journal: SharedJournal,
    data: DataDir,
    cfg: HistoryConfig,
    fingerprint: String,
    /// Source being read and the name it is journaled under.
    source: usize,
    source_name: String,
    /// Lines of the current source handled before the checkpoint resumed from.
    skip: u64,
    /// Statistics of finished sources (and, while resuming, of the resumed one before it).
    done_stats: Vec<(u64, u64, u64)>,
    base_stats: (u64, u64, u64),
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpoint_no: u64,
    /// Journal segment of the previous checkpoint (older segments can go).
    prev_segment: Option<u64>,
    written: HistoryStats,
    error: Option<String>,
}

impl DurableTarget {
    fn journal_batch(&mut self, readings: &[Reading<'_>], outcomes: &[Outcome]) {
        let plan = self.engine.plan();
        let mut j = self.journal.borrow_mut();
        let rows = readings
            .iter()
            .zip(outcomes)
            .map(|(r, &o)| ReadingRow::new(r, &plan.feeds[r.feed].name, o))
            .collect();
        let entry = Entry::Batch(Batch {
            seq: j.next_seq,
            received_at: (j.now)(),
            source: std::borrow::Cow::Borrowed(&self.source_name),
            line: readings.first().map_or(0, |r| r.tag),
            readings: rows,
        });
        j.append(&entry);
        j.next_seq += readings.len() as u64;
        j.rows_in_segment += readings.len() as u64;
        self.since_checkpoint += readings.len() as u64;
    }

    fn stats_now(&self, current: &SourceStats) -> Vec<(u64, u64, u64)> {
        let mut v = self.done_stats.clone();
        v.push((
            self.base_stats.0 + current.lines,
            self.base_stats.1 + current.readings,
            self.base_stats.2 + current.bad,
        ));
        v
    }

    /// Make everything durable and write a checkpoint at the end of `line`; seal the
    /// journal segment into Parquet when it is full (or `finished`).
    fn checkpoint(
        &mut self,
        line: u64,
        stats: Vec<(u64, u64, u64)>,
        committed: Committed,
        finished: bool,
    ) -> Result<(), String> {
        let started = Instant::now();
        let sealed = {
            let mut j = self.journal.borrow_mut();
            if let Some(e) = j.error.take() {
                return Err(e.to_string());
            }
            let full = j.rows_in_segment >= self.cfg.segment_rows
                || (finished && j.writer.offset() > crate::durable::journal::HEADER_LEN);
            if full {
                let s = j.writer.roll().map_err(|e| e.to_string())?;
                j.rows_in_segment = 0;
                Some(s)
            } else {
                j.writer.sync().map_err(|e| e.to_string())?;
                None
            }
        };
        let (journal, next_seq, rows_in_segment) = {
            let j = self.journal.borrow();
            (
                JournalPosition {
                    segment: j.writer.segment(),
                    offset: j.writer.offset(),
                },
                j.next_seq,
                j.rows_in_segment,
            )
        };
        let ckpt = RunCheckpoint {
            fingerprint: self.fingerprint.clone(),
            finished,
            journal,
            next_seq,
            rows_in_segment,
            source: self.source,
            line,
            stats,
            outputs: committed.lengths,
            counts: committed.counts,
            engine: self.engine.snapshot(),
        };
        self.checkpoint_no += 1;
        let bytes = write_checkpoint(
            &self.data.checkpoints(),
            self.checkpoint_no,
            RUN_CHECKPOINT,
            &ckpt,
            2,
        )
        .map_err(|e| e.to_string())?;
        let w = &mut self.written;
        w.checkpoints += 1;
        w.checkpoint_bytes = bytes;
        w.checkpoint_seconds += started.elapsed().as_secs_f64();
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        // journal segments older than both kept checkpoints are no longer needed
        if let Some(prev) = self.prev_segment {
            prune_journal(&self.data, prev)?;
        }
        self.prev_segment = Some(journal.segment);
        if let Some(s) = sealed {
            let t = Instant::now();
            let r = seal(&self.data, s)?;
            let w = &mut self.written;
            w.seal_seconds += t.elapsed().as_secs_f64();
            w.segments_sealed += 1;
            w.parquet_rows += r.rows;
            w.parquet_bytes += r.bytes;
        }
        Ok(())
    }
}

impl ReplayTarget for DurableTarget {
    fn plan(&self) -> &Plan {
        self.engine.plan()
    }
    fn count_source_rejection(&mut self, reason: RejectReason) {
        self.engine.count_source_rejection(reason)
    }
    fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink) {
        let o: Outcome = self.engine.push(r, out).into();
        self.journal_batch(std::slice::from_ref(r), &[o]);
    }
    fn push_batch(&mut self, readings: &[Reading<'_>], out: &mut dyn Sink) {
        let results = self.engine.push_batch(readings, out);
        let outcomes: Vec<Outcome> = results.into_iter().map(Outcome::from).collect();
        self.journal_batch(readings, &outcomes);
    }
    fn set_wall_clock(&mut self, now: Millis, out: &mut dyn Sink) {
        self.engine.set_wall_clock(now, out);
        self.journal
            .borrow_mut()
            .append(&Entry::Clock { wall: now });
    }
    fn skip_through(&self) -> u64 {
        self.skip
    }
    fn line_done(
        &mut self,
        line: u64,
        stats: &SourceStats,
        out: &mut dyn ReplayOutput,
    ) -> std::io::Result<()> {
        if line <= self.skip || self.error.is_some() {
            return Ok(());
        }
        let due = self.since_checkpoint >= self.cfg.checkpoint_every
            || (self.since_checkpoint > 0
                && self.last_checkpoint.elapsed().as_millis() as i64
                    >= self.cfg.checkpoint_interval);
        if !due {
            return Ok(());
        }
        let committed = out.commit()?;
        let stats = self.stats_now(stats);
        if let Err(e) = self.checkpoint(line, stats, committed, false) {
            self.error = Some(e.clone());
            return Err(std::io::Error::other(e));
        }
        Ok(())
    }
}

/// The fingerprint of what a checkpoint belongs to: the rule set and everything about the
/// sources and the engine that changes what a replay produces.
fn fingerprint(cfg: &RunConfig, plan: &Plan) -> String {
    let mut h = sha2::Sha256::new();
    h.update(plan.ruleset_hash.as_bytes());
    h.update(format!("{:?}", cfg.sources).as_bytes());
    let e = &cfg.engine;
    h.update(
        format!(
            "{:?} {} {:?} {} {} {}",
            e.clock,
            e.watermark_delay,
            e.future_skew,
            e.max_age,
            e.delayed_after,
            e.require_known_entities
        )
        .as_bytes(),
    );
    for src in &cfg.sources {
        if let Ok(m) = std::fs::metadata(&src.path) {
            h.update(m.len().to_le_bytes());
        }
    }
    // forecasts change what a replay produces too (nothing is added without them, so the
    // fingerprints of runs without forecasts stay as they were)
    if !cfg.forecasts.is_empty() {
        h.update(format!("{:?} {:?}", cfg.forecasts, e.forecast_as_of).as_bytes());
        for f in &cfg.forecasts {
            if let Ok(m) = std::fs::metadata(&f.path) {
                h.update(m.len().to_le_bytes());
            }
        }
    }
    // where the outputs go and how times are shown in them: a resumed run appends to them
    let o = &cfg.output;
    h.update(
        format!(
            "{:?} {:?} {:?} {}",
            o.warnings, o.status, o.dead_letter, cfg.display_zone
        )
        .as_bytes(),
    );
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How a run with `[history]` starts: the checkpoint to resume from, if any, and a line
/// saying what was decided.
fn decide_start(data: &DataDir, fp: &str, fresh: bool) -> (Option<RunCheckpoint>, String) {
    if fresh {
        return (None, "fresh start (--fresh)".into());
    }
    let dir = data.checkpoints();
    match read_latest::<RunCheckpoint>(&dir, RUN_CHECKPOINT) {
        Ok(None) => (None, "fresh start".into()),
        Ok(Some((_, c))) if c.finished && c.fingerprint == fp => (
            None,
            "fresh start (the previous run of this configuration finished)".into(),
        ),
        Ok(Some((_, c))) if c.fingerprint != fp => (
            None,
            "fresh start (rules, sources or engine settings changed since the last checkpoint)"
                .into(),
        ),
        Ok(Some((n, c))) => {
            let line = format!(
                "resumed from checkpoint {n} (source {}, line {})",
                c.source + 1,
                c.line
            );
            (Some(c), line)
        }
        Err(e) => {
            // The newest checkpoint is damaged: never run on it. Go back to the one before
            // it if that one is sound, else rebuild from the input.
            let older = crate::durable::checkpoint::list_checkpoints(&dir)
                .ok()
                .and_then(|ns| ns.len().checked_sub(2).map(|i| ns[i]))
                .and_then(|n| {
                    let p = dir.join(crate::durable::checkpoint::checkpoint_name(n));
                    read_checkpoint::<RunCheckpoint>(&p, RUN_CHECKPOINT)
                        .ok()
                        .map(|c| (n, c))
                });
            match older {
                Some((n, c)) if !c.finished && c.fingerprint == fp => {
                    let line = format!(
                        "{e}; resumed from the previous checkpoint {n} (source {}, line {}) instead",
                        c.source + 1,
                        c.line
                    );
                    (Some(c), line)
                }
                _ => (
                    None,
                    format!("{e}; rebuilding from the start of the input instead"),
                ),
            }
        }
    }
}

/// Options of a run beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Ignore any checkpoint and start from the beginning.
    pub fresh: bool,
}

/// Run the main job described by a configuration.
pub fn run(cfg: &RunConfig) -> Result<Summary, RunError> {
    run_with(cfg, RunOptions::default())
}

/// Run the main job with options. With `[history]`, a run interrupted (even by `kill -9`)
/// resumes from its last checkpoint when started again: its outputs and history end up
/// exactly as those of a run that was never interrupted.
pub fn run_with(cfg: &RunConfig, opts: RunOptions) -> Result<Summary, RunError> {
    let compiled = load_rules(&cfg.rules, HashMap::new())?;
    let plan = compiled.plan;
    let rules = plan
        .rules
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.levels.iter().map(|l| l.name.clone()).collect(),
            )
        })
        .collect();
    let mut inputs = open_sources(cfg, &plan)?;
    if let Some(dir) = &cfg.output.cap {
        let problems = match &cfg.cap {
            Some(settings) => crate::cap_output::check(&plan, settings),
            None => vec![format!(
                "output.cap = {:?} needs a [cap] section",
                dir.display()
            )],
        };
        if !problems.is_empty() {
            return Err(RunError::Cap(problems));
        }
    }
    let (forecasts, bad_forecasts) = load_forecast_files(cfg)?;
    let problems = check_forecast_feeds(cfg, &plan, &forecasts);
    if !problems.is_empty() {
        return Err(RunError::Forecasts(problems));
    }
    let hist_err = |e: String| RunError::History(e);
    let fp = fingerprint(cfg, &plan);
    // one process per data directory: a second one would interleave journals and outputs
    let _lock = match &cfg.history {
        Some(h) => Some(DataDir::new(&h.dir).lock().map_err(hist_err)?),
        None => None,
    };
    let (mut resume, mut start) = match &cfg.history {
        Some(h) => decide_start(&DataDir::new(&h.dir), &fp, opts.fresh),
        None => (None, String::new()),
    };
    // the outputs must still hold what the checkpoint says was written
    if let Some(c) = &resume {
        let paths = [
            &cfg.output.warnings,
            &cfg.output.status,
            &cfg.output.dead_letter,
        ];
        let short = paths.iter().zip(&c.outputs).find_map(|(p, &len)| {
            let p = p.as_ref()?;
            let have = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            (have < len)
                .then(|| format!("{} holds {have} bytes, the checkpoint {len}", p.display()))
        });
        if let Some(why) = short {
            start = format!("fresh start (cannot resume: {why})");
            resume = None;
        }
    }
    if !start.is_empty() && start != "fresh start" {
        eprintln!("forewarn run: {start}");
    }
    let keep = |i: usize| {
        resume
            .as_ref()
            .map_or(0, |c| c.outputs.get(i).copied().unwrap_or(0))
    };
    let open = |p: &Path, i: usize| {
        let how = match keep(i) {
            0 => Open::Truncate,
            n => Open::CutTo(n),
        };
        OutFile::open(p, how).map_err(|source| RunError::Io {
            what: "cannot open output",
            path: p.display().to_string(),
            source,
        })
    };
    let warnings = match &cfg.output.warnings {
        Some(p) => open(p, 0)?,
        None => OutFile::stdout(),
    };
    let status = cfg
        .output
        .status
        .as_deref()
        .map(|p| open(p, 1))
        .transpose()?;
    let dead = cfg
        .output
        .dead_letter
        .as_deref()
        .map(|p| open(p, 2))
        .transpose()?;
    let counts = resume.as_ref().map_or((0, 0, 0), |c| c.counts);
    let mut out = Outputs {
        zone: cfg.display_zone,
        warnings,
        status,
        dead,
        console: cfg
            .output
            .console
            .then(|| Box::new(BufWriter::new(std::io::stdout())) as Box<dyn Write>),
        journal: None,
        cap: None,
        n_warnings: counts.0,
        n_status: counts.1,
        n_dead: counts.2,
        n_bad_forecasts: 0,
        error: None,
    };
    let started = Instant::now();
    let mut sources = Vec::new();
    let n_bad_forecasts = bad_forecasts.len() as u64;
    let n_forecasts;
    let (engine, history) = match &cfg.history {
        None => {
            let mut engine = Engine::new(plan, cfg.engine.clone());
            out.cap = open_cap(cfg, &engine, true)?;
            for b in &bad_forecasts {
                out.dead_letter(b.dead_letter());
            }
            n_forecasts = push_forecasts(&mut engine, forecasts, false, &mut out);
            for (src, input) in cfg.sources.iter().zip(inputs.iter_mut()) {
                let stats = replay_source(&mut engine, src, input, &mut out).map_err(|source| {
                    RunError::Io {
                        what: "cannot read source",
                        path: src.path.display().to_string(),
                        source,
                    }
                })?;
                sources.push((src.name.clone(), stats));
            }
            engine.finish(&mut out);
            (engine, None)
        }
        Some(h) => {
            let data = DataDir::new(&h.dir);
            let (engine, writer) = match &resume {
                Some(c) => {
                    let engine = Engine::restore(plan, cfg.engine.clone(), &c.engine)
                        .map_err(|e| hist_err(e.to_string()))?;
                    (engine, reopen_at(&data, c.journal).map_err(hist_err)?)
                }
                None => {
                    data.clear().map_err(|e| {
                        hist_err(format!("cannot clear {}: {e}", data.root().display()))
                    })?;
                    let w = JournalWriter::open(&data.journal(), 0, 0)
                        .map_err(|e| hist_err(e.to_string()))?;
                    (Engine::new(plan, cfg.engine.clone()), w)
                }
            };
            let mut engine = engine;
            out.cap = open_cap(cfg, &engine, resume.is_none())?;
            let journal = Rc::new(RefCell::new(Journal {
                writer,
                next_seq: resume.as_ref().map_or(0, |c| c.next_seq),
                rows_in_segment: resume.as_ref().map_or(0, |c| c.rows_in_segment),
                error: None,
                now: cfg.engine.now,
            }));
            out.journal = Some(Rc::clone(&journal));
            // A run's forecasts come from its files: the restored engine's copies are
            // dropped and the files handed to it again, as when it started (their dead
            // letters are already in the outputs the checkpoint kept).
            if resume.is_some() {
                engine.forget_forecasts();
            } else {
                for b in &bad_forecasts {
                    out.dead_letter(b.dead_letter());
                }
            }
            n_forecasts = push_forecasts(&mut engine, forecasts, resume.is_some(), &mut out);
            let checkpoint_no = crate::durable::checkpoint::list_checkpoints(&data.checkpoints())
                .ok()
                .and_then(|v| v.last().copied())
                .unwrap_or(0);
            let mut target = DurableTarget {
                engine,
                journal,
                data,
                cfg: h.clone(),
                fingerprint: fp.clone(),
                source: 0,
                source_name: String::new(),
                skip: 0,
                done_stats: Vec::new(),
                base_stats: (0, 0, 0),
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                checkpoint_no,
                prev_segment: resume.as_ref().map(|c| c.journal.segment),
                written: HistoryStats::default(),
                error: None,
            };
            let stat = |t: (u64, u64, u64)| SourceStats {
                lines: t.0,
                readings: t.1,
                bad: t.2,
            };
            for (i, (src, input)) in cfg.sources.iter().zip(inputs.iter_mut()).enumerate() {
                target.source = i;
                target.source_name.clone_from(&src.name);
                target.skip = 0;
                target.base_stats = (0, 0, 0);
                if let Some(c) = &resume {
                    if i < c.source {
                        let st = c.stats.get(i).copied().unwrap_or_default();
                        target.done_stats.push(st);
                        sources.push((src.name.clone(), stat(st)));
                        continue;
                    }
                    if i == c.source {
                        target.skip = c.line;
                        target.base_stats = c.stats.get(i).copied().unwrap_or_default();
                    }
                }
                let stats =
                    replay_source(&mut target, src, input, &mut out).map_err(
                        |source| match target.error.take() {
                            Some(e) => hist_err(e),
                            None => RunError::Io {
                                what: "cannot read source",
                                path: src.path.display().to_string(),
                                source,
                            },
                        },
                    )?;
                let b = target.base_stats;
                let total = (b.0 + stats.lines, b.1 + stats.readings, b.2 + stats.bad);
                target.done_stats.push(total);
                sources.push((src.name.clone(), stat(total)));
            }
            target.source = cfg.sources.len();
            target.engine.finish(&mut out);
            let committed = out.commit().map_err(|source| RunError::Io {
                what: "cannot write output",
                path: "(outputs)".into(),
                source,
            })?;
            let stats = target.done_stats.clone();
            target
                .checkpoint(0, stats, committed, true)
                .map_err(hist_err)?;
            (target.engine, Some(target.written))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = out.commit() {
        return Err(RunError::Io {
            what: "cannot write output",
            path: "(outputs)".into(),
            source: e,
        });
    }
    Ok(Summary {
        counters: engine.counters().clone(),
        sources,
        rules,
        active: engine.active_warnings(),
        warnings: out.n_warnings,
        status_events: out.n_status,
        dead_letters: out.n_dead,
        seconds,
        zone: cfg.display_zone,
        start,
        history,
        forecasts: n_forecasts,
        bad_forecasts: n_bad_forecasts + out.n_bad_forecasts,
        cap: out.cap.as_ref().map(|c| CapStats {
            written: c.written,
            failed: c.failed,
            errors: c.errors.clone(),
        }),
    })
}

/// The CAP sink of a run (with `[output] cap`), knowing the warnings already open (a
/// resume); `fresh` when the run starts over (see `CapOutput::new`).
fn open_cap(cfg: &RunConfig, engine: &Engine, fresh: bool) -> Result<Option<CapOutput>, RunError> {
    let (Some(dir), Some(settings)) = (&cfg.output.cap, &cfg.cap) else {
        return Ok(None);
    };
    CapOutput::new(
        engine.plan(),
        settings,
        Some(dir),
        &engine.active_warnings(),
        fresh,
    )
    .map(Some)
    .map_err(|e| RunError::Cap(vec![e.to_string()]))
}

/// Hand the loaded forecasts to the engine (they wait in its queue until the stream reaches
/// their as-of time). A forecast the engine refuses (an unknown area or entity) is
/// dead-lettered. `restored`: the engine comes from a checkpoint (see
/// [`Engine::restore_forecast`]). Returns how many were taken.
fn push_forecasts(
    engine: &mut Engine,
    forecasts: Vec<LoadedForecast>,
    restored: bool,
    out: &mut Outputs,
) -> u64 {
    let mut n = 0;
    for f in forecasts {
        let (source, line, raw) = (f.source, f.line, f.raw);
        let r = if restored {
            engine.restore_forecast(f.forecast, out)
        } else {
            engine.push_forecast(f.forecast, out)
        };
        match r {
            Ok(_) => n += 1,
            Err(e) => {
                out.n_bad_forecasts += 1;
                if !restored {
                    out.dead_letter(
                        BadForecast {
                            source,
                            line,
                            detail: e.to_string(),
                            raw: raw.into_bytes(),
                        }
                        .dead_letter(),
                    );
                }
            }
        }
    }
    n
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(
            f,
            "── forewarn run summary ──────────────────────────────────────"
        )?;
        if !self.start.is_empty() {
            writeln!(f, "{}", self.start)?;
        }
        for (name, s) in &self.sources {
            writeln!(
                f,
                "source {name}: {} lines, {} readings, {} undecodable",
                s.lines, s.readings, s.bad
            )?;
        }
        writeln!(
            f,
            "readings: {} read, {} accepted ({} late), {} duplicate, {} replaced, {} coerced, {} rejected",
            c.read,
            c.accepted,
            c.late,
            c.duplicate,
            c.replaced,
            c.coerced,
            c.rejected_total()
        )?;
        for reason in RejectReason::ALL {
            let n = c.rejected(reason);
            if n > 0 {
                writeln!(f, "  rejected {:<16} {n}", reason.as_str())?;
            }
        }
        writeln!(
            f,
            "warnings: {} transitions, {} data-status events, {} dead letters",
            self.warnings, self.status_events, self.dead_letters
        )?;
        for (r, (name, levels)) in self.rules.iter().enumerate() {
            let t = c.transitions.get(r).copied().unwrap_or_default();
            let kinds: Vec<String> = TransitionKind::ALL
                .iter()
                .zip(t)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            writeln!(f, "  {name:<16} {}", kinds.join(", "))?;
            let entered: Vec<String> = levels
                .iter()
                .zip(c.entered.get(r).cloned().unwrap_or_default())
                .map(|(l, n)| format!("{l} {n}"))
                .collect();
            writeln!(f, "  {:<16} levels entered: {}", "", entered.join(", "))?;
            if let Some(&n) = c.skipped_no_table.get(r) {
                if n > 0 {
                    writeln!(
                        f,
                        "  {:<16} {n} entities not evaluated: no row in a table the rule needs",
                        ""
                    )?;
                }
            }
        }
        if self.forecasts > 0 || self.bad_forecasts > 0 {
            writeln!(
                f,
                "forecasts: {} loaded, {} dead-lettered",
                self.forecasts, self.bad_forecasts
            )?;
        }
        if let Some(cap) = &self.cap {
            writeln!(
                f,
                "CAP: {} messages written, {} failed",
                cap.written, cap.failed
            )?;
            for e in &cap.errors {
                writeln!(f, "  CAP error: {e}")?;
            }
        }
        writeln!(f, "still active at the end: {}", self.active.len())?;
        for a in &self.active {
            writeln!(
                f,
                "  {:<16} {:<10} {:<10} since {} (#{})",
                a.rule,
                a.entity,
                a.level,
                self.zone.format(a.since),
                a.seq
            )?;
        }
        let rate = if self.seconds > 0.0 {
            c.read as f64 / self.seconds
        } else {
            0.0
        };
        if let Some(h) = &self.history {
            writeln!(
                f,
                "history: {} checkpoints ({:.0} KiB each, {:.3} s in all), {} segments sealed into Parquet ({} rows, {:.0} KiB, {:.3} s)",
                h.checkpoints,
                h.checkpoint_bytes as f64 / 1024.0,
                h.checkpoint_seconds,
                h.segments_sealed,
                h.parquet_rows,
                h.parquet_bytes as f64 / 1024.0,
                h.seal_seconds
            )?;
        }
        writeln!(
            f,
            "wall time {:.3} s, {:.0} readings/s, {} evaluations",
            self.seconds, rate, c.evaluations
        )
    }
}
