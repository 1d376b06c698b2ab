//! Diagnostics: codes, spans, rendering (rustc style via `codespan-reporting`) and JSON.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::Buffer;
use std::borrow::Cow;
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
    /// The source is read as [`crate::compile`] reads it: without a leading byte order mark,
    /// and with lone carriage returns (old Mac line ends) as line breaks.
    pub fn new(file_name: &str, source: &str, items: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics::normalized(file_name, normalize(source).into_owned(), items)
    }

    /// As [`Diagnostics::new`], for a source that is normalized already.
    pub(crate) fn normalized(
        file_name: &str,
        source: String,
        mut items: Vec<Diagnostic>,
    ) -> Diagnostics {
        items.sort_by_key(|d| (d.span.start, d.span.end));
        Diagnostics {
            file_name: file_name.to_string(),
            source,
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
    ///
    /// Control characters are never echoed: in source lines and messages they are shown as
    /// their visible symbols (`␛` for ESC) or `�`, so that a rule file cannot drive the
    /// terminal.
    pub fn render(&self, color: bool) -> String {
        let shown = Printable::new(&self.source);
        let file_name = printable(&self.file_name);
        let file = SimpleFile::new(file_name.as_ref(), shown.text.as_ref());
        let config = term::Config::default();
        let mut buf = if color {
            Buffer::ansi()
        } else {
            Buffer::no_color()
        };
        for d in &self.items {
            let cs_diag = self.to_codespan(d, &shown);
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

    fn to_codespan(&self, d: &Diagnostic, shown: &Printable<'_>) -> cs::Diagnostic<()> {
        let base = match d.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        };
        let range = |s: Span| {
            let r = self.clamp(s);
            shown.offset(r.start)..shown.offset(r.end)
        };
        let mut labels =
            vec![cs::Label::primary((), range(d.span)).with_message(printable(&d.label))];
        for s in &d.secondary {
            labels.push(cs::Label::secondary((), range(s.span)).with_message(printable(&s.label)));
        }
        let mut notes: Vec<String> = d
            .notes
            .iter()
            .map(|n| format!("note: {}", printable(n)))
            .collect();
        if let Some(h) = &d.help {
            notes.push(format!("help: {}", printable(h)));
        }
        base.with_code(d.code)
            .with_message(printable(&d.message))
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

/// The source as the compiler reads it: a leading byte order mark (U+FEFF) removed, and
/// every lone carriage return (an old Mac line end) turned into a line feed. The second keeps
/// every byte offset, so spans into the result are spans into the source less its BOM.
pub(crate) fn normalize(source: &str) -> Cow<'_, str> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let b = source.as_bytes();
    let lone_cr = |i: usize| b[i] == b'\r' && b.get(i + 1) != Some(&b'\n');
    if !(0..b.len()).any(lone_cr) {
        return Cow::Borrowed(source);
    }
    let mut out = b.to_vec();
    for (i, c) in out.iter_mut().enumerate() {
        if lone_cr(i) {
            *c = b'\n';
        }
    }
    // only ASCII bytes were replaced by ASCII bytes
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// What is shown for a character that must not reach the terminal as it is, if any: C0
/// controls (but tab and line ends) and DEL as their Control Pictures (`␛` for ESC), C1
/// controls and bidirectional overrides as `�`.
fn replacement(c: char, next: Option<char>) -> Option<char> {
    match c {
        '\t' | '\n' => None,
        '\r' if next == Some('\n') => None,
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32),
        '\u{7f}' => Some('\u{2421}'),
        '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => Some('\u{fffd}'),
        _ => None,
    }
}

/// `text` with control characters made visible (see [`replacement`]).
fn printable(text: &str) -> Cow<'_, str> {
    let mut chars = text.chars().peekable();
    let mut out: Option<String> = None;
    let mut at = 0;
    while let Some(c) = chars.next() {
        let r = replacement(c, chars.peek().copied());
        if let Some(r) = r {
            out.get_or_insert_with(|| text[..at].to_string()).push(r);
        } else if let Some(o) = out.as_mut() {
            o.push(c);
        }
        at += c.len_utf8();
    }
    out.map_or(Cow::Borrowed(text), Cow::Owned)
}

/// A source made printable, with the byte offsets of the original mapped into it.
struct Printable<'a> {
    text: Cow<'a, str>,
    /// For each replaced character: its original end offset and the total growth so far.
    shifts: Vec<(usize, isize)>,
}

impl<'a> Printable<'a> {
    fn new(source: &'a str) -> Printable<'a> {
        let mut shifts = Vec::new();
        let mut grown: isize = 0;
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if let Some(r) = replacement(c, chars.peek().map(|x| x.1)) {
                grown += r.len_utf8() as isize - c.len_utf8() as isize;
                shifts.push((i + c.len_utf8(), grown));
            }
        }
        let text = if shifts.is_empty() {
            Cow::Borrowed(source)
        } else {
            printable(source)
        };
        Printable { text, shifts }
    }

    /// Where a (character boundary) offset of the original is in the printable text.
    fn offset(&self, o: usize) -> usize {
        let n = self.shifts.partition_point(|(end, _)| *end <= o);
        let grown = if n == 0 { 0 } else { self.shifts[n - 1].1 };
        (o as isize + grown).max(0) as usize
    }
}

/// 1-based (line, column) of a byte offset in `source`; columns count characters. A line ends
/// at `\n`, `\r\n` or a lone `\r`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let all = source.as_bytes();
    let before = &all[..offset];
    let is_break =
        |i: usize| all[i] == b'\n' || (all[i] == b'\r' && all.get(i + 1) != Some(&b'\n'));
    let line = (0..offset).filter(|&i| is_break(i)).count() + 1;
    let line_start = (0..offset)
        .rev()
        .find(|&i| is_break(i))
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
