//! Power meters run by the sampler against real peers: a WattsUp Pro played back on a
//! pseudo-terminal (the recorded session in tests/data/wattsup-session.txt, with a corrupted
//! line and an unplug/replug), and command meters with a real script, one of whose readings
//! hangs.

use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A store in a temp dir holding one PowerMeter with `spec`.
fn store_with_meter(dir: &Path, name: &str, spec: serde_json::Value) -> Store {
    let mut store = Store::open(dir).expect("open store");
    let obj = DesiredObject {
        kind: Kind::PowerMeter,
        name: name.into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec,
        owner: None,
        source: None,
    };
    store.apply(&[obj], None, false, false).expect("apply");
    store
}

/// Polls the store until `meter` has `n` samples (or panics after `limit`).
fn wait_samples(state: &Path, meter: &str, n: usize, limit: Duration) -> Vec<f64> {
    let reader = Store::open(state).expect("open reader");
    let start = Instant::now();
    loop {
        let got: Vec<f64> = reader
            .samples(meter, 0, i64::MAX)
            .expect("samples")
            .iter()
            .map(|s| s.watts)
            .collect();
        if got.len() >= n || start.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(state: &Path, meter: &str) -> Vec<(String, String, i64)> {
    Store::open(state)
        .expect("open")
        .events(Kind::PowerMeter, meter, 100)
        .expect("events")
        .into_iter()
        .map(|e| (e.event_type, e.reason, e.count))
        .collect()
}

/// Runs the sampler on `store` in a runtime of its own thread until the returned guard drops.
struct Sampler {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(state: &Path) -> Sampler {
        let state = state.to_path_buf();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let task = microfaas::energy::sampler::spawn(&state, rx).expect("sampler");
                let _ = task.await;
            });
        });
        Sampler {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A new pseudo-terminal: the master side, and the path of the slave (which we do not hold
/// open: the meter driver opens it by path, as it would a USB serial port).
fn pty() -> (std::fs::File, PathBuf) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the provided ints; null name/termios/winsize
    // are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just returned by openpty and are owned by nobody else.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    };
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&slave)
    ))
    .expect("slave path");
    drop(slave);
    (master, path)
}

/// Reads from the master until the driver's logging command arrives. With no slave open the
/// master reports EIO: the driver has not opened the port yet, so try again.
fn await_logging_command(master: &mut std::fs::File) -> String {
    let fd = std::os::fd::AsRawFd::as_raw_fd(master);
    // SAFETY: plain fcntl flag changes on a descriptor we own; non-blocking so that a driver
    // that never opens the port fails this test instead of hanging it.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let got = read_command(master);
    // SAFETY: as above, back to blocking writes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    got
}

fn read_command(master: &mut std::fs::File) -> String {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        let mut buf = [0u8; 64];
        match master.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b';') {
                    return String::from_utf8_lossy(&got).into_owned();
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no logging command within 30 s (got {got:?})");
}

/// Points the stable device link at `target` (as udev's /dev/serial/by-id links do on replug).
fn relink(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename link");
}

/// A pty behind `link` and the meter `strip` on it (WattsUp, 1 s), sampled: the master side
/// and the running sampler.
fn wattsup_meter(state: &Path, link: &Path) -> (std::fs::File, Sampler) {
    let (master, slave) = pty();
    relink(link, &slave);
    drop(store_with_meter(
        state,
        "strip",
        serde_json::json!({"wattsup": {"device": link.display().to_string(), "interval": "1s"}, "covers": {"matchLabels": {}}}),
    ));
    (master, Sampler::start(state))
}

#[test]
fn wattsup_session_over_a_pty_with_corruption_and_a_reconnect() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let link = dir.path().join("wattsup");
    let (mut master, sampler) = wattsup_meter(&state, &link);

    let session = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wattsup-session.txt"
    ))
    .expect("session");
    let cmd = await_logging_command(&mut master);
    assert_eq!(cmd, "#L,W,3,E,,1;", "external logging every second");
    let mut reconnects = 0;
    for line in session.lines().filter(|l| !l.starts_with("--")) {
        if line == "@disconnect" {
            drop(master);
            let (m, slave) = pty();
            master = m;
            relink(&link, &slave);
            let cmd = await_logging_command(&mut master);
            assert_eq!(
                cmd, "#L,W,3,E,,1;",
                "logging is restarted after the reconnect"
            );
            reconnects += 1;
            continue;
        }
        // Sent in two writes, as a serial line delivers bytes: the driver must reassemble.
        let bytes = format!("{line}\r\n").into_bytes();
        let (a, b) = bytes.split_at(bytes.len() / 2);
        master.write_all(a).expect("write");
        master.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(15));
        master.write_all(b).expect("write");
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(reconnects, 1);

    let watts = wait_samples(&state, "strip", 8, Duration::from_secs(30));
    drop(sampler);
    assert_eq!(
        watts,
        vec![102.5, 103.0, 101.8, 104.4, 105.2, 99.8, 100.1, 100.3],
        "every intact record once, in order; the cut and the corrupted ones skipped"
    );
    let reader = Store::open(&state).expect("open");
    let first = &reader.samples("strip", 0, i64::MAX).expect("samples")[0];
    assert_eq!(
        (first.volts, first.amps, first.watt_hours),
        (Some(120.3), Some(0.172), Some(0.3))
    );
    let ev = events(&state, "strip");
    let count = |reason: &str| {
        ev.iter()
            .filter(|e| e.1 == reason)
            .map(|e| e.2)
            .sum::<i64>()
    };
    assert_eq!(count("Connected"), 2, "{ev:?}");
    assert!(count("Disconnected") >= 1, "{ev:?}");
    assert!(count("CorruptRecord") >= 1, "{ev:?}");
    assert!(
        ev.iter()
            .filter(|e| e.1 == "Disconnected" || e.1 == "CorruptRecord")
            .all(|e| e.0 == "Warning")
    );
}

/// Live processes (not zombies, whose cmdline is empty) whose command line mentions `marker`.
fn alive_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(marker) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn command_meter_reads_each_interval_and_skips_a_hung_reading() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let counter = dir.path().join("count");
    let script = dir.path().join("plug.sh");
    let marker = format!("hung-reading-{}", std::process::id());
    // Reading n prints `Power: n0.5 W`; the second one hangs far past the timeout.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\n\
             if [ $n -eq 2 ]; then sh -c 'sleep 60; : {marker}'; fi\necho \"Power: ${{n}}0.5 W\"\n",
            c = counter.display()
        ),
    )
    .expect("script");
    let _store = store_with_meter(
        &state,
        "plug",
        serde_json::json!({"command": {"command": ["sh", script.display().to_string()], "interval": "200ms", "timeout": "1s"}, "covers": {"matchLabels": {}}}),
    );
    let sampler = Sampler::start(&state);
    let watts = wait_samples(&state, "plug", 3, Duration::from_secs(30));
    drop(sampler);
    assert_eq!(
        &watts[..3],
        &[10.5, 30.5, 40.5],
        "reading 2 timed out and was skipped, the others arrived in order"
    );
    let ev = events(&state, "plug");
    assert!(
        ev.iter().any(|e| e.0 == "Warning" && e.1 == "ReadTimeout"),
        "{ev:?}"
    );
    assert!(
        alive_with(&marker).is_empty(),
        "the hung command's process group was killed"
    );
    let reader = Store::open(&state).expect("open");
    let st = reader
        .get(Kind::PowerMeter, "plug")
        .expect("get")
        .expect("meter");
    assert_eq!(st.status["phase"], "Sampling", "{}", st.status);
}

/// A meter's status overwritten by another writer (the engine's first reconcile of a new
/// meter writes phase Accepted, and could land just after the sampler's first Sampling) is
/// put back at the next sample, not left wrong for good.
#[test]
fn a_sampling_meter_puts_back_a_status_written_over_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let script = dir.path().join("plug.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'Power: 5 W'\n").expect("script");
    let _store = store_with_meter(
        &state,
        "plug",
        serde_json::json!({"command": {"command": ["sh", script.display().to_string()], "interval": "200ms", "timeout": "1s"}, "covers": {"matchLabels": {}}}),
    );
    let sampler = Sampler::start(&state);
    let phase = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = Store::open(&state)
                .expect("open")
                .get(Kind::PowerMeter, "plug")
                .expect("get")
                .expect("meter")
                .status;
            if st["phase"] == want {
                return st;
            }
            assert!(Instant::now() < deadline, "phase never {want}: {st}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    phase("Sampling");
    Store::open(&state)
        .expect("open")
        .set_status(
            Kind::PowerMeter,
            "plug",
            &serde_json::json!({"phase": "Accepted", "observedGeneration": 1}),
        )
        .expect("overwrite");
    let st = phase("Sampling");
    drop(sampler);
    assert_eq!(st["observedGeneration"], 1, "{st}");
}

#[test]
fn command_meter_that_prints_no_number_warns_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let _store = store_with_meter(
        &state,
        "bad",
        serde_json::json!({"command": {"command": ["echo", "offline"], "interval": "100ms", "timeout": "1s"}, "covers": {"matchLabels": {}}}),
    );
    let sampler = Sampler::start(&state);
    let start = Instant::now();
    while !events(&state, "bad").iter().any(|e| e.1 == "ReadFailed") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no ReadFailed event"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sampler);
    let reader = Store::open(&state).expect("open");
    assert!(
        reader
            .samples("bad", 0, i64::MAX)
            .expect("samples")
            .is_empty()
    );
    let st = reader
        .get(Kind::PowerMeter, "bad")
        .expect("get")
        .expect("meter");
    assert_eq!(st.status["phase"], "Failing", "{}", st.status);
}

/// A WattsUp that stops sending (the port stays open, nothing arrives): after a few missed
/// records the meter is `Disconnected` with a `Disconnected` Warning saying no reading came,
/// the port is reopened and logging restarted, and samples resume.
#[test]
fn a_wattsup_that_falls_silent_is_named_disconnected_and_reopened() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let link = dir.path().join("wattsup");
    let (mut master, sampler) = wattsup_meter(&state, &link);
    let record = |watts: u32| {
        format!("#d,-,18,{watts},1203,172,3,0,0,0,1031,1205,175,1019,1201,170,49,0,0,600,2070;\r\n")
    };
    assert_eq!(await_logging_command(&mut master), "#L,W,3,E,,1;");
    master.write_all(record(1025).as_bytes()).expect("write");
    assert_eq!(
        wait_samples(&state, "strip", 1, Duration::from_secs(30)),
        vec![102.5]
    );
    // Silence, with the port still open: 3 intervals + 2 s without a record.
    let reader = Store::open(&state).expect("open");
    let start = Instant::now();
    let status = loop {
        let o = reader
            .get(Kind::PowerMeter, "strip")
            .expect("get")
            .expect("meter");
        if o.status["phase"] == "Disconnected" {
            break o.status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "silence not noticed: {}",
            o.status
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ev = reader
        .events(Kind::PowerMeter, "strip", 100)
        .expect("events");
    assert!(
        ev.iter().any(|e| e.reason == "Disconnected"
            && e.event_type == "Warning"
            && e.message.contains("no reading within 5s")),
        "{ev:?}"
    );
    assert_eq!(status["conditions"][0]["status"], "False", "{status}");
    // Reopened and told to log again; records are sampled again.
    assert_eq!(read_command(&mut master), "#L,W,3,E,,1;");
    master.write_all(record(1030).as_bytes()).expect("write");
    assert_eq!(
        wait_samples(&state, "strip", 2, Duration::from_secs(30)),
        vec![102.5, 103.0]
    );
    drop(sampler);
}
