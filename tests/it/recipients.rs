//! The bundled recipient-validation plugin in a running server: users from inline config and
//! from a granted users file (edits apply to the next transaction), aliases, catch-all,
//! plus-addressing, case-insensitive domains, 550 5.1.1 for unknown users, and 421 with a
//! disconnect after too many unknown recipients.

use sluice_tests::*;

async fn server(dir: &std::path::Path) -> TestServer {
    let extra = format!(
        r#"
[plugin.recipient-validation]
read_dirs = [{dir:?}]
[plugin.recipient-validation.config]
users = ["alice@example.org"]
aliases = ["postmaster@example.org: alice@example.org"]
catch_all = ["catchall.example.org"]
users_file = {file:?}
max_unknown = 3
"#,
        file = dir.join("recipients")
    );
    TestServer::start(
        &extra,
        &[(
            "recipient-validation",
            plugin("bundled", "10-recipient-validation"),
        )],
    )
    .await
}

#[tokio::test]
async fn only_existing_recipients_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("recipients"),
        "# users of example.org\nbob@example.org\n",
    )
    .unwrap();
    let s = server(dir.path()).await;
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<x@sender.test>").await;
    c.expect("250 ").await;
    for (rcpt, want) in [
        ("alice@example.org", "250 "),
        ("Alice+lists@EXAMPLE.ORG", "250 "),
        ("bob@example.org", "250 "),
        ("postmaster@example.org", "250 "),
        ("anyone@catchall.example.org", "250 "),
        ("carol@example.org", "550 5.1.1"),
    ] {
        c.send(&format!("RCPT TO:<{rcpt}>")).await;
        let r = c.expect(want).await;
        if want.starts_with("550") {
            assert!(
                r.contains("<carol@example.org>: Recipient address rejected: User unknown"),
                "{r}"
            );
        }
    }
    c.send("QUIT").await;

    // An edit to the users file applies to the next transaction.
    std::fs::write(
        dir.path().join("recipients"),
        "bob@example.org\ncarol@example.org\n",
    )
    .unwrap();
    let mut c = Conversation::connect(s.smtp).await;
    c.send("EHLO client.test").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<x@sender.test>").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<carol@example.org>").await;
    c.expect("250 ").await;

    // Harvesting: the third unknown recipient gets 421 and the connection is closed.
    for probe in ["a1", "a2"] {
        c.send(&format!("RCPT TO:<{probe}@example.org>")).await;
        c.expect("550 5.1.1").await;
    }
    c.send("RCPT TO:<a3@example.org>").await;
    c.expect("421 4.7.0").await;
    assert!(c.closed().await, "the server closes after 421");
    s.stop().await;
}

#[tokio::test]
async fn configuration_mistakes_are_refused_at_load() {
    let rt = runtime();
    let file = plugin("bundled", "10-recipient-validation");
    let cases = [
        ("", "no domain to validate"),
        (
            "users = [\"not-an-address\"]",
            "\"not-an-address\" is not user@domain",
        ),
        (
            "aliases = [\"x@example.org\"]",
            "must be \"alias@domain: target@domain\"",
        ),
        (
            "domains = [\"example.org\"]\nplus_separator = \"++\"",
            "must be one character",
        ),
        (
            "domains = [\"example.org\"]\nusers_file = \"/etc/shadow\"",
            "grant its directory",
        ),
        ("domains = [\"example.org\"]\nmax_unkown = 3", "max_unkown"),
    ];
    for (settings, want) in cases {
        let toml = format!(
            "[plugins]\ncache_dir = {:?}\n[plugin.recipient-validation.config]\n{settings}\n",
            workspace_root().join("target/test-compile-cache")
        );
        let err = load_one(&rt, &config(&toml), "recipient-validation", &file)
            .await
            .expect_err(settings);
        assert!(err.contains(want), "{settings:?}: {err}");
    }
}
