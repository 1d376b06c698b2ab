//! Diagnostics: codes, spans, rendering (rustc style via `codespan-reporting`) and JSON.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::Buffer;
use std::fmt;

/// A half-open byte range `[start, end)` into the rule source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file compiles, but something is probably wrong.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A secondary location shown with a diagnostic (e.g. the first definition of a duplicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondary {
    /// Where.
    pub span: Span,
    /// What to say there.
    pub label: String,
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code (`E204`, `W501`, ...), see `docs/language.md`.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// One-line message.
    pub message: String,
    /// The offending text.
    pub span: Span,
    /// Text shown under the carets.
    pub label: String,
    /// Further notes (`= note: ...`).
    pub notes: Vec<String>,
    /// A hint how to fix it (`= help: ...`).
    pub help: Option<String>,
    /// Other places that explain this one (e.g. a higher level, a first definition).
    pub secondary: Vec<Secondary>,
}

impl Diagnostic {
    /// An error with a code, message and primary span; the label starts empty.
    pub fn error(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: String::new(),
            notes: Vec::new(),
            help: None,
            secondary: Vec::new(),
        }
    }

    /// A warning with a code, message and primary span.
    pub fn warning(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span)
        }
    }

    /// Set the label under the carets.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    /// Add a note.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Set the help text.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Set the help text if there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Add a secondary labelled span.
    pub fn secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push(Secondary {
            span,
            label: label.into(),
        });
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Every diagnostic of one rule file, with the file name and source needed to render them.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file_name: String,
    source: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Diagnostics for `source` (named `file_name` in the output), sorted by position.
    pub fn new(file_name: &str, source: &str, mut items: Vec<Diagnostic>) -> Diagnostics {
        items.sort_by_key(|d| (d.span.start, d.span.end));
        Diagnostics {
            file_name: file_name.to_string(),
            source: source.to_string(),
            items,
        }
    }

    /// Wrap the warnings of a successful compile (`Compiled::warnings`) to render them.
    pub fn from_warnings(file_name: &str, source: &str, warnings: &[Diagnostic]) -> Diagnostics {
        Diagnostics::new(file_name, source, warnings.to_vec())
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics, errors and warnings, in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The file name used in rendered output.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Render rustc-style (`error[E204]: ...`, `--> file:line:col`, source line, carets,
    /// `= help: ...`), with ANSI colour only when `color` is true.
    pub fn render(&self, color: bool) -> String {
        let file = SimpleFile::new(self.file_name.as_str(), self.source.as_str());
        let config = term::Config::default();
        let mut buf = if color {
            Buffer::ansi()
        } else {
            Buffer::no_color()
        };
        for d in &self.items {
            let cs_diag = self.to_codespan(d);
            // Writing to an in-memory buffer only fails on a span outside the source, which
            // `clamp` rules out.
            let _ = term::emit(&mut buf, &config, &file, &cs_diag);
        }
        String::from_utf8_lossy(buf.as_slice()).into_owned()
    }

    fn clamp(&self, s: Span) -> std::ops::Range<usize> {
        let len = self.source.len();
        let mut start = s.start.min(len);
        let mut end = s.end.min(len).max(start);
        while !self.source.is_char_boundary(start) {
            start -= 1;
        }
        while !self.source.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }

    fn to_codespan(&self, d: &Diagnostic) -> cs::Diagnostic<()> {
        let base = match d.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        };
        let mut labels = vec![cs::Label::primary((), self.clamp(d.span)).with_message(&d.label)];
        for s in &d.secondary {
            labels.push(cs::Label::secondary((), self.clamp(s.span)).with_message(&s.label));
        }
        let mut notes: Vec<String> = d.notes.iter().map(|n| format!("note: {n}")).collect();
        if let Some(h) = &d.help {
            notes.push(format!("help: {h}"));
        }
        base.with_code(d.code)
            .with_message(&d.message)
            .with_labels(labels)
            .with_notes(notes)
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.source, offset)
    }

    /// A JSON array of `{code, severity, message, file, line, column, end_line, end_column,
    /// label, help, notes}`; lines and columns are 1-based, the end is exclusive.
    pub fn to_json(&self) -> serde_json::Value {
        let list = self
            .items
            .iter()
            .map(|d| {
                let (line, column) = self.line_col(d.span.start);
                let (end_line, end_column) = self.line_col(d.span.end);
                serde_json::json!({
                    "code": d.code,
                    "severity": d.severity.to_string(),
                    "message": d.message,
                    "file": self.file_name,
                    "line": line,
                    "column": column,
                    "end_line": end_line,
                    "end_column": end_column,
                    "label": d.label,
                    "help": d.help,
                    "notes": d.notes,
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// 1-based (line, column) of a byte offset in `source`; columns count characters.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// Levenshtein edit distance, counting a swap of two adjacent characters as one edit
/// (optimal string alignment), so that `rian` is one edit from `rain`.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, x) in d.iter_mut().enumerate().take(w) {
        *x = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `name`, if close enough to be a plausible typo.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let max = (name.chars().count() / 3).max(1);
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let d = if c.to_lowercase() == lower {
                0
            } else {
                levenshtein(name, c)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, c)| (*d, c.to_string()))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("rain", "rain"), 0);
        assert_eq!(levenshtein("rian", "rain"), 1);
    }

    #[test]
    fn suggestions() {
        let c = ["rain", "stage", "rain_intensity"];
        assert_eq!(did_you_mean("rian", c), Some("rain".into()));
        assert_eq!(did_you_mean("stag", c), Some("stage".into()));
        assert_eq!(did_you_mean("zzzzzz", c), None);
    }

    #[test]
    fn line_columns() {
        let s = "ab\ncdé f";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 7), (2, 4));
    }
}
