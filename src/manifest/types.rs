//! The resource kinds of `microfaas.dev/v1alpha1`, as users write them in YAML.
//!
//! Field names are camelCase as in Kubernetes. Every struct rejects unknown fields so a typo is
//! an error with a suggestion, never a silently ignored setting. Secrets are only ever named
//! (`*Env`, `*File`), never given inline.

use super::quantity::{Duration, Size};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const API_VERSION: &str = "microfaas.dev/v1alpha1";

/// Labels and label selectors are plain string maps, ordered for stable output.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A DNS label: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Free-form notes; never interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Selects objects whose labels contain every `matchLabels` pair. An empty selector matches all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

// ---------------------------------------------------------------- Cluster

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default)]
    pub orchestrator: OrchestratorSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// The live web view of the rack. With a `gateway` it is also served there under `/ui/`,
    /// behind the gateway's basic auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui: Option<UiSpec>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub shutdown_policy: ShutdownPolicy,
    /// How long finished invocations and events are kept, e.g. `720h`; forever when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// Servers the service-backed functions use, by name. VM workers on user networking reach
    /// each through its own forwarded guest address and nothing else; boards reach `advertise`
    /// (else `endpoint`) over the rack network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Where the desired state and every record live: the state dir's SQLite file when unset,
    /// or an etcd cluster several orchestrators and CLIs share. `--store` / `MICROFAAS_STORE`
    /// of the command override it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreSpec {
    pub etcd: EtcdStoreSpec,
}

/// An etcd (v3.4+) cluster, reached on its client URLs over plain HTTP, or over TLS when
/// `tls` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdStoreSpec {
    /// Client endpoints, `HOST:PORT` (or `http://HOST:PORT`, with `tls` `https://HOST:PORT`),
    /// any member of the cluster. With TLS each member's certificate must name its HOST (a
    /// DNS or IP subject alternative name).
    pub endpoints: Vec<String>,
    /// Key prefix this testbed owns; several testbeds can share one cluster under different
    /// prefixes.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// TLS to the members (their `--cert-file`); unset: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTlsSpec>,
}

/// PEM files for TLS to etcd, relative to the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdTlsSpec {
    /// The CA that signed the members' certificates (their `--trusted-ca-file` CA, usually).
    pub ca: String,
    /// A client certificate, for members started with `--client-cert-auth`; with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The client certificate's private key; with `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl EtcdTlsSpec {
    /// The files, once validation has seen `cert` and `key` come together.
    pub fn files(&self) -> crate::store::TlsFiles {
        crate::store::TlsFiles {
            ca: self.ca.clone().into(),
            client: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => Some(crate::store::ClientCert {
                    cert: cert.into(),
                    key: key.into(),
                }),
                _ => None,
            },
        }
    }
}

fn default_etcd_prefix() -> String {
    "microfaas".to_string()
}

/// A server functions may use. Credentials are only ever named (`passwordEnv`,
/// `passwordFile`), read by the orchestrator at each invocation and sent to the worker with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub protocol: ServiceProtocol,
    /// `HOST:PORT` where the orchestrator's host reaches the server.
    pub endpoint: String,
    /// `HOST:PORT` boards and tap-networked VMs use; `endpoint` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// User name (s3: the access key id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (s3: the secret key) from a file, relative to the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Password (s3: the secret key) from the orchestrator's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// postgres: the database (the user's name when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// s3: the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// s3: the SigV4 region (`us-east-1` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// mqtt: the topic when the input names none (`SampleTopic` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Functions allowed to use this service; every Function that names it when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// Redis (RESP): redis_insert, redis_modify.
    Redis,
    /// PostgreSQL: psql_inventory, psql_purchase.
    Postgres,
    /// An S3-compatible object store (SigV4, path-style): upload_file, download_file.
    S3,
    /// An MQTT 3.1.1 broker used as a queue: queue_produce, queue_consume.
    Mqtt,
}

impl ServiceProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceProtocol::Redis => "redis",
            ServiceProtocol::Postgres => "postgres",
            ServiceProtocol::S3 => "s3",
            ServiceProtocol::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorSpec {
    /// Where agents dial in, `HOST:PORT`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address boards use to reach `listen`; VMs on user networking get theirs from QEMU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:63302".to_string()
}

impl Default for OrchestratorSpec {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            advertise: None,
        }
    }
}

/// The shared token agents prove they know (HMAC of a server nonce). Exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

/// The web view's own listener: it has no authentication, so only loopback addresses are
/// accepted (served remotely, it goes through the gateway and its basic auth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UiSpec {
    /// `127.0.0.1:PORT`, `[::1]:PORT` or `localhost:PORT`.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    #[serde(default = "d60s")]
    pub boot_timeout: Duration,
    #[serde(default = "d120s")]
    pub job_timeout: Duration,
    #[serde(default = "d10s")]
    pub power_on_holdoff: Duration,
    #[serde(default = "d10s")]
    pub power_off_holdoff: Duration,
    #[serde(default = "three")]
    pub max_attempts: i64,
    /// Failed recoveries before a worker is marked Bad.
    #[serde(default = "three")]
    pub quarantine_after: i64,
}

fn d60s() -> Duration {
    Duration::new("60s")
}
fn d120s() -> Duration {
    Duration::new("120s")
}
fn d10s() -> Duration {
    Duration::new("10s")
}
fn three() -> i64 {
    3
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            boot_timeout: d60s(),
            job_timeout: d120s(),
            power_on_holdoff: d10s(),
            power_off_holdoff: d10s(),
            max_attempts: 3,
            quarantine_after: 3,
        }
    }
}

/// What `serve` does to workers when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ShutdownPolicy {
    /// Leave workers as they are; the next engine adopts them.
    #[default]
    LeaveRunning,
    PowerOff,
}

// ---------------------------------------------------------------- Switch

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwitchSpec {
    /// `HOST[:PORT]`, port 161 by default.
    pub address: String,
    pub snmp: SnmpSpec,
    #[serde(default = "d5s")]
    pub poll_interval: Duration,
    #[serde(default = "d2s")]
    pub timeout: Duration,
    #[serde(default = "two")]
    pub retries: i64,
}

fn d5s() -> Duration {
    Duration::new("5s")
}
fn d2s() -> Duration {
    Duration::new("2s")
}
fn two() -> i64 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnmpSpec {
    pub version: SnmpVersion,
    /// v2c: the community, read from this environment variable or file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_file: Option<String>,
    /// v3: the USM user name and its secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<SnmpAuthProtocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priv_protocol: Option<SnmpPrivProtocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priv_password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priv_password_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnmpVersion {
    V2c,
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SnmpAuthProtocol {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SnmpPrivProtocol {
    #[serde(rename = "DES")]
    Des,
    #[serde(rename = "AES")]
    Aes128,
}

// ---------------------------------------------------------------- PowerMeter

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PowerMeterSpec {
    /// A WattsUp Pro on a serial port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wattsup: Option<WattsUpMeter>,
    /// A command printing watts, run every interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandMeter>,
    /// A power model per worker kind and phase. Alone, the meter reports what the model says
    /// the covered workers draw; beside `wattsup` or `command`, it only sets the shares in
    /// which the measured energy is attributed to the covered workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelMeter>,
    /// The workers whose power this meter's reading includes.
    #[serde(default)]
    pub covers: LabelSelector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WattsUpMeter {
    /// The meter's tty, e.g. `/dev/ttyUSB0` or a stable `/dev/serial/by-id/...` link.
    pub device: String,
    /// Logging interval; the meter counts whole seconds (at least 1 s).
    #[serde(default = "d1s")]
    pub interval: Duration,
}

fn d1s() -> Duration {
    Duration::new("1s")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandMeter {
    /// Program and arguments; the first number it prints on stdout is the watts.
    pub command: Vec<String>,
    #[serde(default = "d1s")]
    pub interval: Duration,
    /// A reading that takes longer is abandoned (the command killed, a Warning event).
    #[serde(default = "d5s")]
    pub timeout: Duration,
}

/// Watts per worker phase. Every unset value takes the default for the worker's kind:
/// - board (BeagleBone Black, System Reference Manual section 6.1.7, mA at 5 V): off 0 W,
///   booting 2.3 W (460 mA peak), idle 1.75 W (350 mA), busy 2.15 W (430 mA);
/// - VM: its vCPUs' share of `host` (`cpus / host.cpus`): off 0 W, booting and busy that share
///   of `host.busyWatts`, idle that share of `host.idleWatts`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelMeter {
    /// Overrides for board workers.
    #[serde(default)]
    pub board: PhaseWatts,
    /// Overrides for VM workers.
    #[serde(default)]
    pub vm: PhaseWatts,
    /// The machine VM workers run on.
    #[serde(default)]
    pub host: HostPower,
    /// How often a model-only meter records a sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseWatts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booting: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<f64>,
}

/// A VM host's wall power, idle and with every CPU busy. The defaults describe a generic
/// two-socket 1U server (100 W idle, 250 W busy, 32 hardware threads); measure yours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPower {
    #[serde(default = "host_idle")]
    pub idle_watts: f64,
    #[serde(default = "host_busy")]
    pub busy_watts: f64,
    #[serde(default = "host_cpus")]
    pub cpus: i64,
}

fn host_idle() -> f64 {
    100.0
}
fn host_busy() -> f64 {
    250.0
}
fn host_cpus() -> i64 {
    32
}

impl Default for HostPower {
    fn default() -> Self {
        Self {
            idle_watts: host_idle(),
            busy_watts: host_busy(),
            cpus: host_cpus(),
        }
    }
}

// ---------------------------------------------------------------- Worker

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSpec {
    #[serde(default)]
    pub power: PowerPolicy,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// The wire protocol the worker speaks: ours (`microfaas`), or the original MicroFaaS
    /// orchestrator's (`microfaas-v1`: a board running an existing v1 worker image, known by
    /// its `board.network.address`, one job per boot, no authentication).
    #[serde(default, skip_serializing_if = "WorkerProtocol::is_default")]
    pub protocol: WorkerProtocol,
    /// A BeagleBone-class board powered through a GPIO line wired to its power button.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardSpec>,
    /// A QEMU virtual machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSpec>,
    /// The orchestrators (`serve --name`, default the host name) that may power and dispatch
    /// to this worker when several share one etcd store; empty: any of them. A board's are
    /// the ones on the host its power button's GPIO line is wired to, a VM's the ones on the
    /// host that runs its QEMU. One of them holds it at a time, under an etcd lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orchestrators: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum WorkerProtocol {
    /// Newline-delimited JSON with an HMAC hello (`src/protocol.rs`).
    #[default]
    #[serde(rename = "microfaas")]
    Microfaas,
    /// MicroFaaS v1: a greeting, one job line, one result line, a reboot or power-off line.
    #[serde(rename = "microfaas-v1")]
    MicrofaasV1,
}

impl WorkerProtocol {
    pub fn is_default(&self) -> bool {
        *self == WorkerProtocol::Microfaas
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PowerPolicy {
    On,
    Off,
    /// Powered when work is queued for it, off otherwise.
    #[default]
    OnDemand,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifecycle {
    #[serde(default)]
    pub mode: LifecycleMode,
    /// Warm workers: powered off after this long without work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum LifecycleMode {
    /// One invocation per boot, as in MicroFaaS v1.
    #[default]
    OneShot,
    /// Stays up and connected between invocations.
    Warm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoardSpec {
    #[serde(default = "default_board_model")]
    pub model: String,
    pub power_button: PowerButton,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<BoardNetwork>,
}

fn default_board_model() -> String {
    "beaglebone-black".to_string()
}

/// The GPIO line wired to the board's power button: a header `pin`, or `chip` + `line`, or a
/// `lineName` given by the device tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PowerButton {
    /// Orchestrator header pin, e.g. `P9_12`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// `/dev/gpiochipN`, `gpiochipN` or a chip label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chip: Option<String>,
    /// Line offset on `chip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_name: Option<String>,
    #[serde(default = "yes")]
    pub active_low: bool,
    #[serde(default = "d500ms")]
    pub pulse: Duration,
    /// Long press that cuts power when the agent cannot.
    #[serde(default = "d8s")]
    pub force_off: Duration,
}

fn yes() -> bool {
    true
}
fn d500ms() -> Duration {
    Duration::new("500ms")
}
fn d8s() -> Duration {
    Duration::new("8s")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoardNetwork {
    /// Name of a `Switch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// ifName, ifDescr or ifIndex of the board's port on that switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub bounce_on_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// Guest CPU architecture: `x86_64` (qemu-system-x86_64) or `armv7` (qemu-system-arm
    /// `-M virt`, the BeagleBone's instruction set, for proving the board image under QEMU).
    #[serde(default, skip_serializing_if = "Arch::is_default")]
    pub arch: Arch,
    /// Path of the kernel (bzImage; a zImage for armv7).
    pub kernel: String,
    /// Path of the initramfs; the built agent image by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Extra kernel command line; identity, orchestrator and token are added by microfaas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default = "default_memory")]
    pub memory: Size,
    #[serde(default = "one")]
    pub cpus: i64,
    /// QEMU machine type; `microvm` for x86_64 and `virt` for armv7 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default)]
    pub network: VmNetwork,
    /// How a power-on starts the guest: `boot` (the default) boots the kernel every time, as
    /// MicroFaaS measures; `snapshot` boots once, snapshots the guest where its agent is about
    /// to dial, and restores that snapshot on later power-ons (x86_64 only).
    #[serde(default, skip_serializing_if = "VmStart::is_default")]
    pub start: VmStart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmStart {
    /// A real boot at every power-on.
    #[default]
    Boot,
    /// Restore the worker's own snapshot of a freshly booted guest; the first power-on (and
    /// any after the kernel, initrd, command line, memory or QEMU changed) boots and takes it.
    Snapshot,
}

impl VmStart {
    fn is_default(&self) -> bool {
        *self == VmStart::Boot
    }
}

fn default_memory() -> Size {
    Size("256Mi".to_string())
}
fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    #[default]
    Microvm,
    Q35,
    Pc,
    /// ARM's generic virtual board (armv7 only).
    Virt,
}

impl VmSpec {
    /// The machine QEMU is started with: the manifest's, else the architecture's default.
    pub fn machine(&self) -> Machine {
        self.machine.unwrap_or(match self.arch {
            Arch::X86_64 => Machine::Microvm,
            Arch::Armv7 => Machine::Virt,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Arch {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 32-bit ARMv7-A, hard float (Cortex-A8 on the BeagleBone Black).
    #[serde(rename = "armv7")]
    Armv7,
}

impl Arch {
    fn is_default(&self) -> bool {
        *self == Arch::X86_64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe shows it can run guests, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmNetwork {
    #[serde(default)]
    pub mode: VmNetworkMode,
    /// tap mode: the bridge to attach the tap device to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// tap mode: the NIC's MAC; derived from the worker's uuid when unset, so VMs sharing a
    /// bridge never share one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// tap mode: the guest's static IPv4 address on the bridge's network, `A.B.C.D/PREFIX`
    /// (passed as the kernel's `ip=`). A WorkerSet's replica N gets this address + N.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// tap mode: the guest's default gateway, for orchestrators or services beyond the bridge's
    /// network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmNetworkMode {
    /// QEMU user networking, restricted to the orchestrator endpoint.
    #[default]
    User,
    Tap,
}

// ---------------------------------------------------------------- WorkerSet

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSetSpec {
    /// Workers `NAME-0` .. `NAME-(replicas-1)`.
    pub replicas: i64,
    pub template: WorkerTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerTemplate {
    #[serde(default)]
    pub metadata: TemplateMetadata,
    pub spec: WorkerSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMetadata {
    #[serde(default)]
    pub labels: Labels,
}

// ---------------------------------------------------------------- Function

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    pub runtime: Runtime,
    /// builtin: the function's name in the agent's suite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// wasm: path of the WebAssembly module (WASI preview 1 command); exec: of a static
    /// executable for the workers' architecture. Relative to the manifest; shipped to the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// wasm/exec: the module's sha256 (64 hex digits); when set, a module file that differs is a
    /// validation error and is never shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// wasm: instruction budget per invocation, in wasmi fuel units (about one per
    /// instruction); unset = bounded by `timeout` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// exec: program and arguments, or only the arguments when `module` is the program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Invocation deadline; the Cluster's `jobTimeout` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Services the function talks to: the role its handler asks for (`redis`, `postgres`,
    /// `s3`, `queue`) → the name of a service in the Cluster's `services`.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Builtin,
    Wasm,
    Exec,
}

// ---------------------------------------------------------------- Workload

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub functions: Vec<FunctionMix>,
    #[serde(default)]
    pub arrival: Arrival,
    /// Stop after this long even if invocations remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Which workers may run this workload's invocations; all workers when unset.
    #[serde(default)]
    pub workers: LabelSelector,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "one")]
    pub concurrency: i64,
    /// Attempts per invocation; the Cluster's `maxAttempts` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
}

fn default_seed() -> u64 {
    63302
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionMix {
    /// Name of a `Function`.
    pub function: String,
    /// Invocations of this function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// Relative share when the workload is bounded by `duration` instead of counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Inputs drawn in turn; omitted = seeded inputs generated as MicroFaaS did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub inputs: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arrival {
    #[serde(default)]
    pub pattern: ArrivalPattern,
    /// balanced/fixed: one round per period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// fixed/poisson: invocations per second, written `5/s` or `300/m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// trace: CSV of `offset, function, input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl Default for Arrival {
    fn default() -> Self {
        Self {
            pattern: ArrivalPattern::Balanced,
            period: Some(d1s()),
            rate: None,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalPattern {
    /// The original MicroFaaS generator: each period, one job on each of a random subset of workers.
    #[default]
    Balanced,
    Fixed,
    Poisson,
    Trace,
}
