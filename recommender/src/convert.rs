//! Lossless conversion between the engine's output types and their protobuf mirrors
//! (`proxbalance.v1.RecommendationSet`, `MigrationOptions`, ...).
//!
//! Engine → proto cannot fail. Proto → engine fails with [`ConvertError`] naming the field when
//! a message holds something the engine never produces (an unknown enum word, a missing
//! required message). For every engine value `v`, `from_proto(to_proto(v)) == v`.

use std::collections::BTreeMap;

use proxbalance_engine as engine;
use proxbalance_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A protobuf message could not be turned back into the engine's type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    /// Path of the field at fault (e.g. `recommendations[3].reason.kind`).
    pub field: String,
    /// What was expected.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.into(),
        message: message.into(),
    }
}

/// The JSON spelling of an engine enum (`"high"`, `"online"`, ...).
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn from_word<T: DeserializeOwned>(field: &str, text: &str) -> Result<T, ConvertError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| err(field, format!("unknown value {text:?}")))
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn required<'a, T>(field: &str, v: Option<&'a T>) -> Result<&'a T, ConvertError> {
    v.ok_or_else(|| err(field, "missing"))
}

// ------------------------------------------------------------------ enums

/// Declares the two conversions between an engine enum and its protobuf twin from one list
/// of variant names (the protobuf enum has the same names plus `Unspecified`).
macro_rules! enum_conversions {
    ($(#[$doc:meta])* $to:ident, $from:ident, $engine:ty, $proto:ty, $what:literal, [$($v:ident),+ $(,)?]) => {
        $(#[$doc])*
        pub fn $to(value: $engine) -> $proto {
            match value {
                $(<$engine>::$v => <$proto>::$v,)+
            }
        }

        fn $from(field: &str, v: i32) -> Result<$engine, ConvertError> {
            match <$proto>::try_from(v) {
                $(Ok(<$proto>::$v) => Ok(<$engine>::$v),)+
                Ok(<$proto>::Unspecified) | Err(_) => {
                    Err(err(field, format!(concat!("unknown ", $what, " {}"), v)))
                }
            }
        }
    };
}

enum_conversions!(
    /// The protobuf value of a skip reason.
    skip_reason_to_proto,
    skip_reason_from_proto,
    engine::SkipReason,
    pb::SkipReason,
    "skip reason",
    [
        HasIgnoreTag,
        HaManaged,
        Stopped,
        Template,
        Locked,
        PassthroughDisk,
        UnsharedBindMount,
        SourceMemoryHealthy,
        InsufficientImprovement,
        NoSuitableTarget,
        ConfigUnknown,
        ManagedByPveCrs,
    ]
);

enum_conversions!(
    /// The protobuf value of a recommendation's reason.
    reason_kind_to_proto,
    reason_kind_from_proto,
    engine::ReasonKind,
    pb::ReasonKind,
    "reason kind",
    [
        MaintenanceEvacuation,
        IowaitRelief,
        CpuImbalance,
        MemImbalance,
        AntiAffinity,
        Overcommit,
        NodeAffinity,
        Affinity,
    ]
);

enum_conversions!(
    /// The protobuf value of a move's term.
    move_term_to_proto,
    move_term_from_proto,
    engine::MoveTerm,
    pb::MoveTerm,
    "move term",
    [
        Maintenance,
        AntiAffinity,
        IowaitRelief,
        MemoryBalance,
        CpuBalance,
        Overcommit,
        Iowait,
        Affinity,
        NodeHealth,
        NodeAffinity,
    ]
);

/// Declares the two conversions between an engine struct and its protobuf twin whose fields
/// have the same names and copy as they are, from one list of field names.
macro_rules! field_conversions {
    ($to:ident, $from:ident, $engine:path, $proto:path, [$($f:ident),+ $(,)?]) => {
        fn $to(v: &$engine) -> $proto {
            $proto { $($f: v.$f,)+ }
        }

        fn $from(v: &$proto) -> $engine {
            $engine { $($f: v.$f,)+ }
        }
    };
}

// ------------------------------------------------------------------ score details

/// The penalty conversions, over the engine's one list of penalty keys.
macro_rules! penalty_conversions {
    ($($key:ident : $class:ident),* $(,)?) => {
        field_conversions!(
            penalties_to_proto,
            penalties_from_proto,
            engine::PenaltyBreakdown,
            pb::PenaltyBreakdown,
            [$($key),*]
        );
    };
}

proxbalance_engine::penalty_keys!(penalty_conversions);

field_conversions!(
    gain_to_proto,
    gain_from_proto,
    engine::ObjectiveGain,
    pb::ObjectiveGain,
    [
        node_health,
        memory_balance,
        cpu_balance,
        overcommit,
        iowait,
        anti_affinity,
        affinity,
        pins,
        total,
        cost,
    ]
);

field_conversions!(
    imbalance_to_proto,
    imbalance_from_proto,
    engine::Imbalance,
    pb::Imbalance,
    [
        mem_spread,
        mem_stddev,
        cpu_spread,
        cpu_stddev,
        normalized_cv
    ]
);

field_conversions!(
    figures_to_proto,
    figures_from_proto,
    engine::NodeFigures,
    pb::NodeFigures,
    [
        cpu,
        mem,
        committed_pct,
        overcommit_ratio,
        iowait,
        iowait_24h,
        score,
        running_guests,
    ]
);

field_conversions!(
    components_to_proto,
    components_from_proto,
    engine::Components,
    pb::ScoreComponents,
    [health, predicted_health, headroom, storage]
);

field_conversions!(
    metrics_to_proto,
    metrics_from_proto,
    engine::ScoreMetrics,
    pb::ScoreMetrics,
    [
        cpu_blend,
        iowait_blend,
        mem,
        predicted_cpu,
        predicted_mem,
        predicted_iowait,
        overcommit_ratio,
    ]
);

field_conversions!(
    cost_benefit_to_proto,
    cost_benefit_from_proto,
    engine::CostBenefit,
    pb::CostBenefit,
    [benefit, cost, ratio, viable]
);

/// The protobuf form of score details.
pub fn details_to_proto(d: &engine::ScoreDetails) -> pb::ScoreDetails {
    pb::ScoreDetails {
        score: d.score,
        penalties: Some(penalties_to_proto(&d.penalties)),
        total_penalties: d.total_penalties,
        cpu_stability_factor: d.cpu_stability_factor,
        components: Some(components_to_proto(&d.components)),
        metrics: Some(metrics_to_proto(&d.metrics)),
        trend: d.trend.map(|t| pb::TrendSummary {
            cpu_rate_per_day: t.cpu_rate_per_day,
            cpu_confidence: word(&t.cpu_confidence),
            cpu_stability: t.cpu_stability,
            mem_stability: t.mem_stability,
            iowait_stability: t.iowait_stability,
            overall_stability: t.overall_stability,
            samples: t.samples as u64,
        }),
    }
}

fn details_from_proto(
    field: &str,
    d: &pb::ScoreDetails,
) -> Result<engine::ScoreDetails, ConvertError> {
    let p = required(&format!("{field}.penalties"), d.penalties.as_ref())?;
    let c = required(&format!("{field}.components"), d.components.as_ref())?;
    let m = required(&format!("{field}.metrics"), d.metrics.as_ref())?;
    let trend = match &d.trend {
        None => None,
        Some(t) => Some(engine::TrendSummary {
            cpu_rate_per_day: t.cpu_rate_per_day,
            cpu_confidence: from_word(&format!("{field}.trend.cpu_confidence"), &t.cpu_confidence)?,
            cpu_stability: t.cpu_stability,
            mem_stability: t.mem_stability,
            iowait_stability: t.iowait_stability,
            overall_stability: t.overall_stability,
            samples: usize_of(t.samples),
        }),
    };
    Ok(engine::ScoreDetails {
        score: d.score,
        penalties: penalties_from_proto(p),
        total_penalties: d.total_penalties,
        cpu_stability_factor: d.cpu_stability_factor,
        components: components_from_proto(c),
        metrics: metrics_from_proto(m),
        trend,
    })
}

// ------------------------------------------------------------------ recommendation set

fn recommendation_to_proto(r: &engine::Recommendation) -> pb::Recommendation {
    pb::Recommendation {
        vmid: r.vmid,
        name: r.name.clone(),
        r#type: r.kind.as_str().to_owned(),
        source_node: r.source_node.clone(),
        target_node: r.target_node.clone(),
        source_score: r.source_score,
        target_score: r.target_score,
        score_improvement: r.score_improvement,
        suitability: r.suitability,
        reason: Some(pb::Reason {
            kind: reason_kind_to_proto(r.reason.kind) as i32,
            summary: r.reason.summary.clone(),
            factors: r.reason.factors.clone(),
        }),
        confidence: r.confidence,
        risk: Some(pb::Risk {
            score: r.risk.score,
            level: r.risk.level.clone(),
            factors: r.risk.factors.clone(),
        }),
        cost_benefit: Some(cost_benefit_to_proto(&r.cost_benefit)),
        mem_gb: r.mem_gb,
        command: r.command.clone(),
        score_details: Some(pb::MoveDetails {
            source: Some(details_to_proto(&r.score_details.source)),
            target: Some(details_to_proto(&r.score_details.target)),
        }),
        has_conflict: r.has_conflict,
        affinity_group: r.affinity_group.clone(),
        affinity_leader_vmid: r.affinity_leader_vmid,
        affinity_companions: r.affinity_companions.clone(),
        warnings: r.warnings.clone(),
        term: move_term_to_proto(r.term) as i32,
        gain: r.gain.as_ref().map(gain_to_proto),
    }
}

fn recommendation_from_proto(
    f: &str,
    r: &pb::Recommendation,
) -> Result<engine::Recommendation, ConvertError> {
    let reason = required(&format!("{f}.reason"), r.reason.as_ref())?;
    let risk = required(&format!("{f}.risk"), r.risk.as_ref())?;
    let cb = required(&format!("{f}.cost_benefit"), r.cost_benefit.as_ref())?;
    let sd = required(&format!("{f}.score_details"), r.score_details.as_ref())?;
    let src = required(&format!("{f}.score_details.source"), sd.source.as_ref())?;
    let tgt = required(&format!("{f}.score_details.target"), sd.target.as_ref())?;
    Ok(engine::Recommendation {
        vmid: r.vmid,
        name: r.name.clone(),
        kind: from_word(&format!("{f}.type"), &r.r#type)?,
        source_node: r.source_node.clone(),
        target_node: r.target_node.clone(),
        source_score: r.source_score,
        target_score: r.target_score,
        score_improvement: r.score_improvement,
        suitability: r.suitability,
        reason: engine::RecommendationReason {
            kind: reason_kind_from_proto(&format!("{f}.reason.kind"), reason.kind)?,
            summary: reason.summary.clone(),
            factors: reason.factors.clone(),
        },
        confidence: r.confidence,
        risk: engine::Risk {
            score: risk.score,
            level: risk.level.clone(),
            factors: risk.factors.clone(),
        },
        cost_benefit: cost_benefit_from_proto(cb),
        mem_gb: r.mem_gb,
        command: r.command.clone(),
        score_details: engine::MoveDetails {
            source: details_from_proto(&format!("{f}.score_details.source"), src)?,
            target: details_from_proto(&format!("{f}.score_details.target"), tgt)?,
        },
        has_conflict: r.has_conflict,
        affinity_group: r.affinity_group.clone(),
        affinity_leader_vmid: r.affinity_leader_vmid,
        affinity_companions: r.affinity_companions.clone(),
        warnings: r.warnings.clone(),
        term: move_term_from_proto(&format!("{f}.term"), r.term)?,
        gain: r.gain.as_ref().map(gain_from_proto),
    })
}

/// The protobuf form of a recommendation set.
pub fn set_to_proto(s: &engine::RecommendationSet) -> pb::RecommendationSet {
    let sum = &s.summary;
    let plan = &s.execution_plan;
    pb::RecommendationSet {
        cluster: s.cluster.clone(),
        generated_at: s.generated_at,
        thresholds: Some(pb::ThresholdValues {
            cpu: s.thresholds.cpu,
            mem: s.thresholds.mem,
            iowait: s.thresholds.iowait,
        }),
        recommendations: s
            .recommendations
            .iter()
            .map(recommendation_to_proto)
            .collect(),
        skipped: s
            .skipped
            .iter()
            .map(|g| pb::SkippedGuest {
                vmid: g.vmid,
                name: g.name.clone(),
                node: g.node.clone(),
                reason: skip_reason_to_proto(g.reason) as i32,
                detail: g.detail.clone(),
            })
            .collect(),
        conflicts: s
            .conflicts
            .iter()
            .map(|c| pb::Conflict {
                target_node: c.target_node.clone(),
                incoming_guests: c.incoming_guests.clone(),
                combined_predicted_cpu: c.combined_predicted_cpu,
                combined_predicted_mem: c.combined_predicted_mem,
                exceeds_cpu: c.exceeds_cpu,
                exceeds_mem: c.exceeds_mem,
                resolution: c.resolution.clone(),
            })
            .collect(),
        execution_plan: Some(pb::ExecutionPlan {
            ordered_recommendations: plan
                .ordered_recommendations
                .iter()
                .map(|st| pb::ExecutionStep {
                    step: st.step as u64,
                    parallel_group: st.parallel_group as u64,
                    vmid: st.vmid,
                    name: st.name.clone(),
                    source_node: st.source_node.clone(),
                    target_node: st.target_node.clone(),
                    reason_for_order: st.reason_for_order.clone(),
                })
                .collect(),
            parallel_groups: plan
                .parallel_groups
                .iter()
                .map(|g| pb::ParallelGroup { vmids: g.clone() })
                .collect(),
            total_steps: plan.total_steps as u64,
            can_parallelize: plan.can_parallelize,
        }),
        summary: Some(pb::Summary {
            total_recommendations: sum.total_recommendations as u64,
            total_skipped: sum.total_skipped as u64,
            skip_reasons: sum
                .skip_reasons
                .iter()
                .map(|(r, n)| pb::SkipReasonCount {
                    reason: skip_reason_to_proto(*r) as i32,
                    count: *n as u64,
                })
                .collect(),
            cluster_health: sum.cluster_health,
            predicted_health: sum.predicted_health,
            avg_cpu: sum.avg_cpu,
            avg_mem: sum.avg_mem,
            urgency: word(&sum.urgency),
            convergence_message: sum.convergence_message.clone(),
            iowait_stressed_nodes: sum.iowait_stressed_nodes.clone(),
            maintenance_nodes: sum.maintenance_nodes.clone(),
            active_preset: sum.active_preset.clone(),
        }),
        node_scores: s
            .node_scores
            .iter()
            .map(|n| pb::NodeScore {
                node: n.node.clone(),
                status: n.status.as_str().to_owned(),
                maintenance: n.maintenance,
                iowait_stressed: n.iowait_stressed,
                iowait_exempt: n.iowait_exempt,
                committed_mem_gb: n.committed_mem_gb,
                mem_overcommit_ratio: n.mem_overcommit_ratio,
                health: n.health,
                score: n.score,
                suitability: n.suitability,
                cpu_stability_factor: n.cpu_stability_factor,
                penalties: Some(penalties_to_proto(&n.penalties)),
            })
            .collect(),
        planner: s.planner.as_str().to_owned(),
        prediction: Some(prediction_to_proto(&s.prediction)),
        deferred: s
            .deferred
            .iter()
            .map(|d| pb::DeferredMove {
                vmid: d.vmid,
                name: d.name.clone(),
                source_node: d.source_node.clone(),
                target_node: d.target_node.clone(),
                term: move_term_to_proto(d.term) as i32,
                mem_gb: d.mem_gb,
                gain: d.gain,
                reason: d.reason.clone(),
            })
            .collect(),
        unresolved: s
            .unresolved
            .iter()
            .map(|u| pb::Unresolved {
                rule: u.rule.clone(),
                node: u.node.clone(),
                group: u.group.clone(),
                vmids: u.vmids.clone(),
                detail: u.detail.clone(),
            })
            .collect(),
    }
}

fn prediction_to_proto(p: &engine::Prediction) -> pb::Prediction {
    pb::Prediction {
        nodes: p
            .nodes
            .iter()
            .map(|n| pb::NodePrediction {
                node: n.node.clone(),
                maintenance: n.maintenance,
                before: Some(figures_to_proto(&n.before)),
                after: Some(figures_to_proto(&n.after)),
            })
            .collect(),
        imbalance_before: Some(imbalance_to_proto(&p.imbalance_before)),
        imbalance_after: Some(imbalance_to_proto(&p.imbalance_after)),
        objective_before: p.objective_before,
        objective_after: p.objective_after,
    }
}

fn prediction_from_proto(p: &pb::Prediction) -> Result<engine::Prediction, ConvertError> {
    let mut nodes = Vec::with_capacity(p.nodes.len());
    for (i, n) in p.nodes.iter().enumerate() {
        let f = format!("prediction.nodes[{i}]");
        nodes.push(engine::NodePrediction {
            node: n.node.clone(),
            maintenance: n.maintenance,
            before: figures_from_proto(required(&format!("{f}.before"), n.before.as_ref())?),
            after: figures_from_proto(required(&format!("{f}.after"), n.after.as_ref())?),
        });
    }
    Ok(engine::Prediction {
        nodes,
        imbalance_before: imbalance_from_proto(required(
            "prediction.imbalance_before",
            p.imbalance_before.as_ref(),
        )?),
        imbalance_after: imbalance_from_proto(required(
            "prediction.imbalance_after",
            p.imbalance_after.as_ref(),
        )?),
        objective_before: p.objective_before,
        objective_after: p.objective_after,
    })
}

/// Whether a request's `SetView` asks for the full set (`SET_VIEW_FULL`) rather than the basic
/// view (`SET_VIEW_BASIC`, also meant by `SET_VIEW_UNSPECIFIED`).
pub fn wants_full_view(view: i32) -> Result<bool, ConvertError> {
    match pb::SetView::try_from(view) {
        Ok(pb::SetView::Full) => Ok(true),
        Ok(pb::SetView::Basic | pb::SetView::Unspecified) => Ok(false),
        Err(_) => Err(err(
            "view",
            format!("unknown set view {view}; expected SET_VIEW_BASIC (1) or SET_VIEW_FULL (2)"),
        )),
    }
}

/// A full set in the full (a copy) or the basic view ([`basic_view`]).
pub fn in_view(full: &pb::RecommendationSet, want_full: bool) -> pb::RecommendationSet {
    if want_full {
        full.clone()
    } else {
        basic_view(full)
    }
}

/// The basic view of a full set: the same without each recommendation's score breakdown and
/// without the skipped guests (whose number stays in the summary).
pub fn basic_view(full: &pb::RecommendationSet) -> pb::RecommendationSet {
    pb::RecommendationSet {
        cluster: full.cluster.clone(),
        generated_at: full.generated_at,
        thresholds: full.thresholds,
        recommendations: full
            .recommendations
            .iter()
            .map(|r| pb::Recommendation {
                score_details: None,
                ..r.clone()
            })
            .collect(),
        skipped: Vec::new(),
        conflicts: full.conflicts.clone(),
        execution_plan: full.execution_plan.clone(),
        summary: full.summary.clone(),
        node_scores: full.node_scores.clone(),
        planner: full.planner.clone(),
        prediction: full.prediction.clone(),
        deferred: full.deferred.clone(),
        unresolved: full.unresolved.clone(),
    }
}

/// The engine form of a protobuf recommendation set.
pub fn set_from_proto(
    s: &pb::RecommendationSet,
) -> Result<engine::RecommendationSet, ConvertError> {
    let t = required("thresholds", s.thresholds.as_ref())?;
    let plan = required("execution_plan", s.execution_plan.as_ref())?;
    let sum = required("summary", s.summary.as_ref())?;
    let mut recommendations = Vec::with_capacity(s.recommendations.len());
    for (i, r) in s.recommendations.iter().enumerate() {
        recommendations.push(recommendation_from_proto(
            &format!("recommendations[{i}]"),
            r,
        )?);
    }
    let mut skipped = Vec::with_capacity(s.skipped.len());
    for (i, g) in s.skipped.iter().enumerate() {
        skipped.push(engine::SkippedGuest {
            vmid: g.vmid,
            name: g.name.clone(),
            node: g.node.clone(),
            reason: skip_reason_from_proto(&format!("skipped[{i}].reason"), g.reason)?,
            detail: g.detail.clone(),
        });
    }
    let mut skip_reasons = BTreeMap::new();
    for (i, c) in sum.skip_reasons.iter().enumerate() {
        let r = skip_reason_from_proto(&format!("summary.skip_reasons[{i}].reason"), c.reason)?;
        skip_reasons.insert(r, usize_of(c.count));
    }
    let mut node_scores = Vec::with_capacity(s.node_scores.len());
    for (i, n) in s.node_scores.iter().enumerate() {
        let f = format!("node_scores[{i}]");
        let p = required(&format!("{f}.penalties"), n.penalties.as_ref())?;
        node_scores.push(engine::NodeScore {
            node: n.node.clone(),
            status: from_word(&format!("{f}.status"), &n.status)?,
            maintenance: n.maintenance,
            iowait_stressed: n.iowait_stressed,
            iowait_exempt: n.iowait_exempt,
            committed_mem_gb: n.committed_mem_gb,
            mem_overcommit_ratio: n.mem_overcommit_ratio,
            health: n.health,
            score: n.score,
            suitability: n.suitability,
            cpu_stability_factor: n.cpu_stability_factor,
            penalties: penalties_from_proto(p),
        });
    }
    Ok(engine::RecommendationSet {
        cluster: s.cluster.clone(),
        generated_at: s.generated_at,
        thresholds: engine::Thresholds {
            cpu: t.cpu,
            mem: t.mem,
            iowait: t.iowait,
        },
        recommendations,
        skipped,
        conflicts: s
            .conflicts
            .iter()
            .map(|c| engine::Conflict {
                target_node: c.target_node.clone(),
                incoming_guests: c.incoming_guests.clone(),
                combined_predicted_cpu: c.combined_predicted_cpu,
                combined_predicted_mem: c.combined_predicted_mem,
                exceeds_cpu: c.exceeds_cpu,
                exceeds_mem: c.exceeds_mem,
                resolution: c.resolution.clone(),
            })
            .collect(),
        execution_plan: engine::ExecutionPlan {
            ordered_recommendations: plan
                .ordered_recommendations
                .iter()
                .map(|st| engine::ExecutionStep {
                    step: usize_of(st.step),
                    parallel_group: usize_of(st.parallel_group),
                    vmid: st.vmid,
                    name: st.name.clone(),
                    source_node: st.source_node.clone(),
                    target_node: st.target_node.clone(),
                    reason_for_order: st.reason_for_order.clone(),
                })
                .collect(),
            parallel_groups: plan
                .parallel_groups
                .iter()
                .map(|g| g.vmids.clone())
                .collect(),
            total_steps: usize_of(plan.total_steps),
            can_parallelize: plan.can_parallelize,
        },
        summary: engine::Summary {
            total_recommendations: usize_of(sum.total_recommendations),
            total_skipped: usize_of(sum.total_skipped),
            skip_reasons,
            cluster_health: sum.cluster_health,
            predicted_health: sum.predicted_health,
            avg_cpu: sum.avg_cpu,
            avg_mem: sum.avg_mem,
            urgency: from_word("summary.urgency", &sum.urgency)?,
            convergence_message: sum.convergence_message.clone(),
            iowait_stressed_nodes: sum.iowait_stressed_nodes.clone(),
            maintenance_nodes: sum.maintenance_nodes.clone(),
            active_preset: sum.active_preset.clone(),
        },
        node_scores,
        planner: from_word("planner", &s.planner)?,
        prediction: prediction_from_proto(required("prediction", s.prediction.as_ref())?)?,
        deferred: s
            .deferred
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Ok(engine::DeferredMove {
                    vmid: d.vmid,
                    name: d.name.clone(),
                    source_node: d.source_node.clone(),
                    target_node: d.target_node.clone(),
                    term: move_term_from_proto(&format!("deferred[{i}].term"), d.term)?,
                    mem_gb: d.mem_gb,
                    gain: d.gain,
                    reason: d.reason.clone(),
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        unresolved: s
            .unresolved
            .iter()
            .map(|u| engine::Unresolved {
                rule: u.rule.clone(),
                node: u.node.clone(),
                group: u.group.clone(),
                vmids: u.vmids.clone(),
                detail: u.detail.clone(),
            })
            .collect(),
    })
}

// ------------------------------------------------------------------ migration options

/// The protobuf form of a migration-options answer.
pub fn options_to_proto(o: &engine::MigrationOptions) -> pb::MigrationOptions {
    pb::MigrationOptions {
        cluster: o.cluster.clone(),
        vmid: o.vmid,
        name: o.name.clone(),
        source: Some(pb::SourceOption {
            node: o.source.node.clone(),
            details: Some(details_to_proto(&o.source.details)),
            boost: o.source.boost,
            guest_gate: o.source.guest_gate.as_ref().map(|g| pb::GuestGate {
                reason: skip_reason_to_proto(g.reason) as i32,
                detail: g.detail.clone(),
            }),
        }),
        targets: o
            .targets
            .iter()
            .map(|t| pb::TargetOption {
                node: t.node.clone(),
                eligible: t.eligible,
                gate_reason: t.gate_reason.clone(),
                details: t.details.as_ref().map(details_to_proto),
            })
            .collect(),
    }
}

/// The engine form of a protobuf migration-options answer.
pub fn options_from_proto(
    o: &pb::MigrationOptions,
) -> Result<engine::MigrationOptions, ConvertError> {
    let src = required("source", o.source.as_ref())?;
    let details = required("source.details", src.details.as_ref())?;
    let guest_gate = match &src.guest_gate {
        None => None,
        Some(g) => Some(engine::GuestGate {
            reason: skip_reason_from_proto("source.guest_gate.reason", g.reason)?,
            detail: g.detail.clone(),
        }),
    };
    let mut targets = Vec::with_capacity(o.targets.len());
    for (i, t) in o.targets.iter().enumerate() {
        targets.push(engine::TargetOption {
            node: t.node.clone(),
            eligible: t.eligible,
            gate_reason: t.gate_reason.clone(),
            details: match &t.details {
                None => None,
                Some(d) => Some(details_from_proto(&format!("targets[{i}].details"), d)?),
            },
        });
    }
    Ok(engine::MigrationOptions {
        cluster: o.cluster.clone(),
        vmid: o.vmid,
        name: o.name.clone(),
        source: engine::SourceOption {
            node: src.node.clone(),
            details: details_from_proto("source.details", details)?,
            boost: src.boost,
            guest_gate,
        },
        targets,
    })
}

// ------------------------------------------------------------------ overrides

/// The engine overrides a gRPC request carries. Penalty values use the textual form of
/// `--set` (a JSON literal, or a bare word such as `used`).
pub fn overrides_from_proto(
    o: Option<&pb::Overrides>,
    limit: u32,
) -> Result<engine::Overrides, engine::ConfigError> {
    let mut out = engine::Overrides {
        limit: (limit > 0).then_some(limit as usize),
        ..Default::default()
    };
    let Some(o) = o else {
        return Ok(out);
    };
    if let Some(t) = &o.thresholds {
        for (key, v) in [("cpu", t.cpu), ("mem", t.mem), ("iowait", t.iowait)] {
            if let Some(v) = v {
                out.thresholds.insert(key.to_owned(), v);
            }
        }
    }
    if let Some(p) = &o.preset {
        out.preset = Some(engine::Preset::from_name(p)?);
    }
    for (key, text) in &o.penalties {
        let v = serde_json::from_str::<serde_json::Value>(text.trim())
            .unwrap_or_else(|_| serde_json::Value::String(text.trim().to_owned()));
        out.penalties.insert(key.clone(), v);
    }
    out.maintenance_nodes = o.maintenance_nodes.clone();
    Ok(out)
}

/// The gRPC overrides for engine overrides (the CLI's side of [`overrides_from_proto`]).
pub fn overrides_to_proto(o: &engine::Overrides) -> pb::Overrides {
    pb::Overrides {
        thresholds: (!o.thresholds.is_empty()).then(|| pb::Thresholds {
            cpu: o.thresholds.get("cpu").copied(),
            mem: o.thresholds.get("mem").copied(),
            iowait: o.thresholds.get("iowait").copied(),
        }),
        preset: o.preset.map(|p| p.name().to_owned()),
        penalties: o
            .penalties
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect(),
        maintenance_nodes: o.maintenance_nodes.clone(),
    }
}

/// Whether a request's overrides change anything (otherwise the cached set is served).
pub fn overrides_are_empty(o: Option<&pb::Overrides>) -> bool {
    o.is_none_or(|o| {
        o.thresholds
            .as_ref()
            .is_none_or(|t| t.cpu.is_none() && t.mem.is_none() && t.iowait.is_none())
            && o.preset.is_none()
            && o.penalties.is_empty()
            && o.maintenance_nodes.is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxbalance_engine::synthetic::cluster_view;

    #[test]
    fn recommendation_sets_round_trip_exactly() {
        for (nodes, guests, seed) in [(8, 200, 1), (16, 600, 7), (5, 40, 3)] {
            let cluster = cluster_view(nodes, guests, seed).validate().unwrap();
            let set = engine::plan(&cluster, None);
            assert!(!set.recommendations.is_empty());
            let proto = set_to_proto(&set);
            let bytes = proxbalance_proto::encode(&proto);
            let decoded: pb::RecommendationSet = proxbalance_proto::decode(&bytes).unwrap();
            let back = set_from_proto(&decoded).unwrap();
            assert_eq!(back, set);
            assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(&set).unwrap()
            );
        }
    }

    #[test]
    fn both_planners_and_the_basic_view_keep_the_plan_s_prediction() {
        let mut cluster = cluster_view(16, 600, 7).validate().unwrap();
        cluster.config.max_moves = 3.0;
        let set = engine::plan(&cluster, None);
        assert!(!set.deferred.is_empty() && set.recommendations.len() == 3);
        assert!(set.recommendations.iter().any(|r| r.gain.is_some()));
        let full = set_to_proto(&set);
        assert_eq!(set_from_proto(&full).unwrap(), set);
        let basic = basic_view(&full);
        assert_eq!(basic.prediction, full.prediction);
        assert_eq!(basic.deferred, full.deferred);
        assert_eq!(basic.unresolved, full.unresolved);
        assert_eq!(basic.planner, "cluster");
        assert!(
            basic
                .recommendations
                .iter()
                .all(|r| r.score_details.is_none())
        );
        assert_eq!(
            basic
                .recommendations
                .iter()
                .map(|r| r.gain)
                .collect::<Vec<_>>(),
            full.recommendations
                .iter()
                .map(|r| r.gain)
                .collect::<Vec<_>>()
        );
        cluster.config.planner = engine::PlannerKind::Reference;
        let reference = engine::plan(&cluster, None);
        assert_eq!(
            set_from_proto(&set_to_proto(&reference)).unwrap(),
            reference
        );
        assert_eq!(set_to_proto(&reference).planner, "reference");
    }

    #[test]
    fn migration_options_round_trip_exactly() {
        let cluster = cluster_view(8, 200, 5).validate().unwrap();
        for g in cluster.guests.iter().take(20) {
            let o = engine::migration_options(&cluster, g.vmid).unwrap();
            let back = options_from_proto(&options_to_proto(&o)).unwrap();
            assert_eq!(back, o);
        }
    }

    #[test]
    fn unknown_words_name_the_field() {
        let cluster = cluster_view(5, 40, 3).validate().unwrap();
        let mut p = set_to_proto(&engine::plan(&cluster, None));
        p.summary.as_mut().unwrap().urgency = "panic".into();
        assert_eq!(
            set_from_proto(&p).unwrap_err().to_string(),
            "summary.urgency: unknown value \"panic\""
        );
        p.summary = None;
        assert_eq!(
            set_from_proto(&p).unwrap_err().to_string(),
            "summary: missing"
        );
    }

    #[test]
    fn overrides_round_trip_and_emptiness() {
        let mut o = engine::Overrides {
            preset: Some(engine::Preset::Aggressive),
            maintenance_nodes: vec!["pve3".into()],
            limit: Some(4),
            ..Default::default()
        };
        o.thresholds.insert("cpu".into(), 70.0);
        o.penalties
            .insert("capacity_basis".into(), serde_json::json!("used"));
        o.penalties
            .insert("min_score_improvement".into(), serde_json::json!(20));
        let p = overrides_to_proto(&o);
        assert!(!overrides_are_empty(Some(&p)));
        assert_eq!(overrides_from_proto(Some(&p), 4).unwrap(), o);
        assert!(overrides_are_empty(None));
        assert!(overrides_are_empty(Some(&pb::Overrides::default())));
        let bad = pb::Overrides {
            preset: Some("wild".into()),
            ..Default::default()
        };
        assert_eq!(
            overrides_from_proto(Some(&bad), 0).unwrap_err().to_string(),
            "unknown preset \"wild\" (expected conservative, balanced or aggressive)"
        );
    }
}
