//! Snapshot building from PVE JSON fixtures (shapes from real PVE 8/9 answers).

use std::collections::{BTreeMap, HashMap};

use proxbalance_collector::pve::types::{
    ClusterResource, ClusterStatusRow, GuestConfig, NodeStatus, RrdPoint,
};
use proxbalance_collector::snapshot::{
    CycleData, GuestConfigInfo, GuestRates, HaInfo, RateTracker, build_cluster_status,
    build_history, build_snapshots, parse_crs, parse_guest_config, sample_from_rrd,
    single_precision,
};
use proxbalance_proto::v1::{GuestKind, NodeStatus as Wire};

#[derive(serde::Deserialize)]
struct Envelope<T> {
    data: T,
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Envelope<T>>(&text).unwrap().data
}

fn unreachable_error() -> proxbalance_collector::pve::PveError {
    proxbalance_collector::pve::PveError::NodeUnreachable {
        endpoint: "https://10.0.0.1:8006".into(),
        path: "/nodes/pve2/status".into(),
        status: 595,
        reason: "No route to host".into(),
    }
}

#[test]
fn snapshots_from_fixtures() {
    let resources: Vec<ClusterResource> = fixture("resources_pve9.json");
    let status: Vec<ClusterStatusRow> = fixture("status.json");
    let ns: NodeStatus = fixture("node_status_pve8.json");
    let rrd: Vec<RrdPoint> = fixture("rrd_hour_pve9.json");
    let mut node_status = BTreeMap::new();
    node_status.insert("pve1".to_owned(), Ok(ns));
    node_status.insert("pve2".to_owned(), Err(unreachable_error()));
    let mut samples = BTreeMap::new();
    samples.insert("pve1".to_owned(), sample_from_rrd(&rrd).unwrap());
    let mut configs = HashMap::new();
    configs.insert(
        100,
        GuestConfigInfo {
            balloon_min_bytes: 2 << 30,
            storages: vec!["ceph-vm".into(), "local-lvm".into()],
            passthrough: false,
            unshared_bind_mount: false,
        },
    );
    let mut rates = HashMap::new();
    rates.insert(
        100,
        GuestRates {
            disk_read: 1.0,
            disk_write: 2.0,
            net_in: 3.0,
            net_out: 4.0,
        },
    );
    let data = CycleData {
        cluster: "prod",
        cycle: 9,
        now_unix_ms: 1_766_014_300_000,
        pve_version: "9.1",
        resources: &resources,
        status_rows: &status,
        ha: HaInfo::default(),
        node_status,
        samples,
        rates,
        configs,
        node_errors: BTreeMap::new(),
    };
    let snaps = build_snapshots(&data);
    let names: Vec<&str> = snaps.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(names, ["pve1", "pve2", "pve3"]);

    let p1 = &snaps[0];
    assert_eq!(p1.status, Wire::Online as i32);
    assert_eq!(p1.schema_version, 1);
    assert_eq!(p1.cycle, 9);
    assert_eq!(p1.cpu_threads, 32);
    assert_eq!(p1.mem_total_bytes, 68_719_476_736);
    // Running guests only: qemu/100 (4 GiB) + lxc/200 (1 GiB); stopped 101 does not count.
    assert_eq!(p1.committed_mem_bytes, 5 << 30);
    assert_eq!(p1.overcommit_ratio, (5u64 << 30) as f64 / 68_719_476_736.0);
    assert_eq!(p1.iowait_fraction, Some(0.000922842288903207));
    assert_eq!(p1.iowait_sampled_at_unix_ms, 1_766_014_200_000);
    assert_eq!(p1.pressure.unwrap().io_some, 1.115);
    assert_eq!(p1.load_average, vec![0.16, 0.10, 0.02]);
    assert_eq!(p1.ksm_shared_bytes, 4096);
    assert_eq!(p1.swap_total_bytes, 1_073_737_728);
    assert_eq!(p1.mem_available_bytes, 68_719_476_736 - 48_318_382_080);
    assert_eq!(
        p1.storages
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["ceph-vm", "local-lvm"]
    );
    assert!(p1.storages[0].shared && p1.storages[0].active);
    assert_eq!(
        p1.guests.iter().map(|g| g.vmid).collect::<Vec<_>>(),
        [100, 101, 200]
    );
    let g = &p1.guests[0];
    assert_eq!(g.kind, GuestKind::Qemu as i32);
    assert_eq!(g.tags, ["prod", "web"]);
    assert!(g.ha_managed);
    assert_eq!(g.balloon_min_bytes, 2 << 30);
    assert_eq!(g.local_storages, ["local-lvm"]);
    assert_eq!(g.disk_write_bps, 2.0);
    assert!(g.config_known);
    assert_eq!(p1.guests[1].lock, "backup");
    assert!(!p1.guests[1].config_known);
    assert_eq!(p1.guests[2].kind, GuestKind::Lxc as i32);
    assert_eq!(p1.error, "");

    let p2 = &snaps[1];
    assert_eq!(p2.status, Wire::Unreachable as i32);
    assert!(p2.maintenance);
    assert_eq!(p2.committed_mem_bytes, 64 << 30);
    assert_eq!(p2.overcommit_ratio, 2.0);
    assert_eq!(p2.iowait_fraction, None);
    assert_eq!(
        p2.error,
        "node unreachable (HTTP 595: No route to host) at https://10.0.0.1:8006 GET /nodes/pve2/status"
    );

    let p3 = &snaps[2];
    assert_eq!(p3.status, Wire::Offline as i32);
    assert_eq!(p3.guests.len(), 1);
    assert_eq!(p3.committed_mem_bytes, 0);

    let st = build_cluster_status(
        &data,
        &snaps,
        parse_crs(None),
        vec![],
        12,
        7,
        "https://a:8006",
    );
    assert!(st.quorate);
    assert_eq!(st.nodes.len(), 3);
    assert_eq!(st.nodes[1].ip, "10.0.0.2");
    assert_eq!(st.api_requests, 7);
}

#[test]
fn qemu_and_lxc_configs() {
    let q: GuestConfig = serde_json::from_str(
        r#"{"name":"web01","memory":"4096","balloon":2048,"cores":2,"scsi0":"local-lvm:vm-100-disk-0,iothread=1,size=32G",
            "ide2":"none,media=cdrom","efidisk0":"ceph-vm:vm-100-disk-1,efitype=4m,size=1M","net0":"virtio=BC:24,bridge=vmbr0",
            "unused0":"nfs:100/vm-100-disk-9.qcow2","usb0":"mapping=key","digest":"0c6f"}"#,
    )
    .unwrap();
    let info = parse_guest_config(GuestKind::Qemu, &q);
    assert_eq!(
        info,
        GuestConfigInfo {
            balloon_min_bytes: 2048 << 20,
            storages: vec!["ceph-vm".into(), "local-lvm".into(), "nfs".into()],
            passthrough: false,
            unshared_bind_mount: false
        }
    );
    let q: GuestConfig = serde_json::from_str(
        r#"{"hostpci0":"0000:01:00.0","sata1":"/dev/disk/by-id/ata-X","balloon":0}"#,
    )
    .unwrap();
    let info = parse_guest_config(GuestKind::Qemu, &q);
    assert!(info.passthrough);
    assert_eq!(info.balloon_min_bytes, 0);
    assert!(info.storages.is_empty());

    let l: GuestConfig = serde_json::from_str(
        r#"{"memory":512,"rootfs":"local-lvm:vm-201-disk-0,size=8G","mp0":"/srv/data,mp=/data","mp1":"/srv/shared,mp=/s,shared=1"}"#,
    )
    .unwrap();
    let info = parse_guest_config(GuestKind::Lxc, &l);
    assert_eq!(info.storages, ["local-lvm"]);
    assert!(info.unshared_bind_mount);
    let l: GuestConfig =
        serde_json::from_str(r#"{"rootfs":"local:201/x.raw","mp0":"/srv/shared,mp=/s,shared=1"}"#)
            .unwrap();
    assert!(!parse_guest_config(GuestKind::Lxc, &l).unshared_bind_mount);
}

#[test]
fn rates_from_counters() {
    let mut t = RateTracker::default();
    assert_eq!(t.observe(1, 0, 1000.0, 10_000), None);
    assert_eq!(t.observe(1, 0, 21_000.0, 20_000), Some(2000.0));
    // Same sample seen again keeps the rate.
    assert_eq!(t.observe(1, 0, 21_000.0, 20_000), Some(2000.0));
    // Counter reset (guest restart) gives no rate.
    assert_eq!(t.observe(1, 0, 10.0, 30_000), None);
    assert_eq!(t.observe(1, 0, 5010.0, 35_000), Some(1000.0));
}

#[test]
fn crs_object_and_property_string() {
    let o = parse_crs(Some(
        &serde_json::json!({"ha":"dynamic","ha-rebalance-on-start":1,"ha-auto-rebalance":1,"ha-auto-rebalance-threshold":30}),
    ));
    assert_eq!(o.ha, "dynamic");
    assert!(o.ha_rebalance_on_start && o.ha_auto_rebalance);
    assert_eq!(o.ha_auto_rebalance_threshold, Some(30.0));
    let s = parse_crs(Some(&serde_json::json!(
        "ha=static,ha-rebalance-on-start=1"
    )));
    assert_eq!(s.ha, "static");
    assert!(s.ha_rebalance_on_start && !s.ha_auto_rebalance);
}

#[test]
fn history_drops_time_only_points_and_sorts() {
    let rrd: Vec<RrdPoint> = fixture("rrd_hour_pve9.json");
    let mut rev = rrd.clone();
    rev.reverse();
    let h = build_history("prod", "pve1", 5, &rev, &[]);
    assert_eq!(h.day.len(), 2);
    assert_eq!(h.day[0].time_unix_ms, 1_766_014_140_000);
    // Values travel at single precision (7 significant digits).
    assert_eq!(h.day[0].iowait_fraction, Some(f64::from(0.10f32)));
    assert_eq!(h.day[1].load_average, Some(f64::from(3.44f32)));
    assert!((h.day[1].load_average.unwrap() - 3.44).abs() < 1e-6);
    assert!(h.week.is_empty());
}

#[test]
fn history_values_travel_at_single_precision() {
    assert_eq!(single_precision(0.1), f64::from(0.1f32));
    assert_eq!(single_precision(57_576_897_877.333_3), 57_576_898_560.0);
    // Out of single precision's range: kept, never turned into infinity.
    assert_eq!(single_precision(1e300), 1e300);
    assert!(single_precision(f64::NAN).is_nan());
    assert_eq!(single_precision(f64::INFINITY), f64::INFINITY);
}
