//! The `sluice` command line. Thin by design: parse arguments, set up logging, call the library.
//! One module per command: [`serve`], [`reload`], [`passwd`], [`dkim`], [`queue`], [`plugin`]
//! (`plugin check` and `plugin list`), [`check_config`], [`scaffold`] (`plugin new`), [`spam`].

/// `println!` for the command line: a reader that went away (`sluice queue list | head -1`)
/// ends the command quietly, as it does for other Unix tools, instead of the standard
/// macro's panic. (Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE; the
/// other way out, restoring SIGPIPE's default action, needs `unsafe`, which this crate
/// forbids.) Defined before the modules, so that they use it.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// Ends the process after a failed write to stdout: quietly (status 0) when the reader
/// closed the pipe, else with the error (status 2).
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("sluice: cannot write to standard output: {e}");
    std::process::exit(2);
}

mod check_config;
mod dkim;
mod passwd;
mod plugin;
mod queue;
mod reload;
mod scaffold;
mod serve;
mod spam;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sluice::config::Config;
use sluice::plugin::Runtime;
use sluice::plugin::capabilities::Services;
use sluice::plugin::engine::PoolSize;
use sluice::replay::EnvelopeArgs;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "An SMTP relay with WebAssembly mail filters"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with plugins offline.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Run the SMTP server (the default configuration listens on 127.0.0.1:2525/2587/2465).
    Serve {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Add or update an AUTH user; the password is read from standard input (one line).
    Passwd {
        /// The user name.
        user: String,
        /// Configuration file (for the location of the users file).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The web console's administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Inspect and steer the delivery queue (safe beside a running server).
    Queue {
        /// Configuration file (for the data directory).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Tell the running server to re-read its configuration, certificate and plugins (it
    /// applies them only if all are valid). Checks the file first, then sends SIGHUP to the
    /// PID in the pid file.
    Reload {
        /// Configuration file (for the pid file's location).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// DKIM keys for signing outbound mail.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
    /// Teach the spam-score plugin the site's judgement (its users' Junk folders).
    Spam {
        /// Configuration file (for the plugin's settings and the data directory).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SpamCommand,
    },
    /// Check that `sluice serve` would start with a configuration file and its plugin
    /// directory (plugins' own validation included); print every problem.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Write the manual pages (roff): sluice.1 and one per command, into DIR (used by
    /// scripts/package).
    #[command(hide = true)]
    Manpages {
        /// The directory to write them into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages: id, age, sender, recipients with state and last reply, next attempt.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, delivery history and headers.
    Show {
        /// Queue id.
        id: String,
    },
    /// Attempt delivery now: one message, or all with --all.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Keep a message from being delivered until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message for delivery now.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message: --bounce tells the sender, --drop does not. One is required.
    Delete {
        /// Queue id.
        id: String,
        /// Fail its pending recipients and send the sender a bounce.
        #[arg(long, conflicts_with = "drop", required_unless_present = "drop")]
        bounce: bool,
        /// Remove it silently.
        #[arg(long)]
        drop: bool,
    },
    /// The quarantine: list, release (deliver) or delete.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined messages with the reason.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a message to the queue for delivery.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete a message.
    Delete {
        /// Queue id.
        id: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add or update a console administrator; the password is read from standard input (one
    /// line) and stored as an Argon2id hash in `[admin] users_file` (default
    /// `<data_dir>/admins`).
    Passwd {
        /// The administrator's user name.
        user: String,
        /// Configuration file (for the location of the administrators file).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// End the console's log-in lock-outs (after too many failed log-ins): the running
    /// server clears them at its next log-in attempt.
    Unlock {
        /// Configuration file (for the data directory).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SpamCommand {
    /// Learn messages as spam or as ham; the running plugin uses the new model for the next
    /// message. A message learned again with the other label is relabelled.
    Learn {
        /// The messages are spam.
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        /// The messages are ham (not spam).
        #[arg(long)]
        ham: bool,
        /// Message files, folders or Maildirs; `-` reads one message from standard input.
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// Undo learning messages: the model becomes what it would be had they never been learned.
    Forget {
        /// Message files, folders or Maildirs; `-` reads one message from standard input.
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// Hand one message over for learning, as a mail user (Dovecot's IMAPSieve): it is
    /// written into the drop directory, which Sluice collects. Needs no configuration and no
    /// secret, only the right to create files in DROP.
    Submit {
        /// The message is spam.
        #[arg(long, conflicts_with = "ham", required_unless_present = "ham")]
        spam: bool,
        /// The message is ham (not spam).
        #[arg(long)]
        ham: bool,
        /// The IMAP user it comes from (each user's hand-overs count against a daily quota).
        #[arg(long)]
        user: Option<String>,
        /// The drop directory, e.g. /var/lib/sluice-spam/drop.
        #[arg(long)]
        drop: PathBuf,
        /// The message file, or `-` for standard input.
        message: PathBuf,
    },
    /// Learn what mail users handed over (`sluice submit`) now, once; `sluice serve` does it
    /// every 2 seconds by itself.
    Collect,
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new private key to DIR/DOMAIN.SELECTOR.key (readable by its owner only) and
    /// print the DNS TXT record to publish and the configuration to add.
    Keygen {
        /// The signing domain, e.g. example.org.
        domain: String,
        /// The selector, e.g. 2026a (the record goes to SELECTOR._domainkey.DOMAIN).
        selector: String,
        /// `rsa` (2048 bits, understood everywhere) or `ed25519` (RFC 8463).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// Directory for the key file (default: the current directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Replay messages through the hook chain and print one JSON object per message.
    Check {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run only this plugin: a path to a .wasm file or the name of a plugin in the plugin
        /// directory. Repeatable; order is kept.
        #[arg(long = "plugin", value_name = "PATH_OR_NAME")]
        plugins: Vec<String>,
        /// Envelope sender (default: from the message's headers). Use "" for the null sender.
        #[arg(long)]
        mail_from: Option<String>,
        /// Envelope recipient (default: the message's To/Cc/Bcc). Repeatable.
        #[arg(long)]
        rcpt: Vec<String>,
        /// Client IP address (default 127.0.0.1). Given, the replay also applies relay control
        /// as the server would for that client.
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// HELO name (default localhost).
        #[arg(long)]
        helo: Option<String>,
        /// Authenticated user (default: none).
        #[arg(long)]
        auth_user: Option<String>,
        /// Run the SPF, DKIM and DMARC checks as the server would (with the configuration's
        /// `[authentication]` resolver), for the plugins and the `authentication` output.
        /// Off by default: replay needs no network.
        #[arg(long)]
        authenticate: bool,
        /// Message files (.eml).
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// Create a new plugin folder, ready to build and check: `sluice plugin new NAME --lang
    /// rust|python|js`.
    New {
        /// The plugin's name (its file will be NAME.wasm).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// The hooks to implement (default: check-recipient,check-message).
        #[arg(long, value_delimiter = ',')]
        hooks: Vec<String>,
        /// Where to create the NAME folder (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// List the plugins, in order: those the configuration loads (offline), or with
    /// --server those a running server has in service.
    List {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Ask a running server: its metrics address (host:port), as in `[metrics] address`.
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compile plugins for this machine into the server's compile cache (`[plugins]
    /// cache_dir`, by default `<data_dir>/cache`), so that the server's next start or reload
    /// loads them at once instead of compiling them.
    Compile {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Compile nothing: exit 0 when every file is compiled already, 1 otherwise.
        #[arg(long)]
        check: bool,
        /// Plugin files (default: every plugin of the configured plugin directory).
        files: Vec<PathBuf>,
    },
}

/// mimalloc instead of the system allocator: in the load benchmark's profile with plugins on,
/// glibc's malloc and free took a tenth of the relay's user-space CPU and waited on its arena
/// locks (buffers are often freed on another thread than the one that allocated them, as a
/// message handed to the spool's writer thread). mimalloc cut the relay's user-space CPU per
/// message by about a fifth; idle connections cost ~15 KiB more each.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Spool, Maildir, cache, keys and users file: nothing Sluice writes is for other users.
    sluice::private_files::restrict_umask();
    // A server logs its transactions; the other commands speak only when something is wrong.
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(&cli.log_format, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        // One `key=value` line per event (README: "The log").
        builder.event_format(sluice::logfmt::Logfmt).init();
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::builtin()),
    }
}

/// The plugin runtime for `config`: with the server's store when `serving`, else a scratch
/// store in memory (replays and listings never touch a server's state).
fn runtime_for(config: &Config, serving: bool) -> anyhow::Result<Runtime> {
    let services = if serving {
        Services::for_server(config)
    } else {
        Services::scratch(config)
    }
    .map_err(|e| anyhow::anyhow!("the plugins' key-value store: {e}"))?;
    // `plugin check` and `plugin list` (run in a plugin's own folder, say) keep their compile
    // cache in the user's cache directory unless `plugins.cache_dir` names one, rather than in
    // a `sluice-data/cache` they would create wherever they run. The cache is keyed by engine
    // and file hash, so any location is correct.
    let cache_dir = if !serving && config.plugins.cache_dir.is_none() {
        user_cache_dir()
    } else {
        config.cache_dir()
    };
    Ok(engine_for(config, &cache_dir)?.with_services(services))
}

/// The plugin engine as `sluice serve` builds it for `config` (the same compile-cache key),
/// with its compile cache in `cache_dir` and no host services.
fn engine_for(config: &Config, cache_dir: &std::path::Path) -> anyhow::Result<Runtime> {
    Runtime::new(
        PoolSize {
            max_memory_bytes: config.plugins.max_memory_mb << 20,
            max_instances: config.plugins.max_instances,
            threads: config.plugins.threads,
        },
        cache_dir,
    )
    .context("starting the plugin runtime")
}

/// Writes `sluice.1` and a page for each visible command (`sluice-queue.1`,
/// `sluice-plugin-check.1`, …) into `dir`, generated from the command-line definition.
fn manpages(dir: &std::path::Path) -> anyhow::Result<()> {
    fn write(cmd: clap::Command, dir: &std::path::Path, name: String) -> anyhow::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone().display_name(name.clone())).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            write(sub.clone(), dir, format!("{name}-{}", sub.get_name()))?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    write(cmd, dir, "sluice".to_string())
}

/// `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`, else a directory under the system's
/// temporary directory.
fn user_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("sluice"),
        None => std::env::temp_dir().join(format!(
            "sluice-cache-{}",
            rustix::process::getuid().as_raw()
        )),
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is the queue runner's file work and password hashing: a few threads
        // keep up with either, where tokio's default (512) lets a busy queue start one
        // thread, with its stack and allocator heap, per message in flight.
        .max_blocking_threads(16)
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config: path } => {
            let config = load_config(path.as_ref())?;
            tokio_runtime()?.block_on(serve::run(config, path))
        }
        Command::Reload { config } => reload::run(config.as_ref()),
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => dkim::keygen(&domain, &selector, &algorithm, &out),
        Command::Spam {
            command:
                SpamCommand::Submit {
                    spam,
                    user,
                    drop,
                    message,
                    ..
                },
            ..
        } => {
            spam::submit(&drop, spam, user.as_deref(), &message)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Spam {
            config,
            command: SpamCommand::Collect,
        } => {
            spam::collect(&load_config(config.as_ref())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Spam { config, command } => {
            let config = load_config(config.as_ref())?;
            let (action, messages) = match command {
                SpamCommand::Learn { spam, messages, .. } => (
                    if spam {
                        spam::Action::Spam
                    } else {
                        spam::Action::Ham
                    },
                    messages,
                ),
                SpamCommand::Forget { messages } => (spam::Action::Forget, messages),
                SpamCommand::Submit { .. } | SpamCommand::Collect => unreachable!("above"),
            };
            spam::run(&config, action, &messages)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Passwd { user, config } => passwd::run(&user, config.as_ref()),
        Command::Admin {
            command: AdminCommand::Passwd { user, config },
        } => passwd::run_admin(&user, config.as_ref()),
        Command::Admin {
            command: AdminCommand::Unlock { config },
        } => {
            let config = load_config(config.as_ref())?;
            let request = sluice::console::unlock_request(&config);
            sluice::private_files::write_private(&request, b"unlock\n")
                .with_context(|| format!("writing {}", request.display()))?;
            println!(
                "{}: the console's lock-outs end at its next log-in attempt",
                request.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue { config, command } => {
            let config = load_config(config.as_ref())?;
            queue::run(&config, command)
        }
        Command::CheckConfig { file } => check_config::run(&file),
        Command::Manpages { dir } => {
            manpages(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command:
                PluginCommand::Check {
                    config,
                    plugins,
                    mail_from,
                    rcpt,
                    client_ip,
                    helo,
                    auth_user,
                    authenticate,
                    messages,
                },
        } => {
            let config = load_config(config.as_ref())?;
            let args = EnvelopeArgs {
                mail_from,
                rcpt,
                client_ip,
                helo,
                auth_user,
                authenticate,
            };
            tokio_runtime()?.block_on(plugin::check(config, plugins, args, messages))
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    hooks,
                    dir,
                },
        } => scaffold::run(&name, lang, &hooks, &dir),
        Command::Plugin {
            command:
                PluginCommand::List {
                    config,
                    json,
                    server,
                },
        } => {
            let config = load_config(config.as_ref())?;
            tokio_runtime()?.block_on(plugin::list(config, json, server))
        }
        Command::Plugin {
            command:
                PluginCommand::Compile {
                    config,
                    check,
                    files,
                },
        } => {
            let config = load_config(config.as_ref())?;
            let runtime = engine_for(&config, &config.cache_dir())?;
            plugin::compile(&runtime, &config, files, check)
        }
    }
}
