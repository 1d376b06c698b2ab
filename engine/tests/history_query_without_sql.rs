//! `forewarn query` in a build without the `sql` feature: the subcommand exists, says how to
//! get it, and exits non-zero. (`scripts/test.sh` builds with every feature; plain
//! `cargo test` runs this one.)

#![cfg(not(feature = "sql"))]

use std::process::Command;

#[test]
fn query_without_the_sql_feature_says_how_to_get_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .args(["query", "--history", "nowhere", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("`sql` feature"), "{err}");
    assert!(
        err.contains("cargo run --release -p forewarn-engine --features sql -- query"),
        "{err}"
    );
    // and it is listed among the subcommands
    let help = Command::new(env!("CARGO_BIN_EXE_forewarn"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8(help.stdout).unwrap().contains("query"));
}
