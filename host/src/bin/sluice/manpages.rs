//! `sluice manpages DIR` (hidden): the manual pages, generated from the command line's
//! definition, for scripts/package.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Write the manual pages (roff): sluice.1 and one per command, into DIR (used by
/// scripts/package).
#[derive(clap::Args)]
pub struct Manpages {
    /// The directory to write them into (created if missing).
    dir: PathBuf,
}

impl Manpages {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        manpages(&self.dir)?;
        Ok(ExitCode::SUCCESS)
    }
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
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    cmd.build();
    write(cmd, dir, "sluice".to_string())
}
