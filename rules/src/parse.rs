//! The parser: recursive descent over [`crate::lex`] tokens, with error recovery.
//!
//! After a syntax error the parser skips to the next clause start (`let`, `clear`,
//! `message`, `LEVEL when`) or top-level keyword (`feed`, `table`, `levels`, `rule`) and goes
//! on, so every syntax error of a file is reported in one pass. A clause whose expression
//! failed keeps its name with an [`ExprKind::Error`] body, so that the checker does not report
//! knock-on errors (e.g. "unknown name" for a `let` whose definition failed to parse).

use crate::ast::*;
use crate::diag::{did_you_mean, Diagnostic, Span};
use crate::lex::{lex_range, Tok, Token};

const ITEM_KEYWORDS: &[&str] = &["feed", "table", "levels", "rule"];
const KEYWORDS: &[&str] = &[
    "feed", "table", "levels", "rule", "on", "let", "when", "for", "exit", "clear", "after",
    "message", "and", "or", "not", "true", "false", "key", "group",
];
const FEED_OPTIONS: &[&str] = &[
    "range",
    "interval",
    "late",
    "reorder",
    "stale",
    "offline",
    "duplicates",
    "strict",
];

type PResult<T> = Result<T, ()>;

// Operator precedence, loosest first; `not` takes an operand of comparisons and tighter.
const P_OR: u8 = 1;
const P_AND: u8 = 2;
const P_NOT: u8 = 3;
const P_CMP: u8 = 4;
const P_ADD: u8 = 5;
const P_MUL: u8 = 6;
const P_DEFAULT: u8 = 7;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    diags: Vec<Diagnostic>,
    /// Open levels of expression nesting (parentheses, call arguments, `not`, unary `-`):
    /// bounds the parser's own recursion by [`MAX_DEPTH`].
    nest: u32,
}

/// Parse a whole file. Returns the (possibly partial) tree and every lexical and syntax error.
pub fn parse(src: &str) -> (File, Vec<Diagnostic>) {
    let (toks, diags) = lex_range(src, 0, src.len());
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        diags,
        nest: 0,
    };
    let file = p.file();
    (file, p.diags)
}

/// Parse `src[start..end]` as a single expression (used for message template holes).
pub fn parse_fragment(src: &str, start: usize, end: usize) -> Result<Expr, Vec<Diagnostic>> {
    let (toks, diags) = lex_range(src, start, end);
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        diags,
        nest: 0,
    };
    let r = p.expr();
    if r.is_ok() && !p.at(&Tok::Eof) {
        let t = p.peek().clone();
        p.diags.push(
            Diagnostic::error(
                "E101",
                format!("unexpected {} in a message hole", t.tok.describe()),
                t.span,
            )
            .label("expected `}` or `:.N`"),
        );
    }
    match r {
        Ok(e) if p.diags.is_empty() => Ok(e),
        _ => Err(p.diags),
    }
}

fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)]
    }

    fn at(&self, t: &Tok) -> bool {
        &self.peek().tok == t
    }

    fn at_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s == kw)
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].span.end
        }
    }

    fn error_expected(&mut self, what: &str) {
        let t = self.peek().clone();
        let mut d = Diagnostic::error(
            "E101",
            format!("expected {what}, found {}", t.tok.describe()),
            t.span,
        )
        .label(format!("expected {what}"));
        if let Tok::Ident(s) = &t.tok {
            if is_keyword(s) {
                d = d.note(format!("`{s}` is a keyword"));
            }
        }
        let e = self.prev_end();
        let line_break = self
            .src
            .get(e..t.span.start)
            .is_some_and(|between| between.contains('\n'));
        if matches!(t.tok, Tok::Eof) || (self.pos > 0 && line_break) {
            // What is missing belongs at the end of the previous token (the end of its
            // line), not at the next line's first token or the end of trailing comments.
            d.span = Span::new(e, e);
            if !matches!(t.tok, Tok::Eof) {
                d = d.note(format!("the next line starts with {}", t.tok.describe()));
            }
        }
        self.diags.push(d);
    }

    fn expect(&mut self, t: &Tok, what: &str) -> PResult<Token> {
        if self.at(t) {
            Ok(self.bump())
        } else {
            self.error_expected(what);
            Err(())
        }
    }

    fn expect_kw(&mut self, kw: &str) -> PResult<Token> {
        if self.at_kw(kw) {
            Ok(self.bump())
        } else {
            self.error_expected(&format!("`{kw}`"));
            Err(())
        }
    }

    fn ident(&mut self, what: &str) -> PResult<Ident> {
        match &self.peek().tok {
            Tok::Ident(s) if !is_keyword(s) => {
                let name = s.clone();
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => {
                self.error_expected(what);
                Err(())
            }
        }
    }

    fn at_item_start(&self) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if ITEM_KEYWORDS.contains(&s.as_str()))
            || self.at(&Tok::Eof)
    }

    fn at_clause_start(&self) -> bool {
        match &self.peek().tok {
            Tok::Ident(s) => {
                matches!(s.as_str(), "let" | "clear" | "message")
                    || self.at_extra_clause()
                    || (s != "exit"
                        && !is_keyword(s)
                        && matches!(&self.peek_at(1).tok, Tok::Ident(w) if w == "when"))
            }
            _ => false,
        }
    }

    /// `cap LEVEL:`, `event "…"` / `event LANG "…"`, `shadow` (contextual words: a level may
    /// still be named `cap`, `event` or `shadow`, since a level is followed by `when`).
    fn at_extra_clause(&self) -> bool {
        let Tok::Ident(s) = &self.peek().tok else {
            return false;
        };
        let next = &self.peek_at(1).tok;
        match s.as_str() {
            "cap" => {
                matches!(next, Tok::Ident(w) if w != "when") && self.peek_at(2).tok == Tok::Colon
            }
            "event" => {
                matches!(next, Tok::Str(_))
                    || matches!(next, Tok::Ident(w) if w != "when" && !is_keyword(w))
            }
            "shadow" => !matches!(next, Tok::Ident(w) if w == "when"),
            _ => false,
        }
    }

    /// A language tag: `en`, `zh-CN`, `zh-Hans-CN` (adjacent identifiers joined by `-`).
    fn lang_tag(&mut self) -> PResult<(String, Span)> {
        let first = self.ident("a language tag such as `en` or `zh-CN`")?;
        let mut text = first.name;
        let mut span = first.span;
        while self.at(&Tok::Minus) && self.peek().span.start == span.end {
            let part = self.peek_at(1).clone();
            match part.tok {
                Tok::Ident(p) if part.span.start == span.end + 1 => {
                    self.bump();
                    self.bump();
                    text.push('-');
                    text.push_str(&p);
                    span = span.to(part.span);
                }
                _ => break,
            }
        }
        Ok((text, span))
    }

    fn string(&mut self, what: &str) -> PResult<Span> {
        match &self.peek().tok {
            Tok::Str(_) => Ok(self.bump().span),
            _ => {
                self.error_expected(what);
                Err(())
            }
        }
    }

    fn sync_item(&mut self) {
        while !self.at_item_start() {
            self.bump();
        }
    }

    fn sync_clause(&mut self) {
        while !self.at_item_start() && !self.at_clause_start() {
            self.bump();
        }
    }

    // ---- items ----

    fn file(&mut self) -> File {
        let mut items = Vec::new();
        while !self.at(&Tok::Eof) {
            let kw = match &self.peek().tok {
                Tok::Ident(s) => s.clone(),
                _ => String::new(),
            };
            let r = match kw.as_str() {
                "feed" => self.feed().map(Item::Feed),
                "table" => self.table().map(Item::Table),
                "levels" => self.levelset().map(Item::Levels),
                "rule" => {
                    let r = self.rule();
                    items.push(Item::Rule(r));
                    continue;
                }
                _ => {
                    let t = self.peek().clone();
                    let mut d = Diagnostic::error(
                        "E101",
                        format!(
                            "expected `feed`, `table`, `levels` or `rule`, found {}",
                            t.tok.describe()
                        ),
                        t.span,
                    )
                    .label("expected a declaration");
                    if let Some(s) = did_you_mean(&kw, ITEM_KEYWORDS.iter().copied()) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.diags.push(d);
                    self.bump();
                    Err(())
                }
            };
            match r {
                Ok(item) => items.push(item),
                Err(()) => self.sync_item(),
            }
        }
        File { items }
    }

    fn feed(&mut self) -> PResult<FeedDecl> {
        let start = self.bump().span.start;
        let name = self.ident("a feed name")?;
        self.expect(&Tok::Colon, "`:`")?;
        let forecast = match &self.peek().tok {
            Tok::Ident(s) if s == "forecast" && matches!(self.peek_at(1).tok, Tok::Ident(_)) => {
                Some(self.bump().span)
            }
            _ => None,
        };
        let quantity = match &self.peek().tok {
            Tok::Ident(_) => {
                let t = self.bump();
                let Tok::Ident(s) = t.tok else { unreachable!() };
                Ident {
                    name: s,
                    span: t.span,
                }
            }
            _ => {
                self.error_expected("a quantity (`depth`, `rate`, `level` or `count`)");
                return Err(());
            }
        };
        let unit = match &self.peek().tok {
            Tok::Ident(s) if !is_keyword(s) && !FEED_OPTIONS.contains(&s.as_str()) => {
                Some(self.unit_text())
            }
            _ => None,
        };
        let mut opts = Vec::new();
        while self.at(&Tok::Comma) {
            self.bump();
            match self.feed_opt() {
                Ok(o) => opts.push(o),
                Err(()) => {
                    while !self.at(&Tok::Comma) && !self.at_item_start() {
                        self.bump();
                    }
                }
            }
        }
        if !self.at_item_start() {
            self.error_expected("`,` and a feed option, or a new declaration");
            return Err(());
        }
        Ok(FeedDecl {
            name,
            forecast,
            quantity,
            unit,
            opts,
            span: Span::new(start, self.prev_end()),
        })
    }

    /// A unit after a quantity or a number: `mm`, `mm/h`, `m3/s`.
    fn unit_text(&mut self) -> (String, Span) {
        let t = self.bump();
        let Tok::Ident(mut text) = t.tok else {
            return (String::new(), t.span);
        };
        let mut span = t.span;
        if self.at(&Tok::Slash) {
            if let Tok::Ident(per) = &self.peek_at(1).tok {
                if matches!(per.as_str(), "h" | "s") {
                    text = format!("{text}/{per}");
                    self.bump();
                    span = span.to(self.bump().span);
                }
            }
        }
        (text, span)
    }

    fn feed_opt(&mut self) -> PResult<FeedOpt> {
        let t = self.peek().clone();
        let name = match &t.tok {
            Tok::Ident(s) if FEED_OPTIONS.contains(&s.as_str()) => {
                self.bump();
                Ident {
                    name: s.clone(),
                    span: t.span,
                }
            }
            _ => {
                let mut d = Diagnostic::error(
                    "E101",
                    format!("expected a feed option, found {}", t.tok.describe()),
                    t.span,
                )
                .label("not a feed option")
                .note(format!("feed options are {}", FEED_OPTIONS.join(", ")));
                if let Tok::Ident(s) = &t.tok {
                    if let Some(m) = did_you_mean(s, FEED_OPTIONS.iter().copied()) {
                        d = d.help(format!("did you mean `{m}`?"));
                    }
                }
                self.diags.push(d);
                return Err(());
            }
        };
        let value = match name.name.as_str() {
            "range" => {
                let lo = self.additive()?;
                self.expect(&Tok::DotDot, "`..`")?;
                let hi = self.additive()?;
                FeedOptValue::Range(lo, hi)
            }
            "duplicates" => FeedOptValue::Word(self.ident("`replace`, `ignore` or `add`")?),
            "strict" => FeedOptValue::Flag,
            _ => FeedOptValue::Duration(self.duration_arg()?),
        };
        Ok(FeedOpt {
            name: name.clone(),
            value,
            span: Span::new(name.span.start, self.prev_end()),
        })
    }

    fn table(&mut self) -> PResult<TableDecl> {
        let start = self.bump().span.start;
        let name = self.ident("a table name")?;
        self.expect(&Tok::Colon, "`:`")?;
        let path = match &self.peek().tok {
            Tok::Str(s) => {
                let s = s.clone();
                (s, self.bump().span)
            }
            _ => {
                self.error_expected("a file name in quotes");
                return Err(());
            }
        };
        self.expect(&Tok::Comma, "`,`")?;
        self.expect_kw("key")?;
        let key = self.ident("the key column")?;
        let mut groups = Vec::new();
        while self.at(&Tok::Comma) {
            self.bump();
            self.expect_kw("group")?;
            groups.push(self.ident("a group column")?);
        }
        if !self.at_item_start() {
            self.error_expected("`, group COLUMN` or a new declaration");
            return Err(());
        }
        Ok(TableDecl {
            name,
            path,
            key,
            groups,
            span: Span::new(start, self.prev_end()),
        })
    }

    fn level_list(&mut self, first: Ident) -> PResult<Vec<Ident>> {
        let mut v = vec![first];
        while self.at(&Tok::Lt) {
            self.bump();
            v.push(self.ident("a level name")?);
        }
        Ok(v)
    }

    fn levelset(&mut self) -> PResult<LevelSetDecl> {
        let start = self.bump().span.start;
        let name = self.ident("a level set name")?;
        self.expect(&Tok::Colon, "`:`")?;
        let first = self.ident("a level name")?;
        let levels = self.level_list(first)?;
        if !self.at_item_start() {
            self.error_expected("`<` and a level, or a new declaration");
            return Err(());
        }
        Ok(LevelSetDecl {
            name,
            levels,
            span: Span::new(start, self.prev_end()),
        })
    }

    fn rule_header(&mut self, r: &mut RuleDecl) -> PResult<()> {
        r.name = self.ident("a rule name")?;
        self.expect_kw("on")?;
        r.feeds.push(self.ident("a feed name")?);
        while self.at(&Tok::Comma) {
            self.bump();
            r.feeds.push(self.ident("a feed name")?);
        }
        if self.at_kw("levels") {
            self.bump();
            let first = self.ident("a level set or level names")?;
            r.levels = Some(if self.at(&Tok::Lt) {
                RuleLevels::Inline(self.level_list(first)?)
            } else {
                RuleLevels::Named(first)
            });
        }
        self.expect(&Tok::Colon, "`:`")?;
        Ok(())
    }

    fn rule(&mut self) -> RuleDecl {
        let start = self.bump().span.start;
        let mut r = RuleDecl {
            name: Ident {
                name: String::new(),
                span: Span::new(start, start),
            },
            feeds: Vec::new(),
            levels: None,
            clauses: Vec::new(),
            header: Span::new(start, start),
        };
        if self.rule_header(&mut r).is_err() {
            // skip the rest of the header
            while !self.at(&Tok::Colon)
                && !self.at_clause_start()
                && (!self.at_item_start() || self.at_kw("levels"))
            {
                self.bump();
            }
            if self.at(&Tok::Colon) {
                self.bump();
            }
        }
        r.header = Span::new(start, self.prev_end());
        while !self.at_item_start() {
            match self.clause() {
                Ok(c) => r.clauses.push(c),
                Err(()) => self.sync_clause(),
            }
        }
        r
    }

    fn expr_or_sync(&mut self) -> Expr {
        let start = self.peek().span.start;
        match self.expr() {
            Ok(e) => e,
            Err(()) => {
                self.sync_clause();
                Expr::new(
                    ExprKind::Error,
                    Span::new(start, self.prev_end().max(start)),
                )
            }
        }
    }

    fn clause(&mut self) -> PResult<Clause> {
        let t = self.peek().clone();
        let kw = match &t.tok {
            Tok::Ident(s) => s.clone(),
            _ => String::new(),
        };
        match kw.as_str() {
            "let" => {
                self.bump();
                let name = self.ident("a name")?;
                self.expect(&Tok::Assign, "`=`")?;
                let expr = self.expr_or_sync();
                Ok(Clause::Let { name, expr })
            }
            "for" => {
                self.bump();
                Ok(Clause::For(self.duration_arg()?))
            }
            "message" => {
                self.bump();
                match &self.peek().tok {
                    Tok::Str(_) => Ok(Clause::Message(self.bump().span)),
                    Tok::Ident(_) => {
                        let lang = self.lang_tag()?;
                        let text = self.string("a message in quotes")?;
                        Ok(Clause::LocalMessage { lang, text })
                    }
                    _ => {
                        self.error_expected("a message in quotes");
                        Err(())
                    }
                }
            }
            "event" if self.at_extra_clause() => {
                self.bump();
                let lang = match &self.peek().tok {
                    Tok::Ident(_) => Some(self.lang_tag()?),
                    _ => None,
                };
                let text = self.string("the event name in quotes")?;
                Ok(Clause::Event { lang, text })
            }
            "shadow" if self.at_extra_clause() => Ok(Clause::Shadow(self.bump().span)),
            "cap" if self.at_extra_clause() => {
                self.bump();
                let level = self.ident("a level name")?;
                self.expect(&Tok::Colon, "`:`")?;
                if !self.at_kw("severity") {
                    self.error_expected("`severity`");
                    return Err(());
                }
                self.bump();
                let severity =
                    self.ident("a CAP severity (`Extreme`, `Severe`, `Moderate`, `Minor`)")?;
                self.expect(&Tok::Comma, "`,`")?;
                if !self.at_kw("response") {
                    self.error_expected("`response`");
                    return Err(());
                }
                self.bump();
                let response =
                    self.ident("a CAP response type (`Prepare`, `Evacuate`, `Monitor`, …)")?;
                Ok(Clause::Cap {
                    level,
                    severity,
                    response,
                })
            }
            "clear" if matches!(&self.peek_at(1).tok, Tok::Ident(s) if s == "after" || s == "when") =>
            {
                self.bump();
                if self.at_kw("after") {
                    self.bump();
                    Ok(Clause::ClearAfter(self.duration_arg()?))
                } else {
                    self.bump();
                    let cond = self.expr_or_sync();
                    let hold = self.hold()?;
                    Ok(Clause::ClearWhen { cond, hold })
                }
            }
            "clear" => {
                self.bump();
                self.error_expected("`after` or `when`");
                Err(())
            }
            _ if !kw.is_empty() && !is_keyword(&kw) => {
                let name = self.ident("a level name")?;
                if !self.at_kw("when") {
                    self.error_expected("`when`");
                    return Err(());
                }
                self.bump();
                let when = self.expr_or_sync();
                let hold = self.hold()?;
                let mut exit = None;
                if self.at_kw("exit") {
                    self.bump();
                    self.expect_kw("when")?;
                    exit = Some(self.expr_or_sync());
                }
                Ok(Clause::Level {
                    name,
                    when,
                    hold,
                    exit,
                })
            }
            _ => {
                let mut d = Diagnostic::error(
                    "E101",
                    format!("expected a rule clause, found {}", t.tok.describe()),
                    t.span,
                )
                .label("expected `let`, `LEVEL when`, `for`, `clear`, `message`, `event`, `cap` or `shadow`");
                if kw == "exit" {
                    d = d.help("`exit when` belongs right after a level's `when` condition");
                }
                self.diags.push(d);
                self.bump();
                Err(())
            }
        }
    }

    fn hold(&mut self) -> PResult<Option<Expr>> {
        if self.at_kw("for") {
            self.bump();
            Ok(Some(self.duration_arg()?))
        } else {
            Ok(None)
        }
    }

    /// A duration value (parsed as an operand so that `5 m` can be diagnosed later).
    fn duration_arg(&mut self) -> PResult<Expr> {
        let starts = match &self.peek().tok {
            Tok::Ident(s) => !is_keyword(s) && !self.at_clause_start(),
            Tok::Number(_) | Tok::Duration(_) | Tok::Minus | Tok::LParen | Tok::Error => true,
            _ => false,
        };
        if !starts {
            self.error_expected("a duration such as `30m`");
            return Err(());
        }
        self.unary()
    }

    // ---- expressions ----
    //
    // Precedence climbing: one `climb` per operand that an operator waits for, so that the
    // parser's recursion is bounded by the depth of the tree it builds (each recursion below
    // is one enclosing node: a binary operator, `not`, `-`, a parenthesis or a call), and
    // that depth is bounded by MAX_DEPTH. The functions on the recursive path are kept small:
    // their stack frames, unoptimized, decide how deep a 2 MiB stack goes.

    /// A full expression (at the top of a clause, in parentheses or as a call argument).
    fn expr(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = self.climb(P_OR);
        self.nest -= 1;
        r
    }

    /// One nesting level deeper (leave it with `self.nest -= 1`); E102 past [`MAX_DEPTH`].
    /// Not a function taking a closure: that would add two stack frames to every level.
    fn enter(&mut self) -> PResult<()> {
        if self.nest >= MAX_DEPTH {
            self.too_deep_here();
            return Err(());
        }
        self.nest += 1;
        Ok(())
    }

    /// E102 at the token that opens the level too many (`(`, `,`, `not`, `-`, an operator).
    #[inline(never)]
    fn too_deep_here(&mut self) {
        let at = match self.pos.checked_sub(1) {
            Some(p) => self.toks[p].span,
            None => self.peek().span,
        };
        self.too_deep(at);
    }

    #[inline(never)]
    fn too_deep(&mut self, at: Span) {
        self.diags.push(
            Diagnostic::error(
                "E102",
                format!("expression nested too deeply (limit {MAX_DEPTH})"),
                at,
            )
            .label(format!("more than {MAX_DEPTH} levels deep here"))
            .note(
                "each operator, parenthesis, `not`, `-` and call nests one level; \
                 a chain `a or b or c …` nests one level per operator",
            )
            .help(
                "simplify the expression, or group a long chain with parentheses: \
                 `(a or b or c) or (d or e or f)` nests each group separately",
            ),
        );
    }

    /// A node over `kind`; E102 at `at` when the tree gets deeper than [`MAX_DEPTH`].
    fn node(&mut self, kind: ExprKind, span: Span, at: Span) -> PResult<Expr> {
        let e = Expr::new(kind, span);
        if e.depth > MAX_DEPTH {
            self.too_deep(at);
            return Err(());
        }
        Ok(e)
    }

    /// The binary operator at the cursor and its precedence.
    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match &self.peek().tok {
            Tok::Ident(s) if s == "or" => (BinOp::Or, P_OR),
            Tok::Ident(s) if s == "and" => (BinOp::And, P_AND),
            Tok::Plus => (BinOp::Add, P_ADD),
            Tok::Minus => (BinOp::Sub, P_ADD),
            Tok::Star => (BinOp::Mul, P_MUL),
            Tok::Slash => (BinOp::Div, P_MUL),
            Tok::QQ => (BinOp::Default, P_DEFAULT),
            _ => (self.cmp_op()?, P_CMP),
        })
    }

    fn cmp_op(&self) -> Option<BinOp> {
        Some(match self.peek().tok {
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::EqEq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Assign => BinOp::Eq,
            _ => return None,
        })
    }

    /// An expression of operators that bind at least as tightly as `min`.
    fn climb(&mut self, min: u8) -> PResult<Expr> {
        let l = if min <= P_NOT && self.at_kw("not") {
            self.not()
        } else {
            self.unary()
        };
        match l {
            Ok(l) => self.operators(l, min),
            Err(()) => Err(()),
        }
    }

    /// The binary operators (binding at least as tightly as `min`) after a first operand:
    /// kept out of `climb`, whose frame is on every level of parentheses.
    #[inline(never)]
    fn operators(&mut self, mut l: Expr, min: u8) -> PResult<Expr> {
        while let Some((op, prec)) = self.binop() {
            if prec < min {
                break;
            }
            let ot = self.bump();
            if ot.tok == Tok::Assign {
                self.assign_in_comparison(ot.span);
            }
            // left-associative; comparisons take no comparison operands
            self.enter()?;
            let r = self.climb(prec + 1);
            self.nest -= 1;
            l = self.binary(op, ot.span, l, r?)?;
            if prec == P_CMP && self.cmp_op().is_some() {
                self.chained_comparison();
                return Err(());
            }
        }
        Ok(l)
    }

    #[inline(never)]
    fn assign_in_comparison(&mut self, at: Span) {
        self.diags.push(
            Diagnostic::error("E101", "expected a comparison, found `=`", at)
                .label("`=` only binds a `let`")
                .help("compare with `==`"),
        );
    }

    #[inline(never)]
    fn chained_comparison(&mut self) {
        let t = self.peek().span;
        self.diags.push(
            Diagnostic::error("E101", "comparisons cannot be chained", t)
                .label("a second comparison")
                .help("combine comparisons with `and`: `a < b and b < c`"),
        );
    }

    fn binary(&mut self, op: BinOp, op_span: Span, l: Expr, r: Expr) -> PResult<Expr> {
        let span = l.span.to(r.span);
        self.node(
            ExprKind::Binary(op, op_span, Box::new(l), Box::new(r)),
            span,
            op_span,
        )
    }

    /// `not x`: binds looser than comparisons (`not a >= b` is `not (a >= b)`).
    fn not(&mut self) -> PResult<Expr> {
        let s = self.bump().span;
        self.enter()?;
        let e = self.climb(P_NOT);
        self.nest -= 1;
        let e = e?;
        let span = s.to(e.span);
        self.node(ExprKind::Unary(UnOp::Not, Box::new(e)), span, s)
    }

    /// `a + b` and tighter: a feed's range bound.
    fn additive(&mut self) -> PResult<Expr> {
        self.climb(P_ADD)
    }

    /// Unary minus and a primary.
    fn unary(&mut self) -> PResult<Expr> {
        if self.at(&Tok::Minus) {
            self.neg()
        } else {
            self.primary()
        }
    }

    #[inline(never)]
    fn neg(&mut self) -> PResult<Expr> {
        let s = self.bump().span;
        self.enter()?;
        let e = self.unary();
        self.nest -= 1;
        let e = e?;
        let span = s.to(e.span);
        self.node(ExprKind::Unary(UnOp::Neg, Box::new(e)), span, s)
    }

    fn primary(&mut self) -> PResult<Expr> {
        // the recursive forms in small functions of their own, the rest in `atom`
        if self.at(&Tok::LParen) {
            return self.paren();
        }
        let call = matches!(&self.peek().tok, Tok::Ident(s) if !is_keyword(s))
            && self.peek_at(1).tok == Tok::LParen;
        if call {
            return self.call();
        }
        self.atom()
    }

    fn paren(&mut self) -> PResult<Expr> {
        let open = self.bump().span;
        let e = self.expr()?;
        let close = self.expect(&Tok::RParen, "`)`")?.span;
        self.node(ExprKind::Paren(Box::new(e)), open.to(close), open)
    }

    fn call(&mut self) -> PResult<Expr> {
        let t = self.bump();
        let Tok::Ident(name) = t.tok else {
            return Err(());
        };
        let func = Ident { name, span: t.span };
        self.bump(); // `(`
        let mut args = Vec::new();
        if !self.at(&Tok::RParen) {
            args.push(self.expr()?);
            while self.at(&Tok::Comma) {
                self.bump();
                args.push(self.expr()?);
            }
        }
        let close = self.expect(&Tok::RParen, "`,` or `)`")?.span;
        self.node(ExprKind::Call { func, args }, t.span.to(close), t.span)
    }

    /// A primary that contains no expression: a number, duration, time, name, column.
    #[inline(never)]
    fn atom(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        let kind = match t.tok {
            Tok::Number(v) => {
                self.bump();
                let unit = match &self.peek().tok {
                    Tok::Ident(w)
                        if crate::units::is_unit_word(w)
                            || crate::units::is_spaced_duration_word(w) =>
                    {
                        Some(self.unit_text())
                    }
                    _ => None,
                };
                let span = unit.as_ref().map_or(t.span, |(_, s)| t.span.to(*s));
                return Ok(Expr::new(ExprKind::Num { value: v, unit }, span));
            }
            Tok::Duration(ms) => {
                self.bump();
                ExprKind::Duration(ms)
            }
            Tok::Time(hour, minute) => {
                self.bump();
                let zone = self.zone();
                let span = zone.as_ref().map_or(t.span, |(_, s)| t.span.to(*s));
                return Ok(Expr::new(ExprKind::Time { hour, minute, zone }, span));
            }
            Tok::Error => {
                self.bump();
                // a malformed time of day (`25:00 UTC`, already reported): its zone goes
                // with it, so that the zone is not a second, knock-on error
                if self.src[t.span.start..t.span.end].contains(':') {
                    if let Some((_, zs)) = self.zone() {
                        return Ok(Expr::new(ExprKind::Error, t.span.to(zs)));
                    }
                }
                ExprKind::Error
            }
            Tok::Ident(_) if self.at_clause_start() => {
                // `LEVEL when` on the next line: the expression is missing
                self.error_expected("an expression");
                return Err(());
            }
            Tok::Ident(ref s) if s == "next" && matches!(self.peek_at(1).tok, Tok::Duration(_)) => {
                self.bump();
                let d = self.bump();
                let Tok::Duration(ms) = d.tok else {
                    return Err(());
                };
                return Ok(Expr::new(ExprKind::Next(ms), t.span.to(d.span)));
            }
            Tok::Ident(ref s) if s == "true" || s == "false" => {
                self.bump();
                ExprKind::Bool(s == "true")
            }
            Tok::Ident(ref s) if !is_keyword(s) => {
                self.bump();
                let name = Ident {
                    name: s.clone(),
                    span: t.span,
                };
                if self.at(&Tok::Dot) {
                    self.bump();
                    let column = self.ident("a column name")?;
                    let span = t.span.to(column.span);
                    return Ok(Expr::new(
                        ExprKind::Column {
                            table: name,
                            column,
                        },
                        span,
                    ));
                }
                ExprKind::Name(name.name)
            }
            _ => {
                self.error_expected("an expression");
                return Err(());
            }
        };
        Ok(Expr::new(kind, t.span))
    }

    /// The zone after a time of day: the run of adjacent tokens (`Asia/Shanghai`, `+08:00`).
    fn zone(&mut self) -> Option<(String, Span)> {
        let first = self.peek().clone();
        let starts = match &first.tok {
            Tok::Ident(s) => !is_keyword(s),
            Tok::Plus | Tok::Minus => true,
            _ => false,
        };
        if !starts {
            return None;
        }
        let mut span = self.bump().span;
        loop {
            let t = self.peek();
            if t.span.start != span.end || matches!(t.tok, Tok::Comma | Tok::RParen | Tok::Eof) {
                break;
            }
            span = span.to(self.bump().span);
        }
        Some((self.src[span.start..span.end].to_string(), span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Print an expression fully parenthesized.
    fn show(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Num { value, unit } => match unit {
                Some((u, _)) => format!("{value} {u}"),
                None => format!("{value}"),
            },
            ExprKind::Duration(ms) => format!("{ms}ms"),
            ExprKind::Time { hour, minute, zone } => {
                format!(
                    "{hour:02}:{minute:02} {}",
                    zone.as_ref().map_or("", |z| &z.0)
                )
            }
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Name(n) => n.clone(),
            ExprKind::Column { table, column } => format!("{}.{}", table.name, column.name),
            ExprKind::Call { func, args } => format!(
                "{}({})",
                func.name,
                args.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            ExprKind::Unary(UnOp::Neg, e) => format!("(-{})", show(e)),
            ExprKind::Unary(UnOp::Not, e) => format!("(not {})", show(e)),
            ExprKind::Binary(op, _, l, r) => format!("({} {} {})", show(l), op.text(), show(r)),
            ExprKind::Paren(e) => show(e),
            ExprKind::Next(ms) => format!("next {ms}ms"),
            ExprKind::Error => "<error>".into(),
        }
    }

    fn expr(s: &str) -> String {
        let e = parse_fragment(s, 0, s.len()).expect("parses");
        show(&e)
    }

    #[test]
    fn precedence() {
        assert_eq!(
            expr("a or b and not c >= 1 + 2 * 3"),
            "(a or (b and (not (c >= (1 + (2 * 3))))))"
        );
        assert_eq!(expr("x >= g.c ?? 100 mm"), "(x >= (g.c ?? 100 mm))");
        assert_eq!(
            expr("today >= 80 - 0.5 * ear"),
            "(today >= (80 - (0.5 * ear)))"
        );
        assert_eq!(expr("-a * b"), "((-a) * b)");
        assert_eq!(expr("a - b - c"), "((a - b) - c)");
        assert_eq!(expr("(a or b) and c"), "((a or b) and c)");
        assert_eq!(expr("x >= 0.5 m/h"), "(x >= 0.5 m/h)");
        assert_eq!(
            expr("since(rain, 08:00 Asia/Shanghai)"),
            "since(rain, 08:00 Asia/Shanghai)"
        );
        assert_eq!(
            expr("since(rain, 08:00 +08:00)"),
            "since(rain, 08:00 +08:00)"
        );
        assert_eq!(expr("sum(rain, 3h)"), "sum(rain, 10800000ms)");
    }

    #[test]
    fn chained_comparison_is_an_error() {
        let e = parse_fragment("1 < x < 3", 0, 9).unwrap_err();
        assert_eq!(e[0].code, "E101");
        assert_eq!(e[0].message, "comparisons cannot be chained");
    }

    #[test]
    fn spans() {
        let s = "sum(rain, 3h) >= 50 mm";
        let e = parse_fragment(s, 0, s.len()).unwrap();
        assert_eq!(e.span, Span::new(0, s.len()));
        let ExprKind::Binary(_, op, l, r) = e.kind else {
            panic!()
        };
        assert_eq!(&s[op.start..op.end], ">=");
        assert_eq!(&s[l.span.start..l.span.end], "sum(rain, 3h)");
        assert_eq!(&s[r.span.start..r.span.end], "50 mm");
    }

    #[test]
    fn recovers_and_reports_several_errors() {
        let src = "feed rain: depth mm, late\n\
                   rule a on rain:\n  red when >= 5\n  orange when x >= 1\n  yellow wen x\n\
                   rule b on rain:\n  red when x >= 1\n";
        let (file, diags) = parse(src);
        let codes: Vec<_> = diags.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec!["E101", "E101", "E101"], "{diags:#?}");
        assert_eq!(file.items.len(), 3);
        let Item::Rule(a) = &file.items[1] else {
            panic!()
        };
        // red (with an error body) and orange survive
        assert_eq!(a.clauses.len(), 2);
    }

    #[test]
    fn example_file_parses() {
        let src = include_str!("../../docs/language.md");
        let start = src.find("```\n# Harris").unwrap() + 4;
        let end = start + src[start..].find("```").unwrap();
        let (file, diags) = parse(&src[start..end]);
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(file.items.len(), 5);
    }
}
