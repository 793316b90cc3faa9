//! `cargo bench --bench cold_start [-- ROUNDS]`: power-on → agent hello through the engine's
//! own QEMU driver, for the examples' VM (small kernel, PVH `vmlinux`, `microvm`, TCG), cold
//! (QEMU started at power-on) against standby (a QEMU prepared paused while the worker was off,
//! resumed at power-on), alternating round by round so both see the same machine load (the
//! standby is made ready before each round's cold boot, not during it). Each
//! hello's guest uptime splits the time into "before the guest clock" (QEMU start-up or resume,
//! firmware, early kernel) and "guest" (kernel boot, /init, dial). Needs the artefacts of
//! `hack/test-artifacts.sh` (MICROFAAS_TEST_KERNEL, MICROFAAS_TEST_AGENT) and QEMU.

use microfaas::drivers::qemu::{Accel, VmConfig, VmNet, new_uuid};
use microfaas::drivers::vms::QemuVms;
use microfaas::engine::vm::{StopHow, VmDriver};
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

/// One power-on: (seconds to hello, guest uptime at hello in seconds).
async fn power_on(
    driver: &QemuVms,
    cfg: &VmConfig,
    agents: &mut broadcast::Receiver<AgentEvent>,
) -> Result<(f64, f64), String> {
    let t = Instant::now();
    driver.launch(cfg).await?;
    let boot_ms = tokio::time::timeout(BOOT_TIMEOUT, async {
        loop {
            match agents.recv().await {
                Ok(AgentEvent::Connected {
                    worker, boot_ms, ..
                }) if worker == cfg.name => return Ok(boot_ms),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(format!("endpoint: {e}")),
            }
        }
    })
    .await
    .map_err(|_| format!("no hello within {BOOT_TIMEOUT:?}"))??;
    let total = t.elapsed().as_secs_f64();
    driver
        .stop(&cfg.name, StopHow::Kill, Duration::from_secs(10))
        .await?;
    Ok((total, boot_ms as f64 / 1000.0))
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
    let result = async {
        for round in 0..rounds {
            // The standby gets ready first, so its start-up does not share the CPU with the
            // cold boot measured next.
            standby_driver.prepare(&warm_cfg);
            let deadline = Instant::now() + Duration::from_secs(60);
            while standby_driver.standby_pid(&warm_cfg.name).is_none() {
                if Instant::now() > deadline {
                    return Err(format!("round {round}: no standby within 60 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cold.push(power_on(&cold_driver, &cold_cfg, &mut agents).await?);
            warm.push(power_on(&standby_driver, &warm_cfg, &mut agents).await?);
            eprintln!(
                "round {}: cold {:.3} s, standby {:.3} s",
                round + 1,
                cold[round].0,
                warm[round].0
            );
        }
        Ok::<_, String>(())
    }
    .await;
    standby_driver.close().await;
    result?;

    let summary = |name: &str, samples: &[(f64, f64)]| {
        let mut total: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let mut guest: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let mut before: Vec<f64> = samples.iter().map(|s| s.0 - s.1).collect();
        for v in [&mut total, &mut guest, &mut before] {
            v.sort_by(f64::total_cmp);
        }
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
    println!("standby / cold p50: {:.2}", w / c);
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
