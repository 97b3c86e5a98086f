//! What every part of a running server shares: the [`Live`] configuration, plugins and
//! certificate that a reload swaps atomically, and the [`ServerContext`] around it (spool,
//! users, login throttle, plugin runtime, shutdown signal). A connection reads `Live` when it
//! starts and each transaction takes the plugin set in force at its MAIL FROM, so a reload
//! never changes a transaction in progress. The front ends, the reloader, the HTTP endpoint
//! and the queue runner depend on this module, not on [`crate::server`] (which starts them).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::plugin::Runtime;
use crate::smtp_auth::credentials::CredentialsFile;
use crate::spool::Spool;

/// What a reload may replace.
pub struct Live {
    /// The configuration in force.
    pub config: Config,
    /// The plugins in service.
    pub pipeline: Pipeline,
    /// TLS, when a certificate is available.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The certificates TLS serves, read again when their files change.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
    /// The SPF/DKIM/DMARC verifier and the DKIM signing keys.
    pub verifier: Arc<crate::sender_auth::Authenticator>,
}

/// What every connection shares.
pub struct ServerContext {
    /// The configuration, plugins and certificate in force (swapped by reloads).
    pub live: Arc<ArcSwap<Live>>,
    /// Where accepted mail goes.
    pub spool: Spool,
    /// AUTH users.
    pub credentials: Arc<CredentialsFile>,
    /// Failed AUTH attempts across connections, and the password-hashing bound.
    pub logins: crate::smtp_auth::login_throttle::LoginThrottle,
    /// Wakes the queue runner when a message was spooled.
    pub delivery_wakeup: Arc<Notify>,
    /// The ids of messages put in the queue, for the runner (with `delivery_wakeup`).
    pub arrivals: crate::delivery::arrivals::Arrivals,
    /// Tells the queue runner that the queue was changed by hand (retry, hold, release):
    /// it reads every message's state again.
    pub queue_changed: Arc<Notify>,
    /// The plugin runtime, for loading plugins on reload.
    pub runtime: Runtime,
    /// Transactions recorded for replay (`[capture]`), offered every record by the pipeline.
    pub capture: Arc<crate::capture::Capture>,
    /// Becomes true when the server starts shutting down.
    pub shutdown: watch::Sender<bool>,
    /// Files of the plugin directory that could not be loaded, with why (the console shows
    /// them): kept up to date by the directory watcher and reloads.
    pub load_problems: std::sync::Mutex<std::collections::BTreeMap<std::path::PathBuf, String>>,
    /// DMARC results counted for aggregate reports (`[reports] dmarc` at start).
    pub dmarc_reports: Option<Arc<crate::sender_auth::dmarc_report::DmarcReports>>,
    /// The answers to the ACME CA's checks while an order is open (`[tls.acme]`).
    pub acme: Arc<crate::tls::acme::Challenges>,
    /// Serialises reloads (directory watcher, SIGHUP).
    pub reload_lock: tokio::sync::Mutex<crate::plugin::directory::DirState>,
}

impl ServerContext {
    /// The configuration, plugins and certificate in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// True once shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Loads everything a server needs from `config` (spool, credentials, certificate) — the
/// plugins are loaded by the caller, who reports their errors.
pub fn context(
    config: Config,
    pipeline: Pipeline,
    runtime: Runtime,
) -> anyhow::Result<ServerContext> {
    let spool = Spool::open(&config.server.data_dir.join("spool"))?;
    let credentials = CredentialsFile::open(&config.paths().users_file)?;
    let (tls, certificates) = crate::tls::server_config(&config)?;
    crate::admin::metrics::get().plugins_loaded(pipeline.plugins().len());
    let load_problems = pipeline
        .skipped()
        .iter()
        .map(|(file, why)| (file.clone(), crate::pipeline::stray_warning(file, why)))
        .collect();
    // What the directory watcher knows of the files in service, taken now: a plugin renamed
    // before the first rescan is still recognised by its old file's fingerprint.
    let dir_state = pipeline.dir_state();
    let capture = crate::capture::Capture::start(&config);
    let dmarc_reports = config.reports.dmarc.then(|| {
        Arc::new(crate::sender_auth::dmarc_report::DmarcReports::open(
            config.server.data_dir.join("dmarc-reports"),
        ))
    });
    let pipeline = pipeline.with_capture(Some(capture.clone()));
    Ok(ServerContext {
        live: Arc::new(ArcSwap::from_pointee(Live {
            verifier: Arc::new(
                crate::sender_auth::Authenticator::new(&config)?
                    .with_reports(dmarc_reports.clone()),
            ),
            config,
            pipeline,
            tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
            certificates: Some(certificates),
        })),
        spool,
        credentials: Arc::new(credentials),
        logins: Default::default(),
        delivery_wakeup: Arc::new(Notify::new()),
        queue_changed: Arc::new(Notify::new()),
        arrivals: Default::default(),
        runtime,
        capture,
        shutdown: watch::channel(false).0,
        load_problems: std::sync::Mutex::new(load_problems),
        acme: Default::default(),
        dmarc_reports,
        reload_lock: tokio::sync::Mutex::new(dir_state),
    })
}
