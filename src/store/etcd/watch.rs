//! The change feed over etcd: one thread per store location streams `POST /v3/watch` on the
//! whole prefix and bumps the process's feed counter (`store::feed`) for every revision that
//! changed something, so readers of live state see writes of any process on any machine. It
//! resumes after the last revision it saw when a member goes away, and ends once nobody
//! listens any more.

use super::client::{self, b64, prefix_end};
use super::transport::Connector;
use serde_json::{Value, json};
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// The locations a watcher thread runs for (one each).
static RUNNING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Starts the watcher for `location` unless one runs; it publishes on `tx` every change after
/// the revision `seen` returns (asked only when a watcher starts; 0: from when it connects).
pub fn ensure(
    location: &str,
    endpoints: &[String],
    connector: &Connector,
    prefix: &str,
    tx: watch::Sender<u64>,
    seen: impl FnOnce() -> i64,
) {
    {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if running.iter().any(|l| l == location) {
            return;
        }
        running.push(location.to_string());
    }
    // Before the thread: its connection (a TLS handshake on a loaded machine) can take longer
    // than the caller takes to write, and a watch created after a write never reports it.
    let seen = seen();
    let endpoints = endpoints.to_vec();
    let connector = connector.clone();
    let prefix = prefix.to_string();
    let location = location.to_string();
    let spawned = std::thread::Builder::new()
        .name("microfaas-etcd-watch".into())
        .spawn(move || {
            run(&endpoints, &connector, &prefix, &tx, seen);
            RUNNING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|l| *l != location);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the etcd watch: {e}");
    }
}

fn run(
    endpoints: &[String],
    connector: &Connector,
    prefix: &str,
    tx: &watch::Sender<u64>,
    seen: i64,
) {
    let mut next_rev = if seen > 0 { seen + 1 } else { 0 };
    let mut i = 0usize;
    // The last TLS failure told at warn level: a wrong CA fails every retry alike.
    let mut told = String::new();
    while tx.receiver_count() > 0 {
        let Some(endpoint) = endpoints.get(i % endpoints.len().max(1)) else {
            return;
        };
        i += 1;
        match stream(endpoint, connector, prefix, &mut next_rev, tx) {
            Ok(()) => return,
            Err(e) => {
                match connector.tls_reason(endpoint, &e) {
                    Some(r) if r != told => {
                        tracing::warn!("etcd watch on {endpoint}: {r}");
                        told = r;
                    }
                    _ => tracing::debug!("etcd watch on {endpoint}: {e}; trying the next member"),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Follows one member until it fails (`Err`) or nobody listens (`Ok`).
fn stream(
    endpoint: &str,
    connector: &Connector,
    prefix: &str,
    next_rev: &mut i64,
    tx: &watch::Sender<u64>,
) -> std::io::Result<()> {
    let mut s = connector.connect(endpoint)?;
    let mut create = json!({ "key": b64(prefix.as_bytes()), "range_end": prefix_end(prefix) });
    if *next_rev > 0 {
        create["start_revision"] = json!(next_rev.to_string());
    }
    let body = json!({ "create_request": create }).to_string();
    client::send_post(&mut s, endpoint, "/v3/watch", body.as_bytes())?;
    // Short reads so that a feed nobody listens to any more is noticed.
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut reader = std::io::BufReader::new(s);
    let head = client::read_head(&mut reader)?;
    if head.status != 200 {
        return Err(std::io::Error::other(format!("HTTP {}", head.status)));
    }
    // The body is chunked; framing and JSON lines are cut out of `raw` as they complete, so
    // a read timeout in the middle of either loses nothing.
    let mut raw: Vec<u8> = reader.buffer().to_vec();
    let mut s = reader.into_inner();
    let mut lines: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        while let Some(chunk) = take_chunk(&mut raw)? {
            if chunk.is_empty() {
                return Err(std::io::Error::other("the watch stream ended"));
            }
            lines.extend_from_slice(&chunk);
            while let Some(pos) = lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = lines.drain(..=pos).collect();
                on_message(&line, next_rev, tx)?;
            }
        }
        if tx.receiver_count() == 0 {
            return Ok(());
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(std::io::Error::other("connection closed")),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// One complete chunk from the front of `raw`, if it holds one.
fn take_chunk(raw: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let size_text = String::from_utf8_lossy(&raw[..eol]).to_string();
    let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
    if raw.len() < eol + 2 + size + 2 {
        return Ok(None);
    }
    let chunk = raw[eol + 2..eol + 2 + size].to_vec();
    raw.drain(..eol + 2 + size + 2);
    Ok(Some(chunk))
}

fn on_message(line: &[u8], next_rev: &mut i64, tx: &watch::Sender<u64>) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(line);
    if text.trim().is_empty() {
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
    let Some(result) = v.get("result") else {
        let detail = v
            .get("error")
            .map_or_else(|| v.to_string(), Value::to_string);
        return Err(std::io::Error::other(detail));
    };
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Err(std::io::Error::other(format!("watch cancelled: {result}")));
    }
    let events = result
        .get("events")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    // Resume after the newest event seen, not after the header's revision: that one may be
    // newer than events still to come.
    let newest = events
        .iter()
        .filter_map(|e| e.pointer("/kv/mod_revision"))
        .filter_map(|v| {
            v.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| v.as_i64())
        })
        .max();
    let rev = client::revision(result);
    if let Some(newest) = newest {
        *next_rev = (*next_rev).max(newest + 1);
        tx.send_modify(|n| *n = n.wrapping_add(1));
    } else if !events.is_empty() {
        tx.send_modify(|n| *n = n.wrapping_add(1));
    } else if *next_rev == 0 && rev > 0 {
        // The first answer (created): later reconnects resume after it.
        *next_rev = rev + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// One chunk of a chunked HTTP body.
    fn chunk(text: &str) -> String {
        format!("{:x}\r\n{text}\r\n", text.len())
    }

    /// The watch asks etcd for every change after the revision current when the feed was
    /// asked for, so a write made before its connection is up (a slow TLS handshake) is
    /// still announced. A loopback stand-in for the member records the create request and
    /// streams a change at that very revision.
    #[test]
    fn a_watch_starts_right_after_the_revision_seen_when_the_feed_was_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = listener.local_addr().expect("addr").to_string();
        let (got, request) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            let mut w = conn.try_clone().expect("clone");
            let mut r = BufReader::new(conn);
            let Some(body) = super::super::client::tests::read_request(&mut r) else {
                return;
            };
            let _ = got.send(body);
            // Created at the member's revision (50, later writes included), then the
            // change at 42 made before the watch connected.
            let created = r#"{"result":{"header":{"revision":"50"},"created":true}}"#;
            let change = r#"{"result":{"header":{"revision":"50"},"events":[{"kv":{"key":"L3Av","mod_revision":"42"}}]}}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
                chunk(&format!("{created}\n")),
                chunk(&format!("{change}\n"))
            );
            let _ = w.write_all(answer.as_bytes());
            // Held open until the test has seen the change (the thread ends with the test).
            std::thread::sleep(Duration::from_secs(10));
        });

        let (tx, mut rx) = watch::channel(0u64);
        rx.borrow_and_update();
        let location = format!("test-watch-{endpoint}");
        ensure(
            &location,
            std::slice::from_ref(&endpoint),
            &Connector::plain(),
            "/p/",
            tx,
            || 41,
        );
        let body = request
            .recv_timeout(Duration::from_secs(5))
            .expect("the watch was not created");
        let create: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            create.pointer("/create_request/start_revision"),
            Some(&json!("42")),
            "{create}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rx.has_changed().unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "the change at 42 was not announced"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
