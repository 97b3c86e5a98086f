//! The Debian package (scripts/package, built from the debug binary by the test command):
//! installed with `dpkg -i` on this machine, the unit's server run as the `sluice` user,
//! a message delivered into its Maildir, and `dpkg -r` keeping configuration and data.
//! Needs root and dpkg; it leaves the machine as it found it (purge, data, user).

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::serve::Serve;
use sluice_tests::{maildir_files, workspace_root};

const DATA: &str = "/var/lib/sluice";
/// Left in /var/lib/sluice by this test, so that a later run may clear what an interrupted
/// one left, and never an operator's data.
const MARKER: &str = "/var/lib/sluice/.sluice-package-test";

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The installed version of package `sluice`, if any (not merely its configuration left).
fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version} ${db:Status-Abbrev}", "sluice"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (version, status) = text.split_once(' ')?;
    status.starts_with("ii").then(|| version.to_string())
}

fn the_package() -> PathBuf {
    let dir = workspace_root().join("target/package");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no .deb in {}: the test command builds it (scripts/package --debug)",
                dir.display()
            )
        })
}

/// Clears what this test (or an interrupted run of it) installed; refuses to touch a package
/// or data directory that is not the test's.
fn clear(user_made_here: bool) {
    if let Some(v) = installed_version() {
        assert!(
            v.ends_with("+debug"),
            "package sluice {v} is installed on this machine: the package test would replace it"
        );
    }
    let _ = Command::new("dpkg").args(["--purge", "sluice"]).output();
    if Path::new(DATA).exists() {
        assert!(
            Path::new(MARKER).exists(),
            "{DATA} exists and was not made by this test: the package test would remove it"
        );
        std::fs::remove_dir_all(DATA).unwrap();
    }
    if user_made_here {
        let _ = Command::new("userdel").arg("sluice").output();
    }
}

#[tokio::test]
async fn the_debian_package_installs_serves_and_removes_cleanly() {
    assert!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
        "the package test installs a package: run the tests as root (scripts/test does)"
    );
    let deb = the_package();
    let user_existed = Command::new("getent")
        .args(["passwd", "sluice"])
        .output()
        .unwrap()
        .status
        .success();
    clear(false);

    run("dpkg", &["-i", deb.to_str().unwrap()]);
    std::fs::write(MARKER, "").unwrap();
    struct Cleanup(bool);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            clear(self.0);
        }
    }
    let _cleanup = Cleanup(!user_existed);

    // What the package holds, and what its maintainer scripts made.
    for f in [
        "/usr/bin/sluice",
        "/etc/sluice/sluice.toml",
        "/lib/systemd/system/sluice.service",
        "/usr/share/man/man1/sluice.1.gz",
        "/usr/share/man/man1/sluice-queue.1.gz",
        "/usr/share/doc/sluice/README.md",
    ] {
        assert!(Path::new(f).is_file(), "{f} installed");
    }
    let bundled: Vec<String> = std::fs::read_dir("/usr/lib/sluice/plugins")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    assert!(
        bundled.iter().any(|n| n.ends_with("spam-score.wasm")),
        "{bundled:?}"
    );
    assert!(Path::new("/usr/lib/sluice/plugins/optional/30-greylisting.wasm").is_file());
    let linked = std::fs::read_dir(format!("{DATA}/plugins"))
        .unwrap()
        .count();
    assert_eq!(
        linked,
        bundled.len(),
        "bundled plugins linked into the plugin directory"
    );
    let owner = run("stat", &["-c", "%U:%G %a", DATA]);
    assert_eq!(owner.trim(), "sluice:sluice 750");
    let page = run("zcat", &["/usr/share/man/man1/sluice.1.gz"]);
    assert!(page.contains(".TH sluice 1"), "a manual page: {page:.200}");
    assert!(page.contains("check\\-config"), "listing the commands");

    // The unit's lines, as systemd would run them: ExecStartPre, then ExecStart as User=
    // with its ambient capability, the listeners moved to ephemeral loopback ports.
    let unit = std::fs::read_to_string("/lib/systemd/system/sluice.service").unwrap();
    let line = |key: &str| -> Vec<String> {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in the unit"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(unit.contains("User=sluice\n"));
    let as_sluice = |argv: &[String]| {
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args([
            "--reuid=sluice",
            "--regid=sluice",
            "--init-groups",
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
            "--",
        ])
        .args(argv)
        // systemd sets HOME from the user's entry.
        .env("HOME", DATA);
        cmd
    };
    let pre = line("ExecStartPre=");
    let out = as_sluice(&pre).output().await.unwrap();
    assert!(
        out.status.success(),
        "{pre:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let installed = std::fs::read_to_string("/etc/sluice/sluice.toml").unwrap();
    let loopback = installed
        .replace("\"0.0.0.0:25\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:587\"", "\"127.0.0.1:0\"");
    assert_ne!(loopback, installed, "the listeners of the installed file");
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, loopback).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let argv: Vec<String> = line("ExecStart=")
        .into_iter()
        .map(|a| {
            if a == "/etc/sluice/sluice.toml" {
                cfg.display().to_string()
            } else {
                a
            }
        })
        .collect();
    assert!(argv.contains(&cfg.display().to_string()), "{argv:?}");
    let mut server = Serve::start_command(as_sluice(&argv), &cfg).await;

    let reply = sluice_tests::python(
        "import os, smtplib\n\
         s = smtplib.SMTP('127.0.0.1', int(os.environ['PORT']))\n\
         print(s.sendmail('me@example.com', ['bob@localhost'], 'Subject: packaged\\r\\n\\r\\nHi Bob\\r\\n'))\n\
         s.quit()\n",
        &[("PORT", server.smtp.port().to_string())],
    )
    .await;
    assert_eq!(reply.trim(), "{}", "every recipient accepted");
    let new = PathBuf::from(format!("{DATA}/maildir/bob/new"));
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = maildir_files(&new);
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "delivered into {}", new.display());
    assert!(delivered[0].contains("Subject: packaged"));
    let file = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    let owner = run("stat", &["-c", "%U", file.path().to_str().unwrap()]);
    assert_eq!(owner.trim(), "sluice", "the server ran as the sluice user");
    let pid = server.child.id().unwrap();
    run("kill", &["-TERM", &pid.to_string()]);
    let _ = server.child.wait().await;

    // Removal keeps the configuration and the data.
    run("dpkg", &["-r", "sluice"]);
    assert!(!Path::new("/usr/bin/sluice").exists(), "binary removed");
    assert!(
        !Path::new("/usr/lib/sluice/plugins").exists(),
        "plugins removed"
    );
    assert!(
        Path::new("/etc/sluice/sluice.toml").is_file(),
        "configuration kept"
    );
    assert_eq!(maildir_files(&new).len(), 1, "data kept");
}
