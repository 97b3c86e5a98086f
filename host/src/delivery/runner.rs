//! The queue runner: takes due messages from the spool to their next hop, per recipient.
//!
//! Each pass ([`Runner::run_once`], given the current time so tests control the clock):
//! for every due message, group its pending recipients by route, deliver each group, record
//! each recipient's outcome (2xx delivered, 5xx failed, 4xx/connection trouble deferred),
//! call the `on-delivery` hooks, then either schedule the next attempt or — when nothing is
//! pending — spool a bounce for the failures (RFC 3464, via `render-bounce`) and remove the
//! message. Messages older than the queue lifetime fail their pending recipients as expired.
//!
//! Order of writes keeps mail safe across crashes: a bounce is spooled before the original is
//! removed, and the state file is replaced atomically, so a crash repeats work (at-least-once)
//! but never loses a message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, RouteConfig, RouteKind};
use crate::pipeline::{CallRecord, Pipeline};
use crate::plugin::bindings::types::{DeliveryReport, DeliveryStatus};
use crate::reply::Reply;
use crate::session::{Recipient, Sender, address};
use crate::spool::{self, Spool, SpoolState, SpooledEnvelope};

use super::client::{self, ClientConfig, Outgoing};
use super::state::{self, QueueState, RcptStatus, fmt_time};
use super::{bounce, local};

/// What one pass did, for logs and tests.
#[derive(Debug, Default)]
pub struct PassReport {
    /// (queue id, recipient, outcome, reply) for every recipient attempted.
    pub attempts: Vec<(String, String, RcptStatus, String)>,
    /// Queue ids of the bounces spooled.
    pub bounces: Vec<String>,
    /// Queue ids removed because they were finished.
    pub finished: Vec<String>,
    /// The `on-delivery` and `render-bounce` calls made.
    pub hook_calls: Vec<CallRecord>,
}

/// Delivers the queue.
pub struct Runner {
    spool: Spool,
    config: Config,
    pipeline: Pipeline,
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Runner {
    /// A runner over `spool` with the routes and limits of `config`.
    pub fn new(spool: Spool, config: Config, pipeline: Pipeline) -> Runner {
        Runner {
            spool,
            config,
            pipeline,
        }
    }

    /// Runs passes until dropped: after each wake-up, and at least every few seconds.
    pub async fn run(self, wakeup: Arc<Notify>) {
        loop {
            let report = self.run_once(now()).await;
            for (id, rcpt, status, reply) in &report.attempts {
                tracing::info!(id = %id, to = %rcpt, status = ?status, reply = %reply, "delivery");
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), wakeup.notified()).await;
        }
    }

    /// One pass over the queue at time `now` (Unix seconds).
    pub async fn run_once(&self, now: i64) -> PassReport {
        let mut report = PassReport::default();
        let Ok(ids) = self.spool.list(SpoolState::Queue) else {
            return report;
        };
        for id in ids {
            if let Err(e) = self.process(&id, now, &mut report).await {
                tracing::warn!(id = %id, error = %e, "queue runner could not process the message");
            }
        }
        report
    }

    async fn process(&self, id: &str, now: i64, report: &mut PassReport) -> anyhow::Result<()> {
        let dir = self.spool.root().join("queue");
        let (envelope, message) = self.spool.read(SpoolState::Queue, id)?;
        let mut st = match state::read(&dir, id)? {
            Some(s) => s,
            None => QueueState::initial(&envelope, now),
        };
        if st.held || st.next_attempt > now {
            return Ok(());
        }

        // Group the pending recipients by route.
        let mut groups: BTreeMap<String, (Option<RouteConfig>, Vec<usize>)> = BTreeMap::new();
        for (i, r) in st.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending {
                continue;
            }
            let domain = address::split(&r.address).1.to_ascii_lowercase();
            let route = self.config.route_for(&domain);
            let key = match &route {
                Some(r) => format!("{:?}:{}", r.kind, r.host.clone().unwrap_or_default()),
                None => format!("none:{domain}"),
            };
            groups.entry(key).or_insert((route, Vec::new())).1.push(i);
        }

        st.attempts += 1;
        for (_, (route, indexes)) in groups {
            let outcomes = self
                .deliver_group(&envelope, &message, route.as_ref(), &st, &indexes)
                .await;
            for (i, (reply, remote)) in indexes.into_iter().zip(outcomes) {
                let r = &mut st.recipients[i];
                r.attempts += 1;
                r.status = match reply.code / 100 {
                    2 => RcptStatus::Delivered,
                    5 => RcptStatus::Failed,
                    _ => RcptStatus::Pending,
                };
                r.last_reply = Some(reply.to_string());
                r.status_code = Some(if reply.enhanced.is_empty() {
                    format!("{}.0.0", reply.code / 100)
                } else {
                    reply.enhanced.clone()
                });
                r.remote = remote.clone();
                st.history.push(format!(
                    "{} {} {:?}: {reply}",
                    fmt_time(now),
                    r.address,
                    r.status
                ));
                report.attempts.push((
                    id.to_string(),
                    r.address.clone(),
                    r.status,
                    reply.to_string(),
                ));
                let delivery = DeliveryReport {
                    queue_id: id.to_string(),
                    sender: envelope.sender.address.clone(),
                    recipient: r.address.clone(),
                    status: match r.status {
                        RcptStatus::Delivered => DeliveryStatus::Delivered,
                        RcptStatus::Failed => DeliveryStatus::Failed,
                        RcptStatus::Pending => DeliveryStatus::Deferred,
                    },
                    remote_host: remote,
                    reply: reply.to_string(),
                    attempts: r.attempts,
                };
                report
                    .hook_calls
                    .extend(self.pipeline.on_delivery(&delivery).await);
            }
        }

        // Expiry: pending recipients of a message past its lifetime fail.
        let expired = !st.finished()
            && now - st.queued_at
                >= i64::try_from(self.config.delivery.max_queue_lifetime_secs).unwrap_or(i64::MAX);
        if expired {
            for r in st
                .recipients
                .iter_mut()
                .filter(|r| r.status == RcptStatus::Pending)
            {
                r.status = RcptStatus::Failed;
                r.status_code = Some("4.4.7".to_string());
                let last = r.last_reply.clone().unwrap_or_default();
                r.last_reply = Some(format!("message expired in the queue; last reply: {last}"));
                st.history
                    .push(format!("{} {} expired", fmt_time(now), r.address));
            }
        }

        if !st.finished() {
            let schedule = &self.config.delivery.retry_secs;
            let step = usize::try_from(st.attempts)
                .unwrap_or(usize::MAX)
                .saturating_sub(1)
                .min(schedule.len().saturating_sub(1));
            let delay = schedule.get(step).copied().unwrap_or(300);
            st.next_attempt = now + i64::try_from(delay).unwrap_or(i64::MAX / 2);
            st.history.push(format!(
                "{} next attempt {}",
                fmt_time(now),
                fmt_time(st.next_attempt)
            ));
            // The operator may have held or deleted the message meanwhile: theirs wins.
            state::with_lock(&dir, || -> std::io::Result<()> {
                if !self.spool.path(SpoolState::Queue, id).is_file() {
                    return Ok(());
                }
                if let Some(disk) = state::read(&dir, id)? {
                    st.held |= disk.held;
                }
                state::write(&dir, id, &st)
            })?;
            return Ok(());
        }

        // Finished: bounce the failures (never a bounce of a bounce), then remove.
        let failures = bounce::reportable(&envelope, &st);
        if !failures.is_empty() {
            let headers = crate::pipeline::parse_headers(&message);
            let req = bounce::request(
                &envelope,
                headers,
                failures,
                &self.config.server.hostname,
                expired,
            );
            let (rendered, calls) = self.pipeline.render_bounce(&req).await;
            report.hook_calls.extend(calls);
            let text = rendered.unwrap_or_else(|| bounce::default_text(&req));
            let dsn = bounce::build(&envelope, &message, &req, &text);
            let bounce_id = spool::new_queue_id();
            let bounce_envelope = SpooledEnvelope {
                id: bounce_id.clone(),
                received_at: chrono::Utc::now().to_rfc3339(),
                sender: Sender {
                    address: String::new(),
                    params: Vec::new(),
                },
                recipients: vec![Recipient {
                    address: envelope.sender.address.clone(),
                    params: Vec::new(),
                    discarded: false,
                }],
                client_ip: "127.0.0.1".to_string(),
                helo: self.config.server.hostname.clone(),
                listener: "bounce".to_string(),
                auth_user: None,
                quarantine: None,
            };
            self.spool
                .store(SpoolState::Queue, &bounce_envelope, &dsn)
                .await?;
            tracing::info!(id = %id, bounce = %bounce_id, to = %envelope.sender.address, "bounce queued");
            report.bounces.push(bounce_id);
        } else if envelope.sender.address.is_empty()
            && st.recipients.iter().any(|r| r.status == RcptStatus::Failed)
        {
            tracing::warn!(id = %id, "a bounce could not be delivered; dropped (bounces are never bounced)");
        }
        state::with_lock(&dir, || -> anyhow::Result<()> {
            let _ = std::fs::remove_file(state::path(&dir, id));
            if self.spool.path(SpoolState::Queue, id).is_file() {
                self.spool.remove(SpoolState::Queue, id)?;
            }
            Ok(())
        })?;
        report.finished.push(id.to_string());
        Ok(())
    }

    /// Delivers to one route; returns (reply, remote host) per recipient index given.
    async fn deliver_group(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        route: Option<&RouteConfig>,
        st: &QueueState,
        indexes: &[usize],
    ) -> Vec<(Reply, Option<String>)> {
        let rcpts: Vec<String> = indexes
            .iter()
            .map(|&i| st.recipients[i].address.clone())
            .collect();
        let Some(route) = route else {
            let r = Reply::new(451, "4.4.0", "No route configured for this domain");
            return rcpts.iter().map(|_| (r.clone(), None)).collect();
        };
        match route.kind {
            RouteKind::Maildir => {
                let root = self.config.maildir();
                rcpts
                    .iter()
                    .map(|a| {
                        let mailbox = local::mailbox_name(address::split(a).0);
                        match local::write_maildir(
                            &root.join(&mailbox),
                            &envelope.id,
                            &self.config.server.hostname,
                            message,
                        ) {
                            Ok(_) => (Reply::new(250, "2.0.0", "Delivered to maildir"), None),
                            Err(e) => (
                                Reply::new(451, "4.3.0", &format!("Maildir write failed: {e}")),
                                None,
                            ),
                        }
                    })
                    .collect()
            }
            RouteKind::Smtp | RouteKind::Lmtp => {
                let host = route.host.clone().unwrap_or_default();
                let server_name = host
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&host)
                    .trim_matches(['[', ']'])
                    .to_string();
                let addr = match tokio::net::lookup_host(&host).await.map(|mut a| a.next()) {
                    Ok(Some(a)) => a,
                    Ok(None) | Err(_) => {
                        let r = Reply::new(451, "4.4.3", &format!("Cannot resolve {host}"));
                        return rcpts.iter().map(|_| (r.clone(), None)).collect();
                    }
                };
                let cfg = ClientConfig {
                    helo: self.config.server.hostname.clone(),
                    tls: route.tls,
                    auth: route.auth_user.clone().zip(route.auth_password.clone()),
                    lmtp: route.kind == RouteKind::Lmtp,
                    timeout: Duration::from_secs(self.config.delivery.timeout_secs),
                };
                let eight_bit = message.iter().any(|b| *b >= 0x80);
                let smtputf8 = envelope
                    .sender
                    .params
                    .iter()
                    .any(|p| p.keyword == "SMTPUTF8");
                let out = client::deliver(
                    addr,
                    &server_name,
                    &cfg,
                    &Outgoing {
                        sender: &envelope.sender.address,
                        recipients: &rcpts,
                        message,
                        eight_bit,
                        smtputf8,
                    },
                )
                .await;
                match out {
                    Ok(o) => o
                        .recipients
                        .into_iter()
                        .map(|(_, r)| (r, Some(o.remote.clone())))
                        .collect(),
                    Err(e) => {
                        let r = Reply::new(451, "4.4.1", &e.to_string());
                        rcpts.iter().map(|_| (r.clone(), None)).collect()
                    }
                }
            }
        }
    }
}
