//! Sending the aggregate reports of `[reports]`: every `interval_secs`, the TLS report
//! (RFC 8460) of each domain mail went to over an `mx` route, to the `mailto:` addresses of its
//! `_smtp._tls` TXT record, through Sluice's own queue (so retried and bounced as any mail),
//! and POSTed to its `https:` URLs. The counts are written to disk every minute meanwhile.

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::mx::MxResolver;
use crate::delivery::tls_report::{self, Submitter, TlsReports};
use crate::envelope::{Recipient, Sender};
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

/// Sends the TLS reports as they fall due, until the task is dropped.
pub async fn send_tls_reports(ctx: Arc<ServerContext>, reports: Arc<TlsReports>) {
    loop {
        let every = ctx.live().config.reports.interval_secs;
        tokio::time::sleep(Duration::from_secs(every.clamp(1, 60))).await;
        let live = ctx.live();
        let config = &live.config;
        let now = chrono::Utc::now().timestamp();
        let due = reports.take_due(now, config.reports.interval_secs);
        let saving = reports.clone();
        let saved = tokio::task::spawn_blocking(move || saving.save()).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "TLS report counts not saved");
        }
        let Some(tally) = due else {
            continue;
        };
        if !config.reports.tls {
            continue;
        }
        let host = config.server.hostname.clone();
        let who = Submitter {
            organization: config.reports.organization.clone().unwrap_or(host.clone()),
            contact: config
                .reports
                .contact
                .clone()
                .unwrap_or(format!("mailto:postmaster@{host}")),
            host: host.clone(),
        };
        let from = config
            .reports
            .from
            .clone()
            .unwrap_or(format!("postmaster@{host}"));
        let dns = MxResolver::new(config.delivery.resolver.as_deref());
        for (n, (domain, counts)) in tally.domains.iter().enumerate() {
            let rua = match dns.txt(&format!("_smtp._tls.{domain}")).await {
                Ok(txts) => tls_report::rua(&txts),
                Err(e) => {
                    tracing::info!(domain, error = %e, "TLS report not sent: its record could not be read");
                    continue;
                }
            };
            let to: Vec<String> = rua
                .iter()
                .filter_map(|u| u.strip_prefix("mailto:"))
                .map(|a| a.split('?').next().unwrap_or(a).to_string())
                .filter(|a| {
                    a.split_once('@')
                        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                        && !a.contains([' ', '<', '>', ',', '\r', '\n'])
                })
                .collect();
            let posts: Vec<&String> = rua.iter().filter(|u| u.starts_with("https:")).collect();
            if to.is_empty() && posts.is_empty() {
                continue;
            }
            let report_id = format!("{now}.{n}@{host}");
            let json =
                tls_report::report_json(&who, domain, counts, (tally.since, now), &report_id);
            let gz = tls_report::gzip(json.to_string().as_bytes());
            for url in posts {
                let posted = tokio::time::timeout(POST_DEADLINE, post(&dns, url, gz.clone())).await;
                match posted.unwrap_or_else(|_| Err("no answer within 30 s".to_string())) {
                    Ok(()) => {
                        tracing::info!(event = "tls-report", domain, to = %url, "TLS report posted")
                    }
                    Err(e) => {
                        tracing::info!(domain, to = %url, error = %e, "TLS report not posted")
                    }
                }
            }
            if to.is_empty() {
                continue;
            }
            let message = tls_report::message(
                &who,
                (&from, &to),
                domain,
                (tally.since, now),
                &report_id,
                gz,
            );
            let id = crate::spool::new_queue_id();
            let envelope = SpooledEnvelope {
                id: id.clone(),
                received_at: chrono::Utc::now().to_rfc3339(),
                sender: Sender {
                    address: from.clone(),
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
                helo: host.clone(),
                listener: "reports".to_string(),
                auth_user: None,
                quarantine: None,
                spam: false,
            };
            match ctx
                .spool
                .store(SpoolState::Queue, &envelope, &message)
                .await
            {
                Ok(_) => {
                    ctx.arrivals.add(&id);
                    ctx.delivery_wakeup.notify_one();
                    tracing::info!(event = "tls-report", id = %id, domain, to = %to.join(","), "TLS report queued");
                }
                Err(e) => tracing::warn!(domain, error = %e, "TLS report not queued"),
            }
        }
    }
}
