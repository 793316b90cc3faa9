//! The switch driver: link state of the ports boards hang off, read over SNMP (v2c or v3),
//! and a port bounce through ifAdminStatus.
//!
//! One [`SnmpSwitch`] per `Switch` object. Every method takes `&self` and the session inside is
//! behind a mutex, so requests to one switch are serialized while the engine shares the switch
//! (`Arc<SnmpSwitch>`) between reconcilers. Typical engine use:
//!
//! ```no_run
//! # async fn f(spec: &microfaas::manifest::types::SwitchSpec) -> Result<(), microfaas::drivers::snmp::SnmpError> {
//! use microfaas::drivers::snmp::{SnmpSwitch, SwitchConfig, ProcessEnv};
//! let sw = SnmpSwitch::new(SwitchConfig::from_spec("tor-1", spec, &ProcessEnv)?);
//! let obs = sw.poll(&["Gi1/0/1", "Gi1/0/2"]).await?;   // every pollInterval
//! for p in &obs.ports { println!("{} {:?}", p.key, p.oper); }
//! sw.bounce("Gi1/0/2", std::time::Duration::from_secs(2)).await?;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod poll;
mod resolve;
mod session;

pub use config::{
    AuthProtocol, Credentials, PrivProtocol, ProcessEnv, Secret, SecretSource, SwitchConfig,
};
pub use error::SnmpError;
pub use resolve::{Interface, PortMap};
pub use session::{Reply, TransportStats, Val, decode_reply, decode_reply_v3, dotted};

use poll::oids;
use serde::Serialize;
use session::Transport;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A poll re-walks the interface table for a key it cannot resolve at most this often, so a
/// worker with a mistyped port does not cost a table walk every poll interval. (`resolve`
/// always re-walks on a miss: it is called on demand, not periodically.)
pub const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// IF-MIB ifAdminStatus / ifOperStatus values (RFC 2863). Admin status only uses the first
/// three. Any other number an agent sends is reported as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IfStatus {
    Up,
    Down,
    Testing,
    Unknown,
    Dormant,
    NotPresent,
    LowerLayerDown,
}

impl IfStatus {
    pub fn from_raw(v: i64) -> Self {
        match v {
            1 => IfStatus::Up,
            2 => IfStatus::Down,
            3 => IfStatus::Testing,
            5 => IfStatus::Dormant,
            6 => IfStatus::NotPresent,
            7 => IfStatus::LowerLayerDown,
            _ => IfStatus::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IfStatus::Up => "up",
            IfStatus::Down => "down",
            IfStatus::Testing => "testing",
            IfStatus::Unknown => "unknown",
            IfStatus::Dormant => "dormant",
            IfStatus::NotPresent => "notPresent",
            IfStatus::LowerLayerDown => "lowerLayerDown",
        }
    }
}

/// One port as read in a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortState {
    /// The key it was asked for (the worker's `network.port`), or the ifName/ifDescr/ifIndex
    /// in `poll_all`.
    pub key: String,
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descr: Option<String>,
    pub oper: IfStatus,
    pub admin: IfStatus,
    /// ifHighSpeed, or ifSpeed / 10^6 on agents without the ifXTable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
}

/// A key that could not be mapped to a port (the others were still read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedPort {
    pub key: String,
    pub error: SnmpError,
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchObservation {
    pub sys_name: String,
    /// sysUpTime: time since the agent (re)started.
    pub uptime: Duration,
    /// In the order the keys were given (duplicates collapsed).
    pub ports: Vec<PortState>,
    pub unresolved: Vec<UnresolvedPort>,
}

impl SwitchObservation {
    pub fn port(&self, key: &str) -> Option<&PortState> {
        self.ports.iter().find(|p| p.key == key)
    }
}

struct State {
    transport: Transport,
    map: Option<PortMap>,
    /// When `map` was walked.
    map_read_at: Option<Instant>,
    last_uptime_ticks: Option<u64>,
    map_refreshes: u64,
}

/// A managed switch reached over SNMP. See the module docs.
pub struct SnmpSwitch {
    config: SwitchConfig,
    state: Mutex<State>,
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchStats {
    pub transport: TransportStats,
    /// Interface-table walks (first use, a key not found, sysUpTime going back).
    pub map_refreshes: u64,
}

impl SnmpSwitch {
    /// No I/O happens until the first call.
    pub fn new(config: SwitchConfig) -> Self {
        Self {
            state: Mutex::new(State {
                transport: Transport::new(&config),
                map: None,
                map_read_at: None,
                last_uptime_ticks: None,
                map_refreshes: 0,
            }),
            config,
        }
    }

    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    pub async fn stats(&self) -> SwitchStats {
        let st = self.state.lock().await;
        SwitchStats {
            transport: st.transport.stats,
            map_refreshes: st.map_refreshes,
        }
    }

    /// The interface a key designates; walks the interface table when the cached map is
    /// missing or does not know the key.
    pub async fn resolve(&self, key: &str) -> Result<Interface, SnmpError> {
        let mut st = self.state.lock().await;
        let fresh = st.map.is_none();
        let map = self.map(&mut st, fresh).await?;
        match map.resolve(&self.config.name, key) {
            Err(SnmpError::NotFound { .. }) if !fresh => {}
            other => return other.and_then(|i| interface(&map, i)),
        }
        let map = self.map(&mut st, true).await?;
        map.resolve(&self.config.name, key)
            .and_then(|i| interface(&map, i))
    }

    /// Reads sysName, sysUpTime and the state of every port in `keys` in as few GETs as the
    /// agent allows. Keys that do not resolve are listed in `unresolved`; a failure to reach
    /// the switch fails the whole poll.
    ///
    /// The name→index map is walked again when a key is not found, when sysUpTime went back
    /// (the switch rebooted and may have renumbered), or when a cached index vanished.
    pub async fn poll(&self, keys: &[&str]) -> Result<SwitchObservation, SnmpError> {
        let mut st = self.state.lock().await;
        let mut refreshed = false;
        loop {
            let need_walk = st.map.is_none();
            let map = self.map(&mut st, need_walk).await?;
            refreshed |= need_walk;
            let (resolved, unresolved) = self.resolve_all(&map, keys);
            let map_age = st.map_read_at.map_or(Duration::MAX, |t| t.elapsed());
            if !refreshed
                && map_age >= MISS_REFRESH_INTERVAL
                && unresolved
                    .iter()
                    .any(|u| matches!(u.error, SnmpError::NotFound { .. }))
            {
                st.map = None;
                refreshed = true;
                continue;
            }

            let mut req = vec![oids::SYS_NAME.to_vec(), oids::SYS_UPTIME.to_vec()];
            for (_, index) in &resolved {
                for col in [
                    oids::IF_ADMIN_STATUS,
                    oids::IF_OPER_STATUS,
                    oids::IF_HIGH_SPEED,
                    oids::IF_SPEED,
                ] {
                    req.push(oids::instance(col, *index));
                }
            }
            let vals = poll::get(&mut st.transport, &req).await?;
            let sys_name = text(&vals[0]).unwrap_or_default();
            let ticks = vals[1].as_u64().ok_or_else(|| SnmpError::NoSuchName {
                address: self.config.address.clone(),
                what: "sysUpTime.0".into(),
            })?;
            let rebooted = st.last_uptime_ticks.is_some_and(|last| ticks < last);
            st.last_uptime_ticks = Some(ticks);
            let vanished = vals[2..]
                .chunks(4)
                .any(|c| c[0] == Val::NoSuch || c[1] == Val::NoSuch);
            if (rebooted || vanished) && !refreshed {
                tracing::info!(switch = %self.config.name, rebooted, vanished, "re-reading the interface table");
                st.map = None;
                refreshed = true;
                continue;
            }

            let mut ports = Vec::new();
            let mut unresolved = unresolved;
            for ((key, index), c) in resolved.into_iter().zip(vals[2..].chunks(4)) {
                let Some(admin) = int(&c[0]) else {
                    unresolved.push(UnresolvedPort {
                        key: key.clone(),
                        error: SnmpError::NotFound {
                            switch: self.config.name.clone(),
                            key,
                        },
                    });
                    continue;
                };
                let iface = map.get(index).cloned().unwrap_or_default();
                ports.push(PortState {
                    key,
                    index,
                    name: iface.name,
                    descr: iface.descr,
                    admin: IfStatus::from_raw(admin),
                    oper: int(&c[1]).map_or(IfStatus::Unknown, IfStatus::from_raw),
                    speed_mbps: speed(&c[2], &c[3]),
                });
            }
            return Ok(SwitchObservation {
                sys_name,
                uptime: ticks_to_duration(ticks),
                ports,
                unresolved,
            });
        }
    }

    /// Every interface of the switch, walked with GETBULK: for the CLI and for diagnosing a
    /// wrong `port` key. Also refreshes the cached name map.
    pub async fn poll_all(&self) -> Result<SwitchObservation, SnmpError> {
        let mut st = self.state.lock().await;
        let sys = poll::get(
            &mut st.transport,
            &[oids::SYS_NAME.to_vec(), oids::SYS_UPTIME.to_vec()],
        )
        .await?;
        let cols = poll::walk_columns(
            &mut st.transport,
            &[
                oids::IF_DESCR,
                oids::IF_NAME,
                oids::IF_ADMIN_STATUS,
                oids::IF_OPER_STATUS,
                oids::IF_HIGH_SPEED,
                oids::IF_SPEED,
            ],
        )
        .await?;
        let map = map_from_columns(&cols[0], &cols[1]);
        let lookup = |c: usize, i: u32| {
            cols[c]
                .iter()
                .find(|(idx, _)| *idx == i)
                .map(|(_, v)| v.clone())
                .unwrap_or(Val::NoSuch)
        };
        let ports = map
            .interfaces
            .values()
            .map(|iface| PortState {
                key: iface
                    .name
                    .clone()
                    .or_else(|| iface.descr.clone())
                    .unwrap_or_else(|| iface.index.to_string()),
                index: iface.index,
                name: iface.name.clone(),
                descr: iface.descr.clone(),
                admin: int(&lookup(2, iface.index)).map_or(IfStatus::Unknown, IfStatus::from_raw),
                oper: int(&lookup(3, iface.index)).map_or(IfStatus::Unknown, IfStatus::from_raw),
                speed_mbps: speed(&lookup(4, iface.index), &lookup(5, iface.index)),
            })
            .collect();
        let ticks = sys[1].as_u64().unwrap_or(0);
        st.last_uptime_ticks = Some(ticks);
        st.map = Some(map);
        st.map_read_at = Some(Instant::now());
        st.map_refreshes += 1;
        Ok(SwitchObservation {
            sys_name: text(&sys[0]).unwrap_or_default(),
            uptime: ticks_to_duration(ticks),
            ports,
            unresolved: Vec::new(),
        })
    }

    /// Sets ifAdminStatus of the port `key` designates (up or down only).
    pub async fn set_admin_status(&self, key: &str, up: bool) -> Result<(), SnmpError> {
        let index = self.resolve(key).await?.index;
        self.set_admin_index(index, up).await
    }

    /// Takes the port down, waits `hold`, brings it up: the link partner (a board) sees its
    /// link drop and renegotiate. Only the one port is touched. Requests to this switch from
    /// others go on during `hold`. If bringing the port back up fails, the error says so and
    /// the caller must retry [`SnmpSwitch::set_admin_status`] with `up = true`: the port is
    /// left down.
    pub async fn bounce(&self, key: &str, hold: Duration) -> Result<(), SnmpError> {
        let index = self.resolve(key).await?.index;
        self.set_admin_index(index, false).await?;
        tokio::time::sleep(hold).await;
        self.set_admin_index(index, true).await
    }

    async fn set_admin_index(&self, index: u32, up: bool) -> Result<(), SnmpError> {
        let mut st = self.state.lock().await;
        let oid = oids::instance(oids::IF_ADMIN_STATUS, index);
        let value = if up { 1 } else { 2 };
        tracing::info!(switch = %self.config.name, index, up, "setting ifAdminStatus");
        let reply = st
            .transport
            .request(session::Request::Set(&[(oid.clone(), value)]))
            .await?;
        if reply.error_status != 0 {
            let name = session::error_status_name(reply.error_status);
            return Err(match reply.error_status {
                6 | 16 | 4 | 17 => SnmpError::AuthFailure {
                    address: self.config.address.clone(),
                    reason: format!(
                        "the agent refused to set ifAdminStatus.{index} ({name}): read-only \
                         community, user without write access, or a read-only object"
                    ),
                },
                _ => SnmpError::Protocol {
                    address: self.config.address.clone(),
                    detail: format!("SET ifAdminStatus.{index}: {name}"),
                },
            });
        }
        Ok(())
    }

    /// The cached map, walked first when `refresh` (or when there is none).
    async fn map(&self, st: &mut State, refresh: bool) -> Result<PortMap, SnmpError> {
        if !refresh && let Some(m) = &st.map {
            return Ok(m.clone());
        }
        let cols = poll::walk_columns(&mut st.transport, &[oids::IF_DESCR, oids::IF_NAME]).await?;
        let map = map_from_columns(&cols[0], &cols[1]);
        st.map_refreshes += 1;
        st.map = Some(map.clone());
        st.map_read_at = Some(Instant::now());
        Ok(map)
    }

    #[allow(clippy::type_complexity)]
    fn resolve_all(
        &self,
        map: &PortMap,
        keys: &[&str],
    ) -> (Vec<(String, u32)>, Vec<UnresolvedPort>) {
        let mut resolved: Vec<(String, u32)> = Vec::new();
        let mut unresolved = Vec::new();
        for key in keys {
            if resolved.iter().any(|(k, _)| k == key)
                || unresolved.iter().any(|u: &UnresolvedPort| u.key == *key)
            {
                continue;
            }
            match map.resolve(&self.config.name, key) {
                Ok(i) => resolved.push((key.to_string(), i)),
                Err(error) => unresolved.push(UnresolvedPort {
                    key: key.to_string(),
                    error,
                }),
            }
        }
        (resolved, unresolved)
    }
}

fn interface(map: &PortMap, index: u32) -> Result<Interface, SnmpError> {
    Ok(map.get(index).cloned().unwrap_or(Interface {
        index,
        ..Interface::default()
    }))
}

fn map_from_columns(descr: &[(u32, Val)], name: &[(u32, Val)]) -> PortMap {
    let mut map = PortMap::default();
    for (i, v) in descr {
        map.interfaces
            .entry(*i)
            .or_insert_with(|| Interface {
                index: *i,
                ..Interface::default()
            })
            .descr = text(v);
    }
    for (i, v) in name {
        map.interfaces
            .entry(*i)
            .or_insert_with(|| Interface {
                index: *i,
                ..Interface::default()
            })
            .name = text(v);
    }
    map
}

fn text(v: &Val) -> Option<String> {
    v.as_text()
}

fn int(v: &Val) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        _ => None,
    }
}

fn speed(high: &Val, low: &Val) -> Option<u64> {
    high.as_u64()
        .or_else(|| low.as_u64().map(|bps| bps / 1_000_000))
}

/// sysUpTime in hundredths of a second. Saturating: an agent may send any 64-bit number
/// there (a Counter64 instead of TimeTicks), which must not overflow.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uptime_of_any_size_does_not_overflow() {
        assert_eq!(ticks_to_duration(123), Duration::from_millis(1230));
        assert_eq!(ticks_to_duration(u64::MAX), Duration::from_millis(u64::MAX));
    }
}
