//! The `sluice` command line. Thin by design: parse arguments, set up logging, dispatch.
//! One module per command, each owning its arguments (`clap::Args`) and its `run`:
//! [`serve`], [`reload`], [`passwd`] (and `admin`), [`dkim`], [`queue`], [`plugin`] (`plugin
//! check|new|list|compile`; [`scaffold`] writes `plugin new`'s folders), [`check_config`],
//! [`spam`], [`manpages`]; [`setup`] holds what they share.

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
mod manpages;
mod passwd;
mod plugin;
mod queue;
mod reload;
mod scaffold;
mod serve;
mod setup;
mod spam;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

/// The commands; each module owns its arguments and its `run`.
#[derive(Subcommand)]
enum Command {
    Plugin(plugin::Plugin),
    Serve(serve::Serve),
    Passwd(passwd::Passwd),
    Admin(passwd::Admin),
    Queue(queue::Queue),
    Reload(reload::Reload),
    Dkim(dkim::Dkim),
    Spam(spam::Spam),
    CheckConfig(check_config::CheckConfig),
    #[command(hide = true)]
    Manpages(manpages::Manpages),
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
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(&cli.log_format, default_level);
    let outcome = match cli.command {
        Command::Plugin(c) => c.run(),
        Command::Serve(c) => c.run(),
        Command::Passwd(c) => c.run(),
        Command::Admin(c) => c.run(),
        Command::Queue(c) => c.run(),
        Command::Reload(c) => c.run(),
        Command::Dkim(c) => c.run(),
        Command::Spam(c) => c.run(),
        Command::CheckConfig(c) => c.run(),
        Command::Manpages(c) => c.run(),
    };
    match outcome {
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
        builder.event_format(sluice::admin::logfmt::Logfmt).init();
    }
}
