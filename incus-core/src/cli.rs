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

/// Builds a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Parses the command line. A mistake in it is still reported in band: the next tool in a
/// pipeline gets a run-level `error` record and an `end` record saying this tool failed, so
/// that it does not mistake an empty stream for "nothing to do".
pub fn parse<A: clap::Parser>(tool: &'static str) -> Result<A, ExitCode> {
    use clap::error::ErrorKind;
    match A::try_parse() {
        Ok(args) => Ok(args),
        Err(e) => {
            let _ = e.print();
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return Err(ExitCode::SUCCESS);
            }
            if !std::io::stdout().is_terminal() {
                let output = Output::stdout(tool, Some(Format::Json));
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("invalid arguments");
                output.record_only_error(&format!(
                    "{}; see {tool} --help",
                    first.trim_start_matches("error: ")
                ));
                output.finish(Outcome::Failed);
            }
            Err(ExitCode::from(2))
        }
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
}
