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
use forewarn_engine::run::run;

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
        } => {
            drop(out);
            let mut cfg = RunConfig::load(&config)?;
            if let Some(w) = warnings {
                cfg.output.warnings = (w.as_os_str() != "-").then_some(w);
            }
            if quiet || cfg.output.warnings.is_none() {
                cfg.output.console = false;
            }
            match run(&cfg) {
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
