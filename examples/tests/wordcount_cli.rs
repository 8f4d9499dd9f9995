//! Oracle tests of the `wordcount` binary: its output must equal a plain sequential count of the
//! same text, at parallelism 1, 2 and 4, to stdout and to `--output`, for a file and for the
//! built-in text; a missing input must fail with the path on stderr.
//!
//! The oracle here splits words with its own character loop, independent of
//! `eichhorn_examples::words`, so a bug there cannot hide in both.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wordcount");

/// Punctuation, mixed case, unicode, digits, empty and blank lines, CRLF line ends.
const TRICKY_TEXT: &str = "To be, or not to be,--that is the question:--\n\
    \n\
    Straße STRASSE straße; ÉCOLE école Ecole!\n\
    \x20\x20\n\
    room 101, R2D2 and C-3PO; 3.14159 -- 42 42\r\n\
    İstanbul ΣΟΦΊΑ σοφία naïve NAÏVE café's\r\n\
    under_score hyphen-ated (parens) [brackets] {braces} \"quotes\" 'single'\n\
    \n\
    trailing line without newline";

/// The sequential reference: maximal alphanumeric runs, lowercased, counted.
fn oracle(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            *counts.entry(current.to_lowercase()).or_insert(0) += 1;
            current.clear();
        }
    }
    counts
}

fn render(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(word, count)| format!("{word} {count}\n"))
        .collect()
}

/// A deterministic text large enough to span many batches and every subtask.
fn large_text() -> String {
    const VOCABULARY: &[&str] = &[
        "Alpha", "beta", "GAMMA", "délta", "Épsilon", "straße", "zeta", "ēta", "theta", "iota",
        "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "7", "1999",
    ];
    const SEPARATORS: &[&str] = &[" ", ", ", "; ", "--", "! ", " (", ") ", "\t"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        // xorshift64: fixed seed, so the text is the same in every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut text = String::new();
    for _ in 0..3_000 {
        for _ in 0..next(12) {
            text.push_str(VOCABULARY[next(VOCABULARY.len())]);
            text.push_str(SEPARATORS[next(SEPARATORS.len())]);
        }
        text.push('\n');
    }
    text
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the wordcount binary runs")
}

fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "wordcount {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

fn check_file_at_all_parallelisms(text: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, text).expect("write input");
    let input = path_str(&input);
    let expected = render(&oracle(text));
    assert!(!expected.is_empty());
    for parallelism in ["1", "2", "4"] {
        let stdout = run_ok(&["--input", input, "--parallelism", parallelism]);
        assert_eq!(stdout, expected, "parallelism {parallelism}");
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn tricky_text_matches_the_oracle_at_every_parallelism() {
    check_file_at_all_parallelisms(TRICKY_TEXT);
}

#[test]
fn large_text_matches_the_oracle_at_every_parallelism() {
    check_file_at_all_parallelisms(&large_text());
}

#[test]
fn output_file_holds_the_counts_and_stdout_stays_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.txt");
    let output = dir.path().join("counts.txt");
    std::fs::write(&input, TRICKY_TEXT).expect("write input");
    for parallelism in ["1", "4"] {
        let stdout = run_ok(&[
            "--input",
            path_str(&input),
            "--output",
            path_str(&output),
            "--parallelism",
            parallelism,
        ]);
        assert_eq!(stdout, "", "parallelism {parallelism}");
        let written = std::fs::read_to_string(&output).expect("read output");
        assert_eq!(
            written,
            render(&oracle(TRICKY_TEXT)),
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn builtin_text_is_counted_without_input() {
    let expected = render(&oracle(&eichhorn_examples::HAMLET_LINES.join("\n")));
    for parallelism in ["1", "2"] {
        let stdout = run_ok(&["--parallelism", parallelism]);
        assert!(!stdout.is_empty());
        let mut previous: Option<&str> = None;
        for line in stdout.lines() {
            let (word, count) = line.split_once(' ').expect("line is `word count`");
            assert!(
                !word.is_empty() && !word.contains(' '),
                "bad word in {line:?}"
            );
            assert!(
                count.parse::<u64>().is_ok_and(|c| c > 0),
                "bad count in {line:?}"
            );
            assert!(
                previous.is_none_or(|p| p < word),
                "{previous:?} before {word:?}"
            );
            previous = Some(word);
        }
        assert_eq!(stdout, expected, "parallelism {parallelism}");
    }
}

#[test]
fn missing_input_fails_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-file.txt");
    let output = run(&["--input", path_str(&missing)]);
    assert_eq!(output.status.code(), Some(1), "status {}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("cannot open input file '{}'", missing.display());
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert!(
        stderr.lines().any(|line| line.starts_with("error: ")),
        "stderr: {stderr}"
    );
    assert!(output.stdout.is_empty());
}
