//! Inputs built to exhaust the compiler: deep nesting, long chains, `let`s that multiply,
//! long antecedent windows, hard implication questions. Each must be refused (or accepted)
//! with a diagnostic, on a thread with the default 2 MiB stack, quickly.

mod common;

use std::time::{Duration, Instant};

use common::MemLoader;
use forewarn_rules::{compile, Compiled, Diagnostics};

/// The stack of a spawned thread (and of the test harness's threads) by default.
const STACK: usize = 2 << 20;

/// Compile `src` on a thread with a 2 MiB stack; the codes of its errors, or of its warnings.
fn codes_on_small_stack(src: String) -> (Vec<&'static str>, Result<Compiled, Diagnostics>) {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let r = compile(&src, "deep.rules", &MemLoader::new());
            let codes = match &r {
                Ok(c) => c.warnings.iter().map(|d| d.code).collect(),
                Err(d) => d.iter().map(|d| d.code).collect(),
            };
            // rendering and EXPLAIN walk the same trees
            match &r {
                Ok(c) => {
                    let _ = c.plan.to_string();
                }
                Err(d) => {
                    let _ = d.render(false);
                }
            }
            (codes, r)
        })
        .unwrap()
        .join()
        .expect("the compiler ran out of stack or panicked")
}

const HEAD: &str = "feed rain: depth mm\nrule r on rain:\n  warn when ";

fn or_chain(n: usize) -> String {
    (0..n)
        .map(|i| format!("sum(rain, 1h) >= {} mm", i + 1))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[test]
fn three_thousand_or_terms_are_refused() {
    let (codes, r) = codes_on_small_stack(format!("{HEAD}{}\n", or_chain(3000)));
    assert_eq!(codes, vec!["E102"]);
    let out = r.unwrap_err().render(false);
    assert!(
        out.contains("expression nested too deeply (limit 256)"),
        "{out}"
    );
}

#[test]
fn five_thousand_parentheses_are_refused() {
    let n = 5000;
    let src = format!(
        "{HEAD}{}sum(rain, 1h) >= 1{}\n",
        "(".repeat(n),
        ")".repeat(n)
    );
    let (codes, _) = codes_on_small_stack(src);
    assert_eq!(codes, vec!["E102"]);
}

#[test]
fn five_thousand_nots_and_minuses_are_refused() {
    let (codes, _) =
        codes_on_small_stack(format!("{HEAD}{}sum(rain, 1h) >= 1\n", "not ".repeat(5000)));
    assert_eq!(codes, vec!["E102"]);
    let (codes, _) =
        codes_on_small_stack(format!("{HEAD}sum(rain, 1h) >= {}1\n", "- ".repeat(5000)));
    assert_eq!(codes, vec!["E102"]);
    // nested calls too
    let (codes, _) = codes_on_small_stack(format!(
        "{HEAD}sum(rain, {}1h{}) >= 1\n",
        "f(".repeat(5000),
        ")".repeat(5000)
    ));
    assert_eq!(codes, vec!["E102"]);
}

/// Just under the limit, everything still compiles, checks, renders and explains on a 2 MiB
/// stack: the limit is what keeps the recursion safe.
#[test]
fn just_under_the_limit_compiles_on_a_small_stack() {
    // `sum(…) >= n mm` is 3 levels; each `or` adds one
    let (codes, r) = codes_on_small_stack(format!("{HEAD}{}\n", or_chain(254)));
    assert!(r.is_ok(), "{codes:?}");
    let (codes, _) = codes_on_small_stack(format!("{HEAD}{}\n", or_chain(255)));
    assert_eq!(codes, vec!["E102"]);
    // parentheses: 252 pairs around `sum(…) >= 1` (3 levels) and the top is 255 deep
    let n = 252;
    let (codes, r) = codes_on_small_stack(format!(
        "{HEAD}{}sum(rain, 1h) >= 1{}\n",
        "(".repeat(n),
        ")".repeat(n)
    ));
    assert!(r.is_ok(), "{codes:?}");
    let (codes, r) =
        codes_on_small_stack(format!("{HEAD}{}sum(rain, 1h) >= 1\n", "not ".repeat(252)));
    assert!(r.is_ok(), "{codes:?}");
    let (codes, r) =
        codes_on_small_stack(format!("{HEAD}sum(rain, 1h) >= {}1\n", "- ".repeat(253)));
    assert!(r.is_ok(), "{codes:?}");
    // a deep numeric expression in a message hole
    let (codes, r) = codes_on_small_stack(format!(
        "{HEAD}sum(rain, 1h) >= 1\n  message \"{{{}sum(rain, 1h){}:.1}}\"\n",
        "(".repeat(250),
        ")".repeat(250)
    ));
    assert!(r.is_ok(), "{codes:?}");
}

/// Long chains split into parenthesized groups stay shallow, as the help says; a long
/// expression as written is not "too large" (E103 is about `let`s written out).
#[test]
fn grouped_chains_are_fine() {
    let groups: Vec<String> = (0..30)
        .map(|g| format!("({})", or_chain(100).replace(">= ", &format!(">= {g}"))))
        .collect();
    let (codes, r) = codes_on_small_stack(format!("{HEAD}{}\n", groups.join(" or ")));
    assert!(r.is_ok(), "{codes:?}");
}

/// `let`s are written out where they are used: their depths add up, and so do their sizes.
#[test]
fn lets_cannot_stack_past_the_limits() {
    // each let adds 200 levels to the one before
    let mut src =
        String::from("feed rain: depth mm\nrule r on rain:\n  let c0 = sum(rain, 1h) >= 1\n");
    for i in 1..=5 {
        let terms: Vec<String> = (0..200).map(|k| format!("sum(rain, 1h) >= {k}")).collect();
        src.push_str(&format!(
            "  let c{i} = c{} or {}\n",
            i - 1,
            terms.join(" or ")
        ));
    }
    src.push_str("  warn when c5\n");
    let (codes, r) = codes_on_small_stack(src);
    // reported once, at the let that got too deep; its users stay silent
    assert_eq!(codes, vec!["E102"], "{}", r.unwrap_err().render(false));

    // each let doubles the one before: 2^40 nodes if nothing stopped it
    let mut src =
        String::from("feed rain: depth mm\nrule r on rain:\n  let c0 = sum(rain, 1h) >= 1\n");
    for i in 1..=40 {
        src.push_str(&format!("  let c{i} = c{} and c{}\n", i - 1, i - 1));
    }
    src.push_str("  warn when c40\n");
    let start = Instant::now();
    let (codes, r) = codes_on_small_stack(src);
    assert_eq!(codes, vec!["E103"], "{}", r.unwrap_err().render(false));
    assert!(start.elapsed() < Duration::from_secs(10));

    // a let used in very many places is written out as often
    let mut src = String::from("feed rain: depth mm\nrule r on rain:\n  let big = ");
    src.push_str(&or_chain(200));
    src.push('\n');
    for i in 0..200 {
        src.push_str(&format!("  let u{i} = big or big or big\n"));
    }
    src.push_str("  warn when u0\n");
    let (codes, _) = codes_on_small_stack(src);
    assert_eq!(codes, vec!["E103"]);
}

/// Deciding whether one level implies another splits `and`/`or` on both sides: with long
/// chains of unrelated atoms that is exponential without a budget.
#[test]
fn implication_search_is_bounded() {
    let ands: Vec<String> = (1..=120).map(|i| format!("sum(rain, {i}m) >= 1")).collect();
    let ors: Vec<String> = (1..=120).map(|i| format!("max(rain, {i}m) >= 1")).collect();
    let src = format!(
        "feed rain: depth mm\nrule r on rain levels low < high:\n  low when {}\n  high when {}\n",
        ands.join(" and "),
        ors.join(" or ")
    );
    let start = Instant::now();
    let (codes, r) = codes_on_small_stack(src);
    assert!(r.is_ok(), "{codes:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn decay_sum_days_are_capped() {
    let src = |days: &str| {
        format!(
            "feed rain: depth mm\nrule r on rain:\n  warn when decay_sum(rain, {days}, 0.5) >= 1\n"
        )
    };
    let (codes, r) = codes_on_small_stack(src("1000000d"));
    assert_eq!(codes, vec!["E307"]);
    assert!(r
        .unwrap_err()
        .render(false)
        .contains("`decay_sum` looks back at most 366 days, found 1000000"));
    let (codes, _) = codes_on_small_stack(src("367d"));
    assert_eq!(codes, vec!["E307"]);
    let (_, r) = codes_on_small_stack(src("366d"));
    assert!(r.is_ok());
    // beyond u32 days: no wrap-around to a small number
    let (codes, _) = codes_on_small_stack(src("4294967297d"));
    assert_eq!(codes, vec!["E307"]);
}
