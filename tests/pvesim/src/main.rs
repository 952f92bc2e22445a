//! `pvesim --scenario FILE --listen ADDR`: serves a simulated Proxmox VE cluster over HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

/// A Proxmox VE API simulator.
#[derive(Debug, Parser)]
#[command(
    name = "pvesim",
    version,
    about = "Serves a simulated Proxmox VE cluster at https://ADDR/api2/json"
)]
struct Args {
    /// Scenario file (TOML).
    #[arg(long, required_unless_present = "generated")]
    scenario: Option<PathBuf>,
    /// Instead of a file, a synthetic cluster `NODES:GUESTS[:SEED]` (token collector@pve!lb).
    #[arg(long, conflicts_with = "scenario")]
    generated: Option<String>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// Further addresses sharing the same cluster (extra API endpoints).
    #[arg(long = "extra-listen")]
    extra_listen: Vec<SocketAddr>,
    /// Write the cluster CA certificate (pve-root-ca.pem) here.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Write the first endpoint's certificate SHA-256 fingerprint here (each node, so each
    /// endpoint, has its own; all are signed by the CA of --ca-out).
    #[arg(long)]
    fingerprint_out: Option<PathBuf>,
    /// Override the scenario's time acceleration (0 = clock stands still).
    #[arg(long)]
    acceleration: Option<f64>,
    /// Print the generated scenario as TOML and exit.
    #[arg(long, requires = "generated")]
    print_scenario: bool,
}

fn parse_generated(spec: &str) -> anyhow::Result<pvesim::Scenario> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        bail!("--generated expects NODES:GUESTS[:SEED], got '{spec}'");
    }
    let nodes: usize = parts[0]
        .parse()
        .with_context(|| format!("--generated: bad node count '{}'", parts[0]))?;
    let guests: usize = parts[1]
        .parse()
        .with_context(|| format!("--generated: bad guest count '{}'", parts[1]))?;
    let seed: u64 = match parts.get(2) {
        Some(s) => s
            .parse()
            .with_context(|| format!("--generated: bad seed '{s}'"))?,
        None => 1,
    };
    if nodes == 0 || nodes > 1024 || guests > 200_000 {
        bail!("--generated: need 1..=1024 nodes and at most 200000 guests");
    }
    let mut s = pvesim::Scenario::generated(nodes, guests, seed);
    s.cluster.acceleration = 1.0;
    s.cluster.start_time = None;
    Ok(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut scenario = match (&args.scenario, &args.generated) {
        (Some(path), _) => pvesim::Scenario::from_file(path)?,
        (None, Some(spec)) => parse_generated(spec)?,
        (None, None) => bail!("give --scenario FILE or --generated NODES:GUESTS[:SEED]"),
    };
    if args.print_scenario {
        print!("{}", scenario.to_toml_string()?);
        return Ok(());
    }
    if let Some(a) = args.acceleration {
        if !a.is_finite() || a < 0.0 {
            bail!("--acceleration must be a finite number ≥ 0");
        }
        scenario.cluster.acceleration = a;
    }
    let name = scenario.cluster.name.clone();
    let flavour = scenario.version();
    let counts = (scenario.nodes.len(), scenario.guests.len());
    let sim = pvesim::Simulator::start(scenario, args.listen).await?;
    for addr in &args.extra_listen {
        sim.add_endpoint(*addr).await?;
    }
    if let Some(p) = &args.ca_out {
        std::fs::write(p, sim.ca_pem()).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.fingerprint_out {
        std::fs::write(p, format!("{}\n", sim.fingerprint_sha256()))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!(
        "pvesim: cluster '{name}' (PVE {flavour}), {} nodes, {} guests",
        counts.0, counts.1
    );
    for addr in sim.endpoints() {
        println!("listening on https://{addr}/api2/json");
    }
    // Every node has its own certificate; endpoint i presents node i's.
    for (i, addr) in sim.endpoints().into_iter().enumerate() {
        println!(
            "certificate of https://{addr}: {}",
            sim.endpoint_fingerprint(i)?
        );
    }
    println!("fingerprint {}", sim.fingerprint_sha256());
    if let Some(h) = sim.token_header() {
        let id = h
            .trim_start_matches("PVEAPIToken=")
            .rsplit_once('=')
            .map(|x| x.0.to_string())
            .unwrap_or_default();
        println!("token id {id}");
    }
    shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
