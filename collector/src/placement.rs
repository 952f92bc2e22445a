//! Proxmox HA placement rules: PVE 9's `/cluster/ha/rules`, or PVE 8's `/cluster/ha/groups`
//! with the `group` of each HA resource, read once per cycle and carried on the cluster status.
//!
//! Which endpoint: the one that worked last; at first the one of the PVE major version
//! (`/version` `release` 8 → groups, else rules). PVE 8 has no rules endpoint (501) and PVE 9
//! refuses the groups endpoint once groups are migrated to rules (500 `ha groups have been
//! migrated to rules`): either answer switches to the other endpoint in the same cycle, so an
//! upgrade needs no restart. Any other failure keeps the rules last read (with the time they
//! were read): HA rules change rarely, and forgetting them for a cycle would let the
//! recommender plan as if there were none.
//!
//! Disabled PVE 9 rules and rule types this build does not know are left out. Guest pools
//! need no request of their own: `/cluster/resources` names every guest's pool (with the same
//! `Pool.Audit` privilege `/pools` needs), while `/pools` lists members only per pool.

use std::collections::{BTreeMap, BTreeSet};

use proxbalance_proto::v1::{CollectionError, HaRule, HaRuleKind, HaRuleNode, HaRulesSource};

use crate::pve::types::{HaGroupRow, HaResource, HaRuleRow};
use crate::pve::{PveClient, PveError};
use crate::snapshot;

/// `/cluster/ha/rules`.
pub const RULES_PATH: &str = "/cluster/ha/rules";
/// `/cluster/ha/groups`.
pub const GROUPS_PATH: &str = "/cluster/ha/groups";

/// The guest id of an HA resource id (`vm:100`, `ct:100`); `None` for other resource types.
pub fn sid_vmid(sid: &str) -> Option<u32> {
    let (kind, id) = sid.trim().split_once(':')?;
    matches!(kind, "vm" | "ct")
        .then(|| id.parse().ok())
        .flatten()
}

/// The nodes of a rule or group, `node[:priority],...` as PVE writes them; a priority that is
/// not a number counts as 0 (PVE itself refuses one).
pub fn parse_nodes(text: &str) -> Vec<HaRuleNode> {
    text.split(',')
        .filter_map(|entry| {
            let (node, priority) = match entry.split_once(':') {
                Some((n, p)) => (n.trim(), p.trim().parse().unwrap_or(0)),
                None => (entry.trim(), 0),
            };
            (!node.is_empty()).then(|| HaRuleNode {
                node: node.to_owned(),
                priority,
            })
        })
        .collect()
}

fn vmids(sids: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<u32> {
    let set: BTreeSet<u32> = sids
        .into_iter()
        .filter_map(|s| sid_vmid(s.as_ref()))
        .collect();
    set.into_iter().collect()
}

/// The rules in force of `/cluster/ha/rules`, by name: disabled ones, rules of unknown types
/// and rules without a name are left out (the first of two with one name is kept).
pub fn rules_from_pve9(rows: &[HaRuleRow]) -> Vec<HaRule> {
    let mut out: BTreeMap<String, HaRule> = BTreeMap::new();
    for r in rows {
        let Some(name) = r.rule.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
            continue;
        };
        if r.disable == Some(true) || out.contains_key(name) {
            continue;
        }
        let kind = match (r.kind.as_deref(), r.affinity.as_deref()) {
            (Some("node-affinity"), _) => HaRuleKind::NodeAffinity,
            (Some("resource-affinity"), Some("positive")) => HaRuleKind::ResourceAffinityPositive,
            (Some("resource-affinity"), Some("negative")) => HaRuleKind::ResourceAffinityNegative,
            _ => continue,
        };
        let nodes = match kind {
            HaRuleKind::NodeAffinity => parse_nodes(r.nodes.as_deref().unwrap_or("")),
            _ => Vec::new(),
        };
        out.insert(
            name.to_owned(),
            HaRule {
                name: name.to_owned(),
                kind: kind as i32,
                vmids: vmids(r.resources.as_deref().unwrap_or("").split(',')),
                nodes,
                strict: kind == HaRuleKind::NodeAffinity && r.strict == Some(true),
            },
        );
    }
    out.into_values().collect()
}

/// The groups of `/cluster/ha/groups` as rules, by name, each binding the HA resources whose
/// `group` names it.
pub fn rules_from_pve8_groups(groups: &[HaGroupRow], resources: &[HaResource]) -> Vec<HaRule> {
    let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in resources {
        if let (Some(sid), Some(group)) = (r.sid.as_deref(), r.group.as_deref()) {
            members.entry(group.trim()).or_default().push(sid);
        }
    }
    let mut out: BTreeMap<String, HaRule> = BTreeMap::new();
    for g in groups {
        let Some(name) = g.group.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
            continue;
        };
        if out.contains_key(name) {
            continue;
        }
        out.insert(
            name.to_owned(),
            HaRule {
                name: name.to_owned(),
                kind: HaRuleKind::Group as i32,
                vmids: vmids(members.get(name).into_iter().flatten()),
                nodes: parse_nodes(g.nodes.as_deref().unwrap_or("")),
                strict: g.restricted == Some(true),
            },
        );
    }
    out.into_values().collect()
}

/// What PVE answers when the endpoint does not exist in its version.
fn endpoint_missing(e: &PveError) -> bool {
    matches!(
        e,
        PveError::Http {
            status: 404 | 501,
            ..
        }
    )
}

/// What PVE 9 answers on `/cluster/ha/groups` once groups are rules.
fn groups_migrated(e: &PveError) -> bool {
    matches!(e, PveError::Http { status: 500, message, .. } if message.contains("migrated to rules"))
}

/// The HA rules of a cluster across cycles: the endpoint that works and the rules last read.
#[derive(Debug, Default)]
pub struct HaRulesReader {
    /// The endpoint that answered last; `None` until one did.
    source: Option<HaRulesSource>,
    /// The rules last read and when (unix ms).
    last: Option<(Vec<HaRule>, HaRulesSource, i64)>,
    /// The last read failed (logged once per failing stretch).
    failing: bool,
}

/// The HA rules a cycle publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct HaRulesOutcome {
    pub rules: Vec<HaRule>,
    pub source: HaRulesSource,
    /// When they were read, unix ms (0: never).
    pub read_at_unix_ms: i64,
}

impl HaRulesReader {
    /// Reads the rules of this cycle (one request, two when PVE's answer says the other
    /// endpoint is the one), recording failures in `errors`. `release` is `/version`'s;
    /// `resources` the cycle's `/cluster/ha/resources` (`None` when it failed: the members of
    /// PVE 8 groups are then unknown, and the rules last read are kept).
    pub async fn read(
        &mut self,
        client: &PveClient,
        cluster: &str,
        release: &str,
        resources: Option<&[HaResource]>,
        now_unix_ms: i64,
        errors: &mut Vec<CollectionError>,
    ) -> HaRulesOutcome {
        let first = self.source.unwrap_or_else(|| {
            if release.trim().starts_with("8.") || release.trim() == "8" {
                HaRulesSource::Groups
            } else {
                HaRulesSource::Rules
            }
        });
        let mut result = read_from(client, first, resources).await;
        if let Err(e) = &result {
            let other = match first {
                HaRulesSource::Groups if groups_migrated(e) => Some(HaRulesSource::Rules),
                HaRulesSource::Rules if endpoint_missing(e) => Some(HaRulesSource::Groups),
                _ => None,
            };
            if let Some(other) = other {
                tracing::info!(cluster, error = %e, from = ?first, to = ?other, "HA rules: reading the other endpoint for this PVE version");
                result = read_from(client, other, resources).await;
            }
        }
        match result {
            // The groups endpoint answered; their members are unknown this cycle.
            Ok(None) => self.source = Some(HaRulesSource::Groups),
            Ok(Some((rules, source))) => {
                if self.failing {
                    tracing::info!(cluster, ?source, rules = rules.len(), "HA rules read again");
                }
                self.failing = false;
                self.source = Some(source);
                self.last = Some((rules, source, now_unix_ms));
            }
            Err(e) => {
                if !self.failing {
                    let kept = self.last.as_ref().map_or(0, |(_, _, at)| *at);
                    tracing::warn!(cluster, error = %e, kept_from_unix_ms = kept, "HA rules could not be read; the rules last read (if any) stay in force");
                }
                self.failing = true;
                errors.push(snapshot::collection_error("", &e));
            }
        }
        self.last()
    }

    /// The rules last read (none, unspecified, before the first read).
    pub fn last(&self) -> HaRulesOutcome {
        match &self.last {
            Some((rules, source, at)) => HaRulesOutcome {
                rules: rules.clone(),
                source: *source,
                read_at_unix_ms: *at,
            },
            None => HaRulesOutcome {
                rules: Vec::new(),
                source: HaRulesSource::Unspecified,
                read_at_unix_ms: 0,
            },
        }
    }
}

/// The rules of one endpoint; `Ok(None)` for PVE 8 groups when `/cluster/ha/resources` failed
/// this cycle (their members are unknown; that error is already recorded).
async fn read_from(
    client: &PveClient,
    source: HaRulesSource,
    resources: Option<&[HaResource]>,
) -> Result<Option<(Vec<HaRule>, HaRulesSource)>, PveError> {
    match source {
        HaRulesSource::Groups => {
            let groups = client.get::<Vec<HaGroupRow>>(GROUPS_PATH).await?;
            Ok(resources.map(|res| (rules_from_pve8_groups(&groups, res), source)))
        }
        _ => {
            let rows = client.get::<Vec<HaRuleRow>>(RULES_PATH).await?;
            Ok(Some((rules_from_pve9(&rows), HaRulesSource::Rules)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str, p: u32) -> HaRuleNode {
        HaRuleNode {
            node: n.to_owned(),
            priority: p,
        }
    }

    #[test]
    fn sids_and_node_lists() {
        assert_eq!(sid_vmid("vm:100"), Some(100));
        assert_eq!(sid_vmid(" ct:7"), Some(7));
        assert_eq!(sid_vmid("vm:x"), None);
        assert_eq!(sid_vmid("storage:100"), None);
        assert_eq!(sid_vmid("100"), None);
        assert_eq!(
            parse_nodes("pve1:2, pve2:1,pve3,,pve4:x"),
            [
                node("pve1", 2),
                node("pve2", 1),
                node("pve3", 0),
                node("pve4", 0)
            ]
        );
        assert!(parse_nodes("").is_empty());
    }

    #[test]
    fn pve9_rules_in_force_by_name() {
        let rows: Vec<HaRuleRow> = serde_json::from_value(serde_json::json!([
            {"rule": "prefer", "type": "node-affinity", "resources": "vm:101,ct:100,vm:101",
             "nodes": "pve1:2,pve2:1", "strict": 0, "disable": 0, "order": 1, "digest": "x"},
            {"rule": "apart", "type": "resource-affinity", "resources": "vm:101,vm:102",
             "affinity": "negative", "disable": "0"},
            {"rule": "together", "type": "resource-affinity", "resources": "vm:103,vm:104",
             "affinity": "positive"},
            {"rule": "off", "type": "node-affinity", "resources": "vm:1", "nodes": "pve1",
             "strict": 1, "disable": 1},
            {"rule": "future", "type": "node-anti-affinity", "resources": "vm:1"},
            {"rule": "", "type": "node-affinity", "resources": "vm:1", "nodes": "pve1"},
            {"rule": "pinned", "type": "node-affinity", "resources": "vm:105",
             "nodes": "pve3", "strict": 1},
            {"rule": "pinned", "type": "node-affinity", "resources": "vm:999", "nodes": "pve1"}
        ]))
        .unwrap();
        let rules = rules_from_pve9(&rows);
        let kinds: Vec<(&str, HaRuleKind, Vec<u32>, bool)> = rules
            .iter()
            .map(|r| (r.name.as_str(), r.kind(), r.vmids.clone(), r.strict))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "apart",
                    HaRuleKind::ResourceAffinityNegative,
                    vec![101, 102],
                    false
                ),
                ("pinned", HaRuleKind::NodeAffinity, vec![105], true),
                ("prefer", HaRuleKind::NodeAffinity, vec![100, 101], false),
                (
                    "together",
                    HaRuleKind::ResourceAffinityPositive,
                    vec![103, 104],
                    false
                ),
            ]
        );
        assert_eq!(rules[2].nodes, [node("pve1", 2), node("pve2", 1)]);
        assert!(rules[0].nodes.is_empty());
    }

    #[test]
    fn pve8_groups_bind_the_resources_naming_them() {
        let groups: Vec<HaGroupRow> = serde_json::from_value(serde_json::json!([
            {"group": "prefer-pve1", "type": "group", "nodes": "pve1:2,pve2:1",
             "restricted": 0, "nofailback": 0},
            {"group": "only-pve3", "nodes": "pve3", "restricted": 1},
            {"group": "empty", "nodes": "pve2"}
        ]))
        .unwrap();
        let resources: Vec<HaResource> = serde_json::from_value(serde_json::json!([
            {"sid": "vm:100", "state": "started", "group": "prefer-pve1"},
            {"sid": "ct:200", "group": "prefer-pve1"},
            {"sid": "vm:101", "group": "only-pve3"},
            {"sid": "vm:102"},
            {"sid": "vm:103", "group": "no-such-group"}
        ]))
        .unwrap();
        let rules = rules_from_pve8_groups(&groups, &resources);
        assert_eq!(
            rules,
            [
                HaRule {
                    name: "empty".into(),
                    kind: HaRuleKind::Group as i32,
                    vmids: vec![],
                    nodes: vec![node("pve2", 0)],
                    strict: false,
                },
                HaRule {
                    name: "only-pve3".into(),
                    kind: HaRuleKind::Group as i32,
                    vmids: vec![101],
                    nodes: vec![node("pve3", 0)],
                    strict: true,
                },
                HaRule {
                    name: "prefer-pve1".into(),
                    kind: HaRuleKind::Group as i32,
                    vmids: vec![100, 200],
                    nodes: vec![node("pve1", 2), node("pve2", 1)],
                    strict: false,
                },
            ]
        );
    }

    #[test]
    fn which_answers_switch_the_endpoint() {
        let http = |status, message: &str| PveError::Http {
            endpoint: "https://a:8006".into(),
            path: "/x".into(),
            status,
            message: message.into(),
        };
        assert!(endpoint_missing(&http(
            501,
            "Method 'GET /cluster/ha/rules' not implemented"
        )));
        assert!(!endpoint_missing(&http(500, "boom")));
        assert!(groups_migrated(&http(
            500,
            "cannot index groups: ha groups have been migrated to rules"
        )));
        assert!(!groups_migrated(&http(500, "boom")));
        assert!(!groups_migrated(&http(403, "migrated to rules")));
    }
}
