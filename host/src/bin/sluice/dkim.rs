//! `sluice dkim keygen`: a new DKIM key pair, the private key written owner-only, the DNS
//! record printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Generates a key for `domain`/`selector` (`algorithm` rsa or ed25519) into `out`.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let ed25519 = match algorithm {
        "rsa" => false,
        "ed25519" => true,
        other => bail!("--algorithm {other:?}: use rsa or ed25519"),
    };
    let valid_label = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !valid_label(domain) || !valid_label(selector) {
        bail!("{domain:?} / {selector:?}: the domain and the selector must be DNS names");
    }
    let path = out.join(format!("{domain}.{selector}.key"));
    if path.exists() {
        bail!(
            "{}: exists; not overwritten (a published key would stop verifying)",
            path.display()
        );
    }
    let (pem, record) = sluice::sender_auth::keygen(ed25519).map_err(|e| anyhow::anyhow!(e))?;
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

/// DKIM keys for signing outbound mail.
#[derive(clap::Args)]
pub struct Dkim {
    #[command(subcommand)]
    command: DkimCommand,
}

#[derive(clap::Subcommand)]
pub enum DkimCommand {
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

impl Dkim {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            DkimCommand::Keygen {
                domain,
                selector,
                algorithm,
                out,
            } => keygen(&domain, &selector, &algorithm, &out),
        }
    }
}
