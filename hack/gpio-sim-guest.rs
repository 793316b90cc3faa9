//! PID 1 of the GPIO driver's real-kernel test (tests/gpio_sim.rs): runs in a QEMU guest whose
//! kernel has GPIO_SIM + CONFIGFS, creates a simulated chip through configfs, drives it with
//! `microfaas::drivers::gpio` over the real GPIO character device, samples the line level the
//! simulator sees in sysfs while each press runs, prints one `GPIO-RESULT` line per case on the
//! serial console and powers the guest off so QEMU exits by itself.
//!
//! It is also its own helper: `gpio-sim-guest request CHIP LINE` (run by PID 1 as a separate
//! process) tries to request a line the driver already holds and prints what it got, so the
//! busy check is made across processes, as it happens on a real orchestrator.
//!
//! Built static with only the `gpio` feature (no SQLite or HTTP in the guest):
//!   cargo build --release --no-default-features --features gpio \
//!     --target x86_64-unknown-linux-musl --example gpio-sim-guest

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use microfaas::drivers::gpio::{
    Button, CdevLine, DEFAULT_FORCE_OFF, DEFAULT_PULSE, GpioError, LineSpec,
};

/// The gpio-sim device we create; bank 0 is labelled like AM335x bank 1 so header pins
/// resolve to it the way they do on a BeagleBone.
const SIM: &str = "/sys/kernel/config/gpio-sim/bbb";
const BANK_LABEL: &str = "4804c000.gpio";
const NUM_LINES: u32 = 32;
/// A line given a name through configfs, for lookup by `lineName`.
const NAMED_LINE: u32 = 5;
const LINE_NAME: &str = "PWR_BUT_TEST";
/// Idle time sampled before and after each press.
const MARGIN: Duration = Duration::from_millis(200);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("request") {
        second_request(&args[2..]);
        return;
    }
    if std::process::id() == 1
        && let Err(e) = mount_all()
    {
        println!("GPIO-ERROR setup: {e}");
        power_off();
    }
    match run() {
        Ok(()) => println!("GPIO-DONE"),
        Err(e) => println!("GPIO-ERROR {e}"),
    }
    if std::process::id() == 1 {
        power_off();
    }
}

fn mount_all() -> Result<(), String> {
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("configfs", "/sys/kernel/config", "configfs"),
    ] {
        let _ = fs::create_dir_all(target);
        let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let (src_c, target_c, fstype_c) = (c(src)?, c(target)?, c(fstype)?);
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src_c.as_ptr(),
                target_c.as_ptr(),
                fstype_c.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount {fstype} on {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    // PID 1 must not exit (the kernel would panic and QEMU keep running): park.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn write(path: impl AsRef<Path>, value: &str) -> Result<(), String> {
    let path = path.as_ref();
    fs::write(path, value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

fn read(path: impl AsRef<Path>) -> Result<String, String> {
    let path = path.as_ref();
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("read {}: {e}", path.display()))
}

/// The simulated chip: its `gpiochipN` name and the simulator's sysfs directory.
struct Sim {
    chip: String,
    sysfs: PathBuf,
}

impl Sim {
    fn create() -> Result<Sim, String> {
        let bank = format!("{SIM}/bank0");
        fs::create_dir_all(&bank).map_err(|e| format!("mkdir {bank}: {e}"))?;
        write(format!("{bank}/label"), BANK_LABEL)?;
        write(format!("{bank}/num_lines"), &NUM_LINES.to_string())?;
        let line = format!("{bank}/line{NAMED_LINE}");
        fs::create_dir_all(&line).map_err(|e| format!("mkdir {line}: {e}"))?;
        write(format!("{line}/name"), LINE_NAME)?;
        write(format!("{SIM}/live"), "1")?;
        let dev = read(format!("{SIM}/dev_name"))?;
        let chip = read(format!("{bank}/chip_name"))?;
        let sysfs = PathBuf::from(format!("/sys/devices/platform/{dev}/{chip}"));
        println!(
            "GPIO-SIM chip={chip} label={BANK_LABEL} sysfs={}",
            sysfs.display()
        );
        Ok(Sim { chip, sysfs })
    }

    fn value_path(&self, line: u32) -> PathBuf {
        self.sysfs.join(format!("sim_gpio{line}/value"))
    }
}

/// Level changes seen by a sampler thread polling the simulator's `value` file.
struct Trace {
    /// (time, level) for the first sample and every change after it.
    changes: Vec<(Instant, u8)>,
    last: u8,
    samples: u64,
}

fn sample(path: PathBuf, stop: Arc<AtomicBool>) -> Result<Trace, String> {
    let file = fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut changes = Vec::new();
    let mut last = None;
    let mut samples = 0;
    let mut buf = [0u8; 8];
    while !stop.load(Ordering::Relaxed) {
        // sysfs regenerates an attribute on each read at offset 0.
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        let level = match buf.get(..n).map(|b| b.trim_ascii()) {
            Some(b"1") => 1,
            Some(b"0") => 0,
            other => return Err(format!("unexpected value {other:?}")),
        };
        samples += 1;
        if last != Some(level) {
            changes.push((Instant::now(), level));
            last = Some(level);
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(Trace {
        changes,
        last: last.unwrap_or(255),
        samples,
    })
}

/// Runs `press` while sampling `line`, with idle margins around it, and prints the result.
async fn measured<F>(
    case: &str,
    sim: &Sim,
    line: u32,
    idle: u8,
    want: Duration,
    press: F,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), GpioError>>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (path, stop) = (sim.value_path(line), Arc::clone(&stop));
        thread::spawn(move || sample(path, stop))
    };
    tokio::time::sleep(MARGIN).await;
    let outcome = press.await;
    tokio::time::sleep(MARGIN).await;
    stop.store(true, Ordering::Relaxed);
    let trace = sampler
        .join()
        .map_err(|_| "sampler panicked".to_string())??;
    outcome.map_err(|e| format!("{case}: {e}"))?;
    let before = trace.changes.first().map_or(255, |c| c.1);
    // Active runs: every change away from idle, measured to the next change back.
    let mut runs = Vec::new();
    for pair in trace.changes.windows(2) {
        if pair[0].1 != idle && pair[1].1 == idle {
            runs.push(pair[1].0 - pair[0].0);
        }
    }
    let active_ms = runs.first().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let total_ms: f64 = runs.iter().map(|d| d.as_secs_f64() * 1000.0).sum();
    println!(
        "GPIO-RESULT case={case} idle={idle} before={before} after={} runs={} active_ms={active_ms:.1} total_ms={total_ms:.1} want_ms={} samples={}",
        trace.last,
        runs.len(),
        want.as_millis(),
        trace.samples
    );
    Ok(())
}

fn run() -> Result<(), String> {
    let sim = Sim::create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    rt.block_on(cases(&sim))
}

async fn cases(sim: &Sim) -> Result<(), String> {
    let open = |spec: &LineSpec, active_low| {
        CdevLine::request(spec, active_low)
            .map(|l| Button::new(l, DEFAULT_PULSE, DEFAULT_FORCE_OFF))
            .map_err(|e| format!("request {spec}: {e}"))
    };

    // Short presses by chip + line, both polarities; busy check while the first is held.
    let by_chip = LineSpec::Chip {
        chip: sim.chip.clone(),
        line: 3,
    };
    {
        let button = open(&by_chip, true)?;
        // Physical levels: an active-low line idles high and is pulled low when pressed.
        measured("pulse-active-low", sim, 3, 1, DEFAULT_PULSE, button.pulse()).await?;
        busy_from_another_process(&sim.chip, 3)?;
    }
    {
        let button = open(&by_chip, false)?;
        measured(
            "pulse-active-high",
            sim,
            3,
            0,
            DEFAULT_PULSE,
            button.pulse(),
        )
        .await?;
        // Two pulses asked for at once run one after the other: twice as long in all, not
        // merged into one. (The release between them may be too short for the sampler.)
        let both = async {
            let (a, b) = tokio::join!(button.pulse(), button.pulse());
            a.and(b)
        };
        measured("two-pulses", sim, 3, 0, DEFAULT_PULSE * 2, both).await?;
    }

    // A line held by some other program: the error names that program.
    {
        let _foreign = gpiocdev::Request::builder()
            .on_chip(format!("/dev/{}", sim.chip))
            .with_consumer("wiring-check")
            .with_line(10)
            .as_output(gpiocdev::line::Value::Inactive)
            .request()
            .map_err(|e| format!("foreign request: {e}"))?;
        let spec = LineSpec::Chip {
            chip: sim.chip.clone(),
            line: 10,
        };
        match CdevLine::request(&spec, true) {
            Ok(_) => println!("GPIO-RESULT case=busy-foreign kind=none"),
            Err(e @ GpioError::Busy { .. }) => {
                println!("GPIO-RESULT case=busy-foreign kind=busy error=\"{e}\"");
            }
            Err(e) => println!("GPIO-RESULT case=busy-foreign kind=other error=\"{e}\""),
        }
    }

    // By line name, active-high, a non-default length.
    {
        let button = open(&LineSpec::Name(LINE_NAME.into()), false)?;
        let want = Duration::from_millis(300);
        measured(
            "pulse-by-name",
            sim,
            NAMED_LINE,
            0,
            want,
            button.press(want),
        )
        .await?;
    }

    // By header pin (P9_12 = AM335x bank 1 line 28, our chip by label): the force-off hold.
    {
        let button = open(&LineSpec::HeaderPin("P9_12".into()), true)?;
        measured(
            "hold-pin-p9_12",
            sim,
            28,
            1,
            DEFAULT_FORCE_OFF,
            button.hold(),
        )
        .await?;
    }
    Ok(())
}

/// Runs this program again as a separate process that requests the held line.
fn busy_from_another_process(chip: &str, line: u32) -> Result<(), String> {
    let out = std::process::Command::new("/proc/self/exe")
        .args(["request", chip, &line.to_string()])
        .output()
        .map_err(|e| format!("spawn the second requester: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "GPIO-RESULT case=busy exit={} {}",
        out.status.code().unwrap_or(-1),
        text.trim()
    );
    Ok(())
}

fn second_request(args: &[String]) {
    let (Some(chip), Some(line)) = (args.first(), args.get(1).and_then(|l| l.parse().ok())) else {
        println!("error=\"usage: request CHIP LINE\"");
        std::process::exit(2);
    };
    let spec = LineSpec::Chip {
        chip: chip.clone(),
        line,
    };
    match CdevLine::request(&spec, true) {
        Ok(_) => println!("error=none"),
        Err(e @ GpioError::Busy { .. }) => {
            println!("kind=busy error=\"{e}\"");
            std::process::exit(1);
        }
        Err(e) => {
            println!("kind=other error=\"{e}\"");
            std::process::exit(1);
        }
    }
}
