//! What every binary shares: the runner (signals, error printing, exit codes, the `end`
//! record) and the output flags. Exit status: 0 all done; 1 some items failed (each has an
//! error record), or a tool upstream did not end `ok`; 2 usage error, nothing could be done,
//! interrupted, or stdout closed.

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::interrupt;
use crate::record::{Format, Outcome, Output};

/// Flags every tool has.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format: json (one record per line) or text; default: text on a terminal, json
    /// otherwise
    #[arg(long, value_enum, global = true)]
    pub format: Option<Format>,
}

/// A mistake in the command line or its values: exit 2 before anything was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Builds a usage error from its one-line message (a `&str`, a `String`, or a typed error
/// such as [`crate::address::ParseError`], whose display text is the message).
pub fn usage(message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.to_string()))
}

/// `TOOL --generate-docs DIR`: writes the man pages (`DIR/man1/TOOL.1`, one more per
/// subcommand, `TOOL-SUB.1`) and the completions for bash, zsh and fish
/// (`DIR/completions/{bash/TOOL,zsh/_TOOL,fish/TOOL.fish}`), all from the clap definitions the
/// tool parses with, so that they never drift from `--help`. Hidden: for packaging.
fn generate_docs<A: clap::CommandFactory>(
    tool: &str,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let command = A::command()
        .name(tool.to_string())
        .bin_name(tool.to_string());
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    let mut pages = vec![(tool.to_string(), command.clone())];
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{tool}-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(man.join(format!("{name}.1")), out)?;
    }
    for (shell, sub, file) in [
        (Shell::Bash, "bash", tool.to_string()),
        (Shell::Zsh, "zsh", format!("_{tool}")),
        (Shell::Fish, "fish", format!("{tool}.fish")),
    ] {
        let dir = dir.join("completions").join(sub);
        std::fs::create_dir_all(&dir)?;
        let mut out = Vec::new();
        let mut command = command.clone();
        clap_complete::generate(shell, &mut command, tool, &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

/// Parses the command line. A mistake in it is still reported in band: the next tool in a
/// pipeline gets a run-level `error` record and an `end` record saying this tool failed, so
/// that it does not mistake an empty stream for "nothing to do".
pub fn parse<A: clap::Parser>(tool: &'static str) -> Result<A, ExitCode> {
    use clap::error::ErrorKind;
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == "--generate-docs") {
        let Some(dir) = raw.get(2) else {
            eprintln!("{tool}: error: --generate-docs needs a directory");
            return Err(ExitCode::from(2));
        };
        return Err(match generate_docs::<A>(tool, std::path::Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{tool}: error: generating the documentation: {e}");
                ExitCode::from(2)
            }
        });
    }
    match A::try_parse() {
        Ok(args) => Ok(args),
        Err(e) => {
            let _ = e.print();
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Err(ExitCode::SUCCESS);
            }
            if !std::io::stdout().is_terminal() {
                let output = Output::stdout(tool, Some(Format::Json));
                output.record_only_error(&format!(
                    "{}; see {tool} --help",
                    usage_line(&e.to_string())
                ));
                output.finish(Outcome::Failed);
            }
            Err(ExitCode::from(2))
        }
    }
}

/// clap's message as one line: its lines up to the usage, joined (a missing argument's name
/// is on the line after "were not provided:").
fn usage_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.trim_start_matches("error: ").to_string();
    if line.is_empty() {
        "invalid arguments".to_string()
    } else {
        line
    }
}

/// Runs a tool: installs the signal handlers, gives it an [`Output`], maps its result to the
/// exit status, prints a fatal error once (`TOOL: error: …`, and a run-level `error` record),
/// and writes the `end` record last.
pub fn run(
    tool: &'static str,
    format: Option<Format>,
    body: impl FnOnce(&Output) -> anyhow::Result<()>,
) -> ExitCode {
    install_signal_handlers();
    // Fault injection for the tests (`FAILPOINTS=…`), only in builds with the `failpoints`
    // feature: elsewhere the variable is ignored.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let output = Output::stdout(tool, format);
    let result = body(&output);
    let own = match result {
        Ok(()) if output.is_closed() => {
            eprintln!("{tool}: stdout was closed: stopped, the remaining work was skipped");
            Outcome::Failed
        }
        Ok(()) if interrupt::requested() => {
            eprintln!("{tool}: interrupted: the remaining work was skipped");
            Outcome::Failed
        }
        Ok(()) if output.error_count() > 0 => Outcome::Partial,
        Ok(()) => Outcome::Ok,
        Err(e) => {
            if output.is_closed() {
                eprintln!("{tool}: stdout was closed: stopped, the remaining work was skipped");
            } else if matches!(
                e.downcast_ref::<crate::Error>(),
                Some(crate::Error::Cancelled)
            ) {
                eprintln!("{tool}: interrupted: the remaining work was skipped");
                output.record_only_error("interrupted: the remaining work was skipped");
            } else {
                let message = if e.downcast_ref::<UsageError>().is_some() {
                    e.to_string()
                } else {
                    crate::record::one_line(&format!("{e:#}"))
                };
                output.fatal(&message);
            }
            Outcome::Failed
        }
    };
    let pipeline = output.finish(own);
    if std::env::var_os("INCUS_STANDBY_STATS").is_some_and(|v| v == "1" || v == "2") {
        eprintln!(
            "{tool}: stats: {} API requests",
            crate::client::API_CALLS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    if output.is_closed() && own != Outcome::Failed {
        // Only the end record was lost: the reader still did not get the whole stream.
        eprintln!("{tool}: stdout was closed before the end record");
        return ExitCode::from(2);
    }
    ExitCode::from(exit_status(own, pipeline))
}

/// The exit status: this tool's own (0, 1, 2), at least 1 when a tool upstream did not end
/// `ok`, so that the last stage of a pipeline reports a failure of any stage.
pub fn exit_status(own: Outcome, pipeline: Outcome) -> u8 {
    match (own, pipeline) {
        (Outcome::Failed, _) => 2,
        (_, Outcome::Ok) => 0,
        _ => 1,
    }
}

/// SIGINT, SIGTERM and SIGHUP set the interruption flag: waits cancel what Incus can cancel
/// and no new work starts. A second signal ends the process at once (exit 130).
fn install_signal_handlers() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let flag = interrupt::flag();
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_reports_a_failure_upstream() {
        assert_eq!(exit_status(Outcome::Ok, Outcome::Ok), 0);
        assert_eq!(exit_status(Outcome::Partial, Outcome::Partial), 1);
        assert_eq!(exit_status(Outcome::Ok, Outcome::Partial), 1);
        assert_eq!(exit_status(Outcome::Ok, Outcome::Failed), 1);
        assert_eq!(exit_status(Outcome::Failed, Outcome::Failed), 2);
    }

    #[test]
    fn a_usage_error_keeps_the_names_of_missing_arguments() {
        let clap_says = "error: the following required arguments were not provided:\n  --standby <REMOTE>\n\nUsage: incus-failover promote --standby <REMOTE> <TARGET>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(clap_says),
            "the following required arguments were not provided: --standby <REMOTE>"
        );
        assert_eq!(
            usage_line("error: unexpected argument '--to' found\n\nUsage: x"),
            "unexpected argument '--to' found"
        );
        assert_eq!(usage_line(""), "invalid arguments");
    }
}
