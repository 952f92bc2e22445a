//! Fuzzing of snapshot decoding and validation, driven by proptest so that it runs in CI with
//! the rest of the suite for a bounded number of cases (`PROPTEST_CASES` raises it for a
//! longer run). Three sources of input: random bytes, mutations of a valid encoding, and valid
//! snapshots whose fields are replaced by hostile values. For every input `State::ingest` must
//! return (never panic), and whatever it accepts must give a cluster view that the engine
//! accepts and plans: validation must refuse everything the engine would refuse later.

use proptest::prelude::*;
use proxbalance_proto::SCHEMA_VERSION;
use proxbalance_proto::subjects::Subjects;
use proxbalance_proto::v1 as pb;
use proxbalance_recommender::state::{Arrival, State, StateSettings};

const T0: i64 = 1_764_230_400_000;

fn state() -> State {
    State::new(StateSettings {
        staleness_ms: 60_000,
        ..StateSettings::default()
    })
}

fn valid(node: &str, vmid: u32) -> pb::NodeSnapshot {
    pb::NodeSnapshot {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        node: node.into(),
        cycle: 1,
        observed_at_unix_ms: T0,
        status: pb::NodeStatus::Online as i32,
        cpu_fraction: 0.3,
        cpu_threads: 16,
        iowait_fraction: Some(0.02),
        load_average: vec![1.0, 0.8, 0.5],
        mem_used_bytes: 16 << 30,
        mem_total_bytes: 64 << 30,
        mem_available_bytes: 40 << 30,
        committed_mem_bytes: 8 << 30,
        overcommit_ratio: 0.125,
        storages: vec![pb::Storage {
            id: "local".into(),
            active: true,
            total_bytes: 1 << 40,
            used_bytes: 1 << 38,
            ..Default::default()
        }],
        guests: vec![pb::Guest {
            vmid,
            kind: pb::GuestKind::Qemu as i32,
            name: "web".into(),
            status: "running".into(),
            cpu_fraction: 0.5,
            vcpus: 4.0,
            mem_used_bytes: 4 << 30,
            mem_max_bytes: 8 << 30,
            disk_read_bps: 1e6,
            tags: vec!["prod".into()],
            storages: vec!["local".into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Ingests `payload` on node `b`'s subject next to a genuine node `a`; whatever is accepted
/// must plan.
fn check(payload: &[u8]) -> Result<(), TestCaseError> {
    let mut st = state();
    let subjects = Subjects::default();
    st.ingest(
        &subjects.snapshot("c", "a"),
        &proxbalance_proto::encode(&valid("a", 100)),
        Arrival::at(T0),
    )
    .map_err(|e| TestCaseError::fail(format!("genuine snapshot refused: {e}")))?;
    if st
        .ingest(&subjects.snapshot("c", "b"), payload, Arrival::at(T0))
        .is_ok()
    {
        let view = st.view("c", T0).expect("a view");
        let cluster = view
            .validate()
            .map_err(|e| TestCaseError::fail(format!("accepted snapshot, refused view: {e}")))?;
        let _ = proxbalance_engine::plan(&cluster, None);
    }
    Ok(())
}

/// A cluster status of nodes `a` and `b` that lists both histories.
fn valid_status() -> pb::ClusterStatus {
    pb::ClusterStatus {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        cycle: 1,
        collected_at_unix_ms: T0,
        nodes: ["a", "b"]
            .map(|n| pb::ClusterNode {
                node: n.into(),
                status: pb::NodeStatus::Online as i32,
                ..Default::default()
            })
            .into(),
        quorate: true,
        histories: vec!["a".into(), "b".into()],
        ..Default::default()
    }
}

/// A day of history of node `b`.
fn valid_history() -> pb::NodeHistory {
    pb::NodeHistory {
        schema_version: SCHEMA_VERSION,
        cluster: "c".into(),
        node: "b".into(),
        collected_at_unix_ms: T0,
        day: (1..=48)
            .map(|i| pb::HistoryPoint {
                time_unix_ms: T0 - i * 1_800_000,
                cpu_fraction: Some(0.2),
                iowait_fraction: Some(0.01),
                mem_used_bytes: Some(16.0 * (1u64 << 30) as f64),
                mem_total_bytes: Some(64.0 * (1u64 << 30) as f64),
                load_average: Some(1.5),
            })
            .collect(),
        week: Vec::new(),
    }
}

/// Ingests `payload` on `subject` (a status or a history), then a genuine cycle of `a` and `b`:
/// whatever the first message did to the state, the cycle is applied, evaluated and planned.
fn check_after(subject: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    let mut st = state();
    let subjects = Subjects::default();
    let _ = st.ingest(subject, payload, Arrival::at(T0));
    for (node, vmid) in [("a", 100), ("b", 200)] {
        st.ingest(
            &subjects.snapshot("c", node),
            &proxbalance_proto::encode(&valid(node, vmid)),
            Arrival::at(T0),
        )
        .map_err(|e| TestCaseError::fail(format!("genuine snapshot of {node} refused: {e}")))?;
    }
    let _ = st.evaluate_overload("c");
    let view = st.view("c", T0).expect("a view");
    let cluster = view
        .validate()
        .map_err(|e| TestCaseError::fail(format!("refused view: {e}")))?;
    let _ = proxbalance_engine::plan(&cluster, None);
    Ok(())
}

/// A hostile or ordinary float.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(1e300),
        0.0f64..2.0,
        any::<f64>(),
    ]
}

/// A hostile or ordinary size.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1u64 << 63),
        Just((1u64 << 60) + 1),
        0u64..(1 << 40),
        any::<u64>(),
    ]
}

/// A hostile or ordinary name.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("a.b*c>d%".to_owned()),
        Just("x".repeat(300)),
        "[a-z0-9-]{1,12}",
        ".{0,40}",
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Float(usize, f64),
    Size(usize, u64),
    Name(usize, String),
    Vmid(u32),
    Kind(i32),
    Status(i32),
    Time(i64),
    Threads(u32),
    ExtraGuest(u32),
    NoIowait,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..14, float()).prop_map(|(i, v)| Edit::Float(i, v)),
        (0usize..11, size()).prop_map(|(i, v)| Edit::Size(i, v)),
        (0usize..6, name()).prop_map(|(i, v)| Edit::Name(i, v)),
        prop_oneof![Just(0u32), Just(100u32), any::<u32>()].prop_map(Edit::Vmid),
        prop_oneof![Just(-1i32), 0i32..4, any::<i32>()].prop_map(Edit::Kind),
        prop_oneof![Just(-1i32), 0i32..6, any::<i32>()].prop_map(Edit::Status),
        prop_oneof![
            Just(0i64),
            Just(-1i64),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(Edit::Time),
        prop_oneof![Just(0u32), Just(u32::MAX), 1u32..512].prop_map(Edit::Threads),
        prop_oneof![Just(100u32), Just(200u32), 1u32..1000].prop_map(Edit::ExtraGuest),
        Just(Edit::NoIowait),
    ]
}

fn apply(s: &mut pb::NodeSnapshot, e: Edit) {
    let g = &mut s.guests[0];
    match e {
        Edit::Float(i, v) => match i {
            0 => s.cpu_fraction = v,
            1 => s.iowait_fraction = Some(v),
            2 => s.load_average[0] = v,
            3 => s.overcommit_ratio = v,
            4 => g.cpu_fraction = v,
            5 => g.vcpus = v,
            6 => g.disk_read_bps = v,
            7 => g.disk_write_bps = v,
            8 => g.net_in_bps = v,
            9 => g.net_out_bps = v,
            10 => {
                s.pressure = Some(pb::Pressure {
                    cpu_some: v,
                    ..Default::default()
                })
            }
            11 => {
                s.pressure = Some(pb::Pressure {
                    memory_full: v,
                    ..Default::default()
                })
            }
            12 => s.load_average.push(v),
            _ => s.load_average = vec![v; 3],
        },
        Edit::Size(i, v) => match i {
            0 => s.mem_used_bytes = v,
            1 => s.mem_total_bytes = v,
            2 => s.mem_available_bytes = v,
            3 => s.committed_mem_bytes = v,
            4 => s.swap_used_bytes = v,
            5 => s.swap_total_bytes = v,
            6 => s.storages[0].total_bytes = v,
            7 => s.storages[0].used_bytes = v,
            8 => g.mem_used_bytes = v,
            9 => g.mem_max_bytes = v,
            _ => g.balloon_min_bytes = v,
        },
        Edit::Name(i, v) => match i {
            0 => g.name = v,
            1 => g.status = v,
            2 => g.tags.push(v),
            3 => g.storages.push(v),
            4 => s.storages[0].id = v,
            _ => g.lock = v,
        },
        Edit::Vmid(v) => g.vmid = v,
        Edit::Kind(v) => g.kind = v,
        Edit::Status(v) => s.status = v,
        Edit::Time(v) => s.observed_at_unix_ms = v,
        Edit::Threads(v) => s.cpu_threads = v,
        Edit::ExtraGuest(v) => {
            let mut extra = s.guests[0].clone();
            extra.vmid = v;
            s.guests.push(extra);
        }
        Edit::NoIowait => s.iowait_fraction = None,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize, len: usize| i % len;
    match m {
        Mutation::Flip(i, b) => {
            let i = at(*i, bytes.len());
            bytes[i] ^= b;
        }
        Mutation::Insert(i, b) => {
            let i = at(*i, bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Mutation::Remove(i) => {
            let i = at(*i, bytes.len());
            bytes.remove(i);
        }
        Mutation::Truncate(i) => {
            let i = at(*i, bytes.len());
            bytes.truncate(i);
        }
        Mutation::Splice(i, b) => {
            let i = at(*i, bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(mutations in proptest::collection::vec(mutation(), 1..8)) {
        let mut bytes = proxbalance_proto::encode(&valid("b", 200));
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check(&bytes)?;
    }

    #[test]
    fn mutated_statuses_and_histories_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..8),
        history in any::<bool>(),
    ) {
        let subjects = Subjects::default();
        let (subject, mut bytes) = if history {
            (subjects.history("c", "b"), proxbalance_proto::encode(&valid_history()))
        } else {
            (subjects.cluster_status("c"), proxbalance_proto::encode(&valid_status()))
        };
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_after(&subject, &bytes)?;
    }

    #[test]
    fn hostile_fields_are_refused_or_planned(edits in proptest::collection::vec(edit(), 1..6)) {
        let mut s = valid("b", 200);
        for e in edits {
            apply(&mut s, e);
        }
        check(&proxbalance_proto::encode(&s))?;
    }
}
