//! Hostile snapshots through the recommender's ingest checks (`State::ingest`): each is refused
//! with the field it names and the exact reason label the rejection metric counts it under,
//! and none of them changes the state. RELIABILITY.md lists them.

use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_recommender::state::{Arrival, Ingested, State, StateSettings, limits};

const T0: i64 = 1_764_230_400_000;

fn state() -> State {
    State::new(StateSettings {
        staleness_ms: 60_000,
        ..StateSettings::default()
    })
}

fn guest(vmid: u32) -> pb::Guest {
    pb::Guest {
        vmid,
        kind: pb::GuestKind::Qemu as i32,
        name: format!("vm{vmid}"),
        status: "running".into(),
        cpu_fraction: 0.2,
        vcpus: 2.0,
        mem_used_bytes: 2 << 30,
        mem_max_bytes: 4 << 30,
        tags: vec!["prod".into()],
        storages: vec!["local-lvm".into()],
        config_known: true,
        ..Default::default()
    }
}

fn snapshot(node: &str, cycle: u64, vmids: &[u32]) -> pb::NodeSnapshot {
    pb::NodeSnapshot {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        node: node.into(),
        cycle,
        observed_at_unix_ms: T0,
        status: pb::NodeStatus::Online as i32,
        cpu_fraction: 0.3,
        cpu_threads: 16,
        iowait_fraction: Some(0.01),
        load_average: vec![1.0, 1.0, 1.0],
        mem_used_bytes: 16 << 30,
        mem_total_bytes: 64 << 30,
        mem_available_bytes: 48 << 30,
        committed_mem_bytes: 8 << 30,
        overcommit_ratio: 0.125,
        swap_used_bytes: 0,
        swap_total_bytes: 8 << 30,
        storages: vec![pb::Storage {
            id: "local-lvm".into(),
            r#type: "lvmthin".into(),
            active: true,
            total_bytes: 1 << 40,
            used_bytes: 1 << 39,
            ..Default::default()
        }],
        guests: vmids.iter().map(|v| guest(*v)).collect(),
        ..Default::default()
    }
}

fn ingest(st: &mut State, s: &pb::NodeSnapshot) -> Result<Ingested, String> {
    ingest_on(st, &Subjects::default().snapshot(&s.cluster, &s.node), s)
}

fn ingest_on(st: &mut State, subject: &str, s: &pb::NodeSnapshot) -> Result<Ingested, String> {
    st.ingest(subject, &proxbalance_proto::encode(s), Arrival::at(T0))
        .map_err(|e| format!("{} | {e}", e.label()))
}

/// Ingests `s` into a state that already holds node `a` of cycle 1 and expects the refusal
/// `label | message`; the state must be left as it was.
fn refused(s: &pb::NodeSnapshot, expected: &str) {
    let mut st = state();
    ingest(&mut st, &snapshot("a", 1, &[100, 101])).expect("the genuine snapshot");
    let before = st.cluster_state("c", T0).expect("cluster");
    let got = ingest(&mut st, s).expect_err("refused");
    assert_eq!(got, expected);
    assert_eq!(st.cluster_state("c", T0).expect("cluster"), before);
}

#[test]
fn the_genuine_snapshot_is_accepted() {
    let mut st = state();
    let r = ingest(&mut st, &snapshot("a", 1, &[100, 101])).unwrap();
    assert!(matches!(r, Ingested::Snapshot { .. }), "{r:?}");
    // A migration between cycles is not a guest on two nodes.
    ingest(&mut st, &snapshot("b", 2, &[100])).unwrap();
}

#[test]
fn a_repeated_snapshot_is_applied_once() {
    let mut st = state();
    let s = snapshot("a", 1, &[100]);
    ingest(&mut st, &s).unwrap();
    assert_eq!(ingest(&mut st, &s).unwrap(), Ingested::Ignored);
    assert_eq!(st.snapshots_applied(), 1);
}

#[test]
fn non_finite_values_are_refused() {
    let mut s = snapshot("b", 1, &[200]);
    s.cpu_fraction = f64::NAN;
    refused(&s, "not_finite | cpu_fraction: expected a finite number");
    let mut s = snapshot("b", 1, &[200]);
    s.guests[0].net_out_bps = f64::INFINITY;
    refused(
        &s,
        "not_finite | guests[0].net_out_bps: expected a finite number",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.load_average[2] = f64::NEG_INFINITY;
    refused(&s, "not_finite | load_average[2]: expected a finite number");
    let mut s = snapshot("b", 1, &[200]);
    s.pressure = Some(pb::Pressure {
        io_full: f64::NAN,
        ..Default::default()
    });
    refused(
        &s,
        "not_finite | pressure.io_full: expected a finite number",
    );
}

#[test]
fn negative_values_and_sizes_are_refused() {
    let mut s = snapshot("b", 1, &[200]);
    s.guests[0].vcpus = -2.0;
    refused(
        &s,
        "negative_value | guests[0].vcpus: expected a number ≥ 0",
    );
    // Sizes are unsigned on the wire: a negative one arrives as 2⁶⁴ − n.
    let mut s = snapshot("b", 1, &[200]);
    s.mem_total_bytes = (-1i64) as u64;
    refused(
        &s,
        "negative_value | mem_total_bytes: expected a size ≥ 0 (found a negative number stored as unsigned)",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.guests[0].mem_max_bytes = (-4096i64) as u64;
    refused(
        &s,
        "negative_value | guests[0].mem_max_bytes: expected a size ≥ 0 (found a negative number stored as unsigned)",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.storages[0].used_bytes = limits::MAX_BYTES + 1;
    refused(
        &s,
        "out_of_range | storages[0].used_bytes: expected a size ≤ 1152921504606846976 bytes",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.cpu_fraction = 1e300;
    refused(&s, "out_of_range | cpu_fraction: expected a number ≤ 64");
}

#[test]
fn used_above_total_is_refused() {
    let mut s = snapshot("b", 1, &[200]);
    s.mem_used_bytes = (64 << 30) + 1;
    refused(
        &s,
        "used_exceeds_total | mem_used_bytes: 68719476737 bytes used exceed the total of 68719476736",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.swap_used_bytes = 1;
    s.swap_total_bytes = 0;
    refused(
        &s,
        "used_exceeds_total | swap_used_bytes: 1 bytes used exceed the total of 0",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.storages[0].used_bytes = (1 << 40) + 1;
    refused(
        &s,
        "used_exceeds_total | storages[0].used_bytes: 1099511627777 bytes used exceed the total of 1099511627776",
    );
}

#[test]
fn a_guest_on_two_nodes_is_refused() {
    // Node b claims guest 101, which node a reported in the same cycle.
    refused(
        &snapshot("b", 1, &[200, 101]),
        "guest_on_two_nodes | guests[1].vmid: vmid 101 was already reported by node \"a\" in cycle 1",
    );
    // The same vmid twice in one snapshot.
    refused(
        &snapshot("b", 1, &[200, 201, 200]),
        "duplicate_guest | guests[2].vmid: vmid 200 is listed twice",
    );
}

#[test]
fn a_hundred_thousand_guests_are_refused_before_decoding() {
    let vmids: Vec<u32> = (1..=100_000).collect();
    let s = snapshot("b", 1, &vmids);
    refused(
        &s,
        "too_many_items | NodeSnapshot.guests: 100000 entries exceed the limit of 10000",
    );
    // Exactly at the limit is fine.
    let mut st = state();
    let vmids: Vec<u32> = (1..=limits::MAX_GUESTS_PER_SNAPSHOT as u32).collect();
    ingest(&mut st, &snapshot("b", 1, &vmids)).expect("10,000 guests");
}

#[test]
fn megabyte_long_names_are_refused() {
    let long = "x".repeat(1 << 20);
    let mut s = snapshot("b", 1, &[200]);
    s.guests[0].name = long.clone();
    refused(
        &s,
        "name_too_long | guests[0].name: 1048576 bytes exceed the limit of 253",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.guests[0].tags = vec!["ok".into(), long.clone()];
    refused(
        &s,
        "name_too_long | guests[0].tags[1]: 1048576 bytes exceed the limit of 253",
    );
    let mut s = snapshot("b", 1, &[200]);
    s.error = long.clone();
    refused(
        &s,
        "name_too_long | error: 1048576 bytes exceed the limit of 4096",
    );
    // A long node name, on a subject that carries it too.
    let mut s = snapshot("b", 1, &[200]);
    s.node = long;
    refused(
        &s,
        "name_too_long | node: 1048576 bytes exceed the limit of 253",
    );
}

#[test]
fn a_status_listing_a_megabyte_history_name_is_refused() {
    let mut st = state();
    let status = pb::ClusterStatus {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        cycle: 1,
        collected_at_unix_ms: T0,
        histories: vec!["a".into(), "x".repeat(1 << 20)],
        ..Default::default()
    };
    let e = st
        .ingest(
            &Subjects::default().cluster_status("c"),
            &proxbalance_proto::encode(&status),
            Arrival::at(T0),
        )
        .unwrap_err();
    assert_eq!(
        format!("{} | {e}", e.label()),
        "name_too_long | histories[1]: 1048576 bytes exceed the limit of 253"
    );
}

#[test]
fn a_status_with_hostile_ha_rules_is_refused_naming_the_field() {
    let refused_status = |rules: Vec<pb::HaRule>| {
        let status = pb::ClusterStatus {
            schema_version: SCHEMA_VERSION,
            cluster: "c".into(),
            cycle: 1,
            collected_at_unix_ms: T0,
            ha_rules: rules,
            ..Default::default()
        };
        let e = state()
            .ingest(
                &Subjects::default().cluster_status("c"),
                &proxbalance_proto::encode(&status),
                Arrival::at(T0),
            )
            .unwrap_err();
        format!("{} | {e}", e.label())
    };
    let rule = |name: &str, nodes: Vec<&str>| pb::HaRule {
        name: name.into(),
        kind: pb::HaRuleKind::NodeAffinity as i32,
        vmids: vec![100],
        nodes: nodes
            .into_iter()
            .map(|n| pb::HaRuleNode {
                node: n.into(),
                priority: 1,
            })
            .collect(),
        strict: true,
    };
    assert_eq!(
        refused_status(vec![rule("ok", vec!["a"]), rule(" ", vec!["a"])]),
        "invalid_value | ha_rules[1].name: expected a non-empty name"
    );
    assert_eq!(
        refused_status(vec![rule("ok", vec!["a", &"n".repeat(300)])]),
        "name_too_long | ha_rules[0].nodes[1].node: 300 bytes exceed the limit of 253"
    );
    let mut many = rule("many", vec!["a"]);
    many.vmids = (1..=100_001).collect();
    assert_eq!(
        refused_status(vec![many]),
        "too_many_items | ha_rules[0].vmids: 100001 entries exceed the limit of 100000"
    );
    let names: Vec<String> = (0..10_001).map(|i| format!("n{i}")).collect();
    assert_eq!(
        refused_status(vec![rule(
            "wide",
            names.iter().map(String::as_str).collect()
        )]),
        "too_many_items | ha_rules[0].nodes: 10001 entries exceed the limit of 10000"
    );
    assert_eq!(
        refused_status(vec![rule("r", vec!["a"]); 10_001]),
        "too_many_items | ClusterStatus.ha_rules: 10001 entries exceed the limit of 10000"
    );
}

#[test]
fn a_history_point_using_more_memory_than_its_total_is_refused() {
    // Found by fuzzing: a total of a few bytes under a used amount made an infinite percentage.
    let mut st = state();
    let point = |used: f64, total: f64| pb::HistoryPoint {
        time_unix_ms: T0 - 60_000,
        cpu_fraction: Some(0.1),
        mem_used_bytes: Some(used),
        mem_total_bytes: Some(total),
        ..Default::default()
    };
    let history = pb::NodeHistory {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        node: "b".into(),
        collected_at_unix_ms: T0,
        day: vec![point(8e9, 64e9), point(8e9, 3e-300)],
        week: Vec::new(),
    };
    let e = st
        .ingest(
            &Subjects::default().history("c", "b"),
            &proxbalance_proto::encode(&history),
            Arrival::at(T0),
        )
        .unwrap_err();
    assert_eq!(
        format!("{} | {e}", e.label()),
        "used_exceeds_total | day[1].mem_used_bytes: 8000000000 bytes used exceed the total of 0"
    );
}

#[test]
fn an_unknown_schema_version_is_refused() {
    let mut s = snapshot("b", 1, &[200]);
    s.schema_version = 2;
    refused(
        &s,
        "schema_version | NodeSnapshot.schema_version: expected 1, found 2",
    );
}

#[test]
fn a_subject_naming_another_cluster_or_node_is_refused() {
    let subjects = Subjects::default();
    let s = snapshot("b", 1, &[200]);
    let mut st = state();
    assert_eq!(
        ingest_on(&mut st, &subjects.snapshot("c", "a"), &s).unwrap_err(),
        "subject_mismatch | node: subject says \"a\", payload says \"b\""
    );
    assert_eq!(
        ingest_on(&mut st, &subjects.snapshot("other", "b"), &s).unwrap_err(),
        "subject_mismatch | cluster: subject says \"other\", payload says \"c\""
    );
    assert!(st.cluster_names().is_empty());
}

#[test]
fn oversized_and_garbage_payloads_are_refused() {
    let mut st = state();
    let subject = Subjects::default().snapshot("c", "a");
    let big = vec![0u8; proxbalance_proto::codec::MAX_PAYLOAD_BYTES + 1];
    let e = st.ingest(&subject, &big, Arrival::at(T0)).unwrap_err();
    assert_eq!(e.label(), "too_large");
    let e = st
        .ingest(&subject, b"{\"not\": \"protobuf\"}", Arrival::at(T0))
        .unwrap_err();
    assert_eq!(e.label(), "decode");
    assert!(st.cluster_names().is_empty());
}
