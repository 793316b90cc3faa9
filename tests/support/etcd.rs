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
            let mut c = EtcdCluster { dir, members };
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
