//! Where the anti-affinity and affinity groups and the storages are, numbered so that the
//! planner's inner loop compares integers and bits, not strings.

use std::collections::BTreeMap;

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

/// Group membership and counts per node, kept current as guests move.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    /// Anti-affinity group names by id.
    pub exclude_names: Vec<String>,
    /// Per guest: its anti-affinity and affinity group ids.
    pub guest_exclude: Vec<Vec<usize>>,
    pub guest_affinity: Vec<Vec<usize>>,
    /// Per guest: whether it runs (only running guests count toward violations and spans).
    running: Vec<bool>,
    /// `[node][group]`: guests of any status (what the anti-affinity gate looks at).
    exclude_any: Vec<Vec<u32>>,
    /// `[node][group]`: running guests (what violations count).
    exclude_running: Vec<Vec<u32>>,
    /// `[node][group]`: running guests of an affinity group.
    affinity_running: Vec<Vec<u32>>,
    /// Per affinity group: the nodes holding running members.
    affinity_span: Vec<u32>,
    /// Per node: the storages active there.
    storage_active: Vec<StorageSet>,
    /// Per guest: the storages it uses; `None` when one of them exists on no node.
    pub guest_storages: Vec<Option<StorageSet>>,
}

fn number<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut ids = BTreeMap::new();
    for name in names {
        let next = ids.len();
        ids.entry(name).or_insert(next);
    }
    ids
}

impl Groups {
    pub fn new(cluster: &Cluster) -> Self {
        // names are numbered in sorted order so the numbering does not depend on input order
        let mut excl: Vec<&str> = cluster
            .guests
            .iter()
            .flat_map(|g| g.tags.exclude.iter().map(String::as_str))
            .collect();
        excl.sort_unstable();
        let excl = number(excl.into_iter());
        let mut aff: Vec<&str> = cluster
            .guests
            .iter()
            .flat_map(|g| g.tags.affinity.iter().map(String::as_str))
            .collect();
        aff.sort_unstable();
        let aff = number(aff.into_iter());
        let mut stor: Vec<&str> = cluster
            .nodes
            .iter()
            .flat_map(|n| n.storage.iter().map(|s| s.id.as_str()))
            .collect();
        stor.sort_unstable();
        let stor = number(stor.into_iter());

        let nodes = cluster.nodes.len();
        let mut g = Groups {
            exclude_names: names_of(&excl),
            guest_exclude: Vec::with_capacity(cluster.guests.len()),
            guest_affinity: Vec::with_capacity(cluster.guests.len()),
            running: cluster.guests.iter().map(|g| g.is_running()).collect(),
            exclude_any: vec![vec![0; excl.len()]; nodes],
            exclude_running: vec![vec![0; excl.len()]; nodes],
            affinity_running: vec![vec![0; aff.len()]; nodes],
            affinity_span: vec![0; aff.len()],
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
            g.guest_exclude.push(
                guest
                    .tags
                    .exclude
                    .iter()
                    .map(|n| excl[n.as_str()])
                    .collect(),
            );
            g.guest_affinity.push(
                guest
                    .tags
                    .affinity
                    .iter()
                    .map(|n| aff[n.as_str()])
                    .collect(),
            );
            g.add(gi, guest.node);
        }
        g
    }

    fn add(&mut self, gi: usize, node: usize) {
        let running = self.running[gi];
        for &grp in &self.guest_exclude[gi] {
            self.exclude_any[node][grp] += 1;
            if running {
                self.exclude_running[node][grp] += 1;
            }
        }
        if running {
            for &grp in &self.guest_affinity[gi] {
                if self.affinity_running[node][grp] == 0 {
                    self.affinity_span[grp] += 1;
                }
                self.affinity_running[node][grp] += 1;
            }
        }
    }

    fn remove(&mut self, gi: usize, node: usize) {
        let running = self.running[gi];
        for &grp in &self.guest_exclude[gi] {
            self.exclude_any[node][grp] -= 1;
            if running {
                self.exclude_running[node][grp] -= 1;
            }
        }
        if running {
            for &grp in &self.guest_affinity[gi] {
                self.affinity_running[node][grp] -= 1;
                if self.affinity_running[node][grp] == 0 {
                    self.affinity_span[grp] -= 1;
                }
            }
        }
    }

    /// Records that guest `gi` moved from `from` to `to`.
    pub fn moved(&mut self, gi: usize, from: usize, to: usize) {
        self.remove(gi, from);
        self.add(gi, to);
    }

    /// Some guest of anti-affinity group `grp`, of any status, is on `node`.
    pub fn exclude_present(&self, node: usize, grp: usize) -> bool {
        self.exclude_any[node][grp] > 0
    }

    /// Running guests of anti-affinity group `grp` on `node`.
    pub fn exclude_running(&self, node: usize, grp: usize) -> u32 {
        self.exclude_running[node][grp]
    }

    /// Running guests of affinity group `grp` on `node`.
    pub fn affinity_running(&self, node: usize, grp: usize) -> u32 {
        self.affinity_running[node][grp]
    }

    /// Pairs of running guests that share an anti-affinity group and a node.
    pub fn violating_pairs(&self) -> u64 {
        self.exclude_running
            .iter()
            .flatten()
            .map(|&c| u64::from(c) * u64::from(c.saturating_sub(1)) / 2)
            .sum()
    }

    /// Σ over affinity groups of the nodes each spans beyond the first.
    pub fn affinity_splits(&self) -> u64 {
        self.affinity_span
            .iter()
            .map(|&s| u64::from(s.saturating_sub(1)))
            .sum()
    }

    /// Every storage of `need` is active on `node`.
    pub fn storages_active(&self, node: usize, need: &StorageSet) -> bool {
        need.is_subset(&self.storage_active[node])
    }
}

fn names_of(ids: &BTreeMap<&str, usize>) -> Vec<String> {
    let mut names = vec![String::new(); ids.len()];
    for (name, &id) in ids {
        names[id] = (*name).to_owned();
    }
    names
}
