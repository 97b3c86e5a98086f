//! HELO and EHLO: the greeting reply and the extensions offered.

use super::Session;
use crate::config::ListenerKind;
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn hello(&mut self, host: String, esmtp: bool) {
        if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            self.error(Reply::new(501, "5.5.4", "Syntax: EHLO hostname"));
            return;
        }
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.reset_transaction();
        if !esmtp {
            self.write_line(250, "", &self.cfg.hostname.clone());
            return;
        }
        let mut lines = vec![
            self.cfg.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "DSN".to_string(),
            "CHUNKING".to_string(),
        ];
        if self.cfg.tls_available && self.tls.is_none() {
            lines.push("STARTTLS".to_string());
        }
        if self.tls.is_some() {
            lines.push("REQUIRETLS".to_string());
        }
        if self.auth_offered() && self.auth_user.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    pub(super) fn auth_offered(&self) -> bool {
        self.tls.is_some() || self.cfg.plaintext_auth
    }

    pub(super) fn is_submission(&self) -> bool {
        matches!(
            self.cfg.listener,
            ListenerKind::Submission | ListenerKind::Smtps
        )
    }
}
