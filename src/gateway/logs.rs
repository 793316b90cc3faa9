//! `GET /system/logs?name=F[&tail=N][&since=T][&follow=true]`: one NDJSON line per gateway
//! attempt of F, in OpenFaaS's log message shape. With `follow` the response stays open and
//! carries each new attempt as the gateway records it, until the client goes or the gateway
//! stops.

use super::Gateway;
use super::deploy::NAMESPACE;
use super::system::{internal, text};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::store::clock;
use crate::store::gateway::{LogLine, LogQuery};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};

/// Lines returned when `tail` is absent or ≤ 0 (OpenFaaS's "unlimited"): a cap, so that one
/// response stays bounded whatever the history.
const DEFAULT_TAIL: u32 = 1000;

const NDJSON: &str = "application/x-ndjson";

struct Params {
    name: String,
    tail: u32,
    since_ms: Option<i64>,
    follow: bool,
}

/// The query's parameters, or the 400 message naming the one that is wrong.
fn params(q: &HashMap<String, String>) -> Result<Params, String> {
    let Some(name) = q.get("name").filter(|n| !n.is_empty()) else {
        return Err("name: the function's name is required".into());
    };
    let tail = match q
        .get("tail")
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<i64>())
    {
        None => DEFAULT_TAIL,
        Some(Ok(t)) if t <= 0 => DEFAULT_TAIL,
        Some(Ok(t)) => u32::try_from(t).unwrap_or(u32::MAX),
        Some(Err(_)) => return Err("tail: expected a number".into()),
    };
    let since_ms = match q.get("since").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(clock::parse_rfc3339_millis(s).ok_or_else(|| {
            format!("since: expected an RFC 3339 time such as 2026-11-29T16:39:27Z, got `{s}`")
        })?),
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return Err(format!("follow: expected true or false, got `{other}`")),
    };
    Ok(Params {
        name: name.clone(),
        tail,
        since_ms,
        follow,
    })
}

/// One log message, newline-terminated.
fn line(function: &str, l: &LogLine) -> Bytes {
    let v = json!({
        "name": function,
        "namespace": NAMESPACE,
        "instance": l.worker.clone().unwrap_or_default(),
        "timestamp": clock::format_unix_millis(l.finished_ms),
        "text": l.text,
    });
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

pub(super) async fn logs<D: VmDriver>(
    State(gw): State<Arc<Gateway<D>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = match params(&q) {
        Ok(p) => p,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    if gw.engine.get(Kind::Function, &p.name).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("function `{}` not found", p.name),
        );
    }
    // Subscribed before the first read, so an attempt recorded in between still wakes us.
    let logged = gw.logged.subscribe();
    let query = LogQuery {
        tail: Some(p.tail),
        since_ms: p.since_ms,
        after_id: None,
    };
    let lines = match gw.engine.with_store(|s| s.gateway_log(&p.name, query)) {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    if !p.follow {
        let out: Vec<u8> = lines.iter().flat_map(|l| line(&p.name, l)).collect();
        return ([(header::CONTENT_TYPE, NDJSON)], out).into_response();
    }
    // Few lines in flight: a slow reader holds the follower back rather than memory growing.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(gw.clone(), p, lines, logged, tx));
    ([(header::CONTENT_TYPE, NDJSON)], Body::new(Lines(rx))).into_response()
}

/// Sends `backlog`, then every new attempt of the function each time the gateway records
/// one; ends when the response is dropped (the client went), or the gateway stops.
async fn follow<D: VmDriver>(
    gw: Arc<Gateway<D>>,
    p: Params,
    backlog: Vec<LogLine>,
    mut logged: watch::Receiver<u64>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut after = backlog.last().map(|l| l.id);
    for l in &backlog {
        if tx.send(line(&p.name, l)).await.is_err() {
            return;
        }
    }
    let mut stopping = gw.stopping.clone();
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            r = stopping.changed() => if r.is_err() { return },
            r = logged.changed() => if r.is_err() { return },
        }
        let q = LogQuery {
            tail: None,
            since_ms: p.since_ms,
            after_id: after,
        };
        let lines =
            tokio::task::block_in_place(|| gw.engine.with_store(|s| s.gateway_log(&p.name, q)));
        let lines = match lines {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(function = %p.name, "log follower stops: {e}");
                return;
            }
        };
        for l in &lines {
            after = Some(l.id);
            if tx.send(line(&p.name, l)).await.is_err() {
                return;
            }
        }
    }
}

/// A response body of the lines a follower sends; dropping it (hyper does when the client
/// disconnects) closes the channel, which ends the follower.
pub(crate) struct Lines(pub(crate) mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|l| l.map(|b| Ok(Frame::data(b))))
    }
}
