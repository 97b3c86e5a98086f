//! Delivery of spooled mail: the queue [`runner`] (routes, per-recipient outcomes, retries,
//! expiry), the outbound SMTP/LMTP [`client`] and its connection [`pool`], MX lookup
//! ([`mx`]), local [`local`] Maildir delivery, per-message delivery [`state`], and DSN
//! [`bounce`]s.

pub mod admin;
pub mod bounce;
pub mod client;
pub mod destinations;
pub mod local;
pub mod mx;
pub mod pool;
pub mod runner;
pub mod state;
