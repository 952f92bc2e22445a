//! The end-to-end tests, one binary with a module per area: every extra test binary would
//! link the whole stack again (minutes on two cores). Run one area with its module path, e.g.
//! `cargo test -p proxbalance-e2e --test e2e faults_nats::`; the benchmarks and the soak are
//! `#[ignore]`d (`-- --ignored`, see BENCHMARKS.md).
//!
//! Three areas stay binaries of their own because each installs something process-wide that
//! the others' concurrent tests would write into: `faults_pve` (the global metrics recorder,
//! whose counts it asserts), `secrets_not_logged` (the global log subscriber, whose output it
//! searches) and `trace_propagation` (the global tracing subscriber, whose spans it asserts).

#[path = "../support/mod.rs"]
mod support;

mod bench_collector;
mod bench_recommender;
mod collector;
mod dashboard;
mod demo;
mod deploy_files;
mod deploy_nats;
mod faults_grpc;
mod faults_nats;
mod grpc_security;
mod hardening;
mod nats_tls;
mod placement;
mod recommender;
mod soak;
