//! The store over etcd (v3, through its JSON gateway): the same records as the SQLite store,
//! kept under one key prefix so several orchestrators and CLIs on other machines share them.
//!
//! Key layout under `PREFIX/`:
//! - `obj/KIND/NAME/spec`   desired object (labels, spec, generation, applyset, deletion mark)
//! - `obj/KIND/NAME/status` its status, a key of its own so the engine's status writes never
//!   conflict with an apply's generation bump; both come back in one range read
//! - `applysets/ID`         the files an applyset came from
//! - `events/KIND/NAME/H`   one event per (type, reason, message), H a hash of the three;
//!   ordered by mod revision (newest last-seen first)
//! - `runs/WORKLOAD/RUN`    runs, RUN zero-padded so key order is run order
//! - `attempts/WORKLOAD/RUN/INVOCATION/ATTEMPT` attempts; a key's create revision is its
//!   row number for readers that follow a run (`attempts_since`)
//! - `samples/METER/TIME.N`, `phases/WORKER/TIME.N` energy records, in time order
//! - `gwcalls/ID`, `gwscale/FUNCTION` the gateway's queue and replica scale
//!
//! Every read-modify-write is a transaction comparing the mod revision read (compare-and-swap,
//! retried on conflict), so two writers never lose each other's updates. Every connection
//! (store, lease keeper, watch) is plain HTTP or TLS as the location says (`transport`).

pub mod client;
mod gateway;
pub mod lease;
mod objects;
mod records;
mod rest;
pub mod tls;
mod transport;
mod watch;

use super::{Result, StoreError};
use client::{Client, EtcdError, Kv};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
pub use tls::{ClientCert, TlsFiles};
use transport::Connector;

/// Where an etcd store lives: its members' client URLs, the key prefix it owns, and the TLS
/// files when its members serve TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLocation {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<TlsFiles>,
}

/// A store URL as the command line gives it: the TLS files come from other flags, so an
/// `etcds://` URL only says that TLS is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub location: EtcdLocation,
    pub tls: bool,
}

impl EtcdLocation {
    /// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (plain HTTP) or `etcds://...` (TLS); the
    /// prefix defaults to `microfaas`.
    pub fn parse(url: &str) -> std::result::Result<ParsedUrl, String> {
        let (rest, tls) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => {
                return Err(format!(
                    "{url:?}: a store URL starts with etcd:// (or etcds:// for TLS)"
                ));
            }
        };
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!(
                "{url:?}: no etcd endpoint (etcd://HOST:PORT,.../PREFIX)"
            ));
        }
        for e in &endpoints {
            if !e.contains(':') {
                return Err(format!("{url:?}: endpoint {e:?} has no port"));
            }
        }
        let prefix = prefix.trim_matches('/');
        Ok(ParsedUrl {
            location: EtcdLocation {
                endpoints,
                prefix: if prefix.is_empty() {
                    "microfaas".to_string()
                } else {
                    prefix.to_string()
                },
                tls: None,
            },
            tls,
        })
    }

    /// The URL form, also the store's `path()` (the change feed's key).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}/{}", self.endpoints.join(","), self.prefix)
    }
}

pub struct EtcdStore {
    client: Client,
    connector: Connector,
    location: EtcdLocation,
    /// `PREFIX/`.
    root: String,
    path: PathBuf,
}

/// How often a compare-and-swap is retried before the store gives up on a contended key.
const CAS_TRIES: usize = 50;

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> StoreError {
        StoreError::Etcd(e.to_string())
    }
}

fn corrupt(what: &str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// A record's JSON value.
fn decode<T: serde::de::DeserializeOwned>(kv: &Kv) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv.key, e))
}

fn encode(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec())
}

/// Names become key segments: one with a `/` would read as two.
fn segment(what: &str, s: &str) -> Result<()> {
    if s.contains('/') || s.is_empty() {
        return Err(StoreError::Etcd(format!(
            "{what} {s:?} cannot be stored in etcd: it is empty or contains '/'"
        )));
    }
    Ok(())
}

impl EtcdStore {
    /// Connects and checks that a member answers (nothing is created: the layout needs no
    /// schema).
    pub fn open(location: &EtcdLocation) -> Result<EtcdStore> {
        let connector = Connector::load(location.tls.as_ref()).map_err(EtcdError::from)?;
        let store = EtcdStore {
            client: Client::new(location.endpoints.clone(), connector.clone()),
            connector,
            root: format!("{}/", location.prefix),
            path: PathBuf::from(location.url()),
            location: location.clone(),
        };
        store.range(
            &store.root,
            true,
            client::RangeOpts {
                limit: 1,
                ..Default::default()
            },
        )?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn location(&self) -> &EtcdLocation {
        &self.location
    }

    /// The change feed: starts the watch on the prefix if none runs in this process. A new
    /// watch starts after the store's revision as of this call, so a write made as soon as
    /// this returns is announced even if the watch connects after it.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        let rx = super::feed::subscribe(&self.path);
        watch::ensure(
            &self.location.url(),
            &self.location.endpoints,
            &self.connector,
            &self.root,
            super::feed::sender(&self.path),
            || self.revision_now(),
        );
        rx
    }

    /// The store's revision now, or 0 when no member answers (the watch then starts at
    /// whatever revision it connects at). Serializable: no wait for a quorum, and a member
    /// behind the leader only makes the feed announce a few changes twice.
    fn revision_now(&self) -> i64 {
        let mut req = client::range_req(&self.root, false, client::RangeOpts::default());
        req["serializable"] = serde_json::Value::Bool(true);
        self.client
            .call("/v3/kv/range", &req)
            .map_or(0, |answer| client::revision(&answer))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }

    fn range(&self, key: &str, prefix: bool, o: client::RangeOpts) -> Result<Vec<Kv>> {
        let answer = self
            .client
            .call("/v3/kv/range", &client::range_req(key, prefix, o))?;
        client::kvs(&answer).map_err(|e| corrupt(key, e))
    }

    fn get_kv(&self, key: &str) -> Result<Option<Kv>> {
        Ok(self
            .range(key, false, client::RangeOpts::default())?
            .into_iter()
            .next())
    }

    /// The last key (in key order) under `PREFIX/rest`.
    fn last_under(&self, rest: &str) -> Result<Option<Kv>> {
        let kvs = self.range(
            &self.key(rest),
            true,
            client::RangeOpts {
                limit: 1,
                descend: true,
                target: Some("KEY"),
                ..Default::default()
            },
        )?;
        Ok(kvs.into_iter().next())
    }

    fn txn(&self, compare: Vec<Value>, success: Vec<Value>, failure: Vec<Value>) -> Result<Value> {
        Ok(self.client.call(
            "/v3/kv/txn",
            &json!({ "compare": compare, "success": success, "failure": failure }),
        )?)
    }

    /// Read-modify-write of one JSON record under compare-and-swap: `f` gets the current
    /// value (`None`: absent) and returns the new one (`None`: leave it). Retried on conflict.
    fn update<T, R>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> Result<(Option<T>, R)>,
    ) -> Result<R>
    where
        T: serde::de::DeserializeOwned + serde::Serialize,
    {
        for _ in 0..CAS_TRIES {
            let kv = self.get_kv(key)?;
            let rev = kv.as_ref().map_or(0, |k| k.mod_revision);
            let current = kv.as_ref().map(decode::<T>).transpose()?;
            let (next, r) = f(current)?;
            let Some(next) = next else {
                return Ok(r);
            };
            let answer = self.txn(
                vec![client::unchanged_since(key, rev)],
                vec![client::put_op(key, &encode(&next))],
                vec![],
            )?;
            if client::succeeded(&answer) {
                return Ok(r);
            }
        }
        Err(StoreError::Etcd(format!(
            "{key}: still contended after {CAS_TRIES} compare-and-swap attempts"
        )))
    }
}
