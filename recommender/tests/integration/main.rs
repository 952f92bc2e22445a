//! The recommender's integration tests, one binary with a module per area (every test
//! binary links the service again): the CLI and the service binaries run as processes,
//! hostile and fuzzed messages, the golden cases. Run one area with its module path, e.g.
//! `cargo test -p proxbalance-recommender --test integration faults_process::`.

// The e2e crate's support (nats-server, pvesim, the collector driven a cycle at a time),
// shared with the process fault tests.
#[path = "../../../tests/e2e/tests/support/mod.rs"]
mod support;

mod cli;
mod faults_process;
mod fuzz_snapshots;
mod golden;
mod hostile_snapshots;
mod secrets_binary;
mod service_binary;
