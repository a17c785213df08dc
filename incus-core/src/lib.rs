//! The one library of the incus-standby tools: the only crate that speaks HTTP to Incus.
//!
//! - [`remote`]: the `incus` CLI's configuration (`$INCUS_CONF`), remotes, certificates, the
//!   local socket.
//! - [`client`]: the transport (unix socket or HTTPS with a pinned server certificate) and the
//!   operation model.
//! - [`api`]: one module per Incus resource.
//! - [`record`]: the newline-delimited JSON stream the tools exchange.
//! - [`replication`]: the replication engine (compare, transfer, restore, make inert, markers,
//!   locks) that incus-push and incus-failover share.
//! - [`cli`], [`select`], [`parallel`]: what every binary shares.
//! - [`pattern`], [`duration`], [`cron`]: pure parsing of Incus's own syntaxes.
//! - [`policy`]: retention rules (restic's `forget`), for incus-prune and the standby's
//!   archive points.

pub mod address;
pub mod api;
pub mod cli;
pub mod cliconfig;
pub mod client;
pub mod cron;
pub mod duration;
pub mod error;
pub mod failover;
pub mod interrupt;
pub mod markers;
pub mod parallel;
pub mod pattern;
pub mod policy;
pub mod record;
pub mod relay;
pub mod remote;
pub mod replication;
pub mod select;

pub use address::{InstanceAddress, RemoteName};
pub use client::Client;
pub use error::{Error, Result};
