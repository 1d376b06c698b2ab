//! The syntax tree. Every node carries the [`Span`] of the text it was parsed from.

use crate::diag::Span;
use crate::ir::Millis;

/// A name with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// A parsed rule file.
#[derive(Debug, Clone, Default)]
pub struct File {
    /// Top-level items in source order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Debug, Clone)]
pub enum Item {
    /// `feed NAME: quantity unit?, opts`
    Feed(FeedDecl),
    /// `table NAME: "path", key COL, group COL`
    Table(TableDecl),
    /// `levels NAME: a < b < c`
    Levels(LevelSetDecl),
    /// `rule NAME on FEEDS levels ...: clauses`
    Rule(RuleDecl),
}

/// A feed declaration.
#[derive(Debug, Clone)]
pub struct FeedDecl {
    /// Feed name.
    pub name: Ident,
    /// `forecast` before the quantity: the feed carries forecasts (issue time, valid
    /// intervals ahead), read with `forecast(...)`, not readings.
    pub forecast: Option<Span>,
    /// `depth`, `rate`, `level`, `count` (checked later).
    pub quantity: Ident,
    /// Declared unit text (`mm`, `in/h`) and its span.
    pub unit: Option<(String, Span)>,
    /// Options in order.
    pub opts: Vec<FeedOpt>,
    /// The whole declaration.
    #[allow(dead_code)] // kept for tools (hover, outline)
    pub span: Span,
}

/// One feed option.
#[derive(Debug, Clone)]
pub struct FeedOpt {
    /// Option name (`range`, `late`, ...).
    pub name: Ident,
    /// Its value.
    pub value: FeedOptValue,
    /// The whole option.
    pub span: Span,
}

/// A feed option's value.
#[derive(Debug, Clone)]
pub enum FeedOptValue {
    /// `range lo .. hi`
    Range(Expr, Expr),
    /// A duration option (an expression so that `5 m` can be diagnosed).
    Duration(Expr),
    /// `duplicates replace|ignore|add`
    Word(Ident),
    /// `strict`
    Flag,
}

/// A table declaration.
#[derive(Debug, Clone)]
pub struct TableDecl {
    /// Table name.
    pub name: Ident,
    /// Path as written, and the span of the string literal.
    pub path: (String, Span),
    /// Key column.
    pub key: Ident,
    /// Group columns.
    pub groups: Vec<Ident>,
    /// The whole declaration.
    #[allow(dead_code)] // kept for tools (hover, outline)
    pub span: Span,
}

/// A level set declaration.
#[derive(Debug, Clone)]
pub struct LevelSetDecl {
    /// Set name.
    pub name: Ident,
    /// Levels, lowest first.
    pub levels: Vec<Ident>,
    /// The whole declaration.
    #[allow(dead_code)] // kept for tools (hover, outline)
    pub span: Span,
}

/// How a rule orders its levels.
#[derive(Debug, Clone)]
pub enum RuleLevels {
    /// `levels NAME` (a level set, or a single level).
    Named(Ident),
    /// `levels a < b < c`
    Inline(Vec<Ident>),
}

/// A rule.
#[derive(Debug, Clone)]
pub struct RuleDecl {
    /// Rule name.
    pub name: Ident,
    /// Feeds after `on`.
    pub feeds: Vec<Ident>,
    /// `levels ...`, if given.
    pub levels: Option<RuleLevels>,
    /// Clauses in order.
    pub clauses: Vec<Clause>,
    /// The header (`rule ... :`).
    pub header: Span,
}

/// A duration argument of a clause (`for 10m`), kept as an expression for diagnostics.
pub type DurationArg = Expr;

/// A rule clause.
#[derive(Debug, Clone)]
pub enum Clause {
    /// `let NAME = expr`
    Let {
        /// Name.
        name: Ident,
        /// Value.
        expr: Expr,
    },
    /// `LEVEL when expr (for d)? (exit when expr)?`
    Level {
        /// Level name.
        name: Ident,
        /// Entry condition.
        when: Expr,
        /// Hold.
        hold: Option<DurationArg>,
        /// Exit condition.
        exit: Option<Expr>,
    },
    /// `for d`
    For(DurationArg),
    /// `clear after d`
    ClearAfter(DurationArg),
    /// `clear when expr (for d)?`
    ClearWhen {
        /// Condition.
        cond: Expr,
        /// Hold.
        hold: Option<DurationArg>,
    },
    /// `message "..."`: the span covers the string literal, quotes included.
    Message(Span),
    /// `message LANG "..."`: a message in one language (`zh-CN`, `en`), for CAP `info`
    /// blocks; the span covers the string literal.
    LocalMessage {
        /// Language tag as written (`zh-CN`) and its span.
        lang: (String, Span),
        /// The string literal.
        text: Span,
    },
    /// `event LANG? "..."`: the name of the hazard (CAP `event`), per language.
    Event {
        /// Language tag, if given.
        lang: Option<(String, Span)>,
        /// The string literal.
        text: Span,
    },
    /// `cap LEVEL: severity WORD, response WORD`: the CAP severity and responseType of a
    /// level.
    Cap {
        /// The level.
        level: Ident,
        /// `Extreme`, `Severe`, `Moderate`, `Minor` or `Unknown`.
        severity: Ident,
        /// `Shelter`, `Evacuate`, `Prepare`, `Execute`, `Avoid`, `Monitor`, `Assess` or `None`.
        response: Ident,
    },
    /// `shadow`: evaluated and recorded, never published (CAP).
    Shadow(#[allow(dead_code)] Span),
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `-`
    Neg,
    /// `not`
    Not,
}

/// Binary operators of the surface syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
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
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `??`
    Default,
}

impl BinOp {
    /// Source spelling.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn text(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Default => "??",
        }
    }

    /// Whether this is a comparison.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

/// How deeply an expression may nest: the depth of its syntax tree (each operator,
/// parenthesis, `not`, unary `-` and call is one level; a chain `a or b or c` is left-deep,
/// one level per operator). Parser, checker and the engine's evaluators recurse on the tree,
/// so the limit keeps them within a 2 MiB stack (E102).
pub const MAX_DEPTH: u32 = 256;

/// An expression with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
    /// Depth of the tree rooted here (1 for a leaf); at most [`MAX_DEPTH`].
    pub depth: u32,
}

impl Expr {
    /// A node over `kind`, its depth computed from its children.
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        let below = match &kind {
            ExprKind::Unary(_, e) | ExprKind::Paren(e) => e.depth,
            ExprKind::Binary(_, _, l, r) => l.depth.max(r.depth),
            ExprKind::Call { args, .. } => args.iter().map(|a| a.depth).max().unwrap_or(0),
            _ => 0,
        };
        Expr {
            kind,
            span,
            depth: below + 1,
        }
    }
}

/// Expression kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A number with an optional unit (`50`, `2 in`, `0.5 m/h`).
    Num {
        /// Value as written.
        value: f64,
        /// Unit text and span.
        unit: Option<(String, Span)>,
    },
    /// A duration literal.
    Duration(Millis),
    /// A time of day with an optional zone (`08:00 Asia/Shanghai`).
    Time {
        /// Hour.
        hour: u32,
        /// Minute.
        minute: u32,
        /// Zone text and span.
        zone: Option<(String, Span)>,
    },
    /// `true` / `false`
    Bool(bool),
    /// A let binding (or a misplaced feed or table name).
    Name(String),
    /// `table.column`
    Column {
        /// Table.
        table: Ident,
        /// Column.
        column: Ident,
    },
    /// `f(args)`
    Call {
        /// Function name.
        func: Ident,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// Unary operation.
    Unary(UnOp, Box<Expr>),
    /// Binary operation; the span of the operator is kept for diagnostics.
    Binary(BinOp, Span, Box<Expr>, Box<Expr>),
    /// A parenthesized expression.
    Paren(Box<Expr>),
    /// `next 3h`: a horizon ahead of the evaluation time (an argument of `forecast`,
    /// `forecast_max` and `project`).
    Next(Millis),
    /// Stands for text that failed to parse (already reported).
    Error,
}
