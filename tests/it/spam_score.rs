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

    // The built-in model judges this ham.
    let cfg = config("");
    let p = pipeline(&rt, &cfg, &[("spam-score", file.clone())])
        .await
        .unwrap();
    let env = envelope("jane@example.org", &["team@example.org"]);
    let out = p
        .start(&client(), "t")
        .check_message(&env, &message("Re: flaky test", REPLY))
        .await;
    assert!(out.symbols[0].score < -3.0, "{:?}", out.symbols);

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

/// Sends a newsletter-like message from a real client (Python's smtplib) to bob.
async fn send(addr: std::net::SocketAddr, id: &str, subject: &str, body: &str) {
    python(
        r#"
import os, smtplib, email.utils
msg = ("From: Deals Desk <deals@shop.example>\r\nTo: bob@example.org\r\n"
       "Subject: " + os.environ["SUBJECT"] + "\r\nDate: " + email.utils.formatdate() + "\r\n"
       "Message-ID: <" + os.environ["ID"] + "@shop.example>\r\nMIME-Version: 1.0\r\n"
       "Content-Type: text/plain; charset=utf-8\r\n\r\n" + os.environ["BODY"] + "\r\n")
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.sendmail("deals@shop.example", ["bob@example.org"], msg.encode())
"#,
        &[
            ("PORT", addr.port().to_string()),
            ("ID", id.to_string()),
            ("SUBJECT", subject.to_string()),
            ("BODY", body.to_string()),
        ],
    )
    .await;
}

/// The delivered message with Message-ID `<id@shop.example>`: its file and its X-Spam-Score.
fn delivered(server: &TestServer, id: &str) -> (std::path::PathBuf, f64, String) {
    let new = server.dir.path().join("maildir/bob/new");
    for entry in std::fs::read_dir(&new).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        if text.contains(&format!("<{id}@shop.example>")) {
            let score = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Spam-Score: "))
                .unwrap_or_else(|| panic!("no X-Spam-Score in {text}"))
                .trim()
                .parse()
                .unwrap();
            let status = text
                .lines()
                .find(|l| l.starts_with("X-Spam-Status: "))
                .unwrap_or_default()
                .to_string();
            return (path, score, status);
        }
    }
    panic!("<{id}@shop.example> was not delivered");
}

const OFFER: &str = "Our summer catalogue is here: garden furniture, barbecue sets and parasols \
    at members' prices until the end of the month. Free delivery on orders over fifty pounds. \
    Browse the catalogue and order online today.";

#[tokio::test]
async fn mail_learned_as_spam_moves_similar_mail_without_a_restart_and_forgetting_undoes_it() {
    let state = tempfile::tempdir().unwrap();
    let settings = format!(
        "[plugin.spam-score]\nread_dirs = [{dir:?}]\n[plugin.spam-score.config]\nlearned = {file:?}\n\
         [scoring]\nadd_headers = true\nspam_threshold = 5.0\nreject_threshold = 1000.0\n\
         [delivery]\njunk_folder = \"\"\n",
        dir = state.path(),
        file = state.path().join("learned.bin"),
    );
    // (Marked mail stays in the inbox here, where the scores are read: junk_folder = "".)
    let server = TestServer::start(
        &settings,
        &[("spam-score", plugin("bundled", "20-spam-score"))],
    )
    .await;
    // The command line reads the same settings; the base model comes from the installed plugin.
    let cli = state.path().join("sluice.toml");
    std::fs::write(
        &cli,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {:?}\n[plugins]\ndir = {:?}\n{settings}",
            server.dir.path(),
            server.dir.path().join("plugins"),
        ),
    )
    .unwrap();

    send(server.smtp, "b0", "Summer catalogue for members", OFFER).await;
    send(
        server.smtp,
        "a0",
        "Members' prices on garden furniture",
        &format!("{OFFER} Unsubscribe any time."),
    )
    .await;
    server.mailbox("bob", 2).await;
    let (_, before, _) = delivered(&server, "b0");
    let (learned_file, a_before, _) = delivered(&server, "a0");
    assert!(
        a_before < 5.0 && before < 5.0,
        "the shipped model lets these through: {a_before} {before}"
    );

    // Bob moves the first to Junk: it is learned from his mailbox, with Sluice's own Received
    // field on top.
    let out = spam_command(&["learn", "--spam", learned_file.to_str().unwrap()], &cli);
    assert!(out.contains("1 message(s) learned as spam"), "{out}");
    assert!(state.path().join("learned.bin").exists());

    // The running server scores the next similar message with what was learned.
    send(server.smtp, "b1", "Summer catalogue for members", OFFER).await;
    server.mailbox("bob", 3).await;
    let (_, after, status) = delivered(&server, "b1");
    assert!(after >= before + 5.0, "learned: {before} -> {after}");
    assert!(status.contains("SITE_LEARNED"), "{status}");

    // Learning it again changes nothing; forgetting it restores the shipped model's judgement.
    let out = spam_command(&["learn", "--spam", learned_file.to_str().unwrap()], &cli);
    assert!(
        out.contains("0 message(s) learned as spam, 1 unchanged"),
        "{out}"
    );
    let out = spam_command(&["forget", learned_file.to_str().unwrap()], &cli);
    assert!(
        out.contains("1 message(s) forgotten") && out.contains("log holds 0"),
        "{out}"
    );
    send(server.smtp, "b2", "Summer catalogue for members", OFFER).await;
    server.mailbox("bob", 4).await;
    let (_, forgotten, status) = delivered(&server, "b2");
    eprintln!("similar message: {before} before learning, {after} after, {forgotten} forgotten");
    assert!((forgotten - before).abs() < 0.05, "{before} vs {forgotten}");
    assert!(!status.contains("SITE_LEARNED"), "{status}");
    server.stop().await;
}

#[tokio::test]
async fn the_learner_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("sluice.toml");
    std::fs::write(
        &cli,
        format!("[server]\ndata_dir = {:?}\n", dir.path().join("data")),
    )
    .unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, b"Subject: x\r\n\r\nhi\r\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(sluice_bin())
            .args(["spam"])
            .args(args)
            .arg("--config")
            .arg(&cli)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["learn", "--spam", msg.to_str().unwrap()]);
    assert!(
        err.contains("learned = ") && err.contains("read_dirs"),
        "{err}"
    );
    std::fs::write(
        &cli,
        format!(
            "[server]\ndata_dir = {:?}\n[plugins]\ndir = {:?}\n[plugin.spam-score.config]\nlearned = {:?}\n",
            dir.path().join("data"),
            dir.path().join("no-plugins"),
            dir.path().join("learned.bin")
        ),
    )
    .unwrap();
    let err = run(&["learn", "--ham", msg.to_str().unwrap()]);
    assert!(err.contains("cannot read the plugin directory"), "{err}");
    let err = run(&["learn", "--ham", "--spam", msg.to_str().unwrap()]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = run(&["forget", dir.path().join("absent.eml").to_str().unwrap()]);
    assert!(err.contains("absent.eml"), "{err}");
}
