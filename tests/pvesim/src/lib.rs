//! `pvesim`: a Proxmox VE API simulator for tests, benchmarks and the demo.
//!
//! It serves `/api2/json` over HTTPS with a certificate signed by its own cluster CA, checks
//! API tokens, and answers with PVE's envelope, field names, units and typing quirks for a
//! cluster described by a [`Scenario`] (TOML). Load profiles (steady, diurnal, spiky, growing,
//! step, disk-I/O heavy) are seeded so every run repeats, and every number derives from the
//! simulated clock, so tests can step time instead of sleeping.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pvesim::Error> {
//! let scenario = pvesim::Scenario::generated(8, 200, 42);
//! let sim = pvesim::Simulator::start(scenario, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("{} {}", sim.api_url(), sim.fingerprint_sha256());
//! sim.node_down("pve3", pvesim::DownMode::NoRoute)?;
//! sim.advance(60.0);
//! # Ok(()) }
//! ```

mod api;
pub mod clock;
pub mod load;
mod model;
pub mod prng;
mod rrd;
pub mod scenario;
mod server;
pub mod tls;

pub use load::{LoadSpec, Shape};
pub use model::{DownMode, GuestSample, NodeSample};
pub use scenario::{
    ClusterSpec, DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, DiskSpec, Flavour, GuestKind, GuestSpec,
    GuestStatus, HaRuleSpec, NodeSpec, Scenario, ScenarioError, StorageSpec, TokenSpec,
};
pub use server::{Fault, RunningSim, Simulator};

/// Errors of the simulator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(String),
    /// The TLS configuration was refused.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A control call named a node the scenario does not have.
    #[error("unknown node '{0}'")]
    UnknownNode(String),
    /// A control call named an endpoint index that does not exist.
    #[error("unknown endpoint {0}")]
    UnknownEndpoint(usize),
}
