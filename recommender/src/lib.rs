//! The proxbalance recommender: the service that turns snapshots into recommendations, and the
//! `proxbalance` command line.

pub mod cli;
