//! Offline subcommands: `plan`, `options` and `config` on a JSON cluster view.

use std::io::Read;

use proxbalance_engine::{
    Cluster, MigrationOptions, Overrides, PenaltyConfig, Preset, RecommendationSet,
    migration_options, plan as run_plan,
};
use serde_json::Value;

use super::table::Table;
use super::{CliError, ConfigWhat, Format, OptionsArgs, PlanArgs, TuningArgs};

/// Reads and validates a cluster view from a file, or stdin for `-`.
pub fn load_cluster(input: &str) -> Result<Cluster, CliError> {
    let text = if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Input(format!("reading the cluster view from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(input)
            .map_err(|e| CliError::Input(format!("reading the cluster view {input}: {e}")))?
    };
    Cluster::from_json(&text)
        .map_err(|e| CliError::Input(format!("invalid cluster view {input}: {e}")))
}

/// Turns the tuning flags into engine overrides.
pub fn overrides_from(tuning: &TuningArgs, limit: Option<usize>) -> Result<Overrides, CliError> {
    let mut o = Overrides {
        limit,
        maintenance_nodes: tuning.maintenance.clone(),
        ..Default::default()
    };
    if let Some(name) = &tuning.preset {
        o.preset =
            Some(Preset::from_name(name).map_err(|e| CliError::Input(format!("--preset: {e}")))?);
    }
    for item in &tuning.set {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--set {item:?}: expected KEY=VALUE")))?;
        let (key, value) = (key.trim(), value.trim());
        if let Some(name) = key.strip_prefix("thresholds.") {
            let v: f64 = value.parse().map_err(|_| {
                CliError::Input(format!("--set {key}: expected a number, got {value:?}"))
            })?;
            o.thresholds.insert(name.to_owned(), v);
        } else {
            let v = serde_json::from_str::<Value>(value)
                .unwrap_or_else(|_| Value::String(value.to_owned()));
            o.penalties.insert(key.to_owned(), v);
        }
    }
    Ok(o)
}

fn tuned_cluster(
    input: &str,
    tuning: &TuningArgs,
    limit: Option<usize>,
) -> Result<(Cluster, Overrides), CliError> {
    let mut cluster = load_cluster(input)?;
    let overrides = overrides_from(tuning, limit)?;
    cluster
        .apply(&overrides)
        .map_err(|e| CliError::Input(e.to_string()))?;
    Ok((cluster, overrides))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    s.push('\n');
    Ok(s)
}

pub(super) fn plan(args: &PlanArgs) -> Result<String, CliError> {
    let (cluster, overrides) = tuned_cluster(&args.input, &args.tuning, args.limit)?;
    let set = run_plan(&cluster, overrides.limit);
    match args.format {
        Format::Json => to_json(&set),
        Format::Table => Ok(render_plan(&set)),
    }
}

pub(super) fn options(args: &OptionsArgs) -> Result<String, CliError> {
    let input = args
        .input
        .as_deref()
        .ok_or_else(|| CliError::Input("options: expected --input FILE".into()))?;
    let (cluster, _) = tuned_cluster(input, &args.tuning, None)?;
    let options =
        migration_options(&cluster, args.vmid).map_err(|e| CliError::Input(e.to_string()))?;
    match args.format {
        Format::Json => to_json(&options),
        Format::Table => Ok(render_options(&options)),
    }
}

pub(super) fn config(what: &ConfigWhat) -> Result<String, CliError> {
    match what {
        ConfigWhat::Defaults {
            format: Format::Json,
        } => to_json(&PenaltyConfig::default()),
        ConfigWhat::Defaults {
            format: Format::Table,
        } => {
            let mut t = Table::new(["KEY", "DEFAULT"]);
            for (k, v) in PenaltyConfig::default().to_map() {
                t.row(vec![k, v.to_string()]);
            }
            Ok(t.render())
        }
        ConfigWhat::Presets {
            format: Format::Json,
        } => {
            let map: serde_json::Map<String, Value> = Preset::ALL
                .iter()
                .map(|p| (p.name().to_owned(), Value::Object(p.config().to_map())))
                .collect();
            to_json(&map)
        }
        ConfigWhat::Presets {
            format: Format::Table,
        } => {
            let maps: Vec<_> = Preset::ALL.iter().map(|p| p.config().to_map()).collect();
            let mut t = Table::new(["KEY", "CONSERVATIVE", "BALANCED", "AGGRESSIVE"]);
            for key in PenaltyConfig::keys() {
                let mut row = vec![key.clone()];
                row.extend(
                    maps.iter()
                        .map(|m| m.get(&key).map(Value::to_string).unwrap_or_default()),
                );
                t.row(row);
            }
            Ok(t.render())
        }
    }
}

fn fmt2(v: f64) -> String {
    format!("{v:.2}")
}

/// The recommendation set for people.
pub fn render_plan(set: &RecommendationSet) -> String {
    let s = &set.summary;
    let mut out = format!(
        "Cluster {}: {} recommendation(s), {} guest(s) skipped, urgency {:?}, cluster health {:.1} (predicted {:.1})\n",
        set.cluster,
        s.total_recommendations,
        s.total_skipped,
        s.urgency,
        s.cluster_health,
        s.predicted_health
    )
    .replace("urgency None", "urgency none")
    .replace("urgency Low", "urgency low")
    .replace("urgency Medium", "urgency medium")
    .replace("urgency High", "urgency high");
    if let Some(msg) = &s.convergence_message {
        out.push_str(&format!("{msg}\n"));
    }
    if !s.iowait_stressed_nodes.is_empty() {
        out.push_str(&format!(
            "IOWait-stressed: {}\n",
            s.iowait_stressed_nodes.join(", ")
        ));
    }
    if !s.maintenance_nodes.is_empty() {
        out.push_str(&format!(
            "In maintenance: {}\n",
            s.maintenance_nodes.join(", ")
        ));
    }
    let (b, a) = (
        &set.prediction.imbalance_before,
        &set.prediction.imbalance_after,
    );
    out.push_str(&format!(
        "Planner {}: memory spread {:.1} -> {:.1} points, CPU spread {:.1} -> {:.1}, normalised CV {:.3} -> {:.3}, objective {:.1} -> {:.1}\n",
        set.planner.as_str(),
        b.mem_spread,
        a.mem_spread,
        b.cpu_spread,
        a.cpu_spread,
        b.normalized_cv,
        a.normalized_cv,
        set.prediction.objective_before,
        set.prediction.objective_after
    ));

    // GAIN: the objective's fall net of the move's cost (cluster planner), or the score
    // improvement (reference generator)
    let mut t = Table::new([
        "VMID", "NAME", "TYPE", "FROM", "TO", "TERM", "GAIN", "CONF", "RISK", "REASON",
    ]);
    for r in &set.recommendations {
        let mut reason = r.reason.kind.describe().to_owned();
        if let Some(group) = &r.affinity_group {
            reason.push_str(&format!(
                " (follows {} in {group})",
                r.affinity_leader_vmid.unwrap_or(0)
            ));
        }
        if r.has_conflict {
            reason.push_str(" [conflict]");
        }
        let gain = match (&r.gain, r.affinity_leader_vmid) {
            (Some(g), _) => fmt2(g.total - g.cost),
            (None, Some(_)) if set.planner == proxbalance_engine::PlannerKind::Cluster => {
                "(group)".to_owned()
            }
            (None, _) => fmt2(r.score_improvement),
        };
        t.row(vec![
            r.vmid.to_string(),
            r.name.clone(),
            r.kind.as_str().to_owned(),
            r.source_node.clone(),
            r.target_node.clone(),
            r.term.as_str().to_owned(),
            gain,
            format!("{:.1}", r.confidence),
            format!("{:.1} {}", r.risk.score, r.risk.level),
            reason,
        ]);
    }
    out.push('\n');
    if t.is_empty() {
        out.push_str("No migrations recommended.\n");
    } else {
        out.push_str(&t.render());
    }

    if !set.deferred.is_empty() {
        let mut t = Table::new([
            "VMID", "NAME", "FROM", "TO", "TERM", "GiB", "GAIN", "DEFERRED",
        ]);
        for d in &set.deferred {
            t.row(vec![
                d.vmid.to_string(),
                d.name.clone(),
                d.source_node.clone(),
                d.target_node.clone(),
                d.term.as_str().to_owned(),
                format!("{:.0}", d.mem_gb),
                fmt2(d.gain),
                d.reason.clone(),
            ]);
        }
        out.push_str("\nDeferred to a later plan:\n");
        out.push_str(&t.render());
    }
    for u in &set.unresolved {
        let group = u
            .group
            .as_deref()
            .map(|g| format!(" {g}"))
            .unwrap_or_default();
        let vmids: Vec<String> = u.vmids.iter().map(u32::to_string).collect();
        out.push_str(&format!(
            "\nUnresolved {}{} on {}{}: {}\n",
            u.rule,
            group,
            u.node,
            if vmids.is_empty() {
                String::new()
            } else {
                format!(" (guests {})", vmids.join(", "))
            },
            u.detail
        ));
    }

    if !set.skipped.is_empty() {
        let mut t = Table::new(["VMID", "NAME", "NODE", "SKIPPED BECAUSE"]);
        for sk in &set.skipped {
            t.row(vec![
                sk.vmid.to_string(),
                sk.name.clone(),
                sk.node.clone(),
                sk.detail.clone(),
            ]);
        }
        out.push_str("\nSkipped:\n");
        out.push_str(&t.render());
    }
    for c in &set.conflicts {
        out.push_str(&format!(
            "\nConflict on {}: guests {:?} together reach CPU {:.1}% / memory {:.1}%: {}\n",
            c.target_node,
            c.incoming_guests,
            c.combined_predicted_cpu,
            c.combined_predicted_mem,
            c.resolution
        ));
    }
    if set.execution_plan.total_steps > 1 {
        let mut t = Table::new(["STEP", "GROUP", "VMID", "FROM", "TO", "ORDER"]);
        for st in &set.execution_plan.ordered_recommendations {
            t.row(vec![
                st.step.to_string(),
                st.parallel_group.to_string(),
                st.vmid.to_string(),
                st.source_node.clone(),
                st.target_node.clone(),
                st.reason_for_order.clone(),
            ]);
        }
        out.push_str("\nExecution plan:\n");
        out.push_str(&t.render());
    }

    // per node: before -> after as the plan predicts it
    let predicted: std::collections::BTreeMap<&str, &proxbalance_engine::NodePrediction> = set
        .prediction
        .nodes
        .iter()
        .map(|p| (p.node.as_str(), p))
        .collect();
    let change = |before: f64, after: f64| {
        if (before - after).abs() < 0.05 {
            format!("{before:.1}")
        } else {
            format!("{before:.1} -> {after:.1}")
        }
    };
    let mut t = Table::new([
        "NODE",
        "STATUS",
        "CPU %",
        "MEM %",
        "COMMITTED %",
        "IOWAIT %",
        "SCORE",
        "NOTES",
    ]);
    for n in &set.node_scores {
        let mut notes = Vec::new();
        if n.maintenance {
            notes.push("maintenance".to_owned());
        }
        if n.iowait_stressed {
            notes.push("IOWait-stressed".to_owned());
        }
        if n.iowait_exempt {
            notes.push("IOWait-exempt".to_owned());
        }
        if n.penalties.mem_overcommit > 0.0 {
            notes.push(format!("overcommit penalty {}", n.penalties.mem_overcommit));
        }
        if n.cpu_stability_factor != 1.0 {
            notes.push(format!("CPU stability ×{}", n.cpu_stability_factor));
        }
        let figures = |f: fn(&proxbalance_engine::NodeFigures) -> f64| {
            predicted
                .get(n.node.as_str())
                .map_or("-".to_owned(), |p| change(f(&p.before), f(&p.after)))
        };
        t.row(vec![
            n.node.clone(),
            n.status.as_str().to_owned(),
            figures(|f| f.cpu),
            figures(|f| f.mem),
            figures(|f| f.committed_pct),
            figures(|f| f.iowait),
            figures(|f| f.score),
            notes.join(", "),
        ]);
    }
    out.push_str("\nNodes (before -> after the plan):\n");
    out.push_str(&t.render());
    out
}

/// A guest's migration options for people.
pub fn render_options(o: &MigrationOptions) -> String {
    let src = &o.source;
    let mut out = format!(
        "Guest {} ({}) on {}: source score {}{}\n",
        o.vmid,
        o.name,
        src.node,
        fmt2(src.details.score),
        if src.boost > 0.0 {
            format!(" + boost {}", src.boost)
        } else {
            String::new()
        }
    );
    if let Some(gate) = &src.guest_gate {
        out.push_str(&format!(
            "Not movable by a recommendation run: {}\n",
            gate.detail
        ));
    }
    let mut t = Table::new([
        "NODE",
        "ELIGIBLE",
        "SCORE",
        "CPU FACTOR",
        "GATE / PENALTIES",
    ]);
    for target in &o.targets {
        let (score, factor, penalties) = match &target.details {
            Some(d) => {
                let listed: Vec<String> = d
                    .penalties
                    .entries()
                    .iter()
                    .filter(|(_, v)| *v != 0.0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                (
                    fmt2(d.score),
                    d.cpu_stability_factor.to_string(),
                    listed.join(", "),
                )
            }
            None => ("-".to_owned(), "-".to_owned(), String::new()),
        };
        let last = match &target.gate_reason {
            Some(g) if penalties.is_empty() => g.clone(),
            Some(g) => format!("{g}; {penalties}"),
            None => penalties,
        };
        t.row(vec![
            target.node.clone(),
            if target.eligible { "yes" } else { "no" }.to_owned(),
            score,
            factor,
            last,
        ]);
    }
    out.push_str(&t.render());
    out
}
