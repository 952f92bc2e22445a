//! The penalty configuration (ENGINE.md §2): defaults, presets, the simplified settings mapping
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

/// Which memory the hard capacity gate counts (ENGINE.md §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapacityBasis {
    /// Σ maxmem of running guests: the seed's rule.
    Committed,
    /// Memory actually in use plus what is pending: for ballooning clusters.
    Used,
}

/// The seasonal baseline of the reference. Kept so configurations written for it load; the
/// engine does not apply it (ENGINE.md §4.4 puts it out of scope).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalBaseline {
    pub enabled: bool,
    pub sigma_threshold: f64,
}

macro_rules! penalty_config {
    ($( $(#[$doc:meta])* $key:ident : $ty:ty = $default:expr ),* $(,)?) => {
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
    };
}

penalty_config! {
    cpu_high_penalty: f64 = 20.0,
    cpu_very_high_penalty: f64 = 50.0,
    cpu_extreme_penalty: f64 = 100.0,
    mem_high_penalty: f64 = 8.0,
    mem_very_high_penalty: f64 = 20.0,
    mem_extreme_penalty: f64 = 50.0,
    cpu_sustained_high: f64 = 40.0,
    cpu_sustained_very_high: f64 = 80.0,
    cpu_sustained_critical: f64 = 150.0,
    mem_sustained_high: f64 = 10.0,
    mem_sustained_very_high: f64 = 25.0,
    mem_sustained_critical: f64 = 60.0,
    iowait_high_penalty: f64 = 20.0,
    iowait_very_high_penalty: f64 = 40.0,
    iowait_extreme_penalty: f64 = 80.0,
    iowait_sustained_elevated: f64 = 15.0,
    iowait_sustained_high: f64 = 30.0,
    iowait_sustained_critical: f64 = 60.0,
    cpu_trend_rising_penalty: f64 = 15.0,
    mem_trend_rising_penalty: f64 = 0.0,
    cpu_spike_moderate: f64 = 5.0,
    cpu_spike_high: f64 = 10.0,
    cpu_spike_very_high: f64 = 20.0,
    cpu_spike_extreme: f64 = 30.0,
    mem_spike_moderate: f64 = 2.0,
    mem_spike_high: f64 = 5.0,
    mem_spike_very_high: f64 = 10.0,
    mem_spike_extreme: f64 = 20.0,
    predicted_cpu_over_penalty: f64 = 25.0,
    predicted_cpu_high_penalty: f64 = 50.0,
    predicted_cpu_extreme_penalty: f64 = 100.0,
    predicted_mem_over_penalty: f64 = 10.0,
    predicted_mem_high_penalty: f64 = 25.0,
    predicted_mem_extreme_penalty: f64 = 50.0,
    /// Added when a target's overcommit ratio exceeds 1.0.
    mem_overcommit_penalty: f64 = 15.0,
    /// Added instead when the ratio exceeds 1.2.
    mem_overcommit_high_penalty: f64 = 40.0,
    cpu_threshold_offset_1: f64 = 10.0,
    cpu_threshold_offset_2: f64 = 20.0,
    mem_threshold_offset_1: f64 = 10.0,
    mem_threshold_offset_2: f64 = 20.0,
    /// A move must improve the score by at least this much.
    min_score_improvement: f64 = 15.0,
    maintenance_score_boost: f64 = 100.0,
    iowait_score_boost: f64 = 30.0,
    iowait_exempt_enabled: bool = true,
    /// A source below this memory % (and below the CPU threshold) keeps its guests.
    source_mem_migration_floor: f64 = 65.0,
    weight_current: f64 = 0.5,
    weight_24h: f64 = 0.3,
    weight_7d: f64 = 0.2,
    /// CPU and memory spread (percentage points) under which a calm cluster is left alone.
    cluster_convergence_threshold: f64 = 8.0,
    seasonal_baseline: SeasonalBaseline = SeasonalBaseline { enabled: false, sigma_threshold: 2.0 },
    /// Fraction of host RAM the hard memory gate keeps free.
    capacity_headroom: f64 = 0.05,
    capacity_basis: CapacityBasis = CapacityBasis::Committed,
    /// Cap on the sum of memory penalties; 0 disables the cap.
    mem_penalty_cap: f64 = 60.0,
    /// The most guests selected off one IOWait-stressed node per run.
    iowait_guest_limit: f64 = 5.0,
}

/// The 14 CPU penalty keys and the 6 IOWait keys: scaled by the sensitivity.
const CPU_AND_IO_KEYS: [&str; 20] = [
    "cpu_high_penalty",
    "cpu_very_high_penalty",
    "cpu_extreme_penalty",
    "cpu_sustained_high",
    "cpu_sustained_very_high",
    "cpu_sustained_critical",
    "cpu_trend_rising_penalty",
    "cpu_spike_moderate",
    "cpu_spike_high",
    "cpu_spike_very_high",
    "cpu_spike_extreme",
    "predicted_cpu_over_penalty",
    "predicted_cpu_high_penalty",
    "predicted_cpu_extreme_penalty",
    "iowait_high_penalty",
    "iowait_very_high_penalty",
    "iowait_extreme_penalty",
    "iowait_sustained_elevated",
    "iowait_sustained_high",
    "iowait_sustained_critical",
];

/// The 14 memory penalty keys: scaled half as much. The overcommit keys are facts about memory
/// and are not scaled at all.
const MEM_KEYS: [&str; 14] = [
    "mem_high_penalty",
    "mem_very_high_penalty",
    "mem_extreme_penalty",
    "mem_sustained_high",
    "mem_sustained_very_high",
    "mem_sustained_critical",
    "mem_trend_rising_penalty",
    "mem_spike_moderate",
    "mem_spike_high",
    "mem_spike_very_high",
    "mem_spike_extreme",
    "predicted_mem_over_penalty",
    "predicted_mem_high_penalty",
    "predicted_mem_extreme_penalty",
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
        if self.capacity_headroom >= 1.0 {
            return Err(ConfigError::invalid(
                "capacity_headroom",
                "must be within 0–1 (exclusive)",
            ));
        }
        if self.iowait_guest_limit.fract() != 0.0 {
            return Err(ConfigError::invalid(
                "iowait_guest_limit",
                "must be a whole number",
            ));
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

    fn get_mut(&mut self, key: &str) -> Option<&mut f64> {
        macro_rules! field {
            ($($k:ident),*) => { match key { $( stringify!($k) => Some(&mut self.$k), )* _ => None } };
        }
        field!(
            cpu_high_penalty,
            cpu_very_high_penalty,
            cpu_extreme_penalty,
            mem_high_penalty,
            mem_very_high_penalty,
            mem_extreme_penalty,
            cpu_sustained_high,
            cpu_sustained_very_high,
            cpu_sustained_critical,
            mem_sustained_high,
            mem_sustained_very_high,
            mem_sustained_critical,
            iowait_high_penalty,
            iowait_very_high_penalty,
            iowait_extreme_penalty,
            iowait_sustained_elevated,
            iowait_sustained_high,
            iowait_sustained_critical,
            cpu_trend_rising_penalty,
            mem_trend_rising_penalty,
            cpu_spike_moderate,
            cpu_spike_high,
            cpu_spike_very_high,
            cpu_spike_extreme,
            mem_spike_moderate,
            mem_spike_high,
            mem_spike_very_high,
            mem_spike_extreme,
            predicted_cpu_over_penalty,
            predicted_cpu_high_penalty,
            predicted_cpu_extreme_penalty,
            predicted_mem_over_penalty,
            predicted_mem_high_penalty,
            predicted_mem_extreme_penalty
        )
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
            if key == "capacity_basis" && s != "committed" && s != "used" {
                return Err(ConfigError::invalid(
                    key,
                    "must be \"committed\" or \"used\"",
                ));
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
            "must be \"committed\" or \"used\"",
        )),
        (Value::Object(_), _) => Err(ConfigError::invalid(key, "must be an object")),
        _ => Err(ConfigError::invalid(key, "cannot be set")),
    }
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
        c
    }
}

/// The simplified settings an operator sets instead of 50 keys (reference §3.4).
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
        let mut c = defaults.clone();
        for (keys, factor) in [(&CPU_AND_IO_KEYS[..], scale), (&MEM_KEYS[..], mem_scale)] {
            for key in keys {
                if let Some(slot) = c.get_mut(key) {
                    *slot = round_int(*slot * factor);
                }
            }
        }
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
        assert_eq!(PenaltyConfig::keys().len(), 54);
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
        assert_eq!(c.active_preset(), Some(Preset::Conservative));
        let a = Preset::from_name("Aggressive").expect("known");
        assert_eq!(a.config().weight_7d, 0.1);
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
