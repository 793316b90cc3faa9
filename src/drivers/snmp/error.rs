//! Why an SNMP operation failed, in terms the engine can turn into a condition reason
//! (`Reachable=False, reason=Timeout|AuthFailure|...`). Messages never contain secrets.

use std::time::Duration;

/// A driver error. `Clone` so one poll failure can be reported on every port that depended on
/// it; no variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnmpError {
    /// No valid reply within `timeout` on any of `attempts` tries. For SNMPv2c this is also what
    /// a wrong community looks like when the agent does not speak SNMPv3 at all: net-snmp and
    /// most switches drop such requests silently (RFC 3584) instead of answering.
    #[error("no reply from {address} after {attempts} attempt(s) of {timeout:?}")]
    Timeout {
        address: String,
        attempts: u32,
        timeout: Duration,
    },
    /// The agent rejected our credentials: a v3 report PDU (unknown user, wrong digest, wrong
    /// privacy key, unsupported security level), or — for v2c — the agent answered an SNMPv3
    /// engine-discovery probe while ignoring our community, so it is alive and the community
    /// (or the agent's source ACL) is wrong.
    #[error("authentication failure at {address}: {reason}")]
    AuthFailure { address: String, reason: String },
    /// The agent answered but an object we asked for does not exist there (noSuchName,
    /// noSuchObject/noSuchInstance), e.g. no IF-MIB ifXTable.
    #[error("{address} has no {what}")]
    NoSuchName { address: String, what: String },
    /// A port key matched several interfaces.
    #[error("port `{key}` is ambiguous on switch {switch}: it matches {}", .candidates.join(", "))]
    Ambiguous {
        switch: String,
        key: String,
        candidates: Vec<String>,
    },
    /// A port key matched no interface (after refreshing the interface list).
    #[error("port `{key}` not found on switch {switch} (no ifName, ifDescr or ifIndex matches)")]
    NotFound { switch: String, key: String },
    /// The agent replied with something we cannot use: an error status, a malformed PDU, a
    /// value of the wrong type.
    #[error("SNMP protocol error from {address}: {detail}")]
    Protocol { address: String, detail: String },
    /// The switch's configuration is unusable: missing secret, bad duration, bad address.
    #[error("{0}")]
    Config(String),
    /// A local socket could not be opened or the address did not resolve.
    #[error("cannot reach {address}: {detail}")]
    Io { address: String, detail: String },
}

impl SnmpError {
    /// A short CamelCase word for a condition's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            SnmpError::Timeout { .. } => "Timeout",
            SnmpError::AuthFailure { .. } => "AuthFailure",
            SnmpError::NoSuchName { .. } => "NoSuchName",
            SnmpError::Ambiguous { .. } => "PortAmbiguous",
            SnmpError::NotFound { .. } => "PortNotFound",
            SnmpError::Protocol { .. } => "ProtocolError",
            SnmpError::Config(_) => "ConfigError",
            SnmpError::Io { .. } => "NetworkError",
        }
    }

    /// True when the switch itself could not be read (as opposed to one port key being bad):
    /// the engine makes every link on that switch Unknown.
    pub fn is_switch_level(&self) -> bool {
        !matches!(
            self,
            SnmpError::Ambiguous { .. } | SnmpError::NotFound { .. }
        )
    }
}
