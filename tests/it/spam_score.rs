//! The bundled spam-score plugin's configuration: an operator's model in a directory granted
//! with `read_dirs` replaces the built-in one; without the grant the sandbox cannot read it and
//! the plugin is refused with a message saying why; a file that is not a model is refused.

use sluice_tests::*;

const REPLY: &str = "I think the failure comes from the timeout in the socket test.";

fn toml(dir: &std::path::Path, model: &str, grant: bool) -> String {
    let grant = if grant {
        format!("read_dirs = [{dir:?}]\n")
    } else {
        String::new()
    };
    format!(
        "[plugins]\ncache_dir = {:?}\n[plugin.spam-score]\n{grant}[plugin.spam-score.config]\nmodel = {:?}\n",
        workspace_root().join("target/test-compile-cache"),
        dir.join(model)
    )
}

#[tokio::test]
async fn an_operator_model_in_a_granted_directory_replaces_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    // A model with every weight zero: undecided (probability 0.5) on every message.
    std::fs::write(
        dir.path().join("neutral.bin"),
        sluice_spam::model::Model::empty().to_bytes(),
    )
    .unwrap();
    let file = plugin("bundled", "20-spam-score");
    let rt = runtime();

    // The built-in model is sure this is ham.
    let cfg = config("");
    let p = pipeline(&rt, &cfg, &[("spam-score", file.clone())])
        .await
        .unwrap();
    let env = envelope("jane@example.org", &["team@example.org"]);
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("Re: flaky test", REPLY))
        .await;
    assert!(out.score < -5.0, "{:?}", out.symbols);

    // The operator's model is the one used once configured and granted.
    let cfg = config(&toml(dir.path(), "neutral.bin", true));
    let p = pipeline(&rt, &cfg, &[("spam-score", file.clone())])
        .await
        .unwrap();
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("Re: flaky test", REPLY))
        .await;
    assert_eq!(out.symbols[0].name, "STAT_50_60", "{:?}", out.symbols);
    assert!(out.symbols[0].score.abs() < 1e-6);
}

#[tokio::test]
async fn without_the_grant_or_with_a_bad_file_the_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("neutral.bin"),
        sluice_spam::model::Model::empty().to_bytes(),
    )
    .unwrap();
    std::fs::write(dir.path().join("junk.bin"), b"not a model at all").unwrap();
    let file = plugin("bundled", "20-spam-score");
    let rt = runtime();

    let err = load_one(
        &rt,
        &config(&toml(dir.path(), "neutral.bin", false)),
        "spam-score",
        &file,
    )
    .await
    .expect_err("the sandbox must not read an ungranted directory");
    assert!(
        err.contains("setting `model`: cannot read") && err.contains("read_dirs"),
        "{err}"
    );

    let err = load_one(
        &rt,
        &config(&toml(dir.path(), "junk.bin", true)),
        "spam-score",
        &file,
    )
    .await
    .expect_err("a junk model must be refused");
    assert!(err.contains("not a Sluice spam model"), "{err}");

    // The plugin starts with 8 MiB of memory (its build.rs): a smaller limit is named.
    let err = load_one(
        &rt,
        &config("[plugin.spam-score]\nmemory_mb = 4\n"),
        "spam-score",
        &file,
    )
    .await
    .expect_err("a limit below the initial memory must be refused");
    assert!(
        err.contains(
            "needs 8 MiB of memory to start, above its memory limit of 4 MiB (raise memory_mb)"
        ),
        "{err}"
    );

    let bad = sluice::config::Config::parse(
        "[plugin.spam-score]\nread_dirs = [\"relative/dir\", \"/no/such/dir\"]\n",
    )
    .unwrap()
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("plugin.spam-score.read_dirs: relative/dir must be an absolute path"),
        "{bad}"
    );
    assert!(
        bad.contains("plugin.spam-score.read_dirs: /no/such/dir is not a directory"),
        "{bad}"
    );
}
