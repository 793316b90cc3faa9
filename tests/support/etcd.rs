//! A real 3-member etcd cluster (Debian's etcd-server) on loopback with ephemeral ports, in
//! its own temp dir, for the store-over-etcd tests: members are started and stopped by PID,
//! one at a time too (a member down, quorum lost, and back). [`EtcdCluster::start_tls`] serves
//! the client URLs over TLS with certificates the `openssl` CLI makes in the same temp dir
//! (a CA, a member certificate for IP 127.0.0.1, a client certificate, and a second CA
//! nobody trusts, for the wrong-CA cases).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    tls: Option<Pki>,
}

/// How the members serve their client URLs over TLS.
#[derive(Debug, Clone, Copy)]
pub struct TlsOptions {
    /// `--client-cert-auth`: only clients with a certificate of the CA get in.
    pub client_cert_auth: bool,
}

/// The certificates of a TLS cluster, PEM files in its temp dir.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of the above, and a client certificate of it.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    pub client_cert_auth: bool,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is missing: hack/install-deps.sh installs it");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key and a certificate for `cn` signed by `ca` (self-signed when `ca` is `None`).
fn issue(dir: &std::path::Path, name: &str, cn: &str, ca: Option<&str>, ext: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let subj = format!("/CN={cn}");
    let Some(ca) = ca else {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subj,
            ],
        );
        return;
    };
    let (csr, extfile) = (format!("{name}.csr"), format!("{name}.ext"));
    std::fs::write(dir.join(&extfile), ext).expect("ext file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ],
    );
}

impl Pki {
    /// Makes every certificate in `dir`.
    pub fn make(dir: &std::path::Path, client_cert_auth: bool) -> Pki {
        issue(dir, "ca", "microfaas-test-ca", None, "");
        issue(dir, "other-ca", "someone-else-ca", None, "");
        // The member's certificate is also the client certificate of etcd's own JSON gateway
        // towards its gRPC server, hence clientAuth.
        issue(
            dir,
            "server",
            "etcd-member",
            Some("ca"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        let client_ext = "extendedKeyUsage=clientAuth\n";
        issue(dir, "client", "microfaas", Some("ca"), client_ext);
        issue(
            dir,
            "other-client",
            "microfaas",
            Some("other-ca"),
            client_ext,
        );
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_client_cert: dir.join("other-client.pem"),
            other_client_key: dir.join("other-client.key"),
            client_cert_auth,
        }
    }

    /// The files the store uses: the CA, and the client certificate when members want one.
    pub fn files(&self) -> microfaas::store::TlsFiles {
        microfaas::store::TlsFiles {
            ca: self.ca.clone(),
            client: self.client_cert_auth.then(|| microfaas::store::ClientCert {
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            }),
        }
    }

    /// etcdctl's TLS flags for these files.
    fn etcdctl_args(&self) -> Vec<String> {
        let mut a = vec![format!("--cacert={}", self.ca.display())];
        if self.client_cert_auth {
            a.push(format!("--cert={}", self.client_cert.display()));
            a.push(format!("--key={}", self.client_key.display()));
        }
        a
    }
}

/// `n` distinct free loopback ports. The listeners are held until all are chosen: binding and
/// dropping one at a time can hand out the same port twice (CI once got m1 and m2 on one peer
/// port). Here rather than from `services`, so benches can include this file alone.
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound port").port())
        .collect()
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("MICROFAAS_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader and answers.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, None)
    }

    /// Starts `n` members serving their client URLs over TLS only (peers stay plain HTTP).
    pub fn start_tls(n: usize, opts: TlsOptions) -> EtcdCluster {
        EtcdCluster::start_with(n, Some(opts))
    }

    fn start_with(n: usize, tls: Option<TlsOptions>) -> EtcdCluster {
        assert!(
            etcd_binary().exists(),
            "{} is missing: hack/install-deps.sh installs etcd-server",
            etcd_binary().display()
        );
        // Another process on the machine may take a chosen port before etcd binds it; that
        // attempt is thrown away and the cluster started again on fresh ports.
        for attempt in 1.. {
            let dir = tempfile::tempdir().expect("etcd temp dir");
            let ports = free_tcp_ports(2 * n);
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                })
                .collect();
            let tls = tls.map(|o| Pki::make(dir.path(), o.client_cert_auth));
            let mut c = EtcdCluster { dir, members, tls };
            for i in 0..n {
                c.spawn(i, "new");
            }
            match c.ready(Duration::from_secs(60)) {
                Ok(()) => return c,
                Err(e) if attempt < 3 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the start loop returns or panics")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log");
        let err = log.try_clone().expect("etcd log");
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(etcd_binary());
        if let Some(pki) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca);
            if pki.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "microfaas-test"])
            // Short election timeouts: a test that stops a member sees a new leader soon.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Client endpoints (`127.0.0.1:PORT`) of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `etcd://E1,E2,E3/PREFIX` (`etcds://` over TLS), as `--store` takes it.
    pub fn url(&self, prefix: &str) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}/{prefix}", self.endpoints().join(","))
    }

    /// The certificates, on a TLS cluster.
    pub fn pki(&self) -> Option<&Pki> {
        self.tls.as_ref()
    }

    /// The store's location, with the TLS files on a TLS cluster.
    pub fn location(&self, prefix: &str) -> microfaas::store::EtcdLocation {
        microfaas::store::EtcdLocation {
            endpoints: self.endpoints(),
            prefix: prefix.to_string(),
            tls: self.tls.as_ref().map(Pki::files),
        }
    }

    /// etcdctl against the running members (TLS flags included).
    fn etcdctl(&self) -> Command {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect();
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .args(["--endpoints", &running.join(",")])
            .args(self.tls.as_ref().map(Pki::etcdctl_args).unwrap_or_default());
        c
    }

    /// How many keys live under `prefix` (read with etcdctl, not with the store under test).
    pub fn keys_under(&self, prefix: &str) -> usize {
        let out = self
            .etcdctl()
            .args(["get", "--prefix", "--keys-only", prefix])
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// The cluster's current revision (every committed write adds one), from the first running
    /// member.
    pub fn revision(&self) -> i64 {
        if self.members.iter().all(|m| m.child.is_none()) {
            return 0;
        }
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "--write-out=json"])
            .output()
            .expect("etcdctl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap_or(0)
    }

    /// `etcdctl endpoint health` over the running members.
    fn healthy(&self) -> bool {
        self.etcdctl()
            .args(["--command-timeout=2s", "endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self, limit: Duration) {
        if let Err(e) = self.ready(limit) {
            panic!("{e}");
        }
    }

    /// Waits until the running members answer; a member that exits meanwhile is an error
    /// carrying its log.
    fn ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !self.healthy() {
            for m in &mut self.members {
                if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "etcd {} exited ({st}): {}",
                        m.name,
                        std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                            .unwrap_or_default()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("etcd cluster not healthy within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Kills member `i` (SIGKILL, by PID) and reaps it.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a stopped member on its data dir and waits for the cluster to answer.
    pub fn start_member(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.spawn(i, "existing");
        }
        self.wait_ready(Duration::from_secs(60));
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}
