//! Asynchronous calls: `POST /async-function/{name}` stores the call (202, `X-Call-Id`); this
//! loop runs queued calls and POSTs each result to its `X-Callback-Url` with retries. Every
//! step is committed before the next, so a restarted daemon runs what was still queued (a call
//! cut off mid-run runs again) and delivers what was done but not delivered: one callback per
//! call, each carrying `X-Call-Id` so a receiver can tell.

use super::Gateway;
use super::client;
use crate::engine::vm::VmDriver;
use crate::store::gateway::{CallState, QueuedCall};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Calls run at once.
const PARALLEL: usize = 16;
/// Callback tries before a result is given up as undeliverable.
const CALLBACK_TRIES: u32 = 6;
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a callback URL before the call is accepted.
pub fn check_callback(url: &str) -> Result<(), String> {
    client::split_url(url).map(|_| ()).map_err(|_| {
        format!("X-Callback-Url `{url}`: only http://HOST[:PORT]/PATH URLs are supported")
    })
}

pub async fn run<D: VmDriver>(gw: Arc<Gateway<D>>) {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let pending = gw
            .engine
            .with_store(|s| s.pending_calls())
            .unwrap_or_else(|e| {
                tracing::error!("cannot read the gateway's call queue: {e}");
                Vec::new()
            });
        gw.metrics.set_async_depth(pending.len());
        for c in pending {
            if !super::lock(&busy).insert(c.call_id.clone()) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (gw, busy) = (gw.clone(), busy.clone());
            tokio::spawn(async move {
                let id = c.call_id.clone();
                process(&gw, c).await;
                super::lock(&busy).remove(&id);
                drop(permit);
                gw.queue_wake.notify_one();
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), gw.queue_wake.notified()).await;
    }
}

async fn process<D: VmDriver>(gw: &Gateway<D>, mut c: QueuedCall) {
    if c.state == CallState::Queued {
        // The request body is kept as text (see `enqueue`).
        let body = c.input.as_str().unwrap_or_default().as_bytes().to_vec();
        let reply = gw.call(&c.function, &body, &c.call_id).await;
        let headers: serde_json::Map<String, serde_json::Value> = reply
            .headers(&c.function)
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        let headers = serde_json::Value::Object(headers);
        let stored = tokio::task::block_in_place(|| {
            gw.engine
                .with_store(|s| s.finish_call(&c.call_id, reply.code, &reply.body, &headers))
        });
        if let Err(e) = stored {
            tracing::error!(call = %c.call_id, "cannot store the result: {e}");
            return;
        }
        c.state = CallState::Done;
        c.code = Some(reply.code);
        c.result = Some(reply.body);
        c.headers = Some(headers);
    }
    deliver(gw, &c).await;
}

async fn deliver<D: VmDriver>(gw: &Gateway<D>, c: &QueuedCall) {
    let Some(url) = &c.callback_url else {
        let _ = gw
            .engine
            .with_store(|s| s.callback_tried(&c.call_id, Some(CallState::Delivered)));
        return;
    };
    let headers: Vec<(&str, String)> = c
        .headers
        .as_ref()
        .and_then(|h| h.as_object())
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut tries = c.callback_tries;
    let mut backoff = Duration::from_millis(500);
    loop {
        let body = c.result.clone().unwrap_or_default();
        let r = client::request("POST", url, &headers, body, CALLBACK_TIMEOUT).await;
        tries += 1;
        let outcome = match &r {
            Ok(resp) if (200..300).contains(&resp.status) => Some(CallState::Delivered),
            _ if tries >= CALLBACK_TRIES => Some(CallState::Undeliverable),
            _ => None,
        };
        if let Err(e) = gw
            .engine
            .with_store(|s| s.callback_tried(&c.call_id, outcome))
        {
            tracing::error!(call = %c.call_id, "cannot record the callback: {e}");
        }
        match outcome {
            Some(CallState::Delivered) => return,
            Some(_) => {
                tracing::warn!(call = %c.call_id, url, "callback given up after {tries} tries: {r:?}");
                return;
            }
            None => {
                tracing::info!(call = %c.call_id, url, "callback failed, retrying in {backoff:?}: {:?}", r.map(|r| r.status));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
