//! Loading rule files and their tables from disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use forewarn_rules::{Compiled, Diagnostics, TableData, TableLoader};

/// Loads tables named in a rule file from CSV files, relative to the rule file's directory;
/// `overrides` maps a path as written in the rules to another file.
#[derive(Debug, Clone, Default)]
pub struct FsTableLoader {
    /// Directory relative paths are resolved against.
    pub base: PathBuf,
    /// Path as written in the rules → file to read instead.
    pub overrides: HashMap<String, PathBuf>,
}

impl TableLoader for FsTableLoader {
    fn load(&self, path: &str) -> Result<TableData, String> {
        let file = self
            .overrides
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.base.join(path));
        read_csv_table(&file).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// Read a CSV file with a header row into raw table cells.
pub fn read_csv_table(path: &Path) -> Result<TableData, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| e.to_string())?;
    let columns: Vec<String> = rdr
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(TableData { columns, rows })
}

/// Errors loading a rule file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read rules {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The rules do not compile; the diagnostics say why.
    #[error("{} error(s) in {path}", .diagnostics.iter().filter(|d| d.severity == forewarn_rules::Severity::Error).count())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every diagnostic.
        diagnostics: Box<Diagnostics>,
    },
}

/// A loaded rule file: the compiled plan and the warnings of the check, ready to render.
#[derive(Debug, Clone)]
pub struct LoadedRules {
    /// The plan for the engine.
    pub plan: forewarn_rules::ir::Plan,
    /// Warnings that did not prevent compiling (W5xx), with the source to render them.
    pub warnings: Diagnostics,
}

/// Read, parse, check and plan a rule file, loading its tables relative to it.
pub fn load_rules(
    path: &Path,
    overrides: HashMap<String, PathBuf>,
) -> Result<LoadedRules, LoadError> {
    load_rules_with(path, overrides).map(|(loaded, _)| loaded)
}

/// Everything a rule set was compiled from — the rule source and every table's contents —
/// so that it can be compiled again later exactly (a daemon's reload replayed after a
/// crash, a checkpoint restored after the files changed on disk).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuleSnapshot {
    /// The rule file's name, as in diagnostics.
    pub name: String,
    /// The rule source.
    pub source: Vec<u8>,
    /// Each table as the rules name it, with its columns and rows.
    pub tables: Vec<SnapshotTable>,
}

/// A table in a [`RuleSnapshot`]: its path as the rules write it, columns and rows.
pub type SnapshotTable = (String, Vec<String>, Vec<Vec<String>>);

struct RecordingLoader<'a> {
    inner: &'a FsTableLoader,
    seen: std::cell::RefCell<Vec<SnapshotTable>>,
}

impl TableLoader for RecordingLoader<'_> {
    fn load(&self, path: &str) -> Result<TableData, String> {
        let t = self.inner.load(path)?;
        self.seen
            .borrow_mut()
            .push((path.to_string(), t.columns.clone(), t.rows.clone()));
        Ok(t)
    }
}

impl TableLoader for RuleSnapshot {
    fn load(&self, path: &str) -> Result<TableData, String> {
        self.tables
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, columns, rows)| TableData {
                columns: columns.clone(),
                rows: rows.clone(),
            })
            .ok_or_else(|| format!("table {path} is not in the rule snapshot"))
    }
}

/// [`load_rules`], also returning what the rules were compiled from.
pub fn load_rules_snapshot(path: &Path) -> Result<(LoadedRules, RuleSnapshot), LoadError> {
    load_rules_with(path, HashMap::new())
}

fn load_rules_with(
    path: &Path,
    overrides: HashMap<String, PathBuf>,
) -> Result<(LoadedRules, RuleSnapshot), LoadError> {
    // bytes: a file that is not UTF-8 is a diagnostic with line and column (E004), not an I/O
    // error
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fs = FsTableLoader {
        base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        overrides,
    };
    let loader = RecordingLoader {
        inner: &fs,
        seen: Default::default(),
    };
    let name = path.display().to_string();
    let Compiled { plan, warnings } = forewarn_rules::compile_bytes(&bytes, &name, &loader)
        .map_err(|d| LoadError::Invalid {
            path: path.to_path_buf(),
            diagnostics: Box::new(d),
        })?;
    // a file that compiles is UTF-8
    let source = String::from_utf8_lossy(&bytes);
    let warnings = Diagnostics::from_warnings(&name, &source, &warnings);
    let snapshot = RuleSnapshot {
        name,
        source: bytes.clone(),
        tables: loader.seen.into_inner(),
    };
    Ok((LoadedRules { plan, warnings }, snapshot))
}

impl RuleSnapshot {
    /// Compile the snapshot again: the same plan (and rule-set hash) as when it was taken.
    pub fn compile(&self) -> Result<forewarn_rules::ir::Plan, String> {
        forewarn_rules::compile_bytes(&self.source, &self.name, self)
            .map(|c| c.plan)
            .map_err(|d| d.render(false))
    }
}
