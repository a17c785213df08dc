//! incus-trust: set up and check TLS trust between servers, scriptably.

mod trust;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use incus_core::cli::{self, OutputArgs};

const EXAMPLES: &str = "Examples:\n  incus-trust token standby:backup-host > token\n  incus-trust add standby - < token\n  incus-trust check";

/// Set up and check TLS trust between this machine's incus configuration and Incus servers,
/// without prompts and always checking the server's certificate against the token's
/// fingerprint. The result is the incus CLI's own configuration ($INCUS_CONF): `incus list
/// REMOTE:` works with it, and remotes added by the CLI work with the incus-standby tools.
///
/// Examples:
///   incus-trust token standby:backup-host > token          # on a host that administers the standby
///   incus-trust add standby - < token                      # on the host that will use it
///   INCUS_TOKEN=... incus-trust add standby env:INCUS_TOKEN
///   incus-trust add standby https://10.0.0.2:8443 --fingerprint 6d1298e2…
///   incus-trust check                                      # every remote: reachable, pinned, trusted
///   incus-trust list standby:
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a trust token on a server ([REMOTE:]NAME); a token still pending for NAME is
    /// printed again instead of a second one
    Token(trust::TokenArgs),
    /// Add a remote: from a token (checked against the server's certificate on every
    /// address, then redeemed), or from a URL and the server's certificate fingerprint
    Add(trust::AddArgs),
    /// Trusted certificates and pending tokens of a server
    List(trust::ListArgs),
    /// Revoke the pending tokens made for a name
    Revoke(trust::RevokeArgs),
    /// Stop trusting a certificate (by name or fingerprint)
    Remove(trust::RemoveArgs),
    /// Check remotes: reachable, pinned certificate unchanged, our certificate trusted, API
    /// extensions present, listening on the network
    Check(trust::CheckArgs),
}

fn main() -> ExitCode {
    let args = match cli::parse::<Args>("incus-trust") {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::run("incus-trust", args.output.format, |output| {
        match &args.command {
            Command::Token(a) => trust::token(a, output),
            Command::Add(a) => trust::add(a, output),
            Command::List(a) => trust::list(a, output),
            Command::Revoke(a) => trust::revoke(a, output),
            Command::Remove(a) => trust::remove(a, output),
            Command::Check(a) => trust::check(a, output),
        }
    })
}
