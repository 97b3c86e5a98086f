//! `sluice passwd USER` and `sluice admin passwd|unlock`: set an AUTH user's or a console
//! administrator's password (read from standard input); end the console's lock-outs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::setup::load_config;

/// Sets `user`'s password in the users file of the configuration.
pub fn run(user: &str, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    set(user, &config.paths().users_file, "passwd")
}

/// Sets an administrator's password for the web console (`sluice admin passwd USER`).
pub fn run_admin(user: &str, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    set(user, &config.paths().admins_file, "admin passwd")
}

fn set(user: &str, file: &std::path::Path, command: &str) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password for {user} (input is shown): ");
    }
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!(
            "empty password: give it on standard input, e.g. `printf %s 'secret' | sluice {command} {user}`"
        );
    }
    sluice::smtp_auth::credentials::set_password(file, user, password)?;
    println!("{}: password set for {user}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// Add or update an AUTH user; the password is read from standard input (one line).
#[derive(clap::Args)]
pub struct Passwd {
    /// The user name.
    user: String,
    /// Configuration file (for the location of the users file).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Passwd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(&self.user, self.config.as_ref())
    }
}

/// The web console's administrators.
#[derive(clap::Args)]
pub struct Admin {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
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

impl Admin {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            AdminCommand::Passwd { user, config } => run_admin(&user, config.as_ref()),
            AdminCommand::Unlock { config } => {
                let config = load_config(config.as_ref())?;
                let request = sluice::admin::console::unlock_request(&config);
                sluice::private_files::write_private(&request, b"unlock\n")
                    .with_context(|| format!("writing {}", request.display()))?;
                println!(
                    "{}: the console's lock-outs end at its next log-in attempt",
                    request.display()
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
