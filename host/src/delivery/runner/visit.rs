//! One visit of one message: its due recipients grouped by destination (route or MX), each
//! group delivered over a pooled connection, every recipient's outcome recorded as it comes,
//! and the state saved so that a crash repeats work but loses nothing.

use super::*;

impl Runner {
    /// Delivers what is due of message `id` at `now`. With `wait`, waits for room at busy
    /// destinations; without, leaves their recipients for later (not an attempt).
    pub(super) async fn visit(&self, id: String, now: i64, wait: bool) -> anyhow::Result<Visit> {
        let id = id.as_str();
        let settings = self.settings.load_full();
        let config = &settings.config;
        let pipeline = &settings.pipeline;
        let mut visit = Visit::default();
        let dir = self.spool.root().join("queue");
        let (spool, queue, owned_id) = (self.spool.clone(), dir.clone(), id.to_string());
        let loaded = off_worker(move || -> anyhow::Result<_> {
            let disk_state = state::read(&queue, &owned_id)?;
            if let Some(s) = &disk_state
                && (s.held || s.next_attempt > now)
            {
                return Ok(Err(if s.held { i64::MAX } else { s.next_attempt }));
            }
            // The message too, in the same trip to the blocking threads: a visit that finds
            // no room is the exception (the scheduler sends visits where there is room).
            match spool.read(SpoolState::Queue, &owned_id) {
                Ok((envelope, message)) => Ok(Ok((disk_state, envelope, message))),
                // Finished, or deleted by the operator, since the listing.
                Err(_) if !spool.path(SpoolState::Queue, &owned_id).is_file() => Ok(Err(0)),
                Err(e) => Err(e.into()),
            }
        })
        .await??;
        let (disk_state, envelope, message) = match loaded {
            Ok(l) => l,
            Err(0) => return Ok(visit),
            Err(later) => {
                visit.due = Some(later);
                return Ok(visit);
            }
        };
        // Outcomes that could not be written last time are remembered here, so a failed
        // state write never sends to a recipient already delivered.
        let unsaved = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut st = match (unsaved, disk_state) {
            (Some(mut mem), disk) => {
                mem.held |= disk.is_some_and(|d| d.held);
                mem
            }
            (None, Some(disk)) => disk,
            (None, None) => QueueState::initial(&envelope, now),
        };
        let lifetime =
            i64::try_from(config.delivery.max_queue_lifetime_secs).unwrap_or(i64::MAX / 2);

        // Group the due recipients by destination: a route (and, for MX routes, a domain).
        let mut groups: BTreeMap<String, (Option<RouteConfig>, String, Vec<usize>)> =
            BTreeMap::new();
        for (i, r) in st.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending || r.next_attempt.is_some_and(|t| t > now) {
                continue;
            }
            let domain = address::split(&r.address).1.to_ascii_lowercase();
            let route = config.route_for(&domain);
            let key = destination_key(route.as_ref(), &domain);
            groups
                .entry(key)
                .or_insert((route, domain, Vec::new()))
                .2
                .push(i);
        }
        // Nothing can start and nothing else is due: wait.
        let warning_due = config.delivery.delay_warning_secs.is_some_and(|after| {
            !st.warned && now - st.queued_at >= i64::try_from(after).unwrap_or(i64::MAX / 2)
        });
        if !wait
            && !groups.is_empty()
            && now - st.queued_at < lifetime
            && !warning_due
            && !groups.iter().any(|(k, (route, _, _))| {
                route
                    .as_ref()
                    .is_none_or(|r| self.destinations.has_room(k, limits_of(r, config), now))
            })
        {
            visit.waiting_for = groups
                .into_iter()
                .filter_map(|(k, (route, _, _))| Some((k, limits_of(route.as_ref()?, config))))
                .collect();
            visit.due = Some(now);
            return Ok(visit);
        }

        // Every destination at once, each as soon as it has room; outcomes are recorded as
        // they come.
        let mut running = futures::stream::FuturesUnordered::new();
        for (key, (route, domain, indexes)) in groups {
            let rcpts: Vec<String> = indexes
                .iter()
                .map(|&i| st.recipients[i].address.clone())
                .collect();
            let (envelope, message, config) = (&envelope, &message, config);
            running.push(async move {
                let result = self
                    .deliver_to(
                        &key,
                        envelope,
                        message,
                        route.as_ref(),
                        &domain,
                        rcpts,
                        config,
                        now,
                        wait,
                    )
                    .await;
                (key, indexes, result)
            });
        }
        // Recipients whose acceptance the sender asked to hear about (NOTIFY=SUCCESS).
        let mut successes: Vec<(Notice, usize)> = Vec::new();
        let mut attempted = false;
        let mut throttled = false;
        while let Some((key, indexes, result)) = running.next().await {
            let outcomes = match result {
                GroupResult::Tried(outcomes) => outcomes,
                GroupResult::Busy(key, limits) => {
                    visit.waiting_for.push((key, limits));
                    continue;
                }
                GroupResult::Throttled(until) => {
                    tracing::info!(id = %id, destination = %key, until = %fmt_time(until), "delivery: destination's rate is used up; waiting");
                    for &i in &indexes {
                        st.recipients[i].next_attempt = Some(until);
                    }
                    throttled = true;
                    continue;
                }
            };
            if !attempted {
                attempted = true;
                st.attempts += 1;
            }
            for (i, handed) in indexes.into_iter().zip(outcomes) {
                let Handed {
                    reply,
                    remote,
                    success,
                    policy,
                } = handed;
                let r = &mut st.recipients[i];
                r.attempts += 1;
                r.status = match reply.code / 100 {
                    2 => RcptStatus::Delivered,
                    5 => RcptStatus::Failed,
                    _ => RcptStatus::Pending,
                };
                r.next_attempt = (r.status == RcptStatus::Pending).then(|| {
                    now.saturating_add(retry_delay(&config.delivery.retry_secs, r.attempts))
                });
                r.last_reply = Some(reply.to_string());
                r.status_code = Some(if reply.enhanced.is_empty() {
                    format!("{}.0.0", reply.code / 100)
                } else {
                    reply.enhanced.clone()
                });
                r.remote = remote.clone();
                st.history.push(format!(
                    "{} {} {:?}: {reply}{}",
                    fmt_time(now),
                    r.address,
                    r.status,
                    policy
                        .as_deref()
                        .map(|p| format!(" (policy {p})"))
                        .unwrap_or_default()
                ));
                let outcome = match r.status {
                    RcptStatus::Delivered => "delivered",
                    RcptStatus::Failed => "failed",
                    RcptStatus::Pending => "deferred",
                };
                crate::admin::metrics::get().delivery(outcome);
                crate::admin::webhook::emit(
                    outcome,
                    serde_json::json!({
                        "id": id,
                        "from": envelope.sender.address,
                        "to": r.address,
                        "destination": key,
                        "remote": remote,
                        "attempt": r.attempts,
                        "reply": reply.to_string(),
                    }),
                );
                tracing::info!(
                    event = "delivery",
                    id = %id,
                    from = %crate::inbound::message::printable(&envelope.sender.address),
                    to = %crate::inbound::message::printable(&r.address),
                    destination = %key,
                    outcome,
                    remote = %remote.as_deref().map(crate::inbound::message::printable).unwrap_or_default(),
                    attempt = r.attempts,
                    policy = policy.as_deref().unwrap_or("none"),
                    reply = %crate::inbound::message::printable(&reply.to_string()),
                    "delivery"
                );
                visit.report.attempts.push((
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
                if reply.code / 100 == 2
                    && let Some(notice) = success
                {
                    successes.push((notice, i));
                }
                visit
                    .report
                    .hook_calls
                    .extend(pipeline.on_delivery(&delivery).await);
            }
            // Recorded as it happens: a later group's failure, or a crash, must not send
            // this group's recipients again. (A finished message is removed next; what can
            // fail before that keeps its state in memory.)
            if !st.finished() {
                self.save(id, &st).await;
            }
        }
        drop(running);
        if let Err(e) = self
            .notify_successes(&envelope, &message, &st, &successes, config)
            .await
        {
            self.remember_unsaved(id, &st);
            return Err(e);
        }

        // Expiry: pending recipients of a message past its lifetime fail.
        let expired = !st.finished() && now - st.queued_at >= lifetime;
        if expired {
            for r in crate::delivery::state::pending(&mut st.recipients) {
                let last = r.last_reply.clone().unwrap_or_default();
                r.fail(
                    "4.4.7",
                    format!("message expired in the queue; last reply: {last}"),
                );
                st.history
                    .push(format!("{} {} expired", fmt_time(now), r.address));
                crate::admin::webhook::emit(
                    "expired",
                    serde_json::json!({
                        "id": id,
                        "from": envelope.sender.address,
                        "to": r.address,
                        "reply": r.last_reply,
                    }),
                );
                tracing::info!(event = "expired", id = %id, from = %crate::inbound::message::printable(&envelope.sender.address), to = %crate::inbound::message::printable(&r.address), outcome = "failed", "expired");
            }
        }

        // What `render-bounce` gets for a notice about these recipients.
        let notice_request = |recipients, expired| {
            let headers = crate::pipeline::parse_headers(&message);
            bounce::request(
                &envelope,
                headers,
                recipients,
                &config.server.hostname,
                expired,
            )
        };
        if !st.finished() {
            let mut changed = attempted || throttled;
            // A delay warning, once, when the message has waited long enough.
            if warning_due {
                st.warned = true;
                changed = true;
                let pending = bounce::delayed(&envelope, &st);
                if !pending.is_empty() {
                    let req = notice_request(pending, false);
                    let retry_until = st.queued_at.saturating_add(lifetime);
                    let text = bounce::delay_text(&req, retry_until);
                    let notice = Notice::Delayed { retry_until };
                    let warning = self
                        .spool_notice(&envelope, &message, &req, &text, notice, config)
                        .await?;
                    st.history.push(format!(
                        "{} delay warning {warning} sent to {}",
                        fmt_time(now),
                        envelope.sender.address
                    ));
                    crate::admin::metrics::get().delay_warning();
                    visit.report.warnings.push(warning);
                }
            }
            // The message is due when its first pending recipient is; one that found no
            // room is due now (the scheduler waits for room before looking again).
            st.next_attempt = st
                .recipients
                .iter()
                .filter(|r| r.status == RcptStatus::Pending)
                .map(|r| r.next_attempt.unwrap_or(now))
                .min()
                .unwrap_or(now);
            visit.due = Some(st.next_attempt);
            if changed {
                if attempted {
                    st.history.push(format!(
                        "{} next attempt {}",
                        fmt_time(now),
                        fmt_time(st.next_attempt)
                    ));
                }
                self.save(id, &st).await;
            }
            return Ok(visit);
        }

        // Finished: bounce the failures (never a bounce of a bounce), then remove.
        let failures = bounce::reportable(&envelope, &st);
        if !failures.is_empty() {
            let req = notice_request(failures, expired);
            let (rendered, calls) = pipeline.render_bounce(&req).await;
            visit.report.hook_calls.extend(calls);
            let text = rendered.unwrap_or_else(|| bounce::default_text(&req));
            let bounce_id = match self
                .spool_notice(&envelope, &message, &req, &text, Notice::Failed, config)
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    self.remember_unsaved(id, &st);
                    return Err(e);
                }
            };
            crate::admin::metrics::get().bounce();
            visit.report.bounces.push(bounce_id);
        } else if envelope.sender.address.is_empty()
            && st.recipients.iter().any(|r| r.status == RcptStatus::Failed)
        {
            tracing::warn!(id = %id, "a bounce could not be delivered; dropped (bounces are never bounced)");
        }
        let (spool, owned_id) = (self.spool.clone(), id.to_string());
        let removed = off_worker(move || {
            state::with_lock(&dir, || -> anyhow::Result<()> {
                if spool.path(SpoolState::Queue, &owned_id).is_file() {
                    spool.remove(SpoolState::Queue, &owned_id)?;
                }
                let _ = std::fs::remove_file(state::path(&dir, &owned_id));
                Ok(())
            })
        })
        .await;
        if !matches!(removed, Ok(Ok(()))) {
            self.remember_unsaved(id, &st);
        }
        removed??;
        visit.report.finished.push(id.to_string());
        Ok(visit)
    }

    /// Writes `st` as the state of `id`, unless the message is gone; the operator's hold,
    /// set meanwhile, is kept. When it cannot be written it is kept in memory for the next
    /// visit.
    pub(super) async fn save(&self, id: &str, st: &QueueState) {
        let dir = self.spool.root().join("queue");
        let (spool, owned_id, snapshot) = (self.spool.clone(), id.to_string(), st.clone());
        let saved = off_worker(move || {
            state::with_lock(&dir, || -> std::io::Result<()> {
                if !spool.path(SpoolState::Queue, &owned_id).is_file() {
                    return Ok(());
                }
                let mut snapshot = snapshot;
                if let Some(disk) = state::read(&dir, &owned_id)? {
                    snapshot.held |= disk.held;
                }
                state::write(&dir, &owned_id, &snapshot)
            })
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!(id = %id, "cannot record delivery outcomes; kept in memory and written again later");
            self.remember_unsaved(id, st);
        }
    }

    /// Delivers `rcpts` of one message to the destination `key` once it is admitted there;
    /// records what came of it in the destination's health.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver_to(
        &self,
        key: &str,
        envelope: &SpooledEnvelope,
        message: &[u8],
        route: Option<&RouteConfig>,
        domain: &str,
        rcpts: Vec<String>,
        config: &Config,
        now: i64,
        wait: bool,
    ) -> GroupResult {
        let Some(route) = route else {
            let r = Reply::new(451, "4.4.0", "No route configured for this domain");
            return GroupResult::Tried(each(rcpts.len(), r, None));
        };
        let limits = limits_of(route, config);
        let _ticket = match self.destinations.admit(key, limits, now, wait).await {
            Admission::Go(ticket) => ticket,
            Admission::Busy => return GroupResult::Busy(key.to_string(), limits),
            Admission::Throttled(until) => return GroupResult::Throttled(until),
            Admission::Suspended(until, why) => {
                let r = Reply::new(
                    451,
                    "4.4.1",
                    &format!(
                        "delivery for {domain} to {} suspended until {} after repeated failures: {why}",
                        key.split_once(':').map_or(key, |(_, d)| d),
                        fmt_time(until)
                    ),
                );
                return GroupResult::Tried(each(rcpts.len(), r, None));
            }
        };
        // For an MX route, the domain's MTA-STS policy first, named in every outcome.
        let sts = if route.kind == RouteKind::Mx && route.mta_sts != PolicyUse::Off {
            self.sts.policy(domain, &self.mx).await
        } else {
            None
        };
        let (mut outcomes, health) = self
            .deliver_group(
                envelope,
                message,
                route,
                domain,
                &rcpts,
                config,
                sts.as_deref(),
            )
            .await;
        if let Some(p) = &sts {
            for o in outcomes.iter_mut().filter(|o| o.policy.is_none()) {
                o.policy = Some(p.describe());
            }
        }
        self.destinations.record(
            key,
            match &health {
                Some(Ok(())) => DestinationOutcome::Answered,
                Some(Err(e)) => DestinationOutcome::Unreachable(e),
                None => DestinationOutcome::Neutral,
            },
            now,
        );
        GroupResult::Tried(outcomes)
    }

    /// Keeps `st` for the next attempt at `id`, when it could not be written to disk.
    pub(super) fn remember_unsaved(&self, id: &str, st: &QueueState) {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), st.clone());
    }

    /// Delivers to one route under the domain's MTA-STS policy `sts` (MX routes): an outcome
    /// per recipient of `rcpts`, and what it says of the destination's health: `Some(Ok)` when
    /// a server answered, `Some(Err(why))` when none could be talked to, `None` when no server
    /// was tried.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver_group(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        route: &RouteConfig,
        domain: &str,
        rcpts: &[String],
        config: &Config,
        sts: Option<&mta_sts::Policy>,
    ) -> (Vec<Handed>, Option<Result<(), String>>) {
        if route.kind == RouteKind::Maildir {
            let root = config.paths().maildir;
            let outcomes = rcpts
                .iter()
                .map(|a| {
                    let mailbox = root.join(local::mailbox_name(address::split(a).0));
                    let junk = &config.delivery.junk_folder;
                    let (folder, text) = if envelope.spam && !junk.is_empty() {
                        (
                            local::folder(&mailbox, junk),
                            format!("Delivered to maildir folder {junk}"),
                        )
                    } else {
                        (Ok(mailbox), "Delivered to maildir".to_string())
                    };
                    let written = folder.and_then(|f| {
                        local::write_maildir(&f, &envelope.id, &config.server.hostname, message)
                    });
                    let reply = match written {
                        Ok(_) => Reply::new(250, "2.0.0", &text),
                        Err(e) => Reply::new(451, "4.3.0", &format!("Maildir write failed: {e}")),
                    };
                    Handed {
                        reply,
                        remote: None,
                        success: Some(Notice::Delivered),
                        policy: None,
                    }
                })
                .collect();
            return (outcomes, None);
        }
        // REQUIRETLS (RFC 8689): only to a next hop authenticated by its certificate (an MTA-STS
        // enforce policy, DNSSEC-validated TLSA records); without one such mail is returned
        // rather than sent. LMTP is final delivery (the mailbox server), as the Maildir is.
        let requiretls = route.kind != RouteKind::Lmtp
            && envelope
                .sender
                .params
                .iter()
                .any(|p| p.keyword.eq_ignore_ascii_case("REQUIRETLS"));
        let d = &config.delivery;
        let mut cfg = ClientConfig {
            helo: config.server.hostname.clone(),
            // A REQUIRETLS message goes only over TLS with a verified certificate (and so, below,
            // does mail under an MTA-STS enforce policy, or DANE).
            tls: if requiretls {
                crate::config::TlsPolicy::Required
            } else {
                route.tls
            },
            auth: route.auth_user.clone().zip(route.auth_password.clone()),
            lmtp: route.kind == RouteKind::Lmtp,
            timeouts: Timeouts {
                connect: Duration::from_secs(d.connect_timeout_secs),
                greeting: Duration::from_secs(d.greeting_timeout_secs),
                command: Duration::from_secs(d.timeout_secs),
                data: Duration::from_secs(d.data_timeout_secs),
            },
            max_messages: route.max_messages_per_connection,
            dane: HopDane::None,
        };
        let (dsn_mail, dsn_rcpt) = dsn_params(envelope, rcpts);
        let out = Outgoing {
            sender: &envelope.sender.address,
            recipients: rcpts,
            message,
            eight_bit: message.iter().any(|b| *b >= 0x80),
            smtputf8: needs_smtputf8(envelope, message),
            dsn: DsnParams {
                mail: &dsn_mail,
                rcpt: &dsn_rcpt,
            },
            requiretls,
        };
        // LMTP is final delivery; an SMTP next hop that took the DSN parameters reports
        // success itself, one that did not gets a "relayed" notice from us.
        let success = |dsn_passed: bool| match route.kind {
            RouteKind::Lmtp => Some(Notice::Delivered),
            _ if dsn_passed => None,
            _ => Some(Notice::Relayed),
        };
        // The candidate next hops, in order: (target, name for TLS and reports).
        let hops: Vec<(Target, String)> = match (route.kind, &route.socket, &route.host) {
            (RouteKind::Lmtp, Some(path), _) => {
                vec![(Target::Unix(path.clone()), "localhost".to_string())]
            }
            (RouteKind::Mx, _, _) => match self.mx_hops(domain, route.port).await {
                Ok(hops) => hops,
                Err(e) => {
                    let r = match &e {
                        MxError::NullMx(_) => Reply::new(556, "5.1.10", &e.to_string()),
                        MxError::NoSuchDomain(_) | MxError::NoMailHost(_) => {
                            Reply::new(550, "5.1.2", &e.to_string())
                        }
                        MxError::Temporary { .. } => Reply::new(451, "4.4.3", &e.to_string()),
                    };
                    return (each(rcpts.len(), r, None), None);
                }
            },
            (_, _, host) => {
                let host = host.clone().unwrap_or_default();
                let name = host
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&host)
                    .trim_matches(['[', ']'])
                    .to_string();
                match tokio::net::lookup_host(&host).await {
                    Ok(addrs) => addrs.map(|a| (Target::Tcp(a), name.clone())).collect(),
                    Err(_) => Vec::new(),
                }
            }
        };
        if hops.is_empty() {
            let r = Reply::new(451, "4.4.3", "Cannot resolve the next hop");
            return (each(rcpts.len(), r, None), None);
        }
        let trust = match self
            .trust(route, domain, hops, sts, requiretls, message, &envelope.id)
            .await
        {
            Ok(t) => t,
            Err(reply) => return (each(rcpts.len(), reply, None), None),
        };
        let enforce = trust.enforce;
        if enforce.is_some() {
            cfg.tls = crate::config::TlsPolicy::Required;
        }
        let report = |dane: &HopDane, outcome| self.report_tls((route, domain, sts), dane, outcome);
        let hops: Vec<(Target, String)> = trust
            .hops
            .iter()
            .filter(|(t, _)| !matches!(t, Target::Tcp(a) if loops_back(*a, &self.own)))
            .cloned()
            .collect();
        if hops.is_empty() {
            // Like Postfix: the next hop is ourselves, so the mail would circle until its
            // hop count ran out. Permanent: the configuration or DNS must change.
            let r = Reply::new(
                554,
                "5.4.6",
                &format!("mail for {domain} loops back to myself"),
            );
            tracing::warn!(id = %envelope.id, domain, "mail loops back to myself: the next hop is one of our own listeners");
            return (each(rcpts.len(), r, None), None);
        }
        // Try each next hop until one answers for the recipients (RFC 5321 §5.1: a host
        // that cannot be reached or refuses the session sends us to the next one).
        let mut last = Reply::new(451, "4.4.1", "No next hop answered");
        let mut last_remote = None;
        let mut answered = false;
        let mut policy = None;
        let cap = route.max_connections;
        for (target, name) in &hops {
            // DANE: TLS authenticated by the host's TLSA records, never in the clear.
            let dane = trust.dane_of(target, name);
            policy = dane.describe().or(policy);
            let with_dane;
            let cfg = match &dane {
                HopDane::None => &cfg,
                HopDane::Failed(e) => {
                    tracing::info!(id = %envelope.id, hop = %target, error = %e, "DANE: not sent: the TLSA lookup failed");
                    report(
                        &dane,
                        tls_report::Outcome::Failure {
                            result: "dnssec-invalid",
                            mx: name.clone(),
                            reason: e.clone(),
                        },
                    );
                    last = Reply::new(451, "4.7.5", &format!("DANE: {e}"));
                    last_remote = Some(name.clone());
                    answered = true;
                    continue;
                }
                _ => {
                    with_dane = ClientConfig {
                        tls: crate::config::TlsPolicy::Required,
                        dane: dane.clone(),
                        ..cfg.clone()
                    };
                    &with_dane
                }
            };
            match self.pool.send(target, name, cfg, cap, &out).await {
                Sent::Answered(o) => {
                    report(
                        &cfg.dane,
                        if o.tls {
                            tls_report::Outcome::Success
                        } else {
                            tls_report::Outcome::Failure {
                                result: "starttls-not-supported",
                                mx: name.clone(),
                                reason: "delivered without TLS".to_string(),
                            }
                        },
                    );
                    let outcomes = o
                        .recipients
                        .into_iter()
                        .map(|(_, reply)| Handed {
                            reply,
                            remote: Some(o.remote.clone()),
                            success: success(o.dsn),
                            policy: cfg.dane.describe(),
                        })
                        .collect();
                    return (outcomes, Some(Ok(())));
                }
                Sent::Refused(r) => {
                    last = r;
                    last_remote = Some(name.clone());
                    answered = true;
                }
                Sent::Failed(e) if e.after_end_of_data() => {
                    // The message may have been taken: no other host in this attempt.
                    tracing::info!(id = %envelope.id, hop = %target, error = %e, "connection lost after the end of data; not trying another host now");
                    last = Reply::new(451, "4.4.2", &e.to_string());
                    last_remote = None;
                    answered = true;
                    break;
                }
                Sent::Failed(e @ crate::delivery::client::ClientError::Tls { .. })
                    if (enforce.is_some() || cfg.dane != HopDane::None) && !requiretls =>
                {
                    report(
                        &cfg.dane,
                        tls_report::Outcome::Failure {
                            result: tls_report::classify(&e.to_string()),
                            mx: name.clone(),
                            reason: e.to_string(),
                        },
                    );
                    // Not sent, and not to be sent in the clear: deferred (the policy or the
                    // host's certificate may be mended).
                    let by = if cfg.dane != HopDane::None {
                        "DANE".to_string()
                    } else {
                        format!("MTA-STS policy of {domain}")
                    };
                    tracing::info!(id = %envelope.id, hop = %target, error = %e, "{by}: not sent: no authenticated TLS");
                    last = Reply::new(451, "4.7.5", &format!("{by}: {e}"));
                    last_remote = Some(name.clone());
                    answered = true;
                }
                Sent::Failed(e @ crate::delivery::client::ClientError::Tls { .. })
                    if requiretls =>
                {
                    // Not sent, and not to be sent in the clear: returned to the sender.
                    tracing::info!(id = %envelope.id, hop = %target, error = %e, "REQUIRETLS message not sent: no verified TLS");
                    last = Reply::new(550, "5.7.30", &format!("REQUIRETLS support required: {e}"));
                    last_remote = Some(name.clone());
                    answered = true;
                }
                Sent::Failed(e) => {
                    tracing::debug!(id = %envelope.id, hop = %target, error = %e, "next hop failed");
                    last = Reply::new(451, "4.4.1", &e.to_string());
                    last_remote = None;
                }
            }
        }
        let health = if answered {
            Ok(())
        } else {
            Err(last.text.clone())
        };
        let mut outcomes = each(rcpts.len(), last, last_remote);
        for o in &mut outcomes {
            o.policy.clone_from(&policy);
        }
        (outcomes, Some(health))
    }
}
