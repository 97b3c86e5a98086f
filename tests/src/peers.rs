//! Real mail servers as test peers: a private Dovecot (IMAP, POP3 and LMTP) and a private
//! Postfix, each with its own configuration and data directory under a temporary directory,
//! on loopback ports, stopped by PID when dropped. Nothing touches the machine's own mail
//! configuration. Needs root (Dovecot and Postfix drop privileges to their users) and the
//! Debian packages `postfix`, `dovecot-imapd`, `dovecot-pop3d`, `dovecot-lmtpd` — the test
//! command installs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A free loopback port for a server that must be told its port before it starts (peers
/// cannot bind port 0 and tell us). It is chosen below the kernel's ephemeral range
/// (`ip_local_port_range`), so no socket bound to port 0 and no outgoing connection of another
/// test can take it between this check and the server's bind; a random start spreads the
/// tests that ask at once.
pub fn free_port() -> u16 {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // The span under the ephemeral range, from 10000 (clear of well-known services).
    let (from, to) = if low > 12_000 {
        (10_000, low)
    } else {
        (high.saturating_add(1).max(1024), 65_535)
    };
    let span = u32::from(to.saturating_sub(from));
    if span == 0 {
        // No room outside the ephemeral range: any free port the kernel gives.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
    }
    // Calls in one process step apart by a prime, so two asking at once start apart.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let step = CALLS.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed);
    let start = rand_u32().wrapping_add(step) % span;
    for i in 0..span {
        let port = from + u16::try_from((start + i) % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {from}..{to}");
}

/// A random number from the system (the clock's nanoseconds and this process's id).
fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

fn need(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: scripts/test installs postfix, dovecot-imapd, dovecot-pop3d and dovecot-lmtpd"
    );
}

fn wait_port(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 10 s");
}

pub fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown")
        .args(["-R", user])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {user} {}", path.display());
}

fn kill_pid_file(pid_file: &Path) {
    if let Ok(pid) = std::fs::read_to_string(pid_file) {
        let pid = pid.trim().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}

/// A private Dovecot: users `NAME@DOMAIN` with plain passwords, mail in Maildirs under its
/// directory, IMAPS, POP3S and LMTP on loopback ports.
pub struct Dovecot {
    /// Its directory (configuration, mail, runtime, log).
    pub dir: tempfile::TempDir,
    /// IMAP over TLS.
    pub imaps: u16,
    /// POP3 over TLS.
    pub pop3s: u16,
    /// LMTP (plain TCP).
    pub lmtp: u16,
}

impl Dovecot {
    /// Starts Dovecot for `users` (address, password).
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, |_| String::new())
    }

    /// Like [`Dovecot::start`], with `extra(its directory)` appended to its configuration.
    pub fn start_with(users: &[(&str, &str)], extra: impl FnOnce(&Path) -> String) -> Dovecot {
        need("/usr/sbin/dovecot");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("run/state")).unwrap();
        std::fs::create_dir_all(d.join("mail")).unwrap();
        chown(&d.join("mail"), "mail:mail");
        // Dovecot's unprivileged processes must reach the runtime and mail directories.
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "openssl could not make Dovecot's certificate");
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(d.join("passwd"), passwd).unwrap();
        let (imaps, pop3s, lmtp) = (free_port(), free_port(), free_port());
        let extra = extra(d);
        let conf = format!(
            r#"protocols = imap pop3 lmtp
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/run/state
log_path = {d}/dovecot.log
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = plain
mail_location = maildir:~/Maildir
first_valid_uid = 8
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={d}/mail/%d/%n allow_all_users=no
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@localhost
}}
{extra}
"#,
            d = d.display()
        );
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let ok = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .status()
            .is_ok_and(|s| s.success());
        let dovecot = Dovecot {
            dir,
            imaps,
            pop3s,
            lmtp,
        };
        assert!(ok, "dovecot did not start: {}", dovecot.log());
        wait_port(lmtp, "dovecot lmtp");
        wait_port(imaps, "dovecot imaps");
        dovecot
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        kill_pid_file(&self.dir.path().join("run/master.pid"));
    }
}

/// A private Postfix: an smtpd on a loopback port; `main.cf` lines given by the test are
/// appended to a base that delivers `virtual_mailbox_domains` into Maildirs under
/// `vmail/` and logs to `maillog`.
pub struct Postfix {
    /// Its directory (`conf/`, `queue/`, `vmail/`, `maillog`).
    pub dir: tempfile::TempDir,
    /// The smtpd port.
    pub smtp: u16,
}

impl Postfix {
    /// Starts Postfix with `main_cf` appended to the base configuration.
    pub fn start(main_cf: &str) -> Postfix {
        need("/usr/sbin/postfix");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["conf", "queue", "data", "vmail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        chown(&d.join("data"), "postfix");
        chown(&d.join("vmail"), "mail:mail");
        let smtp = free_port();
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\nmail_owner = postfix\nsetgid_group = postdrop\nmaillog_file_prefixes = {d}\nmaillog_file = {d}/maillog\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmydestination =\nmynetworks = 127.0.0.0/8\nalias_maps =\nalias_database =\nvirtual_mailbox_base = {d}/vmail\nvirtual_minimum_uid = 8\nvirtual_uid_maps = static:8\nvirtual_gid_maps = static:8\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n{main_cf}\n",
            d = d.display()
        );
        std::fs::write(d.join("conf/main.cf"), main).unwrap();
        let services = [
            ("pickup", "unix  n - n 60 1"),
            ("cleanup", "unix n - n - 0"),
            ("qmgr", "unix n - n 300 1"),
            ("tlsmgr", "unix - - n 1000? 1"),
            ("rewrite", "unix - - n - -"),
            ("bounce", "unix - - n - 0"),
            ("defer", "unix - - n - 0"),
            ("trace", "unix - - n - 0"),
            ("verify", "unix - - n - 1"),
            ("flush", "unix n - n 1000? 0"),
            ("proxymap", "unix - - n - -"),
            ("smtp", "unix - - n - -"),
            ("relay", "unix - - n - -"),
            ("showq", "unix n - n - -"),
            ("error", "unix - - n - -"),
            ("retry", "unix - - n - -"),
            ("discard", "unix - - n - -"),
            ("local", "unix - n n - -"),
            ("virtual", "unix - n n - -"),
            ("lmtp", "unix - - n - -"),
            ("anvil", "unix - - n - 1"),
            ("scache", "unix - - n - 1"),
            ("postlog", "unix-dgram n - n - 1"),
        ];
        let mut master = format!("127.0.0.1:{smtp} inet n - n - - smtpd\n");
        for (name, rest) in services {
            let program = match name {
                "defer" | "trace" => "bounce",
                "relay" => "smtp",
                "retry" => "error",
                "postlog" => "postlogd",
                "rewrite" => "trivial-rewrite",
                n => n,
            };
            master.push_str(&format!("{name} {rest} {program}\n"));
        }
        std::fs::write(d.join("conf/master.cf"), master).unwrap();
        let conf = d.join("conf");
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&conf)
            .arg("set-permissions")
            .output();
        let ok = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .status()
            .is_ok_and(|s| s.success());
        let postfix = Postfix { dir, smtp };
        assert!(ok, "postfix did not start: {}", postfix.log());
        wait_port(smtp, "postfix smtpd");
        postfix
    }

    /// Postfix's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// The messages delivered to `user`'s virtual Maildir (`vmail/USER/Maildir/new`).
    pub fn delivered(&self, user: &str) -> Vec<String> {
        crate::maildir_files(&self.dir.path().join("vmail").join(user).join("Maildir/new"))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg("abort")
            .output();
        kill_pid_file(&self.dir.path().join("queue/pid/master.pid"));
    }
}

/// A private `redis-server` on a loopback port, with a password, no persistence, and its
/// files in a temporary directory; stopped by PID when dropped. [`Redis::kill`] and
/// [`Redis::restart`] take it down and bring it back on the same port, for outage tests.
pub struct Redis {
    /// Its directory.
    pub dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its password (`requirepass`).
    pub password: String,
    child: Option<std::process::Child>,
}

impl Redis {
    /// Starts `redis-server` (Debian package `redis-server`, which the test command installs).
    pub fn start() -> Redis {
        need("/usr/bin/redis-server");
        let mut r = Redis {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            password: format!("pw-{}", std::process::id()),
            child: None,
        };
        r.restart();
        r
    }

    /// Starts `redis-server` serving TLS only, with a certificate for 127.0.0.1 signed by a
    /// CA of its own (`ca.pem` in its directory, see [`Redis::ca_file`]); no client
    /// certificates.
    pub fn start_tls() -> Redis {
        need("/usr/bin/redis-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Test Redis CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(d.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let mut r = Redis {
            dir,
            port: free_port(),
            password: format!("pw-{}", std::process::id()),
            child: None,
        };
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port"])
            .arg(r.port.to_string())
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--requirepass", &r.password])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
            ])
            .current_dir(r.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        r.child = Some(child);
        wait_port(r.port, "redis-server (TLS)");
        r
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The URL of database `db` with the password: what `[store] url` takes.
    pub fn url(&self, db: u8) -> String {
        format!("redis://:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Starts the server again (after [`Redis::kill`]) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--requirepass", &self.password])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes", "--logfile"])
            .arg(self.dir.path().join("redis.log"))
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_port(self.port, "redis-server");
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli` against database `db` with `args`; its output.
    pub fn cli(&self, db: u8, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["--no-auth-warning", "-a", &self.password, "-n"])
            .arg(db.to_string())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A primary, a replica and a Redis Sentinel watching them (all `redis-server`: a sentinel is
/// `redis-server --sentinel`), on loopback ports, from a temporary directory; stopped by PID
/// when dropped. The sentinel declares the primary down after 1 s and fails over to the
/// replica.
pub struct Sentinel {
    /// The primary at start.
    pub primary: Redis,
    /// Its replica.
    pub replica: Redis,
    /// The sentinel's port.
    pub port: u16,
    sentinel: Option<std::process::Child>,
}

/// The name of the service the sentinel watches.
pub const SENTINEL_SERVICE: &str = "sluice-test";

impl Sentinel {
    /// Starts the three and waits until the sentinel knows the replica (a failover needs it).
    pub fn start() -> Sentinel {
        need("/usr/bin/redis-server");
        let primary = Redis::start();
        let mut replica = Redis {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            password: primary.password.clone(),
            child: None,
        };
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(replica.port.to_string())
            .args(["--requirepass", &replica.password])
            .args(["--masterauth", &primary.password])
            .args(["--replicaof", "127.0.0.1"])
            .arg(primary.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--logfile")
            .arg(replica.dir.path().join("redis.log"))
            .arg("--dir")
            .arg(replica.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (replica) starts");
        replica.child = Some(child);
        wait_port(replica.port, "redis-server (replica)");
        let port = free_port();
        let conf = replica.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {p} 1\n\
                 sentinel auth-pass {SENTINEL_SERVICE} {pw}\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 5000\n",
                dir = replica.dir.path().display(),
                p = primary.port,
                pw = primary.password,
            ),
        )
        .unwrap();
        let sentinel = Command::new("/usr/bin/redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        wait_port(port, "redis sentinel");
        let s = Sentinel {
            primary,
            replica,
            port,
            sentinel: Some(sentinel),
        };
        for _ in 0..150 {
            if s.ask(&["SENTINEL", "replicas", SENTINEL_SERVICE])
                .contains(&s.replica.port.to_string())
                && s.replica
                    .cli(0, &["INFO", "replication"])
                    .contains("master_link_status:up")
            {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the replica was not in sync and known to the sentinel within 15 s");
    }

    /// Runs `redis-cli` against the sentinel; its output.
    pub fn ask(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the primary the sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        self.ask(&["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }

    /// What `[store] url` takes: the sentinel, the service and database `db`.
    pub fn url(&self, db: u8) -> String {
        format!(
            "redis+sentinel://:{}@127.0.0.1:{}/{SENTINEL_SERVICE}/{db}",
            self.primary.password, self.port
        )
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.sentinel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
