//! Parsing the kernel command line (`/proc/cmdline`) into the agent's settings when it runs
//! as PID 1: `microfaas.*` keys and the kernel's `ip=` argument.

use std::net::Ipv4Addr;

use crate::protocol::Lifecycle;

use super::power::PowerAction;

/// What the kernel command line says; `None` where it says nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KernelArgs {
    pub worker: Option<String>,
    pub orchestrator: Option<String>,
    pub token: Option<String>,
    pub lifecycle: Option<Lifecycle>,
    pub watchdog_secs: Option<u64>,
    pub failsafe: Option<PowerAction>,
    pub ip: IpSetting,
    /// `microfaas.snapshot=park`: wait for the host's go line before dialling (agent::resume).
    pub park: bool,
    /// Values that were present but could not be understood, for the log.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum IpSetting {
    /// No `ip=`: QEMU user networking's guest address (see [`IpConfig::qemu_user`]).
    #[default]
    Default,
    /// `ip=off` / `ip=none`: leave the NIC alone.
    Off,
    /// `ip=dhcp` and friends: the agent has no DHCP client; the kernel's own IP
    /// autoconfiguration (CONFIG_IP_PNP) must do it.
    Dhcp,
    Static(IpConfig),
}

/// `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>`, the form
/// the original MicroFaaS used (`ip=192.168.1.5::192.168.1.1:255.255.255.0:worker5:eth0:off`).
#[derive(Debug, Clone, PartialEq)]
pub struct IpConfig {
    pub client: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub netmask: Ipv4Addr,
    pub hostname: Option<String>,
    pub device: String,
}

impl IpConfig {
    /// QEMU user networking: the guest is always 10.0.2.15/24 behind 10.0.2.2.
    pub fn qemu_user() -> Self {
        IpConfig {
            client: Ipv4Addr::new(10, 0, 2, 15),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            hostname: None,
            device: "eth0".into(),
        }
    }
}

/// Split a command line into words, honouring the kernel's double quotes (`a="b c"`).
fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

pub fn parse(cmdline: &str) -> KernelArgs {
    let mut k = KernelArgs::default();
    for word in words(cmdline) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "microfaas.worker" => k.worker = Some(value.to_string()),
            "microfaas.orchestrator" => k.orchestrator = Some(value.to_string()),
            "microfaas.token" => k.token = Some(value.to_string()),
            "microfaas.lifecycle" => match value.parse() {
                Ok(l) => k.lifecycle = Some(l),
                Err(e) => k.warnings.push(e),
            },
            "microfaas.watchdog" => match value.parse() {
                Ok(s) => k.watchdog_secs = Some(s),
                Err(_) => k
                    .warnings
                    .push(format!("microfaas.watchdog={value}: not seconds")),
            },
            "microfaas.failsafe" => match value.parse() {
                Ok(a) => k.failsafe = Some(a),
                Err(e) => k.warnings.push(e),
            },
            "microfaas.snapshot" => match value {
                "park" => k.park = true,
                _ => k
                    .warnings
                    .push(format!("microfaas.snapshot={value}: expected park")),
            },
            "ip" => match parse_ip(value) {
                Ok(ip) => k.ip = ip,
                Err(e) => k.warnings.push(format!("ip={value}: {e}")),
            },
            _ => {}
        }
    }
    k
}

/// The `ip=` argument's value.
pub fn parse_ip(value: &str) -> Result<IpSetting, String> {
    match value {
        "off" | "none" => return Ok(IpSetting::Off),
        "on" | "any" | "dhcp" | "bootp" | "rarp" | "both" => return Ok(IpSetting::Dhcp),
        _ => {}
    }
    let f: Vec<&str> = value.split(':').collect();
    let field = |i: usize| f.get(i).copied().unwrap_or("");
    let addr = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, String> {
        match field(i) {
            "" => Ok(None),
            s => s
                .parse()
                .map(Some)
                .map_err(|_| format!("bad {what} address {s:?}")),
        }
    };
    let Some(client) = addr(0, "client")? else {
        return match field(6) {
            "off" | "none" | "" => Err("no client address".into()),
            _ => Ok(IpSetting::Dhcp),
        };
    };
    Ok(IpSetting::Static(IpConfig {
        client,
        gateway: addr(2, "gateway")?,
        // The kernel would pick a classful mask; every testbed here is a /24.
        netmask: addr(3, "netmask")?.unwrap_or(Ipv4Addr::new(255, 255, 255, 0)),
        hostname: Some(field(4)).filter(|h| !h.is_empty()).map(str::to_string),
        device: Some(field(5))
            .filter(|d| !d.is_empty())
            .unwrap_or("eth0")
            .to_string(),
    }))
}
