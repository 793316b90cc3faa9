//! The agent as a normal process against small test orchestrators written here (std TCP on
//! 127.0.0.1): the full handshake and all nine functions, wrong tokens, hostile frames,
//! deadlines, the OneShot and Warm lifecycles and the silence failsafe.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod functions_support;
#[path = "support/wasm_fn.rs"]
mod wasm_fn;

use functions_support::reference;
use microfaas::functions;
use microfaas::protocol::{
    self, AuthOk, Challenge, Denied, ErrorKind, FrameReader, Heartbeat, Hello, Invoke,
    InvokeResult, Lifecycle, Message, Outcome, PROTOCOL_VERSION, ProtocolError, UserCode, auth,
};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-cluster-token";
const WAIT: Duration = Duration::from_secs(20);

struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(port: u16, extra: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_microfaas-agent"))
            .args([
                "--orchestrator",
                &format!("127.0.0.1:{port}"),
                "--name",
                "w1",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Agent { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                thread::sleep(Duration::from_millis(50)); // let the log drain
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "agent still running; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "agent exited; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        assert!(!log.contains("panicked"), "agent panicked:\n{log}");
    }
}

struct Orchestrator {
    listener: TcpListener,
}

impl Orchestrator {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Orchestrator { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    fn accept(&self, agent: &Agent) -> Conn {
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(WAIT)).unwrap();
                    return Conn {
                        reader: FrameReader::new(s.try_clone().unwrap()),
                        stream: s,
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        start.elapsed() < WAIT,
                        "agent never dialled; log:\n{}",
                        agent.log()
                    );
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Whether the agent dials again within `within`.
    fn dialled_within(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.listener.accept().is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

struct Conn {
    stream: TcpStream,
    reader: FrameReader<TcpStream>,
}

impl Conn {
    fn send(&mut self, msg: &Message) {
        self.stream.write_all(&protocol::encode(msg)).unwrap();
    }

    fn recv(&mut self) -> Message {
        match self.reader.read_message() {
            Ok(Some(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Read until the agent closes the connection; the messages it sent on the way.
    fn drain_until_closed(&mut self) -> Vec<Message> {
        let mut got = Vec::new();
        loop {
            match self.reader.read_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return got,
                Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return got;
                }
                Err(e) => panic!("agent did not close the connection: {e}"),
            }
        }
    }

    /// Hello, challenge, auth; checks the proof against `token`. Returns the hello and
    /// whether the proof was right (answered with authOk, or denied and closed).
    fn handshake(&mut self, token: &str, heartbeat_ms: Option<u64>) -> (Hello, bool) {
        let hello = match self.recv() {
            Message::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        let nonce = format!("nonce-{}", hello.uptime_ms);
        self.send(&Message::Challenge(Challenge {
            nonce: nonce.clone(),
        }));
        let proof = match self.recv() {
            Message::Auth(a) => a.proof,
            other => panic!("expected auth, got {other:?}"),
        };
        let ok = auth::verify(token.as_bytes(), &nonce, &proof);
        if ok {
            self.send(&Message::AuthOk(AuthOk { heartbeat_ms }));
        } else {
            self.send(&Message::Denied(Denied {
                reason: "bad proof".into(),
            }));
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        (hello, ok)
    }

    fn invoke(&mut self, id: &str, handler: &str, input: Value, deadline_ms: u64) -> InvokeResult {
        self.send(&Message::Invoke(Invoke {
            id: id.into(),
            function: format!("fn-{handler}"),
            runtime: "builtin".into(),
            handler: handler.into(),
            input,
            deadline_ms,
            services: Default::default(),
            code: None,
        }));
        loop {
            match self.recv() {
                Message::Result(r) => return r,
                Message::Heartbeat(_) => continue,
                other => panic!("expected result, got {other:?}"),
            }
        }
    }
}

#[test]
fn authenticated_agent_runs_all_nine_functions_then_powers_off() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN]);
    let mut c = orch.accept(&agent);
    let (hello, ok) = c.handshake(TOKEN, None);
    assert!(ok, "the agent's proof must verify with the right token");
    assert_eq!(hello.worker, "w1");
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.capabilities.runtimes, ["builtin", "wasm", "exec"]);
    assert_eq!(hello.capabilities.functions, functions::all_names());
    assert_eq!(hello.capabilities.lifecycle, Lifecycle::OneShot);
    assert!(hello.uptime_ms > 0);

    let mut n = 0;
    for name in functions::names() {
        let inputs = functions::default_inputs(name, 11, 2);
        let expected = reference(name, &inputs);
        for (input, want) in inputs.into_iter().zip(expected) {
            n += 1;
            let id = format!("inv-{n}");
            let r = c.invoke(&id, name, input.clone(), 30_000);
            assert_eq!(r.id, id);
            match r.outcome {
                Outcome::Output(got) => assert!(
                    functions::outputs_match(&want, &got),
                    "{name}({input}): agent {got}, reference {want}"
                ),
                Outcome::Error(e) => panic!("{name}({input}) failed: {e:?}"),
            }
            assert!(r.exec_us < 30_000_000);
            c.send(&Message::Next);
        }
    }

    // Failures come back as typed results, and the session goes on.
    let r = c.invoke("u1", "no_such_function", json!({}), 1000);
    assert!(matches!(r.outcome, Outcome::Error(ref e) if e.kind == ErrorKind::UnknownFunction));
    let r = c.invoke("b1", "matmul", json!({"size": "big"}), 1000);
    assert!(matches!(r.outcome, Outcome::Error(ref e) if e.kind == ErrorKind::BadInput));
    c.send(&Message::Invoke(Invoke {
        id: "w1".into(),
        function: "f".into(),
        runtime: "cobol".into(),
        handler: "matmul".into(),
        input: json!({}),
        deadline_ms: 1000,
        services: Default::default(),
        code: None,
    }));
    match c.recv() {
        Message::Result(r) => assert!(
            matches!(r.outcome, Outcome::Error(ref e) if e.kind == ErrorKind::UnsupportedRuntime)
        ),
        other => panic!("{other:?}"),
    }
    // A long-running function is timed around the call only.
    let r = c.invoke("t1", "cascading_sha256", json!({"rounds": 200_000}), 30_000);
    assert!(r.exec_us > 1_000, "exec time {} µs", r.exec_us);

    c.send(&Message::Poweroff);
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
}

#[test]
fn wrong_token_gets_no_work_and_the_connection_is_closed() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", "not-the-token"]);
    for _ in 0..2 {
        let mut c = orch.accept(&agent);
        let (_, ok) = c.handshake(TOKEN, None);
        assert!(!ok, "a wrong token must not produce a valid proof");
        // The agent sends nothing more (no result without work) and goes away.
        assert!(c.drain_until_closed().is_empty());
    }
    agent.assert_running();
    assert!(
        agent.log().contains("denied: bad proof"),
        "log:\n{}",
        agent.log()
    );
}

#[test]
fn agent_runs_nothing_for_a_server_that_skips_authentication() {
    let orch = Orchestrator::new();
    let agent = Agent::start(orch.port(), &["--token", TOKEN]);
    let mut c = orch.accept(&agent);
    assert!(matches!(c.recv(), Message::Hello(_)));
    c.send(&Message::Invoke(Invoke {
        id: "sneaky".into(),
        function: "f".into(),
        runtime: "builtin".into(),
        handler: "float_operations".into(),
        input: json!({"n": 10}),
        deadline_ms: 1000,
        services: Default::default(),
        code: None,
    }));
    let got = c.drain_until_closed();
    assert!(
        got.iter().all(|m| matches!(m, Message::Error(_))),
        "only an error may come back: {got:?}"
    );
    // And the same after the challenge, before authOk.
    let mut c = orch.accept(&agent);
    assert!(matches!(c.recv(), Message::Hello(_)));
    c.send(&Message::Challenge(Challenge { nonce: "n".into() }));
    assert!(matches!(c.recv(), Message::Auth(_)));
    c.send(&Message::Next);
    let got = c.drain_until_closed();
    assert!(
        got.iter().all(|m| matches!(m, Message::Error(_))),
        "{got:?}"
    );
}

#[test]
fn garbage_and_oversized_frames_close_the_connection_and_the_agent_redials() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--lifecycle", "warm"]);

    let hostile: Vec<Vec<u8>> = vec![
        b"this is not json\n".to_vec(),
        b"{\"type\":\"launchMissiles\"}\n".to_vec(),
        b"{\"type\":\"challenge\"}\n".to_vec(),
        vec![b'a'; 2 << 20],
    ];
    for bytes in hostile {
        let mut c = orch.accept(&agent);
        assert!(matches!(c.recv(), Message::Hello(_)));
        let mut w = c.stream.try_clone().unwrap();
        // The agent may hang up halfway through a big frame: write errors are expected.
        let writer = thread::spawn(move || {
            let _ = w.write_all(&bytes);
        });
        let got = c.drain_until_closed();
        assert!(
            got.iter().all(|m| matches!(m, Message::Error(_))),
            "{got:?}"
        );
        writer.join().unwrap();
    }
    // Hostile after authentication too, then a clean session still works.
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, Some(60_000)).1);
    c.stream.write_all(b"\x00\xff{{{\n").unwrap();
    c.drain_until_closed();

    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, Some(60_000)).1);
    let r = c.invoke("ok", "regex_search", json!({"text": "a1b2"}), 5000);
    assert_eq!(
        r.outcome,
        Outcome::Output(json!({"matched": true, "match": "1b2", "start": 1, "end": 4}))
    );
    c.send(&Message::Poweroff);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));

    let log = agent.log();
    for reason in [
        "not valid JSON",
        "unknown message type",
        "invalid challenge",
        "exceeds the maximum",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log:\n{log}");
    }
}

#[test]
fn a_function_past_its_deadline_is_reported_as_a_timeout_then_the_failsafe_fires() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--no-poweroff"]);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, None).1);
    let started = Instant::now();
    let r = c.invoke("slow", "float_operations", json!({"n": 1u64 << 40}), 200);
    let waited = started.elapsed();
    match &r.outcome {
        Outcome::Error(e) => assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(r.exec_us >= 200_000, "exec_us {}", r.exec_us);
    assert!(waited < Duration::from_secs(3), "result took {waited:?}");
    // The runaway function cannot be stopped, so the agent goes down even with --no-poweroff.
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "log:\n{}", agent.log());
    assert!(agent.log().contains("failsafe"));
}

#[test]
fn warm_worker_heartbeats_while_idle_and_serves_repeatedly() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--lifecycle", "warm"]);
    let mut c = orch.accept(&agent);
    let (hello, ok) = c.handshake(TOKEN, Some(100));
    assert!(ok);
    assert_eq!(hello.capabilities.lifecycle, Lifecycle::Warm);

    let mut beats = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1000) {
        match c.recv() {
            Message::Heartbeat(h) => {
                c.send(&Message::Heartbeat(h.clone()));
                beats.push((start.elapsed(), h.seq));
            }
            other => panic!("idle warm worker sent {other:?}"),
        }
    }
    assert!(
        (4..=16).contains(&beats.len()),
        "{} heartbeats in 1 s at 100 ms",
        beats.len()
    );
    assert!(
        beats.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "seq must count up: {beats:?}"
    );

    // The function thread is kept from one call to the next (the same thread id each time).
    let mut first_fn_thread = None;
    for i in 0..3 {
        let r = c.invoke(
            &format!("w{i}"),
            "cascading_md5",
            json!({"rounds": 10 + i}),
            5000,
        );
        assert!(matches!(r.outcome, Outcome::Output(_)));
        let threads = fn_threads(agent.child.id());
        assert_eq!(
            threads.len(),
            1,
            "function threads after call {i}: {threads:?}"
        );
        let first = first_fn_thread.get_or_insert_with(|| threads.clone());
        assert_eq!(&threads, first, "call {i} ran on a new function thread");
        c.send(&Message::Idle);
    }
    // Still heartbeating after the work.
    assert!(matches!(c.recv(), Message::Heartbeat(_)));
    // A dropped connection makes a warm worker dial again rather than stop.
    drop(c);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, Some(100)).1);
    c.send(&Message::Reboot);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

/// The ids of the threads named `fn` (the agent's function thread) of process `pid`.
fn fn_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "fn"))
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn oneshot_worker_does_not_heartbeat_and_stops_after_its_invocation() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN]);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, Some(50)).1);
    c.stream
        .set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    match c.reader.read_message() {
        Err(e) if e.is_timeout() => {}
        other => panic!("a OneShot worker must stay quiet while waiting, got {other:?}"),
    }
    c.stream.set_read_timeout(Some(WAIT)).unwrap();
    let r = c.invoke("only", "html_generation", json!({"n": 3}), 5000);
    assert!(matches!(r.outcome, Outcome::Output(_)));
    drop(c); // the orchestrator hangs up without a follow-up
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(!orch.dialled_within(Duration::from_millis(300)));
    assert!(agent.log().contains("OneShot worker is done"));
}

#[test]
fn no_poweroff_makes_the_agent_dial_again() {
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--no-poweroff"]);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, None).1);
    c.send(&Message::Poweroff);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, None).1);
    agent.assert_running();
}

#[test]
fn silence_watchdog_fires_when_the_orchestrator_is_unreachable_or_mute() {
    // Unreachable: nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Agent::start(port, &["--token", TOKEN, "--watchdog", "1"]);
    let start = Instant::now();
    assert_eq!(agent.wait_exit(Duration::from_secs(6)).code(), Some(2));
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(
        agent
            .log()
            .contains("failsafe: no word from the orchestrator"),
        "{}",
        agent.log()
    );

    // Mute: connected and authenticated, then nothing.
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--watchdog", "1"]);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, None).1);
    let start = Instant::now();
    assert_eq!(agent.wait_exit(Duration::from_secs(6)).code(), Some(2));
    assert!(start.elapsed() >= Duration::from_millis(900));

    // Busy is not silence: a function running within its deadline keeps the agent alive.
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--watchdog", "1"]);
    let mut c = orch.accept(&agent);
    assert!(c.handshake(TOKEN, None).1);
    let r = c.invoke(
        "long",
        "cascading_sha256",
        json!({"rounds": 3_000_000}),
        60_000,
    );
    assert!(matches!(r.outcome, Outcome::Output(_)), "{r:?}");
    assert!(
        r.exec_us > 1_000_000,
        "needs a function longer than the watchdog: {}",
        r.exec_us
    );
    c.send(&Message::Heartbeat(Heartbeat { seq: 1 }));
    c.send(&Message::Poweroff);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn bad_command_lines_are_usage_errors() {
    for args in [
        vec!["--name", "x"],
        vec!["--orchestrator", "127.0.0.1:1"],
        vec![
            "--orchestrator",
            "127.0.0.1:1",
            "--name",
            "x",
            "--lifecycle",
            "tepid",
        ],
        vec![
            "--orchestrator",
            "127.0.0.1:1",
            "--name",
            "x",
            "--watchdog",
            "inf",
        ],
        vec!["--bogus"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_microfaas-agent"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    }
}

/// A wasm invocation of `module` (bytes) with the digest `sha256` claims.
fn wasm_invoke(id: &str, module: &[u8], sha256: &str, input: Value, memory: u64) -> Message {
    user_invoke("wasm", id, module, sha256, input, memory)
}

/// An invocation of user code `module` (bytes) in `runtime`, with the digest `sha256` claims.
fn user_invoke(
    runtime: &str,
    id: &str,
    module: &[u8],
    sha256: &str,
    input: Value,
    memory: u64,
) -> Message {
    use base64::Engine as _;
    Message::Invoke(Invoke {
        id: id.into(),
        function: "wordfreq".into(),
        runtime: runtime.into(),
        handler: String::new(),
        input,
        deadline_ms: 2_000,
        services: Default::default(),
        code: Some(UserCode {
            module: base64::engine::general_purpose::STANDARD.encode(module),
            sha256: sha256.into(),
            memory_bytes: Some(memory),
            fuel: None,
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            args: Vec::new(),
        }),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    functions::hex(&sha2::Sha256::digest(bytes))
}

fn result_of(c: &mut Conn) -> InvokeResult {
    loop {
        match c.recv() {
            Message::Result(r) => return r,
            Message::Heartbeat(_) => continue,
            other => panic!("expected result, got {other:?}"),
        }
    }
}

/// Sends `m` and returns the failure it must come back as.
fn failed(c: &mut Conn, m: Message) -> (ErrorKind, String) {
    c.send(&m);
    error_of(&result_of(c))
}

fn error_of(r: &InvokeResult) -> (ErrorKind, String) {
    match &r.outcome {
        Outcome::Error(e) => (e.kind, e.message.clone()),
        Outcome::Output(v) => panic!("expected a failure, got output {v}"),
    }
}

/// The example user function on a Warm agent over loopback: its output, then a trap, a memory
/// hog, an endless loop and a tampered module, each a failed invocation with its reason, and
/// the same session still serving the function afterwards.
#[test]
fn warm_agent_runs_a_wasm_user_function_and_survives_its_failures() {
    let module = std::fs::read(wasm_fn::wordfreq()).expect("example module");
    let sha = sha256_hex(&module);
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--lifecycle", "warm"]);
    let mut c = orch.accept(&agent);
    let (hello, ok) = c.handshake(TOKEN, Some(60_000));
    assert!(ok);
    assert!(hello.capabilities.runtimes.iter().any(|r| r == "wasm"));

    let text = json!({"text": "the cat and the hat and the bat", "top": 2});
    let expected = json!({
        "function": "wordfreq", "greeting": "hi", "words": 8, "chars": 31,
        "top": [["the", 3], ["and", 2]],
    });
    let mib = 1u64 << 20;
    c.send(&wasm_invoke("ok-1", &module, &sha, text.clone(), 64 * mib));
    let r = result_of(&mut c);
    assert_eq!(
        r.outcome,
        Outcome::Output(expected.clone()),
        "log:\n{}",
        agent.log()
    );
    assert!(r.exec_us > 0);

    // More memory than Function.spec.memory.
    let (kind, msg) = failed(
        &mut c,
        wasm_invoke("mem", &module, &sha, json!({"allocMiB": 48}), 16 * mib),
    );
    assert_eq!(kind, ErrorKind::Error);
    assert!(msg.contains("memory limit of 16777216 bytes"), "{msg}");

    // An endless loop ends at the deadline as a timeout of its own, not an agent overrun.
    let (kind, msg) = failed(
        &mut c,
        wasm_invoke("spin", &module, &sha, json!({"spin": true}), 64 * mib),
    );
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");

    // A module that traps.
    let trap = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .expect("wat");
    let (kind, msg) = failed(
        &mut c,
        wasm_invoke("trap", &trap, &sha256_hex(&trap), json!({}), 64 * mib),
    );
    assert_eq!(kind, ErrorKind::Error);
    assert!(
        msg.contains("trapped") && msg.contains("unreachable"),
        "{msg}"
    );

    // The digest does not match the bytes: refused before anything runs.
    let mut tampered = module.clone();
    tampered.push(0);
    let (kind, msg) = failed(
        &mut c,
        wasm_invoke("bad-sha", &tampered, &sha, text.clone(), 64 * mib),
    );
    assert_eq!(kind, ErrorKind::BadInput);
    assert!(msg.contains("sha256 mismatch"), "{msg}");

    // Bad input to the function itself: a non-zero exit with its stderr.
    let (_, msg) = failed(
        &mut c,
        wasm_invoke("no-text", &module, &sha, json!({"top": 1}), 64 * mib),
    );
    assert!(
        msg.contains("exited with status 2") && msg.contains("\"text\""),
        "{msg}"
    );

    // Still the same session, still serving.
    c.send(&wasm_invoke("ok-2", &module, &sha, text, 64 * mib));
    assert_eq!(result_of(&mut c).outcome, Outcome::Output(expected));
    c.send(&Message::Poweroff);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

/// The same function as a static executable (`exec`): its output, a memory hog killed under
/// the address-space cap, an endless loop killed at the deadline, an executable for another
/// machine refused, and the session serving afterwards.
#[test]
fn warm_agent_runs_a_static_executable_and_survives_its_failures() {
    let exe = std::fs::read(wasm_fn::wordfreq_static()).expect("example executable");
    let sha = sha256_hex(&exe);
    let orch = Orchestrator::new();
    let mut agent = Agent::start(orch.port(), &["--token", TOKEN, "--lifecycle", "warm"]);
    let mut c = orch.accept(&agent);
    let (hello, ok) = c.handshake(TOKEN, Some(60_000));
    assert!(ok);
    assert!(hello.capabilities.runtimes.iter().any(|r| r == "exec"));

    let mib = 1u64 << 20;
    let text = json!({"text": "the cat and the hat and the bat", "top": 2});
    let expected = json!({
        "function": "wordfreq", "greeting": "hi", "words": 8, "chars": 31,
        "top": [["the", 3], ["and", 2]],
    });
    c.send(&user_invoke(
        "exec",
        "ok-1",
        &exe,
        &sha,
        text.clone(),
        64 * mib,
    ));
    let r = result_of(&mut c);
    assert_eq!(
        r.outcome,
        Outcome::Output(expected.clone()),
        "log:\n{}",
        agent.log()
    );

    let (kind, msg) = failed(
        &mut c,
        user_invoke(
            "exec",
            "mem",
            &exe,
            &sha,
            json!({"allocMiB": 256}),
            64 * mib,
        ),
    );
    assert_eq!(kind, ErrorKind::Error);
    assert!(msg.contains("memory limit 67108864 bytes"), "{msg}");

    let (kind, msg) = failed(
        &mut c,
        user_invoke("exec", "spin", &exe, &sha, json!({"spin": true}), 64 * mib),
    );
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");

    let mut arm = exe.clone();
    arm[18..20].copy_from_slice(&40u16.to_le_bytes());
    let (kind, msg) = failed(
        &mut c,
        user_invoke(
            "exec",
            "arm",
            &arm,
            &sha256_hex(&arm),
            text.clone(),
            64 * mib,
        ),
    );
    assert_eq!(kind, ErrorKind::BadInput);
    assert!(msg.contains("ELF machine 40"), "{msg}");

    c.send(&user_invoke("exec", "ok-2", &exe, &sha, text, 64 * mib));
    assert_eq!(result_of(&mut c).outcome, Outcome::Output(expected));
    c.send(&Message::Poweroff);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
}
