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
    /// Validate a configuration file and print every problem.
    CheckConfig {
        /// The file.
        file: PathBuf,
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
        /// Message files (.eml).
        #[arg(required = true)]
        messages: Vec<PathBuf>,
    },
    /// List the plugins the configuration loads, in order.
    List {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(config.as_ref())?;
            tokio_runtime()?.block_on(serve(config))
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
            };
            tokio_runtime()?.block_on(check(config, plugins, args, messages))
        }
        Command::Plugin {
            command: PluginCommand::List { config, json },
        } => {
            let config = load_config(config.as_ref())?;
            tokio_runtime()?.block_on(list(config, json))
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

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = runtime_for(&config)?;
    let pipeline = load_pipeline(&runtime, &config, &[]).await?;
    for p in pipeline.plugins() {
        tracing::info!(plugin = %p.name, version = %p.info.version, hooks = %p.hook_names().join(","), "plugin loaded");
    }
    let ctx = sluice::server::context(config, pipeline)?;
    let server = sluice::server::Server::start(std::sync::Arc::new(ctx)).await?;
    for (kind, addr) in &server.listeners {
        // One line per listener on stdout, so scripts and tests learn the ports.
        println!("listening {} {addr}", kind.as_str());
    }
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.stop().await;
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
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    for (i, file) in messages.iter().enumerate() {
        match replay::replay(&pipeline, file, &args, i + 1).await {
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

async fn list(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = runtime_for(&config)?;
    let pipeline = load_pipeline(&runtime, &config, &[]).await?;
    let rows: Vec<serde_json::Value> = pipeline
        .plugins()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "order": i + 1,
                "name": p.name,
                "plugin_name": p.info.name,
                "version": p.info.version,
                "hooks": p.hook_names(),
                "file": p.file.display().to_string(),
                "sha256": p.sha256,
                "timeout_ms": p.limits.timeout_ms,
                "memory_mb": p.limits.memory_mb,
                "log_lines": p.limits.log_lines,
                "on_failure": p.limits.on_failure,
                "cache": p.cache,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no plugins in {}", config.plugin_dir().display());
    } else {
        for p in pipeline.plugins() {
            println!(
                "{:<20} {:<8} {:<45} {}ms {}MiB on_failure={} sha256={}",
                p.name,
                p.info.version,
                p.hook_names().join(","),
                p.limits.timeout_ms,
                p.limits.memory_mb,
                p.limits.on_failure,
                &p.sha256[..16]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
