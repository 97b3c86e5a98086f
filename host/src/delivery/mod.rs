//! Delivery of spooled mail: the queue [`runner`] (the scheduler, routes, per-recipient
//! outcomes, retries, expiry), the per-destination limits and health it schedules by
//! ([`destinations`]), the outbound SMTP/LMTP [`client`] and its connection [`pool`], MX
//! lookup ([`mx`]), local [`local`] Maildir delivery, per-message delivery [`state`], DSN
//! [`bounce`]s, and the operator's queue actions ([`admin`]).
//!
//! May use: the spool, the configuration (routes, limits), the DNS resolver, TLS streams, DKIM
//! signing and the pipeline's delivery-time hooks, and the admin reports (metrics, journal,
//! webhook). Nothing inbound.

pub mod admin;
pub mod arrivals;
pub mod bounce;
pub mod client;
pub mod dane;
pub mod destinations;
pub mod https;
pub mod local;
pub mod mta_sts;
pub mod mx;
pub mod pool;
pub mod runner;
pub mod state;
pub mod tls_config;
pub mod tls_report;
