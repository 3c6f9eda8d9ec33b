//! Man pages (clap_mangen) and shell completions (clap_complete) for the
//! five binaries, written from their own command-line definitions, so
//! they never drift from `--help`. The Debian package's build asks each
//! binary for them by running it with `VNET_WRITE_DOCS=<dir>`
//! (scripts/package-deb.sh); the binary writes `<dir>/man/<name>.1` and
//! `<dir>/completions/` (bash, zsh, fish) and exits.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use clap_complete::Shell;

/// The environment variable that asks a binary for its docs.
pub const WRITE_DOCS_ENV: &str = "VNET_WRITE_DOCS";

/// Writes `command`'s man page and completions if [`WRITE_DOCS_ENV`] is
/// set; the exit code to end with then, else none (run as usual).
pub fn write_if_asked(command: clap::Command) -> Option<ExitCode> {
    let dir = std::env::var_os(WRITE_DOCS_ENV)?;
    let name = command.get_name().to_string();
    Some(match write(command, Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "{name}: cannot write docs into {}: {e}",
                Path::new(&dir).display()
            );
            ExitCode::from(1)
        }
    })
}

/// Writes the man page and the completions of `command` under `dir`.
pub fn write(mut command: clap::Command, dir: &Path) -> io::Result<()> {
    let name = command.get_name().to_string();
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    fs::write(man.join(format!("{name}.1")), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, &name, &completions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_gets_a_man_page_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("vnet-demo")
            .about("A demo")
            .arg(clap::Arg::new("home").short('d').long("home"));
        write(cmd, dir.path()).unwrap();
        let page = fs::read_to_string(dir.path().join("man/vnet-demo.1")).unwrap();
        assert!(
            page.contains(".TH vnet-demo") && page.contains("A demo"),
            "{page}"
        );
        // Each shell's own spelling of the option.
        for (f, option) in [
            ("vnet-demo.bash", "--home"),
            ("_vnet-demo", "--home"),
            ("vnet-demo.fish", "-l home"),
        ] {
            let text = fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains(option), "{f}: {text}");
        }
    }
}
