//! What a switch session needs, built from a `Switch` spec: address, timeout/retry policy and
//! credentials. Secrets are read here from the environment or files named in the manifest and
//! live only inside [`Secret`], whose `Debug`/`Display` never show the value.

use super::error::SnmpError;
use crate::manifest::types::{
    SnmpAuthProtocol, SnmpPrivProtocol, SnmpSpec, SnmpVersion, SwitchSpec,
};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A password or community. Deliberately not `Display`; `Debug` prints `<redacted>` so a
/// `{:?}` of any config or error can never leak it into logs or status.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(value.into())
    }

    /// The raw bytes, for handing to the SNMP library only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    Des,
    Aes128,
}

/// How we authenticate to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    V2c {
        community: Secret,
    },
    V3 {
        user: String,
        /// None: noAuthNoPriv.
        auth: Option<(AuthProtocol, Secret)>,
        /// Only with `auth` (authPriv).
        privacy: Option<(PrivProtocol, Secret)>,
    },
}

impl Credentials {
    pub fn version_label(&self) -> &'static str {
        match self {
            Credentials::V2c { .. } => "v2c",
            Credentials::V3 {
                privacy: Some(_), ..
            } => "v3 authPriv",
            Credentials::V3 { auth: Some(_), .. } => "v3 authNoPriv",
            Credentials::V3 { .. } => "v3 noAuthNoPriv",
        }
    }
}

/// Everything needed to talk to one switch.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The `Switch` object's name, used in messages.
    pub name: String,
    /// `HOST:PORT` (port 161 added when the spec has none).
    pub address: String,
    pub credentials: Credentials,
    /// Per attempt: one request and its reply (for v3 including engine discovery when needed).
    pub timeout: Duration,
    /// Extra attempts after the first one times out.
    pub retries: u32,
}

/// Where secrets are looked up: the process environment in production, a map in tests.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> SecretSource for F {
    fn env(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// RFC 3414 requires at least 8 characters; snmp2 would also panic on an empty one while
/// localizing the key, so it is refused here with a clear message.
const MIN_V3_PASSWORD: usize = 8;

impl SwitchConfig {
    /// Builds the config of `Switch/name`, reading secrets through `secrets`. Errors name the
    /// variable or file, never its content.
    pub fn from_spec(
        name: &str,
        spec: &SwitchSpec,
        secrets: &dyn SecretSource,
    ) -> Result<Self, SnmpError> {
        let cfg_err = |m: String| SnmpError::Config(format!("switch/{name}: {m}"));
        let timeout = spec
            .timeout
            .parse()
            .map_err(|e| cfg_err(format!("timeout: {e}")))?;
        if timeout.is_zero() {
            return Err(cfg_err("timeout must be more than 0".into()));
        }
        let retries = u32::try_from(spec.retries)
            .map_err(|_| cfg_err(format!("retries must be 0 or more, not {}", spec.retries)))?;
        let credentials = credentials(&spec.snmp, secrets).map_err(cfg_err)?;
        Ok(Self {
            name: name.to_string(),
            address: with_default_port(&spec.address),
            credentials,
            timeout,
            retries,
        })
    }

    /// The longest a single request can take before it fails with `Timeout`.
    pub fn request_deadline(&self) -> Duration {
        self.timeout * (self.retries + 1)
    }
}

/// `HOST` → `HOST:161`; `HOST:PORT` and `[v6]:PORT` unchanged; a bare IPv6 address gets brackets.
fn with_default_port(address: &str) -> String {
    if address.starts_with('[') {
        if address.contains("]:") {
            address.to_string()
        } else {
            format!("{address}:161")
        }
    } else if address.matches(':').count() > 1 {
        format!("[{address}]:161")
    } else if address.contains(':') {
        address.to_string()
    } else {
        format!("{address}:161")
    }
}

fn credentials(snmp: &SnmpSpec, secrets: &dyn SecretSource) -> Result<Credentials, String> {
    match snmp.version {
        SnmpVersion::V2c => {
            let community = secret(
                "community",
                snmp.community_env.as_deref(),
                snmp.community_file.as_deref(),
                secrets,
            )?
            .ok_or("SNMP v2c needs communityEnv or communityFile")?;
            Ok(Credentials::V2c { community })
        }
        SnmpVersion::V3 => {
            let user = snmp.user.clone().ok_or("SNMP v3 needs `user`")?;
            let auth = match snmp.auth_protocol {
                None => None,
                Some(p) => {
                    let pw = secret(
                        "auth password",
                        snmp.auth_password_env.as_deref(),
                        snmp.auth_password_file.as_deref(),
                        secrets,
                    )?
                    .ok_or("authProtocol needs authPasswordEnv or authPasswordFile")?;
                    check_len("auth password", &pw)?;
                    let p = match p {
                        SnmpAuthProtocol::Md5 => AuthProtocol::Md5,
                        SnmpAuthProtocol::Sha1 => AuthProtocol::Sha1,
                        SnmpAuthProtocol::Sha256 => AuthProtocol::Sha256,
                    };
                    Some((p, pw))
                }
            };
            let privacy = match snmp.priv_protocol {
                None => None,
                Some(_) if auth.is_none() => {
                    return Err("privProtocol needs authProtocol too".into());
                }
                Some(p) => {
                    let pw = secret(
                        "privacy password",
                        snmp.priv_password_env.as_deref(),
                        snmp.priv_password_file.as_deref(),
                        secrets,
                    )?
                    .ok_or("privProtocol needs privPasswordEnv or privPasswordFile")?;
                    check_len("privacy password", &pw)?;
                    let p = match p {
                        SnmpPrivProtocol::Des => PrivProtocol::Des,
                        SnmpPrivProtocol::Aes128 => PrivProtocol::Aes128,
                    };
                    Some((p, pw))
                }
            };
            Ok(Credentials::V3 {
                user,
                auth,
                privacy,
            })
        }
    }
}

fn check_len(what: &str, pw: &Secret) -> Result<(), String> {
    if pw.expose().len() < MIN_V3_PASSWORD {
        return Err(format!(
            "the SNMP v3 {what} is shorter than {MIN_V3_PASSWORD} characters (RFC 3414 minimum)"
        ));
    }
    Ok(())
}

/// Reads a secret from an env var or a file. One trailing newline is dropped from files because
/// `echo secret > file` is how people write them; anything else is kept as is.
fn secret(
    what: &str,
    env: Option<&str>,
    file: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<Option<Secret>, String> {
    if let Some(var) = env {
        let v = secrets
            .env(var)
            .ok_or_else(|| format!("the {what} variable `{var}` is not set"))?;
        if v.is_empty() {
            return Err(format!("the {what} variable `{var}` is empty"));
        }
        return Ok(Some(Secret::new(v)));
    }
    if let Some(path) = file {
        let mut bytes = std::fs::read(Path::new(path))
            .map_err(|e| format!("cannot read the {what} file `{path}`: {e}"))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(format!("the {what} file `{path}` is empty"));
        }
        return Ok(Some(Secret::new(bytes)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::quantity::Duration as Dur;

    fn spec(snmp: SnmpSpec) -> SwitchSpec {
        SwitchSpec {
            address: "10.0.0.1".into(),
            snmp,
            poll_interval: Dur::new("5s"),
            timeout: Dur::new("500ms"),
            retries: 1,
        }
    }

    fn empty(version: SnmpVersion) -> SnmpSpec {
        SnmpSpec {
            version,
            community_env: None,
            community_file: None,
            user: None,
            auth_protocol: None,
            auth_password_env: None,
            auth_password_file: None,
            priv_protocol: None,
            priv_password_env: None,
            priv_password_file: None,
        }
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "COMM" => Some("s3cret-community".into()),
            "AUTH" => Some("authpass123".into()),
            "PRIV" => Some("privpass123".into()),
            "SHORT" => Some("short".into()),
            _ => None,
        }
    }

    #[test]
    fn v2c_from_env_and_debug_redacts() {
        let mut s = empty(SnmpVersion::V2c);
        s.community_env = Some("COMM".into());
        let c = SwitchConfig::from_spec("tor-1", &spec(s), &env).unwrap();
        assert_eq!(c.address, "10.0.0.1:161");
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.retries, 1);
        assert_eq!(c.request_deadline(), Duration::from_secs(1));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn v2c_from_file_drops_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        std::fs::write(&p, "fromfile\n").unwrap();
        let mut s = empty(SnmpVersion::V2c);
        s.community_file = Some(p.to_string_lossy().into_owned());
        let c = SwitchConfig::from_spec("tor-1", &spec(s), &env).unwrap();
        assert_eq!(
            c.credentials,
            Credentials::V2c {
                community: Secret::new("fromfile")
            }
        );
    }

    #[test]
    fn v3_auth_priv_and_errors_never_show_values() {
        let mut s = empty(SnmpVersion::V3);
        s.user = Some("ops".into());
        s.auth_protocol = Some(SnmpAuthProtocol::Sha256);
        s.auth_password_env = Some("AUTH".into());
        s.priv_protocol = Some(SnmpPrivProtocol::Aes128);
        s.priv_password_env = Some("PRIV".into());
        let c = SwitchConfig::from_spec("tor-1", &spec(s.clone()), &env).unwrap();
        assert_eq!(c.credentials.version_label(), "v3 authPriv");
        assert!(!format!("{c:?}").contains("authpass123"));

        s.priv_password_env = Some("SHORT".into());
        let e = SwitchConfig::from_spec("tor-1", &spec(s.clone()), &env).unwrap_err();
        assert!(e.to_string().contains("shorter than 8"), "{e}");
        assert!(!e.to_string().contains("short\""), "{e}");

        s.priv_password_env = Some("MISSING".into());
        let e = SwitchConfig::from_spec("tor-1", &spec(s), &env).unwrap_err();
        assert!(e.to_string().contains("`MISSING` is not set"), "{e}");
    }

    #[test]
    fn addresses_get_the_default_port() {
        assert_eq!(with_default_port("sw"), "sw:161");
        assert_eq!(with_default_port("sw:1161"), "sw:1161");
        assert_eq!(with_default_port("::1"), "[::1]:161");
        assert_eq!(with_default_port("[::1]:99"), "[::1]:99");
        assert_eq!(with_default_port("[::1]"), "[::1]:161");
    }
}
