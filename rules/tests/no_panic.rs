//! Property: lexing, parsing, checking and rendering never panic, whatever the input.

mod common;

use common::MemLoader;
use forewarn_rules::{compile, Diagnostics};
use proptest::prelude::*;

fn loader() -> MemLoader {
    MemLoader::new().with(
        "gauges.csv",
        "site,name,area,evac_1h,prep_1h\ng1,Alpha,north,60,30\ng2,Beta,north,50,\ng2,dup,,x,1\n",
    )
}

fn run(src: &str) {
    match compile(src, "fuzz.rules", &loader()) {
        Ok(c) => {
            let _ = c.plan.to_string();
            let d = Diagnostics::from_warnings("fuzz.rules", src, &c.warnings);
            let _ = d.render(false);
            let _ = d.to_json();
        }
        Err(d) => {
            assert!(d.has_errors());
            let _ = d.render(true);
            let _ = d.to_json();
        }
    }
}

const VOCAB: &[&str] = &[
    "feed",
    "table",
    "levels",
    "rule",
    "on",
    "let",
    "when",
    "for",
    "exit",
    "clear",
    "after",
    "message",
    "and",
    "or",
    "not",
    "true",
    "false",
    "key",
    "group",
    "rain",
    "stage",
    "gauge",
    "depth",
    "rate",
    "level",
    "count",
    "mm",
    "m",
    "in",
    "cm",
    "ft",
    "mm/h",
    "m/h",
    "sum",
    "integrate",
    "decay_sum",
    "since",
    "peer_median",
    "group_count",
    "last",
    "missing",
    "rate",
    "3h",
    "5m",
    "0s",
    "1h30m",
    "10d",
    "08:00",
    "Asia/Shanghai",
    "+08:00",
    "0.84",
    "50",
    "-",
    "+",
    "*",
    "/",
    "??",
    "(",
    ")",
    ",",
    ":",
    "=",
    "==",
    "<",
    "<=",
    ">=",
    ".",
    "..",
    "\"gauges.csv\"",
    "\"{entity} {s3:.1} {gauge.name} {{\"",
    "\"{\"",
    "\"}\"",
    "site",
    "area",
    "evac_1h",
    "s3",
    "red",
    "orange",
    "\n",
    "#c\n",
    "@",
    "&&",
    "\"open",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        run(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(0..VOCAB.len(), 0..60)) {
        let src: Vec<&str> = words.iter().map(|i| VOCAB[*i]).collect();
        run(&src.join(" "));
    }

    #[test]
    fn mutated_valid_file_never_panics(cut in 0usize..400, insert in 0..VOCAB.len()) {
        let base = "feed rain: depth in, interval 5m, stale 30m, offline 2h\n\
                    feed ri: rate mm/h, interval 5m\n\
                    table gauge: \"gauges.csv\", key site, group area\n\
                    levels cma: blue < yellow < orange < red\n\
                    rule rs on rain, ri levels cma:\n  let s3 = sum(rain, 3h)\n\
                    red when s3 >= 100 mm or integrate(ri, 1h) >= 2 in\n\
                    orange when s3 >= gauge.evac_1h ?? 50 mm for 10m exit when s3 < 40\n\
                    yellow when peer_median(sum(rain, 1h), gauge.area) > 3 and not missing(rain, 30m)\n\
                    blue when since(rain, 08:00 Asia/Shanghai) >= 1 cm or decay_sum(rain, 10d, 0.84) > 5\n\
                    clear when sum(rain, 1h) < 2 for 2h\n  message \"{entity} {gauge.name}: {s3:.0} mm\"\n";
        let mut cut = cut.min(base.len());
        while !base.is_char_boundary(cut) { cut -= 1; }
        let src = format!("{} {} {}", &base[..cut], VOCAB[insert], &base[cut..]);
        run(&src);
    }
}
