//! Delivery of spooled mail. Today: local Maildir delivery for the local domains (the
//! built-in default target). Routes, outbound SMTP, retries and bounces come next.

pub mod local;
