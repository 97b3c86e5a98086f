//! `sluice passwd USER`: set a user's password (read from standard input) in the users file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::load_config;

/// Sets `user`'s password in the users file of the configuration.
pub fn run(user: &str, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
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
    sluice::credentials::set_password(&file, user, password)?;
    println!("{}: password set for {user}", file.display());
    Ok(ExitCode::SUCCESS)
}
