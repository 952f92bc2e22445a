//! The proxbalance scoring and recommendation engine.
//!
//! This crate is pure: it does no I/O, reads no clock and draws no random numbers. Its input is a
//! [`ClusterView`] (one cluster at one instant, see docs/engine.md §1) and its output is a
//! [`RecommendationSet`] or a [`MigrationOptions`] answer. The same input always yields the same
//! output, whatever the order of nodes and guests in it.
//!
//! Units: percentages are 0–100, memory is GiB, disk and network rates are bytes per second, time
//! is unix seconds.

mod config;
mod error;
mod gates;
mod numeric;
mod options;
mod plan;
mod planner;
mod reference;
mod report;
mod rules;
mod score;
mod set;
pub mod synthetic;
mod tags;
mod trend;
mod view;
pub mod window;

pub use config::{
    CapacityBasis, ConfigError, HaGuests, MigrationSettings, Overrides, PenaltyConfig, PlannerKind,
    Preset, SeasonalBaseline, Thresholds,
};
pub use error::ViewError;
pub use options::{
    GuestGate, MigrationOptions, SourceOption, TargetOption, UnknownGuest, migration_options,
};
pub use plan::plan;
pub use rules::{Rule, RuleKind, RuleNode, RuleSource, RuleView};
pub use score::{
    Components, PENALTY_KEYS, PenaltyBreakdown, PenaltyClass, ScoreDetails, ScoreMetrics,
};
pub use set::{
    Conflict, CostBenefit, DeferredMove, ExecutionPlan, ExecutionStep, Imbalance, MoveDetails,
    MoveTerm, NodeFigures, NodePrediction, NodeScore, ObjectiveGain, Prediction, ReasonKind,
    Recommendation, RecommendationReason, RecommendationSet, Risk, SkipReason, SkippedGuest,
    Summary, Unresolved, Urgency,
};
pub use tags::GuestTags;
pub use trend::{Confidence, Direction, MetricTrend, TrendAnalysis, TrendSummary};
pub use view::{
    Cluster, ClusterView, Crs, CrsMode, CurrentMetrics, DayAverages, Guest, GuestKind, GuestView,
    HistorySample, Node, NodeStatus, NodeView, Storage, VIEW_FORMAT, WeekStats,
};
pub use window::{NodeWindow, Sample, WindowStats};
