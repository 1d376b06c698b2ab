//! forewarn-rules: the rule language of forewarn — lexer, parser, checker and the compiled
//! [`ir::Plan`] the engine executes. No I/O, no async: tables come through a [`TableLoader`].
//!
//! ```text
//!  source text ──lex.rs──▶ tokens (byte spans)
//!                          │
//!                parse.rs  ▼  recursive descent, recovers at clause / item starts
//!                         AST (ast.rs, every node has a Span)
//!                          │
//!                check.rs  ▼  names, types, units, durations, tables (TableLoader),
//!                          │  level reachability (reach.rs), window dedup
//!                          ▼
//!                     ir::Plan ──▶ engine          (Display: EXPLAIN text, explain.rs)
//!
//!  every stage ──▶ Diagnostic { code, span, label, notes, help }  (diag.rs)
//!                  ──▶ Diagnostics::render (rustc style) / to_json
//! ```
//!
//! ```
//! use forewarn_rules::{compile, TableData, TableLoader};
//!
//! struct NoTables;
//! impl TableLoader for NoTables {
//!     fn load(&self, path: &str) -> Result<TableData, String> {
//!         Err(format!("no table {path}"))
//!     }
//! }
//!
//! let src = "feed rain: depth mm\n\
//!            rule heavy on rain:\n    warn when sum(rain, 1h) >= 30 mm\n";
//! let compiled = compile(src, "demo.rules", &NoTables).expect("compiles");
//! assert_eq!(compiled.plan.windows[0].label, "sum(rain, 1h)");
//!
//! let bad = "feed rain_intensity: rate mm/h\n\
//!            rule r on rain_intensity:\n    warn when sum(rain_intensity, 1h) >= 30\n";
//! let err = compile(bad, "bad.rules", &NoTables).unwrap_err();
//! assert_eq!(err.iter().next().unwrap().code, "E305");
//! assert!(err.render(false).contains("error[E305]"));
//! ```
#![deny(missing_docs)]

mod ast;
mod check;
pub mod diag;
mod explain;
pub mod ir;
mod lex;
mod parse;
mod reach;
mod units;

pub use diag::{Diagnostic, Diagnostics, Secondary, Severity, Span};

/// The raw contents of a table file: a header and rows of cells, all text (as read from CSV).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableData {
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// Rows of raw cells, in file order.
    pub rows: Vec<Vec<String>>,
}

/// Loads the tables a rule file declares. The path is passed exactly as written in the rules;
/// the caller resolves it (usually relative to the rule file).
pub trait TableLoader {
    /// Load a table; the error text is shown under the path in the diagnostic (E208).
    fn load(&self, path: &str) -> Result<TableData, String>;
}

/// A successful compile: the plan, and warnings that did not prevent it.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The checked plan for the engine.
    pub plan: ir::Plan,
    /// Warnings (W5xx); render them with [`Diagnostics::from_warnings`].
    pub warnings: Vec<Diagnostic>,
}

/// Compile a rule file. `file_name` is only used in diagnostics. On failure every error (and
/// warning) of the file is returned at once.
pub fn compile(
    source: &str,
    file_name: &str,
    loader: &dyn TableLoader,
) -> Result<Compiled, Diagnostics> {
    let (file, mut diags) = parse::parse(source);
    let syntax_errors = diags.iter().any(Diagnostic::is_error);
    let checker = check::Checker::new(source, loader, syntax_errors);
    let (plan, more) = checker.check(&file);
    diags.extend(more);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics::new(file_name, source, diags));
    }
    let warnings = Diagnostics::new(file_name, source, diags)
        .iter()
        .cloned()
        .collect();
    Ok(Compiled { plan, warnings })
}

/// Format a duration in the canonical compact form used in labels (`3h`, `1h30m`, `10d`).
pub fn format_duration(ms: ir::Millis) -> String {
    check::fmt_duration(ms)
}
