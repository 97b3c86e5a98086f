//! A plugin that misbehaves on purpose, to prove the sandbox holds. Setting `mode`:
//! `loop` (never returns), `hog` (allocates without end), `trap` (panics after printing),
//! `logflood` (logs without end, then returns), `badcode` (rejects with reply code 250),
//! `inject` (a symbol name carrying CR LF and a header field, to split `X-Spam-Status`),
//! `symbolflood` (100,000 symbols), `bigreturn` (40 header fields of 1 MiB each), `ok`
//! (behaves). Setting `hook` picks the hook that misbehaves (default `check-message`).
//! It misbehaves only when triggered — a sender or recipient whose local part is `hostile`,
//! or a Subject containing `hostile` (setting `trigger` changes that word for the Subject) —
//! so tests can show the next transaction is unaffected.
//!
use sluice_plugin_sdk::{
    Address, BounceRequest, BounceText, Config, ConfigError, DeliveryReport, Envelope, Hook,
    Message, MessageVerdict, Plugin, Reply, Session, Settings, Verdict, export, log,
};

/// No per-transaction state.
#[derive(Default)]
struct Hostile;

/// The settings.
struct HostileSettings {
    mode: String,
    hook: String,
    trigger: String,
}

fn misbehave(mode: &str) -> Verdict {
    match mode {
        "loop" => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "hog" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => {
            println!("hostile plugin about to panic");
            panic!("deliberate panic in the hostile test plugin");
        }
        "logflood" => {
            for i in 0..100_000 {
                log::warn(&format!("flood line {i}"));
            }
            Verdict::Continue
        }
        "badcode" => Verdict::Reject(Reply::new(250, "2.0.0", "this is not a rejection")),
        _ => Verdict::Continue,
    }
}

impl Settings for HostileSettings {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        let mode: String = config.get_or("mode", "ok".to_string())?;
        if ![
            "loop",
            "hog",
            "trap",
            "logflood",
            "badcode",
            "inject",
            "symbolflood",
            "bigreturn",
            "ok",
        ]
        .contains(&mode.as_str())
        {
            return Err(ConfigError::new("mode", format!("unknown mode {mode:?}")));
        }
        Ok(HostileSettings {
            mode,
            hook: config.get_or("hook", "check-message".to_string())?,
            trigger: config.get_or("trigger", "hostile".to_string())?,
        })
    }
}

impl Plugin for Hostile {
    const HOOKS: &'static [Hook] = &[
        Hook::VerifySender,
        Hook::CheckRecipient,
        Hook::CheckMessage,
        Hook::OnDelivery,
        Hook::RenderBounce,
    ];
    type Settings = HostileSettings;

    fn verify_sender(&mut self, cfg: &HostileSettings, _s: &Session, a: &Address) -> Verdict {
        if cfg.hook == "verify-sender" && a.local_part() == "hostile" {
            misbehave(&cfg.mode)
        } else {
            Verdict::Continue
        }
    }

    fn check_recipient(
        &mut self,
        cfg: &HostileSettings,
        _s: &Session,
        _e: &Envelope,
        a: &Address,
    ) -> Verdict {
        if cfg.hook == "check-recipient" && a.local_part() == "hostile" {
            misbehave(&cfg.mode)
        } else {
            Verdict::Continue
        }
    }

    fn check_message(
        &mut self,
        cfg: &HostileSettings,
        _s: &Session,
        _e: &Envelope,
        m: &Message,
    ) -> MessageVerdict {
        let triggered = m
            .header("Subject")
            .is_some_and(|s| s.contains(&cfg.trigger));
        if cfg.hook == "check-message" && triggered && cfg.mode == "inject" {
            MessageVerdict::default().symbol("HOSTILE\r\nX-Injected: yes", 1.0, "")
        } else if cfg.hook == "check-message" && triggered && cfg.mode == "symbolflood" {
            (0..100_000).fold(MessageVerdict::default(), |v, i| {
                v.symbol(&format!("S{i}"), 0.0, "")
            })
        } else if cfg.hook == "check-message" && triggered && cfg.mode == "bigreturn" {
            let value = "x".repeat(1 << 20);
            (0..40).fold(MessageVerdict::default(), |v, i| {
                v.add_header(&format!("X-Big-{i}"), &value)
            })
        } else if cfg.hook == "check-message" && triggered {
            misbehave(&cfg.mode).into()
        } else {
            MessageVerdict::default()
        }
    }

    fn on_delivery(&mut self, cfg: &HostileSettings, _report: &DeliveryReport) {
        if cfg.hook == "on-delivery" {
            misbehave(&cfg.mode);
        }
    }

    fn render_bounce(
        &mut self,
        cfg: &HostileSettings,
        _request: &BounceRequest,
    ) -> Option<BounceText> {
        if cfg.hook == "render-bounce" {
            misbehave(&cfg.mode);
        }
        None
    }
}

export!(Hostile);
