//! The deployment files of `deploy/` that cannot run here (no container engine, no systemd as
//! PID 1, no Kubernetes) are parsed and cross-checked instead:
//!
//! - every binary they start is a binary of the workspace and is installed by the Dockerfile;
//! - every configuration they hand a service is accepted by that service's own loader, and
//!   every file path and port that configuration names is provided by the manifest around it
//!   (mounts, secrets, container ports, probes, Services);
//! - `deploy/collector.example.toml` documents every key of the collector's configuration, with
//!   its default and environment variable;
//! - the NATS chart values grant exactly the permissions of `deploy/nats-server.conf`;
//! - every metric the Grafana dashboard queries is registered by the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proxbalance_collector::config::{ClusterConfig, Config as CollectorConfig, NatsConfig};
use serde_yaml::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v: Yaml = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // `<<: *anchor` merge keys (docker-compose.yml uses them).
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v
        })
        .collect()
}

fn str_of<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v:?}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| str_of(x, "list item").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `host:port` → port.
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected host:port, found {listen:?}"))
}

/// The binaries the workspace builds: `[[bin]]` names, and the package name of a member with
/// `src/main.rs`.
fn workspace_binaries() -> BTreeSet<String> {
    let manifest: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut bins = BTreeSet::new();
    for m in members {
        let dir = root().join(m.as_str().unwrap());
        let pkg: toml::Table = toml::from_str(&read(&dir.join("Cargo.toml"))).unwrap();
        if let Some(list) = pkg.get("bin").and_then(|b| b.as_array()) {
            for b in list {
                bins.insert(b["name"].as_str().unwrap().to_owned());
            }
        } else if dir.join("src/main.rs").exists() {
            bins.insert(pkg["package"]["name"].as_str().unwrap().to_owned());
        }
    }
    bins
}

fn workspace_packages() -> BTreeSet<String> {
    let manifest: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let pkg: toml::Table =
                toml::from_str(&read(&root().join(m.as_str().unwrap()).join("Cargo.toml")))
                    .unwrap();
            pkg["package"]["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// One stage of the Dockerfile: its name, what it starts `FROM`, and its lines.
struct Stage {
    name: String,
    from: String,
    lines: Vec<String>,
}

/// The Dockerfile's stages, in order (a `\`-continued instruction is one line).
fn stages() -> Vec<Stage> {
    let text = read(&deploy().join("Dockerfile"));
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", from, "AS", name] => stages.push(Stage {
                name: (*name).to_owned(),
                from: (*from).to_owned(),
                lines: Vec::new(),
            }),
            ["FROM", ..] => panic!("every stage is named: {line}"),
            _ => {
                if let Some(stage) = stages.last_mut() {
                    stage.lines.push(line.to_owned());
                }
            }
        }
    }
    stages
}

/// What an image (a stage, with the stages it starts from) holds: binaries in /usr/local/bin,
/// files in /etc/proxbalance (installed path → source in the repository), its user and command.
#[derive(Debug, Default)]
struct Image {
    binaries: BTreeSet<String>,
    etc_files: BTreeMap<String, PathBuf>,
    user: String,
    cmd: Vec<String>,
}

fn image_of(stage: &str) -> Image {
    let all = stages();
    let find = |name: &str| all.iter().find(|s| s.name == name);
    let s = find(stage).unwrap_or_else(|| panic!("no stage {stage}"));
    let mut img = match find(&s.from) {
        Some(parent) => image_of(&parent.name),
        None => Image::default(),
    };
    for line in &s.lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["COPY", from, src, "/usr/local/bin/"] if from.starts_with("--from=") => {
                // The binaries the source stage itself built and installed into `src`.
                let source = find(&from["--from=".len()..]).expect("COPY --from a stage");
                for l in &source.lines {
                    if l.contains(src.trim_end_matches('/')) {
                        img.binaries.extend(
                            l.split_whitespace()
                                .filter_map(|w| w.strip_prefix("target/release/"))
                                .map(str::to_owned),
                        );
                    }
                }
            }
            ["COPY", rest @ ..] if rest.last() == Some(&"/etc/proxbalance/") => {
                for src in &rest[..rest.len() - 1] {
                    let path = root().join(src);
                    assert!(path.is_file(), "Dockerfile copies {src}");
                    img.etc_files.insert(
                        format!(
                            "/etc/proxbalance/{}",
                            path.file_name().unwrap().to_str().unwrap()
                        ),
                        path,
                    );
                }
            }
            ["USER", u] => img.user = (*u).to_owned(),
            ["CMD", ..] => {
                img.cmd = serde_json::from_str(line.trim_start_matches("CMD").trim())
                    .expect("CMD in exec form")
            }
            _ => {}
        }
    }
    img
}

/// The production image: the Dockerfile's default target, its last stage.
fn image() -> Image {
    let last = stages().pop().expect("stages");
    assert_eq!(last.name, "production");
    image_of(&last.name)
}

#[test]
fn dockerfile_builds_and_installs_the_workspace_binaries() {
    let text = read(&deploy().join("Dockerfile"));
    let bins = workspace_binaries();
    let names: Vec<String> = stages().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["builder", "pvesim-builder", "base", "demo", "production"]
    );
    // The production image has the services and the CLI, not the simulator.
    let img = image();
    let production: BTreeSet<String> = [
        "proxbalance-collector",
        "proxbalance-recommender",
        "proxbalance",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(img.binaries, production);
    // The demo image adds it.
    let demo = image_of("demo");
    let mut with_pvesim = production.clone();
    with_pvesim.insert("pvesim".to_owned());
    assert_eq!(demo.binaries, with_pvesim);
    for b in &demo.binaries {
        assert!(
            bins.contains(b),
            "Dockerfile installs {b}, not a workspace binary: {bins:?}"
        );
    }
    // Every -p names a workspace package.
    let packages = workspace_packages();
    let words: Vec<&str> = text.split_whitespace().collect();
    let built: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        built,
        ["proxbalance-collector", "proxbalance-recommender", "pvesim"]
    );
    for p in built {
        assert!(packages.contains(p), "{p}");
    }
    // Locked release builds in a Rust image, non-root run on Debian.
    assert!(text.contains("FROM rust:1.95-slim-bookworm AS builder"));
    assert_eq!(text.matches("cargo build --release --locked").count(), 2);
    assert!(text.contains("FROM debian:bookworm-slim AS base"));
    assert_eq!(
        (img.user.as_str(), demo.user.as_str()),
        ("10001:10001", "10001:10001")
    );
    let files = |img: &Image| img.etc_files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        files(&img),
        [
            "/etc/proxbalance/collector.example.toml",
            "/etc/proxbalance/recommender.toml"
        ]
    );
    assert_eq!(
        files(&demo),
        [
            "/etc/proxbalance/collector.example.toml",
            "/etc/proxbalance/demo-scenario.toml",
            "/etc/proxbalance/recommender.toml"
        ]
    );
}

/// `.dockerignore` keeps build output and history out of the build context, but nothing the
/// build needs: every workspace member and every file the Dockerfile copies stays in.
#[test]
fn dockerignore_keeps_out_the_build_output_but_nothing_the_build_needs() {
    let ignore = read(&root().join(".dockerignore"));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/"] {
        assert!(patterns.contains(&must), "{must} is not ignored");
    }
    // `dir/`, `**/name`, `*.ext`, `**/*.ext` and plain names, as used there.
    let ignored = |path: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_end_matches('/');
            let file = path.rsplit('/').next().unwrap_or(path);
            let matches_name = |pat: &str, name: &str| match pat.strip_prefix('*') {
                Some(suffix) => name.ends_with(suffix),
                None => pat == name,
            };
            match p.strip_prefix("**/") {
                Some(rest) => path.split('/').any(|c| matches_name(rest, c)),
                None if p.starts_with('*') => matches_name(p, file),
                None => path == p || path.starts_with(&format!("{p}/")),
            }
        })
    };
    assert!(ignored("target/release/proxbalance"));
    assert!(ignored("tests/e2e/target/x"));
    let manifest: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let mut needed: Vec<String> = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/Cargo.toml", m.as_str().unwrap()))
        .collect();
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            "proto/proxbalance/v1/snapshot.proto",
        ]
        .map(str::to_owned),
    );
    for img in [image(), image_of("demo")] {
        for src in img.etc_files.values() {
            needed.push(
                src.strip_prefix(root())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    for path in &needed {
        assert!(root().join(path).exists(), "{path}");
        assert!(!ignored(path), "{path} is needed by the build but ignored");
    }
}

/// The production image's default command starts the recommender: the configuration file it
/// names is in the image, the recommender's loader accepts it, and with what a container gets
/// from outside (NATS at the configured address, here a test server; the bearer token mounted
/// as a secret) the service starts, keeps health open and wants the token for everything else.
#[tokio::test]
async fn the_image_default_command_starts_the_recommender() {
    use proxbalance_proto::v1::recommender_client::RecommenderClient;
    let img = image();
    assert_eq!(
        img.cmd,
        [
            "proxbalance-recommender",
            "--config",
            "/etc/proxbalance/recommender.toml"
        ]
    );
    assert!(img.binaries.contains(&img.cmd[0]));
    let source = &img.etc_files[&img.cmd[2]];
    let mut cfg = proxbalance_recommender::config::Config::load(Some(source))
        .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    // Every interface of the container, so never without a token.
    assert_eq!(cfg.grpc.listen, "0.0.0.0:50051");
    let token_path = cfg.grpc.token_file.clone().expect("grpc.token_file");
    assert!(
        token_path.starts_with("/run/secrets"),
        "{}",
        token_path.display()
    );

    proxbalance_runtime::install_crypto_provider();
    let nats = proxbalance_e2e::NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("grpc-token");
    std::fs::write(&token, "image-default-token\n").unwrap();
    cfg.nats.url = nats.url();
    cfg.grpc.listen = "127.0.0.1:0".into();
    cfg.grpc.token_file = Some(token);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = proxbalance_recommender::start(cfg, shutdown.clone())
        .await
        .expect("the default configuration starts");
    let url = format!("http://{}", running.grpc_addr());
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "{health:?}");
    let mut client = RecommenderClient::new(channel);
    let refused = client
        .list_clusters(proxbalance_proto::v1::ListClustersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(proxbalance_proto::v1::ListClustersRequest::default());
    request.metadata_mut().insert(
        "authorization",
        "Bearer image-default-token".parse().unwrap(),
    );
    client
        .list_clusters(request)
        .await
        .expect("served with the token");
    shutdown.cancel();
    running.wait().await.unwrap();
}

// ---------------------------------------------------------------- collector configuration

/// The field names of `pub struct NAME` in `collector/src/config.rs`.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ")?;
            let (field, _) = l.split_once(':')?;
            Some(field.trim().to_owned())
        })
        .collect()
}

/// The connection and login keys every `[nats]` table starts with, as the `nats_table!` macro
/// of `runtime/src/lib.rs` declares them.
fn shared_nats_keys() -> BTreeSet<String> {
    let source = read(&root().join("runtime/src/lib.rs"));
    let start = source
        .find("$vis struct $name {")
        .expect("nats_table! body");
    let body = &source[start..];
    let body = &body[..body
        .find("$( $(#[$fmeta])* pub $field")
        .expect("end of the shared keys")];
    let keys: BTreeSet<String> = body
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ")?;
            Some(l.split_once(':')?.0.trim().to_owned())
        })
        .collect();
    assert!(
        keys.contains("url") && keys.contains("tls_required"),
        "{keys:?}"
    );
    keys
}

/// The keys of a configuration struct, with the shared NATS keys for a `[nats]` table.
fn table_keys(source: &str, strukt: &str, header: &str) -> BTreeSet<String> {
    let mut fields: BTreeSet<String> = struct_fields(source, strukt).into_iter().collect();
    assert!(!fields.is_empty(), "{strukt}");
    if header == "[nats]" {
        fields.extend(shared_nats_keys());
    }
    fields
}

/// Keys of a TOML table section in the example, whether set or shown commented out.
fn documented_keys(example: &str, header: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut inside = false;
    for line in example.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == header;
            continue;
        }
        if !inside {
            continue;
        }
        let t = t.trim_start_matches('#').trim();
        if let Some((k, _)) = t.split_once(" = ")
            && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(k.to_owned());
        }
    }
    keys
}

/// The `[telemetry]` table of an example names every key of the runtime's `TelemetryConfig`,
/// each with its environment variable, and shows the defaults.
fn telemetry_table_documents_every_key(example: &str, env_prefix: &str) {
    let source = read(&root().join("runtime/src/telemetry.rs"));
    let fields: BTreeSet<String> = struct_fields(&source, "TelemetryConfig")
        .into_iter()
        .collect();
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert_eq!(documented_keys(example, "[telemetry]"), fields);
    for f in &fields {
        let var = format!("# env: {env_prefix}TELEMETRY__{}", f.to_ascii_uppercase());
        assert!(example.contains(&var), "missing {var:?}");
    }
    let table: toml::Table = toml::from_str(example).unwrap();
    let shown: proxbalance_runtime::TelemetryConfig =
        table["telemetry"].clone().try_into().unwrap();
    assert_eq!(shown, proxbalance_runtime::TelemetryConfig::default());
}

#[test]
fn collector_example_is_accepted_and_documents_every_key() {
    let path = deploy().join("collector.example.toml");
    let example = read(&path);
    // The service's own loader (file + environment), as `--config` uses it.
    let cfg = CollectorConfig::load(Some(&path)).unwrap();
    assert_eq!(
        cfg.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["prod", "lab"]
    );

    // Every key of every table appears (set, or commented out for mutually exclusive ones).
    let source = read(&root().join("collector/src/config.rs"));
    for (strukt, header) in [
        ("NatsConfig", "[nats]"),
        ("MetricsConfig", "[metrics]"),
        ("ClusterConfig", "[[clusters]]"),
    ] {
        let fields = table_keys(&source, strukt, header);
        assert_eq!(documented_keys(&example, header), fields, "{header}");
    }
    let top: BTreeSet<String> = struct_fields(&source, "Config").into_iter().collect();
    assert_eq!(
        top,
        ["nats", "metrics", "clusters", "telemetry"]
            .map(str::to_owned)
            .into()
    );
    telemetry_table_documents_every_key(&example, proxbalance_collector::config::ENV_PREFIX);

    // Every [nats] and [metrics] key names its environment variable.
    for (strukt, table) in [("NatsConfig", "NATS"), ("MetricsConfig", "METRICS")] {
        for f in struct_fields(&source, strukt) {
            let var = format!(
                "# env: {}{table}__{}",
                proxbalance_collector::config::ENV_PREFIX,
                f.to_ascii_uppercase()
            );
            assert!(example.contains(&var), "missing {var:?}");
        }
    }

    // The values shown are the defaults (except the metrics listener and the cluster's own).
    let d = NatsConfig::default();
    let n = &cfg.nats;
    assert_eq!(
        (
            &n.url,
            &n.subject_prefix,
            n.publish_timeout_ms,
            n.connect_timeout_ms,
            &n.credentials_file,
        ),
        (
            &d.url,
            &d.subject_prefix,
            d.publish_timeout_ms,
            d.connect_timeout_ms,
            &d.credentials_file,
        )
    );
    assert_eq!(
        (
            n.snapshots_max_age_s,
            n.snapshots_max_bytes,
            n.history_max_age_s,
            n.replicas,
            n.duplicate_window_s
        ),
        (
            d.snapshots_max_age_s,
            d.snapshots_max_bytes,
            d.history_max_age_s,
            d.replicas,
            d.duplicate_window_s
        )
    );
    let def = ClusterConfig::new("x", vec![], "a@b!c");
    for c in &cfg.clusters {
        assert_eq!(
            (
                c.interval_s,
                c.request_timeout_ms,
                c.connect_timeout_ms,
                c.max_concurrency,
                c.guest_config_ttl_s,
                c.guest_config_budget,
                c.rrd_refresh_s,
                c.history_interval_s,
                c.use_metrics_export,
                c.insecure_skip_verify,
            ),
            (
                def.interval_s,
                def.request_timeout_ms,
                def.connect_timeout_ms,
                def.max_concurrency,
                def.guest_config_ttl_s,
                def.guest_config_budget,
                def.rrd_refresh_s,
                def.history_interval_s,
                def.use_metrics_export,
                def.insecure_skip_verify,
            ),
            "{}",
            c.name
        );
    }
    assert_eq!(cfg.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
}

// ---------------------------------------------------------------- systemd

fn unit(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = read(&deploy().join("systemd").join(name));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with('[') || t.is_empty() {
            continue;
        }
        let (k, v) = t.split_once('=').unwrap_or_else(|| panic!("{name}: {t}"));
        out.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    out
}

#[test]
fn systemd_units_start_the_binaries_sandboxed_with_their_credentials() {
    let bins = workspace_binaries();
    for (name, bin, config) in [
        (
            "proxbalance-collector.service",
            "proxbalance-collector",
            "/etc/proxbalance/collector.toml",
        ),
        (
            "proxbalance-recommender.service",
            "proxbalance-recommender",
            "/etc/proxbalance/recommender.toml",
        ),
    ] {
        let u = unit(name);
        let one = |k: &str| -> &str {
            let v = u.get(k).unwrap_or_else(|| panic!("{name}: no {k}="));
            assert_eq!(v.len(), 1, "{name}: {k}");
            &v[0]
        };
        assert_eq!(
            one("ExecStart"),
            format!("/usr/local/bin/{bin} --config {config}")
        );
        assert!(bins.contains(bin), "{bin}");
        for (k, v) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("Restart", "on-failure"),
            ("Type", "exec"),
        ] {
            assert_eq!(one(k), v, "{name}: {k}");
        }
        assert_eq!(u["SystemCallFilter"][0], "@system-service", "{name}");
        assert!(one("TimeoutStopSec").ends_with('s'), "{name}");
    }
    // The collector's secrets arrive where the example configuration reads them.
    let u = unit("proxbalance-collector.service");
    let cred = &u["LoadCredential"];
    assert_eq!(
        cred,
        &vec![
            "pve-token:/etc/proxbalance/credentials/collector-pve-token".to_owned(),
            "nats-password:/etc/proxbalance/credentials/collector-nats-password".to_owned()
        ]
    );
    let cfg = CollectorConfig::load(Some(&deploy().join("collector.example.toml"))).unwrap();
    assert_eq!(
        cfg.clusters[0].token_secret_file.as_deref(),
        Some(Path::new(
            "/run/credentials/proxbalance-collector.service/pve-token"
        ))
    );
    // … and it logs in to deploy/nats-server.conf as `collector` with the credential.
    assert_eq!(cfg.nats.user.as_deref(), Some("collector"));
    assert_eq!(
        cfg.nats.password_file.as_deref(),
        Some(Path::new(
            "/run/credentials/proxbalance-collector.service/nats-password"
        ))
    );
    let u = unit("proxbalance-recommender.service");
    assert_eq!(
        u["LoadCredential"],
        ["nats-password:/etc/proxbalance/credentials/recommender-nats-password"]
    );
    let rcfg = proxbalance_recommender::config::Config::from_toml(&read(
        &deploy().join("recommender.example.toml"),
    ))
    .unwrap();
    assert_eq!(rcfg.nats.user.as_deref(), Some("recommender"));
    assert_eq!(
        rcfg.nats.password_file.as_deref(),
        Some(Path::new(
            "/run/credentials/proxbalance-recommender.service/nats-password"
        ))
    );
}

// ---------------------------------------------------------------- recommender configuration

/// A recommender configuration, through the recommender's own loader: its gRPC and metrics ports.
fn recommender_ports(text: &str, what: &str) -> (u16, u16) {
    let cfg = proxbalance_recommender::config::Config::from_toml(text)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let metrics = cfg
        .metrics
        .listen
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: metrics.listen"));
    (port_of(&cfg.grpc.listen), port_of(metrics))
}

#[test]
fn recommender_example_is_accepted_by_the_recommender() {
    let path = deploy().join("recommender.example.toml");
    if !path.exists() {
        // Written with the recommender service; the manifests' configurations are checked
        // with the same loader below.
        return;
    }
    let cfg = proxbalance_recommender::config::Config::load(Some(&path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The port every deployment file uses for gRPC.
    assert_eq!(port_of(&cfg.grpc.listen), 50051);
    // Every key of the [nats] and [grpc] tables appears (set, or commented out).
    let source = read(&root().join("recommender/src/config.rs"));
    let example = read(&path);
    for (strukt, header) in [
        ("NatsConfig", "[nats]"),
        ("GrpcConfig", "[grpc]"),
        ("HttpConfig", "[http]"),
    ] {
        let fields = table_keys(&source, strukt, header);
        assert_eq!(documented_keys(&example, header), fields, "{header}");
    }
    telemetry_table_documents_every_key(&example, proxbalance_recommender::config::ENV_PREFIX);
    // The systemd unit starts the recommender with this file's installed path.
    let u = unit("proxbalance-recommender.service");
    assert_eq!(
        u["ExecStart"],
        ["/usr/local/bin/proxbalance-recommender --config /etc/proxbalance/recommender.toml"]
    );
}

// ---------------------------------------------------------------- compose

fn compose() -> Yaml {
    yaml_docs(&deploy().join("docker-compose.yml")).remove(0)
}

fn command_of(service: &Yaml) -> Vec<String> {
    let mut cmd = strings(&service["entrypoint"]);
    cmd.extend(strings(&service["command"]));
    cmd
}

fn arg_after(cmd: &[String], flag: &str) -> Option<String> {
    cmd.iter()
        .position(|a| a == flag)
        .map(|i| cmd[i + 1].clone())
}

/// `host:container[:ro]` mounts of a compose service, as container path → host side.
fn compose_mounts(service: &Yaml) -> BTreeMap<String, String> {
    strings(&service["volumes"])
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (parts[1].to_owned(), parts[0].to_owned())
        })
        .collect()
}

#[test]
fn compose_runs_the_demo_with_valid_configurations() {
    let doc = compose();
    let img = image();
    let services = doc["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["nats", "pvesim", "collector", "recommender", "cli"]);

    // NATS with JetStream on 4222.
    let nats = &doc["services"]["nats"];
    let nats_cmd = command_of(nats);
    assert!(nats_cmd.contains(&"--jetstream".to_owned()), "{nats_cmd:?}");
    assert!(strings(&nats["ports"]).contains(&"127.0.0.1:4222:4222".to_owned()));
    // … running deploy/nats-server.conf, so both services must log in.
    let nats_conf = arg_after(&nats_cmd, "-c").unwrap();
    assert_eq!(compose_mounts(nats)[&nats_conf], "./nats-server.conf");
    let nats_password = |var: &str| str_of(&nats["environment"][var], var).to_owned();

    // Every other service runs a binary of its image: the production image, or the demo
    // image (production + pvesim) for the simulator.
    let demo = image_of("demo");
    for (name, image, target) in [
        ("pvesim", "proxbalance-demo:dev", "demo"),
        ("collector", "proxbalance:dev", "production"),
        ("recommender", "proxbalance:dev", "production"),
        ("cli", "proxbalance:dev", "production"),
    ] {
        let svc = &doc["services"][name];
        assert_eq!(str_of(&svc["image"], name), image);
        assert_eq!(
            str_of(&svc["build"]["dockerfile"], name),
            "deploy/Dockerfile"
        );
        assert_eq!(str_of(&svc["build"]["target"], name), target);
        let cmd = command_of(svc);
        let binaries = if target == "demo" {
            &demo.binaries
        } else {
            &img.binaries
        };
        assert!(binaries.contains(&cmd[0]), "{name}: {cmd:?}");
    }
    // Published ports listen on the host's loopback only (the demo's gRPC takes no token).
    for (name, svc) in services {
        for port in strings(&svc["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name:?}: {port}");
        }
    }

    // pvesim plays the demo scenario the image ships, and writes its CA to a shared volume.
    let pvesim = &doc["services"]["pvesim"];
    let cmd = command_of(pvesim);
    assert_eq!(
        cmd[..3],
        [
            "pvesim",
            "--scenario",
            "/etc/proxbalance/demo-scenario.toml"
        ]
    );
    assert!(
        demo.etc_files
            .contains_key("/etc/proxbalance/demo-scenario.toml")
    );
    let ca_out = arg_after(&cmd, "--ca-out").unwrap();
    let pvesim_mounts = compose_mounts(pvesim);
    let ca_dir = Path::new(&ca_out).parent().unwrap().to_str().unwrap();
    let ca_volume = &pvesim_mounts[ca_dir];
    let pvesim_port = port_of(&arg_after(&cmd, "--listen").unwrap());
    let aliases = strings(&pvesim["networks"]["default"]["aliases"]);

    // The collector: its configuration file is mounted and accepted by its loader; the CA,
    // endpoint, token, NATS URL and metrics port it names are all provided.
    let collector = &doc["services"]["collector"];
    let cmd = command_of(collector);
    assert_eq!(cmd[0], "proxbalance-collector");
    let config_path = arg_after(&cmd, "--config").unwrap();
    let mounts = compose_mounts(collector);
    let host_file = deploy().join(&mounts[&config_path]);
    let cfg = CollectorConfig::from_toml(&read(&host_file)).unwrap();
    let cluster = &cfg.clusters[0];
    let ca_file = cluster.ca_file.as_ref().unwrap();
    assert_eq!(ca_file, Path::new(&ca_out));
    assert_eq!(&mounts[ca_dir], ca_volume);
    assert_eq!(cluster.endpoints.len(), 1);
    let endpoint = &cluster.endpoints[0];
    let host = endpoint
        .strip_prefix("https://")
        .and_then(|h| h.split_once(':'))
        .unwrap();
    assert!(aliases.contains(&host.0.to_owned()), "{endpoint}");
    assert_eq!(host.1.parse::<u16>().unwrap(), pvesim_port);
    // The demo scenario defines the token and secret the collector uses.
    let scenario: toml::Table =
        toml::from_str(&read(&deploy().join("demo-scenario.toml"))).unwrap();
    let token = scenario["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"].as_str() == Some(cluster.token_id.as_str()))
        .unwrap();
    let env_var = cluster.token_secret_env.as_deref().unwrap();
    assert_eq!(
        collector["environment"][env_var].as_str(),
        token["secret"].as_str()
    );
    assert_eq!(cfg.nats.url, "nats://nats:4222");
    assert_eq!(cfg.nats.user.as_deref(), Some("collector"));
    let var = cfg.nats.password_env.as_deref().unwrap();
    assert_eq!(
        str_of(&collector["environment"][var], var),
        nats_password("COLLECTOR_PASSWORD")
    );
    let metrics_port = port_of(cfg.metrics.listen.as_deref().unwrap());
    assert!(
        strings(&collector["ports"]).contains(&format!("127.0.0.1:{metrics_port}:{metrics_port}"))
    );

    // The recommender: its configuration is mounted; its ports are published.
    let recommender = &doc["services"]["recommender"];
    let cmd = command_of(recommender);
    assert_eq!(cmd[0], "proxbalance-recommender");
    let config_path = arg_after(&cmd, "--config").unwrap();
    let host_file = deploy().join(&compose_mounts(recommender)[&config_path]);
    let text = read(&host_file);
    let (grpc, metrics) = recommender_ports(&text, "compose/recommender.toml");
    assert_eq!((grpc, metrics), (50051, 9465));
    let cfg = proxbalance_recommender::config::Config::from_toml(&text).unwrap();
    assert_eq!(cfg.nats.url, "nats://nats:4222");
    assert_eq!(cfg.nats.user.as_deref(), Some("recommender"));
    let var = cfg.nats.password_env.as_deref().unwrap();
    assert_eq!(
        str_of(&recommender["environment"][var], var),
        nats_password("RECOMMENDER_PASSWORD")
    );
    // The dashboard, like gRPC without a token here, is published on the loopback only.
    let http = port_of(cfg.http.listen.as_deref().expect("http.listen"));
    let ports = strings(&recommender["ports"]);
    assert_eq!(
        ports,
        [
            format!("127.0.0.1:{grpc}:{grpc}"),
            format!("127.0.0.1:{metrics}:{metrics}"),
            format!("127.0.0.1:{http}:{http}")
        ]
    );
}

// ---------------------------------------------------------------- kubernetes

fn k8s_objects() -> Vec<Yaml> {
    let dir = deploy().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().unwrap() != "nats-values.yaml")
        .collect();
    files.sort();
    files.iter().flat_map(|f| yaml_docs(f)).collect()
}

fn find<'a>(objs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objs.iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container_port(container: &Yaml, name: &str) -> u16 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port {name}")) as u16
}

/// The file a container sees at `path`: (volume name, key inside it) through its mounts.
fn mounted(pod: &Yaml, container: &Yaml, path: &str) -> (String, String) {
    for m in container["volumeMounts"].as_sequence().unwrap() {
        let mount = str_of(&m["mountPath"], "mountPath");
        let vol = str_of(&m["name"], "name").to_owned();
        if let Some(sub) = m["subPath"].as_str() {
            if mount == path {
                return (vol, sub.to_owned());
            }
        } else if let Some(rest) = path.strip_prefix(&format!("{mount}/")) {
            return (vol, rest.to_owned());
        }
    }
    panic!("{path} is not mounted in {:?}", pod["metadata"]);
}

fn volume<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap()
}

/// The key of Secret `proxbalance` that a container sees at `path` (asserting it exists).
fn secret_key_at(objs: &[Yaml], pod: &Yaml, container: &Yaml, path: &Path) -> String {
    let (vol, item) = mounted(pod, container, path.to_str().unwrap());
    let sv = &volume(pod, &vol)["secret"];
    assert_eq!(sv["secretName"].as_str(), Some("proxbalance"));
    let entry = sv["items"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["path"].as_str() == Some(item.as_str()))
        .unwrap_or_else(|| panic!("{} is not an item of the secret volume", path.display()));
    let key = str_of(&entry["key"], "key").to_owned();
    let secret = find(objs, "Secret", "proxbalance");
    assert!(secret["stringData"][key.as_str()].is_string(), "{key}");
    key
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let objs = k8s_objects();
    let img = image();
    let kinds: Vec<(String, String)> = objs
        .iter()
        .map(|o| {
            (
                str_of(&o["kind"], "kind").to_owned(),
                str_of(&o["metadata"]["name"], "name").to_owned(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 9, "{kinds:?}");
    let secret = find(&objs, "Secret", "proxbalance");

    // ---- collector
    let dep = find(&objs, "Deployment", "proxbalance-collector");
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(1));
    let pod = &dep["spec"]["template"];
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let c = &pod["spec"]["containers"][0];
    let cmd = strings(&c["command"]);
    assert_eq!(cmd[0], "proxbalance-collector");
    assert!(img.binaries.contains(&cmd[0]));
    let config_path = arg_after(&cmd, "--config").unwrap();
    let (vol, key) = mounted(pod, c, &config_path);
    let cm_name = str_of(&volume(pod, &vol)["configMap"]["name"], "configMap");
    let cm = find(&objs, "ConfigMap", cm_name);
    let cfg = CollectorConfig::from_toml(str_of(&cm["data"][key.as_str()], "data")).unwrap();
    // The token secret file is the Secret's key, mounted.
    let secret_file = cfg.clusters[0].token_secret_file.as_ref().unwrap();
    let (vol, item) = mounted(pod, c, secret_file.to_str().unwrap());
    let sv = &volume(pod, &vol)["secret"];
    assert_eq!(sv["secretName"].as_str(), Some("proxbalance"));
    let items = sv["items"].as_sequence().unwrap();
    let entry = items
        .iter()
        .find(|i| i["path"].as_str() == Some(item.as_str()))
        .unwrap();
    let secret_key = str_of(&entry["key"], "key");
    assert!(secret["stringData"][secret_key].is_string(), "{secret_key}");
    // It logs in to NATS as the chart's `collector` user with the Secret's password.
    assert_eq!(cfg.nats.user.as_deref(), Some("collector"));
    assert_eq!(
        secret_key_at(&objs, pod, c, cfg.nats.password_file.as_ref().unwrap()),
        "collector-nats-password"
    );
    // Metrics: config port = container port = scrape annotation = Service target.
    let metrics = port_of(cfg.metrics.listen.as_deref().unwrap());
    assert_eq!(container_port(c, "metrics"), metrics);
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(metrics.to_string().as_str())
    );
    let svc = find(&objs, "Service", "proxbalance-collector-metrics");
    assert_eq!(
        svc["spec"]["ports"][0]["port"].as_u64(),
        Some(u64::from(metrics))
    );
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"].as_str(),
        Some("metrics")
    );
    assert_eq!(
        svc["spec"]["selector"],
        pod["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|n| {
                let mut m = serde_yaml::Mapping::new();
                m.insert("app.kubernetes.io/name".into(), n.into());
                Yaml::Mapping(m)
            })
            .unwrap()
    );
    assert_eq!(cfg.nats.url, "nats://nats:4222");
    // No TCP probe: an open port proves nothing about the process behind it.
    assert_eq!(
        c["livenessProbe"]["httpGet"]["port"].as_str(),
        Some("metrics")
    );
    assert!(c["livenessProbe"]["tcpSocket"].is_null());

    // ---- recommender
    let dep = find(&objs, "Deployment", "proxbalance-recommender");
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(2));
    let pod = &dep["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let cmd = strings(&c["command"]);
    assert_eq!(cmd[0], "proxbalance-recommender");
    assert!(img.binaries.contains(&cmd[0]));
    let config_path = arg_after(&cmd, "--config").unwrap();
    let (vol, key) = mounted(pod, c, &config_path);
    let cm_name = str_of(&volume(pod, &vol)["configMap"]["name"], "configMap");
    let cm = find(&objs, "ConfigMap", cm_name);
    let text = str_of(&cm["data"][key.as_str()], "data");
    let (grpc, metrics) = recommender_ports(text, "recommender ConfigMap");
    let rcfg = proxbalance_recommender::config::Config::from_toml(text).unwrap();
    assert_eq!(rcfg.nats.user.as_deref(), Some("recommender"));
    assert_eq!(
        secret_key_at(&objs, pod, c, rcfg.nats.password_file.as_ref().unwrap()),
        "recommender-nats-password"
    );
    assert_eq!(container_port(c, "grpc"), grpc);
    assert_eq!(container_port(c, "metrics"), metrics);
    // Readiness and liveness are the gRPC health service on the gRPC port: readiness the
    // server as a whole, liveness the name that stays SERVING whatever the data.
    assert_eq!(
        c["readinessProbe"]["grpc"]["port"].as_u64(),
        Some(u64::from(grpc))
    );
    assert!(c["readinessProbe"]["grpc"]["service"].is_null());
    assert_eq!(
        c["livenessProbe"]["grpc"]["port"].as_u64(),
        Some(u64::from(grpc))
    );
    assert_eq!(
        c["livenessProbe"]["grpc"]["service"].as_str(),
        Some(proxbalance_recommender::service::LIVENESS_SERVICE)
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(metrics.to_string().as_str())
    );
    let svc = find(&objs, "Service", "proxbalance-recommender");
    let ports: Vec<(String, u64, String)> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "name").to_owned(),
                p["port"].as_u64().unwrap(),
                str_of(&p["targetPort"], "targetPort").to_owned(),
            )
        })
        .collect();
    let http = port_of(rcfg.http.listen.as_deref().expect("http.listen"));
    assert_eq!(container_port(c, "http"), http);
    assert_eq!(
        ports,
        [
            ("grpc".to_owned(), u64::from(grpc), "grpc".to_owned()),
            (
                "metrics".to_owned(),
                u64::from(metrics),
                "metrics".to_owned()
            ),
            ("http".to_owned(), u64::from(http), "http".to_owned())
        ]
    );
    let pdb = find(&objs, "PodDisruptionBudget", "proxbalance-recommender");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));

    // gRPC on every interface of the pod: never without a bearer token (mounted from the
    // Secret) nor without a NetworkPolicy letting only labelled clients reach the gRPC port.
    let host = rcfg.grpc.listen.rsplit_once(':').unwrap().0;
    assert!(matches!(host, "0.0.0.0" | "[::]"), "{}", rcfg.grpc.listen);
    let token = rcfg.grpc.token_file.as_ref().expect("grpc.token_file");
    assert_eq!(secret_key_at(&objs, pod, c, token), "grpc-token");
    let np = find(&objs, "NetworkPolicy", "proxbalance-recommender");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        pod["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    assert!(strings(&np["spec"]["policyTypes"]).contains(&"Ingress".to_owned()));
    let rules = np["spec"]["ingress"].as_sequence().unwrap();
    // gRPC, and the dashboard on every interface with the same token, the same way.
    for port in [grpc, http] {
        let admits = |rule: &Yaml| {
            rule["ports"].as_sequence().is_none_or(|ports| {
                ports
                    .iter()
                    .any(|p| p["port"].as_u64() == Some(u64::from(port)))
            })
        };
        let port_rules: Vec<&Yaml> = rules.iter().filter(|r| admits(r)).collect();
        assert_eq!(port_rules.len(), 1, "port {port}: {rules:?}");
        let from = port_rules[0]["from"].as_sequence().expect("sources");
        assert!(!from.is_empty());
        for source in from {
            assert_eq!(
                source["podSelector"]["matchLabels"]["proxbalance.io/grpc-client"].as_str(),
                Some("true"),
                "{source:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- NATS

/// The publish and subscribe allow lists of `NAME = { ... }` in deploy/nats-server.conf.
fn conf_permissions(conf: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let start = conf.find(&format!("{name} = {{")).unwrap();
    let block = &conf[start..];
    let block = &block[..block.find("\n}\n").unwrap()];
    let quoted = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                let l = l.trim();
                if l.starts_with('#') { "" } else { l }
            })
            .flat_map(|l| {
                l.split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let sub_at = block.find("subscribe:").unwrap();
    (quoted(&block[..sub_at]), quoted(&block[sub_at..]))
}

#[test]
fn nats_chart_values_grant_the_permissions_of_the_server_config() {
    let conf = read(&deploy().join("nats-server.conf"));
    let values = yaml_docs(&deploy().join("kubernetes/nats-values.yaml")).remove(0);
    let config = &values["config"];
    assert_eq!(config["jetstream"]["enabled"].as_bool(), Some(true));
    assert_eq!(
        config["jetstream"]["fileStore"]["enabled"].as_bool(),
        Some(true)
    );
    let account = &config["merge"]["accounts"]["PROXBALANCE"];
    let users = account["users"].as_sequence().unwrap();
    let expected = [
        (
            "user",
            "collector",
            "<< $COLLECTOR_PASSWORD >>",
            "COLLECTOR_PERMISSIONS",
        ),
        (
            "user",
            "recommender",
            "<< $RECOMMENDER_PASSWORD >>",
            "RECOMMENDER_PERMISSIONS",
        ),
        ("nkey", "", "<< $EVENTS_NKEY >>", "EVENTS_PERMISSIONS"),
    ];
    assert_eq!(users.len(), expected.len());
    let secret = find(&k8s_objects(), "Secret", "proxbalance").clone();
    for (u, (kind, name, credential, perms)) in users.iter().zip(expected) {
        if kind == "user" {
            assert_eq!(u["user"].as_str(), Some(name));
            assert_eq!(u["password"].as_str(), Some(credential));
        } else {
            assert_eq!(u["nkey"].as_str(), Some(credential));
        }
        // The same variables as the server config, fed from the Secret.
        let var = credential
            .trim_start_matches("<< $")
            .trim_end_matches(" >>");
        assert!(
            conf.contains(&format!("${var},")) || conf.contains(&format!("${var} ")),
            "{var}"
        );
        let key = str_of(
            &values["container"]["env"][var]["valueFrom"]["secretKeyRef"]["key"],
            var,
        );
        assert!(secret["stringData"][key].is_string(), "{key}");
        let (publish, subscribe) = conf_permissions(&conf, perms);
        assert!(!publish.is_empty() && !subscribe.is_empty(), "{perms}");
        assert_eq!(
            strings(&u["permissions"]["publish"]["allow"]),
            publish,
            "{perms}"
        );
        assert_eq!(
            strings(&u["permissions"]["subscribe"]["allow"]),
            subscribe,
            "{perms}"
        );
    }
    // JetStream limits of the account are set.
    for k in ["max_memory", "max_file", "max_streams", "max_consumers"] {
        assert!(!account["jetstream"][k].is_null(), "{k}");
    }
}

// ---------------------------------------------------------------- Grafana

/// Metric names registered in the services' source: the first `"name"` literal after each
/// `counter!(`, `gauge!(` or `histogram!(` (also `describe_*!`).
fn registered_metrics() -> BTreeSet<String> {
    registered_metrics_by_kind().into_keys().collect()
}

/// [`registered_metrics`], each with the macro that records it (`counter!(`, `gauge!(`,
/// `histogram!(`).
fn registered_metrics_by_kind() -> BTreeMap<String, &'static str> {
    let mut names = BTreeMap::new();
    // Names declared as `const NAME: &str = "proxbalance_…"`, kept when a macro names the const.
    let mut consts: Vec<(String, String)> = Vec::new();
    let mut sources = String::new();
    for dir in ["collector/src", "recommender/src", "runtime/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = read(&p);
                    for line in text.lines() {
                        let Some(rest) = line.trim().strip_prefix("pub const ") else {
                            continue;
                        };
                        if let Some((name, value)) = rest.split_once(": &str = \"")
                            && let Some(value) = value.strip_suffix("\";")
                            && value.starts_with("proxbalance_")
                        {
                            consts.push((name.to_owned(), value.to_owned()));
                        }
                    }
                    sources.push_str(&text);
                    for mac in ["counter!(", "gauge!(", "histogram!("] {
                        for (i, _) in text.match_indices(mac) {
                            let rest = &text[i + mac.len()..];
                            let rest = rest.trim_start();
                            if let Some(lit) = rest.strip_prefix('"')
                                && let Some(end) = lit.find('"')
                            {
                                names.insert(lit[..end].to_owned(), mac);
                            }
                        }
                    }
                }
            }
        }
    }
    let compact: String = sources.split_whitespace().collect();
    for (name, value) in consts {
        let used = ["counter!(", "gauge!(", "histogram!("]
            .into_iter()
            .find(|mac| {
                ["", "metric::"].iter().any(|path| {
                    [',', ')']
                        .iter()
                        .any(|end| compact.contains(&format!("{mac}{path}{name}{end}")))
                })
            });
        if let Some(mac) = used {
            names.insert(value, mac);
        }
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_queries_only_registered_metrics() {
    let registered = registered_metrics();
    assert!(
        registered.contains("proxbalance_collector_cycles_total"),
        "{registered:?}"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&read(&deploy().join("grafana-dashboard.json"))).unwrap();
    assert_eq!(dash["uid"], "proxbalance-overview");
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        let mut i = 0;
        while let Some(pos) = q[i..].find("proxbalance_") {
            let start = i + pos;
            let end = start
                + q[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(q.len() - start);
            // A summary's series: NAME_sum and NAME_count (quantiles carry the bare name).
            let name = &q[start..end];
            let base = ["_sum", "_count", "_bucket"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| registered.contains(*b)))
                .unwrap_or(name);
            assert!(
                registered.contains(base),
                "{name} in {q:?} is not registered by the code"
            );
            used.insert(base.to_owned());
            i = end;
        }
    }
    // Every metric of both services has a panel.
    assert!(
        registered.contains("proxbalance_recommender_recompute_duration_seconds"),
        "{registered:?}"
    );
    for service in ["proxbalance_collector_", "proxbalance_recommender_"] {
        let metrics: BTreeSet<String> = registered
            .iter()
            .filter(|n| n.starts_with(service))
            .cloned()
            .collect();
        assert_eq!(
            metrics.difference(&used).collect::<Vec<_>>(),
            Vec::<&String>::new()
        );
    }
    // Durations are histograms (summaries' quantiles cannot be aggregated across replicas):
    // no query reads a `quantile` label, and every histogram's percentiles come from its
    // buckets with histogram_quantile, aggregated by `le`.
    for q in &queries {
        assert!(!q.contains("quantile=\""), "a summary quantile in {q:?}");
    }
    let histograms: Vec<String> = registered_metrics_by_kind()
        .into_iter()
        .filter(|(name, mac)| *mac == "histogram!(" && name.starts_with("proxbalance_"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(histograms.len(), 4, "{histograms:?}");
    for h in &histograms {
        assert!(
            h.ends_with("_seconds"),
            "{h}: the exporter gives _seconds histograms buckets"
        );
        let bucket = format!("{h}_bucket");
        let quantile = queries.iter().find(|q| q.contains(&bucket));
        assert!(
            quantile.is_some_and(|q| q.starts_with("histogram_quantile(") && q.contains(" le)")),
            "{h}: expected histogram_quantile(…, sum by (…, le) (rate({bucket}…))), found {quantile:?}"
        );
    }
    // Every panel queries the data source variable.
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
}
