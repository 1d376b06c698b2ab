//! Level reachability: does one condition imply another?
//!
//! Decided on normalized atoms `<expr> <op> <constant>` (the same expression on both sides,
//! compared structurally, or two windows one of which is never below the other, see
//! [`Facts`]) under `and`/`or`. The test is sound but incomplete: `true` means "whenever `a`
//! holds, `b` holds"; `false` means "could not show it" (also when the search gives up, see
//! [`STEPS`]).

use crate::ir::{BinOp, Expr, FeedDef, Quantity, TableId, WindowFunc, WindowNode};

/// How many steps one [`implies`] may take. Splitting `and`/`or` on both sides can revisit
/// the same pair of subexpressions many times; past this budget the answer is "not shown".
pub const STEPS: usize = 100_000;

/// What is known about the windows of a plan: which window is never below which.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The plan's windows.
    pub windows: &'a [WindowNode],
    /// The plan's feeds.
    pub feeds: &'a [FeedDef],
}

impl Facts<'_> {
    /// No knowledge about windows: only the same expression compares.
    #[cfg(test)]
    pub const NONE: Facts<'static> = Facts {
        windows: &[],
        feeds: &[],
    };

    /// Whether `x >= y` at every evaluation where both have a value, and both always have one:
    /// `count(f, w1) >= count(f, w2)` for `w1 >= w2` (the windows `(t-w, t]` nest), and the
    /// same for `sum` of a feed whose every sample is non-negative: an additive feed (`depth`,
    /// `count`) whose declared `range` starts at 0 or above (the engine rejects readings
    /// outside it). Sums and counts are never without a value (an empty window gives 0).
    pub fn never_below(&self, x: &Expr, y: &Expr) -> bool {
        let (Expr::Window(a), Expr::Window(b)) = (x, y) else {
            return false;
        };
        let (Some(a), Some(b)) = (self.windows.get(*a), self.windows.get(*b)) else {
            return false;
        };
        if a.feed != b.feed || a.func != b.func {
            return false;
        }
        let (Some(wa), Some(wb)) = (a.width, b.width) else {
            return false;
        };
        if wa < wb {
            return false;
        }
        match a.func {
            WindowFunc::Count => true,
            WindowFunc::Sum => self.feeds.get(a.feed).is_some_and(|f| {
                matches!(f.quantity, Quantity::Depth | Quantity::Count)
                    && f.range.is_some_and(|(lo, _)| lo >= 0.0)
            }),
            _ => false,
        }
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        other => other,
    }
}

fn is_cmp(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
    )
}

/// `x op c` with the constant on the right.
fn atom(e: &Expr) -> Option<(&Expr, BinOp, f64)> {
    let Expr::Binary(op, l, r) = e else {
        return None;
    };
    if !is_cmp(*op) {
        return None;
    }
    match (&**l, &**r) {
        (x, Expr::Num(c)) if !matches!(x, Expr::Num(_)) => Some((x, *op, *c)),
        (Expr::Num(c), x) if !matches!(x, Expr::Num(_)) => Some((x, flip(*op), *c)),
        _ => None,
    }
}

/// Whether `x op1 c1` implies `x op2 c2` for every real `x`.
fn atom_implies(op1: BinOp, c1: f64, op2: BinOp, c2: f64) -> bool {
    use BinOp::*;
    match (op1, op2) {
        (Ge, Ge) => c1 >= c2,
        (Ge, Gt) => c1 > c2,
        (Gt, Ge) | (Gt, Gt) => c1 >= c2,
        (Le, Le) => c1 <= c2,
        (Le, Lt) => c1 < c2,
        (Lt, Le) | (Lt, Lt) => c1 <= c2,
        (Eq, Ge) => c1 >= c2,
        (Eq, Gt) => c1 > c2,
        (Eq, Le) => c1 <= c2,
        (Eq, Lt) => c1 < c2,
        (Eq, Eq) => c1 == c2,
        (Eq, Ne) => c1 != c2,
        (Ne, Ne) => c1 == c2,
        (Ge, Ne) => c2 < c1,
        (Gt, Ne) => c2 <= c1,
        (Le, Ne) => c2 > c1,
        (Lt, Ne) => c2 >= c1,
        _ => false,
    }
}

/// Whether `a` implies `b` (sound, incomplete), using what `facts` knows about windows.
pub fn implies(a: &Expr, b: &Expr, facts: &Facts<'_>) -> bool {
    let mut budget = STEPS;
    implies_in(a, b, facts, &mut budget)
}

fn implies_in(a: &Expr, b: &Expr, facts: &Facts<'_>, budget: &mut usize) -> bool {
    // `&&` and `||` are monotone: a "not shown" from an exhausted budget never yields `true`
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    if a == b || matches!(b, Expr::Bool(true)) || matches!(a, Expr::Bool(false)) {
        return true;
    }
    if let Expr::Binary(BinOp::Or, a1, a2) = a {
        return implies_in(a1, b, facts, budget) && implies_in(a2, b, facts, budget);
    }
    if let Expr::Binary(BinOp::And, b1, b2) = b {
        return implies_in(a, b1, facts, budget) && implies_in(a, b2, facts, budget);
    }
    if let Expr::Binary(BinOp::Or, b1, b2) = b {
        if implies_in(a, b1, facts, budget) || implies_in(a, b2, facts, budget) {
            return true;
        }
    }
    if let Expr::Binary(BinOp::And, a1, a2) = a {
        if implies_in(a1, b, facts, budget) || implies_in(a2, b, facts, budget) {
            return true;
        }
    }
    match (atom(a), atom(b)) {
        (Some((x1, op1, c1)), Some((x2, op2, c2))) => {
            if x1 == x2 {
                return atom_implies(op1, c1, op2, c2);
            }
            // x1 >= c1 and x2 never below x1 give x2 >= c1 (and the same for `>`)
            let lower = match op1 {
                BinOp::Ge | BinOp::Eq => Some(BinOp::Ge),
                BinOp::Gt => Some(BinOp::Gt),
                _ => None,
            };
            // x1 <= c1 and x1 never below x2 give x2 <= c1
            let upper = match op1 {
                BinOp::Le | BinOp::Eq => Some(BinOp::Le),
                BinOp::Lt => Some(BinOp::Lt),
                _ => None,
            };
            lower.is_some_and(|op| facts.never_below(x2, x1) && atom_implies(op, c1, op2, c2))
                || upper
                    .is_some_and(|op| facts.never_below(x1, x2) && atom_implies(op, c1, op2, c2))
        }
        _ => false,
    }
}

/// Replace every table column by a constant from `value` (table, column, default); `None`
/// when some value is unknown.
pub fn substitute_columns(
    e: &Expr,
    value: &dyn Fn(TableId, usize, Option<f64>) -> Option<f64>,
) -> Option<Expr> {
    Some(match e {
        Expr::Column {
            table,
            column,
            default,
        } => Expr::Num(value(*table, *column, *default)?),
        Expr::Neg(x) => match substitute_columns(x, value)? {
            Expr::Num(v) => Expr::Num(-v),
            x => Expr::Neg(Box::new(x)),
        },
        Expr::Not(x) => Expr::Not(Box::new(substitute_columns(x, value)?)),
        Expr::Binary(op, l, r) => {
            let l = substitute_columns(l, value)?;
            let r = substitute_columns(r, value)?;
            match (op, &l, &r) {
                (BinOp::Add, Expr::Num(a), Expr::Num(b)) => Expr::Num(a + b),
                (BinOp::Sub, Expr::Num(a), Expr::Num(b)) => Expr::Num(a - b),
                (BinOp::Mul, Expr::Num(a), Expr::Num(b)) => Expr::Num(a * b),
                (BinOp::Div, Expr::Num(a), Expr::Num(b)) if *b != 0.0 => Expr::Num(a / b),
                _ => Expr::Binary(*op, Box::new(l), Box::new(r)),
            }
        }
        other => other.clone(),
    })
}

/// Every `(table, column)` a condition reads.
pub fn columns(e: &Expr, out: &mut Vec<(TableId, usize)>) {
    match e {
        Expr::Column { table, column, .. } => out.push((*table, *column)),
        Expr::Neg(x) | Expr::Not(x) => columns(x, out),
        Expr::Binary(_, l, r) => {
            columns(l, out);
            columns(r, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn implies_t(a: &Expr, b: &Expr) -> bool {
        implies(a, b, &Facts::NONE)
    }

    fn cmp(w: usize, op: BinOp, c: f64) -> Expr {
        Expr::Binary(op, Box::new(Expr::Window(w)), Box::new(Expr::Num(c)))
    }
    fn or(a: Expr, b: Expr) -> Expr {
        Expr::Binary(BinOp::Or, Box::new(a), Box::new(b))
    }
    fn and(a: Expr, b: Expr) -> Expr {
        Expr::Binary(BinOp::And, Box::new(a), Box::new(b))
    }

    #[test]
    fn atoms() {
        assert!(implies_t(
            &cmp(0, BinOp::Ge, 100.0),
            &cmp(0, BinOp::Ge, 50.0)
        ));
        assert!(!implies_t(
            &cmp(0, BinOp::Ge, 50.0),
            &cmp(0, BinOp::Ge, 100.0)
        ));
        assert!(!implies_t(
            &cmp(0, BinOp::Ge, 100.0),
            &cmp(1, BinOp::Ge, 50.0)
        ));
        assert!(implies_t(
            &cmp(0, BinOp::Gt, 50.0),
            &cmp(0, BinOp::Ge, 50.0)
        ));
        assert!(!implies_t(
            &cmp(0, BinOp::Ge, 50.0),
            &cmp(0, BinOp::Gt, 50.0)
        ));
        assert!(implies_t(&cmp(0, BinOp::Lt, 2.0), &cmp(0, BinOp::Le, 5.0)));
        // constant on the left is normalized: 50 <= x  ==  x >= 50
        let flipped = Expr::Binary(
            BinOp::Le,
            Box::new(Expr::Num(50.0)),
            Box::new(Expr::Window(0)),
        );
        assert!(implies_t(&cmp(0, BinOp::Ge, 60.0), &flipped));
    }

    #[test]
    fn and_or_structure() {
        let a = or(cmp(0, BinOp::Ge, 60.0), cmp(1, BinOp::Ge, 90.0));
        let b = or(cmp(0, BinOp::Ge, 50.0), cmp(1, BinOp::Ge, 80.0));
        assert!(implies_t(&a, &b));
        assert!(!implies_t(&b, &a));
        let c = and(cmp(0, BinOp::Ge, 60.0), cmp(1, BinOp::Ge, 10.0));
        assert!(implies_t(&c, &cmp(0, BinOp::Ge, 50.0)));
        assert!(!implies_t(&cmp(0, BinOp::Ge, 60.0), &c));
    }

    #[test]
    fn substitution() {
        let e = Expr::Binary(
            BinOp::Ge,
            Box::new(Expr::Window(0)),
            Box::new(Expr::Column {
                table: 0,
                column: 1,
                default: Some(7.0),
            }),
        );
        let s = substitute_columns(&e, &|_, c, _| Some(c as f64 * 10.0)).unwrap();
        assert_eq!(s, cmp(0, BinOp::Ge, 10.0));
        assert!(substitute_columns(&e, &|_, _, _| None).is_none());
    }
}
