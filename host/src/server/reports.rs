//! Sending the aggregate reports of `[reports]`, every `interval_secs`: the TLS report
//! (RFC 8460) of each domain mail went to over an `mx` route, to the `mailto:` addresses of its
//! `_smtp._tls` TXT record and POSTed to its `https:` URLs; the DMARC aggregate report
//! (RFC 7489 §7.2) of each From domain that asked, to its `rua` addresses that may have it
//! (§7.1). Mail goes through Sluice's own queue, so it is retried and bounced as any mail. The
//! counts are written to disk every minute meanwhile.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::delivery::mx::MxResolver;
use crate::delivery::tls_report::{self, DomainTally, Submitter, TlsReports};
use crate::envelope::{Recipient, Sender};
use crate::report_period::Tally;
use crate::sender_auth::dmarc_report::{self, DmarcReports, DomainRows};
use crate::server::context::ServerContext;
use crate::spool::{SpoolState, SpooledEnvelope};

/// How long one POST of a report may take.
const POST_DEADLINE: Duration = Duration::from_secs(30);

/// POSTs a gzipped report to an `https:` rua (RFC 8460 §3): any 2xx is taken.
async fn post(dns: &MxResolver, url: &str, gz: Vec<u8>) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = hyper::Request::post(path)
        .header("host", &host)
        .header("content-type", "application/tlsrpt+gzip")
        .header("user-agent", "sluice")
        .body(http_body_util::Full::new(bytes::Bytes::from(gz)))
        .map_err(|e| e.to_string())?;
    let answer = crate::delivery::https::send(dns, (&host, port), request, 4096).await?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP status {}", answer.status))
    }
}

/// The reports to send: their counts (each only when turned on at start).
pub struct Counts {
    /// TLS reports.
    pub tls: Option<Arc<TlsReports>>,
    /// DMARC aggregate reports.
    pub dmarc: Option<Arc<DmarcReports>>,
}

/// Sends the reports as they fall due, until the task is dropped.
pub async fn send_reports(ctx: Arc<ServerContext>, counts: Counts) {
    loop {
        let every = ctx.live().config.reports.interval_secs;
        tokio::time::sleep(Duration::from_secs(every.clamp(1, 60))).await;
        let live = ctx.live();
        let config = &live.config;
        let now = chrono::Utc::now().timestamp();
        let every = config.reports.interval_secs;
        let tls = counts
            .tls
            .as_ref()
            .and_then(|c| c.period().take_due(now, every));
        let dmarc = counts
            .dmarc
            .as_ref()
            .and_then(|c| c.period().take_due(now, every));
        let (t, d) = (counts.tls.clone(), counts.dmarc.clone());
        let saved = tokio::task::spawn_blocking(move || {
            t.map_or(Ok(()), |t| t.period().save())
                .and(d.map_or(Ok(()), |d| d.period().save()))
        })
        .await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "report counts not saved");
        }
        let out = Outgoing::of(config);
        if let Some(tally) = tls.filter(|_| config.reports.tls) {
            for (due, counts) in dues(&tally, now, 't', &out.who.host) {
                send_tls(&ctx, &out, due, counts).await;
            }
        }
        if let Some(tally) = dmarc.filter(|_| config.reports.dmarc) {
            for (due, rows) in dues(&tally, now, 'd', &out.who.host) {
                send_dmarc(&ctx, &out, due, rows).await;
            }
        }
    }
}

/// The reports of a finished period, one per domain, with their ids (`NOW.KIND-N@HOST`).
fn dues<'a, T>(
    tally: &'a Tally<T>,
    now: i64,
    kind: char,
    host: &'a str,
) -> impl Iterator<Item = (Due<'a>, &'a T)> + 'a {
    tally
        .domains
        .iter()
        .enumerate()
        .map(move |(n, (domain, counts))| {
            let due = Due {
                domain,
                period: (tally.since, now),
                id: format!("{now}.{kind}{n}@{host}"),
            };
            (due, counts)
        })
}

/// One report due: its domain, its period (Unix seconds) and its id.
struct Due<'a> {
    domain: &'a str,
    period: (i64, i64),
    id: String,
}

/// Who sends, and how names are looked up.
struct Outgoing {
    who: Submitter,
    from: String,
    /// The delivery resolver (`_smtp._tls` records, as MTA-STS's).
    dns: MxResolver,
    /// The sender-authentication resolver (DMARC's report authorizations, as its records).
    auth_dns: MxResolver,
}

impl Outgoing {
    fn of(config: &Config) -> Outgoing {
        let host = config.server.hostname.clone();
        Outgoing {
            who: Submitter {
                organization: config.reports.organization.clone().unwrap_or(host.clone()),
                contact: config
                    .reports
                    .contact
                    .clone()
                    .unwrap_or(format!("mailto:postmaster@{host}")),
                host: host.clone(),
            },
            from: config
                .reports
                .from
                .clone()
                .unwrap_or(format!("postmaster@{host}")),
            dns: MxResolver::new(config.delivery.resolver.as_deref()),
            auth_dns: MxResolver::new(config.authentication.resolver.as_deref()),
        }
    }
}

/// True for a plain mail address (no display name, list or line break).
fn plain_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !a.contains([' ', '<', '>', ',', '\r', '\n'])
}

/// The TLS report of `domain`, to its `_smtp._tls` record's `rua`.
async fn send_tls(ctx: &ServerContext, out: &Outgoing, due: Due<'_>, counts: &DomainTally) {
    let (domain, period, report_id) = (due.domain, due.period, due.id.as_str());
    let rua = match out.dns.txt(&format!("_smtp._tls.{domain}")).await {
        Ok(txts) => tls_report::rua(&txts),
        Err(e) => {
            tracing::info!(domain, error = %e, "TLS report not sent: its record could not be read");
            return;
        }
    };
    let to: Vec<String> = rua
        .iter()
        .filter_map(|u| u.strip_prefix("mailto:"))
        .map(|a| a.split('?').next().unwrap_or(a).to_string())
        .filter(|a| plain_address(a))
        .collect();
    let posts: Vec<&String> = rua.iter().filter(|u| u.starts_with("https:")).collect();
    if to.is_empty() && posts.is_empty() {
        return;
    }
    let json = tls_report::report_json(&out.who, domain, counts, period, report_id);
    let gz = tls_report::gzip(json.to_string().as_bytes());
    for url in posts {
        let posted = tokio::time::timeout(POST_DEADLINE, post(&out.dns, url, gz.clone())).await;
        match posted.unwrap_or_else(|_| Err("no answer within 30 s".to_string())) {
            Ok(()) => tracing::info!(event = "tls-report", domain, to = %url, "TLS report posted"),
            Err(e) => tracing::info!(domain, to = %url, error = %e, "TLS report not posted"),
        }
    }
    if !to.is_empty() {
        let message =
            tls_report::message(&out.who, (&out.from, &to), domain, period, report_id, gz);
        queue(ctx, out, &to, &message, ("tls-report", domain)).await;
    }
}

/// The DMARC aggregate report of `domain`, to the `rua` addresses it published that may
/// have it: those of its own organizational domain, and others that authorize it by a
/// `DOMAIN._report._dmarc.THEIRS` record (RFC 7489 §7.1).
async fn send_dmarc(ctx: &ServerContext, out: &Outgoing, due: Due<'_>, rows: &DomainRows) {
    let (domain, period, report_id) = (due.domain, due.period, due.id.as_str());
    let mut to = Vec::new();
    for address in rows.rua.iter().filter(|a| plain_address(a)) {
        let theirs = address.rsplit_once('@').map_or("", |(_, d)| d);
        if let Some(name) = dmarc_report::authorization_name(domain, theirs) {
            let agreed = out
                .auth_dns
                .txt(&name)
                .await
                .is_ok_and(|t| dmarc_report::authorizes(&t));
            if !agreed {
                tracing::info!(domain, to = %address, "DMARC report not sent there: {name} does not authorize it (RFC 7489 §7.1)");
                continue;
            }
        }
        to.push(address.clone());
    }
    if to.is_empty() {
        return;
    }
    let contact = out.who.contact.trim_start_matches("mailto:");
    let report = dmarc_report::report(
        (&out.who.organization, contact),
        report_id,
        domain,
        rows,
        period,
    );
    match report.to_rfc5322(
        &out.who.host,
        out.from.as_str(),
        to.iter().map(String::as_str),
    ) {
        Ok(message) => queue(ctx, out, &to, message.as_bytes(), ("dmarc-report", domain)).await,
        Err(e) => tracing::warn!(domain, error = %e, "DMARC report not made"),
    }
}

/// Puts a report `message` from `out.from` to `to` in the queue.
async fn queue(
    ctx: &ServerContext,
    out: &Outgoing,
    to: &[String],
    message: &[u8],
    (event, domain): (&str, &str),
) {
    let id = crate::spool::new_queue_id();
    let envelope = SpooledEnvelope {
        id: id.clone(),
        received_at: chrono::Utc::now().to_rfc3339(),
        sender: Sender {
            address: out.from.clone(),
            params: Vec::new(),
        },
        recipients: to
            .iter()
            .map(|a| Recipient {
                address: a.clone(),
                params: Vec::new(),
                discarded: false,
            })
            .collect(),
        client_ip: "127.0.0.1".to_string(),
        helo: out.who.host.clone(),
        listener: "reports".to_string(),
        auth_user: None,
        quarantine: None,
        spam: false,
    };
    match ctx.spool.store(SpoolState::Queue, &envelope, message).await {
        Ok(_) => {
            ctx.arrivals.add(&id);
            ctx.delivery_wakeup.notify_one();
            tracing::info!(event, id = %id, domain, to = %to.join(","), "report queued");
        }
        Err(e) => tracing::warn!(event, domain, error = %e, "report not queued"),
    }
}
