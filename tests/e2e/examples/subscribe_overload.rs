//! Another service listening to proxbalance's overload events (the README's example):
//!
//! ```sh
//! cargo run -p proxbalance-e2e --example subscribe_overload -- nats://127.0.0.1:4222
//! ```
//!
//! Core NATS sees the events as the recommender publishes them; a JetStream consumer on
//! `PROXBALANCE_EVENTS` would also see those published while this program was not running.

use futures_util::StreamExt as _;
use proxbalance_proto::v1::OverloadEvent;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url).await?;
    let mut events = client.subscribe("proxbalance.v1.event.overload.>").await?;
    while let Some(msg) = events.next().await {
        let e: OverloadEvent = proxbalance_proto::decode(&msg.payload)?;
        println!(
            "{}/{}: {} {} (value {:.2}, threshold {:.2})",
            e.cluster,
            e.node,
            e.reason().as_str_name(),
            e.state().as_str_name(),
            e.value,
            e.threshold
        );
    }
    Ok(())
}
