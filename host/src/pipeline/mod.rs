//! The hook pipeline: calls the plugins of a stage in order and merges their verdicts into one
//! decision. Within a stage the first final verdict wins and `continue` passes on; a plugin's
//! failure is turned into a verdict by its failure policy. `check-message` also gathers header
//! edits and spam-score symbols and applies the configured score thresholds.
//!
//! - [`set`]: the plugin set ([`Pipeline`]), loaded from the plugin directory, and the row
//!   each plugin shows to the operator ([`PluginRow`]);
//! - [`run`]: one transaction's run ([`PluginRun`]), with the one stage loop;
//! - `calls`: the record of each call ([`CallRecord`]) and what a call leaves behind (log
//!   lines, health, cost, metrics);
//! - [`scoring`]: the spam score and its thresholds, at the end of `check-message`;
//! - [`wit`]: the session, envelope and message as the plugins see them;
//! - [`delivery`]: the delivery-time hooks (`on-delivery`, `render-bounce`);
//! - [`replay`]: `sluice plugin check`, the offline harness over `.eml` files;
//! - [`recording`]: a transaction's run written down for a capture ([`recording::Record`]),
//!   and the taps that record what plugins get from the host or play it back.
//!
//! May use: the plugin runtime, the configuration and the shared vocabulary. The pipeline does
//! no I/O of its own: the SMTP session, the milter and `sluice plugin check` all drive it
//! through the inbound core, so the replay harness behaves exactly as the server does.

mod calls;
pub mod delivery;
pub mod recording;
pub mod replay;
pub mod run;
pub mod scoring;
pub mod set;
pub mod wit;

pub use calls::CallRecord;
pub use run::{PluginRun, Tapping};
pub use scoring::{MessageOutcome, ScoredSymbol};
pub use set::{LoadError, Pipeline, PluginRow, name_refusal, name_warnings, stray_warning};
pub use wit::{message, parse_headers};
