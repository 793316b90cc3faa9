//! A small blocking client for etcd's v3 JSON gateway (`POST /v3/...` on the client port):
//! one keep-alive HTTP/1.1 connection (plain or TLS, see `transport`), moved to the next
//! endpoint when one stops answering.
//! Blocking, like SQLite: the store is called from sync code and from inside the runtime
//! alike, and a short request to a local etcd costs what a SQLite fsync does.

use super::tls::TlsFileError;
pub use super::transport::host_port;
use super::transport::{Connector, Stream};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::sync::Mutex;
use std::time::Duration;

/// How long to keep asking members that have no leader (a few of etcd's default 1 s election
/// timeouts), and how often.
const ELECTION_WAIT: Duration = Duration::from_secs(3);
const ELECTION_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint answered ({endpoints}): {last}")]
    Unreachable { endpoints: String, last: String },
    #[error(
        "etcd ({endpoints}) has no quorum: the members that answer cannot elect a leader or commit ({last})"
    )]
    NoQuorum { endpoints: String, last: String },
    #[error("TLS with etcd ({endpoints}) failed: {last}")]
    Tls { endpoints: String, last: String },
    #[error(transparent)]
    TlsFiles(#[from] TlsFileError),
    #[error("etcd {endpoint} refused {path}: {message}")]
    Refused {
        endpoint: String,
        path: String,
        message: String,
    },
    #[error("etcd {endpoint} answered {path} with something that is not etcd's JSON: {detail}")]
    Protocol {
        endpoint: String,
        path: String,
        detail: String,
    },
}

pub type EtcdResult<T> = std::result::Result<T, EtcdError>;

/// Writes one POST with a JSON body.
pub(crate) fn send_post(
    s: &mut impl Write,
    endpoint: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        host_port(endpoint),
        body.len()
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    s.write_all(&msg)?;
    s.flush()
}

/// Status line and the headers that frame the body.
pub(crate) struct Head {
    pub status: u16,
    pub length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
}

fn bad(detail: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, detail.into())
}

pub(crate) fn read_head(r: &mut impl BufRead) -> std::io::Result<Head> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
        close: false,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.length = value.parse().ok(),
            "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
}

fn read_body(r: &mut impl BufRead, head: &Head) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
            body.truncate(start + size);
            if size == 0 {
                // trailers end with an empty line; etcd sends none
                return Ok(body);
            }
        }
    } else if let Some(n) = head.length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

struct Conn {
    endpoint: usize,
    stream: BufReader<Stream>,
}

/// The connection to an etcd cluster.
pub struct Client {
    endpoints: Vec<String>,
    connector: Connector,
    conn: Mutex<Option<Conn>>,
    /// Endpoint to try first when reconnecting (the last that answered).
    preferred: std::sync::atomic::AtomicUsize,
}

impl Client {
    pub fn new(endpoints: Vec<String>, connector: Connector) -> Client {
        Client {
            endpoints,
            connector,
            conn: Mutex::new(None),
            preferred: Default::default(),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn exchange(
        conn: &mut Conn,
        endpoint: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(Head, Vec<u8>)> {
        send_post(conn.stream.get_mut(), endpoint, path, body)?;
        let head = read_head(&mut conn.stream)?;
        let body = read_body(&mut conn.stream, &head)?;
        Ok((head, body))
    }

    /// POSTs `body` to `path` and returns etcd's JSON answer. A connection that fails is
    /// dropped and the request sent to the next endpoint: every request this store sends is
    /// either a read or guarded by a compare, so a repeat cannot apply a write twice.
    /// Members that answer without a leader are asked again for up to `ELECTION_WAIT`: when
    /// the leader dies the others need an election timeout to choose the next one, and one
    /// member down must not fail a request.
    pub fn call(&self, path: &str, body: &Value) -> EtcdResult<Value> {
        let bytes = body.to_string().into_bytes();
        let started = std::time::Instant::now();
        loop {
            match self.call_round(path, &bytes) {
                Err(EtcdError::NoQuorum { .. }) if started.elapsed() < ELECTION_WAIT => {
                    std::thread::sleep(ELECTION_POLL);
                }
                answer => return answer,
            }
        }
    }

    /// One round of `call`: each endpoint once.
    fn call_round(&self, path: &str, bytes: &[u8]) -> EtcdResult<Value> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.endpoints.len().max(1);
        let first = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        let mut last = String::from("no endpoints");
        // A member answered but could not serve for want of a leader.
        let mut leaderless = false;
        // A member that failed for a TLS reason: that is what to report, not "unreachable".
        let mut tls_failed: Option<String> = None;
        // Each endpoint once, plus one retry on a kept-alive connection the peer had closed.
        for i in 0..=n {
            let idx = match guard.as_ref() {
                Some(c) => c.endpoint,
                None => (first + i) % n,
            };
            let Some(endpoint) = self.endpoints.get(idx) else {
                break;
            };
            let fresh = guard.is_none();
            if fresh {
                match self.connector.connect(endpoint) {
                    Ok(s) => {
                        *guard = Some(Conn {
                            endpoint: idx,
                            stream: BufReader::new(s),
                        })
                    }
                    Err(e) => {
                        last = format!("{endpoint}: {e}");
                        if let Some(r) = self.connector.tls_reason(endpoint, &e) {
                            tls_failed = Some(format!("{endpoint}: {r}"));
                        }
                        continue;
                    }
                }
            }
            let Some(conn) = guard.as_mut() else {
                continue;
            };
            match Self::exchange(conn, endpoint, path, bytes) {
                Ok((head, body)) => {
                    if head.close {
                        *guard = None;
                    }
                    let value: Value =
                        serde_json::from_slice(&body).map_err(|e| EtcdError::Protocol {
                            endpoint: endpoint.clone(),
                            path: path.to_string(),
                            detail: format!("{e} (HTTP {})", head.status),
                        })?;
                    if head.status != 200 {
                        let message = value
                            .get("message")
                            .or_else(|| value.get("error"))
                            .and_then(Value::as_str)
                            .map_or_else(|| value.to_string(), str::to_string);
                        // A member without quorum or leader answers (its own timeout, or
                        // the gateway's deadline on the request); another may do better.
                        if [
                            "no leader",
                            "leader changed",
                            "timed out",
                            "deadline exceeded",
                        ]
                        .iter()
                        .any(|m| message.contains(m))
                        {
                            leaderless = true;
                            last = format!("{endpoint}: {message}");
                            *guard = None;
                            continue;
                        }
                        return Err(EtcdError::Refused {
                            endpoint: endpoint.clone(),
                            path: path.to_string(),
                            message,
                        });
                    }
                    self.preferred
                        .store(idx, std::sync::atomic::Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    let reason = match self.connector.is_tls() {
                        true => self.connector.tls_reason(endpoint, &e),
                        // A kept-alive connection the member closed is ordinary.
                        false if fresh => super::transport::plain_to_tls(endpoint, &e),
                        false => None,
                    };
                    if let Some(r) = reason {
                        tls_failed = Some(format!("{endpoint}: {r}"));
                    }
                    *guard = None;
                }
            }
        }
        let endpoints = self.endpoints.join(",");
        Err(if let Some(last) = tls_failed {
            EtcdError::Tls { endpoints, last }
        } else if leaderless {
            EtcdError::NoQuorum { endpoints, last }
        } else {
            EtcdError::Unreachable { endpoints, last }
        })
    }
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The key just past every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return b64(&end);
        }
    }
    b64(&[0])
}

/// etcd's JSON gives int64 fields as strings.
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::I(i) => Ok(i),
    }
}

/// One key-value as a range answers it, key and value decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct Kv {
    #[serde(deserialize_with = "de_b64_string")]
    pub key: String,
    #[serde(default, deserialize_with = "de_b64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub mod_revision: i64,
}

fn de_b64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

fn de_b64_string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    String::from_utf8(de_b64(d)?).map_err(serde::de::Error::custom)
}

/// The key-values of a range answer (or of a range inside a txn answer).
pub fn kvs(answer: &Value) -> std::result::Result<Vec<Kv>, String> {
    match answer.get("kvs") {
        None => Ok(Vec::new()),
        Some(v) => Vec::<Kv>::deserialize(v).map_err(|e| e.to_string()),
    }
}

/// The store revision an answer was made at.
pub fn revision(answer: &Value) -> i64 {
    answer
        .pointer("/header/revision")
        .and_then(|v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_i64())
        })
        .unwrap_or(0)
}

/// How a range is ordered and cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeOpts {
    pub limit: i64,
    pub descend: bool,
    /// `KEY`, `CREATE` or `MOD`.
    pub target: Option<&'static str>,
    pub min_create_revision: i64,
}

/// A range request body over the keys starting with `prefix` (or exactly `key` when
/// `prefix` is false).
pub fn range_req(key: &str, prefix: bool, o: RangeOpts) -> Value {
    let mut r = json!({ "key": b64(key.as_bytes()) });
    if prefix {
        r["range_end"] = json!(prefix_end(key));
    }
    if o.limit > 0 {
        r["limit"] = json!(o.limit.to_string());
    }
    if let Some(t) = o.target {
        r["sort_target"] = json!(t);
        r["sort_order"] = json!(if o.descend { "DESCEND" } else { "ASCEND" });
    }
    if o.min_create_revision > 0 {
        r["min_create_revision"] = json!(o.min_create_revision.to_string());
    }
    r
}

pub fn put_op(key: &str, value: &[u8]) -> Value {
    json!({ "request_put": { "key": b64(key.as_bytes()), "value": b64(value) } })
}

pub fn delete_op(key: &str) -> Value {
    json!({ "request_delete_range": { "key": b64(key.as_bytes()) } })
}

pub fn delete_prefix_op(prefix: &str) -> Value {
    json!({ "request_delete_range": { "key": b64(prefix.as_bytes()), "range_end": prefix_end(prefix) } })
}

pub fn range_op(key: &str, prefix: bool) -> Value {
    json!({ "request_range": range_req(key, prefix, RangeOpts::default()) })
}

/// Compare: the key does not exist.
pub fn absent(key: &str) -> Value {
    json!({ "key": b64(key.as_bytes()), "target": "VERSION", "result": "EQUAL", "version": "0" })
}

/// Compare: the key exists.
pub fn present(key: &str) -> Value {
    json!({ "key": b64(key.as_bytes()), "target": "VERSION", "result": "GREATER", "version": "0" })
}

/// Compare: the key holds exactly `value` (false when it does not exist).
pub fn holds(key: &str, value: &[u8]) -> Value {
    json!({ "key": b64(key.as_bytes()), "target": "VALUE", "result": "EQUAL", "value": b64(value) })
}

/// Compare: the key was last written at `rev` (0: it does not exist).
pub fn unchanged_since(key: &str, rev: i64) -> Value {
    json!({ "key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() })
}

pub fn succeeded(answer: &Value) -> bool {
    answer
        .get("succeeded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The answers to a txn's operations, in order.
pub fn responses(answer: &Value) -> &[Value] {
    answer
        .get("responses")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback stand-in for one etcd member's JSON gateway that answers every request with
    /// `status` and `body`, on kept-alive connections; counts the requests it served.
    fn member(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = listener.local_addr().expect("addr").to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut w = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut r = BufReader::new(conn);
                    while let Some(_request) = read_request(&mut r) {
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (endpoint, served)
    }

    /// One HTTP request (head and body) from a test stand-in's connection: its body, or
    /// `None` once the client is gone.
    pub(in crate::store::etcd) fn read_request(r: &mut impl BufRead) -> Option<Vec<u8>> {
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.trim_end().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body).ok()?;
        Some(body)
    }

    const LEADER_CHANGED: &str = r#"{"error":"etcdserver: leader changed","code":14,"message":"etcdserver: leader changed"}"#;
    const OK: &str = r#"{"header":{"revision":"7"}}"#;

    /// A member answering "leader changed" (its leader is being replaced) is passed over for
    /// the next member within the same call, which is then asked first.
    #[test]
    fn a_member_whose_leader_changed_is_passed_over() {
        let (a, at_a) = member(503, LEADER_CHANGED);
        let (b, at_b) = member(200, OK);
        let client = Client::new(vec![a, b], Connector::plain());
        let answer = client.call("/v3/kv/range", &json!({})).expect("answer");
        assert_eq!(revision(&answer), 7);
        assert_eq!(
            (at_a.load(Ordering::SeqCst), at_b.load(Ordering::SeqCst)),
            (1, 1)
        );
        client.call("/v3/kv/range", &json!({})).expect("answer");
        assert_eq!(
            (at_a.load(Ordering::SeqCst), at_b.load(Ordering::SeqCst)),
            (1, 2),
            "the member that answered was not asked first"
        );
    }

    /// When every member says its leader changed, they are asked again (an election takes
    /// a timeout or two) and then the call fails naming the lost quorum.
    #[test]
    fn members_without_a_leader_are_asked_again_then_no_quorum() {
        let (a, at_a) = member(503, LEADER_CHANGED);
        let (b, at_b) = member(503, LEADER_CHANGED);
        let client = Client::new(vec![a, b], Connector::plain());
        let err = client
            .call("/v3/kv/range", &json!({}))
            .expect_err("no leader anywhere");
        assert!(matches!(err, EtcdError::NoQuorum { .. }), "{err}");
        assert!(err.to_string().contains("leader changed"), "{err}");
        assert!(
            at_a.load(Ordering::SeqCst) > 1 && at_b.load(Ordering::SeqCst) > 1,
            "asked once only: {} / {}",
            at_a.load(Ordering::SeqCst),
            at_b.load(Ordering::SeqCst)
        );
    }

    /// Any other refusal is the answer: not retried, not sent to another member.
    #[test]
    fn a_refusal_is_not_retried_elsewhere() {
        let (a, at_a) = member(
            400,
            r#"{"error":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
        );
        let (b, at_b) = member(200, OK);
        let client = Client::new(vec![a, b], Connector::plain());
        let err = client
            .call("/v3/kv/range", &json!({}))
            .expect_err("refused");
        assert!(matches!(err, EtcdError::Refused { .. }), "{err}");
        assert_eq!(
            (at_a.load(Ordering::SeqCst), at_b.load(Ordering::SeqCst)),
            (1, 0)
        );
    }
}
