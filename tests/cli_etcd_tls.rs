//! The CLI and `serve` on an etcd store over TLS (a real etcd serving TLS on loopback that
//! requires client certificates, certificates made by `openssl` in the test's temp dir):
//! `--store etcds://...` with `--etcd-ca/--etcd-cert/--etcd-key` or their MICROFAAS_ETCD_*
//! variables; a `serve` whose Cluster names the TLS files relative to its manifest, read and
//! written by a CLI on another state dir; and the refusals: a wrong CA or a missing client
//! certificate fail naming the endpoint and the reason with nothing written, flags that do
//! not fit the URL are a bad command line.
//!
//! No QEMU: the workers are declared powered off, so `serve` holds and reports them without
//! booting anything; what is under test is every connection of both processes over TLS.

mod support;

use microfaas::manifest::Kind;
use microfaas::store::etcd::lease::Leases;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::etcd::{EtcdCluster, Pki, TlsOptions};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The TLS files a command is given, as flags or as environment variables.
#[derive(Clone, Copy)]
enum Files<'a> {
    None,
    Flags(&'a Path, Option<(&'a Path, &'a Path)>),
    Env(&'a Path, Option<(&'a Path, &'a Path)>),
}

/// `microfaasctl` on state dir `state` and store `url`, hermetic to the caller's environment.
fn ctl(state: &Path, url: &str, files: Files<'_>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_microfaasctl"));
    c.env("MICROFAAS_STATE_DIR", state)
        .env("MICROFAAS_STORE", url)
        .env_remove("MICROFAAS_ETCD_CA")
        .env_remove("MICROFAAS_ETCD_CERT")
        .env_remove("MICROFAAS_ETCD_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    match files {
        Files::None => {}
        Files::Flags(ca, client) => {
            c.arg("--etcd-ca").arg(ca);
            if let Some((cert, key)) = client {
                c.arg("--etcd-cert").arg(cert).arg("--etcd-key").arg(key);
            }
        }
        Files::Env(ca, client) => {
            c.env("MICROFAAS_ETCD_CA", ca);
            if let Some((cert, key)) = client {
                c.env("MICROFAAS_ETCD_CERT", cert)
                    .env("MICROFAAS_ETCD_KEY", key);
            }
        }
    }
    c.args(args).output().expect("run microfaasctl")
}

fn tls_cluster() -> EtcdCluster {
    EtcdCluster::start_tls(
        1,
        TlsOptions {
            client_cert_auth: true,
        },
    )
}

fn client(pki: &Pki) -> Option<(&Path, &Path)> {
    Some((pki.client_cert.as_path(), pki.client_key.as_path()))
}

fn worker(name: &str) -> String {
    format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}}}\nspec:\n  power: \"Off\"\n  vm: {{kernel: /nonexistent/bzImage, memory: 128Mi}}\n"
    )
}

#[test]
fn cli_over_tls_and_its_refusals() {
    let cluster = tls_cluster();
    let pki = cluster.pki().expect("tls").clone();
    let url = cluster.url("cli");
    let endpoint = cluster.endpoints()[0].clone();
    let machine_a = tempfile::tempdir().expect("tmp");
    let machine_b = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("w.yaml");
    std::fs::write(&f, worker("vm-0")).expect("write");
    let f = f.to_str().expect("utf8");
    let apply = ["apply", "-f", f, "--no-fs-checks", "--no-wait"];
    let good = Files::Flags(&pki.ca, client(&pki));

    // flags on machine A, environment on machine B
    let a = ctl(machine_a.path(), &url, good, &apply);
    assert_eq!(
        (a.status.code(), text(&a.stdout).as_str()),
        (Some(0), "worker/vm-0 created\n"),
        "{}",
        text(&a.stderr)
    );
    let g = ctl(
        machine_b.path(),
        &url,
        Files::Env(&pki.ca, client(&pki)),
        &["get", "worker", "vm-0", "-o", "json"],
    );
    assert_eq!(g.status.code(), Some(0), "{}", text(&g.stderr));
    let v: Value = serde_json::from_slice(&g.stdout).expect("json");
    assert_eq!(v["metadata"]["name"], "vm-0");

    // what follows must not write: the store's revision stays put
    let revision = cluster.revision();
    std::fs::write(f, format!("{}{}", worker("vm-0"), worker("vm-1"))).expect("write");
    let refused = |files: Files<'_>, wants: &[&str]| {
        let o = ctl(machine_a.path(), &url, files, &apply);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        for w in wants {
            assert!(err.contains(w), "{w:?} missing in: {err}");
        }
    };
    // a CA that did not sign the member's certificate
    refused(
        Files::Flags(&pki.other_ca, client(&pki)),
        &[&endpoint, "not signed by the CA", "unknown CA"],
    );
    // the member requires a client certificate
    refused(
        Files::Flags(&pki.ca, None),
        &[&endpoint, "requires a client certificate", "--etcd-cert"],
    );
    // plain HTTP to the TLS member
    let plain_url = url.replacen("etcds://", "etcd://", 1);
    let o = ctl(machine_a.path(), &plain_url, Files::None, &apply);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    for w in [&endpoint, "serves TLS but the store speaks plain HTTP"] {
        assert!(
            text(&o.stderr).contains(w),
            "{w:?} missing in: {}",
            text(&o.stderr)
        );
    }
    assert_eq!(cluster.revision(), revision, "a refused command wrote");
    let g = ctl(
        machine_b.path(),
        &url,
        good,
        &["get", "worker", "vm-1", "-o", "json"],
    );
    assert_eq!(
        g.status.code(),
        Some(1),
        "vm-1 was stored: {}",
        text(&g.stdout)
    );

    // flags that do not fit the URL: a bad command line (exit 2), before anything is read
    for (u, files, want) in [
        (url.as_str(), Files::None, "needs --etcd-ca"),
        (
            plain_url.as_str(),
            Files::Flags(&pki.ca, None),
            "write etcds://",
        ),
    ] {
        let o = ctl(machine_a.path(), u, files, &["get", "workers"]);
        assert_eq!(o.status.code(), Some(2), "{u}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{u}: {}", text(&o.stderr));
    }
    let mut only_cert = Command::new(env!("CARGO_BIN_EXE_microfaasctl"));
    only_cert
        .env("MICROFAAS_STATE_DIR", machine_a.path())
        .env_remove("MICROFAAS_ETCD_KEY")
        .args(["--store", &url, "--etcd-ca"])
        .arg(&pki.ca)
        .arg("--etcd-cert")
        .arg(&pki.client_cert)
        .args(["get", "workers"]);
    let o = only_cert.output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--etcd-cert needs --etcd-key"));

    // --help says how
    let h = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .arg("--help")
        .output()
        .expect("help");
    for want in [
        "etcds://",
        "--etcd-ca",
        "--etcd-cert",
        "--etcd-key",
        "MICROFAAS_ETCD_CA",
    ] {
        assert!(text(&h.stdout).contains(want), "{want} not in --help");
    }
}

/// `serve` reads its store, TLS files included, from its Cluster (paths relative to the
/// manifest, the serve started elsewhere); a CLI with another state dir applies and waits on
/// it, and sees the workers held under its lease.
#[test]
fn serve_on_a_tls_store_and_a_cli_from_another_state_dir() {
    let cluster = tls_cluster();
    let pki = cluster.pki().expect("tls").clone();
    let url = cluster.url("serve");
    let dir = tempfile::tempdir().expect("tmp");
    let certs = dir.path().join("pki");
    std::fs::create_dir(&certs).expect("mkdir");
    for (from, to) in [
        (&pki.ca, "ca.pem"),
        (&pki.client_cert, "client.pem"),
        (&pki.client_key, "client.key"),
    ] {
        std::fs::copy(from, certs.join(to)).expect("copy");
    }
    let port = support::services::free_tcp_port();
    let manifest = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  orchestrator: {{listen: 127.0.0.1:{port}}}\n  store:\n    etcd:\n      endpoints: [\"https://{}\"]\n      prefix: serve\n      tls: {{ca: pki/ca.pem, cert: pki/client.pem, key: pki/client.key}}\n{}",
        cluster.endpoints()[0],
        worker("vm-0")
    );
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, manifest).expect("write");
    let state_a = tempfile::tempdir().expect("tmp");
    let elsewhere = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("serve.log");
    let serve = support::testbed::serve_command(state_a.path(), &log)
        .current_dir(elsewhere.path())
        .args(["serve", "-f"])
        .arg(&m)
        .args(["--no-fs-checks", "--name", "orch-a", "--lease-ttl", "5s"])
        .spawn()
        .expect("serve");
    // Killed by its PID if the test fails before the SIGTERM at its end.
    let mut serve = support::testbed::Daemon(Some(serve));
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let machine_b = tempfile::tempdir().expect("tmp");
    let files = Files::Env(&pki.ca, client(&pki));
    let limit = Duration::from_secs(120);
    let started = Instant::now();
    // the serve's status of vm-0 (once the engine has written one: `get` shows a status it
    // has not written yet as Pending), read over TLS from machine B
    let status = loop {
        if let Some(Ok(Some(st))) = serve.0.as_mut().map(std::process::Child::try_wait) {
            panic!("serve exited ({st}):\n{}", serve_log());
        }
        assert!(started.elapsed() < limit, "no status:\n{}", serve_log());
        let g = ctl(
            machine_b.path(),
            &url,
            files,
            &["get", "worker", "vm-0", "-o", "json"],
        );
        let v: Value = serde_json::from_slice(&g.stdout).unwrap_or_default();
        if v["status"]["observedGeneration"].as_i64() >= Some(1) {
            break v["status"].clone();
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status["phase"], "Off", "{status}\n{}", serve_log());
    // machine B applies another worker and waits on the serve converging it
    let f = dir.path().join("more.yaml");
    std::fs::write(&f, worker("vm-1")).expect("write");
    let a = ctl(
        machine_b.path(),
        &url,
        files,
        &[
            "apply",
            "-f",
            f.to_str().expect("utf8"),
            "--no-fs-checks",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}\n{}\nserve:\n{}",
        text(&a.stdout),
        text(&a.stderr),
        serve_log()
    );
    assert!(text(&a.stdout).contains("worker/vm-1 created"));
    // both held by the serve, under its lease (read over TLS too)
    let leases = Leases::new(&cluster.location("serve"));
    let deadline = Instant::now() + limit;
    loop {
        let held = leases.holders(Kind::Worker).expect("holders over TLS");
        let names: Vec<(&str, &str)> = held
            .iter()
            .map(|(n, h)| (n.as_str(), h.orchestrator.as_str()))
            .collect();
        if names == [("vm-0", "orch-a"), ("vm-1", "orch-a")] {
            break;
        }
        assert!(Instant::now() < deadline, "{names:?}\n{}", serve_log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !state_a.path().join("state.db").exists() && !machine_b.path().join("state.db").exists(),
        "a SQLite store was written"
    );
    support::testbed::stop(serve);
}
