//! The lexer: source text to tokens with byte spans.
//!
//! Hand-written. Newlines are not significant; `#` starts a comment to the end of the line.
//! A number immediately followed by `ms s m h d w` (possibly compound, `1h30m`) is a
//! [`Tok::Duration`]; `HH:MM` is a [`Tok::Time`]. `5 m` (with a space) is a number and a unit.

use crate::diag::{Diagnostic, Span};
use crate::ir::Millis;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An identifier or keyword.
    Ident(String),
    /// A number literal.
    Number(f64),
    /// A duration literal in milliseconds.
    Duration(Millis),
    /// A time of day `HH:MM`.
    Time(u32, u32),
    /// A string literal (escapes resolved).
    Str(String),
    /// `:`
    Colon,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `=`
    Assign,
    /// `==`
    EqEq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Star,
    /// `/`
    Slash,
    /// `??`
    QQ,
    /// Text that failed to lex (already reported): stands for a value.
    Error,
    /// End of input.
    Eof,
}

impl Tok {
    /// How the token is described in "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Number(_) => "a number".into(),
            Tok::Duration(_) => "a duration".into(),
            Tok::Time(..) => "a time of day".into(),
            Tok::Str(_) => "a string".into(),
            Tok::Eof => "the end of the file".into(),
            Tok::Error => "malformed text".into(),
            other => format!("`{}`", other.punct()),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            Tok::Colon => ":",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::DotDot => "..",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Assign => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::QQ => "??",
            _ => "",
        }
    }
}

/// A token with its byte span.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Kind and payload.
    pub tok: Tok,
    /// Where it is in the source.
    pub span: Span,
}

/// Milliseconds per duration suffix.
pub fn duration_unit(s: &str) -> Option<Millis> {
    Some(match s {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

/// Why a word is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotDuration {
    /// Not digits and duration units.
    Malformed,
    /// Well formed, but too long for milliseconds in an `i64`.
    Overflow,
}

/// Parse a compound duration like `1h30m` (digits and suffixes only).
fn parse_duration(s: &str) -> Result<Millis, NotDuration> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: Option<Millis> = Some(0);
    let mut any = false;
    while i < b.len() {
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if ds == i {
            return Err(NotDuration::Malformed);
        }
        let n: Option<Millis> = s[ds..i].parse().ok();
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = duration_unit(&s[us..i]).ok_or(NotDuration::Malformed)?;
        total = total
            .zip(n)
            .and_then(|(t, n)| t.checked_add(n.checked_mul(unit)?));
        any = true;
    }
    match total {
        _ if !any => Err(NotDuration::Malformed),
        Some(t) => Ok(t),
        None => Err(NotDuration::Overflow),
    }
}

/// Lex `src[start..end]`; spans are absolute offsets into `src`.
pub fn lex_range(src: &str, start: usize, end: usize) -> (Vec<Token>, Vec<Diagnostic>) {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut diags = Vec::new();
    let mut i = start;
    let push = |toks: &mut Vec<Token>, tok: Tok, s: usize, e: usize| {
        toks.push(Token {
            tok,
            span: Span::new(s, e),
        })
    };
    while i < end {
        let c = b[i];
        let s = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < end && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                push(&mut toks, Tok::Ident(src[s..i].to_string()), s, i);
            }
            b'0'..=b'9' => {
                while i < end && b[i].is_ascii_digit() {
                    i += 1;
                }
                // time of day HH:MM
                if i + 3 <= end
                    && b[i] == b':'
                    && b[i + 1].is_ascii_digit()
                    && b[i + 2].is_ascii_digit()
                    && !(i + 3 < end && b[i + 3].is_ascii_alphanumeric())
                {
                    let h: u32 = src[s..i].parse().unwrap_or(u32::MAX);
                    let m: u32 = src[i + 1..i + 3].parse().unwrap_or(u32::MAX);
                    i += 3;
                    if i - s != 5 || h > 23 || m > 59 {
                        diags.push(
                            Diagnostic::error(
                                "E003",
                                format!("malformed time of day `{}`", &src[s..i]),
                                Span::new(s, i),
                            )
                            .label("expected HH:MM with HH 00..23 and MM 00..59")
                            .help("write a time of day like `08:00`"),
                        );
                        push(&mut toks, Tok::Error, s, i);
                    } else {
                        push(&mut toks, Tok::Time(h, m), s, i);
                    }
                    continue;
                }
                // fraction: only when a digit follows the dot (so `0..4` is a range)
                if i + 1 < end && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < end && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                // exponent: `1e3`, `2.5E-2` (no unit or duration suffix starts with `e`)
                if i + 1 < end && matches!(b[i], b'e' | b'E') {
                    let sign = usize::from(matches!(b[i + 1], b'+' | b'-'));
                    if i + 1 + sign < end && b[i + 1 + sign].is_ascii_digit() {
                        i += 1 + sign;
                        while i < end && b[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let num_end = i;
                let plain_digits = src[s..num_end].bytes().all(|c| c.is_ascii_digit());
                // a number too large for a float (`1e400`) is not a number
                let value = src[s..num_end].parse::<f64>().unwrap_or(0.0);
                if !value.is_finite() {
                    let mut j = i;
                    while j < end && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    diags.push(
                        Diagnostic::error(
                            "E003",
                            format!("number `{}` is too large", &src[s..num_end]),
                            Span::new(s, num_end),
                        )
                        .label("beyond the range of a floating-point number")
                        .help("numbers must be finite, below about 1.8e308"),
                    );
                    push(&mut toks, Tok::Error, s, j);
                    i = j;
                    continue;
                }
                // an immediately following suffix
                if i < end && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                    let mut j = i;
                    while j < end && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    let text = &src[s..j];
                    let suffix = &src[i..j];
                    if plain_digits {
                        match parse_duration(text) {
                            Ok(ms) => {
                                push(&mut toks, Tok::Duration(ms), s, j);
                                i = j;
                                continue;
                            }
                            Err(NotDuration::Overflow) => {
                                diags.push(
                                    Diagnostic::error(
                                        "E003",
                                        format!("duration `{text}` overflows"),
                                        Span::new(s, j),
                                    )
                                    .label("too long to count in milliseconds")
                                    .help("durations must be shorter than about 292 million years"),
                                );
                                push(&mut toks, Tok::Error, s, j);
                                i = j;
                                continue;
                            }
                            Err(NotDuration::Malformed) => {}
                        }
                    }
                    if crate::units::is_unit_word(suffix) {
                        // `50mm`: a number and its unit, written together
                        push(&mut toks, Tok::Number(value), s, num_end);
                        i = num_end;
                        continue;
                    }
                    let looks_duration = suffix
                        .trim_end_matches(|c: char| c.is_ascii_alphanumeric())
                        .is_empty()
                        && duration_unit(suffix.trim_end_matches(|c: char| c.is_ascii_digit()))
                            .is_some();
                    let word_unit = ["hour", "hr", "min", "sec", "day", "week"]
                        .iter()
                        .find(|w| suffix.to_ascii_lowercase().starts_with(*w))
                        .map(|w| match *w {
                            "hour" | "hr" => "h",
                            "min" => "m",
                            "sec" => "s",
                            "day" => "d",
                            _ => "w",
                        });
                    let help = if let Some(u) = word_unit {
                        format!(
                            "durations use short units (ms, s, m, h, d, w): write `{}{u}`",
                            &src[s..num_end]
                        )
                    } else if src[s..num_end].contains(['e', 'E'])
                        && duration_unit(suffix).is_some()
                    {
                        "durations are written with plain digits, without an exponent".to_string()
                    } else if src[s..num_end].contains('.') && duration_unit(suffix).is_some() {
                        "durations are whole numbers: write `1h30m` rather than `1.5h`".to_string()
                    } else if looks_duration {
                        "a compound duration alternates numbers and units, like `1h30m`".to_string()
                    } else {
                        "durations are written like `90s`, `30m`, `3h`, `1h30m`, `10d`; put a space between a number and its unit (`50 mm`)".to_string()
                    };
                    diags.push(
                        Diagnostic::error(
                            "E003",
                            format!("malformed number or duration `{text}`"),
                            Span::new(s, j),
                        )
                        .label("not a number, a number with a unit, or a duration")
                        .help(help),
                    );
                    push(&mut toks, Tok::Error, s, j);
                    i = j;
                    continue;
                }
                if i + 1 < end && b[i] == b'.' && b[i + 1] == b'.' {
                    // range `0..4`: the number ends here
                } else if i < end && b[i] == b'.' && !(i + 1 < end && b[i + 1] == b'.') {
                    // `5.` followed by something that is not a digit: take the dot as malformed
                    let j = i + 1;
                    if j >= end || !(b[j].is_ascii_alphabetic() || b[j] == b'_') {
                        diags.push(
                            Diagnostic::error(
                                "E003",
                                format!("malformed number `{}`", &src[s..j]),
                                Span::new(s, j),
                            )
                            .label("a decimal point needs digits after it")
                            .help("write `5` or `5.0`"),
                        );
                        push(&mut toks, Tok::Error, s, j);
                        i = j;
                        continue;
                    }
                }
                push(&mut toks, Tok::Number(value), s, num_end);
            }
            b'"' => {
                i += 1;
                let mut out = String::new();
                let mut closed = false;
                while i < end {
                    match b[i] {
                        b'"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        b'\\' if i + 1 < end => {
                            let (ch, len) = match b[i + 1] {
                                b'n' => ('\n', 2),
                                b't' => ('\t', 2),
                                b'"' => ('"', 2),
                                b'\\' => ('\\', 2),
                                _ => ('\\', 1),
                            };
                            out.push(ch);
                            i += len;
                        }
                        b'\n' => break,
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                            out.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if !closed {
                    diags.push(
                        Diagnostic::error("E002", "unterminated string", Span::new(s, i))
                            .label("this string has no closing `\"`")
                            .help("strings end on the same line with `\"`"),
                    );
                }
                push(&mut toks, Tok::Str(out), s, i);
            }
            _ => {
                let two: &[u8] = if i + 1 < end { &b[i..i + 2] } else { b"" };
                let (tok, len) = match two {
                    b".." => (Some(Tok::DotDot), 2),
                    b"==" => (Some(Tok::EqEq), 2),
                    b"!=" => (Some(Tok::Ne), 2),
                    b"<=" => (Some(Tok::Le), 2),
                    b">=" => (Some(Tok::Ge), 2),
                    b"??" => (Some(Tok::QQ), 2),
                    _ => match c {
                        b':' => (Some(Tok::Colon), 1),
                        b',' => (Some(Tok::Comma), 1),
                        b'.' => (Some(Tok::Dot), 1),
                        b'(' => (Some(Tok::LParen), 1),
                        b')' => (Some(Tok::RParen), 1),
                        b'=' => (Some(Tok::Assign), 1),
                        b'<' => (Some(Tok::Lt), 1),
                        b'>' => (Some(Tok::Gt), 1),
                        b'+' => (Some(Tok::Plus), 1),
                        b'-' => (Some(Tok::Minus), 1),
                        b'*' => (Some(Tok::Star), 1),
                        b'/' => (Some(Tok::Slash), 1),
                        _ => (None, src[i..].chars().next().map_or(1, char::len_utf8)),
                    },
                };
                match tok {
                    Some(t) => push(&mut toks, t, s, s + len),
                    None if matches!(c, b'&' | b'|' | b'!') => {
                        // C-style logic: report once, and read it as the keyword meant
                        let doubled = i + 1 < end && b[i + 1] == c && c != b'!';
                        let e = s + if doubled { 2 } else { 1 };
                        let word = match c {
                            b'&' => "and",
                            b'|' => "or",
                            _ => "not",
                        };
                        diags.push(
                            Diagnostic::error(
                                "E001",
                                format!("unexpected `{}`", &src[s..e]),
                                Span::new(s, e),
                            )
                            .label("not part of the language")
                            .help(if c == b'!' {
                                "write `not` for negation, `!=` for inequality".to_string()
                            } else {
                                format!("write `{word}`")
                            }),
                        );
                        push(&mut toks, Tok::Ident(word.to_string()), s, e);
                        i = e;
                        continue;
                    }
                    None => {
                        let ch = src[i..].chars().next().unwrap_or('?');
                        let help = match ch {
                            '?' => Some("`??` gives a default for a missing table value"),
                            '\'' => Some("strings use double quotes"),
                            _ => None,
                        };
                        let mut d = Diagnostic::error(
                            "E001",
                            format!("unexpected character `{}`", ch.escape_debug()),
                            Span::new(s, s + len),
                        )
                        .label("not part of the language");
                        if let Some(h) = help {
                            d = d.help(h);
                        }
                        diags.push(d);
                    }
                }
                i = s + len;
            }
        }
    }
    toks.push(Token {
        tok: Tok::Eof,
        span: Span::new(end, end),
    });
    (toks, diags)
}

/// Lex a whole source.
#[cfg(test)]
pub fn lex(src: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    lex_range(src, 0, src.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        let (t, d) = lex(s);
        assert!(d.is_empty(), "{d:?}");
        t.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn durations_numbers_units() {
        assert_eq!(
            kinds("3h 1h30m 5 m 5m 2.5 90s 250ms"),
            vec![
                Tok::Duration(3 * 3_600_000),
                Tok::Duration(5_400_000),
                Tok::Number(5.0),
                Tok::Ident("m".into()),
                Tok::Duration(300_000),
                Tok::Number(2.5),
                Tok::Duration(90_000),
                Tok::Duration(250),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn exponents_and_overflow() {
        assert_eq!(
            kinds("1e3 2.5E-2 1e+2 4e1mm"),
            vec![
                Tok::Number(1000.0),
                Tok::Number(0.025),
                Tok::Number(100.0),
                Tok::Number(40.0),
                Tok::Ident("mm".into()),
                Tok::Eof
            ]
        );
        let (t, d) = lex("1e400 9999999999999999999s 99999999999w 5e");
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "number `1e400` is too large",
                "duration `9999999999999999999s` overflows",
                "duration `99999999999w` overflows",
                "malformed number or duration `5e`"
            ]
        );
        assert!(t[..4].iter().all(|t| t.tok == Tok::Error));
    }

    #[test]
    fn range_and_time() {
        assert_eq!(
            kinds("0..4 08:00 +08:00"),
            vec![
                Tok::Number(0.0),
                Tok::DotDot,
                Tok::Number(4.0),
                Tok::Time(8, 0),
                Tok::Plus,
                Tok::Time(8, 0),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn spans_are_byte_ranges() {
        let src = "let s3 = sum(rain, 3h) # c\n  >= 50mm";
        let (t, d) = lex(src);
        assert!(d.is_empty());
        let spans: Vec<&str> = t.iter().map(|t| &src[t.span.start..t.span.end]).collect();
        assert_eq!(
            spans,
            vec!["let", "s3", "=", "sum", "(", "rain", ",", "3h", ")", ">=", "50", "mm", ""]
        );
    }

    #[test]
    fn operators() {
        assert_eq!(
            kinds("a ?? b != c == d <= e"),
            vec![
                Tok::Ident("a".into()),
                Tok::QQ,
                Tok::Ident("b".into()),
                Tok::Ne,
                Tok::Ident("c".into()),
                Tok::EqEq,
                Tok::Ident("d".into()),
                Tok::Le,
                Tok::Ident("e".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors() {
        let (t, d) = lex("a && b");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].span, Span::new(2, 4));
        assert_eq!(t[1].tok, Tok::Ident("and".into()));
        let (_, d) = lex("a @ \"open");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].code, "E001");
        assert_eq!(d[0].span, Span::new(2, 3));
        assert_eq!(d[1].code, "E002");
        let (_, d) = lex("3hours 25:00 1.5h");
        let codes: Vec<_> = d.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec!["E003", "E003", "E003"]);
        assert_eq!(d[0].span, Span::new(0, 6));
    }
}
