//! `forewarn`: run the main job, check rule files, run rule cases.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use forewarn_engine::cases::{discover, run_case, CaseError};
use forewarn_engine::config::RunConfig;
use forewarn_engine::loader::{load_rules, LoadError};
use forewarn_engine::run::{run_with, RunOptions};

/// forewarn: an early-warning engine for floods, rainstorms and sensor networks.
#[derive(Debug, Parser)]
#[command(name = "forewarn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Rendered diagnostics with carets.
    Text,
    /// One JSON document (for editors and CI).
    Json,
}

/// Output format of `forewarn query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum QueryFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the configured sources through the rules; write warnings, status events and
    /// dead letters; print a summary.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "config/forewarn.toml")]
        config: PathBuf,
        /// Write warnings (JSON Lines) here instead of where the config says (`-` = stdout).
        #[arg(long)]
        warnings: Option<PathBuf>,
        /// Do not print warnings on the console.
        #[arg(long)]
        quiet: bool,
        /// Start from the beginning even if a checkpoint of an interrupted run exists
        /// (with `[history]`; otherwise an interrupted run resumes where it stopped).
        #[arg(long)]
        fresh: bool,
    },
    /// Check a rule file and its tables; print every diagnostic. Exits 1 on errors.
    Check {
        /// The rule file.
        rules: PathBuf,
        /// Use another file for a table: `PATH_AS_WRITTEN=FILE` (repeatable).
        #[arg(long = "table", value_name = "PATH=FILE")]
        tables: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also print the compiled plan.
        #[arg(long)]
        explain: bool,
    },
    /// Run the warning daemon: MQTT intake, sharded live evaluation, MQTT / file / webhook
    /// sinks, HTTP /healthz /metrics /warnings; stops gracefully on SIGINT or SIGTERM.
    #[cfg(feature = "daemon")]
    Serve {
        /// The daemon configuration file (see docs/daemon.md).
        #[arg(long, short, default_value = "config/serve.toml")]
        config: PathBuf,
    },
    /// Run SQL over the Parquet history: tables readings, rejected, warnings, status
    /// (docs/history.md). Needs the `sql` feature. Exits 1 when the query fails.
    Query {
        /// The history directory [default: the config's `[history] dir`, else out/history].
        #[arg(long)]
        history: Option<PathBuf>,
        /// A configuration file whose `[history] dir` and `[engine] display-zone` are the
        /// defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: QueryFormat,
        /// Show timestamps in this zone (IANA name or offset such as +08:00) [default: the
        /// config's display-zone, else UTC].
        #[arg(long)]
        zone: Option<String>,
        /// The SQL query.
        sql: String,
    },
    /// Backtest the configured rules over the configured inputs in event time: every
    /// warning episode, its lead time against the observed-only criteria (or a ground-truth
    /// event list), hits, misses, false alarms, POD, FAR and CSI per rule and level; writes
    /// backtest.json and a self-contained backtest.html with plots (docs/backtest.md).
    Backtest {
        /// The configuration file (its rules, sources and forecasts; `[history]` is ignored:
        /// a backtest writes nothing but its report).
        #[arg(long, short, default_value = "config/forewarn.toml")]
        config: PathBuf,
        /// Score against these ground-truth events (CSV or JSON Lines: rule, entity, level,
        /// start, end) instead of the observed-only version of each rule.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Directory for backtest.json and backtest.html [default: out/backtest beside the
        /// config's outputs].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Plot this many of the busiest (rule, entity) pairs.
        #[arg(long, default_value_t = 6)]
        plots: usize,
        /// Always plot this entity (repeatable).
        #[arg(long = "entity")]
        entities: Vec<String>,
        /// No progress on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Run data-driven rule cases (directories with case.toml); exits 1 if any fails.
    Test {
        /// Case directories, or directories holding them.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        // A closed pipe (`forewarn check … | head`) is not an error (as in ripgrep).
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Run {
            config,
            warnings,
            quiet,
            fresh,
        } => {
            drop(out);
            let mut cfg = RunConfig::load(&config)?;
            if let Some(w) = warnings {
                cfg.output.warnings = (w.as_os_str() != "-").then_some(w);
            }
            if quiet || cfg.output.warnings.is_none() {
                cfg.output.console = false;
            }
            match run_with(&cfg, RunOptions { fresh }) {
                Ok(summary) => {
                    // stderr may be closed (`… 2>&1 | head`): never panic over the summary
                    let _ = write!(std::io::stderr(), "{summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(forewarn_engine::run::RunError::Rules(LoadError::Invalid {
                    diagnostics,
                    ..
                })) => {
                    let color = std::io::stderr().is_terminal();
                    let _ = write!(std::io::stderr(), "{}", diagnostics.render(color));
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Check {
            rules,
            tables,
            format,
            explain,
        } => {
            let mut overrides = HashMap::new();
            for t in tables {
                let (k, v) = t
                    .split_once('=')
                    .context("--table takes PATH_AS_WRITTEN=FILE")?;
                overrides.insert(k.to_string(), PathBuf::from(v));
            }
            let color = std::io::stdout().is_terminal();
            match load_rules(&rules, overrides) {
                Ok(compiled) => {
                    let warnings = &compiled.warnings;
                    match format {
                        Format::Json => writeln!(
                            out,
                            "{}",
                            serde_json::to_string_pretty(&warnings.to_json())?
                        )?,
                        Format::Text => {
                            write!(out, "{}", warnings.render(color))?;
                            let p = &compiled.plan;
                            writeln!(
                                out,
                                "{}: ok — {}, {}, {}, {}",
                                rules.display(),
                                plural(p.feeds.len(), "feed", "feeds"),
                                plural(p.tables.len(), "table", "tables"),
                                plural(p.rules.len(), "rule", "rules"),
                                plural(
                                    p.windows.len(),
                                    "shared window aggregation",
                                    "shared window aggregations"
                                ),
                            )?;
                            if explain {
                                write!(out, "{}", compiled.plan)?;
                            }
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(LoadError::Invalid { diagnostics, .. }) => {
                    match format {
                        Format::Json => writeln!(
                            out,
                            "{}",
                            serde_json::to_string_pretty(&diagnostics.to_json())?
                        )?,
                        Format::Text => write!(out, "{}", diagnostics.render(color))?,
                    }
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(feature = "daemon")]
        Command::Serve { config } => {
            drop(out);
            let cfg = forewarn_engine::daemon::ServeConfig::load(&config)?;
            forewarn_engine::daemon::serve(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query {
            history,
            config,
            format,
            zone,
            sql,
        } => query_command(&mut out, history, config, format, zone, &sql),
        Command::Backtest {
            config,
            truth,
            out: out_dir,
            plots,
            entities,
            quiet,
        } => {
            let cfg = RunConfig::load(&config)?;
            let opts = forewarn_engine::backtest::run::BacktestOptions {
                truth,
                out: out_dir
                    .unwrap_or_else(|| forewarn_engine::backtest::run::default_out(&config)),
                plots,
                entities,
                progress: !quiet,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            let o = forewarn_engine::backtest::run::backtest(&cfg, &opts)?;
            write!(out, "{}", forewarn_engine::backtest::run::summary(&o))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { dirs } => {
            let mut failed = 0;
            let mut total = 0;
            for d in &dirs {
                let cases = discover(d);
                if cases.is_empty() {
                    anyhow::bail!("no case directories (with case.toml) under {}", d.display());
                }
                for c in cases {
                    total += 1;
                    match run_case(&c) {
                        Ok(report) => {
                            if !report.passed() {
                                failed += 1;
                            }
                            writeln!(out, "{report}")?;
                        }
                        Err(CaseError::Rules(LoadError::Invalid { diagnostics, .. })) => {
                            failed += 1;
                            writeln!(out, "ERROR {}: the rules do not compile", c.display())?;
                            write!(out, "{}", diagnostics.render(false))?;
                        }
                        Err(e) => {
                            failed += 1;
                            writeln!(out, "ERROR {}: {:#}", c.display(), anyhow::Error::new(e))?;
                        }
                    }
                }
            }
            writeln!(
                out,
                "{}, {} passed, {} failed",
                plural(total, "case", "cases"),
                total - failed,
                failed
            )?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The `[history] dir` (resolved against the file's directory) and `[engine] display-zone`
/// of a configuration file, read leniently: `query` needs nothing else from it.
#[cfg(feature = "sql")]
fn query_defaults(config: &std::path::Path) -> anyhow::Result<(Option<PathBuf>, Option<String>)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read config {}", config.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("invalid config {}", config.display()))?;
    let base = config.parent().unwrap_or(std::path::Path::new("."));
    let dir = v
        .get("history")
        .and_then(|h| h.get("dir"))
        .and_then(|d| d.as_str())
        .map(|d| base.join(d));
    let zone = v
        .get("engine")
        .and_then(|e| e.get("display-zone"))
        .and_then(|z| z.as_str())
        .map(str::to_string);
    Ok((dir, zone))
}

/// `forewarn query`: SQL over the Parquet history; exit code 1 when the query fails.
#[cfg(feature = "sql")]
fn query_command(
    out: &mut dyn Write,
    history: Option<PathBuf>,
    config: Option<PathBuf>,
    format: QueryFormat,
    zone: Option<String>,
    sql: &str,
) -> anyhow::Result<ExitCode> {
    use forewarn_engine::history::query::{query, OutputFormat};
    let (config_dir, config_zone) = match &config {
        Some(c) => query_defaults(c)?,
        None => (None, None),
    };
    if history.is_none() && config.is_some() && config_dir.is_none() {
        anyhow::bail!(
            "{} has no [history] section: it keeps no history to query (pass --history DIR)",
            config
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    let dir = history
        .or(config_dir)
        .unwrap_or_else(|| PathBuf::from("out/history"));
    // a directory that exists but is not a history (e.g. one level too deep) would query as
    // empty tables: say so instead
    let kinds = ["readings", "rejected", "warnings", "status", "_journal"];
    if dir.is_dir() && !kinds.iter().any(|k| dir.join(k).exists()) {
        anyhow::bail!(
            "{} is not a forewarn history directory (it has none of readings/, warnings/, rejected/, status/)",
            dir.display()
        );
    }
    let zone: forewarn_engine::time::Zone = match zone.or(config_zone) {
        Some(z) => z.parse()?,
        None => Default::default(),
    };
    let format = match format {
        QueryFormat::Table => OutputFormat::Table,
        QueryFormat::Csv => OutputFormat::Csv,
        QueryFormat::Json => OutputFormat::Json,
    };
    match query(&dir, sql, format, &zone) {
        Ok(text) => {
            out.write_all(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `forewarn query` in a build without the `sql` feature: say how to get it.
#[cfg(not(feature = "sql"))]
fn query_command(
    _out: &mut dyn Write,
    _history: Option<PathBuf>,
    _config: Option<PathBuf>,
    _format: QueryFormat,
    _zone: Option<String>,
    _sql: &str,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "error: `forewarn query` needs the `sql` feature (DataFusion), and this forewarn was \
         built without it. Run it with:\n  cargo run --release -p forewarn-engine --features sql \
         -- query [--history DIR] [--config FILE] [--format table|csv|json] [--zone ZONE] \"<SQL>\"\n\
         or install it with: cargo install --path engine --features sql"
    );
    Ok(ExitCode::from(2))
}
