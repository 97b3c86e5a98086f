//! Delivery of spooled mail. Today: local Maildir delivery for the local domains (the
//! built-in default target) and the outbound SMTP/LMTP client. Routes, the queue runner,
//! retries and bounces come next.

pub mod client;
pub mod local;
