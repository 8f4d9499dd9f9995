//! Golden-file tests of error messages: every `tests/errors/NAME.sql` script must fail with
//! exactly the message in `tests/errors/NAME.err` (what is wrong, and the line and column).
//! Set `BLESS=1` to write the `.err` files from the current messages (then review the diff).
//!
//! Scripts run with the crate directory as working directory, so their CSV paths are
//! `tests/data/...`.

use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn_sql::TableEnv;

async fn error_of(script: &str) -> String {
    let mut tenv = TableEnv::new(&StreamEnv::new());
    match tenv.execute_script(script, |_| {}).await {
        Ok(()) => "(no error)".to_string(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_messages_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/errors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "golden scripts: {}", scripts.len());
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for script in scripts {
        let sql = std::fs::read_to_string(&script).expect("read script");
        let actual = error_of(&sql).await;
        let golden = script.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{actual}\n")).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1)", golden.display()));
        if expected.trim_end() != actual {
            failures.push(format!(
                "{}:\n  expected: {}\n  actual:   {actual}",
                script.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
