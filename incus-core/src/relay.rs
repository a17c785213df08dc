//! Relay mode: splice the migration websockets of two servers through this process.
