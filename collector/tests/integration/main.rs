//! The collector's integration tests, one binary with a module per area: snapshots built
//! from PVE JSON fixtures, and the real binary against a real nats-server.

mod service_binary;
mod snapshot_fixtures;
