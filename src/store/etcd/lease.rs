//! Ownership of workers and workloads by orchestrators sharing one etcd store: an etcd lease
//! per `serve` (granted with a TTL, kept alive), and one key per owned object,
//! `PREFIX/owners/KIND/NAME`, created only if absent and bound to the owner's lease, so it
//! disappears when the owner stops keeping its lease alive (killed, cut off from a quorum).
//! It has its own connection: a keep-alive must not queue behind the engine's store calls.

use super::client::{self, Client, EtcdError};
use super::{EtcdLocation, corrupt};
use crate::manifest::Kind;
use crate::store::{Result, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Who holds an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub orchestrator: String,
    pub lease: i64,
}

/// The lease calls and owner keys of one etcd store.
pub struct Leases {
    client: Client,
    /// `PREFIX/owners/`.
    root: String,
}

/// etcd answers int64 fields as strings.
fn int(v: Option<&Value>) -> i64 {
    v.and_then(|v| {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_i64())
    })
    .unwrap_or(0)
}

impl Leases {
    pub fn new(location: &EtcdLocation) -> Leases {
        Leases {
            // The store opened first has checked the TLS files.
            client: Client::new(
                location.endpoints.clone(),
                super::transport::Connector::lazy(location.tls.as_ref()),
            ),
            root: format!("{}/owners/", location.prefix),
        }
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        format!("{}{}/{name}", self.root, kind.singular())
    }

    /// A new lease of `ttl_secs`; its ID.
    pub fn grant(&self, ttl_secs: i64) -> Result<i64> {
        let a = self
            .client
            .call("/v3/lease/grant", &json!({ "TTL": ttl_secs.to_string() }))?;
        let id = int(a.get("ID"));
        if id == 0 {
            return Err(StoreError::Etcd(format!("lease grant answered {a}")));
        }
        Ok(id)
    }

    /// Renews `lease`; `Ok(false)` when it has expired (its keys are gone).
    pub fn keep_alive(&self, lease: i64) -> Result<bool> {
        let a = self
            .client
            .call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        // The gateway streams the answers: one, wrapped in `result`.
        let r = a.get("result").unwrap_or(&a);
        if let Some(e) = a.get("error") {
            return Err(StoreError::Etcd(format!("lease keep-alive: {e}")));
        }
        Ok(int(r.get("TTL")) > 0)
    }

    /// Ends `lease` now: its keys go at once, so other orchestrators need not wait its TTL.
    pub fn revoke(&self, lease: i64) -> Result<()> {
        match self
            .client
            .call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
        {
            Ok(_) => Ok(()),
            // Already expired: nothing left to end.
            Err(EtcdError::Refused { message, .. }) if message.contains("not found") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every held object of `kind`, by name.
    pub fn holders(&self, kind: Kind) -> Result<BTreeMap<String, Holder>> {
        let prefix = format!("{}{}/", self.root, kind.singular());
        let a = self.client.call(
            "/v3/kv/range",
            &client::range_req(&prefix, true, client::RangeOpts::default()),
        )?;
        let kvs = client::kvs(&a).map_err(|e| corrupt(&prefix, e))?;
        kvs.iter()
            .map(|kv| {
                let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key).to_string();
                let h: Holder =
                    serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv.key, e))?;
                Ok((name, h))
            })
            .collect()
    }

    /// Claims `kind/name` for `me` under `lease` if nobody holds it; the holder after the
    /// call (`me` when the claim won).
    pub fn claim(&self, kind: Kind, name: &str, me: &Holder) -> Result<Holder> {
        let key = self.key(kind, name);
        let value = serde_json::to_vec(me).map_err(|e| corrupt(&key, e))?;
        let mut put = client::put_op(&key, &value);
        put["request_put"]["lease"] = json!(me.lease.to_string());
        let a = self.client.call(
            "/v3/kv/txn",
            &json!({
                "compare": [client::absent(&key)],
                "success": [put],
                "failure": [client::range_op(&key, false)],
            }),
        )?;
        if client::succeeded(&a) {
            return Ok(me.clone());
        }
        let kv = client::responses(&a)
            .first()
            .and_then(|r| r.get("response_range"))
            .map(client::kvs)
            .transpose()
            .map_err(|e| corrupt(&key, e))?
            .and_then(|k| k.into_iter().next());
        match kv {
            Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| corrupt(&key, e)),
            // Gone between the compare and the read: try again next round.
            None => Ok(Holder {
                orchestrator: String::new(),
                lease: 0,
            }),
        }
    }

    /// Gives `kind/name` up if `lease` holds it.
    pub fn release(&self, kind: Kind, name: &str, lease: i64) -> Result<()> {
        let key = self.key(kind, name);
        self.client.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{ "key": client::b64(key.as_bytes()), "target": "LEASE",
                              "result": "EQUAL", "lease": lease.to_string() }],
                "success": [client::delete_op(&key)],
                "failure": [],
            }),
        )?;
        Ok(())
    }
}
