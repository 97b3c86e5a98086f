//! `sluice plugin check` (replay messages through the inbound core), `sluice plugin list`,
//! `sluice plugin compile`, and signing: `sluice plugin keygen` and `sluice plugin sign`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use sluice::config::Config;
use sluice::pipeline::replay::{self, EnvelopeArgs};
use sluice::pipeline::{LoadError, Pipeline, PluginRow};
use sluice::plugin::{Runtime, directory};

use crate::setup::{engine_for, load_config, runtime_for, tokio_runtime};

/// Loads the pipeline: the whole configured directory, or only the plugins named.
pub async fn load_pipeline(
    runtime: &Runtime,
    config: &Config,
    only: &[String],
) -> anyhow::Result<Pipeline> {
    let result = if only.is_empty() {
        Pipeline::load(runtime, config).await
    } else {
        let mut files = Vec::new();
        let dir = config.paths().plugin_dir;
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

/// Prints the pipeline's naming warnings on stderr.
fn warn(pipeline: &Pipeline) {
    for w in pipeline.warnings() {
        eprintln!("sluice: warning: {w}");
    }
}

pub async fn check(
    config: Config,
    only: Vec<String>,
    args: EnvelopeArgs,
    messages: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime_for(&config, false)?;
    let pipeline = load_pipeline(&runtime, &config, &only).await?;
    warn(&pipeline);
    let auth = std::sync::Arc::new(sluice::sender_auth::Authenticator::new(&config)?);
    let live = std::sync::Arc::new(sluice::server::context::Live {
        config,
        pipeline,
        tls: None,
        certificates: None,
        verifier: auth,
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

/// `plugin check --capture`: replays each record and prints what changed.
pub async fn check_captures(
    config: Config,
    only: Vec<String>,
    paths: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use sluice::capture::replay;
    let runtime = runtime_for(&config, false)?;
    let pipeline = load_pipeline(&runtime, &config, &only).await?;
    warn(&pipeline);
    let mut files = Vec::new();
    for p in &paths {
        files.extend(replay::record_files(p).map_err(anyhow::Error::msg)?);
    }
    if files.is_empty() {
        bail!("--capture: no records in {}", crate::setup::joined(&paths));
    }
    let mut stdout = std::io::stdout().lock();
    let (mut same, mut changed, mut differ, mut unreadable) = (0, 0, 0, 0);
    for file in &files {
        let replayed = match replay::read(file) {
            Ok(record) => replay::replay(&pipeline, file, &record).await,
            Err(e) => Err(e),
        };
        let r = match replayed {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sluice: {e}");
                unreadable += 1;
                continue;
            }
        };
        if r.verdict_changed {
            changed += 1;
        } else if r.differences.is_empty() {
            same += 1;
        } else {
            differ += 1;
        }
        if json {
            serde_json::to_writer(&mut stdout, &r)?;
            writeln!(stdout)?;
        } else {
            write!(stdout, "{}", r.text())?;
        }
    }
    stdout.flush()?;
    eprintln!(
        "sluice: {} record(s) replayed: {same} the same, {changed} with a changed verdict, {differ} with other differences{}",
        files.len() - unreadable,
        if unreadable > 0 {
            format!(", {unreadable} unreadable")
        } else {
            String::new()
        }
    );
    Ok(if changed > 0 || unreadable > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn list(config: Config, json: bool, server: Option<String>) -> anyhow::Result<ExitCode> {
    let rows: Vec<PluginRow> = match &server {
        Some(addr) => fetch_plugins(addr).await?,
        None => {
            let runtime = runtime_for(&config, false)?;
            let pipeline = load_pipeline(&runtime, &config, &[]).await?;
            warn(&pipeline);
            pipeline.describe()
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        match &server {
            Some(addr) => println!("no plugins in service at {addr}"),
            None => println!("no plugins in {}", config.paths().plugin_dir.display()),
        }
    }
    let join = |items: Vec<&str>| items.join(",");
    for r in &rows {
        let mut scope = String::new();
        if !r.scope.listeners.is_empty() {
            let l = r.scope.listeners.iter().map(|l| l.as_str()).collect();
            scope.push_str(&format!(" listeners={}", join(l)));
        }
        if !r.scope.domains.is_empty() {
            scope.push_str(&format!(" domains={}", r.scope.domains.join(",")));
        }
        if let Some(left) = r.health.cooldown_secs_left {
            scope.push_str(&format!(" COOLING-DOWN({left}s)"));
        }
        if r.health.clients_in_cooldown > 0 {
            let n = r.health.clients_in_cooldown;
            scope.push_str(&format!(" COOLING-DOWN-FOR-{n}-CLIENT(S)"));
        }
        if let Some(s) = &r.signed_by {
            scope.push_str(&format!(" signed-by={:?}", s.name));
        }
        if r.stages_ended > 0 {
            let n = r.stages_ended;
            scope.push_str(&format!(" ended-stage-before-later-plugins={n}"));
        }
        println!(
            "{:>2}. {:<20} {:<8} {:<45} {}ms {}MiB on_failure={} sha256={}{scope}",
            r.order,
            r.name,
            r.version,
            r.hooks.join(","),
            r.limits.timeout_ms,
            r.limits.memory_mb,
            r.limits.on_failure,
            &r.sha256[..r.sha256.len().min(16)],
        );
        if r.cost.hooks.iter().any(|h| h.calls > 0) {
            let parts: Vec<String> = r
                .cost
                .hooks
                .iter()
                .map(|h| {
                    let mut s = format!(
                        "{} {:.0}us-cpu {:.0}us-wall x{}",
                        h.hook, h.cpu_us, h.wall_us, h.calls
                    );
                    if h.kv_per_call > 0.0 || h.dns_per_call > 0.0 {
                        s.push_str(&format!(
                            " kv={:.1} dns={:.1}",
                            h.kv_per_call, h.dns_per_call
                        ));
                    }
                    s
                })
                .collect();
            let memory = r.cost.hooks.iter().map(|h| h.memory_max).max().unwrap_or(0);
            println!(
                "    cost: {}; instance creation {:.0} % of its CPU; memory up to {:.1} MiB",
                parts.join(", "),
                r.cost.instantiate_share * 100.0,
                memory as f64 / 1048576.0
            );
        }
        if let Some(s) = &r.shadow {
            let pairs: Vec<String> = s
                .by_action
                .iter()
                .filter(|(l, sh, _)| l != sh)
                .map(|(l, sh, n)| format!("{l}->{sh}:{n}"))
                .collect();
            println!(
                "    shadow {} version={} sample={} transactions={} calls={} differing={} [{}] mean-score-delta={:+.2} p50 live={}us shadow={}us failures live={} shadow={}",
                s.file,
                s.version,
                s.sample,
                s.transactions,
                s.calls,
                s.differing,
                pairs.join(" "),
                s.mean_score_delta,
                s.live_p50_us,
                s.shadow_p50_us,
                s.live_failures,
                s.shadow_failures,
            );
        }
    }
    // Who runs after whom at each stage: any verdict but `continue` ends the stage, so a
    // plugin listed after one that answers `accept` is not called for that mail.
    println!();
    for hook in [
        "verify-sender",
        "check-recipient",
        "check-message",
        "on-delivery",
        "render-bounce",
    ] {
        let names: Vec<String> = rows
            .iter()
            .filter(|r| r.hooks.iter().any(|h| h == hook))
            .map(|r| r.name.clone())
            .collect();
        if !names.is_empty() {
            println!("{hook:<16} {}", names.join(" -> "));
        }
    }
    println!(
        "(at each stage a verdict other than continue ends it: the plugins after it are not called)"
    );
    Ok(ExitCode::SUCCESS)
}

/// `GET /plugins` from a running server's metrics address (ureq: an HTTP client, on a
/// blocking thread).
async fn fetch_plugins(addr: &str) -> anyhow::Result<Vec<PluginRow>> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut reply = agent
            .get(format!("http://{addr}/plugins"))
            .call()
            .map_err(|e| {
                anyhow::anyhow!(
                    "--server {addr}: cannot connect (is [metrics] address set to it?): {e}"
                )
            })?;
        if reply.status() != 200 {
            let why = reply
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            bail!(
                "--server {addr}: HTTP {}: {}",
                reply.status(),
                sluice::inbound::message::printable(why.trim())
            );
        }
        let body = reply
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .with_context(|| format!("--server {addr}: cannot read the reply"))?;
        serde_json::from_str(&body)
            .with_context(|| format!("--server {addr}: not a Sluice /plugins reply"))
    })
    .await?
}

/// `sluice plugin compile`: compiles `files` (default: the plugin directory's plugins) into
/// `runtime`'s compile cache, one line each. Exits 1 when a file could not be compiled. With
/// `check`, compiles nothing and exits 1 unless every file is compiled already.
pub fn compile(
    runtime: &Runtime,
    config: &Config,
    files: Vec<PathBuf>,
    check: bool,
) -> anyhow::Result<ExitCode> {
    let files = if files.is_empty() {
        let dir = config.paths().plugin_dir;
        directory::scan(&dir, &config.plugins.order)
            .with_context(|| format!("plugin directory {}", dir.display()))?
            .into_iter()
            .map(|f| f.path)
            .collect()
    } else {
        files
    };
    if check {
        let all = files
            .iter()
            .all(|f| f.is_file() && !sluice::plugin::loader::needs_compile(runtime, f));
        return Ok(if all {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let total = files.len();
    let mut failed = 0;
    for (i, file) in files.iter().enumerate() {
        let started = std::time::Instant::now();
        let outcome = std::fs::read(file)
            .map_err(anyhow::Error::from)
            .and_then(|wasm| {
                let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wasm));
                runtime
                    .cache
                    .load_or_compile(&runtime.engine, &wasm, &sha256)
                    .map(|(_, outcome)| outcome)
                    .map_err(|e| anyhow::anyhow!("{e:#}"))
            });
        let n = i + 1;
        match outcome {
            Ok(sluice::plugin::cache::CacheOutcome::Hit) => {
                println!("{n}/{total} {}: already compiled", file.display())
            }
            Ok(sluice::plugin::cache::CacheOutcome::Miss) => println!(
                "{n}/{total} {}: compiled in {:.1} s",
                file.display(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("sluice: {}: cannot compile: {e:#}", file.display());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Work with plugins offline.
#[derive(clap::Args)]
pub struct Plugin {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Replay messages through the hook chain and print one JSON object per message.
    Check {
        /// Configuration file (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run only this plugin: a path to a .wasm file or the name of a plugin in the plugin
        /// directory. Repeatable; order is kept.
        #[arg(long = "plugin", value_name = "PATH_OR_NAME")]
        plugins: Vec<String>,
        #[command(flatten)]
        envelope: EnvelopeArgs,
        /// Replay captured transactions instead (`[capture]`): a record file or a capture
        /// directory. Each plugin gets what it got then (clock, DNS answers, kv values, in a
        /// scratch store); the differences are printed, and the exit status is 1 when a
        /// verdict changed. Repeatable.
        #[arg(long, value_name = "DIR_OR_FILE", conflicts_with = "messages")]
        capture: Vec<PathBuf>,
        /// With --capture: one JSON object per record instead of text.
        #[arg(long, requires = "capture")]
        json: bool,
        /// Message files (.eml).
        #[arg(required_unless_present = "capture")]
        messages: Vec<PathBuf>,
    },
    /// Create a new plugin folder, ready to build and check: `sluice plugin new NAME --lang
    /// rust|python|js`.
    New {
        /// The plugin's name (its file will be NAME.wasm).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
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
    /// Make the shadow version of plugin NAME (`NAME.shadow.wasm`) its live version, in one
    /// atomic rename; the version it replaces is kept for `sluice plugin rollback`. A running
    /// server applies it as any change of its plugin directory.
    Promote {
        /// Configuration file (default: the built-in configuration), for the plugin directory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The plugin.
        name: String,
    },
    /// Put back the version of plugin NAME that the last `sluice plugin promote` replaced.
    Rollback {
        /// Configuration file (default: the built-in configuration), for the plugin directory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The plugin.
        name: String,
    },
    /// Make a key pair for signing plugins: KEY (secret, owner-only) and KEY.pub (the line
    /// to add to `[plugins] trusted_keys`).
    Keygen {
        /// Where to write the signing key; the public key goes to the same path plus `.pub`.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
        /// Who signs with it, shown in `plugin list` and the console.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Sign a plugin file: writes FILE.sig, covering the file's SHA-256 and the capabilities
    /// the plugin may import (none unless given with --allow).
    Sign {
        /// The plugin file (.wasm).
        file: PathBuf,
        /// The signing key, from `sluice plugin keygen`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Capabilities the plugin may import (`kv`, `dns`); comma-separated or repeated.
        #[arg(long, value_delimiter = ',', value_name = "CAPABILITY")]
        allow: Vec<String>,
    },
}

/// `sluice plugin keygen`: writes the key pair, refusing to overwrite either file.
/// Promotes or rolls back `name` in the configured plugin directory and says
/// what is live now.
fn swap(
    config: Option<&PathBuf>,
    name: &str,
    op: fn(&std::path::Path, &str) -> Result<PathBuf, sluice::plugin::shadow::SwapError>,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let dir = load_config(config)?.paths().plugin_dir;
    let live = op(&dir, name)?;
    println!("{name}: {done} ({})", live.display());
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            bail!(
                "{} exists already: choose another --out (a key is never overwritten)",
                p.display()
            );
        }
    }
    let (secret, public) =
        sluice::plugin::signature::keygen(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    sluice::private_files::write_private(out, secret.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    std::fs::write(&public_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!("signing key: {} (keep it secret)", out.display());
    println!("public key:  {}", public_path.display());
    println!(
        "trust it with, in the server's configuration:\n[plugins]\ntrusted_keys = [{public:?}]"
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice plugin sign`: writes FILE.sig.
fn sign(
    file: &std::path::Path,
    key: &std::path::Path,
    allow: &[String],
) -> anyhow::Result<ExitCode> {
    use sluice::config::Capability;
    let mut caps = Vec::new();
    for a in allow {
        let c = Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == a.trim())
            .with_context(|| format!("--allow {a:?}: the capabilities are kv and dns"))?;
        caps.push(c);
    }
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !wasm.starts_with(b"\0asm") {
        bail!("{}: not a WebAssembly file", file.display());
    }
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let (sig, public) = sluice::plugin::signature::sign(&key_text, &wasm, &caps)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let path = sluice::plugin::directory::sig_path(file);
    std::fs::write(&path, sig).with_context(|| format!("cannot write {}", path.display()))?;
    let allowed: Vec<&str> = caps.iter().map(|c| c.as_str()).collect();
    println!(
        "{}: signed by {public}, allowing {}",
        path.display(),
        if allowed.is_empty() {
            "no capability".to_string()
        } else {
            allowed.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

impl Plugin {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            PluginCommand::Check {
                config,
                plugins,
                envelope,
                capture,
                json,
                messages,
            } => {
                let config = load_config(config.as_ref())?;
                if capture.is_empty() {
                    tokio_runtime()?.block_on(check(config, plugins, envelope, messages))
                } else {
                    tokio_runtime()?.block_on(check_captures(config, plugins, capture, json))
                }
            }
            PluginCommand::New {
                name,
                lang,
                hooks,
                dir,
            } => crate::scaffold::run(&name, lang, &hooks, &dir),
            PluginCommand::List {
                config,
                json,
                server,
            } => {
                let config = load_config(config.as_ref())?;
                tokio_runtime()?.block_on(list(config, json, server))
            }
            PluginCommand::Compile {
                config,
                check,
                files,
            } => {
                let config = load_config(config.as_ref())?;
                let runtime = engine_for(&config, &config.paths().cache_dir)?;
                compile(&runtime, &config, files, check)
            }
            PluginCommand::Keygen { out, name } => keygen(&out, &name),
            PluginCommand::Promote { config, name } => swap(
                config.as_ref(),
                &name,
                sluice::plugin::shadow::promote,
                &format!(
                    "the shadow is now the live version; the replaced one is kept for `sluice plugin rollback {name}`"
                ),
            ),
            PluginCommand::Rollback { config, name } => swap(
                config.as_ref(),
                &name,
                sluice::plugin::shadow::rollback,
                "the previous version is live again",
            ),
            PluginCommand::Sign { file, key, allow } => sign(&file, &key, &allow),
        }
    }
}
