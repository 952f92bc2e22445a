//! The binaries take their secrets from the environment and never print them: the
//! `proxbalance-recommender` binary logs in to NATS with `nats.password_env` and requires the
//! gRPC token named by `grpc.token_env`, running at `RUST_LOG=trace`; the `proxbalance` CLI
//! sends the token from `PROXBALANCE_TOKEN`. Everything both print is searched for the secrets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use proxbalance_e2e::NatsServer;

const SERVICE: &str = env!("CARGO_BIN_EXE_proxbalance-recommender");
const CLI: &str = env!("CARGO_BIN_EXE_proxbalance");
const NATS_PASSWORD: &str = "bin-nats-pw-4d2a91";
const GRPC_TOKEN: &str = "bin-grpc-token-77e0b3";
const WRONG_TOKEN: &str = "bin-wrong-token-1c5f08";

#[test]
fn secrets_from_the_environment_are_used_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "port: 4222\njetstream {{ store_dir: {:?} }}\nauthorization {{ user: recommender, password: $PW }}\n",
            dir.path().join("js").display().to_string()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with_config(&conf, None, &[("PW", NATS_PASSWORD)]).unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(
        &file,
        format!(
            "[nats]\nurl = \"{}\"\nuser = \"recommender\"\npassword_env = \"TEST_NATS_PASSWORD\"\n[grpc]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"TEST_GRPC_TOKEN\"\n",
            nats.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(SERVICE)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "trace")
        .env("TEST_NATS_PASSWORD", NATS_PASSWORD)
        .env("TEST_GRPC_TOKEN", GRPC_TOKEN)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // A thread drains the (trace-level, voluminous) log so the service never blocks on it,
    // hands over the listening line, and returns everything at exit.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains("recommender listening") {
                let _ = line_tx.send(line.clone());
            }
            output.push_str(&line);
            output.push('\n');
        }
        output
    });
    // The listening line is the event we wait for; it names the address.
    let line = line_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("no listening line");
    assert!(line.contains("token_required=true"), "{line}");
    let at = line.find("grpc_addr=").unwrap() + "grpc_addr=".len();
    let addr = line[at..].split_whitespace().next().unwrap().to_owned();

    let cli = |token: Option<&str>| {
        let mut cmd = Command::new(CLI);
        cmd.args(["state", "--server", &addr, "--cluster", "nope"])
            .env_remove("PROXBALANCE_TOKEN")
            .env_remove("PROXBALANCE_TOKEN_FILE");
        if let Some(t) = token {
            cmd.env("PROXBALANCE_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, with_token) = cli(Some(GRPC_TOKEN));
    // Past the token check: the service has no data for the cluster.
    assert_eq!(code, Some(1), "{with_token}");
    assert!(
        with_token.contains("cluster \"nope\": no data yet"),
        "{with_token}"
    );
    let (code, without) = cli(None);
    assert_eq!(code, Some(1), "{without}");
    assert!(
        without.contains("Unauthenticated: missing bearer token"),
        "{without}"
    );
    let (code, wrong) = cli(Some(WRONG_TOKEN));
    assert_eq!(code, Some(1), "{wrong}");
    assert!(
        wrong.contains("Unauthenticated: invalid bearer token"),
        "{wrong}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = reader.join().unwrap();
    assert!(child.wait().unwrap().success(), "{output}");
    assert!(
        output.contains("write operation: CONNECT"),
        "trace level was not on"
    );

    let all = format!("{output}{with_token}{without}{wrong}");
    for secret in [NATS_PASSWORD, GRPC_TOKEN, WRONG_TOKEN] {
        assert_eq!(all.matches(secret).count(), 0, "{secret:?} was printed");
    }
}
