//! bounce-template: writes the human-readable part of Sluice's bounces (`render-bounce`)
//! from templates the operator can edit, in the configured language.
//!
//! Without templates it writes a friendly default that tells a non-technical reader what
//! happened and what to do, in English, German or French (`language`). Templates use
//! `{{placeholders}}` and one `{{#recipients}}…{{/recipients}}` block (see `template`);
//! values are escaped for where they go (no line breaks in the subject, HTML-escaped in the
//! HTML part). Every template is checked when the plugin loads.

mod template;

use std::collections::BTreeMap;

use sluice_plugin_sdk::{BounceRequest, BounceText, Config, ConfigError, Settings, plugin};
use template::{Escape, Values, render};

/// The built-in texts of one language: subject, body, and the two "reason" sentences.
struct Language {
    subject: &'static str,
    text: &'static str,
    refused: &'static str,
    expired: &'static str,
}

const EN: Language = Language {
    subject: "Undelivered Mail Returned to Sender",
    text: "Hello,\n\nthis is the mail system at {{reporting_host}}. Your message could not be delivered to {{count}} of its recipients.\n\n  Subject: {{subject}}\n  Sent:    {{date}}\n\n{{#recipients}}  {{address}}\n    The receiving server said: {{reply}}\n{{/recipients}}\n{{reason}}\n\nThe original message's headers are attached below.\n(Reference: {{queue_id}})\n",
    refused: "What to do: check each address for typing mistakes and send the message again. If the address is right, the mailbox may no longer exist - contact the person another way.",
    expired: "We kept trying for several days, but the receiving server never accepted the message. What to do: send it again later, or contact the person another way.",
};

const DE: Language = Language {
    subject: "Unzustellbare Nachricht",
    text: "Hallo,\n\nhier ist das Mailsystem von {{reporting_host}}. Ihre Nachricht konnte an {{count}} Empfänger nicht zugestellt werden.\n\n  Betreff:   {{subject}}\n  Gesendet:  {{date}}\n\n{{#recipients}}  {{address}}\n    Antwort des empfangenden Servers: {{reply}}\n{{/recipients}}\n{{reason}}\n\nDie Kopfzeilen der ursprünglichen Nachricht finden Sie im Anhang.\n(Referenz: {{queue_id}})\n",
    refused: "Was tun: Prüfen Sie jede Adresse auf Tippfehler und senden Sie die Nachricht erneut. Ist die Adresse richtig, gibt es das Postfach vielleicht nicht mehr - erreichen Sie die Person auf anderem Weg.",
    expired: "Wir haben es mehrere Tage lang versucht, aber der empfangende Server hat die Nachricht nie angenommen. Was tun: Senden Sie sie später erneut oder erreichen Sie die Person auf anderem Weg.",
};

const FR: Language = Language {
    subject: "Message non distribué",
    text: "Bonjour,\n\nceci est le système de messagerie de {{reporting_host}}. Votre message n'a pas pu être remis à {{count}} de ses destinataires.\n\n  Objet :  {{subject}}\n  Envoyé : {{date}}\n\n{{#recipients}}  {{address}}\n    Réponse du serveur destinataire : {{reply}}\n{{/recipients}}\n{{reason}}\n\nLes en-têtes du message d'origine sont joints ci-dessous.\n(Référence : {{queue_id}})\n",
    refused: "Que faire : vérifiez chaque adresse (faute de frappe ?) et renvoyez le message. Si l'adresse est juste, la boîte n'existe peut-être plus - contactez la personne autrement.",
    expired: "Nous avons essayé pendant plusieurs jours, mais le serveur destinataire n'a jamais accepté le message. Que faire : renvoyez-le plus tard, ou contactez la personne autrement.",
};

/// The settings: the language and the three templates, checked at load.
struct Templates {
    lang: &'static Language,
    subject: String,
    text: String,
    html: Option<String>,
}

/// A template from inline config (`key`) or a granted file (`key_file`).
fn template(config: &Config, key: &str) -> Result<Option<String>, ConfigError> {
    let file_key = format!("{key}_file");
    match (config.get::<String>(key)?, config.get::<String>(&file_key)?) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            format!("set {key} or {file_key}, not both"),
        )),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(path)) => std::fs::read_to_string(&path).map(Some).map_err(|e| {
            ConfigError::new(
                &file_key,
                format!(
                    "cannot read {path}: {e} (grant its directory to this plugin with read_dirs)"
                ),
            )
        }),
        (None, None) => Ok(None),
    }
}

fn header<'a>(req: &'a BounceRequest, name: &str) -> &'a str {
    req.original_headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim())
        .unwrap_or("")
}

impl Templates {
    fn values(&self, req: &BounceRequest) -> Values {
        let mut v = Values::default();
        let g = &mut v.global;
        g.insert("reporting_host", req.reporting_host.clone());
        g.insert("queue_id", req.queue_id.clone());
        g.insert("sender", req.sender.clone());
        g.insert("subject", header(req, "Subject").to_string());
        g.insert("date", header(req, "Date").to_string());
        g.insert("message_id", header(req, "Message-ID").to_string());
        g.insert("count", req.failures.len().to_string());
        g.insert(
            "reason",
            if req.expired {
                self.lang.expired
            } else {
                self.lang.refused
            }
            .to_string(),
        );
        for f in &req.failures {
            let mut r = BTreeMap::new();
            r.insert("address", f.address.clone());
            r.insert("reply", f.reply.clone());
            r.insert("status", f.status.clone());
            r.insert("remote_host", f.remote_host.clone().unwrap_or_default());
            v.recipients.push(r);
        }
        v
    }

    fn render(&self, req: &BounceRequest) -> Result<BounceText, String> {
        let v = self.values(req);
        Ok(BounceText {
            subject: render(&self.subject, &v, Escape::Header)?,
            text: render(&self.text, &v, Escape::Text)?,
            html: match &self.html {
                Some(h) => Some(render(h, &v, Escape::Html)?),
                None => None,
            },
        })
    }
}

/// No per-transaction state.
#[derive(Default)]
struct BounceTemplate;

impl Settings for Templates {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "language",
            "subject",
            "text",
            "text_file",
            "html",
            "html_file",
        ])?;
        let lang = match config.get_or("language", "en".to_string())?.as_str() {
            "en" => &EN,
            "de" => &DE,
            "fr" => &FR,
            other => {
                return Err(ConfigError::new(
                    "language",
                    format!("{other:?} is not one of en, de, fr"),
                ));
            }
        };
        let plugin = Templates {
            lang,
            subject: config
                .get::<String>("subject")?
                .unwrap_or_else(|| lang.subject.to_string()),
            text: template(config, "text")?.unwrap_or_else(|| lang.text.to_string()),
            html: template(config, "html")?,
        };
        // Check every template now, with a sample request, so mistakes surface at load.
        let sample = BounceRequest {
            queue_id: "Q".into(),
            reporting_host: "h".into(),
            sender: "s@h".into(),
            failures: Vec::new(),
            original_headers: Vec::new(),
            expired: false,
        };
        let v = plugin.values(&sample);
        for (key, t, how) in [
            ("subject", Some(&plugin.subject), Escape::Header),
            ("text", Some(&plugin.text), Escape::Text),
            ("html", plugin.html.as_ref(), Escape::Html),
        ] {
            if let Some(t) = t {
                render(t, &v, how).map_err(|e| ConfigError::new(key, e))?;
            }
        }
        Ok(plugin)
    }
}

plugin!(BounceTemplate {
    type Settings = Templates;

    fn render_bounce(
        &mut self,
        templates: &Templates,
        request: &BounceRequest,
    ) -> Option<BounceText> {
        // Templates were checked at load; should rendering still fail, the host's default
        // text is used (returning none), never a broken bounce.
        templates.render(request).ok()
    }
});
