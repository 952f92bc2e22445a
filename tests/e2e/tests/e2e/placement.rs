//! Placement rules end to end, on both PVE flavours: pvesim serving HA rules (PVE 9) or groups
//! (PVE 8), pools and `crs` over HTTPS; the collector reading them (including a failed read, an
//! unknown version and an upgrade from 8 to 9); the recommender planning with them and pool
//! rules and node reserves from its configuration, answering over gRPC and the CLI.
//!
//! The cluster (`scenario`): four nodes of 64 GiB.
//! - 101 (HA) on pve1, bound to pve1 by a strict HA rule / restricted group `pin-101`;
//! - 102 (HA) on pve1, preferring pve2 then pve3 by a non-strict rule / unrestricted group
//!   `prefer-pve2` (and, on PVE 9, kept apart from 101 by `apart`);
//! - 301, 302 of pool `db` on pve3, which the configuration keeps apart;
//! - 401 of pool `web` on pve4, which the configuration pins to pve3;
//! - pve4 holds back 60 GiB (a per-node reserve): it can take no guest.

use std::time::Duration;

use proxbalance_collector::cycle::{ClusterCollector, CycleOutput};
use proxbalance_collector::pve::tls::parse_fingerprint;
use proxbalance_collector::pve::{ApiToken, PveClient, PveClientSettings, TlsVerification};
use proxbalance_e2e::NatsServer;
use proxbalance_proto::v1 as pb;
use proxbalance_recommender::Config;
use pvesim::{Fault, Flavour, RunningSim, Scenario, Simulator};

use crate::support::{
    self, Driver, Recommender, TOKEN_ID, TOKEN_SECRET, cli, scenario_sim, until_cycle,
};

/// The scenario of the module documentation, on `flavour` (`version` when given), with
/// `cluster_extra` lines in `[cluster]`.
fn scenario(flavour: Flavour, version: Option<&str>, cluster_extra: &str) -> String {
    // Node affinity: PVE 9 rules, PVE 8 groups of the same names.
    let mut rules = r#"
[[ha_rules]]
rule = "pin-101"
type = "node-affinity"
resources = "vm:101"
nodes = "pve1"
strict = true

[[ha_rules]]
rule = "prefer-pve2"
type = "node-affinity"
resources = "vm:102"
nodes = "pve2:2,pve3:1"
"#
    .to_owned();
    let flavour_name = match flavour {
        Flavour::Pve9 => {
            // Resource affinity exists only in PVE 9.
            rules.push_str(
                r#"
[[ha_rules]]
rule = "apart"
type = "resource-affinity"
resources = "vm:101,vm:102"
affinity = "negative"

# disabled: would contradict `apart`
[[ha_rules]]
rule = "together"
type = "resource-affinity"
resources = "vm:101,vm:102"
affinity = "positive"
disable = true
"#,
            );
            "pve9"
        }
        Flavour::Pve8 => "pve8",
    };
    let version = version.map_or(String::new(), |v| format!("version = \"{v}\"\n"));
    let mut text = format!(
        r#"
[cluster]
name = "rules"
flavour = "{flavour_name}"
{version}seed = 12
{cluster_extra}

[[tokens]]
id = "{TOKEN_ID}"
secret = "{TOKEN_SECRET}"
"#
    );
    for n in ["pve1", "pve2", "pve3", "pve4"] {
        text.push_str(&format!(
            r#"
[[nodes]]
name = "{n}"
cores = 16
memory_gb = 64
load = {{ cpu = 0.02, iowait = 0.005, noise = 0.0 }}
storages = [{{ id = "ceph-vm", type = "rbd", shared = true, total_gb = 4000, used_gb = 1000 }}]
"#
        ));
    }
    for (vmid, kind, node, mem, extra) in [
        (101, "qemu", "pve1", 8, "ha = \"started\""),
        (102, "qemu", "pve1", 8, "ha = \"started\""),
        (103, "qemu", "pve1", 4, ""),
        (201, "lxc", "pve2", 2, ""),
        (301, "qemu", "pve3", 4, "pool = \"db\""),
        (302, "qemu", "pve3", 4, "pool = \"db\""),
        (401, "qemu", "pve4", 4, "pool = \"web\""),
        (402, "qemu", "pve4", 2, ""),
    ] {
        text.push_str(&format!(
            r#"
[[guests]]
vmid = {vmid}
kind = "{kind}"
node = "{node}"
cores = 2
memory_gb = {mem}
{extra}
load = {{ shape = "steady", cpu = 0.1, mem = 0.5, noise = 0.0 }}
"#
        ));
    }
    text.push_str(&rules);
    text
}

/// The scenario on PVE 9.2 with PVE balancing HA resources itself (`crs` `ha=dynamic`,
/// `ha-auto-rebalance`).
fn pve_balancing_ha() -> String {
    scenario(
        Flavour::Pve9,
        Some("9.2.0"),
        "crs_ha = \"dynamic\"\ncrs_auto_rebalance = true",
    )
}

/// The recommender's configuration: HA guests planned, pool rules, pve4's reserve.
fn config(nats_url: &str, cluster: &str) -> Config {
    let text = format!(
        r#"
[nats]
url = "{nats_url}"
[grpc]
listen = "127.0.0.1:0"
[engine.penalties]
ha_guests = "recommend"
[engine.pools.db]
anti_affinity = true
[engine.pools.web]
pin = ["pve3"]
[engine.clusters.{cluster}.nodes.pve4]
reserve_gb = 60
"#
    );
    Config::from_toml(&text).expect("recommender configuration")
}

fn pve_client(sim: &RunningSim, tls: TlsVerification) -> PveClient {
    PveClient::new(PveClientSettings {
        cluster: "rules".into(),
        endpoints: vec![format!("https://{}", sim.local_addr())],
        token: ApiToken::new(TOKEN_ID, TOKEN_SECRET).expect("token"),
        tls,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        max_concurrency: 4,
    })
    .expect("pve client")
}

fn pinned(sim: &RunningSim) -> TlsVerification {
    TlsVerification::Fingerprints(vec![
        parse_fingerprint(&sim.fingerprint_sha256()).expect("fingerprint"),
    ])
}

fn collector(sim: &RunningSim) -> ClusterCollector {
    support::collector("rules", pve_client(sim, pinned(sim)))
}

fn rule(
    name: &str,
    kind: pb::HaRuleKind,
    vmids: &[u32],
    nodes: &[(&str, u32)],
    strict: bool,
) -> pb::HaRule {
    pb::HaRule {
        name: name.into(),
        kind: kind as i32,
        vmids: vmids.to_vec(),
        nodes: nodes
            .iter()
            .map(|(n, p)| pb::HaRuleNode {
                node: (*n).into(),
                priority: *p,
            })
            .collect(),
        strict,
    }
}

/// PVE 9's rules as the collector publishes them (the disabled one left out).
fn pve9_rules() -> Vec<pb::HaRule> {
    use pb::HaRuleKind as K;
    vec![
        rule(
            "apart",
            K::ResourceAffinityNegative,
            &[101, 102],
            &[],
            false,
        ),
        rule("pin-101", K::NodeAffinity, &[101], &[("pve1", 0)], true),
        rule(
            "prefer-pve2",
            K::NodeAffinity,
            &[102],
            &[("pve2", 2), ("pve3", 1)],
            false,
        ),
    ]
}

/// PVE 8's groups as the collector publishes them.
fn pve8_groups() -> Vec<pb::HaRule> {
    use pb::HaRuleKind as K;
    vec![
        rule("pin-101", K::Group, &[101], &[("pve1", 0)], true),
        rule(
            "prefer-pve2",
            K::Group,
            &[102],
            &[("pve2", 2), ("pve3", 1)],
            false,
        ),
    ]
}

fn route(sim: &RunningSim, path: &str) -> u64 {
    sim.route_counts().get(path).copied().unwrap_or(0)
}

/// Guest → pool of every snapshot.
fn pools(out: &CycleOutput) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = out
        .snapshots
        .iter()
        .flat_map(|s| s.guests.iter())
        .map(|g| (g.vmid, g.pool.clone()))
        .collect();
    v.sort();
    v
}

fn expected_pools() -> Vec<(u32, String)> {
    [101, 102, 103, 201, 301, 302, 401, 402]
        .into_iter()
        .map(|v| {
            let pool = match v {
                301 | 302 => "db",
                401 => "web",
                _ => "",
            };
            (v, pool.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------- the collector

#[tokio::test]
async fn collector_reads_pve9_rules_and_crs_every_cycle() {
    let sim = scenario_sim(&pve_balancing_ha(), "rules").await;
    let mut c = collector(&sim);
    for cycle in 1..=2 {
        sim.advance(10.0);
        let out = c.collect().await;
        assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
        let st = &out.status;
        assert_eq!(st.ha_rules, pve9_rules());
        assert_eq!(st.ha_rules_source, pb::HaRulesSource::Rules as i32);
        assert_eq!(st.ha_rules_read_at_unix_ms, st.collected_at_unix_ms);
        let crs = st.crs.clone().expect("crs");
        assert_eq!((crs.ha.as_str(), crs.ha_auto_rebalance), ("dynamic", true));
        assert_eq!(pools(&out), expected_pools());
        assert_eq!(route(&sim, "/cluster/ha/rules"), cycle);
        assert_eq!(route(&sim, "/cluster/options"), cycle);
    }
    // PVE 9's groups endpoint is never asked, nor /pools: guests name their pool.
    assert_eq!(route(&sim, "/cluster/ha/groups"), 0);
    assert_eq!(route(&sim, "/pools"), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn collector_reads_pve8_groups_with_the_resources_naming_them() {
    let sim = scenario_sim(
        &scenario(Flavour::Pve8, None, "crs_ha = \"static\""),
        "rules",
    )
    .await;
    let mut c = collector(&sim);
    let out = c.collect().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    assert_eq!(out.status.ha_rules, pve8_groups());
    assert_eq!(out.status.ha_rules_source, pb::HaRulesSource::Groups as i32);
    let crs = out.status.crs.clone().expect("crs");
    assert_eq!((crs.ha.as_str(), crs.ha_auto_rebalance), ("static", false));
    assert_eq!(pools(&out), expected_pools());
    // The version says PVE 8: the rules endpoint, which PVE 8 does not have, is not asked.
    assert_eq!(route(&sim, "/cluster/ha/groups"), 1);
    assert_eq!(route(&sim, "/cluster/ha/rules"), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_reads_keep_the_rules_and_crs_last_read_and_name_the_error() {
    let sim = scenario_sim(&pve_balancing_ha(), "rules").await;
    let mut c = collector(&sim);
    let first = c.collect().await;
    assert_eq!(first.status.ha_rules, pve9_rules());
    let first_crs = first.status.crs.clone().expect("crs");
    assert_eq!(first_crs.ha, "dynamic");
    let at = sim.local_addr();
    // The rules, then PVE's options, then the whole cluster cannot be read.
    for (path, failing) in [
        ("/cluster/ha/rules", vec!["/cluster/ha/rules"]),
        (
            "/cluster/options",
            vec!["/cluster/options", "/cluster/ha/rules"],
        ),
        (
            "/cluster/resources",
            vec![
                "/cluster/options",
                "/cluster/ha/rules",
                "/cluster/resources",
            ],
        ),
    ] {
        sim.inject_fault(path, Fault::Status(500, format!("{path} unreadable")));
        sim.advance(10.0);
        let out = c.collect().await;
        let errors: Vec<(String, String, i32)> = out
            .status
            .errors
            .iter()
            .map(|e| (e.path.clone(), e.message.clone(), e.kind))
            .collect();
        // A failed cycle reads nothing but the resources.
        let expected: Vec<(String, String, i32)> = failing
            .iter()
            .filter(|p| path != "/cluster/resources" || **p == path)
            .map(|p| {
                (
                    (*p).to_owned(),
                    format!("HTTP 500 ({p} unreadable) at https://{at} GET {p}"),
                    pb::CollectionErrorKind::Http as i32,
                )
            })
            .collect();
        assert_eq!(errors, expected, "{path}");
        assert_eq!(out.status.ha_rules, pve9_rules(), "{path}");
        assert_eq!(
            out.status.ha_rules_source,
            pb::HaRulesSource::Rules as i32,
            "{path}"
        );
        assert_eq!(
            out.status.ha_rules_read_at_unix_ms, first.status.collected_at_unix_ms,
            "{path}"
        );
        assert_eq!(out.status.crs.as_ref(), Some(&first_crs), "{path}");
    }
    sim.clear_faults();
    sim.advance(10.0);
    let out = c.collect().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    assert_eq!(
        out.status.ha_rules_read_at_unix_ms,
        out.status.collected_at_unix_ms
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_version_pve8_is_found_by_its_answer_in_the_same_cycle() {
    let sim = scenario_sim(&scenario(Flavour::Pve8, None, ""), "rules").await;
    sim.inject_fault("/version", Fault::Status(500, "version unavailable".into()));
    let mut c = collector(&sim);
    let out = c.collect().await;
    // Only /version failed: the rules endpoint's 501 sent the collector to the groups.
    let paths: Vec<&str> = out.status.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/version"]);
    assert_eq!(out.status.ha_rules, pve8_groups());
    assert_eq!(out.status.ha_rules_source, pb::HaRulesSource::Groups as i32);
    assert_eq!(route(&sim, "/cluster/ha/rules"), 1);
    assert_eq!(route(&sim, "/cluster/ha/groups"), 1);
    // From then on the groups are asked directly.
    sim.advance(10.0);
    let _ = c.collect().await;
    assert_eq!(route(&sim, "/cluster/ha/rules"), 1);
    assert_eq!(route(&sim, "/cluster/ha/groups"), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_from_pve8_to_pve9_moves_from_groups_to_rules_without_a_restart() {
    proxbalance_collector::app::install_crypto_provider();
    let start = |flavour, addr: std::net::SocketAddr| async move {
        let mut s = Scenario::from_toml_str(&scenario(flavour, None, "")).expect("scenario");
        s.cluster.acceleration = 0.0;
        Simulator::start(s, addr).await.expect("pvesim")
    };
    let pve8 = start(Flavour::Pve8, "127.0.0.1:0".parse().expect("addr")).await;
    let addr = pve8.local_addr();
    // Each simulator has its own CA; the test is about the rules, not the certificates.
    let mut c = support::collector(
        "rules",
        pve_client(&pve8, TlsVerification::InsecureSkipVerify),
    );
    let out = c.collect().await;
    assert_eq!(out.status.ha_rules, pve8_groups());
    pve8.shutdown().await;
    // The same address now answers as PVE 9, whose groups are migrated to rules.
    let pve9 = start(Flavour::Pve9, addr).await;
    let out = c.collect().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    assert_eq!(out.status.ha_rules, pve9_rules());
    assert_eq!(out.status.ha_rules_source, pb::HaRulesSource::Rules as i32);
    assert_eq!(route(&pve9, "/cluster/ha/groups"), 1);
    assert_eq!(route(&pve9, "/cluster/ha/rules"), 1);
    pve9.shutdown().await;
}

// ---------------------------------------------------------------- pvesim to gRPC

/// A rule of `proxbalance state --format json`: name, kind, strict, source, guests, and nodes as
/// `node:priority:allowed`.
type StateRule = (String, String, bool, String, Vec<u64>, Vec<String>);

/// An unresolved violation: rule kind, node, rule name, guests, detail.
type UnresolvedRow<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u32], &'a str);

/// nats-server, the collector of `scenario` and the recommender with [`config`], after the
/// first cycle's recomputation.
struct Pipeline {
    _nats: NatsServer,
    driver: Driver,
    rec: Recommender,
    watch: tonic::Streaming<pb::RecommendationsChanged>,
    set: pb::RecommendationSet,
}

impl Pipeline {
    async fn start(toml: &str) -> Pipeline {
        let (p, first) = Self::start_with(toml, |_| {}).await;
        assert!(first.status.errors.is_empty(), "{:?}", first.status.errors);
        p
    }

    /// Like [`Pipeline::start`], with `before` done to the simulator before the first cycle,
    /// whose output is returned.
    async fn start_with(toml: &str, before: impl FnOnce(&RunningSim)) -> (Pipeline, CycleOutput) {
        support::log();
        let nats = NatsServer::start().expect("nats-server");
        let url = nats.url();
        let sim = scenario_sim(toml, "rules").await;
        let client = pve_client(&sim, pinned(&sim));
        let driver = Driver::with_client(
            "rules",
            sim,
            client,
            &url,
            &proxbalance_collector::publisher::StreamLimits::default(),
            Duration::from_secs(5),
        )
        .await;
        let rec = Recommender::start_with(config(&url, "rules")).await;
        let watch = rec.watch("rules").await;
        before(&driver.sim);
        let mut p = Pipeline {
            _nats: nats,
            driver,
            rec,
            watch,
            set: pb::RecommendationSet::default(),
        };
        let first = p.cycle().await;
        (p, first)
    }

    /// Collects and publishes the next cycle and waits for its set.
    async fn cycle(&mut self) -> CycleOutput {
        let (out, _) = self.driver.cycle(10.0).await;
        let changed = until_cycle(&mut self.watch, self.driver.last_cycle).await;
        self.set = changed.recommendations.expect("set");
        out
    }

    /// Waits for the next recomputation of the last cycle: the one its status makes when it
    /// changes the HA rules or the CRS (the cycle completed on its snapshots before).
    async fn replanned(&mut self) {
        let changed = until_cycle(&mut self.watch, self.driver.last_cycle).await;
        assert_eq!(changed.cycle, self.driver.last_cycle);
        self.set = changed.recommendations.expect("set");
    }

    fn server(&self) -> String {
        format!("http://{}", self.rec.service.grpc_addr())
    }

    /// `proxbalance state --format json` against the recommender.
    async fn state_json(&self) -> serde_json::Value {
        let server = self.server();
        let json = cli(&[
            "state",
            "--server",
            &server,
            "--cluster",
            "rules",
            "--format",
            "json",
        ])
        .await
        .expect("state");
        serde_json::from_str(&json).expect("json")
    }

    /// `proxbalance options` of `vmid`: target → gate reason.
    async fn gates(&self, vmid: u32) -> Vec<(String, Option<String>)> {
        let options = self
            .rec
            .client
            .clone()
            .get_migration_options(pb::GetMigrationOptionsRequest {
                cluster: "rules".into(),
                vmid,
                overrides: None,
            })
            .await
            .expect("options")
            .into_inner()
            .options
            .expect("options");
        options
            .targets
            .into_iter()
            .map(|t| (t.node, t.gate_reason))
            .collect()
    }

    async fn stop(self) {
        self.rec.stop().await;
        self.driver.sim.shutdown().await;
    }
}

/// Every recommendation as `vmid from → to: command (reason kind)`.
fn moves(set: &pb::RecommendationSet) -> Vec<String> {
    set.recommendations
        .iter()
        .map(|r| {
            let kind = r
                .reason
                .as_ref()
                .and_then(|x| pb::ReasonKind::try_from(x.kind).ok())
                .map_or("none", |k| k.as_str_name());
            format!(
                "{} {} -> {}: {} ({kind})",
                r.vmid, r.source_node, r.target_node, r.command
            )
        })
        .collect()
}

fn skipped(set: &pb::RecommendationSet) -> Vec<(u32, i32, String)> {
    set.skipped
        .iter()
        .map(|s| (s.vmid, s.reason, s.detail.clone()))
        .collect()
}

/// What both flavours must plan: 102 to the top node of its HA rule or group, 401 onto its
/// pool's pin, one of pool `db` off pve3; 101 stays pinned; pve4 (60 GiB reserved) takes
/// nothing.
async fn plans_within_the_rules(flavour: Flavour, ha: &str) {
    let p = Pipeline::start(&scenario(flavour, None, "")).await;
    assert_eq!(
        moves(&p.set),
        [
            "102 pve1 -> pve2: ha-manager crm-command migrate vm:102 pve2 (REASON_KIND_NODE_AFFINITY)",
            "401 pve4 -> pve3: qm migrate 401 pve3 --online (REASON_KIND_NODE_AFFINITY)",
            "301 pve3 -> pve2: qm migrate 301 pve2 --online (REASON_KIND_ANTI_AFFINITY)",
        ],
        "{:#?}",
        p.set
    );
    assert!(p.set.unresolved.is_empty(), "{:?}", p.set.unresolved);
    let skips: Vec<(u32, i32)> = skipped(&p.set)
        .into_iter()
        .map(|(v, r, _)| (v, r))
        .collect();
    use pb::SkipReason as S;
    assert_eq!(
        skips,
        [
            (101, S::NoSuitableTarget as i32),
            (103, S::InsufficientImprovement as i32),
            (201, S::InsufficientImprovement as i32),
            (302, S::InsufficientImprovement as i32),
            (402, S::NoSuitableTarget as i32),
        ]
    );
    // 101 may go nowhere but pve1, and the refusal names the HA rule, in the plan and in
    // `options`.
    let pin = format!("pinned elsewhere (rule {ha}:pin-101)");
    let why = skipped(&p.set)
        .into_iter()
        .find(|(v, _, _)| *v == 101)
        .map(|(_, _, detail)| detail);
    assert_eq!(
        why,
        Some(format!(
            "every target was refused: pve2: {pin}; pve3: {pin}; pve4: {pin}"
        ))
    );
    assert_eq!(
        p.gates(101).await,
        [
            ("pve2".to_owned(), Some(pin.clone())),
            ("pve3".to_owned(), Some(pin.clone())),
            ("pve4".to_owned(), Some(pin)),
        ]
    );
    // pve4 offers 4 GiB (64 less the 60 reserved): no room for 302; pve3 is its own node.
    assert_eq!(
        p.gates(302).await,
        [
            ("pve1".to_owned(), None),
            ("pve2".to_owned(), None),
            (
                "pve4".to_owned(),
                Some("insufficient memory capacity".to_owned())
            ),
        ]
    );

    // `state` shows the rules the set was planned with, the CRS mode and the HA guests' fate.
    let v = p.state_json().await;
    let rules: Vec<StateRule> = v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_owned(),
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["strict"].as_bool().unwrap_or(false),
                r["source"].as_str().unwrap_or("").to_owned(),
                r["vmids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_u64)
                    .collect(),
                r["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        format!(
                            "{}:{}:{}",
                            n["node"].as_str().unwrap_or(""),
                            n["priority"],
                            n["allowed"]
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let r = |name: &str, kind: &str, source: &str, vmids: &[u64], nodes: &[&str]| {
        (
            name.to_owned(),
            kind.to_owned(),
            true,
            source.to_owned(),
            vmids.to_vec(),
            nodes.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
    };
    let mut expected = Vec::new();
    let src = if ha == "ha" { "ha" } else { "ha_group" };
    if flavour == Flavour::Pve9 {
        expected.push(r("ha:apart", "anti_affinity", "ha", &[101, 102], &[]));
    }
    expected.extend([
        r(
            &format!("{ha}:pin-101"),
            "node_affinity",
            src,
            &[101],
            &["pve1:0:true"],
        ),
        r(
            &format!("{ha}:prefer-pve2"),
            "node_affinity",
            src,
            &[102],
            &["pve2:2:true", "pve3:1:false"],
        ),
    ]);
    // ha-group sorts before pool, ha: too
    expected.extend([
        r("pool:db", "anti_affinity", "pool", &[301, 302], &[]),
        r(
            "pool:web",
            "node_affinity",
            "pool",
            &[401],
            &["pve3:0:true"],
        ),
    ]);
    assert_eq!(rules, expected);
    assert_eq!(v["ha_guests"], "recommend");
    let source = if flavour == Flavour::Pve9 {
        "rules"
    } else {
        "groups"
    };
    assert_eq!(v["ha_rules"]["source"], source);
    assert_eq!(
        v["crs"],
        serde_json::json!({"ha": "basic", "auto_rebalance": false, "pve_balances_ha": false})
    );
    // GetConfig of the cluster gives its pool rules and reserves.
    let config = p
        .rec
        .client
        .clone()
        .get_config(pb::GetConfigRequest {
            cluster: "rules".into(),
        })
        .await
        .expect("config")
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&config.config_json).expect("json");
    assert_eq!(
        config["pools"],
        serde_json::json!({
            "db": {"affinity": false, "anti_affinity": true, "pin": [], "strict": true},
            "web": {"affinity": false, "anti_affinity": false, "pin": ["pve3"], "strict": true},
        })
    );
    assert_eq!(
        config["cluster"],
        serde_json::json!({"node_reserve_gb": null, "node_reserve_percent": null,
            "nodes": {"pve4": {"reserve_gb": 60.0}}, "pools": {}})
    );
    let table = cli(&["state", "--server", &p.server(), "--cluster", "rules"])
        .await
        .expect("state");
    let pin_row = format!("{ha}:pin-101");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&pin_row) && l.ends_with("101       pve1:0*")),
        "{table}"
    );
    p.stop().await;
}

#[tokio::test]
async fn pve9_rules_pools_and_reserves_from_pvesim_to_grpc() {
    plans_within_the_rules(Flavour::Pve9, "ha").await;
}

#[tokio::test]
async fn pve8_groups_pools_and_reserves_from_pvesim_to_grpc() {
    plans_within_the_rules(Flavour::Pve8, "ha-group").await;
}

#[tokio::test]
async fn pve_balancing_ha_itself_leaves_the_ha_guests_to_it() {
    let p = Pipeline::start(&pve_balancing_ha()).await;
    assert_eq!(
        moves(&p.set),
        [
            "401 pve4 -> pve3: qm migrate 401 pve3 --online (REASON_KIND_NODE_AFFINITY)",
            "301 pve3 -> pve2: qm migrate 301 pve2 --online (REASON_KIND_ANTI_AFFINITY)",
            // 102 may not leave pve1 now; the balance moves another guest off it instead
            "103 pve1 -> pve2: qm migrate 103 pve2 --online (REASON_KIND_MEM_IMBALANCE)",
        ]
    );
    // The HA rules 101 and 102 break stay reported, left to Proxmox.
    let unresolved: Vec<UnresolvedRow<'_>> = p
        .set
        .unresolved
        .iter()
        .map(|u| {
            (
                u.rule.as_str(),
                u.node.as_str(),
                u.group.as_deref(),
                u.vmids.as_slice(),
                u.detail.as_str(),
            )
        })
        .collect();
    assert_eq!(
        unresolved,
        [
            (
                "node_affinity",
                "pve1",
                Some("ha:prefer-pve2"),
                &[102][..],
                "pinned to pve2, pve3; it may not move: an HA resource, and Proxmox balances HA \
                 resources itself (crs ha=dynamic with auto-rebalance)"
            ),
            (
                "anti_affinity",
                "pve1",
                Some("ha:apart"),
                &[101, 102][..],
                "no member of the group on this node may move (guest gates)"
            ),
        ]
    );
    let crs = "an HA resource, and Proxmox balances HA resources itself (crs ha=dynamic with \
               auto-rebalance)";
    let ha_skips: Vec<(u32, i32, String)> = skipped(&p.set)
        .into_iter()
        .filter(|(v, _, _)| *v < 103)
        .collect();
    assert_eq!(
        ha_skips,
        [
            (101, pb::SkipReason::ManagedByPveCrs as i32, crs.to_owned()),
            (102, pb::SkipReason::ManagedByPveCrs as i32, crs.to_owned()),
        ]
    );
    let state = p
        .rec
        .client
        .clone()
        .get_cluster_state(pb::GetClusterStateRequest {
            cluster: "rules".into(),
        })
        .await
        .expect("state")
        .into_inner();
    assert!(state.pve_balances_ha);
    assert_eq!(state.ha_guests, pb::HaGuests::ManagedByPveCrs as i32);
    p.stop().await;
}

#[tokio::test]
async fn ha_guests_are_planned_only_once_their_rules_are_read() {
    let (mut p, first) = Pipeline::start_with(&scenario(Flavour::Pve9, None, ""), |sim| {
        sim.inject_fault(
            "/cluster/ha/rules",
            Fault::Status(500, "rules.cfg unreadable".into()),
        );
    })
    .await;
    let paths: Vec<&str> = first
        .status
        .errors
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, ["/cluster/ha/rules"]);
    // ha_guests = recommend, but no HA rule is known: 101 and 102 stay where they are.
    let ha_skips: Vec<(u32, i32)> = skipped(&p.set)
        .into_iter()
        .filter(|(v, _, _)| *v < 103)
        .map(|(v, r, _)| (v, r))
        .collect();
    let ha = pb::SkipReason::HaManaged as i32;
    assert_eq!(ha_skips, [(101, ha), (102, ha)]);
    let v = p.state_json().await;
    assert_eq!(v["ha_guests"], "skip_rules_unknown");
    assert_eq!(v["ha_rules"]["source"], "not_read");
    // Nor can a request ask for them by an override.
    let err = p
        .rec
        .client
        .clone()
        .get_recommendations(pb::GetRecommendationsRequest {
            cluster: "rules".into(),
            overrides: Some(pb::Overrides {
                penalties: [("ha_guests".to_owned(), "recommend".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "overrides.penalties.ha_guests: the HA rules of cluster \"rules\" have not been read \
         yet, so its HA guests cannot be planned within them; try again after the collector's \
         next cycle"
    );
    // The rules are read: 102 goes to the top node of its rule, 101 stays pinned.
    p.driver.sim.clear_faults();
    let out = p.cycle().await;
    assert!(out.status.errors.is_empty(), "{:?}", out.status.errors);
    // The cycle completed on its snapshots, planned with the previous status; its own status
    // brings the rules and the cycle is planned again.
    p.replanned().await;
    let ha_moves: Vec<String> = moves(&p.set)
        .into_iter()
        .filter(|m| m.starts_with("101 ") || m.starts_with("102 "))
        .collect();
    assert_eq!(
        ha_moves,
        [
            "102 pve1 -> pve2: ha-manager crm-command migrate vm:102 pve2 (REASON_KIND_NODE_AFFINITY)"
        ]
    );
    p.stop().await;
}
