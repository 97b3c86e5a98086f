//! SMTP AUTH, the client's login (not the authentication of a message's sender, which is
//! [`crate::sender_auth`]): the users file with Argon2id hashes ([`credentials`]) and the
//! throttle on failed logins and concurrent hashing ([`login_throttle`]).
//!
//! May use: the configuration and owner-only files. Used by the SMTP session and the
//! `sluice passwd` command.

pub mod credentials;
pub mod login_throttle;
