//! Placement rules: pins, pool and Proxmox HA rules, HA guests, PVE's own balancer and node
//! reserves, with both planners. Properties on generated clusters check every strict rule on
//! every intermediate state of a cluster plan, and that each violation the cluster starts with
//! is repaired or reported.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proxbalance_engine::synthetic::cluster_view_with_rules;
use proxbalance_engine::{
    Cluster, ClusterView, MoveTerm, RecommendationSet, RuleKind, SkipReason, migration_options,
    plan,
};
use serde_json::{Value, json};

/// A strict rule as the test reads it from the view, independently of the engine.
struct Strict {
    name: String,
    kind: RuleKind,
    /// vmids
    members: Vec<u32>,
    /// node affinity: the allowed node names
    allowed: BTreeSet<String>,
}

/// The strict rules of a view: its `rules`, the `exclude_`/`plb_anti_affinity_` tags and the
/// `pin_`/`plb_pin_` tags.
fn strict_rules(view: &ClusterView) -> Vec<Strict> {
    // available: online and not in maintenance (Proxmox HA's view of a node it may use)
    let online: BTreeSet<&str> = view
        .nodes
        .iter()
        .filter(|n| {
            n.status == proxbalance_engine::NodeStatus::Online
                && !view.maintenance_nodes.contains(&n.name)
        })
        .map(|n| n.name.as_str())
        .collect();
    let known: BTreeSet<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut out = Vec::new();
    for r in view.rules.iter().filter(|r| r.strict) {
        let listed: Vec<(&str, i64)> = r
            .nodes
            .iter()
            .filter(|n| known.contains(n.node.as_str()))
            .map(|n| (n.node.as_str(), n.priority))
            .collect();
        let top = listed
            .iter()
            .filter(|(n, _)| online.contains(n))
            .map(|(_, p)| *p)
            .max();
        let allowed = listed
            .iter()
            .filter(|(n, p)| top.is_none_or(|t| *p == t && online.contains(n)))
            .map(|(n, _)| (*n).to_owned())
            .collect();
        out.push(Strict {
            name: r.name.clone(),
            kind: r.kind,
            members: r.vmids.clone(),
            allowed,
        });
    }
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for g in &view.guests {
        let mut pins = BTreeSet::new();
        for word in g
            .tags
            .iter()
            .flat_map(|t| t.split([';', ',', ' ']))
            .map(|w| w.trim().to_lowercase())
        {
            if let Some(grp) = word
                .strip_prefix("exclude_")
                .or_else(|| word.strip_prefix("plb_anti_affinity_"))
                .filter(|x| !x.is_empty())
            {
                groups.entry(grp.to_owned()).or_default().push(g.vmid);
            }
            if let Some(node) = word
                .strip_prefix("plb_pin_")
                .or_else(|| word.strip_prefix("pin_"))
                .filter(|x| !x.is_empty())
            {
                pins.insert(node.to_owned());
            }
        }
        if !pins.is_empty() {
            out.push(Strict {
                name: format!("pins of {}", g.vmid),
                kind: RuleKind::NodeAffinity,
                members: vec![g.vmid],
                allowed: pins
                    .into_iter()
                    .filter(|n| known.contains(n.as_str()))
                    .collect(),
            });
        }
    }
    for (grp, members) in groups {
        out.push(Strict {
            name: format!("exclude_{grp}"),
            kind: RuleKind::AntiAffinity,
            members,
            allowed: BTreeSet::new(),
        });
    }
    out
}

/// Every strict rule holds for the guests a step moves, on the state the step is made in; a
/// group a strict affinity rule found together is never split.
fn check_steps(view: &ClusterView, set: &RecommendationSet) -> Result<(), TestCaseError> {
    let rules = strict_rules(view);
    let running: BTreeMap<u32, bool> = view
        .guests
        .iter()
        .map(|g| (g.vmid, g.status == "running"))
        .collect();
    let mut place: BTreeMap<u32, String> = view
        .guests
        .iter()
        .map(|g| (g.vmid, g.node.clone()))
        .collect();
    let together = |place: &BTreeMap<u32, String>, r: &Strict| {
        r.members
            .iter()
            .filter(|v| running.get(v).copied().unwrap_or(false))
            .map(|v| place[v].clone())
            .collect::<BTreeSet<_>>()
            .len()
            <= 1
    };
    for r in &set.recommendations {
        let was_together: Vec<bool> = rules
            .iter()
            .map(|x| x.kind == RuleKind::Affinity && together(&place, x))
            .collect();
        for rule in rules.iter().filter(|x| x.members.contains(&r.vmid)) {
            match rule.kind {
                RuleKind::NodeAffinity => prop_assert!(
                    rule.allowed.contains(&r.target_node),
                    "{} moved to {} outside {} ({:?})",
                    r.vmid,
                    r.target_node,
                    rule.name,
                    rule.allowed
                ),
                RuleKind::AntiAffinity => {
                    // (a guest moving in the same step came with it: contradictory rules)
                    let same_step: BTreeSet<u32> = set
                        .recommendations
                        .iter()
                        .filter(|x| {
                            x.vmid == r.vmid
                                || x.affinity_leader_vmid == Some(r.vmid)
                                || Some(x.vmid) == r.affinity_leader_vmid
                                || (x.affinity_leader_vmid.is_some()
                                    && x.affinity_leader_vmid == r.affinity_leader_vmid)
                        })
                        .map(|x| x.vmid)
                        .collect();
                    for other in rule.members.iter().filter(|v| !same_step.contains(v)) {
                        prop_assert!(
                            place.get(other) != Some(&r.target_node),
                            "{} joins {} of {} on {}",
                            r.vmid,
                            other,
                            rule.name,
                            r.target_node
                        );
                    }
                }
                RuleKind::Affinity => {}
            }
        }
        place.insert(r.vmid, r.target_node.clone());
        // guests moving with a leader land in the same step; judge after the last of them
        let step_done = set
            .recommendations
            .iter()
            .skip_while(|x| x.vmid != r.vmid)
            .nth(1)
            .is_none_or(|next| next.affinity_leader_vmid.is_none());
        if step_done {
            for (rule, was) in rules.iter().zip(was_together) {
                prop_assert!(
                    !was || together(&place, rule),
                    "{} split by moving {}",
                    rule.name,
                    r.vmid
                );
            }
        }
    }
    // every strict violation left among online guests is reported, with the rule named
    let online: BTreeSet<&str> = view
        .nodes
        .iter()
        .filter(|n| n.status == proxbalance_engine::NodeStatus::Online)
        .map(|n| n.name.as_str())
        .collect();
    for rule in &rules {
        let live: Vec<u32> = rule
            .members
            .iter()
            .copied()
            .filter(|v| {
                running.get(v).copied().unwrap_or(false) && online.contains(place[v].as_str())
            })
            .collect();
        let broken = match rule.kind {
            RuleKind::NodeAffinity => live.iter().any(|v| !rule.allowed.contains(&place[v])),
            RuleKind::AntiAffinity => {
                let nodes: BTreeSet<&String> = live.iter().map(|v| &place[v]).collect();
                nodes.len() < live.len()
            }
            RuleKind::Affinity => {
                live.iter()
                    .map(|v| &place[v])
                    .collect::<BTreeSet<_>>()
                    .len()
                    > 1
            }
        };
        if broken {
            let kind = rule.kind.as_str();
            prop_assert!(
                set.unresolved.iter().any(|u| u.rule == kind
                    && (u.group.as_deref() == Some(rule.name.as_str())
                        || rule.name.starts_with("pins of "))),
                "{} is broken after the plan and not reported: {:?}",
                rule.name,
                set.unresolved
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_plan_breaks_a_strict_rule_and_violations_are_repaired_or_reported(
        nodes in 2usize..10,
        guests in 1usize..100,
        seed: u64,
    ) {
        let view = cluster_view_with_rules(nodes, guests, seed);
        let c = view.clone().validate().expect("valid");
        let set = plan(&c, None);
        check_steps(&view, &set)?;
    }

    #[test]
    fn the_reference_generator_never_breaks_a_strict_rule_either(
        nodes in 2usize..10,
        guests in 1usize..100,
        seed: u64,
    ) {
        let mut view = cluster_view_with_rules(nodes, guests, seed);
        view.penalty_config.insert("planner".into(), "reference".into());
        let c = view.clone().validate().expect("valid");
        let set = plan(&c, None);
        let rules = strict_rules(&view);
        let mut place: BTreeMap<u32, String> = view.guests.iter().map(|g| (g.vmid, g.node.clone())).collect();
        for r in &set.recommendations {
            place.insert(r.vmid, r.target_node.clone());
        }
        for r in &set.recommendations {
            for rule in rules.iter().filter(|x| x.members.contains(&r.vmid)) {
                match rule.kind {
                    RuleKind::NodeAffinity => prop_assert!(rule.allowed.contains(&r.target_node)),
                    RuleKind::AntiAffinity => prop_assert!(rule
                        .members
                        .iter()
                        .filter(|v| **v != r.vmid)
                        .all(|v| place[v] != r.target_node || c.guest(*v).is_some_and(|g| !g.is_running() && g.node != c.node_index(&r.target_node).unwrap_or(usize::MAX)))),
                    RuleKind::Affinity => {}
                }
            }
        }
    }
}

// --- pins

fn three_nodes(guests: Vec<Value>) -> Value {
    view_json(
        vec![
            node("pve1", 16, 128.0, 80.0, 80.0, 1.0),
            node("pve2", 16, 128.0, 20.0, 20.0, 1.0),
            node("pve3", 16, 128.0, 20.0, 20.0, 1.0),
        ],
        guests,
    )
}

fn tagged(g: Value, tags: &[&str]) -> Value {
    with(g, "tags", json!(tags))
}

#[test]
fn a_guest_off_its_pins_is_moved_back_and_others_stay_off_them() {
    let v = three_nodes(vec![
        // pinned to pve3 but running on pve1: a mandatory move
        tagged(guest(1, "pve1", 50.0, 4, 8.0, 8.0), &["pin_pve3"]),
        // pinned where it is: never moved, whatever pve1's load
        tagged(guest(2, "pve1", 90.0, 8, 30.0, 32.0), &["plb_pin_pve1"]),
        guest(3, "pve1", 10.0, 2, 4.0, 4.0),
    ]);
    let c = cluster(&v);
    let set = plan(&c, None);
    let one = set
        .recommendations
        .iter()
        .find(|r| r.vmid == 1)
        .expect("1 moves");
    assert_eq!(
        (one.target_node.as_str(), one.term),
        ("pve3", MoveTerm::NodeAffinity)
    );
    assert_eq!(set.recommendations[0].vmid, 1, "repairs come first");
    assert!(set.recommendations.iter().all(|r| r.vmid != 2));
    let o = migration_options(&c, 2).expect("guest");
    let pve2 = o.targets.iter().find(|t| t.node == "pve2").expect("pve2");
    assert_eq!(
        pve2.gate_reason.as_deref(),
        Some("pinned elsewhere (tag pin_pve1 of 2)")
    );
    // the reference generator honours the pin as a gate too
    let set = plan(&reference(&v), None);
    assert!(
        set.recommendations
            .iter()
            .all(|r| r.vmid != 2 && (r.vmid != 1 || r.target_node == "pve3"))
    );
}

#[test]
fn a_soft_pin_costs_but_does_not_bind() {
    let v = three_nodes(vec![
        tagged(guest(1, "pve2", 10.0, 2, 4.0, 4.0), &["prefer_pve3"]),
        guest(2, "pve1", 50.0, 8, 40.0, 40.0),
        guest(3, "pve2", 10.0, 2, 4.0, 4.0),
    ]);
    let set = plan(&cluster(&v), None);
    let one = set
        .recommendations
        .iter()
        .find(|r| r.vmid == 1)
        .expect("1 moves");
    assert_eq!(one.target_node, "pve3");
    let gain = one.gain.expect("gain");
    assert_eq!(gain.pins, 100.0);
    assert_eq!(one.term, MoveTerm::NodeAffinity);
    // a strict pin the cluster cannot honour is reported with why
    let v = three_nodes(vec![tagged(
        guest(1, "pve1", 10.0, 2, 4.0, 4.0),
        &["pin_pve9", "ignore"],
    )]);
    let set = plan(&cluster(&v), None);
    assert!(set.recommendations.is_empty());
    let u = &set.unresolved[0];
    assert_eq!(u.rule, "node_affinity");
    assert_eq!(u.vmids, [1]);
    assert!(
        u.detail.starts_with("pinned to pve9;") && u.detail.contains("tagged ignore"),
        "{}",
        u.detail
    );
}

// --- pool and HA rules

#[test]
fn view_rules_bind_and_are_named_where_they_refuse() {
    let mut v = three_nodes(vec![
        guest(1, "pve1", 50.0, 4, 16.0, 16.0),
        guest(2, "pve1", 50.0, 4, 16.0, 16.0),
        guest(3, "pve2", 10.0, 2, 4.0, 4.0),
        guest(4, "pve3", 10.0, 2, 4.0, 4.0),
    ]);
    v["rules"] = json!([
        {"name": "pool:db", "kind": "anti_affinity", "vmids": [1, 2, 3]},
        {"name": "ha:prefer-pve3", "kind": "node_affinity", "vmids": [4],
         "nodes": [{"node": "pve3", "priority": 2}, {"node": "pve2", "priority": 1}]}
    ]);
    let c = cluster(&v);
    let set = plan(&c, None);
    // 1 and 2 share pve1 against pool:db: one of them goes, and not to pve2 (3 is there)
    let repair: Vec<_> = set
        .recommendations
        .iter()
        .filter(|r| r.term == MoveTerm::AntiAffinity)
        .map(|r| r.target_node.as_str())
        .collect();
    assert_eq!(repair, ["pve3"]);
    assert!(set.recommendations.iter().all(|r| r.vmid != 4));
    let o = migration_options(&c, 1).expect("guest");
    let pve2 = o.targets.iter().find(|t| t.node == "pve2").expect("pve2");
    assert_eq!(
        pve2.gate_reason.as_deref(),
        Some("anti-affinity conflict (rule pool:db)")
    );
    let o = migration_options(&c, 4).expect("guest");
    let pve2 = o.targets.iter().find(|t| t.node == "pve2").expect("pve2");
    assert_eq!(
        pve2.gate_reason.as_deref(),
        Some("pinned elsewhere (rule ha:prefer-pve3)")
    );
    // the plan names the rules where it says why a guest stays
    let stays = |vmid: u32| {
        set.skipped
            .iter()
            .find(|s| s.vmid == vmid)
            .map(|s| (s.reason, s.detail.as_str()))
    };
    assert_eq!(
        stays(4),
        Some((
            SkipReason::NoSuitableTarget,
            "every target was refused: pve1: pinned elsewhere (rule ha:prefer-pve3); \
             pve2: pinned elsewhere (rule ha:prefer-pve3)"
        ))
    );
    // a soft anti-affinity rule only costs: the planner still separates the two, here by a
    // move memory balance wanted anyway
    v["rules"][0]["strict"] = json!(false);
    let set = plan(&cluster(&v), None);
    let moved: Vec<_> = set
        .recommendations
        .iter()
        .filter(|r| r.vmid <= 2)
        .map(|r| (r.vmid, r.gain.map(|g| g.anti_affinity)))
        .collect();
    assert_eq!(moved, [(1, Some(200.0))]);
    assert!(set.unresolved.is_empty());
}

#[test]
fn a_strict_affinity_rule_found_split_is_brought_together() {
    let mut v = three_nodes(vec![
        guest(1, "pve2", 10.0, 2, 8.0, 8.0),
        guest(2, "pve2", 10.0, 2, 8.0, 8.0),
        guest(3, "pve3", 10.0, 2, 8.0, 8.0),
        guest(4, "pve1", 10.0, 2, 8.0, 8.0),
    ]);
    v["rules"] = json!([{"name": "pool:web", "kind": "affinity", "vmids": [1, 2, 3]}]);
    let set = plan(&cluster(&v), None);
    let gather: Vec<_> = set
        .recommendations
        .iter()
        .filter(|r| r.term == MoveTerm::Affinity)
        .map(|r| (r.vmid, r.target_node.as_str()))
        .collect();
    assert_eq!(gather, [(3, "pve2")]);
    // no room anywhere for the whole group: reported
    v["nodes"][1]["total_mem_gb"] = json!(17.0);
    v["nodes"][2]["total_mem_gb"] = json!(17.0);
    let set = plan(&cluster(&v), None);
    let u = set
        .unresolved
        .iter()
        .find(|u| u.rule == "affinity")
        .expect("reported");
    assert_eq!(u.group.as_deref(), Some("pool:web"));
    assert_eq!(u.vmids, [1, 2, 3]);
    assert!(
        u.detail.starts_with("no node can take the whole group"),
        "{}",
        u.detail
    );
}

// --- HA guests and PVE's own balancer

#[test]
fn ha_guests_are_skipped_or_planned_within_their_rules() {
    let mut v = three_nodes(vec![
        with(
            guest(1, "pve1", 90.0, 8, 40.0, 40.0),
            "ha_managed",
            json!(true),
        ),
        with(
            guest(2, "pve1", 90.0, 8, 40.0, 40.0),
            "ha_managed",
            json!(true),
        ),
    ]);
    let set = plan(&cluster(&v), None);
    assert!(set.recommendations.is_empty());
    assert!(
        set.skipped
            .iter()
            .all(|s| s.reason == SkipReason::HaManaged)
    );

    v["penalty_config"] = json!({"ha_guests": "recommend"});
    v["rules"] = json!([{"name": "ha:group-a", "kind": "node_affinity", "vmids": [1, 2],
                         "nodes": [{"node": "pve1"}, {"node": "pve2"}]}]);
    let set = plan(&cluster(&v), None);
    let moves: Vec<_> = set
        .recommendations
        .iter()
        .map(|r| (r.vmid, r.target_node.as_str(), r.command.as_str()))
        .collect();
    assert_eq!(
        moves,
        [(1, "pve2", "ha-manager crm-command migrate vm:1 pve2")]
    );

    // PVE balancing HA resources itself wins over ha_guests
    v["crs"] = json!({"ha": "dynamic", "auto_rebalance": true});
    let set = plan(&cluster(&v), None);
    assert!(set.recommendations.is_empty());
    assert!(
        set.skipped
            .iter()
            .all(|s| s.reason == SkipReason::ManagedByPveCrs)
    );
    // dynamic without auto-rebalance only places at recovery: moves stay ours
    v["crs"] = json!({"ha": "dynamic", "auto_rebalance": false});
    assert_eq!(plan(&cluster(&v), None).recommendations.len(), 1);
}

// --- node reserves

#[test]
fn a_node_reserve_lowers_what_the_gate_and_the_balance_see() {
    let mut v = view_json(
        vec![
            node("hot", 16, 128.0, 40.0, 90.0, 1.0),
            node("roomy", 16, 128.0, 10.0, 10.0, 1.0),
        ],
        vec![
            guest(1, "hot", 20.0, 4, 60.0, 60.0),
            guest(2, "hot", 20.0, 4, 55.0, 55.0),
            guest(3, "roomy", 5.0, 2, 12.0, 12.0),
        ],
    );
    let set = plan(&cluster(&v), None);
    assert_eq!(set.recommendations.len(), 1);
    // with 64 GiB held back on roomy, a 55-60 GiB guest no longer fits there
    v["nodes"][1]["reserve_gb"] = json!(64.0);
    let c = cluster(&v);
    assert_eq!(c.nodes[1].offered_mem_gb(&c.config), 64.0);
    let set = plan(&c, None);
    assert!(
        set.recommendations.is_empty(),
        "{:?}",
        set.recommendations
            .iter()
            .map(|r| r.vmid)
            .collect::<Vec<_>>()
    );
    let o = migration_options(&c, 2).expect("guest");
    assert_eq!(
        o.targets[0].gate_reason.as_deref(),
        Some("insufficient memory capacity")
    );
    // the configured reserve applies where the view sets none: the larger of GiB and percent
    v["nodes"][1]
        .as_object_mut()
        .map(|n| n.remove("reserve_gb"));
    v["penalty_config"] = json!({"node_reserve_gb": 4.0, "node_reserve_percent": 10.0});
    let c = cluster(&v);
    assert!((c.nodes[1].offered_mem_gb(&c.config) - 115.2).abs() < 1e-9);
}

fn reference_cluster(v: &Value) -> Cluster {
    reference(v)
}

#[test]
fn unknown_rule_members_and_nodes_are_ignored_but_shapes_are_checked() {
    let mut v = three_nodes(vec![guest(1, "pve1", 10.0, 2, 4.0, 4.0)]);
    v["rules"] = json!([{"name": "pool:old", "kind": "anti_affinity", "vmids": [1, 404]}]);
    let c = reference_cluster(&v);
    let r = c.rules.iter().find(|r| r.name == "pool:old").expect("rule");
    assert_eq!(r.members, [0]);
    v["rules"] =
        json!([{"name": "pool:old", "kind": "anti_affinity", "vmids": [1], "strict": "yes"}]);
    let e = proxbalance_engine::Cluster::from_json(&v.to_string()).unwrap_err();
    assert_eq!(e.path, "rules[0].strict");
}
