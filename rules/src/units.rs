//! Units: the words the language knows, and conversion to canonical units.

use crate::ir::{Quantity, Unit};

/// What a unit word measures before it is tied to a quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnitKind {
    /// A unit with one canonical meaning: canonical unit and scale to it.
    Fixed(Unit, f64),
    /// `cm`: ×10 mm as a depth, ×0.01 m as a level.
    Cm,
    /// `cm/h`: ×10 mm/h or ×0.01 m/h.
    CmPerHour,
}

/// Unit words that may follow a number (the `/h` forms are written `mm/h`).
const WORDS: &[&str] = &["mm", "cm", "m", "in", "ft", "degC", "ppm", "m3"];

/// Whether `w` can start a unit after a number.
pub fn is_unit_word(w: &str) -> bool {
    WORDS.contains(&w)
}

/// Whether `w` is a duration suffix written apart from its number (`3 h`).
pub fn is_spaced_duration_word(w: &str) -> bool {
    matches!(w, "ms" | "s" | "h" | "d" | "w" | "min")
}

/// Look up a unit (`mm`, `in/h`, `m3/s`, ...).
pub fn lookup(text: &str) -> Option<UnitKind> {
    use UnitKind::*;
    Some(match text {
        "mm" => Fixed(Unit::Mm, 1.0),
        "in" => Fixed(Unit::Mm, 25.4),
        "cm" => Cm,
        "m" => Fixed(Unit::M, 1.0),
        "ft" => Fixed(Unit::M, 0.3048),
        "mm/h" => Fixed(Unit::MmPerHour, 1.0),
        "in/h" => Fixed(Unit::MmPerHour, 25.4),
        "cm/h" => CmPerHour,
        "m/h" => Fixed(Unit::MPerHour, 1.0),
        "ft/h" => Fixed(Unit::MPerHour, 0.3048),
        "degC" => Fixed(Unit::Other("degC"), 1.0),
        "ppm" => Fixed(Unit::Other("ppm"), 1.0),
        "m3/s" => Fixed(Unit::Other("m3/s"), 1.0),
        _ => return None,
    })
}

/// Resolve an ambiguous unit against the canonical unit it meets: the scale to apply.
pub fn resolve_against(kind: UnitKind, target: Unit) -> Option<f64> {
    match (kind, target) {
        (UnitKind::Fixed(u, s), t) if u == t => Some(s),
        (UnitKind::Cm, Unit::Mm) => Some(10.0),
        (UnitKind::Cm, Unit::M) => Some(0.01),
        (UnitKind::CmPerHour, Unit::MmPerHour) => Some(10.0),
        (UnitKind::CmPerHour, Unit::MPerHour) => Some(0.01),
        _ => None,
    }
}

/// The canonical unit and scale of a feed of `quantity` declared in `unit` (`None`: the
/// default unit). `Err` carries the units allowed for the quantity.
pub fn feed_unit(quantity: Quantity, unit: Option<&str>) -> Result<(Unit, f64), &'static str> {
    let allowed = match quantity {
        Quantity::Depth => "a depth is declared in `mm`, `cm` or `in`",
        Quantity::Rate => "a rate is declared in `mm/h`, `cm/h`, `in/h`, `m/h` or `ft/h`",
        Quantity::Level => "a level is declared in `m`, `cm`, `ft`, `degC`, `ppm` or `m3/s`",
        Quantity::Count => "a count has no unit",
    };
    let Some(u) = unit else {
        return Ok(match quantity {
            Quantity::Depth => (Unit::Mm, 1.0),
            Quantity::Rate => (Unit::MmPerHour, 1.0),
            Quantity::Level => (Unit::M, 1.0),
            Quantity::Count => (Unit::None, 1.0),
        });
    };
    let kind = lookup(u).ok_or(allowed)?;
    let targets: &[Unit] = match quantity {
        Quantity::Depth => &[Unit::Mm],
        Quantity::Rate => &[Unit::MmPerHour, Unit::MPerHour],
        Quantity::Level => &[
            Unit::M,
            Unit::Other("degC"),
            Unit::Other("ppm"),
            Unit::Other("m3/s"),
        ],
        Quantity::Count => &[],
    };
    targets
        .iter()
        .find_map(|t| resolve_against(kind, *t).map(|s| (*t, s)))
        .ok_or(allowed)
}

/// Describe a unit in messages (`mm`, `no unit`).
pub fn describe(u: Unit) -> String {
    match u {
        Unit::None => "a unitless number".to_string(),
        Unit::Mm => "a depth in mm".to_string(),
        Unit::M => "a level in m".to_string(),
        Unit::MmPerHour => "an intensity in mm/h".to_string(),
        Unit::MPerHour => "a rate of rise in m/h".to_string(),
        Unit::Other(s) => format!("a number in {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(lookup("in"), Some(UnitKind::Fixed(Unit::Mm, 25.4)));
        assert_eq!(lookup("ft"), Some(UnitKind::Fixed(Unit::M, 0.3048)));
        assert_eq!(resolve_against(UnitKind::Cm, Unit::Mm), Some(10.0));
        assert_eq!(resolve_against(UnitKind::Cm, Unit::M), Some(0.01));
        assert_eq!(resolve_against(UnitKind::Cm, Unit::MmPerHour), None);
        assert_eq!(feed_unit(Quantity::Depth, Some("in")), Ok((Unit::Mm, 25.4)));
        assert_eq!(feed_unit(Quantity::Level, Some("cm")), Ok((Unit::M, 0.01)));
        assert_eq!(feed_unit(Quantity::Depth, Some("cm")), Ok((Unit::Mm, 10.0)));
        assert_eq!(
            feed_unit(Quantity::Rate, Some("in/h")),
            Ok((Unit::MmPerHour, 25.4))
        );
        assert_eq!(feed_unit(Quantity::Rate, None), Ok((Unit::MmPerHour, 1.0)));
        assert!(feed_unit(Quantity::Depth, Some("m")).is_err());
        assert!(feed_unit(Quantity::Count, Some("mm")).is_err());
    }
}
