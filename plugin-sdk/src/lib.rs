//! Write [Sluice](https://example.invalid/sluice) mail-filter plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`]; every hook has a default that means
//! "no opinion", so you override only the hooks you need and list them in [`Plugin::HOOKS`].
//! One [`export!`] line turns it into a WebAssembly component:
//!
//! ```ignore
//! use sluice_plugin_sdk::{export, Config, ConfigError, Hook, Plugin, Session, Address, Verdict};
//!
//! struct NoExample;
//!
//! impl Plugin for NoExample {
//!     const HOOKS: &'static [Hook] = &[Hook::VerifySender];
//!     fn new(_config: &Config) -> Result<Self, ConfigError> {
//!         Ok(NoExample)
//!     }
//!     fn verify_sender(&mut self, _session: &Session, sender: &Address) -> Verdict {
//!         if sender.domain_is("example.com") {
//!             return Verdict::reject(550, "5.7.1", "no mail from example.com");
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! export!(NoExample);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and drop the `.wasm` into Sluice's
//! plugin directory. See the crate's README for the full tutorial.
//!
//! # Lifetimes
//! Sluice makes a fresh instance of the plugin for every SMTP transaction. [`Plugin::new`] runs
//! once per instance, on the first hook call, so `self` is state *per transaction*; settings are
//! re-read from [`Config`] each time (a cheap host call), so nothing needs to be global.
//!
//! # State and lookups
//! [`kv`] keeps state between transactions and [`dns`] asks the host's resolver; each is a
//! capability the operator grants (`capabilities = ["kv", "dns"]` in `[plugin.NAME]`).
//!
//! # Testing natively
//! Outside WebAssembly (in `cargo test`), host calls are answered by [`testing`]: set the
//! configuration with [`testing::set_config`] and read logged lines with [`testing::take_logs`].
#![deny(missing_docs)]

mod address;
mod config;
pub mod dns;
#[doc(hidden)]
pub mod export;
mod host;
pub mod kv;
pub mod log;
pub mod net;
pub mod testing;
mod verdict;

pub use address::domain_eq;
pub use config::{Config, ConfigError, FromConfig};
pub use host::{authentication, now_ms};

/// The raw bindings generated from the WIT package. Not part of the SDK's API: use the
/// re-exported types and the [`Plugin`] trait instead.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        // The widest world: a Rust component imports only the functions it calls, so a
        // plugin that never calls `kv` or `dns` needs no capability for them.
        world: "plugin-kv-dns",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "::sluice_plugin_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::sluice::filter::authentication::{
    AuthResults, DkimCheck, DmarcCheck, SpfCheck, Verdict as AuthVerdict,
};
pub use bindings::sluice::filter::host::Level;
pub use bindings::sluice::filter::types::{
    Address, BounceRequest, BounceText, ConfigValue, DeliveryReport, DeliveryStatus, Envelope,
    EsmtpParam, FailedRecipient, Header, Message, MessageVerdict, Reply, Session, Symbol, TlsInfo,
    Verdict,
};

/// A hook a plugin can implement; list the ones you override in [`Plugin::HOOKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// [`Plugin::verify_sender`], at MAIL FROM.
    VerifySender,
    /// [`Plugin::check_recipient`], at each RCPT TO.
    CheckRecipient,
    /// [`Plugin::check_message`], after DATA.
    CheckMessage,
    /// [`Plugin::on_delivery`], after each delivery attempt per recipient.
    OnDelivery,
    /// [`Plugin::render_bounce`], when a bounce is composed.
    RenderBounce,
}

/// A Sluice plugin. Implement the hooks you need; the others answer "no opinion".
pub trait Plugin: Sized + 'static {
    /// The hooks Sluice should call. A hook not listed here is never called, even if overridden.
    const HOOKS: &'static [Hook];

    /// Builds the plugin from the operator's settings. Called once per instance (that is, once
    /// per SMTP transaction) and once at load time, where an error refuses the plugin with your
    /// message. Check every setting here.
    fn new(config: &Config) -> Result<Self, ConfigError>;

    /// At MAIL FROM. `sender.address` is empty for the null sender `<>`.
    fn verify_sender(&mut self, session: &Session, sender: &Address) -> Verdict {
        let _ = (session, sender);
        Verdict::Continue
    }

    /// At each RCPT TO; `envelope.recipients` holds the recipients accepted before this one.
    fn check_recipient(
        &mut self,
        session: &Session,
        envelope: &Envelope,
        recipient: &Address,
    ) -> Verdict {
        let _ = (session, envelope, recipient);
        Verdict::Continue
    }

    /// After the message has been received. Return a verdict plus header edits and spam-score
    /// symbols; [`MessageVerdict::default`] is "no opinion, no changes".
    fn check_message(
        &mut self,
        session: &Session,
        envelope: &Envelope,
        message: &Message,
    ) -> MessageVerdict {
        let _ = (session, envelope, message);
        MessageVerdict::default()
    }

    /// After each delivery attempt, once per recipient. Cannot change the delivery.
    fn on_delivery(&mut self, report: &DeliveryReport) {
        let _ = report;
    }

    /// Composes the human-readable part of a bounce; `None` lets Sluice use its default text.
    fn render_bounce(&mut self, request: &BounceRequest) -> Option<BounceText> {
        let _ = request;
        None
    }
}

/// The short form: implements [`Plugin`] for `Type` from the hooks written inside, with
/// [`Plugin::HOOKS`] derived from their names (so the list can never disagree with them), and
/// exports it. `new` is optional: without it the type must implement `Default`, for a plugin
/// without settings.
///
/// ```ignore
/// use sluice_plugin_sdk::{plugin, Address, Envelope, Session, Verdict};
/// #[derive(Default)]
/// struct Guard;
/// plugin!(Guard {
///     fn check_recipient(&mut self, _s: &Session, _e: &Envelope, r: &Address) -> Verdict {
///         if r.local_part() == "noreply" { return Verdict::reject(550, "5.1.1", "No mail here"); }
///         Verdict::Continue
///     }
/// });
/// ```
#[macro_export]
macro_rules! plugin {
    ($ty:ident { $($body:tt)* }) => {
        $crate::plugin!(@munch $ty [] [] [] $($body)*);
    };
    // `new`, given: the settings are read there.
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] [$($new:tt)*]
        fn new $args:tt -> $ret:ty $body:block $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)*] [$($fns)*] [fn new $args -> $ret $body] $($rest)*);
    };
    // A hook with a result.
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] [$($new:tt)*]
        fn $name:ident $args:tt -> $ret:ty $body:block $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)* $name] [$($fns)* fn $name $args -> $ret $body] [$($new)*] $($rest)*);
    };
    // A hook without one (`on_delivery`).
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] [$($new:tt)*]
        fn $name:ident $args:tt $body:block $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)* $name] [$($fns)* fn $name $args $body] [$($new)*] $($rest)*);
    };
    (@munch $ty:ident [$($hooks:ident)*] [$($fns:tt)*] []) => {
        $crate::plugin!(@munch $ty [$($hooks)*] [$($fns)*] [
            fn new(_config: &$crate::Config) -> ::core::result::Result<Self, $crate::ConfigError> {
                ::core::result::Result::Ok(<Self as ::core::default::Default>::default())
            }
        ]);
    };
    (@munch $ty:ident [$($hooks:ident)*] [$($fns:tt)*] [$($new:tt)+]) => {
        impl $crate::Plugin for $ty {
            const HOOKS: &'static [$crate::Hook] = &[$($crate::plugin!(@hook $hooks)),*];
            $($new)+
            $($fns)*
        }
        $crate::export!($ty);
    };
    (@hook verify_sender) => { $crate::Hook::VerifySender };
    (@hook check_recipient) => { $crate::Hook::CheckRecipient };
    (@hook check_message) => { $crate::Hook::CheckMessage };
    (@hook on_delivery) => { $crate::Hook::OnDelivery };
    (@hook render_bounce) => { $crate::Hook::RenderBounce };
    (@hook $other:ident) => {
        compile_error!(concat!(
            "`", stringify!($other),
            "` is not a hook: write new, verify_sender, check_recipient, check_message, on_delivery or render_bounce"
        ))
    };
}

/// Exports a [`Plugin`] implementation as the plugin's component entry points.
///
/// The plugin's name and version come from the crate's `Cargo.toml`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluiceIdentity;
            impl $crate::export::Identity for __SluiceIdentity {
                const NAME: &'static str = env!("CARGO_PKG_NAME");
                const VERSION: &'static str = env!("CARGO_PKG_VERSION");
            }
            type __SluiceExport = $crate::export::Adapter<$plugin, __SluiceIdentity>;
    $crate::bindings::export_raw!(__SluiceExport with_types_in $crate::bindings);
        };
    };
}
