//! End-to-end test support: a real `nats-server` with JetStream on a random port.
//!
//! [`NatsServer::start`] spawns the binary (`$NATS_SERVER_BIN`, else `/usr/sbin/nats-server`)
//! with `-p -1 --ports_file_dir`, waits for the ports file the server writes once it listens,
//! and kills the process on drop. [`NatsServer::restart`] brings it back on the same port with
//! the same store directory.
//!
//! [`NatsServer::start_with_config`] runs the server from a configuration file instead (accounts,
//! permissions, JetStream limits), on a given or random port, with extra environment variables
//! for the file's `$VARIABLE` references; its output is kept for [`NatsServer::log`].
//!
//! [`jwt`] makes the operator, accounts, users and credentials files of an operator-mode server;
//! [`pki`] a test CA with server and client certificates.

pub mod jwt;
pub mod pki;

/// The process's Prometheus recorder, as the services' exporter sets it up
/// ([`proxbalance_runtime::prometheus_builder`]), installed by the first caller: the services'
/// in-process metrics land there (one recorder per test binary).
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        proxbalance_runtime::prometheus_builder(None)
            .install_recorder()
            .expect("metrics recorder")
    })
}

/// `name{labels} value` lines of a Prometheus rendering whose name and labels contain all
/// of `needles`, summed.
pub fn metric_sum(text: &str, needles: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The protobuf bytes of a NATS message: its payload, inflated when its `Content-Encoding`
/// header says gzip (the collector compresses payloads from 1 KiB on). Panics on a payload
/// that does not inflate: for tests only.
pub fn payload_of(headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> Vec<u8> {
    let encoding = headers
        .and_then(|h| h.get(proxbalance_proto::headers::CONTENT_ENCODING))
        .map(|v| v.as_str());
    proxbalance_proto::codec::decompress(encoding, payload)
        .expect("payload inflates")
        .into_owned()
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The binary could not be spawned.
    #[error("cannot spawn {bin}: {source}")]
    Spawn {
        /// Path of the binary.
        bin: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server did not write its ports file in time.
    #[error("nats-server (pid {pid}) wrote no usable ports file in {dir} within {timeout_ms} ms")]
    NoPorts {
        /// Process id.
        pid: u32,
        /// Directory watched.
        dir: String,
        /// How long we waited.
        timeout_ms: u64,
    },
    /// The server exited during start-up.
    #[error("nats-server exited during start-up with {status}")]
    Exited {
        /// Exit status.
        status: String,
    },
    /// Temporary directory trouble.
    #[error("temporary directory: {0}")]
    TempDir(#[from] std::io::Error),
    /// A cluster member did not report healthy in time.
    #[error("nats-server {server} of the cluster not healthy in time; /healthz said {last:?}")]
    Unhealthy {
        /// Index of the server.
        server: usize,
        /// Its last answer.
        last: String,
    },
    /// The server refused its configuration file (or exited for another reason) during start-up.
    #[error("nats-server -c {config} exited during start-up with {status}: {log}")]
    ConfigRejected {
        /// The configuration file.
        config: String,
        /// Exit status.
        status: String,
        /// What the server printed.
        log: String,
    },
}

/// How the server is launched (kept for [`NatsServer::restart`]).
#[derive(Debug, Clone)]
enum Launch {
    /// `-js -sd <tempdir>/store`.
    Default,
    /// `-c FILE`, with extra environment variables.
    Config {
        file: PathBuf,
        env: Vec<(String, String)>,
    },
}

/// A running `nats-server -js` owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    launch: Launch,
}

fn binary() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned())
}

const START_TIMEOUT: Duration = Duration::from_secs(15);

impl NatsServer {
    /// Starts a server on a random loopback port with a fresh JetStream store.
    pub fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()?;
        let launch = Launch::Default;
        let (child, port) = spawn(dir.path(), None, &launch)?;
        Ok(Self {
            child: Some(child),
            dir,
            port,
            launch,
        })
    }

    /// Starts `nats-server -c CONFIG` listening on 127.0.0.1 at `port` (`None`: a random free
    /// port); the file's own `port`/`listen` are overridden, everything else (JetStream store
    /// and limits, accounts, monitoring) comes from the file. `env` is added to the server's
    /// environment, for the file's `$VARIABLE` references. The server's output is written to
    /// `nats-server.log` in the harness's temporary directory (see [`NatsServer::log`]).
    pub fn start_with_config(
        config: &Path,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()?;
        let launch = Launch::Config {
            file: config.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let (child, port) = spawn(dir.path(), port, &launch)?;
        Ok(Self {
            child: Some(child),
            dir,
            port,
            launch,
        })
    }

    /// What the server has printed so far (empty for servers from [`NatsServer::start`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// The client URL (`nats://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server if running, then starts it again on the same port and store.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let (child, port) = spawn(self.dir.path(), Some(self.port), &self.launch)?;
        self.child = Some(child);
        self.port = port;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

const LOG_FILE: &str = "nats-server.log";

fn spawn(dir: &Path, port: Option<u16>, launch: &Launch) -> Result<(Child, u16), HarnessError> {
    let bin = binary();
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    for entry in std::fs::read_dir(&ports_dir)?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut cmd = Command::new(&bin);
    cmd.args(["-a", "127.0.0.1", "-p", &port_arg]);
    match launch {
        Launch::Default => {
            cmd.args(["-js", "-sd"]).arg(dir.join("store"));
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        Launch::Config { file, env } => {
            cmd.arg("-c").arg(file);
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            // The server logs to stderr; keep it (appending across restarts) for diagnostics.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(LOG_FILE))?;
            cmd.stdout(Stdio::null()).stderr(log);
        }
    }
    let mut child = cmd
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .spawn()
        .map_err(|source| HarnessError::Spawn {
            bin: bin.clone(),
            source,
        })?;
    let pid = child.id();
    let file: PathBuf = ports_dir.join(format!("nats-server_{pid}.ports"));
    let started = Instant::now();
    loop {
        if let Some(port) = read_port(&file) {
            return Ok((child, port));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(match launch {
                Launch::Default => HarnessError::Exited {
                    status: status.to_string(),
                },
                Launch::Config { file, .. } => HarnessError::ConfigRejected {
                    config: file.display().to_string(),
                    status: status.to_string(),
                    log: std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default(),
                },
            });
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::NoPorts {
                pid,
                dir: ports_dir.display().to_string(),
                timeout_ms: START_TIMEOUT.as_millis() as u64,
            });
        }
        // The server writes the file once its listeners are up; poll for it.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("nats")?.as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// A free loopback port (bound, read and released: another process may take it in between,
/// which only makes a start fail).
fn free_port() -> Result<u16, HarnessError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A JetStream cluster of `nats-server`s with routes on loopback, each with its own store.
///
/// [`NatsCluster::start`] writes one configuration file per server (`server_name`, JetStream
/// store, a `cluster` block listing every route) and starts them from it through
/// [`NatsServer::start_with_config`], then waits until every server's monitoring endpoint
/// `/healthz` answers `ok`, i.e. JetStream has a meta leader and is current.
#[derive(Debug)]
pub struct NatsCluster {
    /// The servers, in start order; [`NatsServer::stop`] one to simulate its loss.
    pub servers: Vec<NatsServer>,
    monitor_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers (3 for replicas 3) and waits until the cluster is healthy.
    pub fn start(n: usize) -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()?;
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
        let monitor_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
        let routes = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let store = dir.path().join(format!("store-{i}"));
            let conf = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nhttp: \"127.0.0.1:{}\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: proxbalance, listen: \"127.0.0.1:{}\", routes: [{routes}] }}\n",
                    monitor_ports[i],
                    store.display(),
                    route_ports[i],
                ),
            )?;
            servers.push(NatsServer::start_with_config(&conf, None, &[])?);
        }
        let cluster = Self {
            servers,
            monitor_ports,
            _dir: dir,
        };
        cluster.wait_healthy(&(0..n).collect::<Vec<_>>())?;
        Ok(cluster)
    }

    /// The client URLs of every server, comma-separated (the services' `nats.url` form).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until `/healthz` of each of `servers` (indices) answers `ok`.
    pub fn wait_healthy(&self, servers: &[usize]) -> Result<(), HarnessError> {
        let started = Instant::now();
        for &i in servers {
            loop {
                if healthz(self.monitor_ports[i]).is_some_and(|b| b.contains("\"ok\"")) {
                    break;
                }
                if started.elapsed() > START_TIMEOUT * 2 {
                    return Err(HarnessError::Unhealthy {
                        server: i,
                        last: healthz(self.monitor_ports[i]).unwrap_or_default(),
                    });
                }
                // A readiness probe of another process: nothing to wait on but its answer.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// Waits up to `timeout` for `child` to exit and returns its output (stdout and stderr must be
/// piped or null). The wait is on the process's end, not a poll; a child still running at the
/// deadline is killed (SIGKILL, by its pid) and `None` is returned.
pub fn output_within(child: Child, timeout: Duration) -> Option<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.ok(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            None
        }
    }
}

fn healthz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_random_port_and_restarts_on_the_same_one() {
        let mut s = NatsServer::start().unwrap();
        let port = s.port();
        assert!(port > 0);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.restart().unwrap();
        assert_eq!(s.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn starts_from_a_config_file_with_environment_variables() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("n.conf");
        std::fs::write(
            &conf,
            "port: 4222\nauthorization { user: a, password: $HARNESS_TEST_PASSWORD }\n",
        )
        .unwrap();
        let mut s =
            NatsServer::start_with_config(&conf, None, &[("HARNESS_TEST_PASSWORD", "pw")]).unwrap();
        let port = s.port();
        assert_ne!(port, 4222);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(s.log().contains("Server is ready"), "{}", s.log());
        s.restart().unwrap();
        assert_eq!(s.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

        // The variable is required: without it the server refuses the file.
        let err = NatsServer::start_with_config(&conf, None, &[]).unwrap_err();
        match err {
            HarnessError::ConfigRejected { log, .. } => assert!(
                log.contains("variable reference for 'HARNESS_TEST_PASSWORD'"),
                "{log}"
            ),
            other => panic!("expected ConfigRejected, got {other}"),
        }
    }
}
