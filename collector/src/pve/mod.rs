//! The Proxmox VE API client and the typed views of its answers.

pub mod client;
pub mod error;
pub mod lenient;
pub mod tls;
pub mod types;

pub use client::{ApiToken, PveClient, PveClientSettings};
pub use error::PveError;
pub use tls::TlsVerification;
