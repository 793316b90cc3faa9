//! The Switch reconciler: one SNMP session per switch, one poll per `pollInterval` of every
//! port a worker uses, written to the switch's status (`Reachable`, sysName, uptime, ports);
//! board workers then derive `LinkUp` from it. An unreachable switch makes links Unknown,
//! never "down".

use super::status::{CondStatus, Status};
use super::vm::{Presence, VmDriver};
use super::{Engine, Next, lock};
use crate::drivers::snmp::{ProcessEnv, SnmpSwitch, SwitchConfig};
use crate::manifest::Kind;
use crate::manifest::types::{SwitchSpec, WorkerSpec};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

impl<D: VmDriver, P: Presence> Engine<D, P> {
    /// The session for a switch, rebuilt when its spec changed.
    fn snmp_session(
        &self,
        name: &str,
        spec: &SwitchSpec,
        spec_json: &Value,
    ) -> Result<Arc<SnmpSwitch>, String> {
        let mut sessions = lock(&self.switches);
        if let Some((json, s)) = sessions.get(name)
            && json == spec_json
        {
            return Ok(s.clone());
        }
        let cfg = SwitchConfig::from_spec(name, spec, &ProcessEnv).map_err(|e| e.to_string())?;
        let s = Arc::new(SnmpSwitch::new(cfg));
        sessions.insert(name.to_string(), (spec_json.clone(), s.clone()));
        Ok(s)
    }

    pub(super) async fn reconcile_switch(&self, name: &str) -> Result<Next, String> {
        let Some(obj) = self.get(Kind::Switch, name) else {
            lock(&self.switches).remove(name);
            return Ok(Next::Done);
        };
        let spec: SwitchSpec =
            serde_json::from_value(obj.spec.clone()).map_err(|e| format!("stored spec: {e}"))?;
        let interval = spec.poll_interval.parse().unwrap_or(Duration::from_secs(5));
        // (port key, worker) for every board on this switch
        let mut ports: Vec<(String, String)> = Vec::new();
        let workers = self
            .with_store(|s| s.list(Some(Kind::Worker)))
            .map_err(|e| e.to_string())?;
        for w in &workers {
            let Ok(ws) = serde_json::from_value::<WorkerSpec>(w.spec.clone()) else {
                continue;
            };
            if let Some(net) = ws.board.and_then(|b| b.network)
                && net.switch.as_deref() == Some(name)
                && let Some(port) = net.port
            {
                ports.push((port, w.name.clone()));
            }
        }
        let mut st = Status::from_value(&obj.status);
        // Taken before the poll: a press during it is newer than what the poll saw.
        let polled_at = crate::store::clock::now_millis();
        let polled = match self.snmp_session(name, &spec, &obj.spec) {
            Err(e) => Err(("Config".to_string(), e)),
            Ok(session) => {
                let keys: Vec<&str> = ports.iter().map(|(p, _)| p.as_str()).collect();
                let limit = session.config().request_deadline() * 4 + Duration::from_secs(1);
                match tokio::time::timeout(limit, session.poll(&keys)).await {
                    Ok(Ok(obs)) => Ok(obs),
                    Ok(Err(e)) => Err((e.reason().to_string(), e.to_string())),
                    Err(_) => Err(("Timeout".to_string(), format!("no answer within {limit:?}"))),
                }
            }
        };
        match polled {
            Ok(obs) => {
                let rows: Vec<Value> = obs
                    .ports
                    .iter()
                    .map(|p| {
                        let worker = ports
                            .iter()
                            .find(|(k, _)| *k == p.key)
                            .map(|(_, w)| w.clone());
                        json!({
                            "key": p.key, "index": p.index, "name": p.name, "descr": p.descr,
                            "oper": p.oper.as_str(), "admin": p.admin.as_str(),
                            "speedMbps": p.speed_mbps, "worker": worker,
                        })
                    })
                    .collect();
                let unresolved: Vec<Value> = obs
                    .unresolved
                    .iter()
                    .map(|u| json!({"key": u.key, "reason": u.error.reason(), "message": u.error.to_string()}))
                    .collect();
                st.set_phase("Reachable")
                    .set("polledAtMs", json!(polled_at))
                    .set("sysName", json!(obs.sys_name))
                    .set("uptimeSeconds", json!(obs.uptime.as_secs()))
                    .set("ports", json!(rows))
                    .set(
                        "unresolvedPorts",
                        if unresolved.is_empty() {
                            Value::Null
                        } else {
                            json!(unresolved)
                        },
                    )
                    .condition("Reachable", CondStatus::True, "Polled", "");
            }
            Err((reason, message)) => {
                if st.condition_status("Reachable") != Some("False") {
                    self.event(
                        Kind::Switch,
                        name,
                        crate::store::EventType::Warning,
                        "Unreachable",
                        &message,
                    );
                }
                st.set_phase("Unreachable")
                    .set("ports", Value::Null)
                    .condition("Reachable", CondStatus::False, &reason, &message);
            }
        }
        st.observed(obj.generation);
        self.write_status(Kind::Switch, name, &mut st);
        for (_, w) in ports {
            self.queue.add((Kind::Worker, w));
        }
        Ok(Next::RequeueAfter(interval))
    }

    /// Bounces a board's port (down, `hold`, up); the port is brought up again if the bounce
    /// failed between its two SETs.
    pub(super) async fn bounce_port(
        &self,
        switch: &str,
        port: &str,
        hold: Duration,
    ) -> Result<(), String> {
        let obj = self
            .get(Kind::Switch, switch)
            .ok_or_else(|| format!("switch {switch} is not declared"))?;
        let spec: SwitchSpec =
            serde_json::from_value(obj.spec.clone()).map_err(|e| format!("stored spec: {e}"))?;
        let session = self.snmp_session(switch, &spec, &obj.spec)?;
        if let Err(e) = session.bounce(port, hold).await {
            let _ = session.set_admin_status(port, true).await;
            return Err(format!("bounce of {switch} port {port}: {e}"));
        }
        Ok(())
    }

    /// `LinkUp` of a board on a switch port, from the switch's last poll.
    pub(super) fn link_up(
        &self,
        worker: &str,
        switch: &str,
        port: &str,
    ) -> (CondStatus, String, String) {
        let Some(sw) = self.get(Kind::Switch, switch) else {
            return (
                CondStatus::Unknown,
                "SwitchMissing".into(),
                format!("switch {switch} is not declared"),
            );
        };
        let st = Status::from_value(&sw.status);
        match st.condition_status("Reachable") {
            Some("True") => {}
            Some(_) => {
                return (
                    CondStatus::Unknown,
                    "SwitchUnreachable".into(),
                    format!("switch {switch} did not answer its last poll"),
                );
            }
            None => return (CondStatus::Unknown, "NotPolledYet".into(), String::new()),
        }
        let row = st.get("ports").and_then(|p| p.as_array()).and_then(|rows| {
            rows.iter()
                .find(|r| r.get("worker").and_then(|w| w.as_str()) == Some(worker))
                .cloned()
        });
        match row {
            Some(r) => {
                let oper = r
                    .get("oper")
                    .and_then(|o| o.as_str())
                    .unwrap_or("unknown")
                    .to_string();
                let up = oper == "up";
                (
                    CondStatus::from_bool(up),
                    if up {
                        "LinkUp".into()
                    } else {
                        "LinkDown".into()
                    },
                    format!("port {port} oper {oper}"),
                )
            }
            None => (
                CondStatus::Unknown,
                "PortUnresolved".into(),
                format!("port {port} is not on switch {switch}"),
            ),
        }
    }
}
