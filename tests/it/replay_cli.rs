//! `sluice plugin check`, run as a user runs it: golden JSON output per message, and precise
//! errors with a non-zero exit for what cannot be loaded.
//!
//! Golden cases live in `tests/golden/replay/` (test plugins) and `tests/golden/spam-score/`
//! (the bundled spam filter): `NNN-name.eml`, optional `NNN-name.args`
//! (extra arguments, one per line) and `NNN-name.json` (the expected output with timings
//! zeroed). On a mismatch the actual output is written beside the case as `NNN-name.failed`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_tests::*;

fn sluice(args: &[&str]) -> Output {
    let bin = sluice_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p sluice` (scripts/test does)",
        bin.display()
    );
    Command::new(bin)
        .args(args)
        .current_dir(workspace_root())
        .env("SLUICE_LOG", "error")
        .output()
        .expect("sluice runs")
}

/// Zeroes timings and makes the file name relative, so output is stable.
fn normalise(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                match k.as_str() {
                    "micros" => *val = serde_json::json!(0),
                    "file" => {
                        let name = val
                            .as_str()
                            .and_then(|s| Path::new(s).file_name()?.to_str())
                            .unwrap_or("")
                            .to_string();
                        *val = serde_json::json!(name);
                    }
                    _ => normalise(val),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

#[test]
fn golden_replays() {
    golden("replay", 6);
}

/// The bundled spam-score plugin with its built-in model: verdicts and headers per message.
#[test]
fn golden_spam_score() {
    golden("spam-score", 4);
}

/// Runs every case of `tests/golden/<folder>/` with that folder's `sluice.toml`.
fn golden(folder: &str, min_cases: usize) {
    let dir = workspace_root().join("tests/golden").join(folder);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= min_cases,
        "the golden folder {folder} lost its cases: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for eml in &cases {
        let mut args: Vec<String> = vec![
            "plugin".into(),
            "check".into(),
            "--config".into(),
            format!("tests/golden/{folder}/sluice.toml"),
        ];
        let args_file = eml.with_extension("args");
        if args_file.is_file() {
            args.extend(
                std::fs::read_to_string(&args_file)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
        args.push(
            eml.strip_prefix(workspace_root())
                .unwrap()
                .display()
                .to_string(),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sluice(&argv);
        assert!(
            out.status.success(),
            "{}: {}",
            eml.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "one JSON line per message");
        let mut actual: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        normalise(&mut actual);
        let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        let expected_file = eml.with_extension("json");
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        let failed_file = eml.with_extension("failed");
        if pretty != expected {
            std::fs::write(&failed_file, &pretty).unwrap();
            failures.push(failed_file.display().to_string());
        } else {
            let _ = std::fs::remove_file(&failed_file);
        }
    }
    assert!(
        failures.is_empty(),
        "output differs from the golden files; actual output written to {failures:?}"
    );
}

#[test]
fn several_messages_give_one_line_each_and_a_bad_one_exits_1() {
    let out = sluice(&[
        "plugin",
        "check",
        "--config",
        "tests/golden/replay/sluice.toml",
        "tests/golden/replay/001-clean.eml",
        "tests/golden/replay/no-such.eml",
        "tests/golden/replay/002-denied-sender.eml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/golden/replay/no-such.eml: cannot read"),
        "{err}"
    );
}

#[test]
fn a_message_without_recipients_needs_rcpt() {
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("m.eml");
    std::fs::write(&eml, "From: a@example.org\nSubject: x\n\nbody\n").unwrap();
    let out = sluice(&[
        "plugin",
        "check",
        "--config",
        "tests/golden/replay/sluice.toml",
        eml.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no recipient: the message has no To, Cc or Bcc address; pass --rcpt"),
        "{err}"
    );
    let out = sluice(&[
        "plugin",
        "check",
        "--config",
        "tests/golden/replay/sluice.toml",
        "--rcpt",
        "x@example.net",
        eml.to_str().unwrap(),
    ]);
    assert!(out.status.success());
}

#[test]
fn a_plugin_that_cannot_load_stops_the_run_with_its_reason() {
    let future = plugin("test", "future-version");
    let out = sluice(&[
        "plugin",
        "check",
        "--config",
        "tests/golden/replay/sluice.toml",
        "--plugin",
        future.to_str().unwrap(),
        "tests/golden/replay/001-clean.eml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("future-version.wasm: built for sluice:filter@9.0.0"),
        "{err}"
    );

    let out = sluice(&[
        "plugin",
        "check",
        "--config",
        "tests/golden/replay/sluice.toml",
        "--plugin",
        "nope",
        "tests/golden/replay/001-clean.eml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plugin nope: no plugin of that name in target/plugins/test"),
        "{err}"
    );
}

#[test]
fn a_bad_configuration_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[plugins.defaults]\ntimeout_ms = 0\nmemory_mb = 0\n").unwrap();
    let out = sluice(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: plugins.defaults.timeout_ms: 0 is out of range",
            cfg.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}: plugins.defaults.memory_mb: 0 is out of range",
            cfg.display()
        )),
        "{err}"
    );

    std::fs::write(&cfg, "[plugins]\ntimeout = 5\n").unwrap();
    let out = sluice(&["plugin", "list", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: unknown key `plugins.timeout`", cfg.display())),
        "{err}"
    );
}

#[test]
fn plugin_list_shows_order_hooks_and_hashes() {
    let out = sluice(&[
        "plugin",
        "list",
        "--json",
        "--config",
        "tests/golden/replay/sluice.toml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sender-gate", "tagger", "delivery-notes"]);
    assert_eq!(rows[1]["hooks"], serde_json::json!(["check-message"]));
    assert_eq!(rows[1]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(rows[1]["on_failure"], "tempfail");
}
