//! The checker: resolves names, types, units and durations of an [`ast::File`] and builds the
//! [`ir::Plan`]. Every error of the file is collected; a name whose definition already failed
//! is "poisoned" so that its uses do not produce knock-on errors.

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::ast::{self, BinOp as ABin, Clause, ExprKind, Ident, Item, RuleLevels, UnOp, MAX_DEPTH};
use crate::diag::{did_you_mean, Diagnostic, Span};
use crate::ir::{self, Expr, FeedId, Millis, Quantity, TableId, Unit, WindowFunc, WindowId};
use crate::reach;
use crate::units::{self, UnitKind};
use crate::{TableData, TableLoader};

/// Functions over a horizon ahead of the evaluation time.
const AHEAD_FUNCS: &[&str] = &["forecast", "forecast_max", "project", "time_to"];
/// CAP 1.2 `severity` values.
const CAP_SEVERITIES: &[&str] = &["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
/// CAP 1.2 `responseType` values a level may declare (`AllClear` is for the cancel).
const CAP_RESPONSES: &[&str] = &[
    "Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "None",
];

/// The canonical spelling of a CAP enumeration word, matched without regard to case.
fn cap_word(w: &str, words: &[&'static str]) -> Option<&'static str> {
    words.iter().copied().find(|c| c.eq_ignore_ascii_case(w))
}

/// The text of a string literal (quotes removed, `\"` and `\\` unescaped).
fn string_literal(src: &str) -> String {
    let inner = src
        .strip_prefix('"')
        .map(|s| s.strip_suffix('"').unwrap_or(s))
        .unwrap_or(src);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

const WINDOW_FUNCS: &[&str] = &[
    "sum",
    "count",
    "avg",
    "twa",
    "min",
    "max",
    "first",
    "last",
    "delta",
    "rate",
    "integrate",
    "missing",
    "decay_sum",
    "since",
];
/// The most nodes the uses of `let`s may write out in one rule (E103): `let`s that use each
/// other twice would otherwise double the tree at every step. What is written without `let`s
/// is bounded by the file's length.
pub const MAX_NODES: usize = 100_000;

/// The most antecedent days of `decay_sum` (E307): the evaluation costs one day window each.
pub const MAX_DECAY_DAYS: i64 = 366;

/// Depth and node count of a checked expression, computed without recursion.
fn ir_size(e: &Expr) -> (u32, usize) {
    let mut stack = vec![(e, 1u32)];
    let (mut depth, mut nodes) = (0, 0);
    while let Some((e, d)) = stack.pop() {
        nodes += 1;
        depth = depth.max(d);
        match e {
            Expr::Neg(x) | Expr::Not(x) => stack.push((x, d + 1)),
            Expr::Binary(_, l, r) => {
                stack.push((l, d + 1));
                stack.push((r, d + 1));
            }
            _ => {}
        }
    }
    (depth, nodes)
}

const GROUP_FUNCS: &[&str] = &[
    "group_median",
    "group_mean",
    "group_min",
    "group_max",
    "group_count",
    "peer_median",
    "peer_mean",
    "peer_min",
    "peer_max",
    "peer_count",
];

/// Format a duration compactly: `3h`, `1h30m`, `24h`, `10d`, `250ms`. Days are used from
/// two days on (`24h` and `36h` stay in hours, as hydrologists write them; `48h` is `2d`).
pub fn fmt_duration(ms: Millis) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    let days_from = if rest >= 2 * 86_400_000 {
        86_400_000u64
    } else {
        u64::MAX
    };
    for (unit, size) in [
        ("d", days_from),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size && size != u64::MAX {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

/// The numeric "unit type" of a value while checking.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nu {
    /// A canonical unit.
    Known(Unit),
    /// A plain number or a table column: takes the unit of the other side.
    Bare,
    /// A constant in `cm` or `cm/h`, resolved by what it meets.
    Amb(UnitKind),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Num(Nu),
    Cond,
    /// Already reported: stay silent.
    Error,
}

type Checked = (Expr, Ty);

const ERR: Checked = (Expr::Num(0.0), Ty::Error);

fn nu_text(n: Nu) -> String {
    match n {
        Nu::Known(u) => units::describe(u),
        Nu::Bare => "a plain number".to_string(),
        Nu::Amb(UnitKind::CmPerHour) => "a number in cm/h".to_string(),
        Nu::Amb(_) => "a number in cm".to_string(),
    }
}

fn scale(e: Expr, k: f64) -> Expr {
    if k == 1.0 {
        return e;
    }
    match e {
        Expr::Num(v) => Expr::Num(v * k),
        e => Expr::Binary(ir::BinOp::Mul, Box::new(e), Box::new(Expr::Num(k))),
    }
}

fn is_const(e: &Expr) -> bool {
    matches!(e, Expr::Num(_))
}

fn fold(op: ir::BinOp, l: Expr, r: Expr) -> Expr {
    match (op, &l, &r) {
        (ir::BinOp::Add, Expr::Num(a), Expr::Num(b)) => Expr::Num(a + b),
        (ir::BinOp::Sub, Expr::Num(a), Expr::Num(b)) => Expr::Num(a - b),
        (ir::BinOp::Mul, Expr::Num(a), Expr::Num(b)) => Expr::Num(a * b),
        (ir::BinOp::Div, Expr::Num(a), Expr::Num(b)) if *b != 0.0 => Expr::Num(a / b),
        _ => Expr::Binary(op, Box::new(l), Box::new(r)),
    }
}

struct TableEntry {
    def: ir::TableDef,
    failed: bool,
    name_span: Span,
    /// Per column: first non-numeric cell (entity, text), if any.
    text_example: Vec<Option<(String, String)>>,
}

#[derive(Clone)]
enum LetVal {
    /// The checked value, its type and its size in nodes.
    Ok(Expr, Ty, usize),
    Poisoned,
}

/// What a rule reads, gathered while checking its expressions.
#[derive(Default)]
struct RuleCx {
    lets: HashMap<String, LetVal>,
    all_lets: Vec<String>,
    /// Windows in first-use order.
    windows: Vec<WindowId>,
    /// Horizon values (`forecast`, `project`) in first-use order, labelled.
    aheads: Vec<(String, Expr, Unit)>,
    thresholds: Vec<(String, Expr)>,
    required: Vec<TableId>,
    /// Every table reference: (table, span, has default).
    table_refs: Vec<(TableId, Span, bool)>,
    /// Nodes written out by the uses of `let`s so far (E103 past [`MAX_NODES`]).
    substituted: usize,
    /// E103 is reported (once per rule).
    too_large: bool,
}

impl RuleCx {
    fn use_window(&mut self, w: WindowId) {
        if !self.windows.contains(&w) {
            self.windows.push(w);
        }
    }
    fn use_table(&mut self, t: TableId, span: Span, has_default: bool) {
        self.table_refs.push((t, span, has_default));
        if !has_default && !self.required.contains(&t) {
            self.required.push(t);
        }
    }
}

struct LevelInfo {
    def: ir::LevelDef,
    when_span: Span,
}

pub(crate) struct Checker<'a> {
    src: &'a str,
    loader: &'a dyn TableLoader,
    pub(crate) diags: Vec<Diagnostic>,
    syntax_errors: bool,
    hasher: Sha256,
    feeds: Vec<ir::FeedDef>,
    feed_spans: Vec<Span>,
    feed_used: Vec<bool>,
    /// Feeds whose declaration failed: their uses stay silent.
    feed_bad: Vec<bool>,
    tables: Vec<TableEntry>,
    levelsets: HashMap<String, (Vec<Ident>, Span)>,
    levelset_names: Vec<String>,
    windows: Vec<ir::WindowNode>,
    rules: Vec<ir::RuleDef>,
    rule_spans: HashMap<String, Span>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(src: &'a str, loader: &'a dyn TableLoader, syntax_errors: bool) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(src.as_bytes());
        Checker {
            src,
            loader,
            diags: Vec::new(),
            syntax_errors,
            hasher,
            feeds: Vec::new(),
            feed_spans: Vec::new(),
            feed_used: Vec::new(),
            feed_bad: Vec::new(),
            tables: Vec::new(),
            levelsets: HashMap::new(),
            levelset_names: Vec::new(),
            windows: Vec::new(),
            rules: Vec::new(),
            rule_spans: HashMap::new(),
        }
    }

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn text(&self, s: Span) -> &str {
        self.src.get(s.start..s.end).unwrap_or("")
    }

    fn line_of(&self, offset: usize) -> u32 {
        crate::diag::line_col(self.src, offset).0 as u32
    }

    /// Check the whole file and build the plan (meaningful only when no error was reported).
    pub(crate) fn check(mut self, file: &ast::File) -> (ir::Plan, Vec<Diagnostic>) {
        // declarations first, so that rules may use anything declared anywhere
        for item in &file.items {
            match item {
                Item::Feed(f) => self.feed(f),
                Item::Table(t) => self.table(t),
                Item::Levels(l) => self.levelset(l),
                Item::Rule(_) => {}
            }
        }
        for item in &file.items {
            if let Item::Rule(r) = item {
                self.rule(r);
            }
        }
        let no_rules = !file.items.iter().any(|i| matches!(i, Item::Rule(_)));
        if no_rules && !self.syntax_errors {
            let what = if file.items.is_empty() {
                "the file declares nothing"
            } else {
                "the file declares no `rule`"
            };
            self.diags.push(
                Diagnostic::warning(
                    "W504",
                    "no rules: nothing will ever be evaluated",
                    Span::new(0, 0),
                )
                .label(what)
                .help("add a rule, e.g. `rule heavy_rain on rain:` and `warning when sum(rain, 1h) >= 30 mm`"),
            );
        }
        if !self.syntax_errors {
            for (i, used) in self.feed_used.iter().enumerate() {
                if !used {
                    let name = &self.feeds[i].name;
                    self.diags.push(
                        Diagnostic::warning(
                            "W502",
                            format!("feed `{name}` is declared but not used by any rule"),
                            self.feed_spans[i],
                        )
                        .label("never used")
                        .help("remove the declaration, or use the feed in a rule"),
                    );
                }
            }
        }
        let hash = self.hasher.clone().finalize();
        let mut ruleset_hash = String::with_capacity(64);
        for b in hash {
            let _ = write!(ruleset_hash, "{b:02x}");
        }
        let plan = ir::Plan {
            feeds: self.feeds,
            tables: self.tables.into_iter().map(|t| t.def).collect(),
            windows: self.windows,
            rules: self.rules,
            ruleset_hash,
        };
        (plan, self.diags)
    }

    // ---------------------------------------------------------------- declarations

    fn feed(&mut self, f: &ast::FeedDecl) {
        if let Some(i) = self.feeds.iter().position(|x| x.name == f.name.name) {
            let first = self.feed_spans[i];
            self.err(
                Diagnostic::error(
                    "E207",
                    format!("feed `{}` is declared twice", f.name.name),
                    f.name.span,
                )
                .label("declared again here")
                .secondary(first, "first declared here"),
            );
            return;
        }
        let quantity = match f.quantity.name.as_str() {
            "depth" => Some(Quantity::Depth),
            "rate" => Some(Quantity::Rate),
            "level" => Some(Quantity::Level),
            "count" => Some(Quantity::Count),
            other => {
                let sugg = did_you_mean(other, ["depth", "rate", "level", "count"]);
                self.err(
                    Diagnostic::error(
                        "E212",
                        format!("unknown quantity `{other}`"),
                        f.quantity.span,
                    )
                    .label("expected `depth`, `rate`, `level` or `count`")
                    .maybe_help(sugg.map(|s| format!("did you mean `{s}`?"))),
                );
                None
            }
        };
        let mut bad = quantity.is_none();
        let (unit, scale_, declared) = match quantity {
            Some(q) => match units::feed_unit(q, f.unit.as_ref().map(|u| u.0.as_str())) {
                Ok((u, s)) => (
                    u,
                    s,
                    f.unit
                        .as_ref()
                        .map_or_else(|| u.to_string(), |x| x.0.clone()),
                ),
                Err(allowed) => {
                    let (text, span) = f.unit.clone().unwrap_or_default();
                    let d = if units::lookup(&text).is_none() {
                        Diagnostic::error("E212", format!("unknown unit `{text}`"), span)
                            .label("not a unit forewarn knows")
                    } else {
                        Diagnostic::error(
                            "E304",
                            format!("unit `{text}` does not fit a {} feed", f.quantity.name),
                            span,
                        )
                        .label(format!("not a unit of {}", f.quantity.name))
                    };
                    self.err(d.help(allowed));
                    bad = true;
                    (Unit::None, 1.0, text)
                }
            },
            None => (Unit::None, 1.0, String::new()),
        };
        let mut def = ir::FeedDef {
            name: f.name.name.clone(),
            quantity: quantity.unwrap_or(Quantity::Count),
            unit,
            declared_unit: declared,
            scale: scale_,
            range: None,
            interval: None,
            late: 15 * 60_000,
            reorder: 0,
            stale: None,
            offline: None,
            duplicates: ir::DuplicatePolicy::Replace,
            strict: false,
            forecast: f.forecast.is_some(),
        };
        if let (Some(fs), Some(q)) = (f.forecast, quantity) {
            if !matches!(q, Quantity::Depth | Quantity::Level) {
                self.err(
                    Diagnostic::error(
                        "E305",
                        format!("a forecast feed carries a depth or a level, not a {}", quantity_name(q)),
                        f.quantity.span,
                    )
                    .label("not forecastable")
                    .secondary(fs, "a forecast feed")
                    .help("write `feed qpf: forecast depth mm` (rain) or `feed stage_fc: forecast level m`"),
                );
                bad = true;
            } else if scale_ != 1.0 {
                // forecasts give their unit per message (`"unit": "in"`); values without one
                // are read in the canonical unit, so the feed must declare that unit
                let (text, span) = f.unit.clone().unwrap_or_default();
                self.err(
                    Diagnostic::error(
                        "E307",
                        format!("a forecast feed is declared in {unit}, not {text}"),
                        span,
                    )
                    .label(format!("forecast values are held in {unit}"))
                    .help(format!(
                        "write `{unit}`; a forecast in {text} says so itself (`\"unit\": \"{text}\"` in its message) and is converted when it is read"
                    )),
                );
                bad = true;
            }
            if let Some(o) = f.opts.first() {
                self.err(
                    Diagnostic::error(
                        "E307",
                        format!("`{}` is not an option of a forecast feed", o.name.name),
                        o.name.span,
                    )
                    .label("readings' option")
                    .secondary(fs, "a forecast feed")
                    .help("range, interval, late, reorder, stale, offline, duplicates and strict apply to readings; a forecast feed takes none"),
                );
            }
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut stale_span = None;
        let mut offline_span = None;
        for o in &f.opts {
            if let Some(first) = seen.insert(o.name.name.as_str(), o.name.span) {
                self.err(
                    Diagnostic::error(
                        "E207",
                        format!("option `{}` is given twice", o.name.name),
                        o.name.span,
                    )
                    .label("given again here")
                    .secondary(first, "first given here"),
                );
                continue;
            }
            match &o.value {
                ast::FeedOptValue::Range(lo, hi) => {
                    let lo_v = self.range_bound(lo, &def);
                    let hi_v = self.range_bound(hi, &def);
                    if let (Some(a), Some(b)) = (lo_v, hi_v) {
                        if a > b {
                            self.err(
                                Diagnostic::error(
                                    "E307",
                                    "the range's low end is above its high end",
                                    o.span,
                                )
                                .label(format!("{} > {}", self.text(lo.span), self.text(hi.span)))
                                .help("write the range as `low .. high`"),
                            );
                        } else {
                            def.range = Some((a, b));
                        }
                    }
                }
                ast::FeedOptValue::Duration(e) => {
                    let allow_zero = matches!(o.name.name.as_str(), "late" | "reorder");
                    let what = format!("`{}`", o.name.name);
                    if let Some(ms) = self.expect_duration(e, &what, allow_zero) {
                        match o.name.name.as_str() {
                            "interval" => def.interval = Some(ms),
                            "late" => def.late = ms,
                            "reorder" => def.reorder = ms,
                            "stale" => {
                                def.stale = Some(ms);
                                stale_span = Some(o.span);
                            }
                            "offline" => {
                                def.offline = Some(ms);
                                offline_span = Some(o.span);
                            }
                            _ => {}
                        }
                    }
                }
                ast::FeedOptValue::Word(w) => match w.name.as_str() {
                    "replace" => def.duplicates = ir::DuplicatePolicy::Replace,
                    "ignore" => def.duplicates = ir::DuplicatePolicy::Ignore,
                    "add" => def.duplicates = ir::DuplicatePolicy::Add,
                    other => {
                        let s = did_you_mean(other, ["replace", "ignore", "add"]);
                        self.err(
                            Diagnostic::error(
                                "E307",
                                format!("invalid value `{other}` for `duplicates`"),
                                w.span,
                            )
                            .label("expected `replace`, `ignore` or `add`")
                            .maybe_help(s.map(|s| format!("did you mean `{s}`?"))),
                        );
                    }
                },
                ast::FeedOptValue::Flag => def.strict = true,
            }
        }
        if let (Some(s), Some(o), Some(ss), Some(os)) =
            (def.stale, def.offline, stale_span, offline_span)
        {
            if o <= s {
                self.err(
                    Diagnostic::error(
                        "E307",
                        "the offline budget must be longer than the staleness budget",
                        os,
                    )
                    .label(format!("offline after {}", fmt_duration(o)))
                    .secondary(ss, format!("stale after {}", fmt_duration(s)))
                    .help("a feed first goes stale, then offline: make `offline` longer"),
                );
            }
        }
        self.feeds.push(def);
        self.feed_spans.push(f.name.span);
        self.feed_used.push(false);
        self.feed_bad.push(bad);
    }

    fn range_bound(&mut self, e: &ast::Expr, def: &ir::FeedDef) -> Option<f64> {
        let (neg, inner) = match &e.kind {
            ExprKind::Unary(UnOp::Neg, x) => (true, &**x),
            _ => (false, e),
        };
        let v = match &inner.kind {
            ExprKind::Num { value, unit: None } => value * def.scale,
            ExprKind::Num {
                value,
                unit: Some((u, us)),
            } => match units::lookup(u).and_then(|k| units::resolve_against(k, def.unit)) {
                Some(k) => value * k,
                None => {
                    self.err(
                        Diagnostic::error(
                            "E304",
                            format!("unit `{u}` does not fit feed `{}`", def.name),
                            *us,
                        )
                        .label(format!("the feed is in {}", def.declared_unit))
                        .help("range bounds are in the feed's declared unit; leave the unit out"),
                    );
                    return None;
                }
            },
            ExprKind::Error => return None,
            _ => {
                self.err(
                    Diagnostic::error("E302", "a range bound must be a number", e.span)
                        .label("expected a number")
                        .help("write `range 0 .. 200`"),
                );
                return None;
            }
        };
        Some(if neg { -v } else { v })
    }

    fn table(&mut self, t: &ast::TableDecl) {
        if let Some(first) = self
            .tables
            .iter()
            .find(|x| x.def.name == t.name.name)
            .map(|x| x.name_span)
        {
            self.err(
                Diagnostic::error(
                    "E207",
                    format!("table `{}` is declared twice", t.name.name),
                    t.name.span,
                )
                .label("declared again here")
                .secondary(first, "first declared here"),
            );
            return;
        }
        let mut entry = TableEntry {
            def: ir::TableDef {
                name: t.name.name.clone(),
                path: t.path.0.clone(),
                key: t.key.name.clone(),
                groups: t.groups.iter().map(|g| g.name.clone()).collect(),
                columns: Vec::new(),
                rows: HashMap::new(),
                cells: Vec::new(),
            },
            failed: true,
            name_span: t.name.span,
            text_example: Vec::new(),
        };
        match self.loader.load(&t.path.0) {
            Err(msg) => self.err(
                Diagnostic::error(
                    "E208",
                    format!("cannot load table `{}` from \"{}\"", t.name.name, t.path.0),
                    t.path.1,
                )
                .label(msg)
                .note("table paths are relative to the rule file"),
            ),
            Ok(data) => {
                self.hash_table(t, &data);
                entry.failed = !self.fill_table(t, data, &mut entry);
            }
        }
        self.tables.push(entry);
    }

    fn hash_table(&mut self, t: &ast::TableDecl, data: &TableData) {
        let h = &mut self.hasher;
        h.update(b"\x00table\x00");
        h.update(t.name.name.as_bytes());
        h.update(b"\x00");
        h.update(t.path.0.as_bytes());
        for c in &data.columns {
            h.update(b"\x1f");
            h.update(c.as_bytes());
        }
        for row in &data.rows {
            h.update(b"\x1e");
            for c in row {
                h.update(b"\x1f");
                h.update(c.as_bytes());
            }
        }
    }

    /// Type the cells; false when the table is unusable.
    fn fill_table(&mut self, t: &ast::TableDecl, data: TableData, entry: &mut TableEntry) -> bool {
        let columns: Vec<String> = data.columns.iter().map(|c| c.trim().to_string()).collect();
        let col_list = columns.join(", ");
        let Some(key_idx) = columns.iter().position(|c| *c == t.key.name) else {
            let s = did_you_mean(&t.key.name, columns.iter().map(String::as_str));
            self.err(
                Diagnostic::error(
                    "E208",
                    format!(
                        "key column `{}` is missing from table `{}`",
                        t.key.name, t.name.name
                    ),
                    t.key.span,
                )
                .label("no such column")
                .note(format!("\"{}\" has columns: {col_list}", t.path.0))
                .maybe_help(s.map(|s| format!("did you mean `{s}`?"))),
            );
            return false;
        };
        let mut ok = true;
        for g in &t.groups {
            if !columns.contains(&g.name) {
                let s = did_you_mean(&g.name, columns.iter().map(String::as_str));
                self.err(
                    Diagnostic::error(
                        "E204",
                        format!("unknown column `{}` in table `{}`", g.name, t.name.name),
                        g.span,
                    )
                    .label("no such column")
                    .note(format!("\"{}\" has columns: {col_list}", t.path.0))
                    .maybe_help(s.map(|s| format!("did you mean `{s}`?"))),
                );
                ok = false;
            }
        }
        let ncol = columns.len();
        let mut raw: Vec<Vec<String>> = Vec::new();
        let mut rows = HashMap::new();
        for (ri, row) in data.rows.iter().enumerate() {
            if row.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            if row.len() > ncol {
                self.err(
                    Diagnostic::error(
                        "E208",
                        format!(
                            "row {} of table `{}` has {} cells, but the header has {}",
                            ri + 1,
                            t.name.name,
                            row.len(),
                            ncol
                        ),
                        t.path.1,
                    )
                    .label("in this file"),
                );
                return false;
            }
            let key = row.get(key_idx).map_or("", |s| s.trim()).to_string();
            if key.is_empty() {
                continue;
            }
            if rows.insert(key.clone(), raw.len()).is_some() {
                self.err(
                    Diagnostic::error(
                        "E208",
                        format!("key `{key}` appears twice in table `{}`", t.name.name),
                        t.key.span,
                    )
                    .label("this key column has duplicate values")
                    .note(format!("\"{}\", row {}", t.path.0, ri + 1)),
                );
                ok = false;
            }
            raw.push(
                (0..ncol)
                    .map(|c| row.get(c).map_or("", |s| s.trim()).to_string())
                    .collect(),
            );
        }
        let mut keys: Vec<(&String, &usize)> = rows.iter().collect();
        keys.sort_by_key(|(_, r)| **r);
        let mut cells = Vec::with_capacity(ncol);
        let mut text_example = Vec::with_capacity(ncol);
        for c in 0..ncol {
            let mut example = None;
            for (k, r) in &keys {
                let v = &raw[**r][c];
                // a numeric column holds finite numbers only: `NaN`, `inf`, `1e400` are text
                if !v.is_empty() && !v.parse::<f64>().is_ok_and(f64::is_finite) {
                    example = Some(((*k).clone(), v.clone()));
                    break;
                }
            }
            let col: Vec<Option<ir::Cell>> = raw
                .iter()
                .map(|row| {
                    let v = &row[c];
                    if v.is_empty() {
                        None
                    } else if example.is_none() {
                        Some(ir::Cell::Num(v.parse().unwrap_or(0.0)))
                    } else {
                        Some(ir::Cell::Text(v.clone()))
                    }
                })
                .collect();
            cells.push(col);
            text_example.push(example);
        }
        entry.def.columns = columns;
        entry.def.rows = rows;
        entry.def.cells = cells;
        entry.text_example = text_example;
        ok
    }

    fn levelset(&mut self, l: &ast::LevelSetDecl) {
        if let Some((_, first)) = self.levelsets.get(&l.name.name) {
            let first = *first;
            self.err(
                Diagnostic::error(
                    "E207",
                    format!("level set `{}` is declared twice", l.name.name),
                    l.name.span,
                )
                .label("declared again here")
                .secondary(first, "first declared here"),
            );
            return;
        }
        self.check_level_list(&l.levels);
        self.levelset_names.push(l.name.name.clone());
        self.levelsets
            .insert(l.name.name.clone(), (l.levels.clone(), l.name.span));
    }

    fn check_level_list(&mut self, levels: &[Ident]) {
        for (i, lv) in levels.iter().enumerate() {
            if let Some(first) = levels[..i].iter().find(|x| x.name == lv.name) {
                let fs = first.span;
                self.err(
                    Diagnostic::error(
                        "E207",
                        format!("level `{}` appears twice in the order", lv.name),
                        lv.span,
                    )
                    .label("listed again here")
                    .secondary(fs, "first listed here"),
                );
            }
        }
    }

    // ---------------------------------------------------------------- rules

    fn rule(&mut self, r: &ast::RuleDecl) {
        if r.name.name.is_empty() {
            // the header failed to parse; still check the body for more errors
        } else if let Some(first) = self.rule_spans.get(&r.name.name) {
            let first = *first;
            self.err(
                Diagnostic::error(
                    "E207",
                    format!("rule `{}` is declared twice", r.name.name),
                    r.name.span,
                )
                .label("declared again here")
                .secondary(first, "first declared here"),
            );
        } else {
            self.rule_spans.insert(r.name.name.clone(), r.name.span);
        }
        let mut feeds = Vec::new();
        for f in &r.feeds {
            if let Some(id) = self.resolve_feed_name(f) {
                if !feeds.contains(&id) {
                    feeds.push(id);
                }
            }
        }
        let mut cx = RuleCx::default();
        let mut level_clauses: Vec<&Ident> = Vec::new();
        for c in &r.clauses {
            if let Clause::Level { name, .. } = c {
                if !level_clauses.iter().any(|l| l.name == name.name) {
                    level_clauses.push(name);
                }
            }
        }
        for c in &r.clauses {
            if let Clause::Let { name, .. } = c {
                cx.all_lets.push(name.name.clone());
            }
        }

        // level order: Some((names, inline?)) or None when unknown (already reported)
        let order: Option<(Vec<Ident>, bool)> = match &r.levels {
            Some(RuleLevels::Inline(v)) => {
                self.check_level_list(v);
                Some((v.clone(), true))
            }
            Some(RuleLevels::Named(n)) => {
                if let Some((set, _)) = self.levelsets.get(&n.name) {
                    Some((set.clone(), false))
                } else if level_clauses.iter().any(|c| c.name == n.name) {
                    Some((vec![n.clone()], true))
                } else {
                    let s = did_you_mean(&n.name, self.levelset_names.iter().map(String::as_str));
                    let mut d = Diagnostic::error(
                        "E206",
                        format!("unknown level set `{}`", n.name),
                        n.span,
                    )
                    .label("no level set or level of this rule has this name");
                    d = match s {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None if self.levelset_names.is_empty() => d.help(
                            "declare it (`levels cma: blue < yellow < orange < red`) or order \
                             the levels inline: `levels low < high`",
                        ),
                        None => d.note(format!(
                            "declared level sets: {}",
                            self.levelset_names.join(", ")
                        )),
                    };
                    self.err(d);
                    None
                }
            }
            None => match level_clauses.len() {
                0 => None,
                1 => Some((vec![level_clauses[0].clone()], true)),
                _ => {
                    let names: Vec<&str> = level_clauses.iter().map(|l| l.name.as_str()).collect();
                    self.err(
                        Diagnostic::error(
                            "E402",
                            format!(
                                "rule `{}` has {} levels but no order",
                                r.name.name,
                                names.len()
                            ),
                            r.name.span,
                        )
                        .label("which level is the most severe?")
                        .help(format!(
                            "order them in the header, lowest first: `levels {}`, or name a level set",
                            names.join(" < ")
                        )),
                    );
                    None
                }
            },
        };
        if level_clauses.is_empty() && !r.name.name.is_empty() && !self.syntax_errors {
            self.err(
                Diagnostic::error(
                    "E402",
                    format!("rule `{}` has no level clauses", r.name.name),
                    r.name.span,
                )
                .label("this rule can never raise a warning")
                .help("add a level clause, e.g. `warning when sum(rain, 1h) >= 30 mm`"),
            );
        }

        // lets first (each may use the earlier ones), then everything else
        let mut let_spans: HashMap<String, Span> = HashMap::new();
        let mut values: Vec<(String, Expr)> = Vec::new();
        let mut value_units: Vec<Unit> = Vec::new();
        for c in &r.clauses {
            let Clause::Let { name, expr } = c else {
                continue;
            };
            if let Some(first) = let_spans.get(&name.name) {
                let first = *first;
                self.err(
                    Diagnostic::error(
                        "E207",
                        format!("`{}` is defined twice in rule `{}`", name.name, r.name.name),
                        name.span,
                    )
                    .label("defined again here")
                    .secondary(first, "first defined here"),
                );
                continue;
            }
            let_spans.insert(name.name.clone(), name.span);
            let (e, ty) = self.expr(expr, &mut cx);
            let (e, ty) = match ty {
                Ty::Error => ERR,
                ty => self.bounded(Some(e), expr.span).map_or(ERR, |e| (e, ty)),
            };
            let v = match ty {
                Ty::Error => LetVal::Poisoned,
                ty => {
                    // a `cm` constant is resolved where the let is used; it is not a value
                    if let Ty::Num(n @ (Nu::Known(_) | Nu::Bare)) = ty {
                        values.push((name.name.clone(), e.clone()));
                        value_units.push(match n {
                            Nu::Known(u) => u,
                            _ => Unit::None,
                        });
                    }
                    let size = ir_size(&e).1;
                    LetVal::Ok(e, ty, size)
                }
            };
            cx.lets.insert(name.name.clone(), v);
        }

        let mut levels: HashMap<String, (LevelInfo, Span)> = HashMap::new();
        let mut rule_hold: Option<(Option<Millis>, Span)> = None;
        let mut clear_after: Option<(Option<Millis>, Span)> = None;
        let mut clear_when: Option<(Option<ir::ClearWhen>, Span)> = None;
        let mut message: Option<(Vec<ir::TemplatePart>, Span)> = None;
        let mut localized: Vec<(String, Vec<ir::TemplatePart>, Span)> = Vec::new();
        let mut events: Vec<(Option<String>, String, Span)> = Vec::new();
        let mut caps: Vec<(Ident, ir::CapDecl)> = Vec::new();
        let mut shadow = false;
        for c in &r.clauses {
            match c {
                Clause::Let { .. } => {}
                Clause::Shadow(_) => shadow = true,
                Clause::LocalMessage { lang, text } => {
                    self.check_lang(lang);
                    let parts = self.template(*text, &mut cx);
                    if let Some((_, _, first)) = localized.iter().find(|l| l.0 == lang.0) {
                        let first = *first;
                        self.duplicate_clause(&format!("message {}", lang.0), lang.1, first);
                    } else {
                        localized.push((lang.0.clone(), parts, lang.1));
                    }
                }
                Clause::Event { lang, text } => {
                    if let Some(l) = lang {
                        self.check_lang(l);
                    }
                    let l = lang.as_ref().map(|l| l.0.clone());
                    let at = lang.as_ref().map_or(*text, |l| l.1);
                    if let Some((_, _, first)) = events.iter().find(|e| e.0 == l) {
                        let first = *first;
                        self.duplicate_clause("event", at, first);
                    } else {
                        events.push((l, string_literal(self.text(*text)), at));
                    }
                }
                Clause::Cap {
                    level,
                    severity,
                    response,
                } => {
                    let sev = cap_word(&severity.name, CAP_SEVERITIES);
                    let resp = cap_word(&response.name, CAP_RESPONSES);
                    if sev.is_none() {
                        self.err(
                            Diagnostic::error(
                                "E309",
                                format!("`{}` is not a CAP severity", severity.name),
                                severity.span,
                            )
                            .label("not a CAP 1.2 severity")
                            .help(format!("one of {}", CAP_SEVERITIES.join(", "))),
                        );
                    }
                    if resp.is_none() {
                        self.err(
                            Diagnostic::error(
                                "E309",
                                format!("`{}` is not a CAP response type", response.name),
                                response.span,
                            )
                            .label("not a CAP 1.2 responseType")
                            .help(format!("one of {}", CAP_RESPONSES.join(", "))),
                        );
                    }
                    if let Some((first, _)) = caps.iter().find(|c| c.0.name == level.name) {
                        let first = first.span;
                        self.duplicate_clause(&format!("cap {}", level.name), level.span, first);
                    } else if let (Some(sev), Some(resp)) = (sev, resp) {
                        caps.push((
                            level.clone(),
                            ir::CapDecl {
                                severity: sev.to_string(),
                                response: resp.to_string(),
                            },
                        ));
                    }
                }
                Clause::Level {
                    name,
                    when,
                    hold,
                    exit,
                } => {
                    let w = self.cond(when, &mut cx, "a level's `when`");
                    let w = self.bounded(w, when.span);
                    let h = hold
                        .as_ref()
                        .and_then(|h| self.expect_duration(h, "a hold (`for`)", false));
                    let x = exit.as_ref().and_then(|x| {
                        let c = self.cond(x, &mut cx, "an `exit when`");
                        self.bounded(c, x.span)
                    });
                    if let Some((order, _)) = &order {
                        if !order.iter().any(|o| o.name == name.name) {
                            let s = did_you_mean(&name.name, order.iter().map(|o| o.name.as_str()));
                            let names: Vec<&str> = order.iter().map(|o| o.name.as_str()).collect();
                            self.err(
                                Diagnostic::error(
                                    "E206",
                                    format!(
                                        "unknown level `{}` in rule `{}`",
                                        name.name, r.name.name
                                    ),
                                    name.span,
                                )
                                .label("not one of this rule's levels")
                                .note(format!("the levels are {}", names.join(" < ")))
                                .maybe_help(s.map(|s| format!("did you mean `{s}`?"))),
                            );
                            continue;
                        }
                    }
                    if let Some((_, first)) = levels.get(&name.name) {
                        let first = *first;
                        self.err(
                            Diagnostic::error(
                                "E207",
                                format!("level `{}` has two `when` clauses", name.name),
                                name.span,
                            )
                            .label("second clause")
                            .secondary(first, "first clause")
                            .help("combine the conditions with `or`"),
                        );
                        continue;
                    }
                    let info = LevelInfo {
                        def: ir::LevelDef {
                            name: name.name.clone(),
                            when: w.unwrap_or(Expr::Bool(false)),
                            hold: h,
                            exit: x,
                        },
                        when_span: when.span,
                    };
                    levels.insert(name.name.clone(), (info, name.span));
                }
                Clause::For(d) => {
                    let v = self.expect_duration(d, "a hold (`for`)", false);
                    if let Some((_, first)) = rule_hold {
                        self.duplicate_clause("for", d.span, first);
                    } else {
                        rule_hold = Some((v, d.span));
                    }
                }
                Clause::ClearAfter(d) => {
                    let v = self.expect_duration(d, "`clear after`", false);
                    if let Some((_, first)) = clear_after {
                        self.duplicate_clause("clear after", d.span, first);
                    } else {
                        clear_after = Some((v, d.span));
                    }
                }
                Clause::ClearWhen { cond, hold } => {
                    let cw = self.cond(cond, &mut cx, "`clear when`");
                    let cw = self.bounded(cw, cond.span);
                    let h = hold
                        .as_ref()
                        .and_then(|h| self.expect_duration(h, "a hold (`for`)", false));
                    if let Some((_, first)) = clear_when {
                        self.duplicate_clause("clear when", cond.span, first);
                    } else {
                        clear_when =
                            Some((cw.map(|cond| ir::ClearWhen { cond, hold: h }), cond.span));
                    }
                }
                Clause::Message(span) => {
                    let parts = self.template(*span, &mut cx);
                    if let Some((_, first)) = message {
                        self.duplicate_clause("message", *span, first);
                    } else {
                        message = Some((parts, *span));
                    }
                }
            }
        }

        // levels in ascending order
        let mut ordered: Vec<LevelInfo> = Vec::new();
        if let Some((order, inline)) = &order {
            for o in order {
                match levels.remove(&o.name) {
                    Some((mut info, _)) => {
                        if info.def.hold.is_none() {
                            info.def.hold = rule_hold.and_then(|h| h.0);
                        }
                        ordered.push(info);
                    }
                    None if *inline && !self.syntax_errors => self.err(
                        Diagnostic::error(
                            "E403",
                            format!("level `{}` has no `when` clause", o.name),
                            o.span,
                        )
                        .label("declared here")
                        .help(format!(
                            "add `{} when <condition>` to the rule, or remove the level",
                            o.name
                        )),
                    ),
                    None => {}
                }
            }
        }
        self.unreachable(&ordered);
        let mut cap: Vec<Option<ir::CapDecl>> = vec![None; ordered.len()];
        for (level, decl) in caps {
            match ordered.iter().position(|l| l.def.name == level.name) {
                Some(i) => cap[i] = Some(decl),
                None if order.is_some() => {
                    let names: Vec<&str> = ordered.iter().map(|l| l.def.name.as_str()).collect();
                    self.err(
                        Diagnostic::error(
                            "E206",
                            format!("unknown level `{}` in rule `{}`", level.name, r.name.name),
                            level.span,
                        )
                        .label("not one of this rule's levels")
                        .note(format!("the levels are {}", names.join(" < "))),
                    );
                }
                None => {}
            }
        }

        // values: numeric lets, then the windows read (in first use order)
        for w in &cx.windows {
            let node = &self.windows[*w];
            if node.func != WindowFunc::Missing {
                values.push((node.label.clone(), Expr::Window(*w)));
                value_units.push(node.unit);
            }
        }
        for (label, x, unit) in &cx.aheads {
            values.push((label.clone(), x.clone()));
            value_units.push(*unit);
        }
        self.missing_rows(r, &cx);
        let message = match message {
            Some((m, _)) => m,
            None => default_message(&values, &value_units),
        };
        let mut windows = cx.windows.clone();
        windows.sort_unstable();
        self.rules.push(ir::RuleDef {
            name: r.name.name.clone(),
            feeds,
            levels: ordered.into_iter().map(|l| l.def).collect(),
            clear_after: clear_after.and_then(|c| c.0),
            clear_when: clear_when.and_then(|c| c.0),
            message,
            values,
            thresholds: cx.thresholds,
            required_tables: cx.required,
            windows,
            line: self.line_of(r.header.start),
            shadow,
            cap,
            localized: localized.into_iter().map(|(l, p, _)| (l, p)).collect(),
            events: events.into_iter().map(|(l, t, _)| (l, t)).collect(),
        });
    }

    fn duplicate_clause(&mut self, what: &str, span: Span, first: Span) {
        self.err(
            Diagnostic::error(
                "E207",
                format!("`{what}` is given twice in this rule"),
                span,
            )
            .label("given again here")
            .secondary(first, "first given here"),
        );
    }

    /// E401 and W503: a level whose condition implies a higher level's is never the candidate.
    fn unreachable(&mut self, levels: &[LevelInfo]) {
        for (i, lo) in levels.iter().enumerate() {
            for hi in &levels[i + 1..] {
                // a longer hold on the higher level leaves the lower one a moment to show
                if hi.def.hold.unwrap_or(0) > lo.def.hold.unwrap_or(0) {
                    continue;
                }
                if matches!(lo.def.when, Expr::Bool(false)) {
                    continue;
                }
                let facts = reach::Facts {
                    windows: &self.windows,
                    feeds: &self.feeds,
                };
                if reach::implies(&lo.def.when, &hi.def.when, &facts) {
                    let mut d = Diagnostic::error(
                        "E401",
                        format!("level `{}` is unreachable", lo.def.name),
                        lo.when_span,
                    )
                    .label(format!("whenever this holds, `{}` holds too", hi.def.name))
                    .secondary(hi.when_span, format!("`{}` is a higher level", hi.def.name))
                    .note(format!(
                        "the highest level whose condition holds wins, so `{}` is never raised",
                        lo.def.name
                    ));
                    let no_facts = reach::Facts {
                        windows: &[],
                        feeds: &[],
                    };
                    if !reach::implies(&lo.def.when, &hi.def.when, &no_facts) {
                        d = d.note(
                            "over a longer window, a `count`, or a `sum` of a feed whose `range` \
                             starts at 0 or above, is never less than over a shorter one",
                        );
                    }
                    self.err(
                        d.help("check the thresholds and the order of the levels (lowest first)"),
                    );
                    break;
                }
                if let Some(d) = self.unreachable_per_entity(lo, hi) {
                    self.diags.push(d);
                    break;
                }
            }
        }
    }

    fn unreachable_per_entity(&self, lo: &LevelInfo, hi: &LevelInfo) -> Option<Diagnostic> {
        let mut cols = Vec::new();
        reach::columns(&lo.def.when, &mut cols);
        reach::columns(&hi.def.when, &mut cols);
        let table = cols.first()?.0;
        if cols.iter().any(|(t, _)| *t != table) {
            return None;
        }
        let tdef = &self.tables.get(table)?.def;
        let mut keys: Vec<(&String, &usize)> = tdef.rows.iter().collect();
        keys.sort_by_key(|(_, r)| **r);
        let mut inverted = Vec::new();
        for (key, row) in keys {
            let value = |_t: TableId, c: usize, d: Option<f64>| match tdef
                .cells
                .get(c)
                .and_then(|col| col.get(*row))
            {
                Some(Some(ir::Cell::Num(v))) => Some(*v),
                _ => d,
            };
            let (Some(a), Some(b)) = (
                reach::substitute_columns(&lo.def.when, &value),
                reach::substitute_columns(&hi.def.when, &value),
            ) else {
                continue;
            };
            let facts = reach::Facts {
                windows: &self.windows,
                feeds: &self.feeds,
            };
            if reach::implies(&a, &b, &facts) {
                inverted.push(key.clone());
            }
        }
        if inverted.is_empty() {
            return None;
        }
        let n = inverted.len();
        let mut list = inverted
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if n > 10 {
            let _ = write!(list, " and {} more", n - 10);
        }
        Some(
            Diagnostic::warning(
                "W503",
                format!(
                    "level `{}` is unreachable for {n} {} of table `{}`",
                    lo.def.name,
                    if n == 1 { "entity" } else { "entities" },
                    tdef.name
                ),
                lo.when_span,
            )
            .label(format!(
                "for them, whenever this holds, `{}` holds too",
                hi.def.name
            ))
            .secondary(hi.when_span, format!("`{}` is a higher level", hi.def.name))
            .note(format!("inverted thresholds in \"{}\": {list}", tdef.path))
            .help("check the thresholds of these rows: a lower level needs lower thresholds"),
        )
    }

    /// W501: an entity of one table the rule reads has no row in another it needs.
    fn missing_rows(&mut self, r: &ast::RuleDecl, cx: &RuleCx) {
        let mut tables: Vec<TableId> = Vec::new();
        for (t, _, _) in &cx.table_refs {
            if !tables.contains(t) {
                tables.push(*t);
            }
        }
        for &need in &cx.required {
            if self.tables[need].failed {
                continue;
            }
            let span = cx
                .table_refs
                .iter()
                .find(|(t, _, d)| *t == need && !d)
                .map_or(r.name.span, |x| x.1);
            for &other in &tables {
                if other == need || self.tables[other].failed {
                    continue;
                }
                let a = &self.tables[other].def;
                let b = &self.tables[need].def;
                let mut missing: Vec<(&String, &usize)> = a
                    .rows
                    .iter()
                    .filter(|(k, _)| !b.rows.contains_key(*k))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                missing.sort_by_key(|(_, r)| **r);
                let n = missing.len();
                let mut list = missing
                    .iter()
                    .take(10)
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                if n > 10 {
                    let _ = write!(list, " and {} more", n - 10);
                }
                let d = Diagnostic::warning(
                    "W501",
                    format!(
                        "{n} {} of table `{}` {} no row in table `{}`, which rule `{}` needs",
                        if n == 1 { "entity" } else { "entities" },
                        a.name,
                        if n == 1 { "has" } else { "have" },
                        b.name,
                        r.name.name
                    ),
                    span,
                )
                .label(format!("`{}` is read here without a `??` default", b.name))
                .note(format!("missing from \"{}\": {list}", b.path))
                .note(format!(
                    "`{}` is not evaluated for an entity without a row in `{}`",
                    r.name.name, b.name
                ))
                .help(format!(
                    "add the rows to \"{}\", or give a default: `{} ?? <value>`",
                    b.path,
                    self.text(span)
                ));
                self.diags.push(d);
            }
        }
    }

    // ---------------------------------------------------------------- expressions

    fn ambiguous(&mut self, span: Span) {
        self.err(
            Diagnostic::error("E304", "`cm` is ambiguous here", span)
                .label("a depth (×10 mm) or a level (×0.01 m)?")
                .help("compare it with a depth or a level, or write `mm` or `m`"),
        );
    }

    /// E103: the uses of `let`s in a rule write out too many nodes.
    #[inline(never)]
    fn too_large(&mut self, span: Span) {
        self.err(
            Diagnostic::error(
                "E103",
                format!("rule too large once its `let`s are written out (limit {MAX_NODES} nodes)"),
                span,
            )
            .label("the limit is passed at this use")
            .note(
                "a `let` is written out wherever it is used: a `let` that uses another one \
                 twice is twice its size",
            )
            .help("simplify the `let`s, or use them in fewer places"),
        );
    }

    /// E102 for a checked expression (a `let`, a condition, a message value): the parser
    /// bounds the tree as written, but `let`s are written out where they are used, so their
    /// depths add up.
    fn bounded(&mut self, e: Option<Expr>, span: Span) -> Option<Expr> {
        let e = e?;
        let (depth, _) = ir_size(&e);
        if depth > MAX_DEPTH {
            self.err(
                Diagnostic::error(
                    "E102",
                    format!(
                        "expression nested too deeply once its `let`s are substituted (limit {MAX_DEPTH})"
                    ),
                    span,
                )
                .label(format!("{depth} levels deep with its `let`s written out"))
                .note("a `let` is written out wherever it is used, so the depths add up")
                .help(
                    "simplify the expression, or group long chains with parentheses: \
                     `(a or b or c) or (d or e or f)` nests each group separately",
                ),
            );
            return None;
        }
        Some(e)
    }

    // The functions on the recursive path (`expr`, `cond`, `num`, `unary`, `binary`,
    // `default`, `call`, `constant`) are kept small and leave diagnostics and leaves to
    // functions of their own: their unoptimized stack frames decide how deep a 2 MiB stack
    // goes, and an expression may be MAX_DEPTH deep.

    fn cond(&mut self, e: &ast::Expr, cx: &mut RuleCx, what: &str) -> Option<Expr> {
        let (ir, ty) = self.expr(e, cx);
        match ty {
            Ty::Cond => Some(ir),
            Ty::Error => None,
            Ty::Num(n) => {
                self.not_a_condition(e.span, n, what);
                None
            }
        }
    }

    #[inline(never)]
    fn not_a_condition(&mut self, span: Span, n: Nu, what: &str) {
        self.err(
            Diagnostic::error(
                "E303",
                format!("{what} needs a condition, found a number"),
                span,
            )
            .label(format!("this is {}, not a condition", nu_text(n)))
            .help("compare it with a threshold, e.g. `sum(rain, 1h) >= 30 mm`"),
        );
    }

    fn num(&mut self, e: &ast::Expr, cx: &mut RuleCx, what: &str) -> Option<(Expr, Nu)> {
        let (ir, ty) = self.expr(e, cx);
        match ty {
            Ty::Num(n) => Some((ir, n)),
            Ty::Error => None,
            Ty::Cond => {
                self.not_a_number(e.span, what);
                None
            }
        }
    }

    #[inline(never)]
    fn not_a_number(&mut self, span: Span, what: &str) {
        self.err(
            Diagnostic::error(
                "E303",
                format!("{what} needs a number, found a condition"),
                span,
            )
            .label("this is a condition (true or false), not a number"),
        );
    }

    fn expr(&mut self, e: &ast::Expr, cx: &mut RuleCx) -> Checked {
        match &e.kind {
            ExprKind::Paren(x) => self.expr(x, cx),
            ExprKind::Unary(op, x) => self.unary(*op, x, cx),
            ExprKind::Binary(op, op_span, l, r) => self.binary(*op, *op_span, l, r, cx),
            ExprKind::Call { func, args } => self.call(func, args, e.span, cx),
            _ => self.leaf(e, cx),
        }
    }

    fn unary(&mut self, op: UnOp, x: &ast::Expr, cx: &mut RuleCx) -> Checked {
        match op {
            UnOp::Neg => match self.num(x, cx, "`-`") {
                Some((Expr::Num(v), n)) => (Expr::Num(-v), Ty::Num(n)),
                Some((ir, n)) => (Expr::Neg(Box::new(ir)), Ty::Num(n)),
                None => ERR,
            },
            UnOp::Not => match self.cond(x, cx, "`not`") {
                Some(c) => (Expr::Not(Box::new(c)), Ty::Cond),
                None => ERR,
            },
        }
    }

    /// An expression without subexpressions (a call's arguments are checked by `call`).
    #[inline(never)]
    fn leaf(&mut self, e: &ast::Expr, cx: &mut RuleCx) -> Checked {
        match &e.kind {
            ExprKind::Error => ERR,
            ExprKind::Bool(b) => (Expr::Bool(*b), Ty::Cond),
            ExprKind::Num { value, unit: None } => (Expr::Num(*value), Ty::Num(Nu::Bare)),
            ExprKind::Num {
                value,
                unit: Some((u, us)),
            } => {
                if units::is_spaced_duration_word(u) {
                    self.spaced_duration(e.span, *value, u);
                    return ERR;
                }
                match units::lookup(u) {
                    Some(UnitKind::Fixed(unit, s)) => {
                        (Expr::Num(value * s), Ty::Num(Nu::Known(unit)))
                    }
                    Some(k) => (Expr::Num(*value), Ty::Num(Nu::Amb(k))),
                    None => {
                        self.err(
                            Diagnostic::error("E212", format!("unknown unit `{u}`"), *us)
                                .label("not a unit forewarn knows")
                                .help("units are mm, cm, in, m, ft, mm/h, in/h, m/h, ft/h"),
                        );
                        ERR
                    }
                }
            }
            ExprKind::Duration(ms) => {
                let text = self.text(e.span).to_string();
                let mut d = Diagnostic::error(
                    "E302",
                    format!("expected a number, found the duration `{text}`"),
                    e.span,
                )
                .label(format!("this is a duration ({})", fmt_duration(*ms)));
                if let Some(n) = text.strip_suffix('m') {
                    if n.chars().all(|c| c.is_ascii_digit()) {
                        d = d.help(format!(
                            "`{text}` is {n} minutes; for {n} metres write `{n} m`"
                        ));
                    }
                } else {
                    d = d.help("durations are only valid as window widths, holds, horizons (`next 3h`) and in comparisons with `time_to(...)`");
                }
                self.err(d);
                ERR
            }
            ExprKind::Time { .. } => {
                self.err(
                    Diagnostic::error("E302", "a time of day is only valid in `since`", e.span)
                        .label("unexpected time of day")
                        .help("write `since(rain, 08:00 Asia/Shanghai)`"),
                );
                ERR
            }
            ExprKind::Next(_) => {
                self.err(
                    Diagnostic::error("E302", "a horizon (`next …`) is only valid in `forecast`, `forecast_max` and `project`", e.span)
                        .label("unexpected horizon")
                        .help("write e.g. `forecast(qpf, next 3h)` or `project(rain, 1h, next 2h)`"),
                );
                ERR
            }
            ExprKind::Name(n) => self.name(n, e.span, cx),
            ExprKind::Column { table, column } => {
                match self.column(table, column, true, cx, None) {
                    Some((t, c)) => {
                        cx.use_table(t, e.span, false);
                        let ir = Expr::Column {
                            table: t,
                            column: c,
                            default: None,
                        };
                        let label = format!("{}.{}", table.name, column.name);
                        if !cx.thresholds.iter().any(|(l, _)| *l == label) {
                            cx.thresholds.push((label, ir.clone()));
                        }
                        (ir, Ty::Num(Nu::Bare))
                    }
                    None => ERR,
                }
            }
            ExprKind::Paren(_)
            | ExprKind::Unary(..)
            | ExprKind::Binary(..)
            | ExprKind::Call { .. } => self.expr(e, cx),
        }
    }

    fn spaced_duration(&mut self, span: Span, value: f64, u: &str) {
        let u2 = if u == "min" { "m" } else { u };
        self.err(
            Diagnostic::error(
                "E003",
                format!("malformed duration `{}`", self.text(span)),
                span,
            )
            .label("a duration has no space before its unit")
            .help(format!("write `{value}{u2}`")),
        );
    }

    fn name(&mut self, n: &str, span: Span, cx: &mut RuleCx) -> Checked {
        match cx.lets.get(n) {
            Some(LetVal::Ok(e, ty, size)) => {
                // every use writes the let out: bound the total (E103), before it is built
                cx.substituted += size;
                if cx.substituted <= MAX_NODES {
                    return (e.clone(), *ty);
                }
                if !cx.too_large {
                    cx.too_large = true;
                    self.too_large(span);
                }
                return ERR;
            }
            Some(LetVal::Poisoned) => return ERR,
            None => {}
        }
        let mut d = Diagnostic::error("E205", format!("unknown name `{n}`"), span)
            .label("not defined in this rule");
        if self.feeds.iter().any(|f| f.name == n) {
            d = d.label("a feed, not a value").help(format!(
                "aggregate the feed, e.g. `last({n})` or `sum({n}, 1h)`"
            ));
            // the feed is used, even if wrongly
            if let Some(i) = self.feeds.iter().position(|f| f.name == n) {
                self.feed_used[i] = true;
            }
        } else if self.tables.iter().any(|t| t.def.name == n) {
            d = d
                .label("a table, not a value")
                .help(format!("read a column: `{n}.<column>`"));
        } else if cx.all_lets.iter().any(|l| l == n) {
            d = d
                .label("defined later in the rule")
                .help(format!("move `let {n} = …` above its first use"));
        } else if let Some(s) = did_you_mean(n, cx.lets.keys().map(String::as_str)) {
            d = d.help(format!("did you mean `{s}`?"));
        } else if let Some(s) = did_you_mean(n, ["true", "false"]) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        self.err(d);
        ERR
    }

    /// Resolve `table.column`; `numeric` demands a numeric column.
    fn column(
        &mut self,
        table: &Ident,
        column: &Ident,
        numeric: bool,
        _cx: &mut RuleCx,
        group_fn: Option<&str>,
    ) -> Option<(TableId, usize)> {
        let Some(t) = self.tables.iter().position(|x| x.def.name == table.name) else {
            let mut d = Diagnostic::error(
                "E203",
                format!("unknown table `{}`", table.name),
                table.span,
            )
            .label("no table has this name");
            if self.feeds.iter().any(|f| f.name == table.name) {
                d = d.help(format!(
                    "`{}` is a feed; feeds are read with window functions like `last({})`",
                    table.name, table.name
                ));
            } else if let Some(s) =
                did_you_mean(&table.name, self.tables.iter().map(|x| x.def.name.as_str()))
            {
                d = d.help(format!("did you mean `{s}`?"));
            } else {
                d = d.help(format!(
                    "declare it: `table {}: \"{}.csv\", key <column>`",
                    table.name, table.name
                ));
            }
            self.err(d);
            return None;
        };
        if self.tables[t].failed {
            return None;
        }
        let def = &self.tables[t].def;
        let Some(c) = def.column(&column.name) else {
            let s = did_you_mean(&column.name, def.columns.iter().map(String::as_str));
            let d = Diagnostic::error(
                "E204",
                format!("unknown column `{}` in table `{}`", column.name, table.name),
                column.span,
            )
            .label("no such column")
            .note(format!(
                "\"{}\" has columns: {}",
                def.path,
                def.columns.join(", ")
            ))
            .maybe_help(s.map(|s| format!("did you mean `{s}`?")));
            self.err(d);
            return None;
        };
        if let Some(f) = group_fn {
            if !def.groups.contains(&column.name) {
                let d = Diagnostic::error(
                    "E210",
                    format!(
                        "column `{}.{}` is not a group column",
                        table.name, column.name
                    ),
                    column.span,
                )
                .label(format!("`{f}` needs a column declared with `group`"))
                .help(format!(
                    "declare it: `table {}: \"{}\", key {}, group {}`",
                    table.name, def.path, def.key, column.name
                ));
                self.err(d);
                return None;
            }
        } else if numeric {
            if let Some((entity, text)) = self.tables[t].text_example[c].clone() {
                self.err(
                    Diagnostic::error(
                        "E209",
                        format!("column `{}.{}` is not numeric", table.name, column.name),
                        table.span.to(column.span),
                    )
                    .label("used as a number here")
                    .note(if text.parse::<f64>().is_ok() {
                        format!(
                            "the row of `{entity}` has `{text}` in this column, which is not a finite number"
                        )
                    } else {
                        format!("the row of `{entity}` has `{text}` in this column")
                    })
                    .help("only columns whose every non-empty cell is a finite number can be compared; leave a cell empty for \"no value\""),
                );
                return None;
            }
        }
        Some((t, c))
    }

    fn binary(
        &mut self,
        op: ABin,
        op_span: Span,
        l: &ast::Expr,
        r: &ast::Expr,
        cx: &mut RuleCx,
    ) -> Checked {
        let what = quoted_op(op);
        match op {
            ABin::And | ABin::Or => {
                let a = self.cond(l, cx, what);
                let b = self.cond(r, cx, what);
                let iop = if op == ABin::And {
                    ir::BinOp::And
                } else {
                    ir::BinOp::Or
                };
                match (a, b) {
                    (Some(a), Some(b)) => (Expr::Binary(iop, Box::new(a), Box::new(b)), Ty::Cond),
                    _ => ERR,
                }
            }
            ABin::Default => self.default(l, r, op_span, cx),
            _ => {
                // `time_to(...) <= 2h`: a duration compared with a time is a number of hours
                let is_time_to = |e: &ast::Expr| matches!(&strip_parens(e).kind, ExprKind::Call { func, .. } if func.name == "time_to");
                let hours = |e: &ast::Expr| match strip_parens(e).kind {
                    ExprKind::Duration(ms) => Some((
                        Expr::Num(ms as f64 / ir::HOUR as f64),
                        Nu::Known(Unit::Other("h")),
                    )),
                    _ => None,
                };
                let bare = |e: &ast::Expr| {
                    matches!(strip_parens(e).kind, ExprKind::Num { unit: None, .. })
                };
                if (is_time_to(l) && bare(r)) || (is_time_to(r) && bare(l)) {
                    let n = if bare(r) { r } else { l };
                    self.err(
                        Diagnostic::error(
                            "E302",
                            format!(
                                "`time_to` is compared with a duration, found `{}`",
                                self.text(n.span)
                            ),
                            n.span,
                        )
                        .label("a number without a time unit")
                        .help(format!(
                            "write a duration: `{}h` (hours) or `{}m` (minutes)",
                            self.text(n.span),
                            self.text(n.span)
                        )),
                    );
                    return ERR;
                }
                let (a, b) = if is_time_to(l) && hours(r).is_some() {
                    (self.num(l, cx, what), hours(r))
                } else if is_time_to(r) && hours(l).is_some() {
                    (hours(l), self.num(r, cx, what))
                } else {
                    (self.num(l, cx, what), self.num(r, cx, what))
                };
                match (a, b) {
                    (Some(a), Some(b)) => self.arith(op, op_span, (a, l.span), (b, r.span)),
                    _ => ERR,
                }
            }
        }
    }

    /// A comparison or arithmetic over checked operands.
    #[inline(never)]
    fn arith(
        &mut self,
        op: ABin,
        op_span: Span,
        ((a, na), l_span): ((Expr, Nu), Span),
        ((b, nb), r_span): ((Expr, Nu), Span),
    ) -> Checked {
        let iop = match op {
            ABin::Lt => ir::BinOp::Lt,
            ABin::Le => ir::BinOp::Le,
            ABin::Gt => ir::BinOp::Gt,
            ABin::Ge => ir::BinOp::Ge,
            ABin::Eq => ir::BinOp::Eq,
            ABin::Ne => ir::BinOp::Ne,
            ABin::Add => ir::BinOp::Add,
            ABin::Sub => ir::BinOp::Sub,
            ABin::Mul => ir::BinOp::Mul,
            _ => ir::BinOp::Div,
        };
        if op.is_comparison() || matches!(op, ABin::Add | ABin::Sub) {
            let Some((a, b, n)) = self.unify(op, (a, na, l_span), (b, nb, r_span)) else {
                return ERR;
            };
            if let Nu::Amb(_) = n {
                if op.is_comparison() || !(is_const(&a) && is_const(&b)) {
                    self.ambiguous(l_span.to(r_span));
                    return ERR;
                }
            }
            if op.is_comparison() {
                (Expr::Binary(iop, Box::new(a), Box::new(b)), Ty::Cond)
            } else {
                (fold(iop, a, b), Ty::Num(n))
            }
        } else {
            let n = match (op, na, nb) {
                (_, Nu::Amb(_), Nu::Amb(_)) => None,
                (ABin::Div, Nu::Bare | Nu::Known(_), Nu::Amb(_)) => None,
                (_, x, Nu::Bare | Nu::Known(Unit::None)) => Some(x),
                (ABin::Mul, Nu::Bare | Nu::Known(Unit::None), x) => Some(x),
                (ABin::Div, Nu::Known(x), Nu::Known(y)) if x == y => Some(Nu::Known(Unit::None)),
                _ => None,
            };
            match n {
                Some(n) => (fold(iop, a, b), Ty::Num(n)),
                None => {
                    let verb = if op == ABin::Mul {
                        "multiply"
                    } else {
                        "divide"
                    };
                    let prep = "by";
                    self.err(
                        Diagnostic::error(
                            "E304",
                            format!("cannot {verb} {} {prep} {}", nu_text(na), nu_text(nb)),
                            op_span,
                        )
                        .label("the result would have no unit forewarn knows")
                        .secondary(l_span, nu_text(na))
                        .secondary(r_span, nu_text(nb))
                        .help("scale by plain numbers only, e.g. `0.5 * ear`"),
                    );
                    ERR
                }
            }
        }
    }

    /// Bring both sides to one unit (bare numbers adopt, `cm` resolves); E304 otherwise.
    fn unify(
        &mut self,
        op: ABin,
        (a, na, sa): (Expr, Nu, Span),
        (b, nb, sb): (Expr, Nu, Span),
    ) -> Option<(Expr, Expr, Nu)> {
        let ok = match (na, nb) {
            (Nu::Known(x), Nu::Known(y)) if x == y => Some((a, b, na)),
            (Nu::Known(_), Nu::Bare) => Some((a, b, na)),
            (Nu::Bare, Nu::Known(_)) => Some((a, b, nb)),
            (Nu::Bare, Nu::Bare) => Some((a, b, na)),
            (Nu::Known(x), Nu::Amb(k)) => {
                units::resolve_against(k, x).map(|s| (a, scale(b.clone(), s), na))
            }
            (Nu::Amb(k), Nu::Known(x)) => {
                units::resolve_against(k, x).map(|s| (scale(a.clone(), s), b, nb))
            }
            (Nu::Amb(_), Nu::Bare) => Some((a, b, na)),
            (Nu::Bare, Nu::Amb(_)) => Some((a, b, nb)),
            (Nu::Amb(x), Nu::Amb(y)) if x == y => Some((a, b, na)),
            _ => None,
        };
        if ok.is_none() {
            let verb = if op.is_comparison() {
                "compare"
            } else if op == ABin::Add {
                "add"
            } else {
                "subtract"
            };
            let (prep, x, y) = match op {
                ABin::Add => ("to", nb, na),
                ABin::Sub => ("from", nb, na),
                _ => ("with", na, nb),
            };
            let mut d = Diagnostic::error(
                "E304",
                format!("cannot {verb} {} {prep} {}", nu_text(x), nu_text(y)),
                sb,
            )
            .label(format!("this is {}", nu_text(nb)))
            .secondary(sa, format!("this is {}", nu_text(na)));
            let depth_level = matches!(
                (na, nb),
                (Nu::Known(Unit::Mm), Nu::Known(Unit::M))
                    | (Nu::Known(Unit::M), Nu::Known(Unit::Mm))
            );
            d = if depth_level {
                d.help("a rain depth and a water level are different quantities; check the feed and the threshold's unit")
            } else {
                d.help("both sides must be in the same unit; a plain number takes the unit of the other side")
            };
            self.err(d);
        }
        ok
    }

    fn default(&mut self, l: &ast::Expr, r: &ast::Expr, op_span: Span, cx: &mut RuleCx) -> Checked {
        let ExprKind::Column { table, column } = &l.kind else {
            // still check the left side for its own errors
            let (_, ty) = self.expr(l, cx);
            if ty != Ty::Error {
                self.default_not_column(l.span, op_span);
            }
            return ERR;
        };
        let rv = self.num(r, cx, "a `??` default");
        self.default_of(table, column, rv, (l.span, r.span), cx)
    }

    #[inline(never)]
    fn default_not_column(&mut self, span: Span, op_span: Span) {
        self.err(
            Diagnostic::error(
                "E302",
                "`??` gives a default for a table value; its left side must be `table.column`",
                span,
            )
            .label("not a table column")
            .secondary(op_span, "default given here"),
        );
    }

    /// `table.column ?? default` once the default is checked.
    #[inline(never)]
    fn default_of(
        &mut self,
        table: &Ident,
        column: &Ident,
        rv: Option<(Expr, Nu)>,
        (l_span, r_span): (Span, Span),
        cx: &mut RuleCx,
    ) -> Checked {
        let (rv, rn) = match rv {
            Some(x) => x,
            None => {
                let _ = self.column(table, column, true, cx, None);
                return ERR;
            }
        };
        let Expr::Num(v) = rv else {
            self.err(
                Diagnostic::error("E302", "a `??` default must be a constant", r_span)
                    .label("not a constant")
                    .help("write a number with its unit, e.g. `gauge.prep_24h ?? 100 mm`"),
            );
            return ERR;
        };
        if let Nu::Amb(_) = rn {
            self.ambiguous(r_span);
            return ERR;
        }
        let Some((t, c)) = self.column(table, column, true, cx, None) else {
            return ERR;
        };
        let span = l_span.to(r_span);
        cx.use_table(t, span, true);
        let ir = Expr::Column {
            table: t,
            column: c,
            default: Some(v),
        };
        let label = format!("{}.{}", table.name, column.name);
        if !cx.thresholds.iter().any(|(x, _)| *x == label) {
            cx.thresholds.push((label, ir.clone()));
        }
        (ir, Ty::Num(rn))
    }

    fn resolve_feed_name(&mut self, f: &Ident) -> Option<FeedId> {
        if let Some(i) = self.feeds.iter().position(|x| x.name == f.name) {
            self.feed_used[i] = true;
            return Some(i);
        }
        let s = did_you_mean(&f.name, self.feeds.iter().map(|x| x.name.as_str()));
        let d = Diagnostic::error("E201", format!("unknown feed `{}`", f.name), f.span)
            .label("no feed has this name");
        let d = match s {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None if self.feeds.is_empty() => d.help(format!(
                "declare it: `feed {}: depth mm, interval 5m`",
                f.name
            )),
            None => d.note(format!(
                "declared feeds: {}",
                self.feeds
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        self.err(d);
        None
    }

    /// The feed argument of a window function.
    fn feed_arg(&mut self, e: &ast::Expr, func: &str, cx: &RuleCx) -> Option<FeedId> {
        let e = strip_parens(e);
        let kind = match &e.kind {
            ExprKind::Name(n) => {
                if cx.lets.contains_key(n) {
                    self.err(
                        Diagnostic::error(
                            "E302",
                            format!("`{func}` needs a feed, but `{n}` is a `let` binding"),
                            e.span,
                        )
                        .label("not a feed")
                        .help("window functions aggregate a feed directly, e.g. `sum(rain, 3h)`"),
                    );
                    return None;
                }
                let id = Ident {
                    name: n.clone(),
                    span: e.span,
                };
                return self.resolve_feed_name(&id);
            }
            ExprKind::Error => return None,
            ExprKind::Duration(_) => "a duration",
            ExprKind::Num { .. } => "a number",
            ExprKind::Column { .. } => "a table column",
            ExprKind::Call { .. } => "a function call",
            ExprKind::Time { .. } => "a time of day",
            _ => "an expression",
        };
        self.err(
            Diagnostic::error(
                "E302",
                format!("`{func}` needs a feed as its first argument, found {kind}"),
                e.span,
            )
            .label("expected a feed name")
            .help(format!("write e.g. `{func}(rain, 3h)`")),
        );
        None
    }

    /// A duration argument or clause value; `None` if wrong (reported).
    fn expect_duration(&mut self, e: &ast::Expr, what: &str, allow_zero: bool) -> Option<Millis> {
        let e = strip_parens(e);
        match &e.kind {
            ExprKind::Error => None,
            ExprKind::Duration(0) if !allow_zero => {
                self.err(
                    Diagnostic::error("E306", format!("{what} cannot be zero"), e.span)
                        .label("zero duration")
                        .help("use a positive duration such as `10m`"),
                );
                None
            }
            ExprKind::Duration(ms) => Some(*ms),
            ExprKind::Unary(UnOp::Neg, x) if matches!(x.kind, ExprKind::Duration(_)) => {
                self.err(
                    Diagnostic::error("E306", format!("{what} cannot be negative"), e.span)
                        .label("negative duration")
                        .help("durations are always positive; remove the `-`"),
                );
                None
            }
            ExprKind::Num {
                value,
                unit: Some((u, _)),
            } if units::is_spaced_duration_word(u) => {
                self.spaced_duration(e.span, *value, u);
                None
            }
            ExprKind::Num { value, unit } => {
                let text = self.text(e.span).to_string();
                let (label, help) = match unit.as_ref().map(|u| u.0.as_str()) {
                    Some("m") => (
                        format!("`{text}` is {value} metres"),
                        format!("for {value} minutes write `{value}m` (no space)"),
                    ),
                    Some(u) => (
                        format!("this is a quantity in {u}"),
                        "write a duration such as `30m`, `3h` or `1h30m`".to_string(),
                    ),
                    None => (
                        "a number without a time unit".to_string(),
                        format!("add a unit without a space: `{value}m` (minutes), `{value}h` (hours), `{value}d` (days)"),
                    ),
                };
                self.err(
                    Diagnostic::error(
                        "E302",
                        format!("{what} needs a duration, found `{text}`"),
                        e.span,
                    )
                    .label(label)
                    .help(help),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error("E302", format!("{what} needs a duration"), e.span)
                        .label("expected a duration such as `3h`"),
                );
                None
            }
        }
    }

    fn call(&mut self, func: &Ident, args: &[ast::Expr], span: Span, cx: &mut RuleCx) -> Checked {
        // the arguments that are expressions are checked from this small frame
        let f = func.name.as_str();
        if GROUP_FUNCS.contains(&f) {
            let first = (args.len() == 2).then(|| self.expr(&args[0], cx));
            return self.group_call(func, args, span, cx, first);
        }
        if AHEAD_FUNCS.contains(&f) {
            return self.ahead_call(func, args, span, cx);
        }
        let k = (f == "decay_sum" && args.len() == 3)
            .then(|| self.constant(&args[2], "the decay factor of `decay_sum`", cx));
        self.window_call(func, args, span, cx, k.flatten())
    }

    /// `forecast(f, next h)`, `forecast_max(f, next h)`, `project(f, w, next h)`.
    #[inline(never)]
    fn ahead_call(
        &mut self,
        func: &Ident,
        args: &[ast::Expr],
        span: Span,
        cx: &mut RuleCx,
    ) -> Checked {
        let f = func.name.as_str();
        if f == "time_to" {
            return self.time_to_call(args, span, cx);
        }
        let (want, example) = match f {
            "project" => (3, "project(rain, 1h, next 2h)"),
            _ => (2, "forecast(qpf, next 3h)"),
        };
        if args.len() != want {
            self.err(
                Diagnostic::error(
                    "E301",
                    format!("`{f}` takes {want} arguments, found {}", args.len()),
                    span,
                )
                .label("wrong number of arguments")
                .help(format!(
                    "write e.g. `{}`",
                    example.replace("forecast(", &format!("{f}("))
                )),
            );
            return ERR;
        }
        let feed = self.feed_arg(&args[0], f, cx);
        let horizon = self.horizon(&args[want - 1], f);
        let width = (want == 3)
            .then(|| self.expect_duration(&args[1], &format!("the window width of `{f}`"), false))
            .flatten();
        let (Some(feed), Some(horizon)) = (feed, horizon) else {
            return ERR;
        };
        if self.feed_bad[feed] || (want == 3 && width.is_none()) {
            return ERR;
        }
        let fd = self.feeds[feed].clone();
        let not_for = |this: &mut Self, msg: String, help: String| {
            this.err(
                Diagnostic::error("E305", msg, args[0].span)
                    .label(format!(
                        "`{}` is a {} feed",
                        fd.name,
                        if fd.forecast { "forecast" } else { "reading" }
                    ))
                    .help(help),
            );
            ERR
        };
        let (kind, unit) = match f {
            "forecast" | "forecast_max" if !fd.forecast => {
                return not_for(
                    self,
                    format!("`{f}` reads a forecast feed, but `{}` carries readings", fd.name),
                    format!(
                        "declare a forecast feed (`feed qpf: forecast depth mm`), or extrapolate the readings with `project({}, 1h, next 2h)`",
                        fd.name
                    ),
                );
            }
            "forecast" if fd.quantity != Quantity::Depth => {
                return not_for(
                    self,
                    format!(
                        "`forecast` sums a forecast depth, but `{}` is a level",
                        fd.name
                    ),
                    format!(
                        "use `forecast_max({}, next 6h)` for the highest forecast level",
                        fd.name
                    ),
                );
            }
            "forecast" => (ir::AheadKind::ForecastSum { feed }, fd.unit),
            "forecast_max" => {
                let unit = if fd.quantity == Quantity::Depth {
                    Unit::MmPerHour
                } else {
                    fd.unit
                };
                (ir::AheadKind::ForecastMax { feed }, unit)
            }
            _ if fd.forecast => {
                return not_for(
                    self,
                    format!(
                        "`project` extrapolates readings, but `{}` is a forecast feed",
                        fd.name
                    ),
                    format!("read the forecast with `forecast({}, next 3h)`", fd.name),
                );
            }
            _ => {
                let w = width.unwrap_or(1);
                match fd.quantity {
                    Quantity::Depth | Quantity::Count => {
                        let window = self.intern(ir::WindowNode {
                            feed,
                            func: WindowFunc::Sum,
                            width: Some(w),
                            unit: fd.unit,
                            label: window_label(&WindowFunc::Sum, &fd.name, Some(w)),
                        });
                        cx.use_window(window);
                        (ir::AheadKind::ProjectDepth { window, width: w }, fd.unit)
                    }
                    Quantity::Level if fd.unit == Unit::M => {
                        let (last, rate) = self.level_and_rate(feed, &fd, w, cx);
                        (ir::AheadKind::ProjectLevel { last, rate }, fd.unit)
                    }
                    _ => {
                        return not_for(
                            self,
                            format!(
                                "`project` extrapolates a depth (at its current intensity) or a level in metres (at its rate of rise), not a {}",
                                quantity_name(fd.quantity)
                            ),
                            "project a depth feed (`project(rain, 1h, next 2h)`) or a stage in m".to_string(),
                        );
                    }
                }
            }
        };
        let label = match &kind {
            ir::AheadKind::ProjectDepth { width, .. } => format!(
                "project({}, {}, next {})",
                fd.name,
                fmt_duration(*width),
                fmt_duration(horizon)
            ),
            ir::AheadKind::ProjectLevel { .. } => format!(
                "project({}, {}, next {})",
                fd.name,
                fmt_duration(width.unwrap_or(0)),
                fmt_duration(horizon)
            ),
            _ => format!("{f}({}, next {})", fd.name, fmt_duration(horizon)),
        };
        let ir = Expr::Ahead(ir::Ahead { kind, horizon });
        if !cx.aheads.iter().any(|(l, _, _)| *l == label) {
            cx.aheads.push((label, ir.clone(), unit));
        }
        (ir, Ty::Num(Nu::Known(unit)))
    }

    /// A language tag as CAP's `language` takes it (RFC 3066: `en`, `zh-CN`): a primary
    /// subtag of 1 to 8 letters, then subtags of 1 to 8 letters or digits.
    fn check_lang(&mut self, lang: &(String, Span)) {
        let mut parts = lang.0.split('-');
        let first_ok = parts.next().is_some_and(|p| {
            (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic())
        });
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !(first_ok && rest_ok) {
            self.err(
                Diagnostic::error(
                    "E309",
                    format!("`{}` is not a language tag", lang.0),
                    lang.1,
                )
                .label("not an RFC 3066 language tag")
                .help("write a tag such as `en`, `zh-CN` or `zh-Hans-CN` (subtags joined by `-`)"),
            );
        }
    }

    /// `time_to(f, w, target)`: hours until a level feed reaches `target` at its rate of rise
    /// over `w` (0 when it already has; infinite when it is not rising).
    /// The windows a level projection reads, used by the rule: the newest level of `feed`
    /// (`last`) and its rate of rise over `width` (`rate`, in m/h).
    fn level_and_rate(
        &mut self,
        feed: FeedId,
        fd: &ir::FeedDef,
        width: Millis,
        cx: &mut RuleCx,
    ) -> (WindowId, WindowId) {
        let last = self.intern(ir::WindowNode {
            feed,
            func: WindowFunc::Last,
            width: None,
            unit: fd.unit,
            label: window_label(&WindowFunc::Last, &fd.name, None),
        });
        let rate = self.intern(ir::WindowNode {
            feed,
            func: WindowFunc::Rate,
            width: Some(width),
            unit: Unit::MPerHour,
            label: window_label(&WindowFunc::Rate, &fd.name, Some(width)),
        });
        cx.use_window(last);
        cx.use_window(rate);
        (last, rate)
    }

    fn time_to_call(&mut self, args: &[ast::Expr], span: Span, cx: &mut RuleCx) -> Checked {
        if args.len() != 3 {
            self.err(
                Diagnostic::error(
                    "E301",
                    format!("`time_to` takes 3 arguments, found {}", args.len()),
                    span,
                )
                .label("wrong number of arguments")
                .help("write e.g. `time_to(stage, 1h, river.warning) <= 2h` (feed, window of the rate of rise, level)"),
            );
            return ERR;
        }
        let feed = self.feed_arg(&args[0], "time_to", cx);
        let width = self.expect_duration(&args[1], "the window width of `time_to`", false);
        let target = self.num(&args[2], cx, "the level of `time_to`");
        let (Some(feed), Some(width), Some((target, tnu))) = (feed, width, target) else {
            return ERR;
        };
        if self.feed_bad[feed] {
            return ERR;
        }
        let fd = self.feeds[feed].clone();
        if fd.forecast || fd.quantity != Quantity::Level || fd.unit != Unit::M {
            self.err(
                Diagnostic::error(
                    "E305",
                    format!("`time_to` needs a level feed in metres, but `{}` is not one", fd.name),
                    args[0].span,
                )
                .label("not a stage in m")
                .help("time to a level at the current rate of rise: `time_to(stage, 1h, river.warning)`"),
            );
            return ERR;
        }
        let target = match tnu {
            Nu::Known(Unit::M) | Nu::Bare => target,
            Nu::Amb(UnitKind::CmPerHour) => {
                self.err(
                    Diagnostic::error(
                        "E304",
                        "`time_to` needs a level, not a rate in cm/h",
                        args[2].span,
                    )
                    .label("a rate")
                    .help("the target of `time_to` is a level, e.g. `river.warning` or `12.5 m`"),
                );
                return ERR;
            }
            Nu::Amb(_) => scale(target, 0.01), // cm against a level: metres
            Nu::Known(u) => {
                self.err(
                    Diagnostic::error(
                        "E304",
                        format!("`time_to` compares a level in m with a value in {u}"),
                        args[2].span,
                    )
                    .label(format!("this is in {u}"))
                    .help("the target of `time_to` is a level, e.g. `river.warning` or `12.5 m`"),
                );
                return ERR;
            }
        };
        let (last, rate) = self.level_and_rate(feed, &fd, width, cx);
        let label = format!(
            "time_to({}, {}, {}) (h)",
            fd.name,
            fmt_duration(width),
            self.text(args[2].span)
        );
        let ir = Expr::Ahead(ir::Ahead {
            kind: ir::AheadKind::TimeTo {
                last,
                rate,
                target: Box::new(target),
            },
            horizon: 0,
        });
        if !cx.aheads.iter().any(|(l, _, _)| *l == label) {
            cx.aheads.push((label, ir.clone(), Unit::None));
        }
        (ir, Ty::Num(Nu::Known(Unit::Other("h"))))
    }

    /// The horizon argument `next 3h`.
    fn horizon(&mut self, e: &ast::Expr, func: &str) -> Option<Millis> {
        let e = strip_parens(e);
        match &e.kind {
            ExprKind::Next(0) => {
                self.err(
                    Diagnostic::error("E306", "a horizon cannot be zero", e.span)
                        .label("zero horizon")
                        .help("look ahead a positive time, e.g. `next 2h`"),
                );
                None
            }
            ExprKind::Next(ms) => Some(*ms),
            ExprKind::Error => None,
            ExprKind::Duration(ms) => {
                self.err(
                    Diagnostic::error(
                        "E302",
                        format!(
                            "the horizon of `{func}` is written `next {}`",
                            fmt_duration(*ms)
                        ),
                        e.span,
                    )
                    .label("a duration without `next`")
                    .help(format!(
                        "write `next {}`: the time ahead of the evaluation",
                        fmt_duration(*ms)
                    )),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        "E302",
                        format!("`{func}` needs a horizon such as `next 3h`"),
                        e.span,
                    )
                    .label("expected `next` and a duration"),
                );
                None
            }
        }
    }

    /// A window function call; `k` is the checked decay factor of `decay_sum`.
    #[inline(never)]
    fn window_call(
        &mut self,
        func: &Ident,
        args: &[ast::Expr],
        span: Span,
        cx: &mut RuleCx,
        k: Option<f64>,
    ) -> Checked {
        let f = func.name.as_str();
        if !WINDOW_FUNCS.contains(&f) {
            let all = WINDOW_FUNCS
                .iter()
                .chain(GROUP_FUNCS)
                .chain(AHEAD_FUNCS)
                .copied();
            let s = did_you_mean(f, all);
            let mut d = Diagnostic::error("E202", format!("unknown function `{f}`"), func.span)
                .label("no function has this name");
            d = match s {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.note(format!(
                    "window functions: {}; group functions: group_/peer_ + median, mean, min, max, count; looking ahead: {}",
                    WINDOW_FUNCS.join(", "),
                    AHEAD_FUNCS.join(", ")
                )),
            };
            self.err(d);
            return ERR;
        }
        let (arity_ok, expect) = match f {
            "last" => (
                matches!(args.len(), 1 | 2),
                "1 or 2 arguments (a feed and an optional window width)",
            ),
            "decay_sum" => (
                args.len() == 3,
                "3 arguments (a feed, a number of days like `10d`, and a daily decay factor k)",
            ),
            "since" => (
                args.len() == 2,
                "2 arguments (a feed and a time of day with a zone, like `08:00 Asia/Shanghai`)",
            ),
            _ => (args.len() == 2, "2 arguments (a feed and a window width)"),
        };
        if !arity_ok {
            self.err(
                Diagnostic::error(
                    "E301",
                    format!(
                        "`{f}` takes {expect}, found {} argument{}",
                        args.len(),
                        if args.len() == 1 { "" } else { "s" }
                    ),
                    span,
                )
                .label("wrong number of arguments")
                .help(match f {
                    "decay_sum" => "write e.g. `decay_sum(rain, 10d, 0.84)`".to_string(),
                    "since" => "write e.g. `since(rain, 08:00 Asia/Shanghai)`".to_string(),
                    _ => format!("write e.g. `{f}(rain, 3h)`"),
                }),
            );
            return ERR;
        }
        let feed = self.feed_arg(&args[0], f, cx);
        // the width / parameters
        let mut width: Option<Millis> = None;
        let mut func_ir = match f {
            "sum" => WindowFunc::Sum,
            "count" => WindowFunc::Count,
            "avg" => WindowFunc::Avg,
            "twa" => WindowFunc::Twa,
            "min" => WindowFunc::Min,
            "max" => WindowFunc::Max,
            "first" => WindowFunc::First,
            "last" => WindowFunc::Last,
            "delta" => WindowFunc::Delta,
            "rate" => WindowFunc::Rate,
            "integrate" => WindowFunc::Integrate,
            _ => WindowFunc::Missing,
        };
        let mut params_ok = true;
        match f {
            "decay_sum" => {
                let days =
                    self.expect_duration(&args[1], "the number of days of `decay_sum`", false);
                let days = match days {
                    Some(ms) if ms % ir::DAY == 0 && ms / ir::DAY > MAX_DECAY_DAYS => {
                        self.err(
                            Diagnostic::error(
                                "E307",
                                format!(
                                    "`decay_sum` looks back at most {MAX_DECAY_DAYS} days, found {}",
                                    ms / ir::DAY
                                ),
                                args[1].span,
                            )
                            .label(format!("more than {MAX_DECAY_DAYS} days"))
                            .note("each antecedent day is summed on every evaluation")
                            .help("an antecedent precipitation index uses days to weeks, e.g. `10d` or `30d`"),
                        );
                        None
                    }
                    Some(ms) if ms % ir::DAY == 0 => Some((ms / ir::DAY) as u32),
                    Some(_) => {
                        self.err(
                            Diagnostic::error(
                                "E307",
                                "`decay_sum` counts whole days",
                                args[1].span,
                            )
                            .label("not a whole number of days")
                            .help("write the number of antecedent days, e.g. `10d`"),
                        );
                        None
                    }
                    None => None,
                };
                let k = match k {
                    Some(k) if k > 0.0 && k <= 1.0 => Some(k),
                    Some(k) => {
                        self.err(
                            Diagnostic::error(
                                "E307",
                                format!("the decay factor must be in (0, 1], found {k}"),
                                args[2].span,
                            )
                            .label("outside (0, 1]")
                            .help("a daily decay factor is typically 0.8 to 0.9"),
                        );
                        None
                    }
                    None => None,
                };
                match (days, k) {
                    (Some(days), Some(k)) => func_ir = WindowFunc::DecaySum { days, k },
                    _ => params_ok = false,
                }
            }
            "since" => match &args[1].kind {
                ExprKind::Time { hour, minute, zone } => match zone {
                    Some((z, zs)) => {
                        if valid_zone(z) {
                            func_ir = WindowFunc::Since {
                                hour: *hour,
                                minute: *minute,
                                zone: z.clone(),
                            };
                        } else {
                            let s = zone_suggestion(z);
                            self.err(
                                Diagnostic::error("E211", format!("unknown time zone `{z}`"), *zs)
                                    .label("not an IANA zone name, `UTC` or a UTC offset")
                                    .note("zone names are those of the IANA time zone database, spelled exactly (`Asia/Shanghai`, `America/Chicago`)")
                                    .help(match s {
                                        Some(s) => format!("did you mean `{s}`?"),
                                        None => "write an IANA name like `Asia/Shanghai`, `UTC` (or `Z`), or an offset like `+08:00`".to_string(),
                                    }),
                            );
                            params_ok = false;
                        }
                    }
                    None => {
                        self.err(
                            Diagnostic::error("E302", "`since` needs a time zone", args[1].span)
                                .label("no zone after the time of day")
                                .help(format!(
                                    "write e.g. `{} Asia/Shanghai` or `{} +08:00`",
                                    self.text(args[1].span),
                                    self.text(args[1].span)
                                )),
                        );
                        params_ok = false;
                    }
                },
                ExprKind::Error => params_ok = false,
                _ => {
                    self.err(
                        Diagnostic::error(
                            "E302",
                            "`since` needs a time of day and a zone",
                            args[1].span,
                        )
                        .label("expected a time of day like `08:00 Asia/Shanghai`"),
                    );
                    params_ok = false;
                }
            },
            _ => {
                if args.len() == 2 {
                    let what = format!("the window width of `{f}`");
                    match self.expect_duration(&args[1], &what, false) {
                        Some(w) => width = Some(w),
                        None => params_ok = false,
                    }
                }
            }
        }
        let Some(feed) = feed else { return ERR };
        if self.feed_bad[feed] {
            return ERR;
        }
        let fd = self.feeds[feed].clone();
        if fd.forecast {
            self.err(
                Diagnostic::error(
                    "E305",
                    format!(
                        "`{f}` aggregates readings, but `{}` is a forecast feed",
                        fd.name
                    ),
                    args[0].span,
                )
                .label("a forecast feed")
                .help(format!(
                    "read forecasts with `forecast({}, next 3h)` or `forecast_max({}, next 3h)`",
                    fd.name, fd.name
                )),
            );
            return ERR;
        }
        let Some(unit) = self.window_unit(&func_ir, &fd, &args[0], func) else {
            return ERR;
        };
        if !params_ok {
            return ERR;
        }
        let label = window_label(&func_ir, &fd.name, width);
        let id = self.intern(ir::WindowNode {
            feed,
            func: func_ir.clone(),
            width,
            unit: unit.unwrap_or(Unit::None),
            label,
        });
        cx.use_window(id);
        let ty = match unit {
            Some(u) => Ty::Num(Nu::Known(u)),
            None => Ty::Cond,
        };
        (Expr::Window(id), ty)
    }

    /// The result unit of a window function over a feed (`Some(None)` for a condition); E305
    /// and E308 when the function does not apply.
    fn window_unit(
        &mut self,
        func: &WindowFunc,
        fd: &ir::FeedDef,
        feed_arg: &ast::Expr,
        fname: &Ident,
    ) -> Option<Option<Unit>> {
        let q = fd.quantity;
        let name = &fd.name;
        let fnm = func.name();
        let additive_err = |q: Quantity| -> Option<Diagnostic> {
            let (what, help) = match q {
                Quantity::Rate => (
                    format!("a rate ({})", fd.unit),
                    format!(
                        "summing intensities does not give a depth: use `integrate({name}, …)` for the depth that fell, or `avg`/`max` of the intensity"
                    ),
                ),
                Quantity::Level => (
                    format!("a level ({})", fd.unit),
                    "levels do not add up: use `max`, `last`, `avg` or `delta`".to_string(),
                ),
                _ => return None,
            };
            Some(
                Diagnostic::error(
                    "E305",
                    format!(
                        "`{fnm}` needs an additive feed (depth or count), but `{name}` is {what}"
                    ),
                    feed_arg.span,
                )
                .label(format!("`{name}` is {what}"))
                .secondary(fname.span, format!("`{fnm}` adds samples up"))
                .help(help),
            )
        };
        let unit = match func {
            WindowFunc::Sum | WindowFunc::DecaySum { .. } | WindowFunc::Since { .. } => {
                if let Some(d) = additive_err(q) {
                    self.err(d);
                    return None;
                }
                Some(fd.unit)
            }
            WindowFunc::Count => Some(Unit::None),
            WindowFunc::Missing => None,
            WindowFunc::Rate => {
                if q == Quantity::Level && fd.unit == Unit::M {
                    Some(Unit::MPerHour)
                } else {
                    let help = match q {
                        Quantity::Depth => format!(
                            "`{name}` holds increments: `sum({name}, 1h)` is the depth per hour"
                        ),
                        Quantity::Rate => {
                            format!("`{name}` already is a rate: use `last`, `avg` or `max`")
                        }
                        _ => "`rate` gives the rate of rise of a level in m/h".to_string(),
                    };
                    self.err(
                        Diagnostic::error(
                            "E305",
                            format!(
                                "`rate` needs a level feed in metres, but `{name}` is a {} feed",
                                quantity_name(q)
                            ),
                            feed_arg.span,
                        )
                        .label("not a level in metres")
                        .help(help),
                    );
                    return None;
                }
            }
            WindowFunc::Integrate => {
                if q != Quantity::Rate {
                    self.err(
                        Diagnostic::error(
                            "E305",
                            format!(
                                "`integrate` needs a rate feed, but `{name}` is a {} feed",
                                quantity_name(q)
                            ),
                            feed_arg.span,
                        )
                        .label("not a rate")
                        .help(if q == Quantity::Depth {
                            format!("`{name}` holds depths already: use `sum({name}, …)`")
                        } else {
                            "`integrate` turns an intensity (mm/h) into a depth (mm)".to_string()
                        }),
                    );
                    return None;
                }
                if fd.interval.is_none() {
                    let fspan = self.feed_spans[self.feeds.iter().position(|f| f.name == *name)?];
                    self.err(
                        Diagnostic::error(
                            "E308",
                            format!("`integrate` needs the interval of feed `{name}`"),
                            feed_arg.span,
                        )
                        .label("this feed has no `interval`")
                        .secondary(fspan, "declared here without `interval`")
                        .help("add the reporting interval to the feed, e.g. `, interval 5m`"),
                    );
                    return None;
                }
                Some(if fd.unit == Unit::MPerHour {
                    Unit::M
                } else {
                    Unit::Mm
                })
            }
            _ => Some(fd.unit),
        };
        Some(unit)
    }

    fn constant(&mut self, e: &ast::Expr, what: &str, cx: &mut RuleCx) -> Option<f64> {
        let (ir, ty) = self.expr(e, cx);
        match (ir, ty) {
            (_, Ty::Error) => None,
            (Expr::Num(v), Ty::Num(Nu::Bare | Nu::Known(Unit::None))) => Some(v),
            _ => {
                self.not_a_constant(e.span, what);
                None
            }
        }
    }

    #[inline(never)]
    fn not_a_constant(&mut self, span: Span, what: &str) {
        self.err(
            Diagnostic::error("E302", format!("{what} must be a plain number"), span)
                .label("expected a number like `0.84`"),
        );
    }

    /// A group function call; `first` is its checked first argument (with 2 arguments).
    #[inline(never)]
    fn group_call(
        &mut self,
        func: &Ident,
        args: &[ast::Expr],
        span: Span,
        cx: &mut RuleCx,
        first: Option<Checked>,
    ) -> Checked {
        let f = func.name.as_str();
        if args.len() != 2 {
            self.err(
                Diagnostic::error(
                    "E301",
                    format!(
                        "`{f}` takes 2 arguments (a window function and a group column), found {}",
                        args.len()
                    ),
                    span,
                )
                .label("wrong number of arguments")
                .help(format!("write e.g. `{f}(sum(rain, 1h), gauge.area)`")),
            );
            return ERR;
        }
        let (w, ty) = first.unwrap_or(ERR);
        let window = match (w, ty) {
            (_, Ty::Error) => None,
            (Expr::Window(id), Ty::Num(_)) => Some(id),
            _ => {
                self.err(
                    Diagnostic::error(
                        "E302",
                        format!("the first argument of `{f}` must be a window function"),
                        args[0].span,
                    )
                    .label("not a window function of a feed")
                    .help(format!("write e.g. `{f}(sum(rain, 1h), gauge.area)`")),
                );
                None
            }
        };
        let col = match &args[1].kind {
            ExprKind::Column { table, column } => self.column(table, column, false, cx, Some(f)),
            ExprKind::Error => None,
            _ => {
                self.err(
                    Diagnostic::error(
                        "E302",
                        format!("the second argument of `{f}` must be a group column"),
                        args[1].span,
                    )
                    .label("expected `table.column`")
                    .help(format!("write e.g. `{f}(sum(rain, 1h), gauge.area)`")),
                );
                None
            }
        };
        let (Some(window), Some((t, c))) = (window, col) else {
            return ERR;
        };
        cx.use_table(t, args[1].span, false);
        let (gf, exclude_self) = group_func(f);
        let unit = if gf == ir::GroupFunc::Count {
            Unit::None
        } else {
            self.windows[window].unit
        };
        (
            Expr::Group {
                func: gf,
                window,
                table: t,
                column: c,
                exclude_self,
            },
            Ty::Num(Nu::Known(unit)),
        )
    }

    fn intern(&mut self, node: ir::WindowNode) -> WindowId {
        if let Some(i) = self
            .windows
            .iter()
            .position(|w| w.feed == node.feed && w.func == node.func && w.width == node.width)
        {
            return i;
        }
        self.windows.push(node);
        self.windows.len() - 1
    }

    // ---------------------------------------------------------------- messages

    fn template(&mut self, span: Span, cx: &mut RuleCx) -> Vec<ir::TemplatePart> {
        let src = self.src;
        let b = src.as_bytes();
        if span.end < span.start + 2 || b[span.end - 1] != b'"' {
            return Vec::new(); // unterminated: already reported
        }
        let (start, end) = (span.start + 1, span.end - 1);
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = start;
        while i < end {
            let c = b[i];
            if c == b'{' && i + 1 < end && b[i + 1] == b'{' {
                lit.push('{');
                i += 2;
            } else if c == b'}' && i + 1 < end && b[i + 1] == b'}' {
                lit.push('}');
                i += 2;
            } else if c == b'\\' && i + 1 < end {
                match b[i + 1] {
                    b'n' => lit.push('\n'),
                    b't' => lit.push('\t'),
                    b'"' => lit.push('"'),
                    b'\\' => lit.push('\\'),
                    _ => {
                        lit.push('\\');
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            } else if c == b'}' {
                self.err(
                    Diagnostic::error("E101", "unmatched `}` in message", Span::new(i, i + 1))
                        .label("no `{` opens this")
                        .help("write `}}` for a literal brace"),
                );
                i += 1;
            } else if c == b'{' {
                let next = src[i + 1..end].find(['{', '}']).map(|p| p + i + 1);
                if let Some(n) = next.filter(|n| b[*n] == b'{') {
                    self.err(
                        Diagnostic::error("E101", "unclosed `{` in message", Span::new(i, i + 1))
                            .label("this `{` is not closed before the next `{`")
                            .help("close the hole with `}`, or write `{{` for a literal brace"),
                    );
                    lit.push_str(&src[i..n]);
                    i = n;
                    continue;
                }
                let Some(close) = next else {
                    self.err(
                        Diagnostic::error("E101", "unclosed `{` in message", Span::new(i, i + 1))
                            .label("this `{` is never closed")
                            .help("close the hole with `}`, or write `{{` for a literal brace"),
                    );
                    break;
                };
                if !lit.is_empty() {
                    parts.push(ir::TemplatePart::Lit(std::mem::take(&mut lit)));
                }
                if let Some(p) = self.hole(i + 1, close, cx) {
                    parts.push(p);
                }
                i = close + 1;
            } else {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                lit.push(ch);
                i += ch.len_utf8();
            }
        }
        if !lit.is_empty() {
            parts.push(ir::TemplatePart::Lit(lit));
        }
        parts
    }

    fn hole(&mut self, start: usize, end: usize, cx: &mut RuleCx) -> Option<ir::TemplatePart> {
        let text = &self.src[start..end];
        let mut expr_end = end;
        let mut precision = None;
        if let Some(p) = text.rfind(":.") {
            let digits = &text[p + 2..];
            if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
                match digits.parse::<u8>() {
                    Ok(n) if n <= 12 => precision = Some(n),
                    _ => {
                        let s = Span::new(start + p, end);
                        self.err(
                            Diagnostic::error("E307", "too many decimal places", s)
                                .label("at most 12")
                                .help("write e.g. `{s3:.1}`"),
                        );
                    }
                }
                expr_end = start + p;
            } else {
                let fmt = Span::new(start + p, end);
                self.err(
                    Diagnostic::error(
                        "E101",
                        format!("invalid format `{}` in a message hole", &text[p..]),
                        fmt,
                    )
                    .label("a hole takes only a number of decimals, like `:.1`")
                    .help(format!(
                        "write the unit after the hole: `{{{}:.1}} mm`",
                        text[..p].trim()
                    )),
                );
                return None;
            }
        }
        match text[..expr_end - start].trim() {
            "entity" => return Some(ir::TemplatePart::Entity),
            "rule" => return Some(ir::TemplatePart::Rule),
            "level" => return Some(ir::TemplatePart::Level),
            "" => {
                self.err(
                    Diagnostic::error(
                        "E101",
                        "empty `{}` in message",
                        Span::new(start - 1, end + 1),
                    )
                    .label("nothing to show")
                    .help("write `{entity}`, `{level}`, a value like `{s3:.0}`, or `{{}}` for literal braces"),
                );
                return None;
            }
            _ => {}
        }
        let e = match crate::parse::parse_fragment(self.src, start, expr_end) {
            Ok(e) => e,
            Err(ds) => {
                self.diags.extend(ds);
                return None;
            }
        };
        if precision.is_none() {
            if let ExprKind::Column { table, column } = &e.kind {
                let (t, c) = self.column(table, column, false, cx, None)?;
                return Some(ir::TemplatePart::Cell {
                    table: t,
                    column: c,
                });
            }
        }
        let (ir, n) = self.num(&e, cx, "a message hole")?;
        let ir = self.bounded(Some(ir), e.span)?;
        if let Nu::Amb(_) = n {
            self.ambiguous(e.span);
            return None;
        }
        Some(ir::TemplatePart::Value {
            expr: ir,
            precision,
            unit: match n {
                Nu::Known(u) => u,
                _ => Unit::None,
            },
        })
    }
}

/// The expression inside any parentheses (without recursion).
fn strip_parens(mut e: &ast::Expr) -> &ast::Expr {
    while let ExprKind::Paren(x) = &e.kind {
        e = x;
    }
    e
}

/// An operator in backquotes, for "`+` needs a number".
fn quoted_op(op: ABin) -> &'static str {
    match op {
        ABin::Or => "`or`",
        ABin::And => "`and`",
        ABin::Lt => "`<`",
        ABin::Le => "`<=`",
        ABin::Gt => "`>`",
        ABin::Ge => "`>=`",
        ABin::Eq => "`==`",
        ABin::Ne => "`!=`",
        ABin::Add => "`+`",
        ABin::Sub => "`-`",
        ABin::Mul => "`*`",
        ABin::Div => "`/`",
        ABin::Default => "`??`",
    }
}

fn quantity_name(q: Quantity) -> &'static str {
    match q {
        Quantity::Depth => "depth",
        Quantity::Rate => "rate",
        Quantity::Level => "level",
        Quantity::Count => "count",
    }
}

fn group_func(f: &str) -> (ir::GroupFunc, bool) {
    let (prefix, rest) = f.split_once('_').unwrap_or(("group", "median"));
    let gf = match rest {
        "mean" => ir::GroupFunc::Mean,
        "min" => ir::GroupFunc::Min,
        "max" => ir::GroupFunc::Max,
        "count" => ir::GroupFunc::Count,
        _ => ir::GroupFunc::Median,
    };
    (gf, prefix == "peer")
}

/// Canonical text of a window: `sum(rain, 3h)`, `last(stage)`, `decay_sum(rain, 10d, 0.84)`.
pub fn window_label(func: &WindowFunc, feed: &str, width: Option<Millis>) -> String {
    match func {
        WindowFunc::DecaySum { days, k } => format!("decay_sum({feed}, {days}d, {k})"),
        WindowFunc::Since { hour, minute, zone } => {
            format!("since({feed}, {hour:02}:{minute:02} {zone})")
        }
        f => match width {
            Some(w) => format!("{}({feed}, {})", f.name(), fmt_duration(w)),
            None => format!("{}({feed})", f.name()),
        },
    }
}

fn valid_zone(z: &str) -> bool {
    // `Z` and `UTC` as in timestamps (the engine reads both as UTC)
    if z == "Z" || z == "UTC" {
        return true;
    }
    if let Some(rest) = z.strip_prefix(['+', '-']) {
        let b = rest.as_bytes();
        return b.len() == 5
            && b[2] == b':'
            && rest[..2].parse::<u32>().is_ok_and(|h| h <= 14)
            && rest[3..].parse::<u32>().is_ok_and(|m| m < 60);
    }
    z.parse::<chrono_tz::Tz>().is_ok()
}

/// A zone the user probably meant. A wrong zone is worse than none (`Z` is one edit from
/// `NZ`, New Zealand, UTC+12), so only names of 3 or more characters get a suggestion, and
/// only one at most 2 edits away (1 for names under 6 characters), ignoring case.
fn zone_suggestion(z: &str) -> Option<String> {
    let n = z.chars().count();
    if n < 3 {
        return None;
    }
    let max = (n / 3).min(2);
    let lower = z.to_lowercase();
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|t| t.name())
        .chain(["UTC", "Z"])
        .filter(|c| *c != z)
        .map(|c| (crate::diag::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, c)| (*d, c.to_string()))
        .map(|(_, c)| c.to_string())
}

fn default_message(values: &[(String, Expr)], value_units: &[Unit]) -> Vec<ir::TemplatePart> {
    let mut parts = vec![
        ir::TemplatePart::Rule,
        ir::TemplatePart::Lit(" ".into()),
        ir::TemplatePart::Level,
        ir::TemplatePart::Lit(" for ".into()),
        ir::TemplatePart::Entity,
    ];
    for (i, (label, e)) in values.iter().enumerate() {
        let sep = if i == 0 { ": " } else { ", " };
        parts.push(ir::TemplatePart::Lit(format!("{sep}{label} = ")));
        parts.push(ir::TemplatePart::Value {
            expr: e.clone(),
            precision: Some(1),
            unit: Unit::None,
        });
        match value_units.get(i) {
            Some(Unit::None) | None => {}
            Some(u) => parts.push(ir::TemplatePart::Lit(format!(" {u}"))),
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoTables;
    impl crate::TableLoader for NoTables {
        fn load(&self, path: &str) -> Result<TableData, String> {
            Err(path.to_string())
        }
    }

    #[test]
    fn windows_are_shared_across_rules() {
        let mut src = String::from("feed rain: depth mm\nfeed stage: level m\n");
        for i in 0..5 {
            src.push_str(&format!(
                "rule r{i} on rain, stage:\n  w when sum(rain, 3h) >= {i} and last(stage) > 1 m\n"
            ));
        }
        // the same window spelled differently is the same node
        src.push_str("rule r5 on rain:\n  w when sum(rain, 180m) >= 9\n");
        let c = crate::compile(&src, "t", &NoTables).unwrap();
        let labels: Vec<&str> = c.plan.windows.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, vec!["sum(rain, 3h)", "last(stage)"]);
        assert!(c.plan.rules[..5].iter().all(|r| r.windows == vec![0, 1]));
        assert_eq!(c.plan.rules[5].windows, vec![0]);
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(3 * 3_600_000), "3h");
        assert_eq!(fmt_duration(5_400_000), "1h30m");
        assert_eq!(fmt_duration(24 * 3_600_000), "24h");
        assert_eq!(fmt_duration(48 * 3_600_000), "2d");
        assert_eq!(fmt_duration(10 * ir::DAY + 3_600_000), "10d1h");
        assert_eq!(fmt_duration(90_000), "1m30s");
        assert_eq!(fmt_duration(250), "250ms");
    }
}
