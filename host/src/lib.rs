//! Sluice: an SMTP relay whose mail filters are sandboxed WebAssembly components.
//!
//! # Layout
//! One folder per concern; each folder's `mod.rs` says what it holds and what it may use.
//! Mail flows down this list: front ends, the inbound core, plugins, the spool, delivery.
//!
//! - [`envelope`]: the shared vocabulary — client facts, sender, recipients, parameters,
//!   decisions — of every front end, the inbound core, the pipeline and the spool.
//! - [`config`]: the TOML configuration, one file per area, typed and validated (every
//!   problem reported at once, each by key).
//! - [`smtp`]: the SMTP front end — the session as a pure state machine, its replies, and the
//!   connection that drives it over a socket.
//! - [`tls`]: certificates for rustls, and a TCP stream before or after TLS.
//! - [`smtp_auth`]: SMTP AUTH — the users file (Argon2id) and the failed-login throttle.
//! - [`milter`]: the milter front end for Postfix and Sendmail (protocol v6, sans-IO codec).
//! - [`inbound`]: the inbound core — every decision about an incoming transaction (rules,
//!   sender authentication, plugins, edits, signing, outcome) for all three front ends.
//! - [`sender_auth`]: SPF, DKIM and DMARC of inbound mail, `Authentication-Results:`, DKIM
//!   keys and signing of outbound mail.
//! - [`pipeline`]: the plugin set and each transaction's run through it (one stage loop),
//!   the spam score, the WIT conversions, the delivery-time hooks and the replay harness.
//! - [`plugin`]: the plugin runtime — wasmtime engine, compile cache, loading, sandboxed
//!   instances with deadlines and memory caps, the host functions plugins import, and the
//!   parsed view of the message they share.
//! - [`capture`]: transactions recorded by rule for exact replay (`[capture]`), the record
//!   files and their bounds, and `sluice plugin check --capture` that plays them back.
//! - [`store`]: the key-value store behind the plugins' `kv` capability (embedded or Redis).
//! - [`dns`]: the DNS resolvers (MX routes, and plugins granted `dns`).
//! - [`spool`]: durable acceptance with group commit.
//! - [`delivery`]: getting spooled mail out — routes, MX, MTA-STS, pooling, retries, bounces,
//!   TLS reports.
//! - [`spam_learning`]: teaching the bundled spam filter the site's judgement.
//! - [`server`]: the listeners, what a running server shares (the context a reload swaps),
//!   reloads, and a server's life from the pid file to the drain.
//! - [`admin`]: what the operator sees — console, `/metrics` and `/plugins`, metrics, the
//!   journal, one log line per refusal, the log format, the webhook.
//! - [`file_stamp`]: a file's length, time and inode, as the watchers compare them.
//! - [`private_files`]: owner-only files and directories (secrets, umask, shared-directory check).
//! - [`report_period`]: counts per domain over a reporting period, kept on disk (TLS and
//!   DMARC aggregate reports).
//!
//! The `sluice` binary (`src/bin/sluice/`, one module per command, each owning its
//! arguments) is only the command line.

pub mod admin;
pub mod capture;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod envelope;
pub mod file_stamp;
#[doc(hidden)]
pub mod fuzz;
pub mod inbound;
pub mod milter;
pub mod pipeline;
pub mod plugin;
pub mod private_files;
pub mod report_period;
pub mod sender_auth;
pub mod server;
pub mod smtp;
pub mod smtp_auth;
pub mod spam_learning;
pub mod spool;
pub mod store;
pub mod tls;
