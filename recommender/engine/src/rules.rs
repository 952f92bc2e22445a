//! Placement rules: what the operator wrote — tags, pool rules, Proxmox HA rules and groups —
//! resolved to guests and nodes.
//!
//! Three kinds: **affinity** (keep the guests on one node), **anti-affinity** (never two of them
//! on one node) and **node affinity** (run the guests on these nodes). A strict rule is a hard
//! constraint: gates refuse a move that would break it, and the cluster planner repairs a
//! violation it finds. A soft rule only costs in the planner's objective.
//!
//! Tags make rules too: `exclude_<g>` / `plb_anti_affinity_<g>` a strict anti-affinity rule
//! named `exclude_<g>`, `affinity_<g>` / `plb_affinity_<g>` a soft affinity rule named
//! `affinity_<g>` (the planner moves such a group as one and never splits it), `pin_<node>` /
//! `plb_pin_<node>` a strict node-affinity rule per guest (several tags: any of the nodes) and
//! `prefer_<node>` a soft one.
//!
//! For node affinity, priorities count as Proxmox HA counts them: the rule's nodes are those of
//! the highest priority among the listed nodes that are available — online and not in
//! maintenance — (all listed nodes when none is).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::ViewError;
use crate::view::{Guest, Node};

/// What a rule asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Keep the guests on one node.
    Affinity,
    /// Never two of the guests on one node.
    AntiAffinity,
    /// Run the guests on the listed nodes.
    NodeAffinity,
}

impl RuleKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Affinity => "affinity",
            RuleKind::AntiAffinity => "anti_affinity",
            RuleKind::NodeAffinity => "node_affinity",
        }
    }
}

/// A node of a node-affinity rule, with its priority (higher is preferred).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleNode {
    pub node: String,
    #[serde(default)]
    pub priority: i64,
}

fn strict_by_default() -> bool {
    true
}

/// A rule as the cluster view carries it (`rules` of `proxbalance.cluster-view.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleView {
    /// Unique within the view, e.g. `pool:db` or `ha:keep-apart`; shown wherever the rule
    /// refuses a node or is left broken.
    pub name: String,
    pub kind: RuleKind,
    /// The guests it binds. Guests not in the view are ignored (a rule may outlive a guest).
    pub vmids: Vec<u32>,
    /// Node affinity: the nodes, with priorities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RuleNode>,
    /// Strict (the default): a hard constraint. Soft: a cost in the planner's objective.
    #[serde(default = "strict_by_default")]
    pub strict: bool,
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// A guest's tags.
    Tag,
    /// The view's `rules` (pool rules, Proxmox HA rules and groups).
    View,
}

/// A rule resolved against the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub strict: bool,
    pub source: RuleSource,
    /// Positions in `Cluster::guests`, ascending.
    pub members: Vec<usize>,
    /// Node affinity: positions in `Cluster::nodes` with their priority.
    pub nodes: Vec<(usize, i64)>,
    /// Node affinity: listed nodes the cluster does not have.
    pub unknown_nodes: Vec<String>,
}

impl Rule {
    /// Node affinity: the nodes the rule lets its guests run on now, per node: those of the
    /// highest priority among the listed nodes that are available (online and not in
    /// maintenance), or every listed node when none is. Empty for other kinds.
    pub fn allowed_nodes(&self, nodes: &[Node]) -> Vec<bool> {
        let mut allowed = vec![false; nodes.len()];
        if self.kind != RuleKind::NodeAffinity {
            return allowed;
        }
        let available = |n: usize| nodes[n].is_online() && !nodes[n].maintenance;
        let top = self
            .nodes
            .iter()
            .filter(|(n, _)| available(*n))
            .map(|(_, p)| *p)
            .max();
        for &(n, p) in &self.nodes {
            allowed[n] = top.is_none_or(|top| p == top && available(n));
        }
        allowed
    }

    /// How the rule is named to people: a tag rule by its tag, another by `rule <name>`.
    pub fn label(&self) -> String {
        match self.source {
            RuleSource::Tag => format!("tag {}", self.name),
            RuleSource::View => format!("rule {}", self.name),
        }
    }
}

/// Resolves the view's rules and the guests' tag rules. `guests` are sorted by vmid and `nodes`
/// by name, as the validated cluster holds them.
pub(crate) fn resolve(
    views: Vec<RuleView>,
    guests: &[Guest],
    nodes: &[Node],
) -> Result<Vec<Rule>, ViewError> {
    let node_index: BTreeMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.to_lowercase(), i))
        .collect();
    let resolve_node = |name: &str| node_index.get(&name.trim().to_lowercase()).copied();
    let mut rules = Vec::new();

    // tags
    let mut groups: BTreeMap<(RuleKind, String), Vec<usize>> = BTreeMap::new();
    for (gi, g) in guests.iter().enumerate() {
        for grp in &g.tags.exclude {
            groups
                .entry((RuleKind::AntiAffinity, format!("exclude_{grp}")))
                .or_default()
                .push(gi);
        }
        for grp in &g.tags.affinity {
            groups
                .entry((RuleKind::Affinity, format!("affinity_{grp}")))
                .or_default()
                .push(gi);
        }
    }
    for ((kind, name), members) in groups {
        rules.push(Rule {
            name,
            kind,
            strict: kind == RuleKind::AntiAffinity,
            source: RuleSource::Tag,
            members,
            nodes: Vec::new(),
            unknown_nodes: Vec::new(),
        });
    }
    for (gi, g) in guests.iter().enumerate() {
        for (set, strict, word) in [
            (&g.tags.pins, true, "pin"),
            (&g.tags.prefers, false, "prefer"),
        ] {
            if set.is_empty() {
                continue;
            }
            let (known, unknown): (Vec<&String>, Vec<&String>) =
                set.iter().partition(|n| resolve_node(n).is_some());
            rules.push(Rule {
                name: format!("{word}_{} of {}", join(set), g.vmid),
                kind: RuleKind::NodeAffinity,
                strict,
                source: RuleSource::Tag,
                members: vec![gi],
                nodes: known
                    .iter()
                    .filter_map(|n| resolve_node(n))
                    .map(|n| (n, 0))
                    .collect(),
                unknown_nodes: unknown.into_iter().cloned().collect(),
            });
        }
    }

    // the view's rules
    let mut names = BTreeSet::new();
    for (i, v) in views.into_iter().enumerate() {
        let p = |field: &str| format!("rules[{i}].{field}");
        if v.name.trim().is_empty() {
            return Err(ViewError::new(p("name"), "must not be empty"));
        }
        if !names.insert(v.name.clone()) {
            return Err(ViewError::new(
                p("name"),
                format!("duplicate rule name {:?}", v.name),
            ));
        }
        match v.kind {
            RuleKind::NodeAffinity if v.nodes.is_empty() => {
                return Err(ViewError::new(
                    p("nodes"),
                    "a node_affinity rule needs at least one node",
                ));
            }
            RuleKind::Affinity | RuleKind::AntiAffinity if !v.nodes.is_empty() => {
                return Err(ViewError::new(
                    p("nodes"),
                    format!(
                        "only node_affinity rules list nodes, not {}",
                        v.kind.as_str()
                    ),
                ));
            }
            _ => {}
        }
        let mut members: Vec<usize> = v
            .vmids
            .iter()
            .filter_map(|vmid| guests.binary_search_by_key(vmid, |g| g.vmid).ok())
            .collect();
        members.sort_unstable();
        members.dedup();
        let mut resolved = Vec::new();
        let mut unknown = Vec::new();
        for n in &v.nodes {
            match resolve_node(&n.node) {
                Some(i) if !resolved.iter().any(|(r, _)| *r == i) => resolved.push((i, n.priority)),
                Some(_) => {}
                None => unknown.push(n.node.clone()),
            }
        }
        resolved.sort_unstable();
        rules.push(Rule {
            name: v.name,
            kind: v.kind,
            strict: v.strict,
            source: RuleSource::View,
            members,
            nodes: resolved,
            unknown_nodes: unknown,
        });
    }
    rules.sort_by(|a, b| a.source.cmp(&b.source).then(a.name.cmp(&b.name)));
    Ok(rules)
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// Per guest, the rules that bind it, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GuestRules {
    /// Anti-affinity rules (positions in `Cluster::rules`).
    pub anti_affinity: Vec<usize>,
    /// Affinity rules.
    pub affinity: Vec<usize>,
    /// Node-affinity rules.
    pub node_affinity: Vec<usize>,
}

/// The rules of every guest, by position in `Cluster::guests`.
pub(crate) fn by_guest(rules: &[Rule], guests: usize) -> Vec<GuestRules> {
    let mut out = vec![GuestRules::default(); guests];
    for (ri, r) in rules.iter().enumerate() {
        for &gi in &r.members {
            let list = match r.kind {
                RuleKind::AntiAffinity => &mut out[gi].anti_affinity,
                RuleKind::Affinity => &mut out[gi].affinity,
                RuleKind::NodeAffinity => &mut out[gi].node_affinity,
            };
            list.push(ri);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Cluster;

    fn cluster(rules: serde_json::Value) -> Result<Cluster, ViewError> {
        let nodes: Vec<serde_json::Value> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n, "status": if *n == "c" { "offline" } else { "online" },
                    "cpu_cores": 8, "total_mem_gb": 64.0,
                    "current": {"cpu": 10.0, "mem": 10.0, "iowait": 0.0}})
            })
            .collect();
        let text = serde_json::json!({
            "format": "proxbalance.cluster-view.v1", "cluster": "c", "now": 1_764_230_400,
            "nodes": nodes,
            "guests": [
                {"vmid": 1, "type": "qemu", "node": "a", "status": "running", "cpu_percent": 5.0,
                 "cpu_cores": 1, "mem_used_gb": 1.0, "mem_max_gb": 1.0,
                 "tags": ["plb_pin_B", "pin_a", "exclude_db", "prefer_zz"]},
                {"vmid": 2, "type": "lxc", "node": "b", "status": "running", "cpu_percent": 5.0,
                 "cpu_cores": 1, "mem_used_gb": 1.0, "mem_max_gb": 1.0,
                 "tags": ["plb_anti_affinity_db", "affinity_web"]}
            ],
            "rules": rules
        });
        Cluster::from_json(&text.to_string())
    }

    #[test]
    fn tags_and_view_rules_resolve_to_guests_and_nodes() {
        let c = cluster(serde_json::json!([
            {"name": "ha:prefer", "kind": "node_affinity", "vmids": [2, 99],
             "nodes": [{"node": "c", "priority": 9}, {"node": "b", "priority": 2},
                       {"node": "a", "priority": 1}, {"node": "gone"}], "strict": false},
            {"name": "pool:db", "kind": "anti_affinity", "vmids": [1, 2]}
        ]))
        .expect("valid");
        let names: Vec<(&str, RuleKind, bool)> = c
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.kind, r.strict))
            .collect();
        assert_eq!(
            names,
            [
                ("affinity_web", RuleKind::Affinity, false),
                ("exclude_db", RuleKind::AntiAffinity, true),
                ("pin_a,b of 1", RuleKind::NodeAffinity, true),
                ("prefer_zz of 1", RuleKind::NodeAffinity, false),
                ("ha:prefer", RuleKind::NodeAffinity, false),
                ("pool:db", RuleKind::AntiAffinity, true),
            ]
        );
        assert_eq!(c.rules[1].members, [0, 1]);
        assert_eq!(c.rules[3].unknown_nodes, ["zz"]);
        let ha = &c.rules[4];
        assert_eq!(ha.members, [1]);
        assert_eq!(ha.unknown_nodes, ["gone"]);
        // c has the highest priority but is offline: b, the best online node, is the only one
        assert_eq!(ha.allowed_nodes(&c.nodes), [false, true, false]);
        assert_eq!(c.rules[2].allowed_nodes(&c.nodes), [true, true, false]);
        assert_eq!(ha.label(), "rule ha:prefer");
        assert_eq!(c.rules[1].label(), "tag exclude_db");
    }

    #[test]
    fn malformed_rules_are_refused_with_the_field() {
        let e = cluster(serde_json::json!([{"name": "", "kind": "affinity", "vmids": [1]}]))
            .unwrap_err();
        assert_eq!(e.to_string(), "rules[0].name: must not be empty");
        let e = cluster(serde_json::json!([
            {"name": "x", "kind": "affinity", "vmids": [1]},
            {"name": "x", "kind": "affinity", "vmids": [2]}
        ]))
        .unwrap_err();
        assert_eq!(e.to_string(), "rules[1].name: duplicate rule name \"x\"");
        let e = cluster(serde_json::json!([{"name": "p", "kind": "node_affinity", "vmids": [1]}]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules[0].nodes: a node_affinity rule needs at least one node"
        );
        let e = cluster(serde_json::json!([
            {"name": "p", "kind": "anti_affinity", "vmids": [1], "nodes": [{"node": "a"}]}
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules[0].nodes: only node_affinity rules list nodes, not anti_affinity"
        );
        let e = cluster(serde_json::json!([{"name": "p", "kind": "together", "vmids": [1]}]))
            .unwrap_err();
        assert_eq!(e.path, "rules[0].kind");
    }
}
