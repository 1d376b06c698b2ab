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
///
/// A leading byte order mark (U+FEFF) is skipped, and a lone carriage return (old Mac line
/// ends) is a line break: spans are byte offsets into the source without its BOM, which is
/// what [`Diagnostics::new`] expects (it skips the BOM too).
pub fn compile(
    source: &str,
    file_name: &str,
    loader: &dyn TableLoader,
) -> Result<Compiled, Diagnostics> {
    compile_with(&diag::normalize(source), file_name, loader, Vec::new(), &[])
}

/// Compile a rule file read as bytes. Bytes that are not UTF-8 are reported (E004, at the
/// first bad byte, with its line and column) and shown as `�` in the rendered source; the rest
/// of the file is still checked, so that its other errors are reported too. Otherwise as
/// [`compile`].
pub fn compile_bytes(
    source: &[u8],
    file_name: &str,
    loader: &dyn TableLoader,
) -> Result<Compiled, Diagnostics> {
    if let Ok(text) = std::str::from_utf8(source) {
        return compile(text, file_name, loader);
    }
    // each invalid sequence becomes one U+FFFD in the lossy copy: find where they are
    let mut bad: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut lossy = String::with_capacity(source.len() + 8);
    for chunk in source.utf8_chunks() {
        lossy.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            bad.push((lossy.len(), chunk.invalid().to_vec()));
            lossy.push('\u{fffd}');
        }
    }
    let text = diag::normalize(&lossy);
    let shift = lossy.len() - text.len(); // a stripped BOM
    let bad: Vec<(usize, Vec<u8>)> = bad.into_iter().map(|(p, b)| (p - shift, b)).collect();
    let mut diags = Vec::new();
    if let Some((at, bytes)) = bad.first() {
        let hex: Vec<String> = bytes.iter().map(|b| format!("0x{b:02X}")).collect();
        let mut d = Diagnostic::error(
            "E004",
            format!("the file is not valid UTF-8 (byte {})", hex.join(" ")),
            Span::new(*at, at + '\u{fffd}'.len_utf8()),
        )
        .label("not UTF-8 text");
        if bad.len() > 1 {
            d = d.note(format!(
                "{} more invalid byte sequence{} follow{}",
                bad.len() - 1,
                if bad.len() == 2 { "" } else { "s" },
                if bad.len() == 2 { "s" } else { "" }
            ));
        }
        diags.push(d.help(
            "save the rule file as UTF-8; text saved as Latin-1 or Windows-1252 is not UTF-8",
        ));
    }
    let at: Vec<usize> = bad.iter().map(|(p, _)| *p).collect();
    compile_with(&text, file_name, loader, diags, &at)
}

/// Compile a normalized source; `first` are diagnostics found before parsing, and an E001 at
/// one of `replaced` (an invalid byte, reported by E004) is not reported again.
fn compile_with(
    source: &str,
    file_name: &str,
    loader: &dyn TableLoader,
    first: Vec<Diagnostic>,
    replaced: &[usize],
) -> Result<Compiled, Diagnostics> {
    let (file, mut diags) = parse::parse(source);
    diags.retain(|d| !(d.code == "E001" && replaced.contains(&d.span.start)));
    diags.extend(first);
    let syntax_errors = diags.iter().any(Diagnostic::is_error);
    let checker = check::Checker::new(source, loader, syntax_errors);
    let (plan, more) = checker.check(&file);
    diags.extend(more);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics::normalized(
            file_name,
            source.to_string(),
            diags,
        ));
    }
    let warnings = Diagnostics::normalized(file_name, String::new(), diags)
        .iter()
        .cloned()
        .collect();
    Ok(Compiled { plan, warnings })
}

/// Format a duration in the canonical compact form used in labels (`3h`, `1h30m`, `10d`).
pub fn format_duration(ms: ir::Millis) -> String {
    check::fmt_duration(ms)
}
