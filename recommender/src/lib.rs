//! The proxbalance recommender: the service that turns snapshots into recommendations, and the
//! `proxbalance` command line.
//!
//! - [`config`]: the TOML/env configuration of the service.
//! - [`state`]: the in-memory state (windows, views, cached sets), free of I/O.
//! - [`overload`]: overload detection with hysteresis.
//! - [`convert`]: lossless conversion of the engine's output to and from protobuf.
//! - [`placement`]: the view's placement rules (Proxmox HA rules and groups, pool rules) and
//!   node reserves.
//! - [`service`]: NATS ingest, event publishing, the gRPC server and the web dashboard; [`run`]
//!   is the entry point.
//! - [`cli`]: the `proxbalance` command line (offline and against a running service).

pub mod cli;
pub mod config;
pub mod convert;
pub mod overload;
pub mod placement;
pub mod service;
pub mod state;

pub use config::Config;
pub use service::{RunningService, ServiceError, run, start};
