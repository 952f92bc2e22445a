//! What moves: a guest on its own, or the running members of an affinity group that share a
//! node, which move together so a plan never splits a group it found together.

use crate::set::SkipReason;

use super::groups::StorageSet;
use super::sim::{Contribution, Demand, Sim};

/// Guests that move as one.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Indices into `cluster.guests`, by vmid.
    pub members: Vec<usize>,
    /// The node the members are on.
    pub node: usize,
    pub contribution: Contribution,
    /// Strict anti-affinity rules of the members (any status): what the target may not hold.
    pub exclude_any: Vec<usize>,
    /// Anti-affinity rules with the number of running members in them.
    pub exclude_running: Vec<(usize, u32)>,
    /// Affinity rules with the number of running members in them.
    pub affinity: Vec<(usize, u32)>,
    /// Node-affinity rules with the number of running members in them.
    pub pins: Vec<(usize, u32)>,
    /// Strict node-affinity rules of the members: where the unit may go.
    pub pins_strict: Vec<usize>,
    /// Storages the members use; `None` when one exists on no node.
    pub storages: Option<StorageSet>,
    /// Why the unit may not move in a balancing move: a member's guest gate, with that member.
    pub gate: Option<(usize, SkipReason, String)>,
}

impl Unit {
    /// The unit's lowest vmid, which names it.
    pub fn vmid(&self, sim: &Sim<'_>) -> u32 {
        self.members
            .first()
            .map_or(0, |&gi| sim.cluster.guests[gi].vmid)
    }

    /// What the unit asks of a target, for the gates.
    pub fn demand(&self) -> Demand<'_> {
        Demand {
            from: self.node,
            contribution: &self.contribution,
            exclude: &self.exclude_any,
            pins: &self.pins_strict,
            affinity: &self.affinity,
            storages: self.storages.as_ref(),
        }
    }
}

/// Groups `guests` (indices into `cluster.guests`) into units: running guests on one node that
/// share an affinity group (directly or through another member) form one unit; every other guest
/// is a unit of its own. `on_maintenance` tells the guest gates whether the guests' node is in
/// maintenance. Units come out ordered by their lowest vmid.
pub(crate) fn form(sim: &Sim<'_>, guests: &[usize]) -> Vec<Unit> {
    let cluster = sim.cluster;
    // union-find over positions in `guests`
    let mut parent: Vec<usize> = (0..guests.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_of: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for (pos, &gi) in guests.iter().enumerate() {
        if !cluster.guests[gi].is_running() {
            continue;
        }
        let node = sim.placement[gi];
        for &grp in &sim.groups.guest_affinity[gi] {
            match first_of.get(&(node, grp)) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, pos), root(&mut parent, other));
                    if a != b {
                        parent[a.max(b)] = a.min(b);
                    }
                }
                None => {
                    first_of.insert((node, grp), pos);
                }
            }
        }
    }
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (pos, &gi) in guests.iter().enumerate() {
        let r = root(&mut parent, pos);
        members.entry(r).or_default().push(gi);
    }
    let mut units: Vec<Unit> = members
        .into_values()
        .map(|mut m| {
            m.sort_by_key(|&gi| cluster.guests[gi].vmid);
            unit_of(sim, m)
        })
        .collect();
    units.sort_by_key(|u| u.vmid(sim));
    units
}

fn unit_of(sim: &Sim<'_>, members: Vec<usize>) -> Unit {
    let cluster = sim.cluster;
    let node = members.first().map_or(0, |&gi| sim.placement[gi]);
    let on_maintenance = cluster.nodes[node].maintenance;
    let mut contribution = Contribution::default();
    let mut exclude_any: Vec<usize> = Vec::new();
    let mut exclude_running: Vec<(usize, u32)> = Vec::new();
    let mut affinity: Vec<(usize, u32)> = Vec::new();
    let mut pins: Vec<(usize, u32)> = Vec::new();
    let mut pins_strict: Vec<usize> = Vec::new();
    let mut storages = Some(StorageSet::default());
    let mut gate = None;
    fn count(list: &mut Vec<(usize, u32)>, grp: usize) {
        match list.iter_mut().find(|(g, _)| *g == grp) {
            Some((_, n)) => *n += 1,
            None => list.push((grp, 1)),
        }
    }
    for &gi in &members {
        let g = &cluster.guests[gi];
        contribution = contribution.plus(Contribution::of(g));
        let groups = &sim.groups;
        for &rule in &groups.guest_exclude[gi] {
            if groups.strict[rule] && !exclude_any.contains(&rule) {
                exclude_any.push(rule);
            }
            if g.is_running() {
                count(&mut exclude_running, rule);
            }
        }
        for &rule in &groups.guest_pins[gi] {
            if groups.strict[rule] && !pins_strict.contains(&rule) {
                pins_strict.push(rule);
            }
            if g.is_running() {
                count(&mut pins, rule);
            }
        }
        if g.is_running() {
            for &rule in &groups.guest_affinity[gi] {
                count(&mut affinity, rule);
            }
        }
        storages = match (storages, &sim.groups.guest_storages[gi]) {
            (Some(mut set), Some(more)) => {
                set.union_with(more);
                Some(set)
            }
            _ => None,
        };
        if gate.is_none() {
            gate = crate::gates::guest_gate(cluster, g, on_maintenance)
                .map(|(reason, detail)| (gi, reason, detail));
        }
    }
    exclude_any.sort_unstable();
    exclude_running.sort_unstable();
    affinity.sort_unstable();
    pins.sort_unstable();
    pins_strict.sort_unstable();
    Unit {
        members,
        node,
        contribution,
        exclude_any,
        exclude_running,
        affinity,
        pins,
        pins_strict,
        storages,
        gate,
    }
}
