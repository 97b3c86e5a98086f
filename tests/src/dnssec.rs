//! DNSSEC on loopback for the DANE tests: Knot DNS serves zones under `test.` and signs them
//! with keys it makes in the test's directory; unbound validates, with the first zone's
//! key-signing key as its trust anchor, so what it answers with the AD bit is proven and what
//! fails validation is SERVFAIL. Both run from a temporary directory on ephemeral ports and
//! are killed (by PID) when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::peers::free_port;

/// A signed zone set and a validating resolver in front of it.
pub struct SignedDns {
    /// Where the validating resolver listens (UDP and TCP).
    pub resolver: SocketAddr,
    // Dropped in this order: the resolver, the server, then their directory.
    _unbound: Killed,
    _knot: Killed,
    dir: tempfile::TempDir,
}

/// A child process killed (and reaped) when dropped, also when a start-up check panics.
struct Killed(Child);

impl Killed {
    /// Starts `program` with `args`, its output discarded (it logs to its directory).
    fn start(program: &str, args: &[&std::ffi::OsStr]) -> Killed {
        Killed(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}")),
        )
    }
}

/// The first answer of `ask`, asked every 200 ms for at most 20 s.
fn poll<T>(mut ask: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..100 {
        if let Some(t) = ask() {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: scripts/test installs knot, knot-dnsutils and unbound"
    );
}

/// `kdig` at `port` for `args`, its output (empty when it fails).
fn dig(port: u16, args: &[&str]) -> String {
    Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=1", "+retry=0"])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl SignedDns {
    /// Serves `zones` — (origin, records in zone-file syntax relative to it) — signed. The
    /// first zone's KSK is the resolver's trust anchor; the others must be its children,
    /// delegated (NS and DS) in it. Each zone gets its SOA and NS (`ns.FIRST`, 127.0.0.1).
    pub fn start(zones: &[(&str, &str)]) -> SignedDns {
        need("/usr/sbin/knotd");
        need("/usr/sbin/unbound");
        need("/usr/bin/kdig");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let first = zones[0].0;
        let knot_port = free_port();
        let mut conf = format!(
            "server:\n  listen: 127.0.0.1@{knot_port}\n  rundir: {d}\n\
             database:\n  storage: {d}\n\
             log:\n  - target: {d}/knot.log\n    any: info\n\
             policy:\n  - id: test\n    algorithm: ecdsap256sha256\n    nsec3: off\n\
             template:\n  - id: default\n    storage: {d}\n    dnssec-signing: on\n    dnssec-policy: test\n    zonefile-sync: -1\n\
             zone:\n",
            d = d.display()
        );
        for (i, (origin, records)) in zones.iter().enumerate() {
            let file = format!("zone{i}");
            let glue = if i == 0 { "ns A 127.0.0.1\n" } else { "" };
            std::fs::write(
                d.join(&file),
                format!(
                    "$ORIGIN {origin}.\n$TTL 60\n@ SOA ns.{first}. hostmaster.{first}. 1 3600 600 86400 60\n@ NS ns.{first}.\n{glue}{records}\n"
                ),
            )
            .unwrap();
            conf.push_str(&format!("  - domain: {origin}\n    file: {file}\n"));
        }
        std::fs::write(d.join("knot.conf"), conf).unwrap();
        let conf = d.join("knot.conf");
        let knot = Killed::start("/usr/sbin/knotd", &["-c".as_ref(), conf.as_os_str()]);
        // Signed once the key-signing key is served.
        let ksk = poll(|| {
            dig(knot_port, &[first, "DNSKEY", "+short"])
                .lines()
                .find(|l| l.starts_with("257 "))
                .map(str::to_string)
        });
        let log = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let Some(ksk) = ksk else {
            panic!("knotd did not serve a signed {first}:\n{}", log("knot.log"));
        };

        let port = free_port();
        let mut conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  do-not-query-localhost: no\n  module-config: \"validator iterator\"\n  local-zone: \"test.\" nodefault\n  trust-anchor: \"{first}. DNSKEY {ksk}\"\n\
             remote-control:\n  control-enable: no\n",
            d = d.display()
        );
        for (origin, _) in zones {
            conf.push_str(&format!(
                "stub-zone:\n  name: \"{origin}\"\n  stub-addr: 127.0.0.1@{knot_port}\n"
            ));
        }
        std::fs::write(d.join("unbound.conf"), conf).unwrap();
        let conf = d.join("unbound.conf");
        let unbound = Killed::start(
            "/usr/sbin/unbound",
            &["-d".as_ref(), "-c".as_ref(), conf.as_os_str()],
        );
        let dns = SignedDns {
            resolver: ([127, 0, 0, 1], port).into(),
            _unbound: unbound,
            _knot: knot,
            dir,
        };
        // Validating once the zone's apex comes back with the AD bit.
        if poll(|| {
            dig(port, &["+adflag", first, "SOA"])
                .contains(" ad;")
                .then_some(())
        })
        .is_some()
        {
            return dns;
        }
        panic!(
            "unbound did not validate {first}:\n{}",
            std::fs::read_to_string(dns.dir.path().join("unbound.log")).unwrap_or_default()
        );
    }
}
