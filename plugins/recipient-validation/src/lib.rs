//! recipient-validation: accepts only recipients that exist, for the domains it is told to
//! validate; recipients in other domains are left to other plugins and the relay rules.
//!
//! A recipient exists when, after lower-casing and removing a `+tag` (plus-addressing), it is
//! a listed user, a listed alias, or in a catch-all domain. Users and aliases come from the
//! inline config and/or a users file the operator grants to the plugin (`read_dirs`). The
//! file is read afresh for every SMTP transaction (each gets a new plugin instance), so edits
//! take effect on the next transaction with no reload step.
//!
//! Against address harvesting, a transaction that names `max_unknown` unknown recipients gets
//! `421 4.7.0` and the connection is closed, so a client cannot probe a long list.
//!
//! Users file format, one entry per line (`#` starts a comment):
//! ```text
//! alice@example.org                     # a user
//! postmaster@example.org: alice@example.org   # an alias (the target is not checked)
//! @example.net                          # catch-all: every address at example.net
//! ```

use std::collections::BTreeSet;

use sluice_plugin_sdk::{
    Address, Config, ConfigError, Envelope, Session, Settings, Verdict, log, plugin,
};

struct Directory {
    /// Domains validated (lower case).
    domains: BTreeSet<String>,
    /// Known addresses: users and aliases (lower case).
    known: BTreeSet<String>,
    /// Catch-all domains (lower case).
    catch_all: BTreeSet<String>,
}

/// The settings: who exists, and how addresses are compared.
struct Recipients {
    dir: Directory,
    separator: Option<char>,
    max_unknown: u32,
}

/// The state of one transaction.
#[derive(Default)]
struct RecipientValidation {
    /// Unknown recipients named so far.
    unknown: u32,
}

/// Parses a users file; errors name the line.
fn parse_users(text: &str, dir: &mut Directory, file: &str) -> Result<(), String> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let entry = line.split(':').next().unwrap_or("").trim();
        add_entry(entry, dir).map_err(|e| format!("{file} line {}: {e}", n + 1))?;
    }
    Ok(())
}

/// Adds `user@domain` (or an alias name) or `@domain` (catch-all).
fn add_entry(entry: &str, dir: &mut Directory) -> Result<(), String> {
    let entry = entry.to_lowercase();
    match entry.rsplit_once('@') {
        Some(("", domain)) if !domain.is_empty() => {
            dir.catch_all.insert(domain.to_string());
            dir.domains.insert(domain.to_string());
            Ok(())
        }
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            dir.domains.insert(domain.to_string());
            dir.known.insert(entry.clone());
            Ok(())
        }
        _ => Err(format!("{entry:?} is not user@domain or @domain")),
    }
}

impl Recipients {
    /// The canonical form looked up: lower case, `+tag` removed from the local part.
    fn canonical(&self, address: &str) -> Option<(String, String)> {
        let (local, domain) = address.rsplit_once('@')?;
        let local = local.to_lowercase();
        let local = match self.separator {
            Some(sep) => local.split(sep).next().unwrap_or("").to_string(),
            None => local,
        };
        Some((local, domain.to_lowercase()))
    }
}

impl Settings for Recipients {
    fn parse(config: &Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "domains",
            "users",
            "aliases",
            "catch_all",
            "users_file",
            "plus_separator",
            "max_unknown",
        ])?;
        let mut dir = Directory {
            domains: BTreeSet::new(),
            known: BTreeSet::new(),
            catch_all: BTreeSet::new(),
        };
        for d in config.get_or::<Vec<String>>("domains", Vec::new())? {
            dir.domains.insert(d.to_lowercase());
        }
        for u in config.get_or::<Vec<String>>("users", Vec::new())? {
            add_entry(&u, &mut dir).map_err(|e| ConfigError::new("users", e))?;
        }
        for a in config.get_or::<Vec<String>>("aliases", Vec::new())? {
            let name = a.split(':').next().unwrap_or("").trim();
            if !a.contains(':') {
                return Err(ConfigError::new(
                    "aliases",
                    format!("{a:?} must be \"alias@domain: target@domain\""),
                ));
            }
            add_entry(name, &mut dir).map_err(|e| ConfigError::new("aliases", e))?;
        }
        for d in config.get_or::<Vec<String>>("catch_all", Vec::new())? {
            let d = d.trim_start_matches('@').to_lowercase();
            dir.domains.insert(d.clone());
            dir.catch_all.insert(d);
        }
        if let Some(file) = config.get::<String>("users_file")? {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                ConfigError::new(
                    "users_file",
                    format!(
                        "cannot read {file}: {e} (grant its directory to this plugin with read_dirs)"
                    ),
                )
            })?;
            parse_users(&text, &mut dir, &file).map_err(|e| ConfigError::new("users_file", e))?;
        }
        if dir.domains.is_empty() {
            return Err(ConfigError::new(
                "domains",
                "no domain to validate: list domains, users, catch_all or a users_file",
            ));
        }
        let separator = match config.get_or("plus_separator", "+".to_string())?.as_str() {
            "" => None,
            s if s.chars().count() == 1 => s.chars().next(),
            s => {
                return Err(ConfigError::new(
                    "plus_separator",
                    format!("{s:?} must be one character, or empty to turn it off"),
                ));
            }
        };
        Ok(Recipients {
            dir,
            separator,
            max_unknown: config.get_or("max_unknown", 3u32)?,
        })
    }
}

plugin!(RecipientValidation {
    type Settings = Recipients;

    fn check_recipient(
        &mut self,
        known: &Recipients,
        _s: &Session,
        _env: &Envelope,
        rcpt: &Address,
    ) -> Verdict {
        let Some((local, domain)) = known.canonical(&rcpt.address) else {
            return Verdict::Continue; // postmaster without a domain: RFC 5321 requires it
        };
        if !known.dir.domains.contains(&domain) {
            return Verdict::Continue;
        }
        if known.dir.catch_all.contains(&domain)
            || known.dir.known.contains(&format!("{local}@{domain}"))
        {
            // No objection, not `accept`: accepting would end the stage, and the plugins
            // after this one (greylisting, rate limits) would never see local mail.
            return Verdict::Continue;
        }
        self.unknown += 1;
        log::info(&format!(
            "unknown recipient {} ({} in this transaction)",
            rcpt.address, self.unknown
        ));
        if known.max_unknown > 0 && self.unknown >= known.max_unknown {
            return Verdict::tempfail(
                421,
                "4.7.0",
                "Too many unknown recipients, closing connection",
            );
        }
        Verdict::reject(
            550,
            "5.1.1",
            &format!(
                "<{}>: Recipient address rejected: User unknown",
                rcpt.address
            ),
        )
    }
});
