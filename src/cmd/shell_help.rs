//! `completions SHELL` and `man`: shell completion scripts and manual pages, made from the
//! same clap definitions as `--help` (clap_complete, clap_mangen).

use super::EXIT_OK;
use crate::cli::Cli;
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell` on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// Prints the manual page on stdout, or writes it and one page per subcommand into `out`.
pub(super) fn man(out: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        use std::io::Write;
        std::io::stdout().write_all(&page)?;
        return Ok(EXIT_OK);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("man --out {}: cannot create it: {e}", dir.display()))?;
    let mut written = Vec::new();
    let write = |name: String, cmd: clap::Command| -> anyhow::Result<String> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page)
            .map_err(|e| anyhow::anyhow!("man --out: cannot write {}: {e}", path.display()))?;
        Ok(path.display().to_string())
    };
    let name = cmd.get_name().to_string();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        written.push(write(sub_name.clone(), sub.clone().name(sub_name))?);
    }
    written.insert(0, write(name, cmd)?);
    for w in written {
        println!("{w}");
    }
    Ok(EXIT_OK)
}
