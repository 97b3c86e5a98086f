//! What a visit tells others: the `on-delivery` hooks for each recipient's outcome, and the
//! DSNs (bounces and delay warnings) spooled back to the sender.

use super::*;

impl Runner {
    /// Sends the success notices due (RFC 3461 §5.2.2: NOTIFY=SUCCESS; "delivered" for final
    /// delivery, "relayed" to a next hop that does not take DSN parameters), one DSN for all.
    pub(super) async fn notify_successes(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        st: &QueueState,
        successes: &[(Notice, usize)],
        config: &Config,
    ) -> anyhow::Result<()> {
        if envelope.sender.address.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(Notice, FailedRecipient)> = successes
            .iter()
            .filter_map(|&(notice, i)| {
                let r = &st.recipients[i];
                let asked = envelope
                    .recipients
                    .iter()
                    .find(|e| e.address == r.address)
                    .is_some_and(|e| bounce::wants_notice_explicitly(e, "SUCCESS"));
                asked.then(|| {
                    (
                        notice,
                        FailedRecipient {
                            address: r.address.clone(),
                            reply: r.last_reply.clone().unwrap_or_default(),
                            status: r.status_code.clone().unwrap_or_else(|| "2.0.0".into()),
                            remote_host: r.remote.clone(),
                        },
                    )
                })
            })
            .collect();
        for notice in [Notice::Delivered, Notice::Relayed] {
            let these: Vec<FailedRecipient> = wanted
                .iter()
                .filter(|(n, _)| *n == notice)
                .map(|(_, r)| r.clone())
                .collect();
            if these.is_empty() {
                continue;
            }
            let headers = crate::pipeline::parse_headers(message);
            let req = bounce::request(envelope, headers, these, &config.server.hostname, false);
            let text = bounce::success_text(&req, notice);
            self.spool_notice(envelope, message, &req, &text, notice, config)
                .await?;
        }
        Ok(())
    }

    /// Builds a DSN and spools it from `<>` to the original sender; returns its queue id.
    pub(super) async fn spool_notice(
        &self,
        envelope: &SpooledEnvelope,
        message: &[u8],
        req: &crate::plugin::bindings::types::BounceRequest,
        text: &crate::plugin::bindings::types::BounceText,
        notice: Notice,
        config: &Config,
    ) -> anyhow::Result<String> {
        let dsn = bounce::build(envelope, message, req, text, notice);
        let dsn_id = spool::new_queue_id();
        let dsn_envelope = SpooledEnvelope {
            id: dsn_id.clone(),
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
            helo: config.server.hostname.clone(),
            listener: "bounce".to_string(),
            auth_user: None,
            quarantine: None,
            spam: false,
        };
        self.spool
            .store(SpoolState::Queue, &dsn_envelope, &dsn)
            .await?;
        self.arrivals.add(&dsn_id);
        let kind = match notice {
            Notice::Failed => "bounce",
            Notice::Delayed { .. } => "delay-warning",
            Notice::Delivered | Notice::Relayed => "success-notice",
        };
        if notice == Notice::Failed {
            crate::admin::webhook::emit(
                "bounced",
                serde_json::json!({
                    "id": envelope.id,
                    "dsn": dsn_id,
                    "to": envelope.sender.address,
                    "failed": req.failures.iter().map(|f| &f.address).collect::<Vec<_>>(),
                }),
            );
        }
        tracing::info!(event = kind, id = %envelope.id, dsn = %dsn_id, to = %crate::inbound::message::printable(&envelope.sender.address), "{kind} queued");
        Ok(dsn_id)
    }
}
