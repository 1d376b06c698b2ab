//! Source text as it comes from users: bytes that are not UTF-8, a byte order mark, old Mac
//! line ends, control characters, number forms, zones, non-finite table cells, empty files,
//! ladders in the wrong order.

mod common;

use common::MemLoader;
use forewarn_rules::ir::{Cell, Expr};
use forewarn_rules::{compile, compile_bytes, Compiled, Diagnostics};

fn codes_of(r: &Result<Compiled, Diagnostics>) -> Vec<&'static str> {
    match r {
        Ok(c) => c.warnings.iter().map(|d| d.code).collect(),
        Err(d) => d.iter().map(|d| d.code).collect(),
    }
}

fn codes(src: &str) -> Vec<&'static str> {
    codes_of(&compile(src, "t.rules", &MemLoader::new()))
}

#[test]
fn invalid_utf8_is_a_diagnostic_with_line_and_column() {
    let bytes =
        b"feed rain: depth mm\nrule r on rain:\n  warn when sum(rain, 1h) >= 1 # caf\xe9 \xff\n";
    let err = compile_bytes(bytes, "t.rules", &MemLoader::new()).unwrap_err();
    assert_eq!(err.iter().map(|d| d.code).collect::<Vec<_>>(), vec!["E004"]);
    let j = err.to_json();
    assert_eq!(j[0]["line"], 3);
    assert_eq!(j[0]["column"], 37);
    assert_eq!(j[0]["message"], "the file is not valid UTF-8 (byte 0xE9)");
    assert_eq!(j[0]["notes"][0], "1 more invalid byte sequence follows");
    let out = err.render(false);
    assert!(out.contains("t.rules:3:37"), "{out}");
    assert!(out.contains("caf\u{fffd} \u{fffd}"), "{out}");

    // in a name: no second error for the same byte, the rest of the file is still checked
    let bytes = b"feed r\xe9in: depth mm\nrule r on rain:\n  warn when sum(rain, 1h) >= 1 zz\n";
    let err = compile_bytes(bytes, "t.rules", &MemLoader::new()).unwrap_err();
    let c: Vec<_> = err.iter().map(|d| d.code).collect();
    assert_eq!(c.iter().filter(|c| **c == "E001").count(), 0, "{c:?}");
    assert!(c.contains(&"E004") && c.contains(&"E101"), "{c:?}");
}

#[test]
fn utf8_bytes_compile_as_text() {
    let src = "feed rain: depth mm\nrule r on rain:\n  warn when sum(rain, 1h) >= 1 # café\n";
    let a = compile(src, "t.rules", &MemLoader::new()).unwrap();
    let b = compile_bytes(src.as_bytes(), "t.rules", &MemLoader::new()).unwrap();
    assert_eq!(a.plan.ruleset_hash, b.plan.ruleset_hash);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let src = "\u{feff}feed rain: depth mm\nfeed wind: level m\nrule r on rain:\n  warn when sum(rain, 1h) >= 1\n";
    let c = compile(src, "t.rules", &MemLoader::new()).unwrap();
    assert_eq!(
        c.warnings.iter().map(|d| d.code).collect::<Vec<_>>(),
        vec!["W502"]
    );
    // rendered against the source as read, BOM included: spans still fit
    let j = Diagnostics::from_warnings("t.rules", src, &c.warnings).to_json();
    assert_eq!(
        (j[0]["line"].clone(), j[0]["column"].clone()),
        (2.into(), 6.into())
    );
    assert!(Diagnostics::from_warnings("t.rules", src, &c.warnings)
        .render(false)
        .contains("feed wind: level m\n  │      ^^^^ never used"));
    let err = compile("\u{feff}@", "t.rules", &MemLoader::new()).unwrap_err();
    assert_eq!(err.to_json()[0]["column"], 1);
    // with an invalid byte too
    let mut bytes = "\u{feff}feed rain: depth mm #".as_bytes().to_vec();
    bytes.push(0xff);
    let err = compile_bytes(&bytes, "t.rules", &MemLoader::new()).unwrap_err();
    assert_eq!(err.to_json()[0]["column"], 22);
}

#[test]
fn lone_carriage_returns_are_line_breaks() {
    let src =
        "# old Mac\rfeed rain: depth mm\r\rrule r on rain:\r    warn when sum(rian, 1h) >= 1\r";
    let err = compile(src, "t.rules", &MemLoader::new()).unwrap_err();
    let j = err.to_json();
    assert_eq!(j[0]["code"], "E201");
    assert_eq!(
        (j[0]["line"].clone(), j[0]["column"].clone()),
        (5.into(), 19.into())
    );
    assert!(err.render(false).contains("t.rules:5:19"));
    assert_eq!(forewarn_rules::diag::line_col("a\rb\r\nc\nd", 7), (4, 1));
    // the comment on the first line ends at its carriage return
    assert!(compile(
        "# c\rfeed rain: depth mm\rrule r on rain:\r warn when sum(rain, 1h) >= 1\r",
        "t.rules",
        &MemLoader::new()
    )
    .is_ok());
}

#[test]
fn control_characters_are_not_echoed() {
    let src = "feed rain: depth mm\nrule r on rain:\n  warn when sum(rain, 1h) >= 1 \u{1b}]0;pwned\u{7}\u{9b}\u{202e}\n";
    let err = compile(src, "t\u{1b}.rules", &MemLoader::new()).unwrap_err();
    let out = err.render(false);
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert!(!out.contains('\u{202e}'), "{out:?}");
    assert!(out.contains("\u{241b}]0;pwned\u{2407}"), "{out}");
    assert!(out.contains("t\u{241b}.rules:3:32"), "{out}");
    // carets still under the right characters after the replacements
    assert!(out.contains("^ not part of the language"), "{out}");
    // with colour, the only escapes are the colour codes
    let coloured = err.render(true);
    assert!(!coloured.contains("\u{1b}]0;"), "{coloured:?}");
    assert!(!coloured.contains('\u{7}'));
}

#[test]
fn numbers_with_exponents() {
    let c = compile(
        "feed rain: depth mm\nrule r on rain levels a < b:\n  a when sum(rain, 1h) >= 1e1 mm\n  b when sum(rain, 1h) >= 2.5E1\n",
        "t.rules",
        &MemLoader::new(),
    )
    .unwrap();
    let Expr::Binary(_, _, r) = &c.plan.rules[0].levels[0].when else {
        panic!()
    };
    assert_eq!(**r, Expr::Num(10.0));
    let Expr::Binary(_, _, r) = &c.plan.rules[0].levels[1].when else {
        panic!()
    };
    assert_eq!(**r, Expr::Num(25.0));
    assert_eq!(
        codes("feed rain: depth mm\nrule r on rain:\n  w when sum(rain, 1h) >= 1e400\n"),
        vec!["E003"]
    );
}

#[test]
fn long_durations_say_they_overflow() {
    let err = compile(
        "feed rain: depth mm\nrule r on rain:\n  w when sum(rain, 999999999999w) >= 1\n",
        "t.rules",
        &MemLoader::new(),
    )
    .unwrap_err();
    let d: Vec<_> = err.iter().collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "duration `999999999999w` overflows");
}

#[test]
fn a_bad_time_of_day_is_one_error() {
    assert_eq!(
        codes("feed rain: depth mm\nrule r on rain:\n  w when since(rain, 25:00 UTC) >= 1\n"),
        vec!["E003"]
    );
    assert_eq!(
        codes("feed rain: depth mm\nrule r on rain:\n  w when since(rain, 24:00 +08:00) >= 1\n"),
        vec!["E003"]
    );
}

#[test]
fn z_and_utc_are_zones() {
    let c = compile(
        "feed rain: depth mm\nrule r on rain levels a < b:\n  a when since(rain, 08:00 Z) >= 1\n  b when since(rain, 08:00 UTC) >= 2\n",
        "t.rules",
        &MemLoader::new(),
    )
    .unwrap();
    let labels: Vec<&str> = c.plan.windows.iter().map(|w| w.label.as_str()).collect();
    assert_eq!(
        labels,
        vec!["since(rain, 08:00 Z)", "since(rain, 08:00 UTC)"]
    );
}

/// A suggestion for a zone typo must not be a different zone: `Z` is one edit from `NZ`
/// (New Zealand, UTC+12).
#[test]
fn short_zone_typos_get_no_suggestion() {
    let help = |zone: &str| {
        let src = format!(
            "feed rain: depth mm\nrule r on rain:\n  w when since(rain, 08:00 {zone}) >= 1\n"
        );
        let err = compile(&src, "t.rules", &MemLoader::new()).unwrap_err();
        let d = err.iter().next().unwrap().clone();
        assert_eq!(d.code, "E211");
        assert!(d.notes.iter().any(|n| n.contains("IANA")));
        d.help.unwrap()
    };
    for z in ["z", "Zz", "X", "U", "NX"] {
        assert!(!help(z).contains("did you mean"), "{z}: {}", help(z));
    }
    assert_eq!(help("utc"), "did you mean `UTC`?");
    assert_eq!(help("asia/shanghai"), "did you mean `Asia/Shanghai`?");
    assert_eq!(help("Asia/Shangai"), "did you mean `Asia/Shanghai`?");
    assert!(!help("Asia/Tokio2x").contains("did you mean"));
}

#[test]
fn non_finite_cells_are_not_numbers() {
    let loader = MemLoader::new().with(
        "g.csv",
        "site,a,b,c,d\ng1,NaN,1,1,1e3\ng2,1,-inf,1,2\ng3,1,1,1e400,3\n",
    );
    let rule = |col: &str| {
        format!("feed rain: depth mm\ntable g: \"g.csv\", key site\nrule r on rain:\n  w when sum(rain, 1h) >= g.{col}\n")
    };
    for (col, cell) in [
        ("a", "g1` has `NaN"),
        ("b", "g2` has `-inf"),
        ("c", "g3` has `1e400"),
    ] {
        let err = compile(&rule(col), "t.rules", &loader).unwrap_err();
        let d = err.iter().next().unwrap();
        assert_eq!(d.code, "E209");
        assert!(d.notes[0].contains(cell), "{:?}", d.notes);
        assert!(d.notes[0].ends_with("which is not a finite number"));
    }
    let c = compile(&rule("d"), "t.rules", &loader).unwrap();
    let t = &c.plan.tables[0];
    assert_eq!(t.cell("g1", 4), Some(&Cell::Num(1000.0)));
}

#[test]
fn a_file_without_rules_warns() {
    assert_eq!(codes(""), vec!["W504"]);
    assert_eq!(codes("# nothing yet\n"), vec!["W504"]);
    assert_eq!(codes("feed rain: depth mm\n"), vec!["W504", "W502"]);
    // not on top of a syntax error
    assert_eq!(codes("feed rain depth mm\n"), vec!["E101"]);
}

const LADDER: &str = "levels cma: red < orange < yellow < blue\n";

fn ladder(feed: &str, red: &str, blue: &str) -> Vec<&'static str> {
    codes(&format!(
        "{feed}\n{LADDER}rule r on rain levels cma:\n  red when {red}\n  blue when {blue}\n"
    ))
}

/// A lower level whose condition implies a higher one's is unreachable (E401), also across
/// windows where the windows are ordered: only where that is sound.
#[test]
fn wrong_order_across_windows() {
    let ranged = "feed rain: depth mm, range 0 .. 500";
    assert_eq!(
        ladder(ranged, "sum(rain, 3h) >= 100", "sum(rain, 12h) >= 50"),
        vec!["E401"]
    );
    // the right order is fine
    assert_eq!(
        ladder(ranged, "sum(rain, 12h) >= 50", "sum(rain, 3h) >= 100"),
        Vec::<&str>::new()
    );
    // a shorter window is no lower bound of a longer one's threshold
    assert_eq!(
        ladder(ranged, "sum(rain, 12h) >= 100", "sum(rain, 3h) >= 50"),
        Vec::<&str>::new()
    );
    // upper bounds go the other way: dry for 12 h means dry for 3 h
    assert_eq!(
        ladder(ranged, "sum(rain, 12h) <= 5", "sum(rain, 3h) <= 5"),
        vec!["E401"]
    );
    // without a range from 0, readings may be negative: nothing is implied
    assert_eq!(
        ladder(
            "feed rain: depth mm",
            "sum(rain, 3h) >= 100",
            "sum(rain, 12h) >= 50"
        ),
        Vec::<&str>::new()
    );
    assert_eq!(
        ladder(
            "feed rain: depth mm, range -5 .. 500",
            "sum(rain, 3h) >= 100",
            "sum(rain, 12h) >= 50"
        ),
        Vec::<&str>::new()
    );
    // a count needs no range: windows nest
    assert_eq!(
        ladder(
            "feed rain: level m",
            "count(rain, 1h) >= 10",
            "count(rain, 2h) >= 3"
        ),
        vec!["E401"]
    );
    // different feeds say nothing about each other
    assert_eq!(
        ladder(
            &format!("{ranged}\nfeed snow: depth mm, range 0 .. 500"),
            "sum(rain, 3h) >= 100 and sum(snow, 1h) >= 0",
            "sum(snow, 12h) >= 50"
        ),
        Vec::<&str>::new()
    );
    // other functions are not monotone in the width
    assert_eq!(
        ladder(ranged, "max(rain, 3h) >= 100", "max(rain, 12h) >= 50"),
        Vec::<&str>::new()
    );
    assert_eq!(
        ladder(ranged, "avg(rain, 3h) >= 100", "avg(rain, 12h) >= 50"),
        Vec::<&str>::new()
    );
    // under `and` / `or`
    assert_eq!(
        ladder(
            ranged,
            "sum(rain, 3h) >= 100 and last(rain) > 1",
            "sum(rain, 12h) >= 50 or sum(rain, 1h) >= 30"
        ),
        vec!["E401"]
    );
}
