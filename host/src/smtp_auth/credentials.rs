//! The credentials file for SMTP AUTH: one `user:hash` per line, the hash in PHC format from
//! Argon2id. `sluice passwd USER` adds or updates a line (write then rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The users and their password hashes.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    users: HashMap<String, String>,
}

/// A credentials file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// I/O.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with a valid PHC hash.
    #[error("{}:{line}: {problem}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The user name is unusable.
    #[error("user name {0:?} must be non-empty and contain no ':' or whitespace")]
    BadUser(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// A hash to verify against when the user does not exist, so that the answer takes as long
/// as for a real user and does not reveal which users exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2x1aWNlc2x1aWNl$HhgGp2ShLaJgh0ANkmXJpf5fHAm8t1yNPIYZpRTQbTA";

impl Credentials {
    /// Reads the file; a missing file means no users (AUTH then always fails).
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(source) => {
                return Err(CredentialsError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |problem: &str| CredentialsError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
                problem: problem.to_string(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected user:hash"))?;
            PasswordHash::new(hash).map_err(|e| syntax(&format!("invalid password hash: {e}")))?;
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Credentials { users })
    }

    /// True when `password` is `user`'s. Slow on purpose (Argon2): call off the async runtime.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let stored = self.users.get(user).map(String::as_str);
        let hash = match PasswordHash::new(stored.unwrap_or(DUMMY_HASH)) {
            Ok(h) => h,
            Err(_) => return false,
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        ok && stored.is_some()
    }

    /// The stored hash of `user`, if there is such a user: a log-in made with it lasts only
    /// while it is unchanged (a new password or a removed user ends the console's sessions).
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The credentials file as the server sees it: re-read whenever its modification time
/// changes, so `sluice passwd` takes effect without a restart. A file that became unreadable
/// or invalid keeps the last good version in service (and says so in the log).
#[derive(Debug)]
pub struct CredentialsFile {
    path: PathBuf,
    cached: std::sync::Mutex<(Option<std::time::SystemTime>, std::sync::Arc<Credentials>)>,
}

impl CredentialsFile {
    /// Loads the file now; an invalid file is an error at start-up.
    pub fn open(path: &Path) -> Result<CredentialsFile, CredentialsError> {
        let creds = Credentials::load(path)?;
        Ok(CredentialsFile {
            path: path.to_path_buf(),
            cached: std::sync::Mutex::new((mtime(path), std::sync::Arc::new(creds))),
        })
    }

    /// The current credentials (re-read if the file changed).
    pub fn current(&self) -> std::sync::Arc<Credentials> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let now = mtime(&self.path);
        if now != cached.0 {
            match Credentials::load(&self.path) {
                Ok(c) => {
                    tracing::info!(file = %self.path.display(), users = c.len(), "credentials reloaded");
                    *cached = (now, std::sync::Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(error = %e, "credentials file invalid; keeping the previous one")
                }
            }
        }
        cached.1.clone()
    }
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Sets `user`'s password in the file at `path` (created if missing), atomically.
pub fn set_password(path: &Path, user: &str, password: &str) -> Result<(), CredentialsError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_whitespace) {
        return Err(CredentialsError::BadUser(user.to_string()));
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| CredentialsError::Hash(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| CredentialsError::Hash(e.to_string()))?
        .to_string();
    let io = |source| CredentialsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| l.split_once(':').map(|(u, _)| u) != Some(user))
        .map(str::to_string)
        .collect();
    lines.push(format!("{user}:{hash}"));
    crate::private_files::write_private(path, (lines.join("\n") + "\n").as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_verify_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        set_password(&path, "alice", "first").unwrap();
        set_password(&path, "bob", "b").unwrap();
        set_password(&path, "alice", "second").unwrap();
        let c = Credentials::load(&path).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.verify("alice", "second"));
        assert!(!c.verify("alice", "first"));
        assert!(!c.verify("nobody", "second"));
        assert!(matches!(
            set_password(&path, "a:b", "x"),
            Err(CredentialsError::BadUser(_))
        ));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nalice:notahash\n").unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("users:2: invalid password hash"), "{e}");
    }
}
