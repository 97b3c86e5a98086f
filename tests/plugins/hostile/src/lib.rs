//! A plugin that misbehaves on purpose, to prove the sandbox holds. Setting `mode`:
//! `loop` (never returns), `hog` (allocates without end), `trap` (panics after printing),
//! `logflood` (logs without end, then returns), `badcode` (rejects with reply code 250),
//! `inject` (a symbol name carrying CR LF and a header field, to split `X-Spam-Status`),
//! `symbolflood` (100,000 symbols), `ok` (behaves). Setting `hook` picks the hook that misbehaves (default `check-message`).
//! It misbehaves only when triggered — a sender or recipient whose local part is `hostile`,
//! or a Subject containing `hostile` (setting `trigger` changes that word for the Subject) —
//! so tests can show the next transaction is unaffected.
//!
use sluice_plugin_sdk::{
    Address, BounceRequest, BounceText, Config, ConfigError, DeliveryReport, Envelope, Hook,
    Message, MessageVerdict, Plugin, Reply, Session, Verdict, export, log,
};

struct Hostile {
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

impl Plugin for Hostile {
    const HOOKS: &'static [Hook] = &[
        Hook::VerifySender,
        Hook::CheckRecipient,
        Hook::CheckMessage,
        Hook::OnDelivery,
        Hook::RenderBounce,
    ];

    fn new(config: &Config) -> Result<Self, ConfigError> {
        let mode: String = config.get_or("mode", "ok".to_string())?;
        if ![
            "loop",
            "hog",
            "trap",
            "logflood",
            "badcode",
            "inject",
            "symbolflood",
            "ok",
        ]
        .contains(&mode.as_str())
        {
            return Err(ConfigError::new("mode", format!("unknown mode {mode:?}")));
        }
        Ok(Hostile {
            mode,
            hook: config.get_or("hook", "check-message".to_string())?,
            trigger: config.get_or("trigger", "hostile".to_string())?,
        })
    }

    fn verify_sender(&mut self, _s: &Session, a: &Address) -> Verdict {
        if self.hook == "verify-sender" && a.local_part() == "hostile" {
            misbehave(&self.mode)
        } else {
            Verdict::Continue
        }
    }

    fn check_recipient(&mut self, _s: &Session, _e: &Envelope, a: &Address) -> Verdict {
        if self.hook == "check-recipient" && a.local_part() == "hostile" {
            misbehave(&self.mode)
        } else {
            Verdict::Continue
        }
    }

    fn check_message(&mut self, _s: &Session, _e: &Envelope, m: &Message) -> MessageVerdict {
        let triggered = m
            .header("Subject")
            .is_some_and(|s| s.contains(&self.trigger));
        if self.hook == "check-message" && triggered && self.mode == "inject" {
            MessageVerdict::default().symbol("HOSTILE\r\nX-Injected: yes", 1.0, "")
        } else if self.hook == "check-message" && triggered && self.mode == "symbolflood" {
            (0..100_000).fold(MessageVerdict::default(), |v, i| {
                v.symbol(&format!("S{i}"), 0.0, "")
            })
        } else if self.hook == "check-message" && triggered {
            misbehave(&self.mode).into()
        } else {
            MessageVerdict::default()
        }
    }

    fn on_delivery(&mut self, _report: &DeliveryReport) {
        if self.hook == "on-delivery" {
            misbehave(&self.mode);
        }
    }

    fn render_bounce(&mut self, _request: &BounceRequest) -> Option<BounceText> {
        if self.hook == "render-bounce" {
            misbehave(&self.mode);
        }
        None
    }
}

export!(Hostile);
