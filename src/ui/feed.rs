//! One producer per web view: it wakes on the store's change feed (every committed write in
//! this process) and on the engine's status bumps, coalesces a burst, builds one snapshot and
//! broadcasts it when it differs from the last. Every page is an SSE stream fed from that
//! broadcast; nothing per client reads the database. A slow refresh covers writes made by
//! other processes (`apply` against the daemon), which the in-process feed cannot see.

use super::{Ui, UiError, snapshot, text};
use crate::engine::vm::VmDriver;
use crate::gateway::logs::Lines;
use crate::store::Store;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Quiet time that ends a burst of writes (one reconcile writes status and events apart).
const COALESCE: Duration = Duration::from_millis(40);
/// Refresh without a change notice (meters of other processes, other writers).
const REFRESH: Duration = Duration::from_secs(5);
/// SSE comment sent when nothing changed, so proxies and the browser keep the stream open.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub struct Feed {
    /// The latest snapshot as serialized JSON (what a new page starts from).
    latest: Mutex<Arc<str>>,
    tx: broadcast::Sender<Arc<str>>,
    stop: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The snapshot without its timestamp: equal ones are not sent again.
fn content(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("at");
    }
    c
}

impl Feed {
    pub fn start(
        state_dir: &Path,
        engine_changes: watch::Receiver<u64>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, UiError> {
        let store = Store::open(state_dir)?;
        let first = snapshot::build(&store)?;
        let feed = Arc::new(Feed {
            latest: Mutex::new(Arc::from(first.to_string())),
            tx: broadcast::channel(64).0,
            stop: stop.clone(),
        });
        let changes = store.changes();
        tokio::spawn(produce(
            feed.clone(),
            store,
            content(&first),
            changes,
            engine_changes,
            stop,
        ));
        Ok(feed)
    }

    fn latest(&self) -> Arc<str> {
        lock(&self.latest).clone()
    }
}

async fn produce(
    feed: Arc<Feed>,
    store: Store,
    mut last: Value,
    mut changes: watch::Receiver<u64>,
    mut engine: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let store = Arc::new(Mutex::new(store));
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            r = engine.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        tokio::time::sleep(COALESCE).await;
        changes.borrow_and_update();
        engine.borrow_and_update();
        let s = store.clone();
        let built = tokio::task::spawn_blocking(move || snapshot::build(&lock(&s))).await;
        let v = match built {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!("web view: cannot read the store: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!("web view: snapshot task failed: {e}");
                continue;
            }
        };
        let c = content(&v);
        if c == last {
            continue;
        }
        last = c;
        let text: Arc<str> = Arc::from(v.to_string());
        *lock(&feed.latest) = text.clone();
        // No page open is not an error.
        let _ = feed.tx.send(text);
    }
}

/// `GET api/state`: the latest snapshot.
pub async fn state<D: VmDriver>(State(ui): State<Arc<Ui<D>>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        ui.feed.latest().to_string(),
    )
        .into_response()
}

fn event(data: &str) -> Bytes {
    Bytes::from(format!("event: snapshot\ndata: {data}\n\n"))
}

/// `GET api/events`: an SSE stream, the latest snapshot first, then every new one, until
/// the page goes or the view stops.
pub async fn events<D: VmDriver>(State(ui): State<Arc<Ui<D>>>) -> Response {
    let feed = ui.feed.clone();
    if *feed.stop.borrow() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the web view is stopping");
    }
    let mut rx = feed.tx.subscribe();
    let (out, body) = mpsc::channel::<Bytes>(8);
    let mut stop = feed.stop.clone();
    let first = feed.latest();
    tokio::spawn(async move {
        if out.send(event(&first)).await.is_err() {
            return;
        }
        loop {
            let msg = tokio::select! {
                r = rx.recv() => match r {
                    Ok(s) => event(&s),
                    // Snapshots are whole states: after a lag the latest is all the page needs.
                    Err(broadcast::error::RecvError::Lagged(_)) => event(&feed.latest()),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
                _ = stop.changed() => break,
            };
            if out.send(msg).await.is_err() {
                break;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::new(Lines(body)),
    )
        .into_response()
}
