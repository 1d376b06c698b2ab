//! `forewarn run`: replay the configured sources through the rules and write warnings,
//! data-status events and dead letters; summarise what happened.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use crate::config::{RunConfig, SourceFormat};
use crate::engine::{ActiveWarning, Counters, Engine};
use crate::loader::{load_rules, LoadError};
use crate::record::{RejectReason, Rejection, Sink, StatusEvent, TransitionKind, Warning};
use crate::source::{replay, DeadLetter, ReplayOutput, SourceStats};
use crate::time::Zone;
use forewarn_rules::diag::did_you_mean;
use forewarn_rules::ir::Plan;

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
}

struct Outputs {
    zone: Zone,
    warnings: Box<dyn Write>,
    status: Option<BufWriter<File>>,
    dead: Option<BufWriter<File>>,
    console: Option<Box<dyn Write>>,
    n_warnings: u64,
    n_status: u64,
    n_dead: u64,
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
        let line = w.to_json(&self.zone).to_string();
        let r = writeln!(self.warnings, "{line}");
        self.keep(r);
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
        if let Some(f) = self.status.as_mut() {
            let r = writeln!(f, "{}", s.to_json(&self.zone));
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
        if let Some(f) = self.dead.as_mut() {
            let r = writeln!(f, "{}", d.to_json(&self.zone));
            self.keep(r);
        }
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, RunError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| RunError::Io {
            what: "cannot create directory",
            path: dir.display().to_string(),
            source,
        })?;
    }
    File::create(path)
        .map(BufWriter::new)
        .map_err(|source| RunError::Io {
            what: "cannot create",
            path: path.display().to_string(),
            source,
        })
}

/// Open every source and check what can be checked before any output is written: the feed
/// a source names exists, the file opens, a CSV header has the configured columns.
fn open_sources(cfg: &RunConfig, plan: &Plan) -> Result<Vec<Box<dyn BufRead>>, RunError> {
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

/// Run the main job described by a configuration.
pub fn run(cfg: &RunConfig) -> Result<Summary, RunError> {
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
    let mut engine = Engine::new(plan, cfg.engine.clone());
    let warnings: Box<dyn Write> = match &cfg.output.warnings {
        Some(p) => Box::new(create(p)?),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let mut out = Outputs {
        zone: cfg.display_zone,
        warnings,
        status: cfg.output.status.as_deref().map(create).transpose()?,
        dead: cfg.output.dead_letter.as_deref().map(create).transpose()?,
        console: cfg
            .output
            .console
            .then(|| Box::new(BufWriter::new(std::io::stdout())) as Box<dyn Write>),
        n_warnings: 0,
        n_status: 0,
        n_dead: 0,
        error: None,
    };
    let started = Instant::now();
    let mut sources = Vec::new();
    for (src, input) in cfg.sources.iter().zip(inputs.iter_mut()) {
        let stats =
            replay(&mut engine, src, input, &mut out, None).map_err(|source| RunError::Io {
                what: "cannot read source",
                path: src.path.display().to_string(),
                source,
            })?;
        sources.push((src.name.clone(), stats));
    }
    engine.finish(&mut out);
    let seconds = started.elapsed().as_secs_f64();
    for w in [
        Some(&mut out.warnings as &mut dyn Write),
        out.console.as_mut().map(|c| c as &mut dyn Write),
    ]
    .into_iter()
    .flatten()
    {
        let _ = w.flush();
    }
    let flush_status = out.status.as_mut().map(|f| f.flush()).transpose();
    let flush_dead = out.dead.as_mut().map(|f| f.flush()).transpose();
    if let Some(e) = out.error.take().or(flush_status.err()).or(flush_dead.err()) {
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
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(
            f,
            "── forewarn run summary ──────────────────────────────────────"
        )?;
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
        writeln!(
            f,
            "wall time {:.3} s, {:.0} readings/s, {} evaluations",
            self.seconds, rate, c.evaluations
        )
    }
}
