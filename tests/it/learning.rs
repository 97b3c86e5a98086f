//! Spam learning across a privilege boundary, with real accounts (`useradd`): the mail user
//! (Dovecot's, running IMAPSieve) may only hand a message over into the drop directory with
//! `sluice spam submit`; Sluice's own account collects it and alone writes the model, its
//! log and its lock. The attacks a mail user could once make — a symbolic link where the
//! learner writes (`learned.tmp`, `learned.bin`), or in the drop directory — leave every file
//! of Sluice's untouched.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::*;

/// A system account for the test (created once, kept: `useradd` is not undone per test run),
/// as (uid, gid).
fn account(name: &str) -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        let ok = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .is_ok_and(|s| s.success());
        // Another test may have created it meanwhile.
        assert!(
            ok || id("-u").is_some(),
            "useradd {name} failed (the test runs as root)"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// Runs `program args` as (uid, gid); (success, stdout and stderr).
fn run_as(who: (u32, u32), program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .uid(who.0)
        .gid(who.1)
        .env("SLUICE_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

struct Site {
    base: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    spam: PathBuf,
    drop: PathBuf,
    secret: PathBuf,
}

/// The layout the Dovecot README gives, in a temporary directory every account may enter:
/// Sluice's data directory (0700, with a private file in it), its learning directory (0755)
/// and the drop directory (1730, group of the mail user); the binary and the spam-score
/// plugin copied there, so the accounts can run them wherever the repository is cloned.
fn site(sluice: (u32, u32), mail: (u32, u32)) -> Site {
    let base = tempfile::tempdir().unwrap();
    mode(base.path(), 0o755);
    let bin = base.path().join("sluice");
    std::fs::copy(sluice_bin(), &bin).unwrap();
    mode(&bin, 0o755);
    let plugins = base.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        plugin("bundled", "20-spam-score"),
        plugins.join("20-spam-score.wasm"),
    )
    .unwrap();
    mode(&plugins, 0o755);
    mode(&plugins.join("20-spam-score.wasm"), 0o644);
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let secret = data.join("secret");
    std::fs::write(&secret, b"private").unwrap();
    mode(&secret, 0o600);
    chown(&secret, sluice.0, sluice.1);
    mode(&data, 0o700);
    chown(&data, sluice.0, sluice.1);
    let spam = base.path().join("spam");
    std::fs::create_dir(&spam).unwrap();
    mode(&spam, 0o755);
    chown(&spam, sluice.0, sluice.1);
    let drop = spam.join("drop");
    std::fs::create_dir(&drop).unwrap();
    chown(&drop, sluice.0, mail.1);
    mode(&drop, 0o1730);
    let config = base.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.test\"\ndata_dir = {data:?}\n[plugins]\ndir = {plugins:?}\n\
             [relay]\nlocal_domains = [\"example.org\"]\n\
             [plugin.spam-score]\nread_dirs = [{spam:?}]\n\
             [plugin.spam-score.config]\nlearned = {learned:?}\n",
            learned = spam.join("learned.bin"),
        ),
    )
    .unwrap();
    mode(&config, 0o644);
    Site {
        base,
        bin,
        config,
        spam,
        drop,
        secret,
    }
}

#[test]
fn a_mail_user_cannot_make_sluice_write_through_links() {
    let sluice = account("sluicetest-srv");
    let mail = account("sluicetest-mail");
    let s = site(sluice, mail);
    let ln = Path::new("/bin/ln");

    // The mail user can no longer put anything where the learner writes.
    for name in ["learned.tmp", "learned.bin", "learned-messages"] {
        let (ok, out) = run_as(
            mail,
            ln,
            &[
                "-s",
                s.secret.to_str().unwrap(),
                s.spam.join(name).to_str().unwrap(),
            ],
        );
        assert!(!ok, "the mail user made {name} a link: {out}");
    }
    // It can hand messages over, and plant a link in the drop directory, but not list it.
    let message = s.base.path().join("offer.eml");
    std::fs::write(
        &message,
        "From: shop@offers.example\r\nSubject: cheap watches\r\n\r\nBuy now.\r\n",
    )
    .unwrap();
    mode(&message, 0o644);
    let (ok, out) = run_as(
        mail,
        &s.bin,
        &[
            "spam",
            "submit",
            "--spam",
            "--user",
            "bob@dove.test",
            "--drop",
            s.drop.to_str().unwrap(),
            message.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let planted = s.drop.join("evil.spam");
    let (ok, out) = run_as(
        mail,
        ln,
        &["-s", s.secret.to_str().unwrap(), planted.to_str().unwrap()],
    );
    assert!(
        ok,
        "creating a file in the drop directory is allowed: {out}"
    );
    let (ok, _) = run_as(mail, Path::new("/bin/ls"), &[s.drop.to_str().unwrap()]);
    assert!(!ok, "the mail user must not list the drop directory");
    // As if a link had been left where the old learner wrote its fixed temporary file.
    let old_tmp = s.spam.join("learned.tmp");
    std::os::unix::fs::symlink(&s.secret, &old_tmp).unwrap();
    chown(&old_tmp, mail.0, mail.1);

    // Sluice's account collects.
    let (ok, out) = run_as(
        sluice,
        &s.bin,
        &["spam", "collect", "--config", s.config.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(out.contains("1 message(s) learned"), "{out}");
    assert!(out.contains("a symbolic link, refused"), "{out}");

    // Sluice's private file is untouched, the model is a file of Sluice's, the link is gone.
    assert_eq!(std::fs::read(&s.secret).unwrap(), b"private");
    let meta = std::fs::metadata(&s.secret).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let learned = std::fs::symlink_metadata(s.spam.join("learned.bin")).unwrap();
    assert!(learned.is_file(), "learned.bin is a regular file");
    assert_eq!(learned.uid(), sluice.0);
    assert_eq!(learned.mode() & 0o077, 0, "readable by Sluice alone");
    assert!(
        std::fs::symlink_metadata(&planted).is_err(),
        "the planted link was removed"
    );
    let log = s.spam.join("learned-messages");
    let logged: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o077, 0);

    // The directory laid out the old way (group-writable) is refused, with the reason.
    mode(&s.spam, 0o2775);
    let (ok, _) = run_as(
        mail,
        &s.bin,
        &[
            "spam",
            "submit",
            "--ham",
            "--drop",
            s.drop.to_str().unwrap(),
            message.to_str().unwrap(),
        ],
    );
    assert!(ok);
    let (ok, out) = run_as(
        sluice,
        &s.bin,
        &["spam", "collect", "--config", s.config.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("writable by no one else"), "{out}");
}
