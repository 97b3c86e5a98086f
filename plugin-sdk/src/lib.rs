//! Write [Sluice](https://example.invalid/sluice) mail-filter plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`]; every hook has a default that means
//! "no opinion", so you write only the hooks you need. The short form, [`plugin!`], derives
//! the list of hooks from the methods you write and exports the component:
//!
//! ```ignore
//! use sluice_plugin_sdk::{plugin, Address, Session, Verdict};
//!
//! #[derive(Default)]
//! struct NoExample;
//!
//! plugin!(NoExample {
//!     fn verify_sender(&mut self, _: &(), _session: &Session, sender: &Address) -> Verdict {
//!         if sender.domain_is("example.com") {
//!             return Verdict::reject(550, "5.7.1", "no mail from example.com");
//!         }
//!         Verdict::Continue
//!     }
//! });
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and drop the `.wasm` into Sluice's
//! plugin directory. See the crate's README for the full tutorial.
//!
//! # Settings and per-transaction state
//! Two types, two lifetimes. The operator's settings are a [`Settings`] type, parsed and
//! checked by [`Settings::parse`]; every hook receives them read-only. The plugin type itself
//! (`self`) is the state of one SMTP transaction: it starts from `Default` and is dropped with
//! the transaction, so a counter in it can never leak into the next one.
//!
//! Sluice calls `parse` when it loads (or reloads) the plugin, where an error refuses the plugin
//! with your message. Because Sluice runs every transaction in a fresh sandbox, that sandbox
//! parses the settings once more, before its first hook; never per hook call. Keep `parse`
//! cheap: it runs once per transaction.
//!
//! # State and lookups
//! [`kv`] keeps state between transactions and [`dns`] asks the host's resolver; each is a
//! capability the operator grants (`capabilities = ["kv", "dns"]` in `[plugin.NAME]`).
//!
//! # The parsed message
//! [`view`] gives `check_message` the message as the host parsed it: MIME parts, decoded
//! text, attachments (with sniffed type and SHA-256) and links (with registrable domains),
//! and the decoded From, To, Subject and Date. No capability is needed.
//!
//! # Testing natively
//! Outside WebAssembly (in `cargo test`), host calls are answered by [`testing`]: set the
//! configuration with [`testing::set_config`] and read logged lines with [`testing::take_logs`].
//! Hooks are plain methods: build the settings (with `parse`, or as a value) and call them.
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
pub mod view;

pub use address::domain_eq;
pub use config::{Config, ConfigError, FromConfig};
pub use host::{arc, authentication, now_ms};

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
    ArcCheck, AuthResults, DkimCheck, DmarcCheck, SpfCheck, Verdict as AuthVerdict,
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

/// The operator's settings for a plugin (the `[plugin.NAME.config]` table), parsed once per
/// sandbox and handed read-only to every hook.
pub trait Settings: Sized + 'static {
    /// Reads and checks every setting. Sluice calls this when it loads the plugin, where an
    /// error refuses the plugin with your message, and once in each transaction's fresh
    /// sandbox before its first hook. Refuse keys you do not know ([`Config::deny_unknown`]).
    fn parse(config: &Config) -> Result<Self, ConfigError>;
}

/// No settings: a plugin whose `Settings` is `()` refuses any key the operator sets for it, so
/// a setting meant for another plugin is reported instead of silently ignored.
impl Settings for () {
    fn parse(config: &Config) -> Result<(), ConfigError> {
        match config.keys().into_iter().next() {
            Some(key) => Err(ConfigError::new(&key, "this plugin takes no settings")),
            None => Ok(()),
        }
    }
}

/// A Sluice plugin: `Self` is the state of one SMTP transaction (it starts from `Default` in
/// each transaction's fresh sandbox), [`Plugin::Settings`] the operator's settings. Implement
/// the hooks you need; the others answer "no opinion".
pub trait Plugin: Default + 'static {
    /// The hooks Sluice should call. A hook not listed here is never called, even if overridden.
    /// The short form, [`plugin!`], derives this list from the hooks written.
    const HOOKS: &'static [Hook];

    /// The operator's settings, `()` for none.
    type Settings: Settings;

    /// At MAIL FROM. `sender.address` is empty for the null sender `<>`.
    fn verify_sender(
        &mut self,
        settings: &Self::Settings,
        session: &Session,
        sender: &Address,
    ) -> Verdict {
        let _ = (settings, session, sender);
        Verdict::Continue
    }

    /// At each RCPT TO; `envelope.recipients` holds the recipients accepted before this one.
    fn check_recipient(
        &mut self,
        settings: &Self::Settings,
        session: &Session,
        envelope: &Envelope,
        recipient: &Address,
    ) -> Verdict {
        let _ = (settings, session, envelope, recipient);
        Verdict::Continue
    }

    /// After the message has been received. Return a verdict plus header edits and spam-score
    /// symbols; [`MessageVerdict::default`] is "no opinion, no changes".
    fn check_message(
        &mut self,
        settings: &Self::Settings,
        session: &Session,
        envelope: &Envelope,
        message: &Message,
    ) -> MessageVerdict {
        let _ = (settings, session, envelope, message);
        MessageVerdict::default()
    }

    /// After each delivery attempt, once per recipient. Cannot change the delivery.
    fn on_delivery(&mut self, settings: &Self::Settings, report: &DeliveryReport) {
        let _ = (settings, report);
    }

    /// Composes the human-readable part of a bounce; `None` lets Sluice use its default text.
    fn render_bounce(
        &mut self,
        settings: &Self::Settings,
        request: &BounceRequest,
    ) -> Option<BounceText> {
        let _ = (settings, request);
        None
    }
}

/// The short form: implements [`Plugin`] for `Type` from the hooks written inside, with
/// [`Plugin::HOOKS`] derived from their names (so the list can never disagree with them), and
/// exports it. `type Settings = …;` is optional: without it the plugin takes no settings.
/// The type must implement `Default` (it is the per-transaction state).
///
/// ```ignore
/// use sluice_plugin_sdk::{plugin, Address, Envelope, Session, Verdict};
/// #[derive(Default)]
/// struct Guard;
/// plugin!(Guard {
///     fn check_recipient(&mut self, _: &(), _s: &Session, _e: &Envelope, r: &Address) -> Verdict {
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
    // The settings type, given.
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] []
        type Settings = $settings:ty; $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)*] [$($fns)*] [$settings] $($rest)*);
    };
    // A hook with a result.
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] [$($settings:tt)*]
        fn $name:ident $args:tt -> $ret:ty $body:block $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)* $name] [$($fns)* fn $name $args -> $ret $body] [$($settings)*] $($rest)*);
    };
    // A hook without one (`on_delivery`).
    (@munch $ty:ident [$($hooks:tt)*] [$($fns:tt)*] [$($settings:tt)*]
        fn $name:ident $args:tt $body:block $($rest:tt)*) => {
        $crate::plugin!(@munch $ty [$($hooks)* $name] [$($fns)* fn $name $args $body] [$($settings)*] $($rest)*);
    };
    (@munch $ty:ident [$($hooks:ident)*] [$($fns:tt)*] []) => {
        $crate::plugin!(@munch $ty [$($hooks)*] [$($fns)*] [()]);
    };
    (@munch $ty:ident [$($hooks:ident)*] [$($fns:tt)*] [$settings:ty]) => {
        impl $crate::Plugin for $ty {
            const HOOKS: &'static [$crate::Hook] = &[$($crate::plugin!(@hook $hooks)),*];
            type Settings = $settings;
            $($fns)*
        }
        $crate::export!($ty);
    };
    (@hook verify_sender) => { $crate::Hook::VerifySender };
    (@hook check_recipient) => { $crate::Hook::CheckRecipient };
    (@hook check_message) => { $crate::Hook::CheckMessage };
    (@hook on_delivery) => { $crate::Hook::OnDelivery };
    (@hook render_bounce) => { $crate::Hook::RenderBounce };
    (@hook new) => {
        compile_error!(
            "`new` is not a hook: settings are parsed by `impl Settings for YourSettings` (name it with `type Settings = YourSettings;`), and the per-transaction state starts from `Default`"
        )
    };
    (@hook $other:ident) => {
        compile_error!(concat!(
            "`", stringify!($other),
            "` is not a hook: write verify_sender, check_recipient, check_message, on_delivery or render_bounce"
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
