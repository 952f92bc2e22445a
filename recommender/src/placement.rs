//! The placement rules and node reserves of a cluster view, from what the collector publishes
//! and from the configuration (docs/architecture.md, "Placement rules").
//!
//! **Proxmox HA rules** (`ClusterStatus.ha_rules`) bind HA-managed guests only (an `ignored`
//! HA resource is not HA's to place):
//!
//! | PVE | view rule |
//! |---|---|
//! | PVE 9 `resource-affinity`, `positive` | `ha:<rule>`, `affinity`, strict |
//! | PVE 9 `resource-affinity`, `negative` | `ha:<rule>`, `anti_affinity`, strict |
//! | PVE 9 `node-affinity` | `ha:<rule>`, `node_affinity` with its priorities |
//! | PVE 8 group | `ha-group:<group>`, `node_affinity` with its priorities |
//!
//! HA's failback moves a resource back to the highest-priority nodes of its rule that are
//! available, and a `strict` rule (`restricted` group) never lets it run elsewhere: both are
//! strict rules. A non-strict rule (unrestricted group) lets HA run the resource on any node
//! only while none of its nodes is available (online, not in maintenance): it is strict while
//! one is, and left out while none is. (A PVE 8 group's `nofailback` and PVE 9's per-resource
//! `failback = 0`, which let HA leave a resource on a lower-priority node, are not read: the
//! rule is then stricter than HA, never looser.)
//!
//! **Pool rules** come from `[engine.pools.<pool>]` (or the cluster's own entry) and bind the
//! guests whose `pool` is that pool: `affinity` / `anti_affinity` as `pool:<pool>`, `pin` as a
//! node-affinity rule `pool:<pool>` (`pool:<pool>:pin` beside an affinity rule), all strict
//! unless `strict = false`.
//!
//! **Node reserves**: `[engine.clusters.<c>.nodes.<n>] reserve_gb`, else the cluster's
//! `node_reserve_gb` / `node_reserve_percent` (each falling back to the global key, the larger
//! of the two applying), become the node's `reserve_gb`; without either the view leaves it
//! unset and the engine applies the global keys.

use std::collections::{BTreeMap, BTreeSet};

use proxbalance_engine::{
    self as engine, GuestView, HaGuests, NodeStatus, NodeView, PenaltyConfig, RuleKind, RuleNode,
    RuleSource, RuleView,
};
use proxbalance_proto::v1 as pb;

use crate::config::{ClusterEngineConfig, EngineConfig, PoolRules};

/// The pool rules and per-cluster settings of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pools: BTreeMap<String, PoolRules>,
    clusters: BTreeMap<String, ClusterEngineConfig>,
}

impl Placement {
    /// The placement settings of an (already validated) engine configuration.
    pub fn from_config(engine: &EngineConfig) -> Self {
        Placement {
            pools: engine.pools.clone(),
            clusters: engine.clusters.clone(),
        }
    }

    /// The per-cluster settings of `cluster` (reserves, nodes, pools), if it has any.
    pub fn cluster(&self, cluster: &str) -> Option<&ClusterEngineConfig> {
        self.clusters.get(cluster)
    }

    /// The pool rules in force in `cluster`: the global ones, each replaced by the cluster's
    /// entry of the same pool.
    pub fn pools_of(&self, cluster: &str) -> BTreeMap<&str, &PoolRules> {
        let mut out: BTreeMap<&str, &PoolRules> =
            self.pools.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if let Some(c) = self.clusters.get(cluster) {
            out.extend(c.pools.iter().map(|(k, v)| (k.as_str(), v)));
        }
        out
    }

    /// The view rules of the pools of `cluster`, binding its guests of each pool (a pool
    /// without guests there makes rules without members).
    pub fn pool_rules(&self, cluster: &str, guests: &[GuestView]) -> Vec<RuleView> {
        let mut members: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for g in guests {
            if let Some(p) = g.pool.as_deref() {
                members.entry(p).or_default().push(g.vmid);
            }
        }
        let mut out = Vec::new();
        for (pool, r) in self.pools_of(cluster) {
            let mut vmids = members.get(pool).cloned().unwrap_or_default();
            vmids.sort_unstable();
            let rule = |name: String, kind, nodes| RuleView {
                name,
                kind,
                vmids: vmids.clone(),
                nodes,
                strict: r.strict,
            };
            let together = if r.affinity {
                Some(RuleKind::Affinity)
            } else if r.anti_affinity {
                Some(RuleKind::AntiAffinity)
            } else {
                None
            };
            if let Some(kind) = together {
                out.push(rule(format!("pool:{pool}"), kind, Vec::new()));
            }
            if !r.pin.is_empty() {
                let name = if together.is_some() {
                    format!("pool:{pool}:pin")
                } else {
                    format!("pool:{pool}")
                };
                let nodes = r
                    .pin
                    .iter()
                    .map(|n| RuleNode {
                        node: n.trim().to_owned(),
                        priority: 0,
                    })
                    .collect();
                out.push(rule(name, RuleKind::NodeAffinity, nodes));
            }
        }
        out
    }

    /// The memory `node` of `cluster` holds back, GiB, when the cluster or the node sets it;
    /// `None` leaves it to the engine's global keys (`config`).
    pub fn node_reserve_gb(
        &self,
        cluster: &str,
        node: &str,
        total_mem_gb: f64,
        config: &PenaltyConfig,
    ) -> Option<f64> {
        let c = self.clusters.get(cluster)?;
        if let Some(r) = c.nodes.get(node).and_then(|n| n.reserve_gb) {
            return Some(r);
        }
        if c.node_reserve_gb.is_none() && c.node_reserve_percent.is_none() {
            return None;
        }
        let gb = c.node_reserve_gb.unwrap_or(config.node_reserve_gb);
        let percent = c
            .node_reserve_percent
            .unwrap_or(config.node_reserve_percent);
        Some(gb.max(percent / 100.0 * total_mem_gb))
    }
}

/// Whether the cluster status carries the cluster's HA rules (read at least once).
pub fn ha_rules_known(status: Option<&pb::ClusterStatus>) -> bool {
    status.is_some_and(|s| {
        matches!(
            pb::HaRulesSource::try_from(s.ha_rules_source),
            Ok(pb::HaRulesSource::Rules | pb::HaRulesSource::Groups)
        )
    })
}

/// The view rules of the cluster's Proxmox HA rules (see the module documentation). `nodes`
/// and `maintenance` are the view's: a node is available when it is online there and not in
/// maintenance. Rules the engine would refuse (a node-affinity rule without nodes, a second
/// rule of one name) are left out.
pub fn ha_rules(
    status: &pb::ClusterStatus,
    nodes: &[NodeView],
    maintenance: &[String],
    guests: &[GuestView],
) -> Vec<RuleView> {
    let available = |name: &str| {
        nodes
            .iter()
            .any(|n| n.name == name && n.status == NodeStatus::Online)
            && !maintenance.iter().any(|m| m == name)
    };
    let ha_guests: BTreeSet<u32> = guests
        .iter()
        .filter(|g| g.ha_managed)
        .map(|g| g.vmid)
        .collect();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for r in &status.ha_rules {
        let kind = pb::HaRuleKind::try_from(r.kind).unwrap_or(pb::HaRuleKind::Unspecified);
        let (name, kind) = match kind {
            pb::HaRuleKind::NodeAffinity => (format!("ha:{}", r.name), RuleKind::NodeAffinity),
            pb::HaRuleKind::ResourceAffinityPositive => {
                (format!("ha:{}", r.name), RuleKind::Affinity)
            }
            pb::HaRuleKind::ResourceAffinityNegative => {
                (format!("ha:{}", r.name), RuleKind::AntiAffinity)
            }
            pb::HaRuleKind::Group => (format!("ha-group:{}", r.name), RuleKind::NodeAffinity),
            pb::HaRuleKind::Unspecified => continue,
        };
        let rule_nodes: Vec<RuleNode> = if kind == RuleKind::NodeAffinity {
            let listed: Vec<RuleNode> = r
                .nodes
                .iter()
                .filter(|n| !n.node.trim().is_empty())
                .map(|n| RuleNode {
                    node: n.node.trim().to_owned(),
                    priority: i64::from(n.priority),
                })
                .collect();
            if listed.is_empty() {
                continue;
            }
            // Not strict: HA runs the resource anywhere while none of its nodes is available.
            if !r.strict && !listed.iter().any(|n| available(&n.node)) {
                continue;
            }
            listed
        } else {
            Vec::new()
        };
        if r.name.trim().is_empty() || !names.insert(name.clone()) {
            continue;
        }
        out.push(RuleView {
            name,
            kind,
            vmids: r
                .vmids
                .iter()
                .copied()
                .filter(|v| ha_guests.contains(v))
                .collect(),
            nodes: rule_nodes,
            strict: true,
        });
    }
    out
}

/// How HA guests are treated in a cluster with this configuration and status.
pub fn ha_guests(config: &PenaltyConfig, status: Option<&pb::ClusterStatus>) -> pb::HaGuests {
    if status
        .and_then(|s| s.crs.as_ref())
        .is_some_and(|c| crate::state::view::crs_of(c).balances_ha())
    {
        pb::HaGuests::ManagedByPveCrs
    } else if config.ha_guests == HaGuests::Skip {
        pb::HaGuests::Skip
    } else if ha_rules_known(status) {
        pb::HaGuests::Recommend
    } else {
        pb::HaGuests::SkipRulesUnknown
    }
}

/// The rules a validated cluster was planned with, for `GetClusterState`.
pub fn rules_to_proto(cluster: &engine::Cluster) -> Vec<pb::PlacementRule> {
    cluster
        .rules
        .iter()
        .map(|r| {
            let allowed = r.allowed_nodes(&cluster.nodes);
            pb::PlacementRule {
                name: r.name.clone(),
                kind: r.kind.as_str().to_owned(),
                strict: r.strict,
                source: match r.source {
                    RuleSource::Tag => "tag",
                    RuleSource::View if r.name.starts_with("pool:") => "pool",
                    RuleSource::View if r.name.starts_with("ha-group:") => "ha_group",
                    RuleSource::View => "ha",
                }
                .to_owned(),
                vmids: r.members.iter().map(|&g| cluster.guests[g].vmid).collect(),
                nodes: r
                    .nodes
                    .iter()
                    .map(|&(n, priority)| pb::PlacementRuleNode {
                        node: cluster.nodes[n].name.clone(),
                        priority,
                        allowed: allowed[n],
                    })
                    .collect(),
                unknown_nodes: r.unknown_nodes.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proxbalance_engine::{CurrentMetrics, GuestKind};

    fn node(name: &str, status: NodeStatus, total: f64) -> NodeView {
        NodeView {
            name: name.into(),
            status,
            cpu_cores: 8,
            total_mem_gb: total,
            current: CurrentMetrics {
                cpu: 10.0,
                mem: 10.0,
                iowait: 0.0,
            },
            avg_24h: None,
            week: None,
            history: Vec::new(),
            storage: Vec::new(),
            reserve_gb: None,
        }
    }

    fn guest(vmid: u32, ha: bool, pool: Option<&str>) -> GuestView {
        GuestView {
            vmid,
            name: String::new(),
            kind: GuestKind::Qemu,
            node: "a".into(),
            status: "running".into(),
            cpu_percent: 1.0,
            cpu_cores: 1,
            mem_used_gb: 1.0,
            mem_max_gb: 1.0,
            disk_read_bps: 0.0,
            disk_write_bps: 0.0,
            net_in_bps: 0.0,
            net_out_bps: 0.0,
            tags: Vec::new(),
            ha_managed: ha,
            lock: None,
            template: false,
            passthrough: false,
            unshared_bind_mount: false,
            storages: Vec::new(),
            config_known: true,
            pool: pool.map(str::to_owned),
        }
    }

    fn ha(
        name: &str,
        kind: pb::HaRuleKind,
        vmids: &[u32],
        nodes: &str,
        strict: bool,
    ) -> pb::HaRule {
        pb::HaRule {
            name: name.into(),
            kind: kind as i32,
            vmids: vmids.to_vec(),
            nodes: nodes
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|n| {
                    let (node, p) = n.split_once(':').unwrap_or((n, "0"));
                    pb::HaRuleNode {
                        node: node.into(),
                        priority: p.parse().unwrap_or(0),
                    }
                })
                .collect(),
            strict,
        }
    }

    fn rn(node: &str, priority: i64) -> RuleNode {
        RuleNode {
            node: node.into(),
            priority,
        }
    }

    #[test]
    fn ha_rules_and_groups_map_to_strict_view_rules_while_their_nodes_are_available() {
        use pb::HaRuleKind as K;
        let status = pb::ClusterStatus {
            ha_rules: vec![
                ha("apart", K::ResourceAffinityNegative, &[1, 2, 9], "", false),
                ha("together", K::ResourceAffinityPositive, &[3, 4], "", false),
                ha("pinned", K::NodeAffinity, &[1], "c:3", true),
                ha("prefer", K::NodeAffinity, &[2, 3], "a:2,b:1", false),
                ha("down-only", K::NodeAffinity, &[4], "c:1,d", false),
                ha("in-maintenance", K::NodeAffinity, &[4], "b", false),
                ha("grp", K::Group, &[5], "b:1,c", false),
                ha("no-nodes", K::NodeAffinity, &[1], "", true),
                ha("future", K::Unspecified, &[1], "", true),
                ha("pinned", K::NodeAffinity, &[2], "a", true),
            ],
            ..Default::default()
        };
        let nodes = [
            node("a", NodeStatus::Online, 64.0),
            node("b", NodeStatus::Online, 64.0),
            node("c", NodeStatus::Offline, 64.0),
            node("d", NodeStatus::Unknown, 64.0),
        ];
        // 9 is not HA-managed (e.g. `ignored`): HA does not place it.
        let guests: Vec<GuestView> = (1..=5)
            .map(|v| guest(v, true, None))
            .chain([guest(9, false, None)])
            .collect();
        let rules = ha_rules(&status, &nodes, &["b".to_owned()], &guests);
        let expected = vec![
            RuleView {
                name: "ha:apart".into(),
                kind: RuleKind::AntiAffinity,
                vmids: vec![1, 2],
                nodes: vec![],
                strict: true,
            },
            RuleView {
                name: "ha:together".into(),
                kind: RuleKind::Affinity,
                vmids: vec![3, 4],
                nodes: vec![],
                strict: true,
            },
            // strict: kept though its only node is offline
            RuleView {
                name: "ha:pinned".into(),
                kind: RuleKind::NodeAffinity,
                vmids: vec![1],
                nodes: vec![rn("c", 3)],
                strict: true,
            },
            // not strict, a is online: strict with HA's priorities
            RuleView {
                name: "ha:prefer".into(),
                kind: RuleKind::NodeAffinity,
                vmids: vec![2, 3],
                nodes: vec![rn("a", 2), rn("b", 1)],
                strict: true,
            },
            // down-only (c offline, d unknown), in-maintenance and the unrestricted group
            // (b in maintenance, c offline) are left out: HA runs their guests anywhere
        ];
        assert_eq!(rules, expected);
        // b back from maintenance: in-maintenance and the group are in force again.
        let rules = ha_rules(&status, &nodes, &[], &guests);
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ha:apart",
                "ha:together",
                "ha:pinned",
                "ha:prefer",
                "ha:in-maintenance",
                "ha-group:grp"
            ]
        );
        assert_eq!(
            rules[5],
            RuleView {
                name: "ha-group:grp".into(),
                kind: RuleKind::NodeAffinity,
                vmids: vec![5],
                nodes: vec![rn("b", 1), rn("c", 0)],
                strict: true,
            }
        );
    }

    #[test]
    fn pool_rules_from_the_configuration_with_cluster_overrides() {
        let c = Config::from_toml(
            r#"
[engine.pools.db]
anti_affinity = true
[engine.pools.web]
affinity = true
pin = ["pve1", " pve2 "]
strict = false
[engine.pools.batch]
pin = ["pve3"]
[engine.clusters.lab.pools.db]
[engine.clusters.lab.pools.cache]
affinity = true
"#,
        )
        .expect("config");
        let p = Placement::from_config(&c.engine);
        let guests = [
            guest(12, false, Some("db")),
            guest(11, true, Some("db")),
            guest(20, false, Some("web")),
            guest(30, false, None),
            guest(40, false, Some("cache")),
        ];
        let rule = |name: &str, kind, vmids: &[u32], nodes: Vec<RuleNode>, strict| RuleView {
            name: name.into(),
            kind,
            vmids: vmids.to_vec(),
            nodes,
            strict,
        };
        assert_eq!(
            p.pool_rules("prod", &guests),
            [
                rule(
                    "pool:batch",
                    RuleKind::NodeAffinity,
                    &[],
                    vec![rn("pve3", 0)],
                    true
                ),
                rule("pool:db", RuleKind::AntiAffinity, &[11, 12], vec![], true),
                rule("pool:web", RuleKind::Affinity, &[20], vec![], false),
                rule(
                    "pool:web:pin",
                    RuleKind::NodeAffinity,
                    &[20],
                    vec![rn("pve1", 0), rn("pve2", 0)],
                    false
                ),
            ]
        );
        // lab: db's empty entry removes its rule, cache is lab's own
        let names: Vec<String> = p
            .pool_rules("lab", &guests)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            ["pool:batch", "pool:cache", "pool:web", "pool:web:pin"]
        );
    }

    #[test]
    fn node_reserves_per_node_then_per_cluster_then_global() {
        let c = Config::from_toml(
            r#"
[engine.penalties]
node_reserve_gb = 2
node_reserve_percent = 10
[engine.clusters.prod]
node_reserve_gb = 4
[engine.clusters.prod.nodes.pve1]
reserve_gb = 16
[engine.clusters.lab.nodes.pve1]
reserve_gb = 1
"#,
        )
        .expect("config");
        let p = Placement::from_config(&c.engine);
        let (cfg, _) = c.engine.resolve().expect("engine");
        assert_eq!(p.node_reserve_gb("prod", "pve1", 64.0, &cfg), Some(16.0));
        // 4 GiB (the cluster's) against 10 % (the global percent): the larger
        assert_eq!(p.node_reserve_gb("prod", "pve2", 64.0, &cfg), Some(6.4));
        assert_eq!(p.node_reserve_gb("prod", "pve2", 16.0, &cfg), Some(4.0));
        assert_eq!(p.node_reserve_gb("lab", "pve1", 64.0, &cfg), Some(1.0));
        // neither the cluster nor the node sets one: the engine's global keys apply
        assert_eq!(p.node_reserve_gb("lab", "pve2", 64.0, &cfg), None);
        assert_eq!(p.node_reserve_gb("other", "pve1", 64.0, &cfg), None);
    }

    #[test]
    fn ha_guests_follow_crs_configuration_and_whether_rules_were_read() {
        let skip = PenaltyConfig::default();
        let recommend = skip
            .with_text_override("ha_guests", "recommend")
            .expect("key");
        let status = |source: pb::HaRulesSource, ha: &str, auto: bool| pb::ClusterStatus {
            ha_rules_source: source as i32,
            crs: Some(pb::CrsSettings {
                ha: ha.into(),
                ha_auto_rebalance: auto,
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = status(pb::HaRulesSource::Rules, "static", false);
        assert_eq!(ha_guests(&skip, Some(&read)), pb::HaGuests::Skip);
        assert_eq!(ha_guests(&recommend, Some(&read)), pb::HaGuests::Recommend);
        let unread = status(pb::HaRulesSource::Unspecified, "basic", false);
        assert_eq!(
            ha_guests(&recommend, Some(&unread)),
            pb::HaGuests::SkipRulesUnknown
        );
        assert_eq!(ha_guests(&recommend, None), pb::HaGuests::SkipRulesUnknown);
        let groups = status(pb::HaRulesSource::Groups, "dynamic", false);
        assert_eq!(
            ha_guests(&recommend, Some(&groups)),
            pb::HaGuests::Recommend
        );
        let pve = status(pb::HaRulesSource::Rules, "dynamic", true);
        assert_eq!(ha_guests(&skip, Some(&pve)), pb::HaGuests::ManagedByPveCrs);
        assert_eq!(
            ha_guests(&recommend, Some(&pve)),
            pb::HaGuests::ManagedByPveCrs
        );
    }
}
