//! Golden tests of rendered diagnostics: every `tests/diagnostics/<name>.rules` (at the
//! repository root) is compiled and its rendered diagnostics (colour off; warnings too when
//! the file compiles) are compared with `<name>.stderr`. Tables are the `*.csv` files of the
//! same directory. Run with `UPDATE_EXPECT=1` to rewrite the `.stderr` files. Rule files are
//! read as bytes ([`compile_bytes`]), so that a golden may hold bytes that are not UTF-8.

mod common;

use std::path::{Path, PathBuf};

use forewarn_rules::{compile_bytes, Diagnostics, TableData, TableLoader};

struct DirLoader(PathBuf);

impl TableLoader for DirLoader {
    fn load(&self, path: &str) -> Result<TableData, String> {
        let file = self.0.join(path);
        let text = std::fs::read_to_string(&file).map_err(|_| format!("no such file: {path}"))?;
        Ok(common::parse_csv(&text))
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diagnostics")
}

/// Rendered diagnostics of one golden file, and whether it had errors.
fn render(path: &Path) -> (String, bool) {
    let bytes = std::fs::read(path).expect("read rules");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let loader = DirLoader(dir());
    match compile_bytes(&bytes, &name, &loader) {
        Err(d) => (d.render(false), true),
        Ok(c) => {
            let source = String::from_utf8(bytes).expect("a file that compiles is UTF-8");
            (
                Diagnostics::from_warnings(&name, &source, &c.warnings).render(false),
                false,
            )
        }
    }
}

#[test]
fn golden_diagnostics() {
    let bless = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/diagnostics exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "expected the golden files, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let (actual, _) = render(f);
        assert!(
            !actual.is_empty(),
            "{}: a golden file must produce at least one diagnostic",
            f.display()
        );
        let expect_path = f.with_extension("stderr");
        if bless {
            std::fs::write(&expect_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expect_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {} (expected)\n{expected}\n+++ actual\n{actual}",
                expect_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ (run with UPDATE_EXPECT=1 to bless):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every code of the language reference has at least one golden file.
#[test]
fn every_code_has_a_golden() {
    let mut all = String::new();
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "stderr") {
            all.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/language.md"))
            .unwrap();
    let codes: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next())
        .filter(|c| c.len() == 4 && (c.starts_with('E') || c.starts_with('W')))
        .collect();
    assert!(codes.len() >= 30, "{codes:?}");
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|c| !all.contains(&format!("[{c}]")))
        .collect();
    assert!(missing.is_empty(), "codes without a golden: {missing:?}");
}

/// The file with several mistakes reports each of them, of different kinds.
#[test]
fn many_mistakes_are_all_reported() {
    let (out, errors) = render(&dir().join("many_mistakes.rules"));
    assert!(errors);
    let mut codes: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("error[")
                .or_else(|| l.strip_prefix("warning["))
        })
        .map(|l| &l[..4])
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert!(codes.len() >= 5, "{codes:?}\n{out}");
}
