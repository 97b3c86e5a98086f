//! Plugin authoring without traps, as a new author meets them on the command line: the naming
//! rule's warnings, stages ended before later plugins made visible, errors that say what to do,
//! and `plugin check` leaving the directory it runs in alone.

use std::path::Path;
use std::process::{Command, Output};

use sluice_tests::*;

/// Runs `sluice ARGS` in `cwd` with its own cache home.
fn sluice_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .current_dir(cwd)
        .env("XDG_CACHE_HOME", cwd.join("user-cache"))
        .env("SLUICE_LOG", "error")
        .output()
        .expect("sluice runs")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn a_file_name_that_disagrees_with_the_plugins_own_name_is_warned_about_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    // cargo names the file after the crate with underscores; the plugin calls itself
    // `test-tagger` (its package name).
    std::fs::copy(
        plugin("test", "tagger"),
        dir.path().join("test_tagger.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("m.eml"), message("hello", "body")).unwrap();
    let check = |config: &str, file: &str| {
        std::fs::write(dir.path().join("sluice.toml"), config).unwrap();
        sluice_in(
            dir.path(),
            &[
                "plugin",
                "check",
                "--config",
                "sluice.toml",
                "--plugin",
                file,
                "--rcpt",
                "b@example.org",
                "m.eml",
            ],
        )
    };
    // Without settings for it, the mismatch is a warning.
    let out = check("", "./test_tagger.wasm");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("runs as \"test_tagger\", its file name, but calls itself \"test-tagger\"")
            && err.contains("rename the file to test-tagger.wasm"),
        "{err}"
    );
    // With settings under its own name, which would not apply, it is refused, as `sluice
    // serve`, reloads and the directory watcher refuse it.
    let settings = "[plugin.test-tagger.config]\ntag = \"mine\"\n";
    let out = check(settings, "./test_tagger.wasm");
    assert!(!out.status.success(), "ran without its settings");
    let err = text(&out.stderr);
    assert!(
        err.contains("runs as \"test_tagger\", its file name, but calls itself \"test-tagger\", and the settings are in [plugin.test-tagger], which does not apply to it (a plugin is named after its file): rename the file to test-tagger.wasm (or NN-test-tagger.wasm), or move the settings to [plugin.test_tagger]"),
        "{err}"
    );
    // `plugin check` made no `sluice-data` here; its compile cache went to the user's cache.
    assert!(!dir.path().join("sluice-data").exists());
    assert!(dir.path().join("user-cache/sluice").is_dir());

    // Named after its own name, the file gets its settings and no warning.
    std::fs::rename(
        dir.path().join("test_tagger.wasm"),
        dir.path().join("20-test-tagger.wasm"),
    )
    .unwrap();
    let out = check(settings, "./20-test-tagger.wasm");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("\"mine\""));
}

#[test]
fn a_section_that_matches_no_plugin_file_is_warned_about_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(plugin("test", "tagger"), plugins.join("10-tagger.wasm")).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[plugins]\ndir = {plugins:?}\n[plugin.tagger.config]\ntag = \"x\"\n[plugin.taggr.config]\ntag = \"typo\"\n"
        ),
    )
    .unwrap();
    let out = sluice_in(dir.path(), &["check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("[plugin.taggr] in ")
            && err.contains("matches no plugin in")
            && err.contains("NN-NAME.wasm is NAME; there: tagger"),
        "{err}"
    );
    assert!(!err.contains("[plugin.tagger] in "), "{err}");
}

#[test]
fn plugin_check_shows_which_later_plugins_a_final_verdict_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.eml"), message("Forbidden fruit", "body")).unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        "[plugin.tagger.config]\nreject_word = \"forbidden\"\n",
    )
    .unwrap();
    let out = sluice_in(
        dir.path(),
        &[
            "plugin",
            "check",
            "--config",
            "sluice.toml",
            "--plugin",
            plugin("test", "tagger").to_str().unwrap(),
            "--plugin",
            plugin("test", "idle-message").to_str().unwrap(),
            "--rcpt",
            "b@example.org",
            "m.eml",
        ],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let calls = report["calls"].as_array().unwrap();
    let last = calls.last().unwrap();
    assert_eq!(last["plugin"], "tagger", "{report}");
    assert_eq!(last["decision"]["action"], "reject", "{report}");
    assert_eq!(
        last["skipped"],
        serde_json::json!(["idle-message"]),
        "{report}"
    );
}

#[test]
fn errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // A half-written plugin: say it looks truncated and how to install atomically.
    let bytes = std::fs::read(plugin("test", "tagger")).unwrap();
    std::fs::write(dir.path().join("cut.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("m.eml"), message("s", "b")).unwrap();
    let out = sluice_in(
        dir.path(),
        &[
            "plugin",
            "check",
            "--plugin",
            "./cut.wasm",
            "--rcpt",
            "b@example.org",
            "m.eml",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the file looks truncated")
            && err.contains("writing .NAME.wasm.tmp in the plugin directory and renaming it"),
        "{err}"
    );
    // A missing plugin directory names the setting.
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, "[plugins]\ndir = \"/nonexistent/plugins\"\n").unwrap();
    let out = sluice_in(
        dir.path(),
        &["plugin", "list", "--config", cfg.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("plugin directory /nonexistent/plugins ([plugins] dir in ")
            && err.contains("No such file or directory"),
        "{err}"
    );
}

/// `sluice plugin new` in each language: the folder builds outside the repository with its
/// own copy of the WIT and the SDK, and its `check.sh` (offline replay of the sample through
/// the built plugin) passes out of the box.
#[test]
fn the_scaffold_builds_and_passes_its_check_in_every_language() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    for (lang, name) in [
        ("rust", "rs-guard"),
        ("python", "py-guard"),
        ("js", "js-guard"),
    ] {
        let out = sluice_in(dir.path(), &["plugin", "new", name, "--lang", lang]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let folder = dir.path().join(name);
        let run = |script: &str| {
            Command::new(folder.join(script))
                .current_dir(&folder)
                // The repository's pinned toolchains and one shared cargo target directory.
                .env("CARGO_TARGET_DIR", root.join("target/scaffold"))
                .env("COMPONENTIZE_PY", root.join(".venv/bin/componentize-py"))
                .env(
                    "COMPONENTIZE_JS",
                    root.join("tools/js/node_modules/.bin/componentize-js"),
                )
                .env("SLUICE", sluice_bin())
                .env("XDG_CACHE_HOME", dir.path().join("user-cache"))
                // An author's build, not the test command's (which lints with clippy as the
                // compiler of the workspace's crates).
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env_remove("CLIPPY_ARGS")
                .output()
                .unwrap()
        };
        let lock = std::fs::read_to_string(folder.join("Cargo.lock")).ok();
        let built = run("build.sh");
        assert!(built.status.success(), "{lang}: {}", text(&built.stderr));
        if lang == "rust" {
            // It ships its Cargo.lock: the build resolves nothing and leaves it as it was.
            let after = std::fs::read_to_string(folder.join("Cargo.lock")).ok();
            assert!(
                lock.is_some() && lock == after,
                "the scaffold's Cargo.lock changed"
            );
            assert!(
                !text(&built.stderr).contains("Locking"),
                "{}",
                text(&built.stderr)
            );
        }
        assert!(folder.join(format!("{name}.wasm")).is_file());
        let checked = run("check.sh");
        assert!(
            checked.status.success() && text(&checked.stderr).contains("check: ok"),
            "{lang}: {}{}",
            text(&checked.stdout),
            text(&checked.stderr)
        );
        // Its own name is its file name: no naming warning.
        assert!(
            !text(&checked.stderr).contains("warning"),
            "{}",
            text(&checked.stderr)
        );
        // The check-message hook's header is in the report.
        assert!(
            text(&checked.stdout).contains(&format!("X-{name}")),
            "{}",
            text(&checked.stdout)
        );
        if lang == "python" {
            // A misspelt hook stops the build with the list of hooks (Rust and JavaScript
            // refuse it too), instead of a plugin whose hook is never called.
            let app = folder.join("app.py");
            let source = std::fs::read_to_string(&app).unwrap();
            std::fs::write(
                &app,
                source.replace("def check_recipient(", "def check_recipients("),
            )
            .unwrap();
            let refused = run("build.sh");
            assert!(!refused.status.success(), "a misspelt hook built");
            assert!(
                text(&refused.stderr).contains(
                    "check_recipients is not a hook, so Sluice would never call it: did you mean check_recipient? The hooks are: verify_sender, check_recipient, check_message, on_delivery, render_bounce"
                ),
                "{}",
                text(&refused.stderr)
            );
            std::fs::write(&app, source).unwrap();
        }
    }
    // A name that is taken, or not a plugin name, is refused by name.
    let again = sluice_in(
        dir.path(),
        &["plugin", "new", "py-guard", "--lang", "python"],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
    let bad = sluice_in(dir.path(), &["plugin", "new", "no good", "--lang", "js"]);
    assert!(
        text(&bad.stderr).contains("a plugin name is letters"),
        "{}",
        text(&bad.stderr)
    );
}

/// The Rust SDK's short form: the hooks Sluice calls are derived from the methods written, and
/// a plugin without settings needs no `new`.
#[tokio::test]
async fn a_short_form_rust_plugin_gets_exactly_the_hooks_it_writes() {
    let rt = runtime();
    let p = pipeline(
        &rt,
        &config(""),
        &[("short-form", plugin("test", "short-form"))],
    )
    .await
    .unwrap();
    assert_eq!(p.plugins()[0].hook_names(), ["check-recipient"]);
    let mut txn = p.start(&client(), "t");
    let env = envelope("a@x.test", &[]);
    match txn
        .check_recipient(&env, &rcpt("noreply@example.org"))
        .await
    {
        sluice::envelope::Decision::Reject { reply } => assert_eq!(reply.code, 550),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        txn.check_recipient(&env, &rcpt("bob@example.org")).await,
        sluice::envelope::Decision::Continue
    );
    // It takes no settings, so a setting given to it is a mistake the operator hears about at
    // load instead of a value silently ignored.
    let Err(err) = load_one(
        &rt,
        &config("[plugin.short-form.config]\nblocked = \"x\"\n"),
        "short-form",
        &plugin("test", "short-form"),
    )
    .await
    else {
        panic!("a setting for a plugin without settings is refused");
    };
    assert!(
        err.contains("setting `blocked`: this plugin takes no settings"),
        "{err}"
    );
    // Its source is the minimal Rust plugin the docs promise: at most 10 non-blank lines of
    // code (comments aside).
    let src = std::fs::read_to_string(workspace_root().join("tests/plugins/short-form/src/lib.rs"))
        .unwrap();
    let code = src
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
        .count();
    assert!(code <= 10, "{code} lines");
}

/// The JavaScript SDK's TypeScript declarations describe what the SDK exports and what hooks
/// receive: a typed plugin (`plugin-sdk-js/types-check.ts`) compiles under `tsc --strict`
/// (TypeScript from the pinned JavaScript toolchain).
#[test]
fn the_javascript_sdk_declarations_type_check_a_plugin() {
    let root = workspace_root();
    let tsc = root.join("tools/js/node_modules/.bin/tsc");
    assert!(
        tsc.is_file(),
        "{} is missing: scripts/toolchains js installs it",
        tsc.display()
    );
    let out = Command::new(tsc)
        .current_dir(&root)
        .args([
            "--noEmit", "--strict", "--module", "nodenext", "--target", "es2022",
        ])
        .arg("plugin-sdk-js/types-check.ts")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
