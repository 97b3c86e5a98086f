//! The `sluice` command line. Thin by design: parse arguments, set up logging, call the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use sluice::config::Config;
use sluice::pipeline::{LoadError, Pipeline};
use sluice::plugin::engine::PoolSize;
use sluice::plugin::{Runtime, directory};
use sluice::replay::{self, EnvelopeArgs};

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
    /// Validate a configuration file and print every problem.
    CheckConfig {
        /// The file.
        file: PathBuf,
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
        /// Client IP address (default 127.0.0.1).
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::builtin()),
    }
}

fn runtime_for(config: &Config) -> anyhow::Result<Runtime> {
    Runtime::new(
        PoolSize {
            max_memory_bytes: config.plugins.max_memory_mb << 20,
            max_instances: config.plugins.max_instances,
        },
        &config.cache_dir(),
    )
    .context("starting the plugin runtime")
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
            tokio_runtime()?.block_on(serve(config, path))
        }
        Command::Reload { config } => {
            // Check the file here too, so the operator sees its problems at once; the server
            // checks again (and also loads the plugins) before applying it.
            let config = load_config(config.as_ref())
                .context("the configuration is not valid; the server was not signalled")?;
            let pid_file = config.pid_file();
            let text = std::fs::read_to_string(&pid_file).with_context(|| {
                format!(
                    "{}: cannot read the pid file (is sluice serve running with this configuration?)",
                    pid_file.display()
                )
            })?;
            let pid: i32 = text
                .trim()
                .parse()
                .with_context(|| format!("{}: not a process id", pid_file.display()))?;
            let pid = rustix::process::Pid::from_raw(pid)
                .with_context(|| format!("{}: not a process id", pid_file.display()))?;
            rustix::process::kill_process(pid, rustix::process::Signal::HUP).with_context(
                || format!("cannot signal process {pid:?} from {}", pid_file.display()),
            )?;
            println!(
                "sent SIGHUP to sluice (pid {}); it applies the configuration only if it is valid — see its log",
                pid.as_raw_nonzero()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dkim {
            command:
                DkimCommand::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => {
            let ed25519 = match algorithm.as_str() {
                "rsa" => false,
                "ed25519" => true,
                other => bail!("--algorithm {other:?}: use rsa or ed25519"),
            };
            let valid_label = |s: &str| {
                !s.is_empty()
                    && s.split('.').all(|l| {
                        !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
            };
            if !valid_label(&domain) || !valid_label(&selector) {
                bail!("{domain:?} / {selector:?}: the domain and the selector must be DNS names");
            }
            let path = out.join(format!("{domain}.{selector}.key"));
            if path.exists() {
                bail!(
                    "{}: exists; not overwritten (a published key would stop verifying)",
                    path.display()
                );
            }
            let (pem, record) =
                sluice::authentication::keygen(ed25519).map_err(|e| anyhow::anyhow!(e))?;
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("{}", path.display()))?;
                f.write_all(pem.as_bytes())?;
                f.sync_all()?;
            }
            eprintln!("wrote {}", path.display());
            // Zone-file syntax: character-strings of at most 255 bytes, concatenated by
            // resolvers (an RSA key is longer).
            let strings: Vec<String> = record
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            println!(
                "{selector}._domainkey.{domain}. IN TXT {}",
                strings.join(" ")
            );
            eprintln!(
                "\nPublish the record above, then add to the configuration:\n\n[[authentication.dkim_key]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = {:?}",
                std::fs::canonicalize(&path).unwrap_or(path)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Passwd { user, config } => {
            let config = load_config(config.as_ref())?;
            let mut password = String::new();
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password for {user} (input is shown): ");
            }
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!(
                    "empty password: give it on standard input, e.g. `printf %s 'secret' | sluice passwd {user}`"
                );
            }
            let file = config.users_file();
            sluice::credentials::set_password(&file, &user, password)?;
            println!("{}: password set for {user}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue { config, command } => {
            let config = load_config(config.as_ref())?;
            queue(&config, command)
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
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
            tokio_runtime()?.block_on(check(config, plugins, args, messages))
        }
        Command::Plugin {
            command:
                PluginCommand::List {
                    config,
                    json,
                    server,
                },
        } => {
            let config = load_config(config.as_ref())?;
            tokio_runtime()?.block_on(list(config, json, server))
        }
    }
}

/// Loads the pipeline: the whole configured directory, or only the plugins named.
async fn load_pipeline(
    runtime: &Runtime,
    config: &Config,
    only: &[String],
) -> anyhow::Result<Pipeline> {
    let result = if only.is_empty() {
        Pipeline::load(runtime, config).await
    } else {
        let mut files = Vec::new();
        let dir = config.plugin_dir();
        for item in only {
            let path = PathBuf::from(item);
            if item.ends_with(".wasm") || item.contains('/') {
                if !path.is_file() {
                    bail!("--plugin {item}: no such file");
                }
                let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                let name = directory::parse_file_name(file_name)
                    .map(|(n, _)| n)
                    .with_context(|| {
                        format!("--plugin {item}: a plugin file name is NAME.wasm or NN-NAME.wasm, NAME of letters, digits, '-' and '_'")
                    })?;
                files.push((name, path));
            } else {
                let found = directory::scan(&dir, &[])
                    .with_context(|| format!("plugin directory {}", dir.display()))?
                    .into_iter()
                    .find(|f| f.name == *item)
                    .with_context(|| {
                        format!(
                            "--plugin {item}: no plugin of that name in {}",
                            dir.display()
                        )
                    })?;
                files.push((found.name, found.path));
            }
        }
        Pipeline::load_files(runtime, config, &files).await
    };
    result.map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(LoadError::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    for (dir, key) in [
        (&config.server.data_dir, "server.data_dir"),
        (&config.cache_dir(), "plugins.cache_dir"),
    ] {
        sluice::private_files::check_not_shared(dir, key).map_err(|e| anyhow::anyhow!(e))?;
    }
    let runtime = runtime_for(&config)?;
    let pipeline = load_pipeline(&runtime, &config, &[]).await?;
    for p in pipeline.plugins() {
        tracing::info!(plugin = %p.name, version = %p.info.version, hooks = %p.hook_names().join(","), "plugin loaded");
    }
    let pid_file = config.pid_file();
    let drain = std::time::Duration::from_secs(config.server.drain_timeout_secs);
    let ctx = sluice::context::context(config, pipeline, runtime)?;
    let server = sluice::server::Server::start(std::sync::Arc::new(ctx)).await?;
    if let Some(dir) = pid_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    for (kind, addr) in &server.listeners {
        // One line per listener on stdout, so scripts and tests learn the ports.
        println!("listening {} {addr}", kind.as_str());
    }
    if let Some(addr) = server.metrics {
        println!("listening metrics {addr}");
    }
    std::io::stdout().flush()?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = sluice::reload::reload_config(server.context(), path.as_deref()).await;
            }
        }
    }
    server.shutdown(drain).await;
    let _ = std::fs::remove_file(&pid_file);
    Ok(ExitCode::SUCCESS)
}

/// Prints queue entries. Addresses, reasons and remote replies came from clients, plugins and
/// other servers: control characters in them are shown escaped, never sent to the terminal.
fn print_entries(entries: &[sluice::delivery::admin::Entry], json: bool) -> anyhow::Result<()> {
    use sluice::message::printable;
    if json {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("empty");
    }
    for e in entries {
        let sender = if e.sender.is_empty() {
            "<>"
        } else {
            e.sender.as_str()
        };
        let mut flags = String::new();
        if e.held {
            flags.push_str(" HELD");
        }
        if let Some(q) = &e.quarantine {
            flags.push_str(&format!(" quarantined: {}", printable(q)));
        }
        println!(
            "{} {} {} bytes from {}{flags}",
            e.id,
            e.received_at,
            e.size,
            printable(sender)
        );
        if let Some(next) = &e.next_attempt {
            println!("    next attempt {next} (attempts so far: {})", e.attempts);
        }
        for (rcpt, status, reply) in &e.recipients {
            println!(
                "    {} {status:?}{}",
                printable(rcpt),
                reply
                    .as_ref()
                    .map(|r| format!(": {}", printable(&r.to_string())))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn queue(config: &Config, command: QueueCommand) -> anyhow::Result<ExitCode> {
    use sluice::delivery::admin;
    use sluice::spool::SpoolState;
    let spool = sluice::spool::Spool::attach(&config.server.data_dir.join("spool"))?;
    match command {
        QueueCommand::List { json } => {
            print_entries(&admin::list(&spool, SpoolState::Queue)?, json)?
        }
        QueueCommand::Show { id } => {
            let (entry, history, headers) = admin::show(&spool, SpoolState::Queue, &id)
                .or_else(|_| admin::show(&spool, SpoolState::Quarantine, &id))?;
            print_entries(std::slice::from_ref(&entry), false)?;
            println!("history:");
            for h in history {
                println!("    {}", sluice::message::printable(&h.to_string()));
            }
            println!("headers:");
            for line in headers.lines() {
                println!("{}", sluice::message::printable(line));
            }
        }
        QueueCommand::Retry { id, all } => {
            let ids = match (id, all) {
                (Some(id), false) => vec![id],
                (None, true) => spool.list(SpoolState::Queue)?,
                _ => bail!("give a queue id or --all"),
            };
            for id in &ids {
                admin::retry(&spool, id)?;
            }
            println!("{} message(s) scheduled for delivery now", ids.len());
        }
        QueueCommand::Hold { id } => {
            admin::hold(&spool, &id)?;
            println!("{id}: held");
        }
        QueueCommand::Release { id } => {
            admin::release(&spool, &id)?;
            println!("{id}: released");
        }
        QueueCommand::Delete { id, bounce, .. } => {
            admin::delete(&spool, &id, bounce)?;
            println!(
                "{id}: {}",
                if bounce {
                    "deleted; the sender will get a bounce"
                } else {
                    "dropped"
                }
            );
        }
        QueueCommand::Quarantine { command } => match command {
            QuarantineCommand::List { json } => {
                print_entries(&admin::list(&spool, SpoolState::Quarantine)?, json)?
            }
            QuarantineCommand::Release { id } => {
                admin::quarantine_release(&spool, &id)?;
                println!("{id}: released to the queue");
            }
            QuarantineCommand::Delete { id } => {
                admin::quarantine_delete(&spool, &id)?;
                println!("{id}: deleted");
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(
    config: Config,
    only: Vec<String>,
    args: EnvelopeArgs,
    messages: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime_for(&config)?;
    let pipeline = load_pipeline(&runtime, &config, &only).await?;
    let auth = std::sync::Arc::new(sluice::authentication::Authenticator::new(&config)?);
    let live = std::sync::Arc::new(sluice::context::Live {
        config,
        pipeline,
        tls: None,
        auth,
    });
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    for (i, file) in messages.iter().enumerate() {
        match replay::replay(&live, file, &args, i + 1).await {
            Ok(report) => {
                serde_json::to_writer(&mut stdout, &report)?;
                writeln!(stdout)?;
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                failed = true;
            }
        }
    }
    stdout.flush()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn list(config: Config, json: bool, server: Option<String>) -> anyhow::Result<ExitCode> {
    let rows: Vec<serde_json::Value> = match &server {
        Some(addr) => fetch_plugins(addr).await?,
        None => {
            let runtime = runtime_for(&config)?;
            load_pipeline(&runtime, &config, &[]).await?.describe()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        match &server {
            Some(addr) => println!("no plugins in service at {addr}"),
            None => println!("no plugins in {}", config.plugin_dir().display()),
        }
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for r in &rows {
        let hooks: Vec<String> = r["hooks"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let mut scope = String::new();
        for key in ["listeners", "domains"] {
            if let Some(a) = r[key].as_array().filter(|a| !a.is_empty()) {
                let v: Vec<String> = a.iter().map(text).collect();
                scope.push_str(&format!(" {key}={}", v.join(",")));
            }
        }
        if let Some(left) = r["cooldown_secs_left"].as_u64() {
            scope.push_str(&format!(" COOLING-DOWN({left}s)"));
        }
        if let Some(n) = r["clients_in_cooldown"].as_u64().filter(|n| *n > 0) {
            scope.push_str(&format!(" COOLING-DOWN-FOR-{n}-CLIENT(S)"));
        }
        let sha = text(&r["sha256"]);
        println!(
            "{:>2}. {:<20} {:<8} {:<45} {}ms {}MiB on_failure={} sha256={}{scope}",
            text(&r["order"]),
            text(&r["name"]),
            text(&r["version"]),
            hooks.join(","),
            text(&r["timeout_ms"]),
            text(&r["memory_mb"]),
            text(&r["on_failure"]),
            &sha[..sha.len().min(16)],
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `GET /plugins` from a running server's metrics address.
async fn fetch_plugins(addr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("--server {addr}: cannot connect (is [metrics] address set to it?)")
        })?;
    s.write_all(
        format!("GET /plugins HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .with_context(|| format!("--server {addr}: not an HTTP reply"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("--server {addr}: {}", head.lines().next().unwrap_or(""));
    }
    serde_json::from_str(body)
        .with_context(|| format!("--server {addr}: not a Sluice /plugins reply"))
}
