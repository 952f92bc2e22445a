//! pvesim's integration tests, one binary with a module per area: the demo scenario, the
//! HTTPS API, and what a balancer reads to respect placement (HA rules and groups, `crs`,
//! pools).

mod demo_scenario;
mod https;
mod placement;
