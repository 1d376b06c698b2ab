//! The checked, normalized form of a rule file: what the engine executes.
//!
//! Everything here is resolved: names are indices, units are converted to canonical units
//! (depth mm, level m, rate mm/h, level rate m/h), durations are milliseconds, tables are
//! loaded and typed, and identical window aggregations are shared (one [`WindowNode`] per
//! distinct `(feed, function, width)`). The engine never re-validates a [`Plan`].

use std::collections::HashMap;
use std::fmt;

/// Milliseconds (durations and UTC instants alike).
pub type Millis = i64;

/// Index into [`Plan::feeds`].
pub type FeedId = usize;
/// Index into [`Plan::tables`].
pub type TableId = usize;
/// Index into [`Plan::windows`].
pub type WindowId = usize;
/// Index into [`Plan::rules`].
pub type RuleId = usize;

/// A compiled rule set.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Declared feeds, in declaration order.
    pub feeds: Vec<FeedDef>,
    /// Declared tables with their loaded, typed contents.
    pub tables: Vec<TableDef>,
    /// Distinct window aggregations shared by all rules.
    pub windows: Vec<WindowNode>,
    /// Rules in declaration order.
    pub rules: Vec<RuleDef>,
    /// Hex SHA-256 of the rule source and of every table's contents (provenance).
    pub ruleset_hash: String,
}

impl Plan {
    /// The feed with this name, if declared.
    pub fn feed_by_name(&self, name: &str) -> Option<FeedId> {
        self.feeds.iter().position(|f| f.name == name)
    }

    /// The longest span of history any window of `feed` needs at evaluation time `t`:
    /// samples older than `t - retention` can be dropped.
    pub fn retention(&self, feed: FeedId) -> Millis {
        let f = &self.feeds[feed];
        let mut r: Millis = 0;
        for w in self.windows.iter().filter(|w| w.feed == feed) {
            let need = match &w.func {
                WindowFunc::DecaySum { days, .. } => (*days as Millis + 1) * DAY,
                WindowFunc::Since { .. } => 2 * DAY,
                // the baseline sample may be up to the staleness budget older than t - w
                WindowFunc::Delta | WindowFunc::Rate | WindowFunc::Twa => {
                    w.width.unwrap_or(0) + f.stale.unwrap_or(w.width.unwrap_or(0))
                }
                _ => w.width.unwrap_or(0),
            };
            r = r.max(need);
        }
        r.max(f.late)
    }
}

impl Plan {
    /// The `(table, column)` pairs that group functions (`peer_median` …) use anywhere in the
    /// plan, in first-use order: the engine indexes these groups, and a sharded daemon keeps
    /// each such group in one shard.
    pub fn group_columns(&self) -> Vec<(TableId, usize)> {
        let mut keys = Vec::new();
        for rule in &self.rules {
            rule.walk_exprs(&mut |e| {
                if let Expr::Group { table, column, .. } = e {
                    if !keys.contains(&(*table, *column)) {
                        keys.push((*table, *column));
                    }
                }
            });
        }
        keys
    }
}

impl Expr {
    /// Visit this expression and every sub-expression, parents first. (Checked expressions
    /// are at most 256 deep, so the recursion is bounded.)
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Neg(a) | Expr::Not(a) => a.walk(f),
            Expr::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            _ => {}
        }
    }
}

impl RuleDef {
    /// Visit every expression of the rule (conditions, exits, `clear when`, reported values
    /// and thresholds, message holes) and all their sub-expressions.
    pub fn walk_exprs(&self, f: &mut dyn FnMut(&Expr)) {
        for l in &self.levels {
            l.when.walk(f);
            if let Some(x) = &l.exit {
                x.walk(f);
            }
        }
        if let Some(c) = &self.clear_when {
            c.cond.walk(f);
        }
        for (_, x) in self.values.iter().chain(&self.thresholds) {
            x.walk(f);
        }
        for part in &self.message {
            if let TemplatePart::Value { expr, .. } = part {
                expr.walk(f);
            }
        }
    }
}

/// One day in milliseconds.
pub const DAY: Millis = 86_400_000;
/// One hour in milliseconds.
pub const HOUR: Millis = 3_600_000;

/// What a feed measures, which decides which aggregations make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// An increment over the interval that ends at the timestamp (rain depth): additive.
    Depth,
    /// An intensity (mm/h): not additive; `integrate` turns it into a depth.
    Rate,
    /// A level or state (river stage, temperature): not additive.
    Level,
    /// A dimensionless count (tips, events): additive.
    Count,
}

/// Canonical units. Every value inside the engine is in one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Millimetres of depth (rain).
    Mm,
    /// Millimetres per hour (rain intensity).
    MmPerHour,
    /// Metres (stage, level).
    M,
    /// Metres per hour (rate of rise).
    MPerHour,
    /// No unit (counts, ratios, plain numbers).
    None,
    /// A unit forewarn does not convert (e.g. `ppm`, `degC`, `%`); compared only with itself.
    Other(&'static str),
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Mm => "mm",
            Unit::MmPerHour => "mm/h",
            Unit::M => "m",
            Unit::MPerHour => "m/h",
            Unit::None => "",
            Unit::Other(s) => s,
        })
    }
}

/// What to do with a second reading at an existing (entity, feed, timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// Last arrival wins (QoS 1 redeliveries and QC corrections). The default.
    #[default]
    Replace,
    /// First arrival wins; later ones are counted and dropped.
    Ignore,
    /// Values at the same instant are added (sources that send several events per instant).
    Add,
}

/// A declared feed, in canonical units.
#[derive(Debug, Clone)]
pub struct FeedDef {
    /// Feed name as written.
    pub name: String,
    /// What it measures.
    pub quantity: Quantity,
    /// The canonical unit values are held in.
    pub unit: Unit,
    /// The unit as declared (e.g. `in`), for messages.
    pub declared_unit: String,
    /// Multiply an incoming value by this to get the canonical unit (25.4 for inches).
    pub scale: f64,
    /// Valid range, inclusive, in canonical units.
    pub range: Option<(f64, f64)>,
    /// Nominal reporting interval (each sample covers `(ts - interval, ts]`), if declared.
    pub interval: Option<Millis>,
    /// Acceptance horizon for late readings (default 15 min).
    pub late: Millis,
    /// Reorder delay (default 0).
    pub reorder: Millis,
    /// Staleness budget: no sample for this long means `stale`.
    pub stale: Option<Millis>,
    /// Offline budget: no sample for this long means `offline`.
    pub offline: Option<Millis>,
    /// Duplicate policy (default replace).
    pub duplicates: DuplicatePolicy,
    /// Reject numbers sent as strings instead of coercing them.
    pub strict: bool,
    /// A forecast feed (`feed qpf: forecast depth mm`): it carries forecasts (issue time,
    /// values over valid intervals ahead), read with `forecast(...)`; readings of it are
    /// refused.
    pub forecast: bool,
}

/// A window (or point) aggregation function.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowFunc {
    /// Sum of values in `(t-w, t]`; 0 when empty.
    Sum,
    /// Sample mean; no value when empty.
    Avg,
    /// Time-weighted mean (each sample holds until the next); no value when nothing holds.
    Twa,
    /// Minimum; no value when empty.
    Min,
    /// Maximum; no value when empty.
    Max,
    /// Number of samples; 0 when empty.
    Count,
    /// Newest sample in the window (or at or before t when `width` is `None`).
    Last,
    /// Oldest sample in the window.
    First,
    /// Newest at or before t minus the baseline (newest at or before t-w, not older than the
    /// staleness budget); no value otherwise.
    Delta,
    /// [`WindowFunc::Delta`] divided by the time between the two samples, per hour.
    Rate,
    /// Time integral of a rate over the window: each sample covers `(ts - interval, ts]`,
    /// clipped to the window; result in depth per hour of rate.
    Integrate,
    /// True when the window holds no sample.
    Missing,
    /// Decay-weighted antecedent sum: `sum_{i=1..days} k^i * sum((t-(i+1)d, t-i d])`.
    DecaySum {
        /// Number of antecedent days.
        days: u32,
        /// Daily decay factor, 0 < k <= 1.
        k: f64,
    },
    /// Sum since the most recent local `hour:minute` strictly before t, in `zone`:
    /// `(anchor, t]`.
    Since {
        /// Local hour of the day boundary.
        hour: u32,
        /// Local minute of the day boundary.
        minute: u32,
        /// IANA zone name (e.g. `Asia/Shanghai`) or fixed offset (`+08:00`).
        zone: String,
    },
}

impl WindowFunc {
    /// The function's name in the language.
    pub fn name(&self) -> &'static str {
        match self {
            WindowFunc::Sum => "sum",
            WindowFunc::Avg => "avg",
            WindowFunc::Twa => "twa",
            WindowFunc::Min => "min",
            WindowFunc::Max => "max",
            WindowFunc::Count => "count",
            WindowFunc::Last => "last",
            WindowFunc::First => "first",
            WindowFunc::Delta => "delta",
            WindowFunc::Rate => "rate",
            WindowFunc::Integrate => "integrate",
            WindowFunc::Missing => "missing",
            WindowFunc::DecaySum { .. } => "decay_sum",
            WindowFunc::Since { .. } => "since",
        }
    }
}

/// One shared window aggregation over one feed.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowNode {
    /// The feed aggregated.
    pub feed: FeedId,
    /// The function.
    pub func: WindowFunc,
    /// Window width; `None` only for `last`/`first` without a width and for `decay_sum`/`since`.
    pub width: Option<Millis>,
    /// Unit of the result.
    pub unit: Unit,
    /// Canonical text, e.g. `sum(rain, 3h)`: used as the value label in warning records.
    pub label: String,
}

/// A loaded, typed table.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name in the rules (e.g. `gauge`).
    pub name: String,
    /// File path as written in the rules.
    pub path: String,
    /// Key column name.
    pub key: String,
    /// Group columns declared with `group` (usable in group aggregates).
    pub groups: Vec<String>,
    /// Column names in file order (the key column included).
    pub columns: Vec<String>,
    /// Row index by entity key.
    pub rows: HashMap<String, usize>,
    /// Cells by `[column][row]`; `None` for an empty cell.
    pub cells: Vec<Vec<Option<Cell>>>,
}

impl TableDef {
    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The cell for an entity and column, if present.
    pub fn cell(&self, entity: &str, column: usize) -> Option<&Cell> {
        let row = *self.rows.get(entity)?;
        self.cells.get(column)?.get(row)?.as_ref()
    }
}

/// A table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A number (every non-empty cell of the column parsed as one).
    Num(f64),
    /// Text.
    Text(String),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `and` (Kleene: false wins over unknown)
    And,
    /// `or` (Kleene: true wins over unknown)
    Or,
}

/// Aggregation over the members of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFunc {
    /// Median of members' values.
    Median,
    /// Mean of members' values.
    Mean,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Number of members with a value.
    Count,
}

/// A checked expression. Numbers are `f64` in canonical units; "no value" propagates.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number (already converted to canonical units).
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// The value of a shared window aggregation for the evaluated entity.
    Window(WindowId),
    /// A table cell for the evaluated entity; `default` when the cell or row is missing.
    Column {
        /// Table.
        table: TableId,
        /// Column index in [`TableDef::columns`].
        column: usize,
        /// `?? default`.
        default: Option<f64>,
    },
    /// A window aggregation evaluated for every entity sharing the evaluated entity's value
    /// in `table.column`, combined with `func`.
    Group {
        /// The combining function.
        func: GroupFunc,
        /// The per-member aggregation.
        window: WindowId,
        /// Table holding the group column.
        table: TableId,
        /// Group column index.
        column: usize,
        /// `peer_*`: leave the evaluated entity out.
        exclude_self: bool,
    },
    /// Unary minus.
    Neg(Box<Expr>),
    /// `not`.
    Not(Box<Expr>),
    /// A binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A value over a horizon ahead of the evaluation time: a forecast or a projection.
    Ahead(Ahead),
}

/// A value over the horizon `(τ, τ + horizon]` ahead of the evaluation time τ.
#[derive(Debug, Clone, PartialEq)]
pub struct Ahead {
    /// What is looked ahead at.
    pub kind: AheadKind,
    /// The horizon (`next 3h`).
    pub horizon: Millis,
}

/// The functions that look ahead.
#[derive(Debug, Clone, PartialEq)]
pub enum AheadKind {
    /// `forecast(f, next h)`: the forecast amount over the horizon (a depth feed), from the
    /// latest forecast known at τ that covers the horizon.
    ForecastSum {
        /// The forecast feed.
        feed: FeedId,
    },
    /// `forecast_max(f, next h)`: the highest forecast value over the horizon: the peak
    /// intensity (mm/h) of a depth feed, the peak level of a level feed.
    ForecastMax {
        /// The forecast feed.
        feed: FeedId,
    },
    /// `project(f, w, next h)` of a depth feed: the depth of the last `w` continued at the
    /// same intensity for `h`: `sum(f, w) · h / w`.
    ProjectDepth {
        /// The `sum(f, w)` window.
        window: WindowId,
        /// `w`.
        width: Millis,
    },
    /// `project(f, w, next h)` of a level feed: the last level plus the rate of rise over
    /// `w` continued for `h`: `last(f) + rate(f, w) · h`.
    ProjectLevel {
        /// The `last(f)` window.
        last: WindowId,
        /// The `rate(f, w)` window (m/h).
        rate: WindowId,
    },
    /// `time_to(f, w, target)` of a level feed: hours until `last(f)` reaches `target` at
    /// `rate(f, w)`; 0 when it already has, infinite when the level is not rising. Its
    /// horizon is 0; the expected crossing is τ plus this time.
    TimeTo {
        /// The `last(f)` window.
        last: WindowId,
        /// The `rate(f, w)` window (m/h).
        rate: WindowId,
        /// The level to reach (m).
        target: Box<Expr>,
    },
}

impl Expr {
    /// Whether the expression reads anything ahead of the evaluation time, and if so whether
    /// a forecast (`Some(true)`) or only projections (`Some(false)`).
    pub fn looks_ahead(&self) -> Option<bool> {
        let mut r: Option<bool> = None;
        self.walk(&mut |e| {
            if let Expr::Ahead(a) = e {
                let f = matches!(
                    a.kind,
                    AheadKind::ForecastSum { .. } | AheadKind::ForecastMax { .. }
                );
                r = Some(r.unwrap_or(false) || f);
            }
        });
        r
    }

    /// The top-level `or` branches of a condition (the condition itself when it is no `or`).
    pub fn disjuncts(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Binary(BinOp::Or, a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                e => out.push(e),
            }
        }
        out
    }
}

/// The CAP 1.2 severity and response type declared for a level (`cap LEVEL: severity …,
/// response …`), as the CAP enumeration words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapDecl {
    /// `Extreme`, `Severe`, `Moderate`, `Minor`, `Unknown`.
    pub severity: String,
    /// `Shelter`, `Evacuate`, `Prepare`, `Execute`, `Avoid`, `Monitor`, `Assess`, `None`.
    pub response: String,
}

/// One level of a rule.
#[derive(Debug, Clone)]
pub struct LevelDef {
    /// Level name (e.g. `orange`).
    pub name: String,
    /// Entry condition.
    pub when: Expr,
    /// The entry condition must hold this long (event time) before the level is a candidate.
    pub hold: Option<Millis>,
    /// Exit condition (hysteresis); `None` means "the entry condition no longer holds".
    pub exit: Option<Expr>,
}

/// A rule-wide `clear when` condition.
#[derive(Debug, Clone)]
pub struct ClearWhen {
    /// The condition that ends the episode.
    pub cond: Expr,
    /// It must hold this long.
    pub hold: Option<Millis>,
}

/// A part of a message template.
#[derive(Debug, Clone)]
pub enum TemplatePart {
    /// Literal text.
    Lit(String),
    /// The entity id.
    Entity,
    /// The rule name.
    Rule,
    /// The level entered (or `clear`).
    Level,
    /// A number, with optional decimal places.
    Value {
        /// The expression.
        expr: Expr,
        /// Decimal places (`{x:.1}`).
        precision: Option<u8>,
        /// Unit of the value, for display only: the compiler never expects the engine to
        /// append it (templates spell their units out, the default message carries them as
        /// literals).
        unit: Unit,
    },
    /// A text (or number) table cell for the entity.
    Cell {
        /// Table.
        table: TableId,
        /// Column index.
        column: usize,
    },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// Rule name.
    pub name: String,
    /// Feeds the rule runs on (an entity is evaluated when it has a reading on one of them).
    pub feeds: Vec<FeedId>,
    /// Levels in ascending order of severity (index 0 is the lowest).
    pub levels: Vec<LevelDef>,
    /// `clear after d`: the current level's exit must hold this long before stepping down.
    pub clear_after: Option<Millis>,
    /// Rule-wide `clear when`.
    pub clear_when: Option<ClearWhen>,
    /// Message template (a default one when the rule has none).
    pub message: Vec<TemplatePart>,
    /// Named values reported in every warning record: `let` bindings and window
    /// aggregations, labelled (e.g. `s3`, `sum(rain, 3h)`). Numeric only: condition `let`s
    /// and `missing(...)` windows are not listed. Lets first (declaration order), then the
    /// windows in order of first use.
    pub values: Vec<(String, Expr)>,
    /// Thresholds reported in every warning record: table references, labelled
    /// (e.g. `gauge.evac_1h`).
    pub thresholds: Vec<(String, Expr)>,
    /// Tables the rule needs a row in for an entity (columns referenced without a default).
    pub required_tables: Vec<TableId>,
    /// Time-driven deadlines matter for these windows (all windows the rule reads).
    pub windows: Vec<WindowId>,
    /// 1-based source line of the rule header (for run-time messages).
    pub line: u32,
    /// `shadow`: evaluated and recorded, never published.
    pub shadow: bool,
    /// `cap LEVEL: …` per level (index as in [`RuleDef::levels`]).
    pub cap: Vec<Option<CapDecl>>,
    /// `message LANG "…"`: messages per language, in declaration order.
    pub localized: Vec<(String, Vec<TemplatePart>)>,
    /// `event LANG? "…"`: the hazard's name per language (`None`: any language).
    pub events: Vec<(Option<String>, String)>,
}
