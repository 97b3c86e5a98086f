//! Test plugin for `sluice:filter/authentication` (0.1.1): logs the SPF result it sees at
//! `verify-sender`, and at `check-message` adds `X-Auth-Echo` with every result it sees:
//! `spf-helo=V spf=V@DOMAIN dkim=V@DOMAIN/SELECTOR,… dmarc=V@DOMAIN/POLICY`, or `none` when
//! the host did not verify the transaction; and `X-Auth-Echo-Arc` with the ARC verdict (WIT
//! 0.1.4): `V sets=N domains=D1,D2`, or `none`.
use sluice_plugin_sdk::{
    AuthResults, AuthVerdict, Envelope, Hook, Message, MessageVerdict, Plugin, Session, Verdict,
    arc, authentication, export, log,
};

#[derive(Default)]
struct AuthEcho;

fn name(v: AuthVerdict) -> &'static str {
    match v {
        AuthVerdict::Pass => "pass",
        AuthVerdict::Fail => "fail",
        AuthVerdict::Softfail => "softfail",
        AuthVerdict::Neutral => "neutral",
        AuthVerdict::None => "none",
        AuthVerdict::Temperror => "temperror",
        AuthVerdict::Permerror => "permerror",
    }
}

fn describe(r: &AuthResults) -> String {
    let spf_helo = r.spf_helo.as_ref().map_or("-", |c| name(c.verdict));
    let spf = r.spf_mail_from.as_ref().map_or("-".to_string(), |c| {
        format!("{}@{}", name(c.verdict), c.domain)
    });
    let dkim: Vec<String> = r
        .dkim
        .iter()
        .map(|d| format!("{}@{}/{}", name(d.verdict), d.domain, d.selector))
        .collect();
    let dmarc = r.dmarc.as_ref().map_or("-".to_string(), |d| {
        format!("{}@{}/{}", name(d.verdict), d.domain, d.policy)
    });
    format!(
        "spf-helo={spf_helo} spf={spf} dkim={} dmarc={dmarc}",
        if dkim.is_empty() {
            "-".to_string()
        } else {
            dkim.join(",")
        }
    )
}

impl Plugin for AuthEcho {
    const HOOKS: &'static [Hook] = &[Hook::VerifySender, Hook::CheckMessage];
    type Settings = ();

    fn verify_sender(&mut self, _: &(), _s: &Session, _a: &sluice_plugin_sdk::Address) -> Verdict {
        let seen = authentication().map_or("none".to_string(), |r| describe(&r));
        log::info(&format!("at MAIL FROM: {seen}"));
        Verdict::Continue
    }

    fn check_message(
        &mut self,
        _: &(),
        _s: &Session,
        _e: &Envelope,
        _m: &Message,
    ) -> MessageVerdict {
        let seen = authentication().map_or("none".to_string(), |r| describe(&r));
        let chain = arc().map_or("none".to_string(), |a| {
            format!(
                "{} sets={} domains={}",
                name(a.verdict),
                a.sets,
                a.domains.join(",")
            )
        });
        MessageVerdict::default()
            .add_header("X-Auth-Echo", &seen)
            .add_header("X-Auth-Echo-Arc", &chain)
    }
}

export!(AuthEcho);
