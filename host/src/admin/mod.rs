//! What the operator sees and reaches: the web console, the `/metrics`, `/healthz` and
//! `/plugins` endpoints, the Prometheus metrics, the console's journal of recent traffic,
//! one log line per refusal ([`decisions`]), the log format, and the webhook that POSTs
//! delivery events and refusals.
//!
//! May use: the server context, the spool and delivery queue (to show and act on them), the
//! plugin set, the configuration and the shared vocabulary. The SMTP and milter front ends
//! and the inbound core use it only to report (`decisions`, `metrics`, `journal`).

pub mod console;
pub mod decisions;
pub mod http;
pub mod journal;
pub mod logfmt;
pub mod metrics;
pub mod webhook;
