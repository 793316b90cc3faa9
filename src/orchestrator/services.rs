//! Binding a Function's services for one call on one worker: where that worker reaches each
//! server (a forwarded guest address on a user-networked VM, `advertise`/`endpoint` otherwise)
//! and the credentials, read from their file or environment variable at the moment of the call
//! so a rotated secret is picked up without a restart. Also the guest forwards themselves,
//! one per declared service, stable for a given set of services.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::manifest::types::{
    ClusterSpec, FunctionSpec, ServiceProtocol, ServiceSpec, VmNetworkMode, WorkerSpec,
};
use crate::protocol::ServiceBinding;

/// First guest address of a service forward (10.0.2.100 is the orchestrator's).
const FIRST_GUEST_HOST: u8 = 101;
/// Guest addresses stop at 10.0.2.254.
pub const MAX_FORWARDED: usize = 254 - FIRST_GUEST_HOST as usize + 1;

/// One forwarded service: the guest dials `guest:port`, QEMU relays to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub service: String,
    pub guest: Ipv4Addr,
    pub port: u16,
    pub target: String,
}

/// The forwards of a user-networked VM: one per declared service, in name order, each at its
/// own guest address and the endpoint's port.
pub fn guest_forwards(cluster: Option<&ClusterSpec>) -> Vec<Forward> {
    let Some(c) = cluster else {
        return Vec::new();
    };
    c.services
        .iter()
        .take(MAX_FORWARDED)
        .enumerate()
        .filter_map(|(i, (name, svc))| {
            let port = svc.endpoint.rsplit_once(':')?.1.parse().ok()?;
            Some(Forward {
                service: name.clone(),
                guest: Ipv4Addr::new(10, 0, 2, FIRST_GUEST_HOST + i as u8),
                port,
                target: svc.endpoint.clone(),
            })
        })
        .collect()
}

/// The services `function` may use on `worker`, by role. Errors name the service and say what
/// is missing (an unreadable password file, an unset variable, a service no longer declared).
pub fn bind(
    cluster: Option<&ClusterSpec>,
    function_name: &str,
    function: &FunctionSpec,
    worker: Option<&WorkerSpec>,
) -> Result<BTreeMap<String, ServiceBinding>, String> {
    let mut out = BTreeMap::new();
    if function.services.is_empty() {
        return Ok(out);
    }
    let forwards = guest_forwards(cluster);
    let user_net = worker
        .and_then(|w| w.vm.as_ref())
        .is_some_and(|vm| vm.network.mode == VmNetworkMode::User);
    for (role, name) in &function.services {
        let svc = cluster
            .and_then(|c| c.services.get(name))
            .ok_or_else(|| format!("service `{name}` is not declared in the Cluster"))?;
        if !svc.functions.is_empty() && !svc.functions.iter().any(|f| f == function_name) {
            return Err(format!(
                "service `{name}` does not allow Function `{function_name}`"
            ));
        }
        let address = if user_net {
            let f = forwards
                .iter()
                .find(|f| &f.service == name)
                .ok_or_else(|| format!("service `{name}` has no guest forward"))?;
            format!("{}:{}", f.guest, f.port)
        } else {
            svc.advertise
                .clone()
                .unwrap_or_else(|| svc.endpoint.clone())
        };
        out.insert(
            role.clone(),
            ServiceBinding {
                name: name.clone(),
                protocol: svc.protocol.as_str().to_string(),
                address,
                user: svc.user.clone(),
                password: password(name, svc)?,
                target: match svc.protocol {
                    ServiceProtocol::Postgres => svc.database.clone(),
                    ServiceProtocol::S3 => svc.bucket.clone(),
                    ServiceProtocol::Mqtt => svc.topic.clone(),
                    ServiceProtocol::Redis => None,
                },
                region: svc.region.clone(),
            },
        );
    }
    Ok(out)
}

fn password(name: &str, svc: &ServiceSpec) -> Result<Option<String>, String> {
    if let Some(path) = &svc.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("service `{name}`: cannot read its password file `{path}`: {e}")
        })?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
    }
    if let Some(var) = &svc.password_env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("service `{name}`: environment variable `{var}` is not set"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> ClusterSpec {
        serde_json::from_value(json!({"services": {
            "kv": {"protocol": "redis", "endpoint": "127.0.0.1:6380", "advertise": "192.168.1.1:6380",
                   "passwordEnv": "MICROFAAS_TEST_SVC_PW_UNSET"},
            "db": {"protocol": "postgres", "endpoint": "127.0.0.1:5433", "database": "shop",
                   "functions": ["buy"]},
        }}))
        .unwrap()
    }

    fn function(services: serde_json::Value) -> FunctionSpec {
        serde_json::from_value(
            json!({"runtime": "builtin", "handler": "psql_purchase", "services": services}),
        )
        .unwrap()
    }

    #[test]
    fn forwards_are_one_per_service_in_name_order() {
        let f = guest_forwards(Some(&cluster()));
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].service.as_str(), f[0].guest, f[0].port),
            ("db", Ipv4Addr::new(10, 0, 2, 101), 5433)
        );
        assert_eq!(
            (f[1].service.as_str(), f[1].guest, f[1].port),
            ("kv", Ipv4Addr::new(10, 0, 2, 102), 6380)
        );
        assert_eq!(f[1].target, "127.0.0.1:6380");
    }

    #[test]
    fn vms_get_the_forward_boards_the_advertised_address() {
        let c = cluster();
        let vm: WorkerSpec = serde_json::from_value(json!({"vm": {"kernel": "k"}})).unwrap();
        let board: WorkerSpec =
            serde_json::from_value(json!({"board": {"powerButton": {"pin": "P9_12"}}})).unwrap();
        let f = function(json!({"postgres": "db"}));
        let on_vm = bind(Some(&c), "buy", &f, Some(&vm)).unwrap();
        assert_eq!(on_vm["postgres"].address, "10.0.2.101:5433");
        assert_eq!(on_vm["postgres"].target.as_deref(), Some("shop"));
        let on_board = bind(Some(&c), "buy", &f, Some(&board)).unwrap();
        assert_eq!(on_board["postgres"].address, "127.0.0.1:5433");
    }

    #[test]
    fn refusals_name_the_service() {
        let c = cluster();
        let e = bind(
            Some(&c),
            "other",
            &function(json!({"postgres": "db"})),
            None,
        )
        .unwrap_err();
        assert!(e.contains("`db` does not allow Function `other`"), "{e}");
        let e = bind(Some(&c), "x", &function(json!({"redis": "kv"})), None).unwrap_err();
        assert!(
            e.contains("service `kv`") && e.contains("MICROFAAS_TEST_SVC_PW_UNSET"),
            "{e}"
        );
        let e = bind(Some(&c), "x", &function(json!({"redis": "gone"})), None).unwrap_err();
        assert!(e.contains("`gone` is not declared"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let b = ServiceBinding {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
