//! Sluice: an SMTP relay whose mail filters are sandboxed WebAssembly components.
//!
//! # Layout
//! - [`envelope`]: the shared vocabulary — client facts, sender, recipients, parameters,
//!   decisions — of session, milter, replay, inbound core, pipeline and spool.
//! - [`config`]: the TOML configuration, typed and validated (every problem reported at once).
//! - [`plugin`]: the plugin runtime — wasmtime engine, compile cache, loading, sandboxed
//!   instances with deadlines and memory caps, and the host functions plugins import.
//! - [`pipeline`]: runs the plugins of each SMTP stage in order and merges their verdicts,
//!   applying failure policies and spam-score thresholds. No I/O.
//! - [`replay`]: `sluice plugin check`, the offline harness that drives the pipeline over
//!   `.eml` files exactly as the server would, printing JSON Lines.
//! - [`reply`]: an SMTP reply as data.
//! - [`session`]: the SMTP dialogue as a pure state machine (bytes in, replies and steps out).
//! - [`inbound`]: the inbound core — every decision about an incoming transaction (sender,
//!   recipients, message, edits, signing, outcome), driven by the front ends below.
//! - [`connection`]: the SMTP front end — drives a session over a socket, performs its steps, STARTTLS.
//! - [`milter`]: the milter front end for Postfix and Sendmail (protocol v6, sans-IO codec).
//! - [`context`]: what a running server shares ([`context::Live`], swapped by reloads, and
//!   [`context::ServerContext`]).
//! - [`server`]: listeners, connection limits, the shared context, graceful shutdown.
//! - [`reload`]: the plugin-directory watcher and configuration reload (SIGHUP).
//! - [`metrics`]: Prometheus metrics; [`http`]: `/metrics`, `/healthz`, `/plugins`.
//! - [`decisions`]: one log line, metric and console entry per refusal, whoever made it;
//!   [`logfmt`]: the text log format (one `key=value` line per event).
//! - [`stream`]: a TCP stream before or after TLS (server and client).
//! - [`tls`]: certificates (configured or self-signed) for rustls.
//! - [`credentials`]: the AUTH users file (Argon2id); [`login_throttle`]: failed AUTH
//!   attempts counted across connections, and the bound on concurrent password hashing.
//! - [`message`]: header edits and the `Received:` field.
//! - [`dkim_key`]: DKIM private keys on disk (for the configuration check and the signer).
//! - [`dns`]: the DNS resolvers (MX routes, and plugins granted `dns`).
//! - [`authentication`]: SPF, DKIM and DMARC of inbound mail, `Authentication-Results:`, DKIM
//!   signing of outbound mail.
//! - [`spool`]: durable acceptance with group commit.
//! - [`store`]: the key-value store behind the plugins' `kv` capability (embedded or Redis).
//! - [`private_files`]: owner-only files and directories (secrets, umask, shared-directory check).
//! - [`delivery`]: getting spooled mail out: routes, MX, pooling, retries, bounces.
//! - [`webhook`]: delivery events and refusals POSTed in signed batches, from a disk backlog.
//!
//! The `sluice` binary (`src/bin/sluice/`, one module per command) is only the command line.

pub mod authentication;
pub mod config;
pub mod connection;
pub mod console;
pub mod context;
pub mod credentials;
pub mod decisions;
pub mod delivery;
pub mod dkim_key;
pub mod dns;
pub mod envelope;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod inbound;
pub mod journal;
pub mod logfmt;
pub mod login_throttle;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod plugin;
pub mod private_files;
pub mod reload;
pub mod replay;
pub mod reply;
pub mod server;
pub mod session;
pub mod spam_learning;
pub mod spool;
pub mod store;
pub mod stream;
pub mod tls;
pub mod webhook;
