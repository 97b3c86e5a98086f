//! `sluice passwd USER`: set a user's password (read from standard input) in the users file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::load_config;

/// Sets `user`'s password in the users file of the configuration.
pub fn run(user: &str, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    set(user, &config.users_file(), "passwd")
}

/// Sets an administrator's password for the web console (`sluice admin passwd USER`).
pub fn run_admin(user: &str, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    set(user, &config.admins_file(), "admin passwd")
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
    sluice::credentials::set_password(file, user, password)?;
    println!("{}: password set for {user}", file.display());
    Ok(ExitCode::SUCCESS)
}
