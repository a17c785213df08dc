//! What every binary shares: the runner (signals, error printing, exit codes) and the output
//! flags. Exit status: 0 all done; 1 some items failed (each has an error record); 2 usage
//! error, nothing could be done, or interrupted.

use std::process::ExitCode;

use crate::interrupt;
use crate::record::{Format, Output};

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

/// Runs a tool: installs the signal handlers, gives it an [`Output`], maps its result to the
/// exit status and prints a fatal error once, as `TOOL: error: …`.
pub fn run(
    tool: &'static str,
    format: Option<Format>,
    body: impl FnOnce(&Output) -> anyhow::Result<()>,
) -> ExitCode {
    install_signal_handlers();
    let output = Output::stdout(tool, format);
    let result = body(&output);
    match result {
        Ok(()) if interrupt::requested() => {
            eprintln!("{tool}: interrupted: the remaining work was skipped");
            ExitCode::from(2)
        }
        Ok(()) if output.error_count() > 0 => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if e.downcast_ref::<UsageError>().is_some() {
                eprintln!("{tool}: error: {e}");
            } else if matches!(
                e.downcast_ref::<crate::Error>(),
                Some(crate::Error::Cancelled)
            ) {
                eprintln!("{tool}: interrupted: the remaining work was skipped");
            } else {
                eprintln!(
                    "{tool}: error: {}",
                    crate::record::one_line(&format!("{e:#}"))
                );
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
