//! Plugins that cannot serve are refused at load with a message naming the file and reason.

use sluice_tests::*;

async fn refused(name: &str, file: &std::path::Path, toml: &str) -> String {
    let rt = runtime();
    let err = load_one(&rt, &config(toml), name, file)
        .await
        .expect_err("the plugin must be refused");
    assert!(
        err.starts_with(&format!("plugin {}: ", file.display())),
        "the message names the file: {err}"
    );
    err
}

#[tokio::test]
async fn a_file_that_is_not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junk.wasm");
    std::fs::write(&file, b"#!/bin/sh\necho not wasm\n").unwrap();
    let err = refused("junk", &file, "").await;
    assert!(
        err.ends_with("the file does not start with the WebAssembly magic bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    let err = refused("core", &file, "").await;
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[tokio::test]
async fn a_truncated_component_fails_to_compile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.wasm");
    let bytes = std::fs::read(plugin("test", "tagger")).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = refused("cut", &file, "").await;
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[tokio::test]
async fn a_plugin_for_another_wit_version() {
    let err = refused("future-version", &plugin("test", "future-version"), "").await;
    assert!(
        err.ends_with("built for sluice:filter@9.0.0, but this Sluice supports sluice:filter@0.1.0 to @0.1.4; rebuild it against the WIT in wit/"),
        "{err}"
    );
}

#[tokio::test]
async fn validate_config_refusals_carry_the_plugins_message() {
    let err = refused(
        "tagger",
        &plugin("test", "tagger"),
        "[plugin.tagger.config]\nscore = 500\n",
    )
    .await;
    assert!(
        err.ends_with("refused its configuration: setting `score`: must be between -100 and 100"),
        "{err}"
    );
    let err = refused(
        "tagger",
        &plugin("test", "tagger"),
        "[plugin.tagger.config]\nsocre = 1\n",
    )
    .await;
    assert!(
        err.contains(
            "setting `socre`: unknown setting; known settings are: tag, score, reject_word"
        ),
        "{err}"
    );
    let err = refused(
        "tagger",
        &plugin("test", "tagger"),
        "[plugin.tagger.config]\ntag = 3\n",
    )
    .await;
    assert!(
        err.contains("setting `tag`: expected a string, found the number 3"),
        "{err}"
    );
}

#[tokio::test]
async fn a_pinned_sha256_must_match() {
    let file = plugin("test", "tagger");
    let actual = {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(&file)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let wrong = "0".repeat(64);
    let err = refused(
        "tagger",
        &file,
        &format!("[plugin.tagger]\nsha256 = \"{wrong}\"\n"),
    )
    .await;
    assert!(
        err.ends_with(&format!(
            "sha256 is {actual}, but the configuration pins {wrong}"
        )),
        "{err}"
    );
    let rt = runtime();
    let cfg = config(&format!(
        "[plugin.tagger]\nsha256 = \"{}\"\n",
        actual.to_uppercase()
    ));
    let p = load_one(&rt, &cfg, "tagger", &file)
        .await
        .expect("matching hash loads");
    assert_eq!(p.sha256, actual);
}

#[tokio::test]
async fn a_missing_file() {
    let err = refused("gone", std::path::Path::new("/nonexistent/gone.wasm"), "").await;
    assert!(err.contains("cannot read the file"), "{err}");
}

#[tokio::test]
async fn a_directory_load_reports_every_refused_plugin_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("test", "tagger"), dir.path().join("20-tagger.wasm")).unwrap();
    std::fs::copy(
        plugin("test", "sender-gate"),
        dir.path().join("10-sender-gate.wasm"),
    )
    .unwrap();
    std::fs::copy(
        plugin("test", "delivery-notes"),
        dir.path().join("delivery-notes.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join(".30-partial.wasm"), b"half written").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"not a plugin").unwrap();
    let rt = runtime();
    let toml = format!("[plugins]\ndir = {:?}\n", dir.path());
    let p = sluice::pipeline::Pipeline::load(&rt, &config(&toml))
        .await
        .expect("loads");
    let names: Vec<&str> = p.plugins().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sender-gate", "tagger", "delivery-notes"]);

    let ordered = format!(
        "[plugins]\ndir = {:?}\norder = [\"delivery-notes\"]\n",
        dir.path()
    );
    let p = sluice::pipeline::Pipeline::load(&rt, &config(&ordered))
        .await
        .unwrap();
    assert_eq!(p.plugins()[0].name, "delivery-notes");

    let disabled = format!(
        "[plugins]\ndir = {:?}\n[plugin.tagger]\nenabled = false\n",
        dir.path()
    );
    let p = sluice::pipeline::Pipeline::load(&rt, &config(&disabled))
        .await
        .unwrap();
    assert_eq!(p.plugins().len(), 2);

    std::fs::write(dir.path().join("40-junk.wasm"), b"junk").unwrap();
    std::fs::copy(
        plugin("test", "future-version"),
        dir.path().join("50-future.wasm"),
    )
    .unwrap();
    // A file that is not a plugin at all is skipped with a warning; a plugin for another
    // WIT version is an error (every error is reported, not the first alone).
    std::fs::copy(
        plugin("test", "future-version"),
        dir.path().join("60-future-too.wasm"),
    )
    .unwrap();
    let errors = sluice::pipeline::Pipeline::load(&rt, &config(&toml))
        .await
        .expect_err("two plugins for another WIT version");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].contains("50-future.wasm"), "{text:?}");
    assert!(text[1].contains("60-future-too.wasm"), "{text:?}");
    std::fs::remove_file(dir.path().join("50-future.wasm")).unwrap();
    std::fs::remove_file(dir.path().join("60-future-too.wasm")).unwrap();
    let p = sluice::pipeline::Pipeline::load(&rt, &config(&toml))
        .await
        .expect("the stray file alone does not stop a load");
    assert_eq!(p.plugins().len(), 3);
    assert_eq!(p.skipped().len(), 1);
    assert!(p.skipped()[0].0.ends_with("40-junk.wasm"));
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("40-junk.wasm is not a Sluice plugin")),
        "{:?}",
        p.warnings()
    );
}
