//! Test plugin for the envelope hooks: refuses senders from `deny_domain`, quarantines those
//! from `quarantine_domain`, and refuses recipients whose local part is `nobody` (550 5.1.1)
//! or `later` (451 4.2.0).
use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Hook, Plugin, Session, Settings, Verdict, export,
};

/// No per-transaction state.
#[derive(Default)]
struct SenderGate;

/// The settings.
struct SenderGateSettings {
    deny_domain: String,
    quarantine_domain: String,
}

impl Settings for SenderGateSettings {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["deny_domain", "quarantine_domain"])?;
        Ok(SenderGateSettings {
            deny_domain: config.get_or("deny_domain", "spammer.example".to_string())?,
            quarantine_domain: config.get_or("quarantine_domain", "suspect.example".to_string())?,
        })
    }
}

impl Plugin for SenderGate {
    const HOOKS: &'static [Hook] = &[Hook::VerifySender, Hook::CheckRecipient];
    type Settings = SenderGateSettings;

    fn verify_sender(
        &mut self,
        cfg: &SenderGateSettings,
        _session: &Session,
        sender: &Address,
    ) -> Verdict {
        if sender.domain_is(&cfg.quarantine_domain) {
            return Verdict::Quarantine("sender domain under review".to_string());
        }
        if sender.domain_is(&cfg.deny_domain) {
            return Verdict::reject(
                550,
                "5.7.1",
                &format!("senders from {} are refused", cfg.deny_domain),
            );
        }
        Verdict::Continue
    }

    fn check_recipient(
        &mut self,
        _cfg: &SenderGateSettings,
        _s: &Session,
        _e: &Envelope,
        rcpt: &Address,
    ) -> Verdict {
        match rcpt.local_part() {
            "nobody" => Verdict::reject(550, "5.1.1", "no such user"),
            "later" => Verdict::tempfail(451, "4.2.0", "mailbox busy"),
            _ => Verdict::Continue,
        }
    }
}

export!(SenderGate);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::{ConfigValue, testing};

    #[test]
    fn natively_with_the_sdk_test_host() {
        testing::set_config(&[("deny_domain", ConfigValue::Text("bad.example".into()))]);
        let settings = SenderGateSettings::parse(&Config).expect("valid settings");
        let v = SenderGate.verify_sender(
            &settings,
            &testing::session(),
            &testing::address("x@BAD.example"),
        );
        assert_eq!(
            v,
            Verdict::reject(550, "5.7.1", "senders from bad.example are refused")
        );
        testing::set_config(&[("deny_domian", ConfigValue::Text("typo".into()))]);
        let e = SenderGateSettings::parse(&Config)
            .err()
            .expect("typo refused");
        assert_eq!(e.key, "deny_domian");
    }
}
