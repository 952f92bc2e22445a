//! pvesim's integration tests, one binary with a module per area: the demo scenario and the
//! HTTPS API.

mod demo_scenario;
mod https;
