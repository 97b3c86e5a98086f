//! Counts gathered over a reporting period, per domain, and kept on disk so that a restart
//! loses at most the last minute of them: what TLS reports ([`crate::delivery::tls_report`])
//! and DMARC aggregate reports ([`crate::sender_auth::dmarc_report`]) are made from. When the
//! period is over, [`Period::take_due`] hands its counts over and a new period begins.
//!
//! May use: the private-file helpers. Used by delivery and sender authentication.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The most domains counted in one period; mail to or from more is not counted.
pub const MAX_DOMAINS: usize = 10_000;

/// The counts of a period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tally<T> {
    /// When the period began (Unix seconds).
    pub since: i64,
    /// By domain (lower case).
    pub domains: BTreeMap<String, T>,
}

impl<T> Tally<T> {
    fn starting(since: i64) -> Tally<T> {
        Tally {
            since,
            domains: BTreeMap::new(),
        }
    }
}

/// The counts of the period in progress, in `<dir>/tally.json`.
pub struct Period<T> {
    path: PathBuf,
    tally: Mutex<Tally<T>>,
}

impl<T: Serialize + DeserializeOwned> Period<T> {
    /// Counts kept in `dir`, continuing those a previous run left.
    pub fn open(dir: PathBuf) -> Period<T> {
        let path = dir.join("tally.json");
        let tally = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Tally::starting(chrono::Utc::now().timestamp()));
        Period {
            path,
            tally: Mutex::new(tally),
        }
    }

    /// Changes the counts of `domain` with `change`: a domain not counted yet starts from
    /// `new()`, unless the period has [`MAX_DOMAINS`] already.
    pub fn count(&self, domain: &str, new: impl FnOnce() -> T, change: impl FnOnce(&mut T)) {
        let domain = domain.to_ascii_lowercase();
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if !tally.domains.contains_key(&domain) && tally.domains.len() >= MAX_DOMAINS {
            return;
        }
        change(tally.domains.entry(domain).or_insert_with(new));
    }

    /// When the period in progress began.
    pub fn since(&self) -> i64 {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).since
    }

    /// Writes the counts to disk (owner-only).
    pub fn save(&self) -> std::io::Result<()> {
        let json = {
            let tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*tally).map_err(std::io::Error::other)?
        };
        if let Some(dir) = self.path.parent() {
            crate::private_files::create_private_dir(dir)?;
        }
        crate::private_files::write_private(&self.path, &json)
    }

    /// The counts of the period, when it is over at `now` (`every` seconds long); a new
    /// period begins.
    pub fn take_due(&self, now: i64, every: u64) -> Option<Tally<T>> {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if now
            < tally
                .since
                .saturating_add(i64::try_from(every).unwrap_or(i64::MAX))
        {
            return None;
        }
        Some(std::mem::replace(&mut *tally, Tally::starting(now)))
    }
}
