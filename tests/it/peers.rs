//! End to end with real mail servers: Dovecot as the mailbox (LMTP in, IMAP and POP3 out)
//! and Postfix behind and in front of Sluice. Every peer runs from a private directory on
//! loopback ports and is stopped by PID at the end (`sluice_tests::peers`).

use std::path::Path;
use std::time::Duration;

use sluice_tests::peers::{Dovecot, Postfix};
use sluice_tests::serve::Serve;
use sluice_tests::*;

/// Installs the bundled plugins into `dir/plugins`, except recipient-validation: here Dovecot
/// knows the users, and refusing unknown ones is its job (the bounce scenario needs that).
fn install_plugins(dir: &Path) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for f in std::fs::read_dir(workspace_root().join("target/plugins/bundled")).unwrap() {
        let f = f.unwrap().path();
        if f.to_string_lossy().contains("recipient-validation") {
            continue;
        }
        std::fs::copy(&f, plugins.join(f.file_name().unwrap())).unwrap();
    }
}

/// One of the deployment examples in `host/deploy/`, made to run here: `example.org`
/// becomes `domain`, listeners go to ephemeral loopback ports, paths into `dir`, the
/// certificate is the self-signed one Sluice makes, `next_hop` replaces the example's, and
/// `extra` is appended.
fn deployment(
    name: &str,
    dir: &Path,
    domain: &str,
    next_hop: (&str, &str),
    extra: &str,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("host/deploy").join(name)).unwrap();
    // The spam filter's learned state (dovecot-imapsieve/README.md) lives beside the data.
    let spam = dir.join("spam");
    std::fs::create_dir_all(&spam).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        // No certificate files here: Sluice generates a self-signed one.
        if line == "[tls]" || line.starts_with("cert = ") || line.starts_with("key = ") {
            continue;
        }
        let line = line
            .replace("0.0.0.0:587", "127.0.0.1:0")
            .replace("0.0.0.0:465", "127.0.0.1:0")
            .replace("0.0.0.0:25", "127.0.0.1:0")
            .replace(next_hop.0, next_hop.1)
            .replace("/var/lib/sluice-spam", &spam.display().to_string())
            .replace("/var/lib/sluice", &dir.display().to_string())
            .replace("example.org", domain);
        out.push_str(&line);
        out.push('\n');
        if line == "[plugins]" {
            let cache = workspace_root().join("target/test-compile-cache");
            out.push_str(&format!("cache_dir = {cache:?}\nrescan_secs = 1\n"));
        }
    }
    out.push_str(extra);
    let cfg = dir.join("sluice.toml");
    std::fs::write(&cfg, out).unwrap();
    cfg
}

/// `host/deploy/submission-dovecot.toml` for `dove.test`, delivering to `dovecot`.
fn sluice_config(dir: &Path, dovecot: &Dovecot, extra: &str) -> std::path::PathBuf {
    let lmtp = format!("127.0.0.1:{}", dovecot.lmtp);
    deployment(
        "submission-dovecot.toml",
        dir,
        "dove.test",
        ("127.0.0.1:24", &lmtp),
        extra,
    )
}

async fn passwd(cfg: &Path, user: &str, password: &str) {
    let mut cmd = tokio::process::Command::new(sluice_bin());
    cmd.args(["passwd", user, "--config"])
        .arg(cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
}

/// Reads `user`'s INBOX over IMAPS and POP3S until it holds `n` messages (bounded: 20 s);
/// prints each message once, as IMAP gave it, separated by a marker line; checks POP3
/// returns the same bytes.
const READ_BACK: &str = r#"
import imaplib, os, poplib, ssl, sys, time
ctx = ssl._create_unverified_context()
user, pw, n = os.environ["USER_ADDR"], os.environ["USER_PW"], int(os.environ["N"])
deadline = time.time() + 20
while True:
    c = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=ctx)
    c.login(user, pw)
    typ, data = c.select("INBOX", readonly=True)
    count = int(data[0])
    if count >= n or time.time() > deadline:
        break
    c.logout()
    time.sleep(0.2)
msgs = []
for i in range(1, count + 1):
    typ, d = c.fetch(str(i), "(RFC822)")
    msgs.append(d[0][1])
c.logout()
p = poplib.POP3_SSL("127.0.0.1", int(os.environ["POP3S"]), context=ctx)
p.user(user)
p.pass_(pw)
assert p.stat()[0] == count, (p.stat(), count)
for i in range(1, count + 1):
    lines = p.retr(i)[1]
    pop = b"\r\n".join(lines) + b"\r\n"
    assert pop == msgs[i - 1], "POP3 and IMAP disagree on message %d" % i
p.quit()
for m in msgs:
    sys.stdout.write(m.decode("utf-8", "replace"))
    sys.stdout.write("\n=====END=====\n")
"#;

async fn mailbox(d: &Dovecot, user: &str, pw: &str, n: usize) -> Vec<String> {
    let out = python(
        READ_BACK,
        &[
            ("USER_ADDR", user.to_string()),
            ("USER_PW", pw.to_string()),
            ("N", n.to_string()),
            ("IMAPS", d.imaps.to_string()),
            ("POP3S", d.pop3s.to_string()),
        ],
    )
    .await;
    out.split("\n=====END=====\n")
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// The body of a message (after the first blank line).
fn body(m: &str) -> &str {
    m.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[tokio::test]
async fn submission_with_starttls_and_implicit_tls_to_dovecot_read_back_over_imap_and_pop3() {
    let dovecot = Dovecot::start(&[("bob@dove.test", "bobpw"), ("alice@dove.test", "alicepw")]);
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let cfg = sluice_config(dir.path(), &dovecot, "");
    passwd(&cfg, "alice", "wonderland").await;
    let s = Serve::start(&cfg).await;
    let body_text = "Hello Bob,\r\n\r\nthe quarterly figures are attached in spirit.\r\n.leading dot survives\r\nAlice\r\n";

    // swaks over port-587-style STARTTLS with AUTH, and over implicit TLS.
    for (port, tls, subject) in [
        (s.submission.unwrap(), "--tls", "by swaks over STARTTLS"),
        (
            s.smtps.unwrap(),
            "--tls-on-connect",
            "by swaks over implicit TLS",
        ),
    ] {
        let out = run_client(
            tokio::process::Command::new("swaks")
                .args(["--server", &port.to_string(), tls])
                .args([
                    "--auth",
                    "PLAIN",
                    "--auth-user",
                    "alice",
                    "--auth-password",
                    "wonderland",
                ])
                .args(["--from", "alice@dove.test", "--to", "bob@dove.test"])
                .args([
                    "--header",
                    &format!("Subject: {subject}"),
                    "--body",
                    "Sent by swaks.",
                ]),
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // smtplib over implicit TLS, a message whose body we compare byte for byte.
    python(
        r#"
import os, smtplib, ssl
msg = "From: alice@dove.test\r\nTo: bob@dove.test\r\nSubject: by smtplib\r\nMessage-ID: <e2e-1@dove.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n" + os.environ["BODY"]
with smtplib.SMTP_SSL("127.0.0.1", int(os.environ["PORT"]), context=ssl._create_unverified_context()) as c:
    c.login("alice", "wonderland")
    c.sendmail("alice@dove.test", ["bob@dove.test"], msg.encode())
"#,
        &[
            ("PORT", s.smtps.unwrap().port().to_string()),
            ("BODY", body_text.to_string()),
        ],
    )
    .await;

    let mail = mailbox(&dovecot, "bob@dove.test", "bobpw", 3).await;
    assert_eq!(mail.len(), 3, "{mail:?}\n{}", dovecot.log());
    for subject in ["by swaks over STARTTLS", "by swaks over implicit TLS"] {
        let m = mail
            .iter()
            .find(|m| m.contains(&format!("Subject: {subject}")))
            .unwrap();
        assert!(m.contains("by mail.dove.test (Sluice) with ESMTPSA"), "{m}");
    }
    let sm = mail
        .iter()
        .find(|m| m.contains("Subject: by smtplib"))
        .unwrap();
    assert!(
        sm.contains("by mail.dove.test (Sluice) with ESMTPSA"),
        "{sm}"
    );
    assert!(sm.contains("(authenticated as alice)"), "{sm}");
    // An authenticated user's own mail is not judged as spam (scoring.authenticated = off).
    assert!(!sm.contains("\r\nX-Spam-"), "{sm}");
    assert_eq!(body(sm), body_text);
}

#[tokio::test]
async fn a_bounce_round_trip_through_dovecot_uses_the_bounce_template() {
    let dovecot = Dovecot::start(&[("alice@dove.test", "alicepw")]);
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let cfg = sluice_config(dir.path(), &dovecot, "");
    passwd(&cfg, "alice", "wonderland").await;
    let s = Serve::start(&cfg).await;
    python(
        r#"
import os, smtplib, ssl
msg = b"From: alice@dove.test\r\nTo: nobody@dove.test\r\nSubject: to nobody\r\nMessage-ID: <e2e-bounce@dove.test>\r\n\r\nIs anyone there?\r\n"
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.starttls(context=ssl._create_unverified_context())
    c.login("alice", "wonderland")
    c.sendmail("alice@dove.test", ["nobody@dove.test"], msg)
"#,
        &[("PORT", s.submission.unwrap().port().to_string())],
    )
    .await;
    // Dovecot refuses nobody@ over LMTP; Sluice bounces to alice, into her Dovecot INBOX.
    let mail = mailbox(&dovecot, "alice@dove.test", "alicepw", 1).await;
    assert_eq!(mail.len(), 1, "{}", dovecot.log());
    // The text part is quoted-printable: undo its soft line breaks.
    let dsn = &mail[0].replace("=\r\n", "");
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(dsn.contains("Your message could not be delivered"), "{dsn}");
    assert!(dsn.contains("nobody@dove.test"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Subject: to nobody"), "{dsn}");
}

#[tokio::test]
async fn sluice_filters_in_front_of_postfix_spam_is_tagged_ham_arrives_untouched() {
    let postfix = Postfix::start(
        "myhostname = pf.test\nvirtual_mailbox_domains = pf.test\nvirtual_mailbox_maps = inline:{ bob@pf.test=bob/Maildir/ }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let pf = format!("127.0.0.1:{}", postfix.smtp);
    let cfg = deployment(
        "filter-in-front.toml",
        dir.path(),
        "pf.test",
        ("10.0.0.25:25", &pf),
        "",
    );
    let s = Serve::start(&cfg).await;
    let corpus = workspace_root().join("../shared/corpus/spamassassin");
    let ham =
        std::fs::read(corpus.join("ham/sa-easy_ham-00001.7c53336b37003a9286aba55d2945844c.eml"))
            .unwrap();
    let spam =
        std::fs::read(corpus.join("spam/sa-spam-00001.7848dde101aa985090474a91ec93fcf0.eml"))
            .unwrap();
    let said = python(
        r#"
import os, smtplib
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    for name in ("HAM", "SPAM"):
        raw = open(os.environ[name], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        try:
            c.sendmail("sender@example.net", ["bob@pf.test"], raw)
            print(name, "accepted")
        except smtplib.SMTPDataError as e:
            print(name, "refused", e.smtp_code)
"#,
        &[
            ("PORT", s.smtp.port().to_string()),
            (
                "HAM",
                corpus
                    .join("ham/sa-easy_ham-00001.7c53336b37003a9286aba55d2945844c.eml")
                    .display()
                    .to_string(),
            ),
            (
                "SPAM",
                corpus
                    .join("spam/sa-spam-00001.7848dde101aa985090474a91ec93fcf0.eml")
                    .display()
                    .to_string(),
            ),
        ],
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..200 {
        got = postfix.delivered("bob");
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let crlf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    let ham_body = crlf(&ham);
    let ham_body = ham_body.split_once("\n\n").unwrap().1;
    let spam_subject = crlf(&spam)
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap()
        .to_string();
    let ham_in = got
        .iter()
        .find(|m| m.replace("\r\n", "\n").ends_with(ham_body))
        .unwrap_or_else(|| {
            panic!(
                "ham did not arrive untouched in Postfix: {got:?}\n{}",
                postfix.log()
            )
        });
    assert!(ham_in.contains("X-Spam-Status: No"), "{ham_in}");
    // The spam was either refused by Sluice or arrived tagged.
    assert!(said.contains("HAM accepted"), "{said}");
    if said.contains("SPAM accepted") {
        let sp = got
            .iter()
            .find(|m| m.contains(&spam_subject))
            .unwrap_or_else(|| panic!("accepted spam did not arrive: {got:?}"));
        assert!(sp.contains("X-Spam-Status: Yes"), "{sp}");
    } else {
        assert!(said.contains("SPAM refused 550"), "{said}");
        assert!(!got.iter().any(|m| m.contains(&spam_subject)));
    }
}

#[tokio::test]
async fn postfix_in_front_relays_a_batch_through_sluice_into_dovecot_and_a_plugin_dropped_in_applies()
 {
    let dovecot = Dovecot::start(&[("bob@dove.test", "bobpw")]);
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let cfg = sluice_config(dir.path(), &dovecot, "");
    let s = Serve::start(&cfg).await;
    let postfix = Postfix::start(&format!(
        "myhostname = relay.test\nrelay_domains = dove.test\nrelayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = encrypt\nsmtp_tls_loglevel = 1\n",
        s.smtp.port()
    ));
    let n = 12;
    send_batch(postfix.smtp, 0, n / 2).await;
    // Scenario 5: a plugin dropped into Sluice's plugin directory while the batch flows.
    let plugins = dir.path().join("plugins");
    std::fs::copy(
        plugin("test", "tagger"),
        plugins.join(".50-tagger.wasm.tmp"),
    )
    .unwrap();
    std::fs::rename(
        plugins.join(".50-tagger.wasm.tmp"),
        plugins.join("50-tagger.wasm"),
    )
    .unwrap();
    let log = cfg.with_extension("log");
    for _ in 0..100 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("msg=\"plugin added\" plugin=tagger")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_batch(postfix.smtp, n / 2, n).await;

    let mail = mailbox(&dovecot, "bob@dove.test", "bobpw", n).await;
    assert_eq!(mail.len(), n, "{}\n{}", postfix.log(), dovecot.log());
    let mut ids: Vec<&str> = mail
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Message-ID:") || l.starts_with("Message-Id:"))
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each message exactly once");
    for m in &mail {
        // Postfix's own client negotiated STARTTLS with Sluice.
        assert!(m.contains("by mail.dove.test (Sluice) with ESMTPS"), "{m}");
    }
    let tagged = |i: usize| {
        mail.iter()
            .find(|m| m.contains(&format!("Subject: batch {i}\r\n")))
            .is_some_and(|m| m.contains("X-Tagged: yes"))
    };
    assert!(
        !tagged(0),
        "a message before the plugin was dropped in is tagged"
    );
    assert!(
        tagged(n - 1),
        "a message after the plugin was dropped in is not tagged"
    );
    let plog = postfix.log();
    assert!(
        !plog.contains("status=deferred") && !plog.contains("status=bounced"),
        "{plog}"
    );
    assert!(plog.contains("status=sent"), "{plog}");
}

/// Submits messages `from..to` of the batch to Postfix (8BITMIME bodies).
async fn send_batch(port: u16, from: usize, to: usize) {
    python(
        r#"
import os, smtplib
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    for i in range(int(os.environ["FROM"]), int(os.environ["TO"])):
        msg = "From: carol@relay.test\r\nTo: bob@dove.test\r\nSubject: batch %d\r\nMessage-ID: <batch-%d@relay.test>\r\n\r\nMessage number %d, caf\xc3\xa9 8bit.\r\n" % (i, i, i)
        c.sendmail("carol@relay.test", ["bob@dove.test"], msg.encode("latin-1"), mail_options=["BODY=8BITMIME"])
"#,
        &[
            ("PORT", port.to_string()),
            ("FROM", from.to_string()),
            ("TO", to.to_string()),
        ],
    )
    .await;
}

/// Dovecot's IMAPSieve set up from `host/deploy/dovecot-imapsieve/` (paths moved into the test
/// directories, the learner pointed at this build and `cfg`).
fn imapsieve(dovecot_dir: &Path, drop: &Path) -> String {
    let deploy = workspace_root().join("host/deploy/dovecot-imapsieve");
    let sieve = dovecot_dir.join("sieve");
    let pipe = dovecot_dir.join("sieve-pipe");
    std::fs::create_dir_all(&sieve).unwrap();
    std::fs::create_dir_all(&pipe).unwrap();
    for f in ["sluice-learn-spam.sieve", "sluice-learn-ham.sieve"] {
        std::fs::copy(deploy.join(f), sieve.join(f)).unwrap();
    }
    // Dovecot's mail user runs the learner and the binary: a copy beside the script, since
    // the build's own directory may sit under a private one (a clone in root's home).
    let bin = pipe.join("sluice");
    std::fs::copy(sluice_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let learner = std::fs::read_to_string(deploy.join("sluice-learn"))
        .unwrap()
        .replace("/usr/local/bin/sluice", &bin.display().to_string())
        .replace("/var/lib/sluice-spam/drop", &drop.display().to_string());
    std::fs::write(pipe.join("sluice-learn"), learner).unwrap();
    std::fs::set_permissions(
        pipe.join("sluice-learn"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let learn = std::fs::read_to_string(deploy.join("90-sluice-learn.conf"))
        .unwrap()
        .replace("/etc/dovecot/", &format!("{}/", dovecot_dir.display()));
    // A Trash by special use but not by name, as Outlook and Apple Mail name theirs.
    format!(
        "{learn}\nnamespace inbox {{\n  inbox = yes\n  mailbox Bin {{\n    special_use = \\Trash\n  }}\n}}\n"
    )
}

/// The learning directories as the Dovecot README lays them out: `spam/` Sluice's (root's
/// here), `spam/drop` mode 1730 with the mail user's group; the scripts compiled ahead (the
/// mail user may not write there).
fn learning_layout(dir: &Path, dovecot: &Dovecot) {
    let drop = dir.join("spam/drop");
    std::fs::create_dir_all(&drop).unwrap();
    sluice_tests::peers::chown(&drop, "root:mail");
    std::fs::set_permissions(&drop, std::os::unix::fs::PermissionsExt::from_mode(0o1730)).unwrap();
    // The mail user reaches the drop directory (and the binary) through these.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ok = std::process::Command::new("sievec")
        .arg("-c")
        .arg(dovecot.dir.path().join("dovecot.conf"))
        .arg(dovecot.dir.path().join("sieve"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "sievec failed (is dovecot-sieve installed?)");
}

/// Moves the message with `message_id` from `from` to `to` over IMAPS (creating `to`).
const MOVE: &str = r#"
import imaplib, os, ssl
c = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=ssl._create_unverified_context())
c.login(os.environ["USER_ADDR"], os.environ["USER_PW"])
c.create(os.environ["TO"])
typ, _ = c.select(os.environ["FROM"])
assert typ == "OK"
typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", os.environ["MID"])
uids = data[0].split()
assert len(uids) == 1, data
typ, data = c.uid("MOVE", uids[0], os.environ["TO"])
assert typ == "OK", data
c.logout()
"#;

/// Moves `user`'s message with Message-ID `mid` from `from` to `to` over IMAPS ([`MOVE`]).
async fn move_message(d: &Dovecot, user: &str, pw: &str, mid: &str, from: &str, to: &str) {
    python(
        MOVE,
        &[
            ("IMAPS", d.imaps.to_string()),
            ("USER_ADDR", user.to_string()),
            ("USER_PW", pw.to_string()),
            ("FROM", from.to_string()),
            ("TO", to.to_string()),
            ("MID", mid.to_string()),
        ],
    )
    .await;
}

/// The X-Spam-Score and X-Spam-Status of the message with `message_id` in `user`'s INBOX.
async fn spam_score_of(
    d: &Dovecot,
    user: &str,
    pw: &str,
    message_id: &str,
    n: usize,
) -> (f64, String) {
    let m = mailbox(d, user, pw, n)
        .await
        .into_iter()
        .find(|m| m.contains(message_id))
        .unwrap_or_else(|| panic!("{message_id} not in the INBOX of {user}"));
    let header = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {m}"))
            .trim()
            .to_string()
    };
    (
        header("X-Spam-Score:").parse().unwrap(),
        header("X-Spam-Status:"),
    )
}

async fn send_offer(port: u16, id: &str, subject: &str) {
    python(
        r#"
import os, smtplib, email.utils
msg = ("From: Deals Desk <deals@shop.example>\r\nTo: bob@dove.test\r\n"
       "Subject: " + os.environ["SUBJECT"] + "\r\nDate: " + email.utils.formatdate() + "\r\n"
       "Message-ID: <" + os.environ["ID"] + "@shop.example>\r\nMIME-Version: 1.0\r\n"
       "Content-Type: text/plain; charset=utf-8\r\n\r\n"
       "Our summer catalogue is here: garden furniture, barbecue sets and parasols at members'\r\n"
       "prices until the end of the month. Free delivery on orders over fifty pounds.\r\n"
       "Browse the catalogue and order online today.\r\n")
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT"])) as c:
    c.sendmail("deals@shop.example", ["bob@dove.test"], msg.encode())
"#,
        &[
            ("PORT", port.to_string()),
            ("ID", id.to_string()),
            ("SUBJECT", subject.to_string()),
        ],
    )
    .await;
}

/// Polls (bounded: 20 s) until the learner's log holds a file with `suffix`.
async fn learned_log_has(dir: &Path, suffix: &str, dovecot: &Dovecot) {
    for _ in 0..200 {
        let found = std::fs::read_dir(dir.join("spam/learned-messages"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
            })
            .unwrap_or(false);
        if found {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "nothing learned as {suffix} within 20 s; Dovecot's log:\n{}",
        dovecot.log()
    );
}

#[tokio::test]
async fn moving_mail_into_junk_over_imap_teaches_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let drop_dir = dir.path().join("spam/drop");
    let dovecot = Dovecot::start_with(&[("bob@dove.test", "bobpw")], |d| imapsieve(d, &drop_dir));
    let cfg = sluice_config(dir.path(), &dovecot, "");
    // Dovecot runs the learner as its mail user: it only hands messages over into the drop
    // directory, and `sluice serve` collects them (host/deploy/dovecot-imapsieve/README.md).
    learning_layout(dir.path(), &dovecot);
    let s = Serve::start(&cfg).await;
    let port = s.smtp.port();

    send_offer(port, "before", "Summer catalogue for members").await;
    send_offer(port, "junk", "Members' prices on garden furniture").await;
    let (before, _) = spam_score_of(
        &dovecot,
        "bob@dove.test",
        "bobpw",
        "<before@shop.example>",
        2,
    )
    .await;
    assert!(before < 5.0, "the shipped model lets it through: {before}");

    // Bob moves one into Junk: Dovecot pipes it to `sluice spam submit --spam`.
    let moved = |from: &'static str, to: &'static str| {
        move_message(
            &dovecot,
            "bob@dove.test",
            "bobpw",
            "<junk@shop.example>",
            from,
            to,
        )
    };
    moved("INBOX", "Junk").await;
    learned_log_has(dir.path(), ".spam", &dovecot).await;

    // The next similar message scores higher, with no reload of Sluice.
    send_offer(port, "after", "Summer catalogue for members").await;
    let (after, status) = spam_score_of(
        &dovecot,
        "bob@dove.test",
        "bobpw",
        "<after@shop.example>",
        2,
    )
    .await;
    eprintln!("similar message: {before} before Bob's move to Junk, {after} after");
    assert!(after >= before + 5.0, "{before} -> {after}");
    assert!(status.contains("SITE_LEARNED"), "{status}");

    // Moved back out of Junk: relabelled as ham (not counted twice), and similar mail scores
    // as ham, more surely than before Bob said anything.
    moved("Junk", "INBOX").await;
    learned_log_has(dir.path(), ".ham", &dovecot).await;
    send_offer(port, "back", "Summer catalogue for members").await;
    let (back, status) =
        spam_score_of(&dovecot, "bob@dove.test", "bobpw", "<back@shop.example>", 4).await;
    eprintln!("moved back out of Junk: {back}");
    assert!(back < before, "{before} vs {back}: {status}");
    let log: Vec<String> = std::fs::read_dir(dir.path().join("spam/learned-messages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(log.len(), 1, "one message, relabelled: {log:?}");

    // Spam moved out of Junk into the Trash says nothing about it, whatever the Trash is
    // called: `Bin` has the \Trash special use.
    move_message(
        &dovecot,
        "bob@dove.test",
        "bobpw",
        "<back@shop.example>",
        "INBOX",
        "Junk",
    )
    .await;
    let count = |suffix: &str| {
        std::fs::read_dir(dir.path().join("spam/learned-messages"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(suffix)
            })
            .count()
    };
    for _ in 0..200 {
        if count(".spam") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(".spam"), 1, "the second message was learned as spam");
    move_message(
        &dovecot,
        "bob@dove.test",
        "bobpw",
        "<back@shop.example>",
        "Junk",
        "Bin",
    )
    .await;
    // Two collection intervals and more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        (count(".spam"), count(".ham")),
        (1, 1),
        "nothing relabelled by the move to Bin"
    );
    drop(s);
}

/// APPENDs `N` distinct offers into `USER_ADDR`'s Junk over IMAPS; prints the seconds taken.
const FLOOD: &str = r#"
import imaplib, os, ssl, time
c = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=ssl._create_unverified_context())
c.login(os.environ["USER_ADDR"], os.environ["USER_PW"])
c.create("Junk")
n = int(os.environ["N"])
t0 = time.time()
for i in range(n):
    m = ("From: seller%d@shop%d.example\r\nTo: bob@dove.test\r\nSubject: offer %d: cheap pills\r\n"
         "Message-ID: <flood%d@shop.example>\r\n\r\nBuy item %d now, only %d left.\r\n") % (i, i % 50, i, i, i, i * 7919 % 1000)
    typ, data = c.append("Junk", None, None, m.encode())
    assert typ == "OK", data
print("%.3f" % (time.time() - t0))
c.logout()
"#;

/// APPENDs one message to `USER_ADDR`'s INBOX (Message-ID `MID`, Subject `SUBJECT`).
const APPEND_ONE: &str = r#"
import imaplib, os, ssl
c = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=ssl._create_unverified_context())
c.login(os.environ["USER_ADDR"], os.environ["USER_PW"])
m = "From: news@club.example\r\nTo: carol@dove.test\r\nSubject: %s\r\nMessage-ID: %s\r\n\r\nMembers only.\r\n" % (os.environ["SUBJECT"], os.environ["MID"])
typ, data = c.append("INBOX", None, None, m.encode())
assert typ == "OK", data
c.logout()
"#;

/// The messages in the site's log (their first bytes), waiting until the drop directory is
/// empty (bounded: 60 s).
async fn log_after_collection(dir: &Path) -> Vec<String> {
    for _ in 0..600 {
        let pending = std::fs::read_dir(dir.join("spam/drop"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        if pending == 0 {
            // One more collection interval: the last batch may still be retraining.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            return std::fs::read_dir(dir.join("spam/learned-messages"))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the drop directory was not collected within 60 s");
}

/// One user cannot steer or stall the site's model: 2,000 APPENDs into Junk by Bob are
/// handed over at once each, but only his daily quota is learned, the log stays within its
/// cap (the oldest forgotten), and Carol's one move into Junk still applies.
#[tokio::test]
async fn one_user_flooding_junk_cannot_steer_or_stall_learning() {
    let dir = tempfile::tempdir().unwrap();
    install_plugins(dir.path());
    let drop_dir = dir.path().join("spam/drop");
    let dovecot = Dovecot::start_with(
        &[("bob@dove.test", "bobpw"), ("carol@dove.test", "carolpw")],
        |d| imapsieve(d, &drop_dir),
    );
    let cfg = sluice_config(dir.path(), &dovecot, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_per_user_per_day = 200", "max_per_user_per_day = 100")
        .replace("max_messages = 10000", "max_messages = 60");
    assert!(text.contains("max_messages = 60"), "{text}");
    std::fs::write(&cfg, text).unwrap();
    learning_layout(dir.path(), &dovecot);
    let s = Serve::start(&cfg).await;

    let n = 2000;
    let mut flood = tokio::process::Command::new("python3");
    flood
        .arg("-c")
        .arg(FLOOD)
        .env("IMAPS", dovecot.imaps.to_string())
        .env("USER_ADDR", "bob@dove.test")
        .env("USER_PW", "bobpw")
        .env("N", n.to_string())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), flood.output())
        .await
        .expect("2,000 APPENDs within 10 minutes")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let log = log_after_collection(dir.path()).await;
    eprintln!(
        "{n} APPENDs into Junk in {secs:.1} s: {:.1} ms per APPEND with its hand-over; the log holds {} messages",
        secs * 1000.0 / f64::from(n),
        log.len()
    );
    assert!(
        log.len() <= 60,
        "the log keeps at most max_messages: {}",
        log.len()
    );
    assert!(!log.is_empty(), "Bob's quota's worth was learned");
    // His first 100 (the quota) were learned, and the log kept the newest 60 of them.
    let offers: Vec<u32> = log
        .iter()
        .map(|m| {
            let at = m.find("Subject: offer ").expect("only Bob's offers") + 15;
            m[at..].split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        offers.iter().all(|i| (40..100).contains(i)),
        "past the quota nothing is learned, and the oldest go first: {offers:?}"
    );

    // Carol's move into Junk is learned despite Bob's flood.
    python(
        APPEND_ONE,
        &[
            ("IMAPS", dovecot.imaps.to_string()),
            ("USER_ADDR", "carol@dove.test".to_string()),
            ("USER_PW", "carolpw".to_string()),
            ("SUBJECT", "Carol's club news".to_string()),
            ("MID", "<carol@club.example>".to_string()),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    move_message(
        &dovecot,
        "carol@dove.test",
        "carolpw",
        "<carol@club.example>",
        "INBOX",
        "Junk",
    )
    .await;
    let mut learned = false;
    for _ in 0..300 {
        let log: Vec<String> = std::fs::read_dir(dir.path().join("spam/learned-messages"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned()
            })
            .collect();
        if log.iter().any(|m| m.contains("Carol's club news")) {
            assert!(log.len() <= 60, "{}", log.len());
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        learned,
        "Carol's message was not learned within 30 s; Dovecot's log:\n{}",
        dovecot.log()
    );
    eprintln!(
        "Carol's move into Junk was in the site's log {:.2} s later",
        started.elapsed().as_secs_f64()
    );
    drop(s);
}
