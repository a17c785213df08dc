//! incus-push's run: choose the instances, connect to the standby, replicate each with the
//! library's engine, one `push` or `error` record per instance.

use anyhow::Result;
use incus_core::cli::usage;
use incus_core::record::{Output, Record};
use incus_core::replication::{Replicator, address};
use incus_core::select::gather;

use crate::Args;

/// The whole run: the selection, then one replica per job.
pub fn run(args: &Args, output: &Output) -> Result<()> {
    if args.jobs == 0 {
        return Err(usage("--jobs must be at least 1"));
    }
    args.options()?;
    let selection = gather(&args.targets, output)?;
    selection
        .connections
        .remotes()
        .get(&args.to)
        .map_err(|e| usage(format!("--to: {e}")))?;
    if selection.instances.is_empty() && selection.volumes.is_empty() {
        return Ok(());
    }
    // A configuration that cannot make a client (bad certificate files) fails the run.
    selection.connections.client(&args.to, None)?;
    let options = args.options()?;
    let replicator = match Replicator::connect(&options, &selection.connections) {
        Ok(replicator) => replicator,
        // A --target or --target-group the standby cannot honour: a usage error, nothing sent.
        Err(incus_core::Error::Config(message)) => return Err(usage(message)),
        Err(e) => {
            for selected in &selection.instances {
                output.error(
                    Some(&selected.of),
                    &format!(
                        "copying {} to {}: cannot reach the standby: {e}",
                        address(&selected.of),
                        args.to
                    ),
                );
            }
            return Ok(());
        }
    };
    output.set_around_write(replicator.without_bars());
    let total = replicator.total_bar(selection.instances.len() as u64);
    incus_core::parallel::map(&selection.instances, args.jobs, |selected| {
        let result = replicator.replicate(selected);
        total.inc(1);
        match result {
            Ok(record) => output.emit(&Record::Push(record)),
            Err(message) => output.error(
                Some(&selected.of),
                &format!(
                    "copying {} to {}: {message}",
                    address(&selected.of),
                    args.to
                ),
            ),
        }
    });
    total.finish_and_clear();
    incus_core::parallel::map(&selection.volumes, args.jobs, |selected| {
        match replicator.replicate_volume(selected) {
            Ok(record) => output.emit(&Record::VolumePush(record)),
            Err(message) => output.volume_error(
                &selected.of.remote,
                &selected.of.project,
                &selected.volume.to_string(),
                &format!("copying volume {} to {}: {message}", selected.of, args.to),
            ),
        }
    });
    Ok(())
}
