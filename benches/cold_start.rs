//! `cargo bench --bench cold_start [-- ROUNDS]`: power-on → agent hello through the engine's
//! own QEMU driver, for the examples' VM (small kernel, PVH `vmlinux`, `microvm`, TCG), cold
//! (QEMU started at power-on) against standby (a QEMU prepared paused while the worker was off,
//! resumed at power-on) against snapshot (`vm.start: snapshot`: a QEMU restored from the
//! worker's snapshot while it was off, resumed and sent the go line at power-on), round by
//! round so all see the same machine load (the standbys are made ready before each round's
//! cold boot, not during it). Each boot's hello guest uptime splits the time into "before the
//! guest clock" (QEMU start-up or resume, firmware, early kernel) and "guest" (kernel boot,
//! /init, dial); a restored guest's clock does not start at power-on, so its split is instead
//! "launch" (QMP `cont` + go line) and "to hello" (the agent's reseed, dial and handshake). Needs the artefacts of
//! `hack/test-artifacts.sh` (MICROFAAS_TEST_KERNEL, MICROFAAS_TEST_AGENT) and QEMU.

use microfaas::drivers::qemu::snapshot::SNAPSHOT_FILE;
use microfaas::drivers::qemu::{Accel, VmConfig, VmNet, new_uuid};
use microfaas::drivers::vms::QemuVms;
use microfaas::engine::vm::{Launched, StopHow, VmDriver};
use microfaas::image::{BuildOptions, KernelSource, build};
use microfaas::orchestrator::{AgentEvent, Endpoint};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const TOKEN: &str = "coldstarttoken";
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GUEST_PORT: u16 = 7100;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn artifact(var: &str) -> Result<PathBuf, String> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{var} is not set to a file: eval \"$(hack/test-artifacts.sh)\""))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// One power-on.
struct Sample {
    /// Seconds to hello.
    total: f64,
    /// Guest uptime at hello, seconds.
    guest: f64,
    /// Seconds `launch` took.
    launch: f64,
    /// The parked agent's start id, for snapshot workers.
    start: Option<String>,
}

async fn power_on(
    driver: &QemuVms,
    cfg: &VmConfig,
    agents: &mut broadcast::Receiver<AgentEvent>,
) -> Result<Sample, String> {
    let t = Instant::now();
    let how = driver.launch(cfg).await?;
    let launch = t.elapsed().as_secs_f64();
    if cfg.snapshot && round_trip_expects_restore(cfg) && how != Launched::FromSnapshot {
        return Err(format!("{}: expected a restore, got {how:?}", cfg.name));
    }
    let hello = tokio::time::timeout(BOOT_TIMEOUT, async {
        loop {
            match agents.recv().await {
                Ok(AgentEvent::Connected {
                    worker,
                    boot_ms,
                    start,
                    ..
                }) if worker == cfg.name => return Ok((boot_ms, start)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(format!("endpoint: {e}")),
            }
        }
    })
    .await
    .map_err(|_| format!("no hello within {BOOT_TIMEOUT:?}"));
    let total = t.elapsed().as_secs_f64();
    // Stopped whether it said hello or not: a failed run leaves no QEMU behind.
    driver
        .stop(&cfg.name, StopHow::Kill, Duration::from_secs(10))
        .await?;
    let (boot_ms, start) = hello??;
    Ok(Sample {
        total,
        guest: boot_ms as f64 / 1000.0,
        launch,
        start: start.map(|s| s.id),
    })
}

/// A snapshot worker whose snapshot exists is restored, never booted.
fn round_trip_expects_restore(cfg: &VmConfig) -> bool {
    cfg.run_dir.join(SNAPSHOT_FILE).is_file()
}

/// Waits until `driver` has a standby ready for `cfg`.
async fn standby_ready(driver: &QemuVms, cfg: &VmConfig) -> Result<(), String> {
    driver.prepare(cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while driver.standby_pid(&cfg.name).is_none() {
        if Instant::now() > deadline {
            return Err(format!("{}: no standby within 60 s", cfg.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn run(rounds: usize) -> Result<(), String> {
    let work = tempfile::Builder::new()
        .prefix("mfcs")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let mut opts = BuildOptions::new(
        KernelSource::Path(artifact("MICROFAAS_TEST_KERNEL")?),
        artifact("MICROFAAS_TEST_AGENT")?,
        work.path().join("img"),
    );
    opts.pvh = true;
    let image = build(&opts).map_err(|e| format!("image build: {e}"))?;
    let vmlinux = image.vmlinux.ok_or("the image has no PVH vmlinux")?;
    let endpoint = Endpoint::bind("127.0.0.1:0", TOKEN.as_bytes().to_vec())
        .await
        .map_err(|e| format!("endpoint: {e}"))?;
    let mut agents = endpoint.subscribe();

    let config = |name: &str| {
        let mut c = VmConfig::new(name, &new_uuid(), &vmlinux);
        c.initrd = Some(image.initramfs.clone());
        c.accel = Accel::Tcg;
        c.memory_mib = 128;
        c.run_dir = work.path().join(name);
        c.cmdline = format!(
            "{} microfaas.worker={name} microfaas.orchestrator={GUEST_IP}:{GUEST_PORT} microfaas.token={TOKEN}",
            image.cmdline
        );
        c.network = VmNet::User {
            guestfwd: Some((GUEST_IP, GUEST_PORT, endpoint.addr)),
        };
        c
    };
    let cold_cfg = config("cs-cold");
    let warm_cfg = config("cs-standby");
    let mut snap_cfg = config("cs-snap");
    snap_cfg.snapshot = true;
    // Restored at power-on by a driver without standbys (one-off commands): QEMU's start-up
    // and loading the file are on the clock.
    let mut snap_direct_cfg = config("cs-snap-direct");
    snap_direct_cfg.snapshot = true;
    let cold_driver = QemuVms::new();
    let standby_driver = QemuVms::new().with_standby();

    println!(
        "{rounds} power-ons each, alternating; qemu-system-x86_64 -accel tcg, microvm, PVH vmlinux, \
         128 MiB; load average at start {}",
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut snap = Vec::new();
    let mut direct = Vec::new();
    let result = async {
        // The snapshot worker's first power-on boots and takes its snapshot.
        let t = Instant::now();
        power_on(&standby_driver, &snap_cfg, &mut agents).await?;
        let taken = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(snap_cfg.run_dir.join(SNAPSHOT_FILE))
            .map_err(|e| format!("no snapshot after the first power-on: {e}"))?
            .len();
        println!(
            "first power-on of the snapshot worker (boot + snapshot): {taken:.3} s to hello; snapshot {:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
        power_on(&cold_driver, &snap_direct_cfg, &mut agents).await?;
        // The snapshot is taken after the agent parks, before it says hello.
        if !round_trip_expects_restore(&snap_direct_cfg) {
            return Err("no snapshot after the direct worker's first power-on".into());
        }
        for round in 0..rounds {
            // The standbys get ready first, so their start-up does not share the CPU with the
            // boot measured next.
            standby_ready(&standby_driver, &warm_cfg).await?;
            standby_ready(&standby_driver, &snap_cfg).await?;
            cold.push(power_on(&cold_driver, &cold_cfg, &mut agents).await?);
            warm.push(power_on(&standby_driver, &warm_cfg, &mut agents).await?);
            snap.push(power_on(&standby_driver, &snap_cfg, &mut agents).await?);
            direct.push(power_on(&cold_driver, &snap_direct_cfg, &mut agents).await?);
            eprintln!(
                "round {}: cold {:.3} s, standby {:.3} s, snapshot {:.3} s (start {}), snapshot without standby {:.3} s",
                round + 1,
                cold[round].total,
                warm[round].total,
                snap[round].total,
                snap[round].start.as_deref().unwrap_or("-"),
                direct[round].total,
            );
        }
        Ok::<_, String>(())
    }
    .await;
    standby_driver.close().await;
    result?;
    let ids: std::collections::HashSet<_> = snap.iter().filter_map(|s| s.start.clone()).collect();
    if ids.len() != snap.len() {
        return Err(format!(
            "restored agents must draw distinct start ids, got {ids:?} for {} restores",
            snap.len()
        ));
    }

    let summary = |name: &str, samples: &[Sample]| {
        let total = sorted(samples, |s| s.total);
        let guest = sorted(samples, |s| s.guest);
        let before = sorted(samples, |s| s.total - s.guest);
        println!(
            "{name:<9} power-on→hello p50 {:.3} s p95 {:.3} s | before guest clock p50 {:.3} s | guest p50 {:.3} s",
            pct(&total, 50.0),
            pct(&total, 95.0),
            pct(&before, 50.0),
            pct(&guest, 50.0),
        );
        pct(&total, 50.0)
    };
    let c = summary("cold", &cold);
    let w = summary("standby", &warm);
    let restored = |name: &str, samples: &[Sample]| {
        let total = sorted(samples, |s| s.total);
        let launch = sorted(samples, |s| s.launch);
        let rest = sorted(samples, |s| s.total - s.launch);
        println!(
            "{name:<9} power-on→hello p50 {:.3} s p95 {:.3} s | launch p50 {:.3} s | launch → hello p50 {:.3} s",
            pct(&total, 50.0),
            pct(&total, 95.0),
            pct(&launch, 50.0),
            pct(&rest, 50.0),
        );
        pct(&total, 50.0)
    };
    // With a standby the launch is QMP `cont` + the go line; without, QEMU's start-up and
    // loading the file come first.
    let r = restored("snapshot", &snap);
    let d = restored("snapshot without standby", &direct);
    println!(
        "standby / cold p50: {:.2}; snapshot / cold p50: {:.2}; without standby / cold p50: {:.2}; {} distinct start ids in {} restores",
        w / c,
        r / c,
        d / c,
        ids.len(),
        snap.len()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cold_start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(rounds)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cold_start: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
