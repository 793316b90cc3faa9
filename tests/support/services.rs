//! Real servers for the service-backed functions, each on loopback with an ephemeral port, its
//! own temp data dir and credentials, stopped by its PID on drop: redis-server, PostgreSQL 15,
//! mosquitto (MQTT) and moto's S3 server. Also their own clients for reading data back.

use super::snmp_agents::Agent;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "s3cret-Pw_1";
/// moto's server, installed by hack/install-deps.sh (or `$MICROFAAS_MOTO_VENV`).
pub const MOTO_VENV: &str = "/opt/microfaas/moto-venv";
pub const S3_ACCESS_KEY: &str = "microfaas-test";
pub const S3_BUCKET: &str = "functions";

/// A running server, its password file and (PostgreSQL) its database.
pub struct Server {
    pub proc: Agent,
    pub password_file: PathBuf,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.proc.port
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.proc.port)
    }
}

/// A free TCP port on loopback (the server binds it right after; a collision makes the
/// readiness wait fail saying so).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn log_file(dir: &Path, name: &str) -> (PathBuf, Stdio, Stdio) {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("log file");
    let e = f.try_clone().expect("log file");
    (path, Stdio::from(f), Stdio::from(e))
}

/// Waits until `port` accepts connections or the process exits.
fn wait_listening(proc: &mut Agent, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", proc.port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = proc.child.try_wait() {
            panic!(
                "{what} exited ({st}) before listening on {}: {}",
                proc.port,
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {} after 60 s: {}",
            proc.port,
            std::fs::read_to_string(&proc.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_password(dir: &Path) -> PathBuf {
    let p = dir.join("password");
    std::fs::write(&p, format!("{PASSWORD}\n")).expect("password file");
    p
}

pub fn start_redis() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_tcp_port();
    let (log, out, err) = log_file(dir.path(), "redis.log");
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("redis-server (hack/install-deps.sh installs it)");
    let password_file = write_password(dir.path());
    let mut proc = Agent::spawned(child, port, dir, log);
    wait_listening(&mut proc, "redis-server");
    Server {
        proc,
        password_file,
    }
}

/// `redis-cli` against the server, its trimmed stdout.
pub fn redis_cli(s: &Server, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port().to_string(),
            "--no-auth-warning",
        ])
        .args(["-a", PASSWORD])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL runs as an unprivileged user: as root, the `postgres` account the package
/// created (through `setpriv`, which execs, so the PID is the server's own).
fn as_pg_user(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            &path,
        ]);
        c
    } else {
        Command::new(path)
    }
}

/// A fresh cluster with SCRAM-SHA-256 authentication on TCP, database `shop` with the
/// inventory table the psql functions use (60 items, 10 of each).
pub fn start_postgres() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let data = dir.path().join("data");
    let pwfile = write_password(dir.path());
    let out = as_pg_user("initdb")
        .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .arg("-D")
        .arg(&data)
        .output()
        .expect("initdb (hack/install-deps.sh installs postgresql)");
    assert!(out.status.success(), "initdb: {out:?}");
    let port = free_tcp_port();
    let (log, stdout, stderr) = log_file(dir.path(), "postgres.log");
    let child = as_pg_user("postgres")
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("postgres");
    let mut proc = Agent::spawned(child, port, dir, log);
    wait_listening(&mut proc, "postgres");
    let s = Server {
        proc,
        password_file: pwfile,
    };
    // The server accepts TCP a moment before it accepts logins.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !psql(&s, "postgres", "SELECT 1").status.success() {
        assert!(Instant::now() < deadline, "postgres never accepted a login");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = |o: Output| assert!(o.status.success(), "{o:?}");
    ok(psql(&s, "postgres", "CREATE DATABASE shop"));
    ok(psql(
        &s,
        "shop",
        "CREATE TABLE inventory (id integer PRIMARY KEY, name text NOT NULL, quantity integer NOT NULL); \
         INSERT INTO inventory SELECT i, 'item-' || i, 10 FROM generate_series(1, 60) AS i",
    ));
    s
}

/// `psql` as `postgres` with the password, unaligned tuples only.
pub fn psql(s: &Server, db: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", db, "-tAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql")
}

pub fn psql_value(s: &Server, db: &str, sql: &str) -> String {
    let out = psql(s, db, sql);
    assert!(out.status.success(), "psql {sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub const MQTT_USER: &str = "fn";

/// mosquitto with one user (`fn`, [`PASSWORD`]) and no anonymous access.
pub fn start_mosquitto() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_tcp_port();
    let pwfile = write_password(dir.path());
    let users = dir.path().join("users");
    let out = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&users)
        .args([MQTT_USER, PASSWORD])
        .output()
        .expect("mosquitto_passwd (hack/install-deps.sh installs mosquitto)");
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    let conf = dir.path().join("mosquitto.conf");
    // `user root`: as root, mosquitto would otherwise drop to its own account, which cannot
    // read this temp dir; ignored when not started as root.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nuser root\n",
            users.display()
        ),
    )
    .expect("conf");
    let (log, stdout, stderr) = log_file(dir.path(), "mosquitto.log");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("mosquitto");
    let mut proc = Agent::spawned(child, port, dir, log);
    wait_listening(&mut proc, "mosquitto");
    Server {
        proc,
        password_file: pwfile,
    }
}

/// A mosquitto client tool (`mosquitto_sub`, `mosquitto_pub`) against the server as `fn`.
pub fn mosquitto_tool(s: &Server, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &s.port().to_string()])
        .args(["-u", MQTT_USER, "-P", PASSWORD])
        .args(args)
        .output()
        .expect(tool);
    assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn moto_venv() -> PathBuf {
    std::env::var_os("MICROFAAS_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_VENV))
}

/// moto's S3-compatible server with bucket [`S3_BUCKET`] made through boto3.
pub fn start_s3() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_tcp_port();
    let pwfile = write_password(dir.path());
    let (log, stdout, stderr) = log_file(dir.path(), "moto.log");
    let child = Command::new(moto_venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("moto_server (hack/install-deps.sh installs it)");
    let mut proc = Agent::spawned(child, port, dir, log);
    wait_listening(&mut proc, "moto_server");
    let s = Server {
        proc,
        password_file: pwfile,
    };
    boto3(&s, &format!("s3.create_bucket(Bucket={S3_BUCKET:?})"));
    s
}

/// Runs Python with `s3`, a boto3 client of the server, and returns its stdout.
pub fn boto3(s: &Server, code: &str) -> String {
    let script = format!(
        "import boto3, sys\n\
         s3 = boto3.client('s3', endpoint_url='http://{}', region_name='us-east-1', \
         aws_access_key_id='{S3_ACCESS_KEY}', aws_secret_access_key='{PASSWORD}')\n{code}\n",
        s.addr()
    );
    let out = Command::new(moto_venv().join("bin/python"))
        .args(["-c", &script])
        .output()
        .expect("python");
    assert!(out.status.success(), "boto3 {code}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
