//! `impl Display for Plan`: a stable, EXPLAIN-like text of a compiled plan (feeds, tables,
//! shared windows with their ids, rules with levels and expression trees). Used by
//! `forewarn check --explain` and by snapshot tests.

use std::fmt::{self, Write as _};

use crate::check::fmt_duration;
use crate::ir::AheadKind;
use crate::ir::*;

fn num(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn prec(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And => 2,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => 4,
        BinOp::Add | BinOp::Sub => 5,
        BinOp::Mul | BinOp::Div => 6,
    }
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::And => "and",
        BinOp::Or => "or",
    }
}

fn group_name(f: GroupFunc, exclude_self: bool) -> String {
    let f = match f {
        GroupFunc::Median => "median",
        GroupFunc::Mean => "mean",
        GroupFunc::Min => "min",
        GroupFunc::Max => "max",
        GroupFunc::Count => "count",
    };
    format!("{}_{f}", if exclude_self { "peer" } else { "group" })
}

impl Plan {
    /// Render an expression of this plan as infix text: windows as `w0:sum(rain, 3h)`,
    /// columns as `gauge.evac_1h`, with parentheses only where needed.
    pub fn expr_text(&self, e: &Expr) -> String {
        let mut s = String::new();
        self.write_expr(&mut s, e, 0);
        s
    }

    fn column_name(&self, table: TableId, column: usize) -> String {
        match self.tables.get(table) {
            Some(t) => format!(
                "{}.{}",
                t.name,
                t.columns.get(column).map_or("?", String::as_str)
            ),
            None => format!("table{table}.col{column}"),
        }
    }

    fn write_expr(&self, s: &mut String, e: &Expr, outer: u8) {
        match e {
            Expr::Num(v) => s.push_str(&num(*v)),
            Expr::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            Expr::Window(w) => {
                let label = self.windows.get(*w).map_or("?", |n| n.label.as_str());
                let _ = write!(s, "w{w}:{label}");
            }
            Expr::Column {
                table,
                column,
                default,
            } => {
                s.push_str(&self.column_name(*table, *column));
                if let Some(d) = default {
                    let _ = write!(s, " ?? {}", num(*d));
                }
            }
            Expr::Group {
                func,
                window,
                table,
                column,
                exclude_self,
            } => {
                let label = self.windows.get(*window).map_or("?", |n| n.label.as_str());
                let _ = write!(
                    s,
                    "{}(w{window}:{label}, {})",
                    group_name(*func, *exclude_self),
                    self.column_name(*table, *column)
                );
            }
            Expr::Ahead(a) => {
                let h = crate::check::fmt_duration(a.horizon);
                let label = |w: &usize| self.windows.get(*w).map_or("?", |n| n.label.as_str());
                let _ = match &a.kind {
                    AheadKind::ForecastSum { feed } => write!(s, "forecast(feed{feed}, next {h})"),
                    AheadKind::ForecastMax { feed } => {
                        write!(s, "forecast_max(feed{feed}, next {h})")
                    }
                    AheadKind::ProjectDepth { window, width } => write!(
                        s,
                        "project(w{window}:{} x next {h} / {})",
                        label(window),
                        crate::check::fmt_duration(*width)
                    ),
                    AheadKind::ProjectLevel { last, rate } => write!(
                        s,
                        "project(w{last}:{} + w{rate}:{} x next {h})",
                        label(last),
                        label(rate)
                    ),
                    AheadKind::TimeTo { last, rate, target } => {
                        let _ = write!(
                            s,
                            "time_to(w{last}:{}, w{rate}:{}, ",
                            label(last),
                            label(rate)
                        );
                        self.write_expr(s, target, 0);
                        write!(s, ")")
                    }
                };
            }
            Expr::Neg(x) => {
                s.push('-');
                self.write_expr(s, x, 7);
            }
            Expr::Not(x) => {
                let paren = outer > 3;
                if paren {
                    s.push('(');
                }
                s.push_str("not ");
                self.write_expr(s, x, 3);
                if paren {
                    s.push(')');
                }
            }
            Expr::Binary(op, l, r) => {
                let p = prec(*op);
                let paren = p < outer;
                if paren {
                    s.push('(');
                }
                self.write_expr(s, l, if p == 4 { 5 } else { p });
                let _ = write!(s, " {} ", op_text(*op));
                self.write_expr(s, r, p + 1);
                if paren {
                    s.push(')');
                }
            }
        }
    }

    fn template_text(&self, parts: &[TemplatePart]) -> String {
        let mut s = String::new();
        for p in parts {
            match p {
                TemplatePart::Lit(t) => {
                    s.push_str(&t.replace('{', "{{").replace('}', "}}"));
                }
                TemplatePart::Entity => s.push_str("{entity}"),
                TemplatePart::Rule => s.push_str("{rule}"),
                TemplatePart::Level => s.push_str("{level}"),
                TemplatePart::Value {
                    expr, precision, ..
                } => {
                    s.push('{');
                    s.push_str(&self.expr_text(expr));
                    if let Some(p) = precision {
                        let _ = write!(s, ":.{p}");
                    }
                    s.push('}');
                }
                TemplatePart::Cell { table, column } => {
                    let _ = write!(s, "{{{}}}", self.column_name(*table, *column));
                }
            }
        }
        s
    }
}

fn quantity(q: Quantity) -> &'static str {
    match q {
        Quantity::Depth => "depth",
        Quantity::Rate => "rate",
        Quantity::Level => "level",
        Quantity::Count => "count",
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {}", &self.ruleset_hash)?;
        for (i, fd) in self.feeds.iter().enumerate() {
            write!(f, "feed {i} {}: {}", fd.name, quantity(fd.quantity))?;
            if fd.unit != Unit::None {
                write!(f, " {}", fd.unit)?;
            }
            if fd.scale != 1.0 {
                write!(f, " (from {}, x{})", fd.declared_unit, num(fd.scale))?;
            }
            if let Some((lo, hi)) = fd.range {
                write!(f, ", range {} .. {}", num(lo), num(hi))?;
            }
            if let Some(i) = fd.interval {
                write!(f, ", interval {}", fmt_duration(i))?;
            }
            write!(f, ", late {}", fmt_duration(fd.late))?;
            if fd.reorder != 0 {
                write!(f, ", reorder {}", fmt_duration(fd.reorder))?;
            }
            if let Some(s) = fd.stale {
                write!(f, ", stale {}", fmt_duration(s))?;
            }
            if let Some(o) = fd.offline {
                write!(f, ", offline {}", fmt_duration(o))?;
            }
            match fd.duplicates {
                DuplicatePolicy::Replace => {}
                DuplicatePolicy::Ignore => write!(f, ", duplicates ignore")?,
                DuplicatePolicy::Add => write!(f, ", duplicates add")?,
            }
            if fd.strict {
                write!(f, ", strict")?;
            }
            writeln!(f)?;
        }
        for (i, t) in self.tables.iter().enumerate() {
            write!(f, "table {i} {}: \"{}\", key {}", t.name, t.path, t.key)?;
            for g in &t.groups {
                write!(f, ", group {g}")?;
            }
            let cols: Vec<String> =
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(c, name)| {
                        let numeric = t.cells.get(c).is_some_and(|col| {
                            col.iter().all(|x| !matches!(x, Some(Cell::Text(_))))
                        });
                        format!("{name}:{}", if numeric { "num" } else { "text" })
                    })
                    .collect();
            writeln!(f, "; {} rows; columns {}", t.rows.len(), cols.join(" "))?;
        }
        for (i, w) in self.windows.iter().enumerate() {
            let feed = self.feeds.get(w.feed).map_or("?", |x| x.name.as_str());
            write!(f, "window w{i} {} on feed {} ({feed})", w.label, w.feed)?;
            if w.func == WindowFunc::Missing {
                writeln!(f, " -> condition")?;
            } else if w.unit == Unit::None {
                writeln!(f, " -> number")?;
            } else {
                writeln!(f, " -> {}", w.unit)?;
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let feeds: Vec<&str> = r
                .feeds
                .iter()
                .map(|x| self.feeds.get(*x).map_or("?", |x| x.name.as_str()))
                .collect();
            writeln!(
                f,
                "rule {i} {} on {} (line {})",
                r.name,
                feeds.join(", "),
                r.line
            )?;
            for (li, l) in r.levels.iter().enumerate() {
                write!(
                    f,
                    "  level {li} {} when {}",
                    l.name,
                    self.expr_text(&l.when)
                )?;
                if let Some(h) = l.hold {
                    write!(f, " for {}", fmt_duration(h))?;
                }
                if let Some(x) = &l.exit {
                    write!(f, " exit when {}", self.expr_text(x))?;
                }
                writeln!(f)?;
            }
            if let Some(c) = r.clear_after {
                writeln!(f, "  clear after {}", fmt_duration(c))?;
            }
            if let Some(c) = &r.clear_when {
                write!(f, "  clear when {}", self.expr_text(&c.cond))?;
                if let Some(h) = c.hold {
                    write!(f, " for {}", fmt_duration(h))?;
                }
                writeln!(f)?;
            }
            for (name, e) in &r.values {
                writeln!(f, "  value {name} = {}", self.expr_text(e))?;
            }
            for (name, e) in &r.thresholds {
                writeln!(f, "  threshold {name} = {}", self.expr_text(e))?;
            }
            if !r.required_tables.is_empty() {
                let t: Vec<&str> = r
                    .required_tables
                    .iter()
                    .map(|t| self.tables.get(*t).map_or("?", |x| x.name.as_str()))
                    .collect();
                writeln!(f, "  requires {}", t.join(", "))?;
            }
            let ws: Vec<String> = r.windows.iter().map(|w| format!("w{w}")).collect();
            writeln!(f, "  windows {}", ws.join(" "))?;
            writeln!(f, "  message \"{}\"", self.template_text(&r.message))?;
        }
        Ok(())
    }
}
