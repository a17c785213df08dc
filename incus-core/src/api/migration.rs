//! Migration between two servers: pull, push and relay.
