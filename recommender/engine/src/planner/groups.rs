//! Where the placement rules' guests and the storages are, counted per node and kept current as
//! guests move, so that the planner's inner loop compares integers and bits, not strings.
//! Rules are numbered by their position in `Cluster::rules`.

use std::collections::BTreeMap;

use crate::rules::by_guest;
use crate::view::Cluster;

/// A set of storage numbers, as bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StorageSet(Vec<u64>);

impl StorageSet {
    fn insert(&mut self, i: usize) {
        let (word, bit) = (i / 64, i % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &StorageSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (w, bits) in other.0.iter().enumerate() {
            self.0[w] |= bits;
        }
    }

    /// Every member of `self` is in `other`.
    pub fn is_subset(&self, other: &StorageSet) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(w, bits)| bits & !other.0.get(w).copied().unwrap_or(0) == 0)
    }
}

/// Rule membership and counts per node.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    /// Per rule: its name and whether it is strict.
    pub names: Vec<String>,
    pub strict: Vec<bool>,
    /// Per guest: its anti-affinity, affinity and node-affinity rules.
    pub guest_exclude: Vec<Vec<usize>>,
    pub guest_affinity: Vec<Vec<usize>>,
    pub guest_pins: Vec<Vec<usize>>,
    /// Per guest: whether it runs (only running guests count toward violations and spans).
    running: Vec<bool>,
    /// `[node][rule]`: guests of a strict anti-affinity rule, of any status (what the gate sees).
    exclude_any: Vec<Vec<u32>>,
    /// `[node][rule]`: running guests of an anti-affinity rule (what violations count).
    exclude_running: Vec<Vec<u32>>,
    /// `[node][rule]`: running guests of an affinity rule.
    affinity_running: Vec<Vec<u32>>,
    /// Per affinity rule: the nodes holding running members.
    affinity_span: Vec<u32>,
    /// Per node-affinity rule, per node: whether the rule lets its guests run there.
    pin_allowed: Vec<Vec<bool>>,
    /// Running guests off the nodes of one of their node-affinity rules (counted per rule).
    pins_off: u64,
    /// Per node: the storages active there.
    storage_active: Vec<StorageSet>,
    /// Per guest: the storages it uses; `None` when one of them exists on no node.
    pub guest_storages: Vec<Option<StorageSet>>,
}

impl Groups {
    pub fn new(cluster: &Cluster) -> Self {
        // storage ids are numbered in sorted order, independent of the input's order
        let mut stor: Vec<&str> = cluster
            .nodes
            .iter()
            .flat_map(|n| n.storage.iter().map(|s| s.id.as_str()))
            .collect();
        stor.sort_unstable();
        stor.dedup();
        let stor: BTreeMap<&str, usize> =
            stor.into_iter().enumerate().map(|(i, s)| (s, i)).collect();

        let rules = &cluster.rules;
        let (nodes, r) = (cluster.nodes.len(), rules.len());
        let by_guest = by_guest(rules, cluster.guests.len());
        let mut g = Groups {
            names: rules.iter().map(|r| r.name.clone()).collect(),
            strict: rules.iter().map(|r| r.strict).collect(),
            guest_exclude: by_guest.iter().map(|b| b.anti_affinity.clone()).collect(),
            guest_affinity: by_guest.iter().map(|b| b.affinity.clone()).collect(),
            guest_pins: by_guest.iter().map(|b| b.node_affinity.clone()).collect(),
            running: cluster.guests.iter().map(|g| g.is_running()).collect(),
            exclude_any: vec![vec![0; r]; nodes],
            exclude_running: vec![vec![0; r]; nodes],
            affinity_running: vec![vec![0; r]; nodes],
            affinity_span: vec![0; r],
            pin_allowed: rules
                .iter()
                .map(|rule| rule.allowed_nodes(&cluster.nodes))
                .collect(),
            pins_off: 0,
            storage_active: cluster
                .nodes
                .iter()
                .map(|n| {
                    let mut set = StorageSet::default();
                    for s in n.storage.iter().filter(|s| s.active) {
                        set.insert(stor[s.id.as_str()]);
                    }
                    set
                })
                .collect(),
            guest_storages: cluster
                .guests
                .iter()
                .map(|g| {
                    let mut set = StorageSet::default();
                    for s in &g.storages {
                        set.insert(*stor.get(s.as_str())?);
                    }
                    Some(set)
                })
                .collect(),
        };
        for (gi, guest) in cluster.guests.iter().enumerate() {
            g.add(gi, guest.node);
        }
        g
    }

    fn add(&mut self, gi: usize, node: usize) {
        let running = self.running[gi];
        for &rule in &self.guest_exclude[gi] {
            if self.strict[rule] {
                self.exclude_any[node][rule] += 1;
            }
            if running {
                self.exclude_running[node][rule] += 1;
            }
        }
        if running {
            for &rule in &self.guest_affinity[gi] {
                if self.affinity_running[node][rule] == 0 {
                    self.affinity_span[rule] += 1;
                }
                self.affinity_running[node][rule] += 1;
            }
            for &rule in &self.guest_pins[gi] {
                if !self.pin_allowed[rule][node] {
                    self.pins_off += 1;
                }
            }
        }
    }

    fn remove(&mut self, gi: usize, node: usize) {
        let running = self.running[gi];
        for &rule in &self.guest_exclude[gi] {
            if self.strict[rule] {
                self.exclude_any[node][rule] -= 1;
            }
            if running {
                self.exclude_running[node][rule] -= 1;
            }
        }
        if running {
            for &rule in &self.guest_affinity[gi] {
                self.affinity_running[node][rule] -= 1;
                if self.affinity_running[node][rule] == 0 {
                    self.affinity_span[rule] -= 1;
                }
            }
            for &rule in &self.guest_pins[gi] {
                if !self.pin_allowed[rule][node] {
                    self.pins_off -= 1;
                }
            }
        }
    }

    /// Records that guest `gi` moved from `from` to `to`.
    pub fn moved(&mut self, gi: usize, from: usize, to: usize) {
        self.remove(gi, from);
        self.add(gi, to);
    }

    /// Some guest of strict anti-affinity rule `rule`, of any status, is on `node`.
    pub fn exclude_present(&self, node: usize, rule: usize) -> bool {
        self.exclude_any[node][rule] > 0
    }

    /// Running guests of anti-affinity rule `rule` on `node`.
    pub fn exclude_running(&self, node: usize, rule: usize) -> u32 {
        self.exclude_running[node][rule]
    }

    /// Running guests of affinity rule `rule` on `node`.
    pub fn affinity_running(&self, node: usize, rule: usize) -> u32 {
        self.affinity_running[node][rule]
    }

    /// Nodes holding running guests of affinity rule `rule`.
    pub fn affinity_span(&self, rule: usize) -> u32 {
        self.affinity_span[rule]
    }

    /// Node-affinity rule `rule` lets its guests run on `node`.
    pub fn pin_allows(&self, rule: usize, node: usize) -> bool {
        self.pin_allowed[rule][node]
    }

    /// Pairs of running guests that share an anti-affinity rule and a node.
    pub fn violating_pairs(&self) -> u64 {
        self.exclude_running
            .iter()
            .flatten()
            .map(|&c| u64::from(c) * u64::from(c.saturating_sub(1)) / 2)
            .sum()
    }

    /// Σ over affinity rules of the nodes each spans beyond the first.
    pub fn affinity_splits(&self) -> u64 {
        self.affinity_span
            .iter()
            .map(|&s| u64::from(s.saturating_sub(1)))
            .sum()
    }

    /// Running guests off the nodes of their node-affinity rules, once per rule.
    pub fn pins_off(&self) -> u64 {
        self.pins_off
    }

    /// Every storage of `need` is active on `node`.
    pub fn storages_active(&self, node: usize, need: &StorageSet) -> bool {
        need.is_subset(&self.storage_active[node])
    }
}
