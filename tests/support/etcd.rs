//! A real 3-member etcd cluster (Debian's etcd-server) on loopback with ephemeral ports, in
//! its own temp dir, for the store-over-etcd tests: members are started and stopped by PID,
//! one at a time too (a member down, quorum lost, and back).

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
}

/// A free loopback port (etcd binds it right after; a collision fails the readiness wait).
/// Here rather than from `services`, so benches can include this file alone.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("MICROFAAS_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader and answers.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(
            etcd_binary().exists(),
            "{} is missing: hack/install-deps.sh installs etcd-server",
            etcd_binary().display()
        );
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_tcp_port(),
                peer_port: free_tcp_port(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster { dir, members };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_ready(Duration::from_secs(60));
        c
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
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_binary())
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

    /// `etcd://E1,E2,E3/PREFIX`, as `--store` takes it.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints().join(","))
    }

    pub fn location(&self, prefix: &str) -> microfaas::store::EtcdLocation {
        microfaas::store::EtcdLocation {
            endpoints: self.endpoints(),
            prefix: prefix.to_string(),
        }
    }

    /// The cluster's current revision (every committed write adds one), from the first running
    /// member.
    pub fn revision(&self) -> i64 {
        let Some(m) = self.members.iter().find(|m| m.child.is_some()) else {
            return 0;
        };
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("http://127.0.0.1:{}", m.client_port),
            ])
            .args(["endpoint", "status", "--write-out=json"])
            .output()
            .expect("etcdctl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap_or(0)
    }

    /// `etcdctl endpoint health` over the running members.
    fn healthy(&self) -> bool {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect();
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &running.join(","), "--command-timeout=2s"])
            .args(["endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.healthy() {
            for m in &mut self.members {
                if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
                    panic!(
                        "etcd {} exited ({st}): {}",
                        m.name,
                        std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                            .unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd cluster not healthy within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
