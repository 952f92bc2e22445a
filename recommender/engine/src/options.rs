//! Migration options for one guest: every node's score and gate (docs/engine.md §4, §5).

use serde::{Deserialize, Serialize};

use crate::gates::TargetGate;
use crate::reference::Generator;
use crate::score::ScoreDetails;
use crate::set::SkipReason;
use crate::view::Cluster;

/// The guest asked about is not in the cluster.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("vmid: no guest with vmid {vmid} in cluster {cluster:?}")]
pub struct UnknownGuest {
    pub vmid: u32,
    pub cluster: String,
}

/// One possible target of a guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetOption {
    pub node: String,
    /// Passes every gate and could be recommended.
    pub eligible: bool,
    /// Why it may not receive the guest: a hard gate, `node offline` or `node in maintenance`.
    pub gate_reason: Option<String>,
    /// The score as a target (lower is better); absent for nodes that are not online.
    #[serde(flatten)]
    pub details: Option<ScoreDetails>,
}

/// The guest where it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceOption {
    pub node: String,
    /// Score with the guest taken off the node, without boosts.
    #[serde(flatten)]
    pub details: ScoreDetails,
    /// The maintenance and IOWait boosts a recommendation run adds to the source score.
    pub boost: f64,
    /// Set when a guest gate keeps the guest where it is.
    pub guest_gate: Option<GuestGate>,
}

/// A guest gate that applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestGate {
    pub reason: SkipReason,
    pub detail: String,
}

/// The answer of [`migration_options`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationOptions {
    pub cluster: String,
    pub vmid: u32,
    pub name: String,
    pub source: SourceOption,
    /// Every other node, by name.
    pub targets: Vec<TargetOption>,
}

/// Scores guest `vmid` on every other node of the cluster, with nothing pending.
pub fn migration_options(cluster: &Cluster, vmid: u32) -> Result<MigrationOptions, UnknownGuest> {
    let guest = cluster.guest(vmid).ok_or_else(|| UnknownGuest {
        vmid,
        cluster: cluster.name.clone(),
    })?;
    let planner = Generator::new(cluster);
    let selected = planner.iowait_selection();
    let targets = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != guest.node)
        .map(|(ti, node)| {
            if !node.is_online() {
                return TargetOption {
                    node: node.name.clone(),
                    eligible: false,
                    gate_reason: Some(format!("node {}", node.status.as_str())),
                    details: None,
                };
            }
            let gate_reason = if node.maintenance {
                Some("node in maintenance".to_owned())
            } else {
                planner.target_gate(guest, ti).map(|gate| {
                    let rule = match gate {
                        TargetGate::PinnedElsewhere => planner.refusing_pin(guest, ti),
                        TargetGate::AntiAffinity => planner.refusing_anti_affinity(guest, ti),
                        _ => None,
                    };
                    gate.describe(rule)
                })
            };
            TargetOption {
                node: node.name.clone(),
                eligible: gate_reason.is_none(),
                gate_reason,
                details: Some(planner.target_details(guest, ti)),
            }
        })
        .collect();
    let source = SourceOption {
        node: cluster.nodes[guest.node].name.clone(),
        details: planner.source_details(guest),
        boost: planner.boost(guest, selected.contains(&vmid)),
        guest_gate: planner
            .guest_gate(guest, true)
            .map(|(reason, detail)| GuestGate { reason, detail }),
    };
    Ok(MigrationOptions {
        cluster: cluster.name.clone(),
        vmid,
        name: guest.name.clone(),
        source,
        targets,
    })
}
