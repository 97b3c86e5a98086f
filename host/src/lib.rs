//! Sluice: an SMTP relay whose mail filters are sandboxed WebAssembly components.
//!
//! # Layout
//! - [`config`]: the TOML configuration, typed and validated (every problem reported at once).
//! - [`plugin`]: the plugin runtime — wasmtime engine, compile cache, loading, sandboxed
//!   instances with deadlines and memory caps, and the host functions plugins import.
//! - [`pipeline`]: runs the plugins of each SMTP stage in order and merges their verdicts,
//!   applying failure policies and spam-score thresholds. No I/O.
//! - [`replay`]: `sluice plugin check`, the offline harness that drives the pipeline over
//!   `.eml` files exactly as the server would, printing JSON Lines.
//! - [`reply`]: an SMTP reply as data.
//!
//! `main.rs` is only the command line.

pub mod config;
pub mod pipeline;
pub mod plugin;
pub mod replay;
pub mod reply;
pub mod session;
