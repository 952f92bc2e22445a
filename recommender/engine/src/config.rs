//! The penalty configuration (docs/engine.md §2): defaults, presets, the simplified settings mapping
//! and per-request overrides by key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::numeric::{round_int, round_to};

/// A configuration key or value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("{key}: {expected}")]
    InvalidValue { key: String, expected: String },
    #[error("unknown preset {name:?} (expected conservative, balanced or aggressive)")]
    UnknownPreset { name: String },
}

impl ConfigError {
    fn invalid(key: &str, expected: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            key: key.to_owned(),
            expected: expected.into(),
        }
    }
}

/// Alert thresholds in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default = "default_cpu_threshold")]
    pub cpu: f64,
    #[serde(default = "default_mem_threshold")]
    pub mem: f64,
    #[serde(default = "default_iowait_threshold")]
    pub iowait: f64,
}

fn default_cpu_threshold() -> f64 {
    60.0
}
fn default_mem_threshold() -> f64 {
    70.0
}
fn default_iowait_threshold() -> f64 {
    30.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu: default_cpu_threshold(),
            mem: default_mem_threshold(),
            iowait: default_iowait_threshold(),
        }
    }
}

impl Thresholds {
    /// Every threshold must lie in 1–100.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("cpu", self.cpu),
            ("mem", self.mem),
            ("iowait", self.iowait),
        ] {
            if !(1.0..=100.0).contains(&v) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be within 1–100, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// Which memory the hard capacity gate counts (docs/engine.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityBasis {
    /// Σ maxmem of running guests: the seed's rule.
    Committed,
    /// Memory actually in use plus what is pending: for ballooning clusters.
    Used,
}

/// The seasonal baseline of the reference. Kept so configurations written for it load; the
/// engine does not apply it (the rules leave it out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalBaseline {
    pub enabled: bool,
    pub sigma_threshold: f64,
}

/// Which planner makes a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannerKind {
    /// The cluster-level planner: mandatory work, then balancing moves by best gain on a
    /// simulated cluster (docs/planner.md).
    Cluster,
    /// ProxBalance's per-guest generation, kept faithful to the reference model.
    Reference,
}

impl PlannerKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PlannerKind::Cluster => "cluster",
            PlannerKind::Reference => "reference",
        }
    }
}

/// What happens to guests Proxmox HA manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaGuests {
    /// Left where they are (`ha_managed`): HA decides where they run.
    Skip,
    /// Planned within their HA rules; their command is `ha-manager crm-command migrate`.
    Recommend,
}

/// How the sensitivity of the simplified settings scales a key (docs/engine.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scaling {
    /// CPU and IOWait penalties: × the sensitivity's scale.
    Full,
    /// Memory penalties: half as much.
    Half,
    /// Everything else, including the overcommit penalties (facts about memory).
    Fixed,
}

macro_rules! penalty_config {
    ($( $(#[$doc:meta])* $key:ident : $ty:ty = $default:expr ; $scaling:ident ),* $(,)?) => {
        /// The complete, merged penalty configuration. Never partial: overrides are laid over
        /// the defaults before anything reads it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct PenaltyConfig {
            $( $(#[$doc])* pub $key: $ty, )*
        }

        impl Default for PenaltyConfig {
            fn default() -> Self {
                Self { $( $key: $default, )* }
            }
        }

        /// Every key with how the sensitivity scales it.
        const SCALING: &[(&str, Scaling)] = &[$( (stringify!($key), Scaling::$scaling), )*];
    };
}

penalty_config! {
    cpu_high_penalty: f64 = 20.0; Full,
    cpu_very_high_penalty: f64 = 50.0; Full,
    cpu_extreme_penalty: f64 = 100.0; Full,
    mem_high_penalty: f64 = 8.0; Half,
    mem_very_high_penalty: f64 = 20.0; Half,
    mem_extreme_penalty: f64 = 50.0; Half,
    cpu_sustained_high: f64 = 40.0; Full,
    cpu_sustained_very_high: f64 = 80.0; Full,
    cpu_sustained_critical: f64 = 150.0; Full,
    mem_sustained_high: f64 = 10.0; Half,
    mem_sustained_very_high: f64 = 25.0; Half,
    mem_sustained_critical: f64 = 60.0; Half,
    iowait_high_penalty: f64 = 20.0; Full,
    iowait_very_high_penalty: f64 = 40.0; Full,
    iowait_extreme_penalty: f64 = 80.0; Full,
    iowait_sustained_elevated: f64 = 15.0; Full,
    iowait_sustained_high: f64 = 30.0; Full,
    iowait_sustained_critical: f64 = 60.0; Full,
    cpu_trend_rising_penalty: f64 = 15.0; Full,
    mem_trend_rising_penalty: f64 = 0.0; Half,
    cpu_spike_moderate: f64 = 5.0; Full,
    cpu_spike_high: f64 = 10.0; Full,
    cpu_spike_very_high: f64 = 20.0; Full,
    cpu_spike_extreme: f64 = 30.0; Full,
    mem_spike_moderate: f64 = 2.0; Half,
    mem_spike_high: f64 = 5.0; Half,
    mem_spike_very_high: f64 = 10.0; Half,
    mem_spike_extreme: f64 = 20.0; Half,
    predicted_cpu_over_penalty: f64 = 25.0; Full,
    predicted_cpu_high_penalty: f64 = 50.0; Full,
    predicted_cpu_extreme_penalty: f64 = 100.0; Full,
    predicted_mem_over_penalty: f64 = 10.0; Half,
    predicted_mem_high_penalty: f64 = 25.0; Half,
    predicted_mem_extreme_penalty: f64 = 50.0; Half,
    /// Added when a target's overcommit ratio exceeds 1.0.
    mem_overcommit_penalty: f64 = 15.0; Fixed,
    /// Added instead when the ratio exceeds 1.2.
    mem_overcommit_high_penalty: f64 = 40.0; Fixed,
    cpu_threshold_offset_1: f64 = 10.0; Fixed,
    cpu_threshold_offset_2: f64 = 20.0; Fixed,
    mem_threshold_offset_1: f64 = 10.0; Fixed,
    mem_threshold_offset_2: f64 = 20.0; Fixed,
    /// A move must improve the score by at least this much (reference generator).
    min_score_improvement: f64 = 15.0; Fixed,
    maintenance_score_boost: f64 = 100.0; Fixed,
    iowait_score_boost: f64 = 30.0; Fixed,
    iowait_exempt_enabled: bool = true; Fixed,
    /// A source below this memory % (and below the CPU threshold) keeps its guests (reference
    /// generator).
    source_mem_migration_floor: f64 = 65.0; Fixed,
    weight_current: f64 = 0.5; Fixed,
    weight_24h: f64 = 0.3; Fixed,
    weight_7d: f64 = 0.2; Fixed,
    /// CPU and memory spread (percentage points) under which a calm cluster is left alone
    /// (reference generator).
    cluster_convergence_threshold: f64 = 8.0; Fixed,
    seasonal_baseline: SeasonalBaseline = SeasonalBaseline { enabled: false, sigma_threshold: 2.0 }; Fixed,
    /// Fraction of host RAM the hard memory gate keeps free.
    capacity_headroom: f64 = 0.05; Fixed,
    capacity_basis: CapacityBasis = CapacityBasis::Committed; Fixed,
    /// Cap on the sum of memory penalties; 0 disables the cap.
    mem_penalty_cap: f64 = 60.0; Fixed,
    /// The most guests selected off one IOWait-stressed node per run.
    iowait_guest_limit: f64 = 5.0; Fixed,
    /// Which planner makes the plan: `cluster` or `reference`.
    planner: PlannerKind = PlannerKind::Cluster; Fixed,
    /// Objective points per point of Σ node scores (cluster planner).
    node_score_weight: f64 = 1.0; Fixed,
    /// Objective points per squared percentage point of memory % deviation from the mean.
    balance_mem_weight: f64 = 1.0; Fixed,
    /// Objective points per squared percentage point of CPU % deviation from the mean.
    balance_cpu_weight: f64 = 0.05; Fixed,
    /// Objective points per squared percentage point of memory % above the memory threshold
    /// less `excess_margin`.
    excess_mem_weight: f64 = 2.0; Fixed,
    /// Objective points per squared percentage point of CPU % above the CPU threshold less
    /// `excess_margin`.
    excess_cpu_weight: f64 = 2.0; Fixed,
    /// Objective points per squared percentage point of IOWait % above the IOWait threshold
    /// less `excess_margin`.
    excess_iowait_weight: f64 = 2.0; Fixed,
    /// How far below each threshold (percentage points) the excess terms start.
    excess_margin: f64 = 10.0; Fixed,
    /// Objective points per pair of anti-affinity guests sharing a node.
    anti_affinity_weight: f64 = 200.0; Fixed,
    /// Objective points per node beyond the first that an affinity group spans.
    affinity_weight: f64 = 30.0; Fixed,
    /// What any migration costs, objective points.
    move_cost: f64 = 20.0; Fixed,
    /// What each GiB of a guest's memory adds to its migration's cost, objective points.
    move_cost_per_gib: f64 = 2.0; Fixed,
    /// A balancing move must lower the objective by its cost plus this much.
    min_move_gain: f64 = 5.0; Fixed,
    /// The most moves one plan makes; the rest is deferred. 0: no limit.
    max_moves: f64 = 0.0; Fixed,
    /// The most memory (GiB, Σ maxmem) one plan migrates; the rest is deferred. 0: no limit.
    max_gib: f64 = 0.0; Fixed,
    /// Objective points per guest off the nodes of a node-affinity rule (pin) it belongs to.
    pin_weight: f64 = 100.0; Fixed,
    /// Guests Proxmox HA manages: `skip` them, or `recommend` moves within their HA rules.
    ha_guests: HaGuests = HaGuests::Skip; Fixed,
    /// Memory every node holds back from guests, GiB (the capacity gate and the balance
    /// terms see only the rest).
    node_reserve_gb: f64 = 0.0; Fixed,
    /// The same as a percentage of each node's RAM; the larger of the two applies.
    node_reserve_percent: f64 = 0.0; Fixed,
}

/// The keys whose value is a word, with the words they take.
const WORD_KEYS: [(&str, &str); 3] = [
    ("capacity_basis", "\"committed\" or \"used\""),
    ("planner", "\"cluster\" or \"reference\""),
    ("ha_guests", "\"skip\" or \"recommend\""),
];

impl PenaltyConfig {
    /// The configuration as a JSON object, key → value.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("PenaltyConfig always serializes to an object"),
        }
    }

    /// Every configuration key, in declaration order.
    pub fn keys() -> Vec<String> {
        PenaltyConfig::default().to_map().keys().cloned().collect()
    }

    /// This configuration with `overrides` laid over it. An unknown key, a value of the wrong
    /// type or one out of range is refused with the key named.
    pub fn with_overrides(&self, overrides: &Map<String, Value>) -> Result<Self, ConfigError> {
        let mut map = self.to_map();
        for (key, value) in overrides {
            let current = map
                .get_mut(key)
                .ok_or_else(|| ConfigError::UnknownKey { key: key.clone() })?;
            *current = merge_value(key, current, value)?;
        }
        let merged: PenaltyConfig = serde_json::from_value(Value::Object(map))
            .map_err(|e| ConfigError::invalid("penalty_config", e.to_string()))?;
        merged.validate()?;
        Ok(merged)
    }

    /// Sets one key from its textual form (`--set KEY=VALUE`): numbers, `true`/`false`, or a
    /// word for `capacity_basis`.
    pub fn with_text_override(&self, key: &str, text: &str) -> Result<Self, ConfigError> {
        let value = serde_json::from_str::<Value>(text.trim())
            .unwrap_or_else(|_| Value::String(text.trim().to_owned()));
        let mut map = Map::new();
        map.insert(key.to_owned(), value);
        self.with_overrides(&map)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in self.to_map() {
            let Some(v) = value.as_f64() else { continue };
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::invalid(&key, "must be a finite number ≥ 0"));
            }
        }
        for (key, v) in [
            ("weight_current", self.weight_current),
            ("weight_24h", self.weight_24h),
            ("weight_7d", self.weight_7d),
        ] {
            if v > 1.0 {
                return Err(ConfigError::invalid(key, "must be within 0–1"));
            }
        }
        let sum = self.weight_current + self.weight_24h + self.weight_7d;
        if (sum - 1.0).abs() > 0.011 {
            return Err(ConfigError::invalid(
                "weight_current",
                format!("the three time weights must sum to 1, got {sum}"),
            ));
        }
        if self.node_reserve_percent >= 100.0 {
            return Err(ConfigError::invalid(
                "node_reserve_percent",
                "must be below 100",
            ));
        }
        if self.capacity_headroom >= 1.0 {
            return Err(ConfigError::invalid(
                "capacity_headroom",
                "must be within 0–1 (exclusive)",
            ));
        }
        for (key, v) in [
            ("iowait_guest_limit", self.iowait_guest_limit),
            ("max_moves", self.max_moves),
        ] {
            if v.fract() != 0.0 {
                return Err(ConfigError::invalid(key, "must be a whole number"));
            }
        }
        if self.seasonal_baseline.sigma_threshold < 0.0
            || !self.seasonal_baseline.sigma_threshold.is_finite()
        {
            return Err(ConfigError::invalid(
                "seasonal_baseline.sigma_threshold",
                "must be a finite number ≥ 0",
            ));
        }
        Ok(())
    }

    /// The preset this configuration equals, if any (`custom` otherwise).
    pub fn active_preset(&self) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| &p.config() == self)
    }
}

fn merge_value(key: &str, current: &Value, new: &Value) -> Result<Value, ConfigError> {
    match (current, new) {
        (Value::Number(_), Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if !v.is_finite() {
                return Err(ConfigError::invalid(key, "must be a finite number"));
            }
            Ok(new.clone())
        }
        (Value::Bool(_), Value::Bool(_)) => Ok(new.clone()),
        (Value::String(_), Value::String(s)) => {
            let words = word_choices(key);
            if !words.contains(&format!("\"{s}\"")) {
                return Err(ConfigError::invalid(key, format!("must be {words}")));
            }
            Ok(new.clone())
        }
        (Value::Object(cur), Value::Object(obj)) => {
            let mut out = cur.clone();
            for (k, v) in obj {
                let path = format!("{key}.{k}");
                let existing = cur
                    .get(k)
                    .ok_or_else(|| ConfigError::UnknownKey { key: path.clone() })?;
                out.insert(k.clone(), merge_value(&path, existing, v)?);
            }
            Ok(Value::Object(out))
        }
        (Value::Number(_), _) => Err(ConfigError::invalid(key, "must be a number")),
        (Value::Bool(_), _) => Err(ConfigError::invalid(key, "must be true or false")),
        (Value::String(_), _) => Err(ConfigError::invalid(
            key,
            format!("must be {}", word_choices(key)),
        )),
        (Value::Object(_), _) => Err(ConfigError::invalid(key, "must be an object")),
        _ => Err(ConfigError::invalid(key, "cannot be set")),
    }
}

/// The words a word-valued key takes, quoted, e.g. `"committed" or "used"`.
fn word_choices(key: &str) -> &'static str {
    WORD_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("a known word", |(_, words)| words)
}

/// The three named configurations of the reference (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Conservative,
    Balanced,
    Aggressive,
}

impl Preset {
    /// All presets, in the order they are listed.
    pub const ALL: [Preset; 3] = [Preset::Conservative, Preset::Balanced, Preset::Aggressive];

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Conservative => "conservative",
            Preset::Balanced => "balanced",
            Preset::Aggressive => "aggressive",
        }
    }

    /// Looks a preset up by name.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name.trim().to_lowercase())
            .ok_or_else(|| ConfigError::UnknownPreset {
                name: name.to_owned(),
            })
    }

    /// The defaults with the preset's changes.
    pub fn config(self) -> PenaltyConfig {
        let mut c = PenaltyConfig::default();
        let (cpu, mem, msi, weights) = match self {
            Preset::Balanced => return c,
            Preset::Conservative => (
                [15.0, 40.0, 80.0],
                [6.0, 15.0, 40.0],
                25.0,
                [0.4, 0.35, 0.25],
            ),
            Preset::Aggressive => (
                [30.0, 65.0, 130.0],
                [10.0, 25.0, 60.0],
                8.0,
                [0.6, 0.3, 0.1],
            ),
        };
        [
            c.cpu_high_penalty,
            c.cpu_very_high_penalty,
            c.cpu_extreme_penalty,
        ] = cpu;
        [
            c.mem_high_penalty,
            c.mem_very_high_penalty,
            c.mem_extreme_penalty,
        ] = mem;
        c.min_score_improvement = msi;
        [c.weight_current, c.weight_24h, c.weight_7d] = weights;
        // the cluster planner's price of a move: a conservative plan asks more of each move,
        // an aggressive one balances further for more migrations
        [c.move_cost, c.move_cost_per_gib, c.min_move_gain] = match self {
            Preset::Conservative => [35.0, 3.0, 20.0],
            Preset::Aggressive => [10.0, 1.0, 0.0],
            Preset::Balanced => [c.move_cost, c.move_cost_per_gib, c.min_move_gain],
        };
        c
    }
}

/// The simplified settings an operator sets instead of 50 keys (docs/engine.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSettings {
    /// 1 (conservative), 2 (balanced) or 3 (aggressive).
    #[serde(default = "default_sensitivity")]
    pub sensitivity: u8,
    /// 0–100: how much the 24 h and 7 d averages weigh against the current value.
    #[serde(default = "default_trend_weight")]
    pub trend_weight: f64,
    #[serde(default)]
    pub min_score_improvement: Option<f64>,
    #[serde(default)]
    pub source_mem_migration_floor: Option<f64>,
    /// When set, the result is the defaults with these keys laid over them, nothing else.
    #[serde(default)]
    pub expert_overrides: Option<Map<String, Value>>,
}

fn default_sensitivity() -> u8 {
    2
}
fn default_trend_weight() -> f64 {
    60.0
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            sensitivity: default_sensitivity(),
            trend_weight: default_trend_weight(),
            min_score_improvement: None,
            source_mem_migration_floor: None,
            expert_overrides: None,
        }
    }
}

impl MigrationSettings {
    /// Maps the settings to a complete penalty configuration.
    pub fn to_config(&self) -> Result<PenaltyConfig, ConfigError> {
        let defaults = PenaltyConfig::default();
        if let Some(overrides) = &self.expert_overrides {
            return defaults.with_overrides(overrides);
        }
        let (scale, msi, convergence) = match self.sensitivity {
            1 => (0.75, 25.0, 12.0),
            2 => (1.0, 15.0, 8.0),
            3 => (1.3, 8.0, 5.0),
            other => {
                return Err(ConfigError::invalid(
                    "sensitivity",
                    format!("must be 1, 2 or 3, got {other}"),
                ));
            }
        };
        if !self.trend_weight.is_finite() {
            return Err(ConfigError::invalid(
                "trend_weight",
                "must be a number within 0–100",
            ));
        }
        let mem_scale = 1.0 + (scale - 1.0) * 0.5;
        let mut map = defaults.to_map();
        for (key, scaling) in SCALING {
            let factor = match scaling {
                Scaling::Full => scale,
                Scaling::Half => mem_scale,
                Scaling::Fixed => continue,
            };
            if let Some(v) = map.get(*key).and_then(Value::as_f64) {
                map.insert((*key).to_owned(), Value::from(round_int(v * factor)));
            }
        }
        let mut c: PenaltyConfig = serde_json::from_value(Value::Object(map))
            .map_err(|e| ConfigError::invalid("penalty_config", e.to_string()))?;
        c.min_score_improvement = self.min_score_improvement.unwrap_or(msi);
        c.cluster_convergence_threshold = convergence;
        if let Some(floor) = self.source_mem_migration_floor {
            c.source_mem_migration_floor = floor;
        }
        let tw = self.trend_weight.clamp(0.0, 100.0) / 100.0;
        c.weight_current = round_to(0.9 - 0.75 * tw, 2);
        c.weight_24h = round_to(0.1 + 0.25 * tw, 2);
        c.weight_7d = round_to(0.5 * tw, 2);
        if (c.weight_current + c.weight_24h + c.weight_7d - 1.0).abs() > 0.01 {
            c.weight_current = 1.0 - c.weight_24h - c.weight_7d;
        }
        c.validate()?;
        Ok(c)
    }
}

/// What a caller may change for one computation: the same set the CLI's flags and the gRPC
/// `GetRecommendations` request carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Start from this preset instead of the view's configuration.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Penalty keys laid over the (preset or view) configuration.
    #[serde(default)]
    pub penalties: Map<String, Value>,
    /// Threshold overrides by name (`cpu`, `mem`, `iowait`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// Replaces the view's maintenance nodes when not empty.
    #[serde(default)]
    pub maintenance_nodes: Vec<String>,
    /// The most recommendations to return.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl Overrides {
    /// Applies the configuration and threshold overrides to `config` and `thresholds`.
    pub fn apply(
        &self,
        config: &PenaltyConfig,
        thresholds: &Thresholds,
    ) -> Result<(PenaltyConfig, Thresholds), ConfigError> {
        let base = match self.preset {
            Some(p) => p.config(),
            None => config.clone(),
        };
        let config = base.with_overrides(&self.penalties)?;
        let mut t = *thresholds;
        for (key, &v) in &self.thresholds {
            match key.as_str() {
                "cpu" => t.cpu = v,
                "mem" => t.mem = v,
                "iowait" => t.iowait = v,
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: format!("thresholds.{key}"),
                    });
                }
            }
        }
        t.validate().map_err(|e| match e {
            ConfigError::InvalidValue { key, expected } => ConfigError::InvalidValue {
                key: format!("thresholds.{key}"),
                expected,
            },
            other => other,
        })?;
        Ok((config, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_carry_the_seed_changes() {
        let c = PenaltyConfig::default();
        assert_eq!(c.mem_overcommit_penalty, 15.0);
        assert_eq!(c.mem_overcommit_high_penalty, 40.0);
        assert_eq!(c.capacity_headroom, 0.05);
        assert_eq!(c.capacity_basis, CapacityBasis::Committed);
        assert_eq!(PenaltyConfig::keys().len(), 73);
        assert_eq!(c.active_preset(), Some(Preset::Balanced));
    }

    #[test]
    fn overrides_by_key() {
        let c = PenaltyConfig::default();
        let map = json!({"cpu_high_penalty": 33, "capacity_basis": "used",
                         "seasonal_baseline": {"enabled": true}});
        let c2 = c
            .with_overrides(map.as_object().expect("object"))
            .expect("valid");
        assert_eq!(c2.cpu_high_penalty, 33.0);
        assert_eq!(c2.capacity_basis, CapacityBasis::Used);
        assert!(c2.seasonal_baseline.enabled);
        assert_eq!(c2.seasonal_baseline.sigma_threshold, 2.0);
        assert_eq!(c2.active_preset(), None);

        let err = |v: Value| {
            c.with_overrides(v.as_object().expect("object"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(json!({"cpu_hi": 1})), "unknown key \"cpu_hi\"");
        assert_eq!(
            err(json!({"cpu_high_penalty": "x"})),
            "cpu_high_penalty: must be a number"
        );
        assert_eq!(
            err(json!({"cpu_high_penalty": -1})),
            "cpu_high_penalty: must be a finite number ≥ 0"
        );
        assert_eq!(
            err(json!({"capacity_basis": "free"})),
            "capacity_basis: must be \"committed\" or \"used\""
        );
        assert_eq!(
            err(json!({"seasonal_baseline": {"x": 1}})),
            "unknown key \"seasonal_baseline.x\""
        );
        assert!(
            err(json!({"weight_current": 0.9}))
                .starts_with("weight_current: the three time weights")
        );
        assert!(
            !c.with_text_override("iowait_exempt_enabled", "false")
                .expect("valid")
                .iowait_exempt_enabled
        );
        assert_eq!(
            c.with_text_override("capacity_basis", "used")
                .expect("valid")
                .capacity_basis,
            CapacityBasis::Used
        );
    }

    #[test]
    fn presets() {
        let c = Preset::Conservative.config();
        assert_eq!(
            (
                c.cpu_high_penalty,
                c.cpu_very_high_penalty,
                c.cpu_extreme_penalty
            ),
            (15.0, 40.0, 80.0)
        );
        assert_eq!(
            (
                c.mem_high_penalty,
                c.mem_very_high_penalty,
                c.mem_extreme_penalty
            ),
            (6.0, 15.0, 40.0)
        );
        assert_eq!(c.min_score_improvement, 25.0);
        assert_eq!(
            (c.move_cost, c.move_cost_per_gib, c.min_move_gain),
            (35.0, 3.0, 20.0)
        );
        assert_eq!(c.active_preset(), Some(Preset::Conservative));
        let a = Preset::from_name("Aggressive").expect("known");
        assert_eq!(a.config().weight_7d, 0.1);
        assert_eq!(a.config().min_move_gain, 0.0);
        assert_eq!(Preset::Balanced.config(), PenaltyConfig::default());
        assert!(Preset::from_name("wild").is_err());
    }

    #[test]
    fn overrides_apply_thresholds_and_reject_unknown() {
        let mut o = Overrides::default();
        o.thresholds.insert("cpu".into(), 75.0);
        let (_, t) = o
            .apply(&PenaltyConfig::default(), &Thresholds::default())
            .expect("valid");
        assert_eq!(t.cpu, 75.0);
        o.thresholds.insert("disk".into(), 75.0);
        let e = o
            .apply(&PenaltyConfig::default(), &Thresholds::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "unknown key \"thresholds.disk\"");
        let mut o = Overrides::default();
        o.thresholds.insert("mem".into(), 0.0);
        let e = o
            .apply(&PenaltyConfig::default(), &Thresholds::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "thresholds.mem: must be within 1–100, got 0");
    }

    #[test]
    fn settings_mapping_rounds_half_to_even() {
        let s = MigrationSettings {
            sensitivity: 1,
            ..Default::default()
        };
        let c = s.to_config().expect("valid");
        assert_eq!(
            (
                c.cpu_high_penalty,
                c.cpu_very_high_penalty,
                c.cpu_extreme_penalty
            ),
            (15.0, 38.0, 75.0)
        );
        assert_eq!(c.cpu_sustained_critical, 112.0);
        assert_eq!(
            (c.weight_current, c.weight_24h, c.weight_7d),
            (0.45, 0.25, 0.3)
        );
        assert_eq!(c.mem_overcommit_penalty, 15.0);
        let s = MigrationSettings {
            sensitivity: 4,
            ..Default::default()
        };
        assert_eq!(
            s.to_config().unwrap_err().to_string(),
            "sensitivity: must be 1, 2 or 3, got 4"
        );
    }
}
