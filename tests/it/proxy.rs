//! The PROXY protocol behind a real HAProxy (Debian's package) on loopback, `send-proxy` and
//! `send-proxy-v2`: the client HAProxy accepted (from 127.0.0.2) is the session's client, as
//! `Received:` shows. Sent directly: a header from an untrusted peer, a connection without a
//! header, a malformed header and one that never completes are all closed before the banner.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use sluice_tests::*;

/// A connection to `to` from loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// What the server sends before it closes the connection (a reset, when our bytes were left
/// unread, is a close too); panics when it has not closed it within 30 s (a wait that never
/// ends is what a header's deadline prevents).
async fn until_closed(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// HAProxy in the foreground, killed by PID when dropped.
struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_the_client_is_the_one_haproxy_accepted() {
    if !std::path::Path::new("/usr/sbin/haproxy").exists() {
        panic!("haproxy is not installed: the test command installs it (scripts/test)");
    }
    let s = TestServer::start(
        "[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         proxy_trusted = [\"127.0.0.1/32\"]\nproxy_timeout_secs = 1\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n",
        &[],
    )
    .await;
    let proxied = s
        .listeners
        .iter()
        .filter(|(k, _)| *k == sluice::config::ListenerKind::Smtp)
        .nth(1)
        .map(|(_, a)| *a)
        .expect("the proxied listener");
    let (v1, v2) = (
        sluice_tests::peers::free_port(),
        sluice_tests::peers::free_port(),
    );
    let cfg = s.dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend sluice_v1\n\
             backend sluice_v1\n  server s 127.0.0.1:{port} send-proxy\n\
             frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend sluice_v2\n\
             backend sluice_v2\n  server s 127.0.0.1:{port} send-proxy-v2\n",
            port = proxied.port()
        ),
    )
    .unwrap();
    let _haproxy = Haproxy(
        std::process::Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(s.dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy starts"),
    );
    // Python's smtplib from 127.0.0.2, through each frontend.
    let script = r#"
import os, smtplib, time
for port in os.environ["PORTS"].split(","):
    for attempt in range(50):
        try:
            c = smtplib.SMTP("127.0.0.1", int(port), timeout=30, source_address=("127.0.0.2", 0), local_hostname="client.test")
            break
        except (ConnectionRefusedError, smtplib.SMTPServerDisconnected):
            time.sleep(0.1)
    c.sendmail("carol@example.com", ["bob@example.org"], ("Subject: via " + port + "\r\n\r\nhello\r\n").encode())
    c.quit()
print("sent")
"#;
    let out = python(script, &[("PORTS", format!("{v1},{v2}"))]).await;
    assert_eq!(out.trim(), "sent", "{out}");
    let mail = s.mailbox("bob", 2).await;
    assert_eq!(mail.len(), 2);
    for m in &mail {
        let received = m.lines().next().unwrap_or_default();
        assert!(
            received.starts_with("Received: from client.test ([127.0.0.2])"),
            "{received}"
        );
    }

    // Directly: a header from a peer not in proxy_trusted is not listened to.
    let mut c = connect_from([127, 0, 0, 2], proxied).await;
    c.write_all(b"PROXY TCP4 192.0.2.55 198.51.100.1 40000 25\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut c).await, "", "no banner for a stranger");
    // From the balancer: no header, a malformed one, one that never completes.
    for (bytes, what) in [
        (&b"EHLO client.example\r\n"[..], "no header"),
        (
            &b"PROXY TCP4 999.1.1.1 198.51.100.1 40000 25\r\n"[..],
            "malformed",
        ),
    ] {
        let mut c = connect_from([127, 0, 0, 1], proxied).await;
        c.write_all(bytes).await.unwrap();
        assert_eq!(until_closed(&mut c).await, "", "{what}");
    }
    // Half a header, then nothing: the server closes it at its deadline.
    let mut c = connect_from([127, 0, 0, 1], proxied).await;
    c.write_all(b"PROXY TCP4 192.0.2.55").await.unwrap();
    assert_eq!(until_closed(&mut c).await, "", "slow header");
    // A well-formed header from the balancer: the session's client is the one it names.
    let mut c = connect_from([127, 0, 0, 1], proxied).await;
    c.write_all(b"PROXY TCP4 192.0.2.55 198.51.100.1 40000 25\r\n")
        .await
        .unwrap();
    let mut banner = [0u8; 4];
    c.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 ");
    drop(c);
    // Each refusal is logged and counted with its reason.
    let text = scrape(&s.metrics.unwrap().to_string()).await;
    for reason in ["proxy-untrusted", "proxy-header"] {
        assert!(
            text.contains(&format!(r#"stage="CONNECT",reason="{reason}""#)),
            "{reason}: {text}"
        );
    }
}
