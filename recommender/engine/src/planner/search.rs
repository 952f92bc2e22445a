//! The search: mandatory work first, then balancing moves by best gain, each move applied to
//! the simulated cluster before the next is chosen. Every move passes the target gates on the
//! state it is made in, so the moves in plan order keep every gate true on every intermediate
//! state; a unit moves at most once per plan.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::gates::{PLANNER_TARGET_GATES, TargetGate, first_refusal};
use crate::rules::RuleKind;
use crate::score::{NodeLoad, ScoreDetails};
use crate::set::{MoveTerm, ObjectiveGain, SkipReason, Unresolved};

use super::bounds::Bounder;
use super::objective::{Balance, Values, Weights, score_gain};
use super::sim::{ScoreParts, Sim};
use super::units::{Unit, form};

/// The gates mandatory moves pass: all but `EmptiesSource`, which only balancing respects.
const MANDATORY_GATES: [TargetGate; 5] = [
    TargetGate::PinnedElsewhere,
    TargetGate::AntiAffinity,
    TargetGate::MemoryCapacity,
    TargetGate::Storage,
    TargetGate::IowaitStressed,
];

/// Balancing takes the move with the largest `net gain / cost^SELECTION_COST_EXPONENT`. At 0
/// this is the largest net gain (few, large moves); at 1 the best gain per cost (many small,
/// cheap ones). In between, a large move must gain more than proportionally to be taken before
/// a cheaper one, which reaches the same balance with less memory migrated and few more moves.
const SELECTION_COST_EXPONENT: f64 = 0.6;

/// A candidate in the balancing queue: a unit's selection key, either an upper bound or the
/// exact value of its best move at move number `stamp`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: f64,
    unit: usize,
    version: u64,
    /// The best target and net gain, when exact.
    exact: Option<(usize, f64)>,
    stamp: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Larger keys first; on equal keys the unit with the lower vmid.
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then(other.unit.cmp(&self.unit))
            .then(self.version.cmp(&other.version))
    }
}

/// One move of the plan, as decided.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The guests moving (indices into `cluster.guests`), the first leading.
    pub members: Vec<usize>,
    pub from: usize,
    pub to: usize,
    pub term: MoveTerm,
    pub gain: ObjectiveGain,
    /// Picked off an IOWait-stressed node by the seed's selection.
    pub iowait_selected: bool,
    /// Per member: its score on the source (without it) and on the target, when it moved.
    pub details: Vec<(ScoreDetails, ScoreDetails)>,
}

/// What balancing last knew about a unit it did not move.
#[derive(Debug, Clone, Copy)]
enum Settled {
    /// No move of the unit could gain more than this, net of its cost.
    Bound(f64),
    /// Its best move when last scored (target, gain); not worth its cost.
    Scored(usize, ObjectiveGain),
    /// Every target refused it.
    NoTarget,
}

/// The nodes a gate refused, with the gate.
type Refusals = Vec<(usize, TargetGate)>;

/// A unit's source side: its node's load and score once the unit has left.
#[derive(Debug, Clone)]
struct SourceSide {
    load: NodeLoad,
    parts: ScoreParts,
    values: Values,
}

/// The search state.
pub(crate) struct Search<'a> {
    pub sim: Sim<'a>,
    pub w: Weights,
    balance: Balance,
    /// Per node: the figures the balance terms read.
    values: Vec<Values>,
    /// Per guest: already moved by this plan.
    pub moved: Vec<bool>,
    /// The nodes that may receive guests (online, not in maintenance), by name.
    eligible: Vec<usize>,
    /// Per guest: what balancing last knew about the unit it belongs to, when it stayed.
    settled: Vec<Option<Settled>>,
    pub steps: Vec<Step>,
    pub unresolved: Vec<Unresolved>,
}

impl<'a> Search<'a> {
    pub fn new(sim: Sim<'a>) -> Self {
        let w = Weights::of(sim.cfg);
        let balance = Balance::of(&sim);
        let values = sim
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| sim.values(i, &n.load))
            .collect();
        let moved = vec![false; sim.cluster.guests.len()];
        let eligible = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].eligible)
            .collect();
        Search {
            eligible,
            settled: vec![None; sim.cluster.guests.len()],
            sim,
            w,
            balance,
            values,
            moved,
            steps: Vec::new(),
            unresolved: Vec::new(),
        }
    }

    fn source_side(&self, u: &Unit) -> SourceSide {
        let load = self.sim.without(u.node, &u.contribution);
        let parts = self.sim.score_of(u.node, &load);
        let values = self.sim.values(u.node, &load);
        SourceSide {
            load,
            parts,
            values,
        }
    }

    /// What moving `u` to `to` gains, with `to`'s load after the move.
    fn gain(&self, u: &Unit, src: &SourceSide, to: usize) -> (ObjectiveGain, NodeLoad) {
        let sim = &self.sim;
        let w = &self.w;
        let from = u.node;
        let to_load = sim.with(to, &u.contribution);
        let to_parts = sim.score_of(to, &to_load);
        let to_values = sim.values(to, &to_load);
        let mut gain = ObjectiveGain {
            cost: w.cost(u.contribution.mem_max_gb),
            ..ObjectiveGain::default()
        };
        score_gain(&mut gain, w, &sim.nodes[to].score, &to_parts);
        let mut changes = [(self.values[to], to_values); 2];
        let mut n_changes = 1;
        if sim.nodes[from].eligible {
            score_gain(&mut gain, w, &sim.nodes[from].score, &src.parts);
            changes[1] = (self.values[from], src.values);
            n_changes = 2;
        }
        let (m0, c0, i0) = self.balance.terms(w);
        let (m1, c1, i1) = self.balance.changed(&changes[..n_changes]).terms(w);
        gain.memory_balance += m0 - m1;
        gain.cpu_balance += c0 - c1;
        gain.iowait += i0 - i1;

        let groups = &sim.groups;
        let pairs = |n: u32| f64::from(n) * f64::from(n.saturating_sub(1)) / 2.0;
        for &(grp, k) in &u.exclude_running {
            let at_source = groups.exclude_running(from, grp);
            let at_target = groups.exclude_running(to, grp);
            let removed = pairs(at_source) - pairs(at_source.saturating_sub(k));
            let added = pairs(at_target + k) - pairs(at_target);
            gain.anti_affinity += w.anti_affinity * (removed - added);
        }
        for &(rule, k) in &u.pins {
            let off = |n: usize| f64::from(u8::from(!groups.pin_allows(rule, n)));
            gain.pins += w.pin * f64::from(k) * (off(from) - off(to));
        }
        for &(grp, k) in &u.affinity {
            let mut spans = 0.0;
            if groups.affinity_running(from, grp) <= k {
                spans -= 1.0;
            }
            if groups.affinity_running(to, grp) == 0 {
                spans += 1.0;
            }
            gain.affinity -= w.affinity * spans;
        }
        (gain.summed(), to_load)
    }

    /// The best target of `u` among the nodes `gates` let through: the largest net gain, ties
    /// to the first node by name. Also the refused nodes with their gate.
    fn best_target(
        &self,
        u: &Unit,
        src: &SourceSide,
        gates: &[TargetGate],
    ) -> (Option<(usize, ObjectiveGain)>, Refusals) {
        let mut best: Option<(usize, ObjectiveGain)> = None;
        let mut refused = Vec::new();
        let demand = u.demand();
        for to in 0..self.sim.nodes.len() {
            if to == u.node || !self.sim.nodes[to].eligible {
                continue;
            }
            if let Some(gate) = first_refusal(gates, &self.sim, &demand, to) {
                refused.push((to, gate));
                continue;
            }
            let (gain, _) = self.gain(u, src, to);
            if best.as_ref().is_none_or(|(_, b)| gain.net() > b.net()) {
                best = Some((to, gain));
            }
        }
        (best, refused)
    }

    /// Applies moving `u` to `to` and records it, under `term` or, without one, the term that
    /// gained most.
    fn apply(&mut self, u: &Unit, to: usize, term: Option<MoveTerm>, iowait_selected: bool) {
        let (gain, details) = self.shift(u, to);
        self.steps.push(Step {
            members: u.members.clone(),
            from: u.node,
            to,
            term: term.unwrap_or_else(|| gain.main_term()),
            gain,
            iowait_selected,
            details,
        });
    }

    /// Moves `u` to `to` in the simulation; returns the gain and the members' score details.
    fn shift(&mut self, u: &Unit, to: usize) -> (ObjectiveGain, Vec<(ScoreDetails, ScoreDetails)>) {
        let src = self.source_side(u);
        let (gain, to_load) = self.gain(u, &src, to);
        let details = u
            .members
            .iter()
            .map(|&gi| {
                let g = &self.sim.cluster.guests[gi];
                (
                    self.sim.guest_details(g, u.node, false),
                    self.sim.guest_details(g, to, true),
                )
            })
            .collect();
        let from = u.node;
        let to_values = self.sim.values(to, &to_load);
        let mut changes = vec![(self.values[to], to_values)];
        if self.sim.nodes[from].eligible {
            changes.push((self.values[from], src.values));
        }
        self.balance = self.balance.changed(&changes);
        self.values[from] = src.values;
        self.values[to] = to_values;
        self.sim
            .apply(&u.members, &u.contribution, (from, src.load), (to, to_load));
        for &gi in &u.members {
            self.moved[gi] = true;
        }
        (gain, details)
    }

    /// Refusal reasons as text: `pve2: insufficient memory capacity; …` (the first three).
    fn refusals_text(&self, u: &Unit, refused: &[(usize, TargetGate)]) -> String {
        if refused.is_empty() {
            return "no other online node outside maintenance".to_owned();
        }
        let cluster = self.sim.cluster;
        let d = u.demand();
        let list: Vec<String> = refused
            .iter()
            .take(3)
            .map(|&(ti, gate)| {
                let rule = match gate {
                    TargetGate::PinnedElsewhere => {
                        d.pins.iter().find(|&&r| !self.sim.groups.pin_allows(r, ti))
                    }
                    TargetGate::AntiAffinity => d
                        .exclude
                        .iter()
                        .find(|&&r| self.sim.groups.exclude_present(ti, r)),
                    _ => None,
                };
                let text = gate.describe(rule.map(|&r| &cluster.rules[r]));
                format!("{}: {text}", cluster.nodes[ti].name)
            })
            .collect();
        format!("every target was refused: {}", list.join("; "))
    }

    /// The units on `node` that may still move: a unit that holds a guest this plan already
    /// moved stays (a guest moves once, and its affinity group with it).
    fn units_on(&self, node: usize) -> Vec<Unit> {
        form(&self.sim, &self.sim.on_node[node])
            .into_iter()
            .filter(|u| u.members.iter().all(|&gi| !self.moved[gi]))
            .collect()
    }

    /// Phase 1: every guest on a node in maintenance leaves it, largest first, each to the
    /// target that gains most. Guests a gate keeps there stay (and are reported skipped).
    pub fn evacuate(&mut self) {
        let cluster = self.sim.cluster;
        for node in 0..cluster.nodes.len() {
            let n = &cluster.nodes[node];
            if !(n.is_online() && n.maintenance) {
                continue;
            }
            // groups are formed with every guest there: a guest that may not leave keeps a
            // strict affinity group with it (reported); from a soft one, the others leave
            let stay = |gi: usize| {
                crate::gates::guest_gate(cluster, &cluster.guests[gi], true)
                    .map(|(_, detail)| (gi, detail))
            };
            let mut units = Vec::new();
            for u in form(&self.sim, &self.sim.on_node[node]) {
                if u.members.iter().any(|&gi| self.moved[gi]) {
                    continue;
                }
                let held: Vec<(usize, String)> =
                    u.members.iter().filter_map(|&gi| stay(gi)).collect();
                if held.is_empty() {
                    units.push(u);
                    continue;
                }
                let strict = u
                    .affinity
                    .iter()
                    .find(|(rule, _)| self.sim.groups.strict[*rule])
                    .map(|(rule, _)| self.sim.groups.names[*rule].clone());
                let free: Vec<usize> = u
                    .members
                    .iter()
                    .copied()
                    .filter(|gi| held.iter().all(|(h, _)| h != gi))
                    .collect();
                match strict {
                    Some(name) if !free.is_empty() => {
                        let (gi, detail) = &held[0];
                        self.unresolved.push(Unresolved {
                            rule: "maintenance".into(),
                            node: n.name.clone(),
                            group: Some(name.clone()),
                            vmids: free.iter().map(|&g| cluster.guests[g].vmid).collect(),
                            detail: format!(
                                "affinity rule {name} keeps them with {}, which may not move: {detail}",
                                cluster.guests[*gi].vmid
                            ),
                        });
                    }
                    _ => units.extend(form(&self.sim, &free)),
                }
            }
            units.sort_by(|a, b| {
                b.contribution
                    .mem_max_gb
                    .total_cmp(&a.contribution.mem_max_gb)
                    .then(a.vmid(&self.sim).cmp(&b.vmid(&self.sim)))
            });
            for u in units {
                // a group that fits nowhere together leaves one guest at a time, unless a
                // strict affinity rule binds it: then it stays, and is reported
                let strict_group = u
                    .affinity
                    .iter()
                    .find(|(rule, _)| self.sim.groups.strict[*rule])
                    .map(|(rule, _)| self.sim.groups.names[*rule].clone());
                let parts: Vec<Unit> = if self.place_mandatory(&u, MoveTerm::Maintenance) {
                    continue;
                } else if u.members.len() > 1 && strict_group.is_none() {
                    u.members
                        .iter()
                        .flat_map(|&gi| form(&self.sim, &[gi]))
                        .collect()
                } else {
                    vec![u]
                };
                for p in parts {
                    if !self.place_mandatory(&p, MoveTerm::Maintenance) {
                        let src = self.source_side(&p);
                        let (_, refused) = self.best_target(&p, &src, &MANDATORY_GATES);
                        self.unresolved.push(Unresolved {
                            rule: "maintenance".into(),
                            node: n.name.clone(),
                            group: strict_group.clone(),
                            vmids: p
                                .members
                                .iter()
                                .map(|&gi| cluster.guests[gi].vmid)
                                .collect(),
                            detail: self.refusals_text(&p, &refused),
                        });
                    }
                }
            }
        }
    }

    /// Moves `u` to its best target through the mandatory gates; false when none is open.
    fn place_mandatory(&mut self, u: &Unit, term: MoveTerm) -> bool {
        let src = self.source_side(u);
        match self.best_target(u, &src, &MANDATORY_GATES).0 {
            Some((to, _)) => {
                self.apply(u, to, Some(term), false);
                true
            }
            None => false,
        }
    }

    /// Phase 2a: guests running off the nodes of a strict node-affinity rule (a pin) go to the
    /// allowed node that gains most, rule by rule in name order.
    pub fn repair_pins(&mut self) {
        let cluster = self.sim.cluster;
        for (ri, rule) in cluster.rules.iter().enumerate() {
            if rule.kind != RuleKind::NodeAffinity || !rule.strict {
                continue;
            }
            for &gi in &rule.members {
                let node = self.sim.placement[gi];
                if self.moved[gi]
                    || !cluster.guests[gi].is_running()
                    || !cluster.nodes[node].is_online()
                    || self.sim.groups.pin_allows(ri, node)
                {
                    continue;
                }
                let unit = self
                    .units_on(node)
                    .into_iter()
                    .find(|u| u.members.contains(&gi));
                let detail = match unit.as_ref().map(|u| (u, &u.gate)) {
                    None => Some(
                        "it moves with its affinity group, which this plan has already moved"
                            .to_owned(),
                    ),
                    Some((_, Some((_, _, detail)))) => Some(format!("it may not move: {detail}")),
                    Some((u, None)) => {
                        let src = self.source_side(u);
                        match self.best_target(u, &src, &MANDATORY_GATES) {
                            (Some((to, _)), _) => {
                                self.apply(u, to, Some(MoveTerm::NodeAffinity), false);
                                None
                            }
                            (None, refused) => Some(self.refusals_text(u, &refused)),
                        }
                    }
                };
                if let Some(detail) = detail {
                    let allowed: Vec<&str> = rule
                        .nodes
                        .iter()
                        .map(|&(n, _)| cluster.nodes[n].name.as_str())
                        .chain(rule.unknown_nodes.iter().map(String::as_str))
                        .collect();
                    self.unresolved.push(Unresolved {
                        rule: RuleKind::NodeAffinity.as_str().to_owned(),
                        node: cluster.nodes[node].name.clone(),
                        group: Some(rule.name.clone()),
                        vmids: vec![cluster.guests[gi].vmid],
                        detail: format!("pinned to {}; {detail}", allowed.join(", ")),
                    });
                }
            }
        }
    }

    /// Phase 2b: violations of strict anti-affinity rules among running guests are repaired,
    /// rule by rule and node by node (in name order), each by the move of one of the rule's
    /// guests there that gains most, until the node holds one or no legal move is left.
    pub fn repair_anti_affinity(&mut self) {
        let cluster = self.sim.cluster;
        for (grp, rule) in cluster.rules.iter().enumerate() {
            if rule.kind != RuleKind::AntiAffinity || !rule.strict {
                continue;
            }
            for node in 0..cluster.nodes.len() {
                if !cluster.nodes[node].is_online() {
                    continue;
                }
                while self.sim.groups.exclude_running(node, grp) >= 2 {
                    let mut best: Option<(Unit, usize, f64)> = None;
                    for u in self.units_on(node) {
                        // a unit holding two of the rule's guests carries the violation along
                        if u.gate.is_some() || !u.exclude_running.contains(&(grp, 1)) {
                            continue;
                        }
                        let src = self.source_side(&u);
                        if let (Some((to, gain)), _) = self.best_target(&u, &src, &MANDATORY_GATES)
                            && best.as_ref().is_none_or(|(_, _, b)| gain.net() > *b)
                        {
                            best = Some((u, to, gain.net()));
                        }
                    }
                    match best {
                        Some((u, to, _)) => self.apply(&u, to, Some(MoveTerm::AntiAffinity), false),
                        None => {
                            let unresolved = self.anti_affinity_unresolved(node, grp);
                            self.unresolved.push(unresolved);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Phase 2c: a strict affinity rule whose running guests are on several nodes is brought
    /// together on the node that holds most of them (ties by name), or the next, where every
    /// other part can go; otherwise it is reported.
    pub fn repair_affinity(&mut self) {
        let cluster = self.sim.cluster;
        for (ri, rule) in cluster.rules.iter().enumerate() {
            if rule.kind != RuleKind::Affinity
                || !rule.strict
                || self.sim.groups.affinity_span(ri) < 2
            {
                continue;
            }
            let mut holders: Vec<(u32, usize)> = (0..cluster.nodes.len())
                .map(|n| (self.sim.groups.affinity_running(n, ri), n))
                .filter(|(count, _)| *count > 0)
                .collect();
            holders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut why = Vec::new();
            let mut done = false;
            for &(_, dest) in &holders {
                // the parts elsewhere, and whether each can go to `dest` on its own
                let parts: Vec<Unit> = holders
                    .iter()
                    .filter(|(_, n)| *n != dest)
                    .flat_map(|&(_, n)| self.units_on(n))
                    .filter(|u| u.affinity.iter().any(|(r, _)| *r == ri))
                    .collect();
                let need: f64 = parts.iter().map(|u| u.contribution.mem_max_gb).sum();
                let blocked = parts.iter().find_map(|u| {
                    if let Some((_, _, detail)) = &u.gate {
                        return Some(format!("{}: {detail}", self.vmid_of(u)));
                    }
                    if !cluster.nodes[dest].is_online() || cluster.nodes[dest].maintenance {
                        return Some(format!("{} is not a target", cluster.nodes[dest].name));
                    }
                    first_refusal(&MANDATORY_GATES, &self.sim, &u.demand(), dest)
                        .map(|gate| format!("{}: {}", self.vmid_of(u), gate.as_str()))
                });
                let room = self.sim.room_gb(dest) >= need;
                match (blocked, room) {
                    (Some(b), _) => why.push(format!("on {}: {b}", cluster.nodes[dest].name)),
                    (None, false) => why.push(format!(
                        "on {}: no room for {need:.0} GiB",
                        cluster.nodes[dest].name
                    )),
                    (None, true) => {
                        for u in parts {
                            if first_refusal(&MANDATORY_GATES, &self.sim, &u.demand(), dest)
                                .is_some()
                            {
                                break;
                            }
                            self.apply(&u, dest, Some(MoveTerm::Affinity), false);
                        }
                        done = self.sim.groups.affinity_span(ri) == 1;
                        break;
                    }
                }
            }
            if !done {
                let vmids = rule
                    .members
                    .iter()
                    .filter(|&&gi| cluster.guests[gi].is_running())
                    .map(|&gi| cluster.guests[gi].vmid)
                    .collect();
                self.unresolved.push(Unresolved {
                    rule: RuleKind::Affinity.as_str().to_owned(),
                    node: holders
                        .first()
                        .map_or(String::new(), |&(_, n)| cluster.nodes[n].name.clone()),
                    group: Some(rule.name.clone()),
                    vmids,
                    detail: if why.is_empty() {
                        "its guests could not all be brought to one node".to_owned()
                    } else {
                        format!("no node can take the whole group: {}", why.join("; "))
                    },
                });
            }
        }
    }

    fn anti_affinity_unresolved(&self, node: usize, grp: usize) -> Unresolved {
        let cluster = self.sim.cluster;
        let vmids: Vec<u32> = self.sim.on_node[node]
            .iter()
            .filter(|&&gi| {
                cluster.guests[gi].is_running() && self.sim.groups.guest_exclude[gi].contains(&grp)
            })
            .map(|&gi| cluster.guests[gi].vmid)
            .collect();
        let units: Vec<Unit> = self
            .units_on(node)
            .into_iter()
            .filter(|u| u.exclude_running.iter().any(|(g, _)| *g == grp))
            .collect();
        let bound = units
            .iter()
            .any(|u| u.exclude_running.iter().any(|&(g, k)| g == grp && k > 1));
        let movable = units
            .into_iter()
            .find(|u| u.gate.is_none() && u.exclude_running.contains(&(grp, 1)));
        let detail = match movable {
            None if bound => {
                "an affinity rule binds these guests together: the rules contradict each other"
                    .to_owned()
            }
            None => "no member of the group on this node may move (guest gates)".to_owned(),
            Some(u) => {
                let src = self.source_side(&u);
                let (_, refused) = self.best_target(&u, &src, &MANDATORY_GATES);
                self.refusals_text(&u, &refused)
            }
        };
        Unresolved {
            rule: "anti_affinity".into(),
            node: cluster.nodes[node].name.clone(),
            group: Some(self.sim.groups.names[grp].clone()),
            vmids,
            detail,
        }
    }

    fn vmid_of(&self, u: &Unit) -> u32 {
        u.vmid(&self.sim)
    }

    /// Phase 3: IOWait relief by the seed's selection (docs/engine.md §5): off each stressed node,
    /// its running guests by disk I/O, largest first, never one without disk I/O, only until
    /// the node's IOWait is down by what the trigger needs (`current − (threshold − 5)`) or
    /// `iowait_guest_limit` guests have gone. Each goes to the target that gains most.
    pub fn relieve_iowait(&mut self) {
        let cluster = self.sim.cluster;
        let t_iow = self.sim.t.iowait;
        let limit = self.sim.cfg.iowait_guest_limit as usize;
        let stressed: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&n| self.sim.is_stressed(n))
            .collect();
        for node in stressed {
            let start = self.sim.nodes[node].load.current.iowait;
            let needed = (start - (t_iow - 5.0)).max(0.0);
            let mut candidates: Vec<usize> = self.sim.on_node[node]
                .iter()
                .copied()
                .filter(|&gi| {
                    let g = &cluster.guests[gi];
                    !self.moved[gi] && g.is_running() && g.disk_io_bps() > 0.0
                })
                .collect();
            candidates.sort_by(|&a, &b| {
                let (ga, gb) = (&cluster.guests[a], &cluster.guests[b]);
                gb.disk_io_bps()
                    .total_cmp(&ga.disk_io_bps())
                    .then(ga.vmid.cmp(&gb.vmid))
            });
            let mut taken = 0;
            let mut blocked = Vec::new();
            for gi in candidates {
                if taken >= limit || start - self.sim.nodes[node].load.current.iowait >= needed {
                    break;
                }
                if self.moved[gi] {
                    continue;
                }
                let Some(u) = self
                    .units_on(node)
                    .into_iter()
                    .find(|u| u.members.contains(&gi))
                else {
                    continue;
                };
                if let Some((_, _, detail)) = &u.gate {
                    blocked.push(format!("{}: {detail}", cluster.guests[gi].vmid));
                    continue;
                }
                let src = self.source_side(&u);
                match self.best_target(&u, &src, &MANDATORY_GATES) {
                    (Some((to, _)), _) => {
                        self.apply(&u, to, Some(MoveTerm::IowaitRelief), true);
                        taken += u.members.len();
                    }
                    (None, refused) => blocked.push(format!(
                        "{}: {}",
                        cluster.guests[gi].vmid,
                        self.refusals_text(&u, &refused)
                    )),
                }
            }
            let relieved = start - self.sim.nodes[node].load.current.iowait;
            if relieved < needed && self.sim.is_stressed(node) {
                self.unresolved.push(Unresolved {
                    rule: "iowait".into(),
                    node: cluster.nodes[node].name.clone(),
                    group: None,
                    vmids: Vec::new(),
                    detail: if blocked.is_empty() {
                        format!(
                            "IOWait down {relieved:.1} of the {needed:.1} points needed: no more guests with disk I/O may leave"
                        )
                    } else {
                        format!(
                            "IOWait down {relieved:.1} of the {needed:.1} points needed; held back: {}",
                            blocked.join("; ")
                        )
                    },
                });
            }
        }
    }

    /// What `u` gains at its source when it leaves (exact): the source's score, spread and
    /// excess terms, and the anti-affinity pairs it breaks up.
    fn source_gain(&self, u: &Unit, src: &SourceSide, bounder: &Bounder) -> f64 {
        let from = u.node;
        let old = self.values[from];
        let mut a = self.w.node_score * (self.sim.nodes[from].score.total() - src.parts.total())
            + bounder.source_spread(&self.w, old, src.values)
            + self.balance.excess_gain(&self.w, old, src.values);
        let pairs = |n: u32| f64::from(n) * f64::from(n.saturating_sub(1)) / 2.0;
        for &(grp, k) in &u.exclude_running {
            let at = self.sim.groups.exclude_running(from, grp);
            a += self.w.anti_affinity * (pairs(at) - pairs(at.saturating_sub(k)));
        }
        a
    }

    /// The best target of `u` through `gates`, evaluating targets in the order of their upper
    /// bound and stopping once no remaining target can beat the best found: the same answer as
    /// scoring every target, for a fraction of the work.
    fn best_target_bounded(
        &self,
        u: &Unit,
        src: &SourceSide,
        bounder: &Bounder,
        gates: &[TargetGate],
    ) -> Option<(usize, ObjectiveGain)> {
        let demand = u.demand();
        // the gates about the source refuse every target alike: settle them once
        if gates
            .iter()
            .any(|g| g.judges_source() && g.refuses(&self.sim, &demand, u.node))
        {
            return None;
        }
        let by_target = |t: usize| {
            gates
                .iter()
                .any(|g| !g.judges_source() && g.refuses(&self.sim, &demand, t))
        };
        let a = self.source_gain(u, src, bounder);
        let cost = self.w.cost(u.contribution.mem_max_gb);
        let drop = self.drop_of(u, src);
        let mut bounds: Vec<(f64, usize)> = self
            .eligible
            .iter()
            .filter(|&&t| t != u.node && !by_target(t))
            .map(|&t| {
                let target = bounder.target(
                    &self.w,
                    &self.sim,
                    &self.balance,
                    u,
                    drop,
                    t,
                    self.values[t],
                );
                (a + target - cost, t)
            })
            .collect();
        let mut best: Option<(usize, ObjectiveGain)> = None;
        // targets in the order of their bound (ties by node): most units are settled after a
        // handful, so the first few are picked out one at a time and the rest sorted only when
        // needed (when gates refuse many)
        let higher = |x: &(f64, usize), y: &(f64, usize)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
        let mut picked = 0;
        let mut sorted = false;
        loop {
            let next = if sorted {
                bounds.pop()
            } else if picked < 4 {
                (0..bounds.len())
                    .min_by(|&x, &y| higher(&bounds[x], &bounds[y]))
                    .map(|pos| bounds.swap_remove(pos))
            } else {
                // sorted ascending by rank so that `pop` yields the best remaining
                bounds.sort_unstable_by(|x, y| higher(y, x));
                sorted = true;
                bounds.pop()
            };
            let Some((bound, t)) = next else { break };
            picked += 1;
            if best.as_ref().is_some_and(|(_, g)| bound < g.net()) {
                break;
            }
            let (gain, _) = self.gain(u, src, t);
            let better = match &best {
                None => true,
                Some((bt, bg)) => gain.net() > bg.net() || (gain.net() == bg.net() && t < *bt),
            };
            if better {
                best = Some((t, gain));
            }
        }
        best
    }

    /// The figures a unit's source loses when it leaves.
    fn drop_of(&self, u: &Unit, src: &SourceSide) -> Values {
        let old = self.values[u.node];
        Values {
            mem: old.mem - src.values.mem,
            cpu: old.cpu - src.values.cpu,
            iowait: old.iowait - src.values.iowait,
        }
    }

    /// Phase 4: balancing moves, the largest gain for its cost first (see
    /// [`SELECTION_COST_EXPONENT`]), while one gains more than its cost plus `min_move_gain`.
    ///
    /// Candidates wait in a queue under an upper bound of their net gain (see
    /// [`super::bounds`]); the top one is scored exactly and goes back under its exact value,
    /// until the top of the queue is exact for the cluster as it stands: that move is the best,
    /// and is taken. A move changes two nodes, so afterwards a unit's queued value stays a bound
    /// once it is raised by what the unit's own source part gained (units on those two nodes)
    /// and by what the node just left could now offer it as a target.
    pub fn balance(&mut self) {
        let guests: Vec<usize> = (0..self.sim.placement.len())
            .filter(|&gi| self.sim.nodes[self.sim.placement[gi]].eligible)
            .collect();
        let units: Vec<Unit> = form(&self.sim, &guests)
            .into_iter()
            .filter(|u| u.gate.is_none() && u.contribution.running > 0)
            .filter(|u| u.members.iter().all(|&gi| !self.moved[gi]))
            .collect();
        let n = units.len();
        let min_gain = self.w.min_gain;
        let cost: Vec<f64> = units
            .iter()
            .map(|u| self.w.cost(u.contribution.mem_max_gb))
            .collect();
        let key = |i: usize, net: f64| net / cost[i].max(1e-9).powf(SELECTION_COST_EXPONENT);
        let mut sources: Vec<SourceSide> = units.iter().map(|u| self.source_side(u)).collect();
        let mut bounder = Bounder::new(&self.sim, &self.values);
        // per unit: its source part, and the net gain its queued entry stands for (a bound or
        // exact); −∞ when it is not queued
        let mut source_part: Vec<f64> = vec![0.0; n];
        let mut live = vec![f64::NEG_INFINITY; n];
        let mut version = vec![0u64; n];
        let mut done = vec![false; n];
        let mut last: Vec<Settled> = vec![Settled::Bound(f64::NEG_INFINITY); n];
        let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); self.sim.nodes.len()];
        for (i, u) in units.iter().enumerate() {
            by_node[u.node].push(i);
        }
        let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
        let mut moves = 0u64;
        let push = |heap: &mut BinaryHeap<Entry>,
                    live: &mut [f64],
                    version: &mut [u64],
                    i: usize,
                    net: f64,
                    exact: Option<usize>,
                    stamp: u64| {
            version[i] += 1;
            live[i] = net;
            heap.push(Entry {
                key: key(i, net),
                unit: i,
                version: version[i],
                exact: exact.map(|t| (t, net)),
                stamp,
            });
        };

        // Bounds drift with the means as guests move between nodes of different sizes, so
        // once the queue runs dry every unit left is bounded afresh; balancing ends when that
        // sweep finds no unit that could still pay for its move.
        loop {
            let moves_before = moves;
            for i in 0..n {
                if done[i] {
                    continue;
                }
                let u = &units[i];
                source_part[i] = self.source_gain(u, &sources[i], &bounder);
                let drop = self.drop_of(u, &sources[i]);
                let best_target = self
                    .eligible
                    .iter()
                    .copied()
                    .filter(|&t| t != u.node)
                    .map(|t| {
                        bounder.target(
                            &self.w,
                            &self.sim,
                            &self.balance,
                            u,
                            drop,
                            t,
                            self.values[t],
                        )
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                let bound = source_part[i] + best_target - cost[i];
                if !matches!(last[i], Settled::NoTarget) || bound > min_gain {
                    last[i] = Settled::Bound(bound);
                }
                if bound > min_gain {
                    push(&mut heap, &mut live, &mut version, i, bound, None, moves);
                }
            }
            if heap.is_empty() {
                break;
            }
            while let Some(e) = heap.pop() {
                let i = e.unit;
                if done[i] || e.version != version[i] {
                    continue;
                }
                let Some((to, _)) = e.exact.filter(|_| e.stamp == moves) else {
                    // score it exactly as the cluster stands, and queue it again under that value
                    let best = self.best_target_bounded(
                        &units[i],
                        &sources[i],
                        &bounder,
                        &PLANNER_TARGET_GATES,
                    );
                    live[i] = f64::NEG_INFINITY;
                    version[i] += 1;
                    last[i] = match &best {
                        Some((t, gain)) => Settled::Scored(*t, *gain),
                        None => Settled::NoTarget,
                    };
                    if let Some((t, gain)) = best.filter(|(_, g)| g.net() > min_gain) {
                        push(
                            &mut heap,
                            &mut live,
                            &mut version,
                            i,
                            gain.net(),
                            Some(t),
                            moves,
                        );
                    }
                    continue;
                };
                let u = &units[i];
                let from = u.node;
                self.apply(u, to, None, false);
                done[i] = true;
                moves += 1;
                bounder = Bounder::new(&self.sim, &self.values);
                let groups_moved: Vec<usize> = u.affinity.iter().map(|(g, _)| *g).collect();
                let from_open = self.sim.nodes[from].eligible;
                // a node still above both means is a worse target than before for any unit with a
                // target already; only units that had none may find one there now
                let from_above = bounder.above_means(self.values[from]);
                let affected: Vec<usize> = if from_open && !from_above {
                    (0..n).collect()
                } else {
                    let mut list: Vec<usize> = by_node[from]
                        .iter()
                        .chain(&by_node[to])
                        .copied()
                        .chain((0..n).filter(|&j| {
                            matches!(last[j], Settled::NoTarget)
                                || units[j]
                                    .affinity
                                    .iter()
                                    .any(|(g, _)| groups_moved.contains(g))
                        }))
                        .collect();
                    list.sort_unstable();
                    list.dedup();
                    list
                };
                for j in affected {
                    if done[j] {
                        continue;
                    }
                    let uj = &units[j];
                    let on_changed = uj.node == from || uj.node == to;
                    let mut raise = 0.0;
                    if on_changed {
                        sources[j] = self.source_side(uj);
                        let part = self.source_gain(uj, &sources[j], &bounder);
                        raise = part - source_part[j];
                        source_part[j] = part;
                    }
                    // a target that improved: the node just left, or any node for a unit whose
                    // affinity group just moved (a full bound then)
                    let shares_group = uj.affinity.iter().any(|(g, _)| groups_moved.contains(g));
                    let via = if shares_group {
                        let drop = self.drop_of(uj, &sources[j]);
                        self.eligible
                            .iter()
                            .copied()
                            .filter(|&t| t != uj.node)
                            .map(|t| {
                                bounder.target(
                                    &self.w,
                                    &self.sim,
                                    &self.balance,
                                    uj,
                                    drop,
                                    t,
                                    self.values[t],
                                )
                            })
                            .fold(f64::NEG_INFINITY, f64::max)
                            + source_part[j]
                            - cost[j]
                    } else if from_open
                        && uj.node != from
                        && (!from_above || matches!(last[j], Settled::NoTarget))
                    {
                        let drop = self.drop_of(uj, &sources[j]);
                        source_part[j]
                            + bounder.target(
                                &self.w,
                                &self.sim,
                                &self.balance,
                                uj,
                                drop,
                                from,
                                self.values[from],
                            )
                            - cost[j]
                    } else {
                        f64::NEG_INFINITY
                    };
                    let carried = live[j] + raise;
                    if on_changed || shares_group {
                        // the unit's own figures moved: requeue under the carried or new bound
                        let bound = carried.max(via);
                        live[j] = f64::NEG_INFINITY;
                        version[j] += 1;
                        if matches!(last[j], Settled::Bound(_)) || bound > min_gain {
                            last[j] = Settled::Bound(bound);
                        }
                        if bound > min_gain {
                            push(&mut heap, &mut live, &mut version, j, bound, None, moves);
                        }
                    } else if via > min_gain && via > live[j] {
                        // only the node just left may beat the queued value: score that one move
                        if first_refusal(&PLANNER_TARGET_GATES, &self.sim, &uj.demand(), from)
                            .is_some()
                        {
                            continue;
                        }
                        let net = self.gain(uj, &sources[j], from).0.net();
                        if net > min_gain && net > live[j] {
                            push(
                                &mut heap,
                                &mut live,
                                &mut version,
                                j,
                                net,
                                Some(from),
                                moves,
                            );
                        }
                    }
                }
            }
            // a sweep that led to no move changes nothing: the next would find the same
            if moves == moves_before {
                break;
            }
        }
        for (i, u) in units.iter().enumerate() {
            if !done[i] {
                for &gi in &u.members {
                    self.settled[gi] = Some(last[i]);
                }
            }
        }
    }

    /// Why the guests not in `moved` stay where they are, by unit: a guest gate, no open
    /// target, or no move that gains enough.
    pub fn stay_reasons(&self, moved: &[bool]) -> Vec<(Vec<usize>, (SkipReason, String))> {
        let cluster = self.sim.cluster;
        let bounder = Bounder::new(&self.sim, &self.values);
        let mut out = Vec::new();
        for node in 0..cluster.nodes.len() {
            let n = &cluster.nodes[node];
            if !n.is_online() {
                continue;
            }
            for u in form(&self.sim, &self.sim.on_node[node]) {
                if u.members.iter().all(|&gi| moved[gi]) {
                    continue;
                }
                if let Some(&mover) = u.members.iter().find(|&&gi| moved[gi]) {
                    for &gi in u.members.iter().filter(|&&gi| !moved[gi]) {
                        let detail = format!(
                            "stays with its affinity group, which {} joined in this plan",
                            cluster.guests[mover].vmid
                        );
                        out.push((vec![gi], (SkipReason::InsufficientImprovement, detail)));
                    }
                    continue;
                }
                if let Some((gated, reason, detail)) = &u.gate {
                    for &gi in &u.members {
                        let detail = if gi == *gated {
                            detail.clone()
                        } else {
                            format!(
                                "moves with its affinity group, and {} may not move: {detail}",
                                cluster.guests[*gated].vmid
                            )
                        };
                        out.push((vec![gi], (*reason, detail)));
                    }
                    continue;
                }
                let gates: &[TargetGate] = if n.maintenance {
                    &MANDATORY_GATES
                } else {
                    &PLANNER_TARGET_GATES
                };
                let src = self.source_side(&u);
                // a guest the gates let go nowhere is told so, not what its moves would cost
                let d = u.demand();
                let open = self
                    .eligible
                    .iter()
                    .any(|&t| t != u.node && first_refusal(gates, &self.sim, &d, t).is_none());
                if !open {
                    let (_, refused) = self.best_target(&u, &src, gates);
                    out.push((
                        u.members.clone(),
                        (
                            SkipReason::NoSuitableTarget,
                            self.refusals_text(&u, &refused),
                        ),
                    ));
                    continue;
                }
                let cost = self.w.cost(u.contribution.mem_max_gb);
                // what balancing knew, where it still holds: a bound below the cost stays
                // below it, and a unit no target would take is checked again only for its
                // reasons
                let known = u
                    .members
                    .first()
                    .and_then(|&gi| self.settled[gi])
                    .filter(|_| !n.maintenance);
                let bound = match known {
                    Some(Settled::Bound(b)) => Some(b),
                    Some(Settled::Scored(..) | Settled::NoTarget) => None,
                    None if n.maintenance => None,
                    None => {
                        let a = self.source_gain(&u, &src, &bounder);
                        let drop = self.drop_of(&u, &src);
                        let best = self
                            .eligible
                            .iter()
                            .filter(|&&t| t != u.node)
                            .map(|&t| {
                                bounder.target(
                                    &self.w,
                                    &self.sim,
                                    &self.balance,
                                    &u,
                                    drop,
                                    t,
                                    self.values[t],
                                )
                            })
                            .fold(f64::NEG_INFINITY, f64::max);
                        Some(a + best - cost)
                    }
                };
                if let Some(b) = bound.filter(|b| b.is_finite() && *b <= self.w.min_gain) {
                    let detail = if b + cost <= 0.0 {
                        format!(
                            "every move would raise the plan objective (by {:.2} at least)",
                            -(b + cost)
                        )
                    } else {
                        format!(
                            "no move lowers the plan objective by more than {:.2}, short of its cost of {cost:.2} plus {}",
                            b + cost,
                            self.w.min_gain
                        )
                    };
                    out.push((
                        u.members.clone(),
                        (SkipReason::InsufficientImprovement, detail),
                    ));
                    continue;
                }
                if let Some(Settled::Scored(to, gain)) = known {
                    out.push((
                        u.members.clone(),
                        (
                            SkipReason::InsufficientImprovement,
                            describe_best(&cluster.nodes[to].name, &gain, self.w.min_gain),
                        ),
                    ));
                    continue;
                }
                if matches!(known, Some(Settled::NoTarget)) {
                    let (_, refused) = self.best_target(&u, &src, gates);
                    out.push((
                        u.members.clone(),
                        (
                            SkipReason::NoSuitableTarget,
                            self.refusals_text(&u, &refused),
                        ),
                    ));
                    continue;
                }
                let found = self.best_target_bounded(&u, &src, &bounder, gates);
                let reason = match found {
                    None => {
                        let (_, refused) = self.best_target(&u, &src, gates);
                        (
                            SkipReason::NoSuitableTarget,
                            self.refusals_text(&u, &refused),
                        )
                    }
                    Some((to, gain)) => (
                        SkipReason::InsufficientImprovement,
                        describe_best(&cluster.nodes[to].name, &gain, self.w.min_gain),
                    ),
                };
                out.push((u.members.clone(), reason));
            }
        }
        out
    }
}

/// Why a unit's best move is not worth making, in words.
fn describe_best(target: &str, gain: &ObjectiveGain, min_gain: f64) -> String {
    if gain.total <= 0.0 {
        format!(
            "its best move, to {target}, would raise the plan objective by {:.2}",
            -gain.total
        )
    } else {
        format!(
            "its best move, to {target}, lowers the plan objective by {:.2}, short of its cost of {:.2} plus {min_gain}",
            gain.total, gain.cost
        )
    }
}
