//! Checks beyond the schema: values that must parse, fields that exclude each other, names
//! that must resolve, resources that must not collide. Every finding points at the offending
//! node; all findings are reported, not only the first.

use super::diag::{Diagnostic, did_you_mean};
use super::module::{self, Format, ModuleFileError};
use super::node::Seg::{self, Index, Key};
use super::pins;
use super::quantity::{Duration, Size};
use super::resource::{Kind, Resource, Spec};
use super::types::*;
use std::collections::HashMap;
use std::path::Path;

/// The workload name the gateway records its invocations under (runs, invocations and
/// `report gateway` are keyed by workload name), so no declared Workload may take it.
pub const GATEWAY_WORKLOAD: &str = "gateway";

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Check that files named in manifests (VM kernels, initrds) exist.
    pub fs_checks: bool,
}

/// Collects diagnostics about one resource, positioned in its own syntax tree.
struct Ctx<'a> {
    res: &'a Resource,
    out: &'a mut Vec<Diagnostic>,
    /// Prefix for paths when checking a WorkerSet's template as a worker spec.
    base: &'a [Seg<'a>],
}

impl Ctx<'_> {
    fn full<'p>(&self, path: &[Seg<'p>]) -> Vec<Seg<'p>>
    where
        Self: 'p,
    {
        let mut p: Vec<Seg<'p>> = self.base.to_vec();
        p.extend_from_slice(path);
        p
    }

    fn error(&mut self, path: &[Seg<'_>], msg: impl Into<String>) -> &mut Diagnostic {
        let pos = self.res.node.pos_of(&self.full(path));
        self.out
            .push(Diagnostic::error(&self.res.origin.file, pos, msg));
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    /// Points at the key rather than its value: for "remove this field" style errors.
    fn key_error(&mut self, path: &[Seg<'_>], msg: impl Into<String>) -> &mut Diagnostic {
        let pos = self.res.node.key_pos(&self.full(path));
        self.out
            .push(Diagnostic::error(&self.res.origin.file, pos, msg));
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    fn duration(&mut self, path: &[Seg<'_>], d: &Duration) {
        if let Err(e) = d.parse() {
            self.error(path, e.to_string());
        }
    }

    fn size(&mut self, path: &[Seg<'_>], s: &Size) {
        if let Err(e) = s.parse() {
            self.error(path, e.to_string());
        }
    }

    fn positive(&mut self, path: &[Seg<'_>], what: &str, n: i64) {
        if n <= 0 {
            self.error(path, format!("{what} must be at least 1, got {n}"));
        }
    }

    fn address(&mut self, path: &[Seg<'_>], addr: &str) {
        if addr.parse::<std::net::SocketAddr>().is_err() && !host_port(addr) {
            self.error(
                path,
                format!("invalid address `{addr}`: expected HOST:PORT, e.g. `127.0.0.1:63302`"),
            );
        }
    }

    /// Exactly one of the named optional fields must be set.
    fn one_of(&mut self, path: &[Seg<'_>], fields: &[(&str, bool)], what: &str) {
        let set: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
        let names = fields
            .iter()
            .map(|f| format!("`{}`", f.0))
            .collect::<Vec<_>>()
            .join(", ");
        match set.len() {
            1 => {}
            0 => {
                self.error(path, format!("{what}: set exactly one of {names}"));
            }
            _ => {
                let mut p = path.to_vec();
                p.push(Key(set[1]));
                self.key_error(
                    &p,
                    format!("{what}: set exactly one of {names}, not several"),
                );
            }
        }
    }
}

fn host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// Checks every resource on its own, then the set as a whole. WorkerSets must already be
/// expanded into `resources` (see `expand`), so their workers take part in collision checks.
pub fn validate(resources: &[Resource], opts: Options) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for res in resources.iter().filter(|r| r.owner.is_none()) {
        let mut cx = Ctx {
            res,
            out: &mut out,
            base: &[],
        };
        match &res.spec {
            Spec::Cluster(s) => {
                cluster(&mut cx, s);
                services(&mut cx, s, opts);
                if let Some(tls) = s.store.as_ref().and_then(|st| st.etcd.tls.as_ref()) {
                    etcd_tls(&mut cx, tls, opts);
                }
            }
            Spec::Switch(s) => switch(&mut cx, s),
            Spec::PowerMeter(s) => meter(&mut cx, s),
            Spec::Worker(s) => {
                cx.base = &[Key("spec")];
                worker(&mut cx, s, opts);
            }
            Spec::WorkerSet(s) => {
                cx.positive(&[Key("spec"), Key("replicas")], "replicas", s.replicas);
                for (k, v) in &s.template.metadata.labels {
                    label(
                        &mut cx,
                        &[Key("spec"), Key("template"), Key("metadata"), Key("labels")],
                        k,
                        v,
                    );
                }
                set_addresses(&mut cx, s);
                cx.base = &[Key("spec"), Key("template"), Key("spec")];
                worker(&mut cx, &s.template.spec, opts);
            }
            Spec::Function(s) => function(&mut cx, s, opts),
            Spec::Workload(s) => workload(&mut cx, s),
        }
        for (k, v) in &res.metadata.labels {
            label(&mut cx, &[Key("metadata"), Key("labels")], k, v);
        }
    }
    across(resources, &mut out);
    out
}

fn label(cx: &mut Ctx<'_>, path: &[Seg<'_>], k: &str, v: &str) {
    let ok = |s: &str, allow_slash: bool| {
        s.len() <= 253
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b"-_.".contains(&b) || (allow_slash && b == b'/')
            })
    };
    if k.is_empty() || !ok(k, true) {
        let mut p = path.to_vec();
        p.push(Key(k));
        cx.key_error(
            &p,
            format!("invalid label key `{k}`: letters, digits, `-`, `_`, `.` and one `/` prefix"),
        );
    }
    if !ok(v, false) || v.len() > 63 {
        let mut p = path.to_vec();
        p.push(Key(k));
        cx.error(
            &p,
            format!("invalid label value `{v}`: at most 63 letters, digits, `-`, `_`, `.`"),
        );
    }
}

fn cluster(cx: &mut Ctx<'_>, s: &ClusterSpec) {
    let spec = Key("spec");
    cx.address(
        &[spec, Key("orchestrator"), Key("listen")],
        &s.orchestrator.listen,
    );
    if let Some(a) = &s.orchestrator.advertise {
        cx.address(&[spec, Key("orchestrator"), Key("advertise")], a);
    }
    if let Some(auth) = &s.auth {
        cx.one_of(
            &[spec, Key("auth")],
            &[
                ("tokenFile", auth.token_file.is_some()),
                ("tokenEnv", auth.token_env.is_some()),
            ],
            "auth token",
        );
    }
    if let Some(g) = &s.gateway {
        cx.address(&[spec, Key("gateway"), Key("listen")], &g.listen);
        if let Some(b) = &g.basic_auth {
            cx.one_of(
                &[spec, Key("gateway"), Key("basicAuth")],
                &[
                    ("passwordFile", b.password_file.is_some()),
                    ("passwordEnv", b.password_env.is_some()),
                ],
                "gateway password",
            );
        }
    }
    if let Some(u) = &s.ui {
        let path = [spec, Key("ui"), Key("listen")];
        match u.listen.parse::<std::net::SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() => {
                cx.error(
                    &path,
                    format!(
                        "the web view has no authentication of its own, so `{}` must be a loopback address (127.0.0.1, [::1], localhost); serve it remotely through `gateway` with `basicAuth`",
                        u.listen
                    ),
                );
            }
            Ok(_) => {}
            Err(_)
                if u.listen
                    .strip_prefix("localhost:")
                    .is_some_and(|p| p.parse::<u16>().is_ok()) => {}
            Err(_) => {
                cx.error(
                    &path,
                    format!("invalid address `{}`: expected a loopback HOST:PORT, e.g. `127.0.0.1:8081`", u.listen),
                );
            }
        }
    }
    let d = &s.defaults;
    let p = |f: &'static str| [spec, Key("defaults"), Key(f)];
    cx.duration(&p("bootTimeout"), &d.boot_timeout);
    cx.duration(&p("jobTimeout"), &d.job_timeout);
    cx.duration(&p("powerOnHoldoff"), &d.power_on_holdoff);
    cx.duration(&p("powerOffHoldoff"), &d.power_off_holdoff);
    cx.positive(&p("maxAttempts"), "maxAttempts", d.max_attempts);
    cx.positive(&p("quarantineAfter"), "quarantineAfter", d.quarantine_after);
    if let Some(r) = &s.retention {
        cx.duration(&[spec, Key("retention")], r);
    }
    if let Some(store) = &s.store {
        let (st, etcd) = (Key("store"), Key("etcd"));
        let e = &store.etcd;
        if e.endpoints.is_empty() {
            cx.error(
                &[spec, st, etcd, Key("endpoints")],
                "no endpoint: list at least one member's HOST:PORT",
            );
        }
        for (i, ep) in e.endpoints.iter().enumerate() {
            let path = [spec, st, etcd, Key("endpoints"), Index(i)];
            cx.address(&path, crate::store::etcd::client::host_port(ep));
            if ep.starts_with("https://") && e.tls.is_none() {
                cx.error(
                    &path,
                    format!("`{ep}` is a TLS endpoint: set `tls` (at least `ca`)"),
                );
            } else if ep.starts_with("http://") && e.tls.is_some() {
                cx.error(
                    &path,
                    format!("`{ep}` is a plain-HTTP endpoint, but `tls` is set"),
                );
            }
        }

        let prefix = e.prefix.trim_matches('/');
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            cx.error(
                &[spec, st, etcd, Key("prefix")],
                format!(
                    "invalid prefix `{}`: expected a key prefix without spaces",
                    e.prefix
                ),
            );
        }
    }
}

/// `Cluster.spec.store.etcd.tls`: `cert` and `key` together, and with file checks every file
/// read as the store will read it (PEM that parses, a key that fits its certificate).
fn etcd_tls(cx: &mut Ctx<'_>, tls: &EtcdTlsSpec, opts: Options) {
    let base = [Key("spec"), Key("store"), Key("etcd"), Key("tls")];
    let at = |f: &'static str| {
        let mut v = base.to_vec();
        v.push(Key(f));
        v
    };
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            cx.key_error(
                &at("cert"),
                "`cert` without `key`: a client certificate needs its private key",
            );
        }
        (None, Some(_)) => {
            cx.key_error(&at("key"), "`key` without `cert`: set both, or neither");
        }
        _ => {}
    }
    let named = [
        ("ca", Some(&tls.ca)),
        ("cert", tls.cert.as_ref()),
        ("key", tls.key.as_ref()),
    ];
    let mut empty = false;
    for (field, file) in named {
        if file.is_some_and(|f| f.trim().is_empty()) {
            cx.error(&at(field), format!("`{field}`: empty file name"));
            empty = true;
        }
    }
    if opts.fs_checks
        && !empty
        && let Err(e) = tls.files().load()
    {
        cx.error(&at(e.role.key()), e.to_string());
    }
}

/// Each declared service on its own: addresses, exactly one password source (or none), the
/// password file present, and the fields its protocol needs.
fn services(cx: &mut Ctx<'_>, s: &ClusterSpec, opts: Options) {
    for (name, svc) in &s.services {
        let base = [Key("spec"), Key("services"), Key(name.as_str())];
        let p = |f: &'static str| {
            let mut v = base.to_vec();
            v.push(Key(f));
            v
        };
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || name.is_empty()
            || name.len() > 63
        {
            cx.key_error(
                &base,
                format!("invalid service name `{name}`: a DNS label (a-z, 0-9, `-`)"),
            );
        }
        cx.address(&p("endpoint"), &svc.endpoint);
        if let Some(a) = &svc.advertise {
            cx.address(&p("advertise"), a);
        }
        if svc.password_file.is_some() && svc.password_env.is_some() {
            cx.key_error(
                &p("passwordEnv"),
                "service password: set at most one of `passwordFile`, `passwordEnv`",
            );
        }
        if opts.fs_checks
            && let Some(f) = &svc.password_file
            && !Path::new(f).is_file()
        {
            cx.error(
                &p("passwordFile"),
                format!("password file `{f}` does not exist or is not a file"),
            );
        }
        if svc.protocol == ServiceProtocol::S3 {
            if svc.bucket.is_none() {
                cx.error(&base, "an s3 service needs `bucket`");
            }
            if svc.user.is_none() || (svc.password_file.is_none() && svc.password_env.is_none()) {
                cx.error(
                    &base,
                    "an s3 service needs `user` (the access key id) and `passwordFile` or `passwordEnv` (the secret key)",
                );
            }
        }
    }
}

fn switch(cx: &mut Ctx<'_>, s: &SwitchSpec) {
    let spec = Key("spec");
    let addr_ok = s.address.parse::<std::net::SocketAddr>().is_ok()
        || host_port(&s.address)
        || host_port(&format!("{}:161", s.address));
    if !addr_ok {
        cx.error(
            &[spec, Key("address")],
            format!(
                "invalid switch address `{}`: expected HOST or HOST:PORT",
                s.address
            ),
        );
    }
    let snmp = &s.snmp;
    let path = [spec, Key("snmp")];
    match snmp.version {
        SnmpVersion::V2c => cx.one_of(
            &path,
            &[
                ("communityEnv", snmp.community_env.is_some()),
                ("communityFile", snmp.community_file.is_some()),
            ],
            "SNMP v2c community",
        ),
        SnmpVersion::V3 => {
            if snmp.user.is_none() {
                cx.error(&path, "SNMP v3 needs `user`");
            }
            let auth_pw = snmp.auth_password_env.is_some() || snmp.auth_password_file.is_some();
            if snmp.auth_protocol.is_some() {
                cx.one_of(
                    &path,
                    &[
                        ("authPasswordEnv", snmp.auth_password_env.is_some()),
                        ("authPasswordFile", snmp.auth_password_file.is_some()),
                    ],
                    "SNMP v3 auth password",
                );
            } else if auth_pw {
                cx.error(&path, "an auth password is given but no `authProtocol`");
            }
            if snmp.priv_protocol.is_some() {
                if snmp.auth_protocol.is_none() {
                    cx.error(
                        &path,
                        "SNMP v3 privacy needs authentication too: set `authProtocol`",
                    );
                }
                cx.one_of(
                    &path,
                    &[
                        ("privPasswordEnv", snmp.priv_password_env.is_some()),
                        ("privPasswordFile", snmp.priv_password_file.is_some()),
                    ],
                    "SNMP v3 privacy password",
                );
            }
        }
    }
    cx.duration(&[spec, Key("pollInterval")], &s.poll_interval);
    cx.duration(&[spec, Key("timeout")], &s.timeout);
    if s.retries < 0 {
        cx.error(
            &[spec, Key("retries")],
            format!("retries must not be negative, got {}", s.retries),
        );
    }
}

fn meter(cx: &mut Ctx<'_>, s: &PowerMeterSpec) {
    let spec = Key("spec");
    if s.wattsup.is_some() || s.command.is_some() {
        cx.one_of(
            &[spec],
            &[
                ("wattsup", s.wattsup.is_some()),
                ("command", s.command.is_some()),
            ],
            "power meter",
        );
    } else if s.model.is_none() {
        cx.error(
            &[spec],
            "power meter: set one of `wattsup`, `command` or `model`",
        );
    }
    if let Some(w) = &s.wattsup {
        cx.duration(&[spec, Key("wattsup"), Key("interval")], &w.interval);
    }
    if let Some(c) = &s.command {
        if c.command.is_empty() {
            cx.error(
                &[spec, Key("command"), Key("command")],
                "the command must name a program",
            );
        }
        cx.duration(&[spec, Key("command"), Key("interval")], &c.interval);
        cx.duration(&[spec, Key("command"), Key("timeout")], &c.timeout);
    }
    if let Some(m) = &s.model {
        if let Some(i) = &m.interval {
            cx.duration(&[spec, Key("model"), Key("interval")], i);
        }
        for (kind, p) in [("board", &m.board), ("vm", &m.vm)] {
            for (name, w) in [
                ("off", p.off),
                ("booting", p.booting),
                ("idle", p.idle),
                ("busy", p.busy),
            ] {
                if let Some(w) = w
                    && !(w.is_finite() && w >= 0.0)
                {
                    cx.error(
                        &[spec, Key("model"), Key(kind), Key(name)],
                        format!("watts must be a non-negative number, got {w}"),
                    );
                }
            }
        }
        let h = &m.host;
        for (name, w) in [("idleWatts", h.idle_watts), ("busyWatts", h.busy_watts)] {
            if !(w.is_finite() && w >= 0.0) {
                cx.error(
                    &[spec, Key("model"), Key("host"), Key(name)],
                    format!("watts must be a non-negative number, got {w}"),
                );
            }
        }
        if h.cpus < 1 {
            cx.error(
                &[spec, Key("model"), Key("host"), Key("cpus")],
                format!("a host has at least one CPU, got {}", h.cpus),
            );
        }
    }
}

/// A MicroFaaS v1 worker has no hello: the endpoint knows it by its source address, and its
/// image runs one job per boot.
fn v1_worker(cx: &mut Ctx<'_>, s: &WorkerSpec) {
    if s.vm.is_some() {
        cx.error(
            &[Key("protocol")],
            "`microfaas-v1` is for boards running a MicroFaaS v1 worker image; VMs boot our agent",
        );
    }
    if s.lifecycle.mode != LifecycleMode::OneShot {
        cx.error(
            &[Key("lifecycle"), Key("mode")],
            "a `microfaas-v1` worker runs one job per boot: lifecycle mode must be OneShot",
        );
    }
    if let Some(b) = &s.board {
        let address = b.network.as_ref().and_then(|n| n.address.as_deref());
        match address.map(str::parse::<std::net::Ipv4Addr>) {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                cx.error(
                    &[Key("board"), Key("network"), Key("address")],
                    format!(
                        "a `microfaas-v1` worker is known by its IPv4 source address, got `{}`",
                        address.unwrap_or_default()
                    ),
                );
            }
            None => {
                cx.error(
                    &[Key("board"), Key("network")],
                    "a `microfaas-v1` worker needs `board.network.address`: v1 workers say no name, the endpoint knows them by their IPv4 source address",
                );
            }
        }
    }
}

fn worker(cx: &mut Ctx<'_>, s: &WorkerSpec, opts: Options) {
    orchestrators(cx, &s.orchestrators);
    cx.one_of(
        &[],
        &[("board", s.board.is_some()), ("vm", s.vm.is_some())],
        "a worker is either a board or a VM",
    );
    if let Some(t) = &s.lifecycle.idle_timeout {
        cx.duration(&[Key("lifecycle"), Key("idleTimeout")], t);
    }
    if let Some(b) = &s.board {
        let pb = &b.power_button;
        let path = [Key("board"), Key("powerButton")];
        let by_chip = pb.chip.is_some() || pb.line.is_some();
        cx.one_of(
            &path,
            &[
                ("pin", pb.pin.is_some()),
                ("chip", by_chip),
                ("lineName", pb.line_name.is_some()),
            ],
            "power button line",
        );
        if let Some(pin) = &pb.pin
            && pins::lookup(pin).is_none()
        {
            let names = pins::PINS.iter().map(|p| p.0);
            let d = cx.error(
                &[path[0], path[1], Key("pin")],
                format!("unknown header pin `{pin}`"),
            );
            d.help = Some(match did_you_mean(pin, names) {
                Some(m) => format!("did you mean `{m}`? (GPIO-capable pins are P8_3..P8_46 and P9_11..P9_31, P9_41, P9_42)"),
                None => "GPIO-capable BeagleBone Black pins are P8_3..P8_46 and P9_11..P9_31, P9_41, P9_42".to_string(),
            });
        }
        if by_chip {
            if pb.chip.is_none() {
                cx.error(&path, "`line` needs `chip`");
            }
            match pb.line {
                None => {
                    cx.error(&path, "`chip` needs `line`");
                }
                Some(l) if l < 0 => {
                    cx.error(
                        &[path[0], path[1], Key("line")],
                        format!("line offset must not be negative, got {l}"),
                    );
                }
                Some(_) => {}
            }
        }
        cx.duration(&[path[0], path[1], Key("pulse")], &pb.pulse);
        cx.duration(&[path[0], path[1], Key("forceOff")], &pb.force_off);
        if let Some(n) = &b.network
            && n.port.is_some() != n.switch.is_some()
        {
            cx.error(
                &[Key("board"), Key("network")],
                "`switch` and `port` go together",
            );
        }
    }
    if s.protocol == WorkerProtocol::MicrofaasV1 {
        v1_worker(cx, s);
    }
    if let Some(vm) = &s.vm {
        let p = |f: &'static str| [Key("vm"), Key(f)];
        cx.size(&p("memory"), &vm.memory);
        cx.positive(&p("cpus"), "cpus", vm.cpus);
        if opts.fs_checks {
            for (field, path) in [("kernel", Some(&vm.kernel)), ("initrd", vm.initrd.as_ref())] {
                if let Some(path) = path
                    && !Path::new(path).is_file()
                {
                    cx.error(&p(field), format!("{field} `{path}` does not exist or is not a file"))
                        .help = Some("build one with `microfaasctl image build`, or skip this check with --no-fs-checks".to_string());
                }
            }
        }
        if let Some(m) = vm.machine {
            let arm_machine = m == Machine::Virt;
            if arm_machine != (vm.arch == Arch::Armv7) {
                cx.error(
                    &p("machine"),
                    format!(
                        "machine `{}` does not run {} guests",
                        enum_name(&m),
                        enum_name(&vm.arch)
                    ),
                )
                .help = Some(
                    "x86_64 VMs use microvm, q35 or pc; armv7 VMs use virt (the default for armv7)"
                        .to_string(),
                );
            }
        }
        if vm.start == VmStart::Snapshot && vm.arch != Arch::X86_64 {
            cx.error(
                &p("start"),
                format!(
                    "`start: snapshot` is for x86_64 VMs, not {}",
                    enum_name(&vm.arch)
                ),
            )
            .help = Some("use `start: boot` (the default) for armv7 guests".to_string());
        }
        vm_network(cx, vm);
    }
}

/// A VM's network: tap needs a bridge and a way for the agent to get its address; the
/// address fields mean nothing on user networking (QEMU's guest is always 10.0.2.15).
/// `orchestrators`: names as `serve --name` takes them (host names), each once.
fn orchestrators(cx: &mut Ctx<'_>, names: &[String]) {
    for (i, n) in names.iter().enumerate() {
        let path = [Key("orchestrators"), Index(i)];
        if let Err(why) = crate::manifest::load::check_orchestrator_name(n) {
            cx.error(&path, format!("orchestrator name `{n}`: {why}"));
        } else if names[..i].contains(n) {
            cx.error(&path, format!("orchestrator `{n}` is listed twice"));
        }
    }
}

fn vm_network(cx: &mut Ctx<'_>, vm: &VmSpec) {
    let net = &vm.network;
    let p = |f: &'static str| [Key("vm"), Key("network"), Key(f)];
    if net.mode == VmNetworkMode::User {
        for (field, set) in [
            ("address", net.address.is_some()),
            ("gateway", net.gateway.is_some()),
        ] {
            if set {
                cx.key_error(
                    &p(field),
                    format!("`{field}` is for tap networking (`mode: tap`)"),
                )
                .help = Some("a VM on user networking always has QEMU's guest address".to_string());
            }
        }
        return;
    }
    if net.bridge.is_none() {
        cx.error(
            &[Key("vm"), Key("network")],
            "tap networking needs `bridge`",
        );
    }
    if let Some(a) = &net.address
        && let Err(e) = super::tapaddr::TapAddress::parse(a)
    {
        cx.error(&p("address"), e);
    }
    if let Some(g) = &net.gateway
        && g.parse::<std::net::Ipv4Addr>().is_err()
    {
        cx.error(&p("gateway"), format!("`{g}` is not an IPv4 address"));
    }
    let own_ip = vm
        .cmdline
        .as_deref()
        .is_some_and(|c| c.split_whitespace().any(|w| w.starts_with("ip=")));
    if net.address.is_none() && !own_ip {
        cx.error(
            &[Key("vm"), Key("network")],
            "tap networking needs the guest's `address` (A.B.C.D/PREFIX on the bridge's network)",
        )
        .help = Some(
            "or give the kernel an `ip=` in `vm.cmdline`; the agent has no DHCP client".to_string(),
        );
    }
}

/// A WorkerSet's replicas count up from the template's tap address: all of them must be hosts
/// of its network.
fn set_addresses(cx: &mut Ctx<'_>, s: &WorkerSetSpec) {
    let Some(a) = s
        .template
        .spec
        .vm
        .as_ref()
        .and_then(|vm| vm.network.address.as_ref())
    else {
        return;
    };
    let Ok(addr) = super::tapaddr::TapAddress::parse(a) else {
        return; // reported by the template's own checks
    };
    let last = u32::try_from(s.replicas.saturating_sub(1)).unwrap_or(u32::MAX);
    if s.replicas > 0 && addr.offset(last).is_none() {
        cx.error(
            &[
                Key("spec"),
                Key("template"),
                Key("spec"),
                Key("vm"),
                Key("network"),
                Key("address"),
            ],
            format!(
                "{} replicas counting up from `{a}` do not fit in its network",
                s.replicas
            ),
        )
        .help =
            Some("replica N gets the address + N: start lower or use a wider prefix".to_string());
    }
}

/// A unit enum's name as the manifest spells it.
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A user Function's module: there, small enough to ship, matching its pin, valid wasm (or
/// ELF for `exec`).
fn user_module(cx: &mut Ctx<'_>, s: &FunctionSpec, opts: Options, format: Format) {
    let spec = Key("spec");
    if let Some(pin) = &s.sha256
        && !module::is_sha256(pin)
    {
        cx.error(
            &[spec, Key("sha256")],
            format!("`{pin}` is not a sha256: 64 hex digits expected"),
        );
        return;
    }
    if s.fuel == Some(0) {
        cx.error(&[spec, Key("fuel")], "fuel must be at least 1");
    }
    let Some(path) = &s.module else {
        cx.error(&[spec], "a wasm function needs `module`");
        return;
    };
    if !opts.fs_checks {
        return;
    }
    match module::read(path, s.sha256.as_deref(), format) {
        Ok(_) => {}
        Err(e @ ModuleFileError::ShaMismatch { .. }) => {
            cx.error(&[spec, Key("sha256")], e.to_string()).help =
                Some("rebuild the module, or pin the new digest (`sha256sum`)".to_string());
        }
        Err(e) => {
            cx.error(&[spec, Key("module")], e.to_string()).help = Some(
                "build it (e.g. `cargo build --release --target wasm32-wasip1`), or skip this check with --no-fs-checks".to_string(),
            );
        }
    }
}

fn function(cx: &mut Ctx<'_>, s: &FunctionSpec, opts: Options) {
    let spec = Key("spec");
    match s.runtime {
        Runtime::Builtin => match &s.handler {
            None => {
                cx.error(&[spec], "a builtin function needs `handler`");
            }
            Some(h) => {
                let names = crate::functions::all_names();
                if !names.contains(&h.as_str()) {
                    let d = cx.error(
                        &[spec, Key("handler")],
                        format!("unknown builtin function `{h}`"),
                    );
                    d.help = Some(match did_you_mean(h, names.iter().copied()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("builtins: {}", names.join(", ")),
                    });
                }
            }
        },
        Runtime::Wasm => user_module(cx, s, opts, Format::Wasm),
        Runtime::Exec if s.module.is_some() => user_module(cx, s, opts, Format::Elf),
        Runtime::Exec => {
            if s.command.as_ref().is_none_or(|c| c.is_empty()) {
                cx.error(&[spec], "an exec function needs `module` or `command`");
            }
        }
    }
    if let Some(t) = &s.timeout {
        cx.duration(&[spec, Key("timeout")], t);
    }
    if let Some(m) = &s.memory {
        cx.size(&[spec, Key("memory")], m);
    }
}

fn workload(cx: &mut Ctx<'_>, s: &WorkloadSpec) {
    let spec = Key("spec");
    if cx.res.name() == GATEWAY_WORKLOAD {
        cx.error(
            &[Key("metadata"), Key("name")],
            format!(
                "the workload name `{GATEWAY_WORKLOAD}` is reserved: the gateway records its calls under it"
            ),
        )
        .help = Some(format!(
            "`microfaasctl report {GATEWAY_WORKLOAD}` shows the gateway's calls; give this workload another name"
        ));
    }
    if s.functions.is_empty() {
        cx.error(
            &[spec, Key("functions")],
            "a workload needs at least one function",
        );
    }
    for (i, f) in s.functions.iter().enumerate() {
        let p = |field: &'static str| [spec, Key("functions"), Index(i), Key(field)];
        if let Some(c) = f.count {
            cx.positive(&p("count"), "count", c);
        }
        if let Some(w) = f.weight
            && !(w.is_finite() && w > 0.0)
        {
            cx.error(
                &p("weight"),
                format!("weight must be a positive number, got {w}"),
            );
        }
        if f.count.is_none() && s.duration.is_none() {
            cx.error(
                &[spec, Key("functions"), Index(i)],
                "set `count`, or bound the workload with `duration`",
            );
        }
    }
    let a = &s.arrival;
    let ap = |field: &'static str| [spec, Key("arrival"), Key(field)];
    if let Some(p) = &a.period {
        cx.duration(&ap("period"), p);
    }
    match a.pattern {
        ArrivalPattern::Fixed | ArrivalPattern::Poisson => match &a.rate {
            None => {
                cx.error(
                    &[spec, Key("arrival")],
                    "this arrival pattern needs `rate`, e.g. `5/s`",
                );
            }
            Some(r) => {
                if let Err(e) = parse_rate(r) {
                    cx.error(&ap("rate"), e);
                }
            }
        },
        ArrivalPattern::Trace => {
            if a.file.is_none() {
                cx.error(&[spec, Key("arrival")], "a trace arrival needs `file`");
            }
        }
        ArrivalPattern::Balanced => {}
    }
    if let Some(d) = &s.duration {
        cx.duration(&[spec, Key("duration")], d);
    }
    cx.positive(&[spec, Key("concurrency")], "concurrency", s.concurrency);
    if let Some(m) = s.max_attempts {
        cx.positive(&[spec, Key("maxAttempts")], "maxAttempts", m);
    }
}

/// `5/s`, `300/m`, `0.5/s` → invocations per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid rate `{s}`: expected NUMBER/s, NUMBER/m or NUMBER/h, e.g. `5/s`");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(bad());
    }
    Ok(n / per)
}

/// Rules about the set: unique names, resolvable references, no shared hardware.
/// Tap VMs across the set: each needs its own address, and the Cluster must advertise an
/// orchestrator address for them to dial (they are not behind QEMU's guestfwd).
fn tap_vms(resources: &[Resource], out: &mut Vec<Diagnostic>) {
    // Only a Cluster in this set can be checked; without one the engine says it at launch.
    let unadvertised = resources
        .iter()
        .any(|r| matches!(&r.spec, Spec::Cluster(c) if c.orchestrator.advertise.is_none()));
    let mut addresses: HashMap<std::net::Ipv4Addr, &Resource> = HashMap::new();
    let mut told_advertise = false;
    for w in resources {
        let Spec::Worker(spec) = &w.spec else {
            continue;
        };
        let Some(vm) = spec
            .vm
            .as_ref()
            .filter(|vm| vm.network.mode == VmNetworkMode::Tap)
        else {
            continue;
        };
        let mut path = if w.owner.is_some() {
            vec![Key("spec"), Key("template"), Key("spec")]
        } else {
            vec![Key("spec")]
        };
        path.extend([Key("vm"), Key("network")]);
        if unadvertised && !told_advertise {
            told_advertise = true;
            out.push(
                Diagnostic::error(
                    &w.origin.file,
                    w.node.pos_of(&path),
                    format!("worker `{}` is on tap networking, but the Cluster has no `orchestrator.advertise` for its agent to dial", w.name()),
                )
                .with_help("set `advertise` to the orchestrator's HOST:PORT on the bridge's network"),
            );
        }
        let Some(addr) = vm
            .network
            .address
            .as_deref()
            .and_then(|a| super::tapaddr::TapAddress::parse(a).ok())
        else {
            continue;
        };
        if let Some(first) = addresses.get(&addr.ip) {
            path.push(Key("address"));
            out.push(Diagnostic::error(
                &w.origin.file,
                w.node.pos_of(&path),
                format!(
                    "worker `{}` has tap address {}, already used by worker `{}`",
                    w.name(),
                    addr.ip,
                    first.name()
                ),
            ));
        } else {
            addresses.insert(addr.ip, w);
        }
    }
}

fn across(resources: &[Resource], out: &mut Vec<Diagnostic>) {
    tap_vms(resources, out);
    let mut seen: HashMap<(Kind, &str), &Resource> = HashMap::new();
    for r in resources {
        if let Some(first) = seen.get(&(r.kind(), r.name())) {
            let what = match &r.owner {
                Some(set) => format!(
                    "duplicate {}: `{}` (made by WorkerSet `{set}`) is already declared",
                    r.kind(),
                    r.name()
                ),
                None => format!("duplicate {} `{}`", r.kind(), r.name()),
            };
            out.push(
                Diagnostic::error(&r.origin.file, name_pos(r), what).with_help(format!(
                    "first declared at {}:{}:{}",
                    first.origin.file,
                    name_pos(first).line,
                    name_pos(first).col
                )),
            );
        } else {
            seen.insert((r.kind(), r.name()), r);
        }
    }
    let clusters: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.kind() == Kind::Cluster)
        .collect();
    if let [_, second, ..] = clusters.as_slice() {
        out.push(Diagnostic::error(
            &second.origin.file,
            name_pos(second),
            "only one Cluster may be declared",
        ));
    }

    let names = |kind: Kind| -> Vec<&str> {
        resources
            .iter()
            .filter(|r| r.kind() == kind)
            .map(|r| r.name())
            .collect()
    };
    let switches = names(Kind::Switch);
    let functions = names(Kind::Function);
    let workers: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.kind() == Kind::Worker)
        .collect();

    let mut lines: HashMap<String, (&Resource, Vec<Seg<'static>>)> = HashMap::new();
    let mut ports: HashMap<(String, String), (&Resource, Vec<Seg<'static>>)> = HashMap::new();
    let mut v1_addresses: HashMap<String, (&Resource, Vec<Seg<'static>>)> = HashMap::new();
    for w in &workers {
        let Spec::Worker(spec) = &w.spec else {
            continue;
        };
        let Some(board) = &spec.board else { continue };
        let base: Vec<Seg<'static>> = if w.owner.is_some() {
            vec![Key("spec"), Key("template"), Key("spec"), Key("board")]
        } else {
            vec![Key("spec"), Key("board")]
        };
        let mut line_path = base.clone();
        line_path.extend([Key("powerButton")]);
        if let Some(id) = line_identity(&board.power_button) {
            if let Some((first, _)) = lines.get(&id) {
                out.push(
                    Diagnostic::error(
                        &w.origin.file,
                        w.node.pos_of(&line_path),
                        format!(
                            "worker `{}` uses GPIO line {id}, already used by worker `{}`",
                            w.name(),
                            first.name()
                        ),
                    )
                    .with_help(format!(
                        "each board needs its own power-button line; `{}` is at {}:{}:{}",
                        first.name(),
                        first.origin.file,
                        first.origin.pos.line,
                        first.origin.pos.col
                    )),
                );
            } else {
                lines.insert(id, (w, line_path));
            }
        }
        if let Some(net) = &board.network {
            let mut net_path = base.clone();
            net_path.push(Key("network"));
            if spec.protocol == WorkerProtocol::MicrofaasV1
                && let Some(addr) = &net.address
            {
                let mut p = net_path.clone();
                p.push(Key("address"));
                if let Some((first, _)) = v1_addresses.get(addr) {
                    out.push(Diagnostic::error(&w.origin.file, w.node.pos_of(&p), format!(
                        "worker `{}` has v1 address `{addr}`, already used by worker `{}`: v1 workers are told apart by their address",
                        w.name(),
                        first.name()
                    )));
                } else {
                    v1_addresses.insert(addr.clone(), (w, p));
                }
            }
            if let Some(sw) = &net.switch {
                if !switches.contains(&sw.as_str()) {
                    let mut p = net_path.clone();
                    p.push(Key("switch"));
                    let mut d = Diagnostic::error(
                        &w.origin.file,
                        w.node.pos_of(&p),
                        format!("Switch `{sw}` is not declared"),
                    );
                    if let Some(m) = did_you_mean(sw, switches.iter().copied()) {
                        d = d.with_help(format!("did you mean `{m}`?"));
                    }
                    out.push(d);
                }
                if let Some(port) = &net.port {
                    let key = (sw.clone(), port.clone());
                    if let Some((first, _)) = ports.get(&key) {
                        let mut p = net_path.clone();
                        p.push(Key("port"));
                        out.push(Diagnostic::error(&w.origin.file, w.node.pos_of(&p), format!(
                            "worker `{}` is on port `{port}` of switch `{sw}`, already used by worker `{}`",
                            w.name(),
                            first.name()
                        )));
                    } else {
                        ports.insert(key, (w, net_path));
                    }
                }
            }
        }
    }

    let cluster_services = clusters.first().and_then(|c| match &c.spec {
        Spec::Cluster(s) => Some(&s.services),
        _ => None,
    });
    for r in resources {
        if let Spec::Function(s) = &r.spec {
            function_services(r, s, cluster_services, out);
        }
    }

    for r in resources {
        let (file, node) = (&r.origin.file, &r.node);
        match &r.spec {
            Spec::Workload(s) => {
                for (i, f) in s.functions.iter().enumerate() {
                    if !functions.contains(&f.function.as_str()) {
                        let p = [Key("spec"), Key("functions"), Index(i), Key("function")];
                        let mut d = Diagnostic::error(
                            file,
                            node.pos_of(&p),
                            format!("Function `{}` is not declared", f.function),
                        );
                        if let Some(m) = did_you_mean(&f.function, functions.iter().copied()) {
                            d = d.with_help(format!("did you mean `{m}`?"));
                        }
                        out.push(d);
                    }
                }
                if !workers
                    .iter()
                    .any(|w| s.workers.matches(&w.metadata.labels))
                {
                    out.push(Diagnostic::warning(file, node.pos_of(&[Key("spec"), Key("workers")]), format!(
                        "workload `{}` selects no declared worker: its invocations cannot be placed",
                        r.name()
                    )));
                }
            }
            Spec::PowerMeter(s)
                if !workers.iter().any(|w| s.covers.matches(&w.metadata.labels)) =>
            {
                out.push(Diagnostic::warning(
                    file,
                    node.pos_of(&[Key("spec"), Key("covers")]),
                    format!("power meter `{}` covers no declared worker", r.name()),
                ));
            }
            _ => {}
        }
    }
}

/// A Function's service references resolve to a declared service of the right protocol that
/// lets it in, and a service-backed builtin names the role it needs.
fn function_services(
    r: &Resource,
    s: &FunctionSpec,
    declared: Option<&std::collections::BTreeMap<String, ServiceSpec>>,
    out: &mut Vec<Diagnostic>,
) {
    let file = &r.origin.file;
    let spec = Key("spec");
    let role = s
        .handler
        .as_deref()
        .and_then(crate::functions::service_role);
    if s.runtime == Runtime::Builtin
        && let (Some(role), Some(h)) = (role, &s.handler)
        && !s.services.contains_key(role)
    {
        out.push(
            Diagnostic::error(
                file,
                r.node.pos_of(&[spec, Key("handler")]),
                format!("builtin `{h}` needs a `{role}` service"),
            )
            .with_help(format!(
                "add `services: {{{role}: NAME}}` naming one of the Cluster's spec.services"
            )),
        );
    }
    for (key, name) in &s.services {
        let path = [spec, Key("services"), Key(key.as_str())];
        let names: Vec<&str> = declared
            .map(|d| d.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let Some(svc) = declared.and_then(|d| d.get(name)) else {
            let mut d = Diagnostic::error(
                file,
                r.node.pos_of(&path),
                format!("service `{name}` is not declared in the Cluster's spec.services"),
            );
            if let Some(m) = did_you_mean(name, names.iter().copied()) {
                d = d.with_help(format!("did you mean `{m}`?"));
            }
            out.push(d);
            continue;
        };
        let want = crate::functions::role_protocol(key);
        if matches!(key.as_str(), "redis" | "postgres" | "s3" | "queue")
            && svc.protocol.as_str() != want
        {
            out.push(Diagnostic::error(
                file,
                r.node.pos_of(&path),
                format!(
                    "service `{name}` speaks {}, but the `{key}` role needs {want}",
                    svc.protocol.as_str()
                ),
            ));
        }
        if !svc.functions.is_empty() && !svc.functions.iter().any(|f| f == r.name()) {
            out.push(Diagnostic::error(
                file,
                r.node.pos_of(&path),
                format!(
                    "service `{name}` does not allow Function `{}` (its `functions`: {})",
                    r.name(),
                    svc.functions.join(", ")
                ),
            ));
        }
    }
}

fn name_pos(r: &Resource) -> super::node::Pos {
    r.node.pos_of(&[Key("metadata"), Key("name")])
}

/// A line's identity for collision checks: header pins resolve to their GPIO bank's chip, so
/// `pin: P9_12` and `chip: gpiochip1, line: 28` are the same line.
pub fn line_identity(pb: &PowerButton) -> Option<String> {
    if let Some(pin) = &pb.pin {
        let (bank, line) = pins::lookup(pin)?;
        return Some(format!("gpiochip{bank}:{line}"));
    }
    if let (Some(chip), Some(line)) = (&pb.chip, pb.line) {
        let chip = chip.trim_start_matches("/dev/");
        return Some(format!("{chip}:{line}"));
    }
    pb.line_name.as_ref().map(|n| format!("line `{n}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("5/s"), Ok(5.0));
        assert_eq!(parse_rate("120/m"), Ok(2.0));
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("1/d").is_err());
    }
}
