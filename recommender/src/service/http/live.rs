//! What changes while a page is open: the server-sent events of `/api/v1/stream`, fed by the
//! broadcast channels the gRPC watches read ([`Shared::changes`], [`Shared::events`]). A stream whose reader stops reading or falls
//! behind those channels is ended (the page reconnects and reloads its data); none of them can
//! hold up the sender, ingest.

use std::convert::Infallible;
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::service::{Notice, Shared};
use crate::state::dashboard::event_json;

/// A comment line sent this often on an idle stream, so that proxies keep it open and a
/// vanished reader is found.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// One server-sent event: `event: <kind>` and its JSON on one `data:` line.
fn sse(kind: &str, data: &serde_json::Value) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))
}

/// The `set` event of a recomputation: which cluster, its generation and cycle, and the moves
/// that changed (the page reloads the set when it shows that cluster).
fn set_event(n: &Notice) -> serde_json::Value {
    let e = &n.event;
    json!({
        "cluster": e.cluster,
        "generation": e.generation,
        "cycle": e.cycle,
        "at_unix_ms": e.at_unix_ms,
        "changed": n.changed,
        "added": e.added_vmids,
        "removed": e.removed_vmids,
        "changed_vmids": e.changed_vmids,
    })
}

/// Frames a live stream may have waiting for its reader; a reader further behind is dropped.
const STREAM_BUFFER: usize = 32;

/// The frames of a live stream filtered to `cluster` (every cluster when empty): a `hello`
/// first, then `set` and `overload` events as they happen and a comment every 15 s.
///
/// A task reads the broadcast channels and hands the frames over through a buffer of
/// [`STREAM_BUFFER`]; it holds `permit` (one of `http.max_streams`) and ends, freeing it, at
/// shutdown, when the reader is gone, when the buffer is full (a reader that stopped reading,
/// whose connection then ends with what was buffered) or, with a `lagged` event, when it fell
/// behind the broadcast channels.
pub fn stream(
    shared: &Shared,
    cluster: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(STREAM_BUFFER);
    let mut sets = shared.changes.subscribe();
    let mut events = shared.events.subscribe();
    let shutdown = shared.shutdown.clone();
    let _ = tx.try_send(sse(
        "hello",
        &json!({ "cluster": cluster, "retry_ms": 2000 }),
    ));
    tokio::spawn(async move {
        let _permit = permit;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let wanted = |c: &str| cluster.is_empty() || c == cluster;
        loop {
            // `lagged`: the stream fell behind the broadcast channels and ends after telling so.
            let (frame, lagged) = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                r = sets.recv() => match r {
                    Ok(n) if wanted(&n.event.cluster) => (sse("set", &set_event(&n)), false),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => (sse("lagged", &json!({})), true),
                    Err(RecvError::Closed) => break,
                },
                r = events.recv() => match r {
                    Ok(e) if wanted(&e.cluster) => (sse("overload", &event_json(&e)), false),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => (sse("lagged", &json!({})), true),
                    Err(RecvError::Closed) => break,
                },
                _ = heartbeat.tick() => (Frame::data(Bytes::from_static(b": keepalive\n\n")), false),
            };
            match tx.try_send(frame) {
                Ok(()) if lagged => {
                    tracing::debug!(%cluster, "dashboard stream fell behind the broadcast; ended");
                    break;
                }
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(%cluster, "dashboard stream reader stopped reading; dropped");
                    break;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        Some((Ok(frame), rx))
    })
}
