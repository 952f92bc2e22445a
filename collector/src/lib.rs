//! Polls Proxmox VE clusters and publishes per-node snapshots to NATS JetStream.
//!
//! - [`pve`]: the PVE API client (token auth, verified TLS, failover, lenient decoding).
//! - [`snapshot`]: pure construction of the wire messages from PVE answers.
//! - [`cycle`]: one collection cycle of one cluster, with its caches.
//! - [`placement`]: Proxmox HA rules (PVE 9) and groups (PVE 8), read every cycle.
//! - [`publisher`]: JetStream streams and acknowledged publishing.
//! - [`config`]: the TOML/env configuration.
//! - [`app`]: [`app::run`], the service loop for many clusters.

pub mod app;
pub mod config;
pub mod cycle;
pub mod placement;
pub mod publisher;
pub mod pve;
pub mod retry;
pub mod snapshot;

pub use app::run;
pub use config::Config;
