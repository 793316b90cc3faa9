//! The QEMU command line for a [`VmConfig`]: a pure function, so what we launch can be checked
//! without launching it.

use std::ffi::OsString;
use std::path::Path;

use crate::manifest::types::{Accel, Machine};

use super::{RunFiles, VmConfig, VmNet};

/// QEMU parses `key=value,key=value` option strings; a comma inside a value is written twice.
pub(crate) fn escape_opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// How a launched guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At once.
    Run,
    /// A standby: waits for QMP `cont`, its console in `console.next.log` meanwhile.
    Paused,
    /// A standby whose guest state comes from a snapshot (`-incoming defer`, then QMP
    /// `migrate-incoming`): otherwise the same as `Paused`.
    Incoming,
}

/// `accel` must already be resolved (never `Auto`). `host_tsc_khz` is what a `microvm` guest
/// under TCG is told its TSC runs at (see `tsc.rs`).
///
/// A snapshot worker's (`cfg.snapshot`) console is a socket as well as its log file: the host
/// writes the go line into it (see `agent::resume`). Every start of such a worker has the same
/// devices and kernel command line, which is what lets a snapshot of one boot be restored by
/// a later QEMU.
pub(crate) fn build(
    cfg: &VmConfig,
    files: &RunFiles,
    accel: Accel,
    host_tsc_khz: Option<u32>,
    start: Start,
) -> Vec<OsString> {
    let paused = start != Start::Run;
    let mut a: Vec<OsString> = Vec::new();
    let mut arg = |s: &dyn AsRef<std::ffi::OsStr>| a.push(s.as_ref().to_owned());
    // Nothing from the host's default config or default devices: what runs is exactly what
    // this function says.
    arg(&"-nodefaults");
    arg(&"-no-user-config");
    arg(&"-display");
    arg(&"none");
    // A guest reboot ends QEMU (SHUTDOWN); the engine decides whether to start it again.
    arg(&"-no-reboot");
    arg(&"-name");
    arg(&format!("guest={}", cfg.name.replace(',', ",,")));
    arg(&"-uuid");
    arg(&cfg.uuid);
    arg(&"-machine");
    arg(&match cfg.machine {
        // virtio-net-pci needs a PCI bus, which microvm only has with pcie=on; ACPI gives the
        // guest the power button that `system_powerdown` presses. pic=off: the guest has
        // not programmed microvm's 8259 when it first enables interrupts, so a PIT tick pending
        // then arrives as vector 0 (seen in the guest's log buffer: "divide error" in the idle
        // task, a panic before the console exists): about half of the PVH boots here hung
        // silently. Without the PIC, interrupts reach the guest through the IOAPIC.
        Machine::Microvm => "microvm,pcie=on,acpi=on,pic=off",
        Machine::Q35 => "q35",
        Machine::Pc => "pc",
        // QEMU writes the device tree; `system_powerdown` arrives as a gpio-keys KEY_POWER.
        Machine::Virt => "virt",
    });
    match accel {
        Accel::Kvm => {
            arg(&"-accel");
            arg(&"kvm");
            arg(&"-cpu");
            arg(&"host");
        }
        // Auto is resolved by the caller; treat a stray one as the safe choice.
        Accel::Tcg | Accel::Auto => {
            arg(&"-accel");
            arg(&"tcg");
        }
    }
    arg(&"-m");
    arg(&format!("{}M", cfg.memory_mib));
    arg(&"-smp");
    arg(&cfg.cpus.max(1).to_string());
    arg(&"-kernel");
    arg(&cfg.kernel);
    if let Some(initrd) = &cfg.initrd {
        arg(&"-initrd");
        arg(initrd);
    }
    arg(&"-append");
    arg(&kernel_cmdline(cfg, accel, host_tsc_khz));
    if paused {
        arg(&"-S");
    }
    if start == Start::Incoming {
        arg(&"-incoming");
        arg(&"defer");
    }
    let log = escape_opt(if paused {
        &files.console_next
    } else {
        &files.console
    });
    arg(&"-chardev");
    arg(&if cfg.snapshot {
        format!(
            "socket,id=console,path={},server=on,wait=off,logfile={log}",
            escape_opt(&files.console_sock)
        )
    } else {
        format!("file,id=console,path={log}")
    });
    arg(&"-serial");
    arg(&"chardev:console");
    arg(&"-chardev");
    arg(&format!(
        "socket,id=qmp,path={},server=on,wait=off",
        escape_opt(&files.qmp)
    ));
    arg(&"-mon");
    arg(&"chardev=qmp,mode=control");
    arg(&"-pidfile");
    arg(&files.pidfile);
    // Detached: QEMU forks, setsid()s and the parent exits once the VM is set up (with a
    // non-zero status when setup failed), so the VM outlives the engine that launched it.
    arg(&"-daemonize");

    let (netdev, mac) = match &cfg.network {
        VmNet::User { guestfwd } => {
            // restrict=on: the guest reaches nothing but the forwarded orchestrator endpoint.
            let mut s = String::from("user,id=net0,restrict=on");
            if let Some((ip, port, target)) = guestfwd {
                match &cfg.relay {
                    // One relay process per guest connection: survives engine restarts.
                    Some(cmd) => s += &format!(",guestfwd=tcp:{ip}:{port}-cmd:{cmd} {target}"),
                    None => s += &format!(",guestfwd=tcp:{ip}:{port}-tcp:{target}"),
                }
            }
            for (ip, port, target) in &cfg.service_forwards {
                match &cfg.relay {
                    Some(cmd) => s += &format!(",guestfwd=tcp:{ip}:{port}-cmd:{cmd} {target}"),
                    None => s += &format!(",guestfwd=tcp:{ip}:{port}-tcp:{target}"),
                }
            }
            (s, None)
        }
        // `-netdev bridge` creates the tap and attaches it to the bridge through
        // qemu-bridge-helper (allowed bridges are listed in /etc/qemu/bridge.conf).
        VmNet::Tap { bridge, mac } => (
            format!("bridge,id=net0,br={}", bridge.replace(',', ",,")),
            Some(mac.clone().unwrap_or_else(|| mac_for(&cfg.uuid))),
        ),
    };
    arg(&"-netdev");
    arg(&netdev);
    // virt's kernel drives virtio over MMIO transports, no PCI bus needed.
    let mut device = String::from(match cfg.machine {
        Machine::Virt => "virtio-net-device,netdev=net0",
        _ => "virtio-net-pci,netdev=net0",
    });
    if let Some(mac) = mac {
        device += &format!(",mac={}", mac.replace(',', ",,"));
    }
    arg(&"-device");
    arg(&device);
    a
}

/// A tap VM's MAC when the manifest gives none: QEMU would give every VM 52:54:00:12:34:56,
/// and VMs sharing a bridge must not share a MAC. QEMU's own prefix, then three bytes of the
/// worker's uuid's digest (the uuid is kept for the worker's life, so is the MAC).
pub(crate) fn mac_for(uuid: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(uuid.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

/// The serial console device a guest kernel on `machine` writes to: the 8250 UART on x86,
/// the PL011 on ARM's virt board.
pub fn guest_console(machine: Machine) -> &'static str {
    match machine {
        Machine::Virt => "ttyAMA0",
        Machine::Microvm | Machine::Q35 | Machine::Pc => "ttyS0",
    }
}

/// The QEMU system emulator for `machine`; `x86` is the configured x86 binary
/// (`MICROFAAS_QEMU`, else `qemu-system-x86_64`), `arm` likewise (`MICROFAAS_QEMU_ARM`).
pub fn emulator_for<'a>(machine: Machine, x86: &'a Path, arm: &'a Path) -> &'a Path {
    match machine {
        Machine::Virt => arm,
        Machine::Microvm | Machine::Q35 | Machine::Pc => x86,
    }
}

/// The manifest's command line, plus what the guest kernel needs to keep time on `microvm`
/// under TCG: without a calibration source it stalls at boot, and its watchdog would later
/// demote the (correct) TSC for jiffies, leaving the agent a 10 ms clock to time functions by.
fn kernel_cmdline(cfg: &VmConfig, accel: Accel, host_tsc_khz: Option<u32>) -> String {
    let mut line = match (cfg.machine, accel, host_tsc_khz) {
        (Machine::Microvm, Accel::Tcg | Accel::Auto, Some(khz)) => {
            format!("{} tsc_early_khz={khz} tsc=reliable", cfg.cmdline)
        }
        _ => cfg.cmdline.clone(),
    };
    if cfg.snapshot {
        line.push_str(" microfaas.snapshot=park");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::PathBuf;

    fn cfg() -> VmConfig {
        let mut c = VmConfig::new("vm-0", "0b4c7a34-0000-4000-8000-000000000001", "/k/bzImage");
        c.run_dir = PathBuf::from("/state/vms/vm-0");
        c.cmdline = "console=ttyS0 microfaas.worker=vm-0".into();
        c
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn user_network_is_restricted_with_guestfwd() {
        let mut c = cfg();
        c.network = VmNet::User {
            guestfwd: Some((
                Ipv4Addr::new(10, 0, 2, 100),
                7000,
                SocketAddr::from(([127, 0, 0, 1], 7001)),
            )),
        };
        let args = strings(build(
            &c,
            &RunFiles::new(&c.run_dir),
            Accel::Tcg,
            None,
            Start::Run,
        ));
        assert_eq!(
            after(&args, "-netdev"),
            ["user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:7000-tcp:127.0.0.1:7001"]
        );
        assert_eq!(after(&args, "-accel"), ["tcg"]);
        assert_eq!(after(&args, "-name"), ["guest=vm-0"]);
        assert_eq!(
            after(&args, "-uuid"),
            ["0b4c7a34-0000-4000-8000-000000000001"]
        );
        assert_eq!(after(&args, "-pidfile"), ["/state/vms/vm-0/qemu.pid"]);
        assert!(args.iter().any(|a| a == "-daemonize"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(after(&args, "-cpu").is_empty(), "no -cpu host under TCG");
        // Without pic=off, PVH boots on microvm die silently about half the time.
        assert_eq!(
            after(&args, "-machine"),
            ["microvm,pcie=on,acpi=on,pic=off"]
        );
    }

    #[test]
    fn kvm_tap_machine_and_escaping() {
        let mut c = cfg();
        c.machine = Machine::Q35;
        c.run_dir = PathBuf::from("/odd,dir");
        c.network = VmNet::Tap {
            bridge: "br0".into(),
            mac: Some("52:54:00:12:34:56".into()),
        };
        let args = strings(build(
            &c,
            &RunFiles::new(&c.run_dir),
            Accel::Kvm,
            Some(2_300_000),
            Start::Run,
        ));
        assert_eq!(after(&args, "-accel"), ["kvm"]);
        assert_eq!(after(&args, "-cpu"), ["host"]);
        assert_eq!(after(&args, "-machine"), ["q35"]);
        assert_eq!(after(&args, "-netdev"), ["bridge,id=net0,br=br0"]);
        assert_eq!(
            after(&args, "-device"),
            ["virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"]
        );
        assert!(after(&args, "-chardev").contains(&"file,id=console,path=/odd,,dir/console.log"));
    }

    #[test]
    fn tap_vms_without_a_mac_get_their_own() {
        let mut a = cfg();
        a.network = VmNet::Tap {
            bridge: "br0".into(),
            mac: None,
        };
        let mut b = a.clone();
        b.uuid = "0b4c7a34-0000-4000-8000-000000000002".into();
        let device = |c: &VmConfig| {
            let args = strings(build(
                c,
                &RunFiles::new(&c.run_dir),
                Accel::Tcg,
                None,
                Start::Run,
            ));
            after(&args, "-device")[0].to_string()
        };
        let (da, db) = (device(&a), device(&b));
        assert!(
            da.starts_with("virtio-net-pci,netdev=net0,mac=52:54:00:"),
            "{da}"
        );
        assert_ne!(da, db, "two VMs on one bridge");
        assert_eq!(da, device(&a), "stable for the worker");
        // User networking keeps QEMU's default: the guest is alone on its slirp network.
        a.network = VmNet::User { guestfwd: None };
        assert_eq!(device(&a), "virtio-net-pci,netdev=net0");
    }

    #[test]
    fn a_standby_waits_for_cont_and_keeps_the_last_console() {
        let c = cfg();
        let files = RunFiles::new(&c.run_dir);
        let cold = strings(build(&c, &files, Accel::Tcg, None, Start::Run));
        let paused = strings(build(&c, &files, Accel::Tcg, None, Start::Paused));
        assert!(!cold.iter().any(|a| a == "-S"));
        assert!(paused.iter().any(|a| a == "-S"));
        assert!(
            after(&paused, "-chardev")
                .contains(&"file,id=console,path=/state/vms/vm-0/console.next.log")
        );
        // Everything else is the same VM: same pidfile, QMP socket, uuid, devices.
        let rest = |v: &[String]| -> Vec<String> {
            v.iter()
                .filter(|a| *a != "-S" && !a.contains("console"))
                .cloned()
                .collect()
        };
        assert_eq!(rest(&cold), rest(&paused));
    }

    #[test]
    fn a_snapshot_worker_parks_and_restores_with_the_same_machine() {
        let mut c = cfg();
        c.snapshot = true;
        let files = RunFiles::new(&c.run_dir);
        let boot = strings(build(&c, &files, Accel::Tcg, Some(2_299_966), Start::Run));
        let restore = strings(build(
            &c,
            &files,
            Accel::Tcg,
            Some(2_299_966),
            Start::Incoming,
        ));
        assert!(after(&boot, "-append")[0].ends_with(" microfaas.snapshot=park"));
        assert!(after(&boot, "-chardev").contains(
            &"socket,id=console,path=/state/vms/vm-0/console.sock,server=on,wait=off,logfile=/state/vms/vm-0/console.log"
        ));
        assert!(after(&boot, "-incoming").is_empty());
        assert_eq!(after(&restore, "-incoming"), ["defer"]);
        assert!(restore.iter().any(|a| a == "-S"));
        // A snapshot only loads into the same machine: everything else is identical.
        let rest = |v: &[String]| -> Vec<String> {
            v.iter()
                .filter(|a| {
                    !["-S", "-incoming", "defer"].contains(&a.as_str()) && !a.contains("logfile=")
                })
                .cloned()
                .collect()
        };
        assert_eq!(rest(&boot), rest(&restore));
        // Workers that boot are unchanged.
        c.snapshot = false;
        let plain = strings(build(&c, &files, Accel::Tcg, Some(2_299_966), Start::Run));
        assert!(!after(&plain, "-append")[0].contains("microfaas.snapshot"));
    }

    #[test]
    fn arm_virt_uses_mmio_virtio_and_no_tsc() {
        let mut c = cfg();
        c.machine = Machine::Virt;
        let args = strings(build(
            &c,
            &RunFiles::new(&c.run_dir),
            Accel::Tcg,
            Some(2_299_966),
            Start::Run,
        ));
        assert_eq!(after(&args, "-machine"), ["virt"]);
        assert_eq!(after(&args, "-device"), ["virtio-net-device,netdev=net0"]);
        assert_eq!(
            after(&args, "-append"),
            ["console=ttyS0 microfaas.worker=vm-0"],
            "the TSC is x86's"
        );
        assert_eq!(guest_console(Machine::Virt), "ttyAMA0");
        assert_eq!(guest_console(Machine::Microvm), "ttyS0");
        let (x86, arm) = (
            Path::new("qemu-system-x86_64"),
            Path::new("qemu-system-arm"),
        );
        assert_eq!(emulator_for(Machine::Virt, x86, arm), arm);
        assert_eq!(emulator_for(Machine::Pc, x86, arm), x86);
    }

    #[test]
    fn microvm_under_tcg_is_told_its_tsc_frequency() {
        let mut c = cfg();
        c.machine = Machine::Microvm;
        let files = RunFiles::new(&c.run_dir);
        let tcg = strings(build(&c, &files, Accel::Tcg, Some(2_299_966), Start::Run));
        assert_eq!(
            after(&tcg, "-append"),
            ["console=ttyS0 microfaas.worker=vm-0 tsc_early_khz=2299966 tsc=reliable"]
        );
        // KVM gives the guest kvmclock; other machines have HPET and the ACPI PM timer.
        let kvm = strings(build(&c, &files, Accel::Kvm, Some(2_299_966), Start::Run));
        assert_eq!(
            after(&kvm, "-append"),
            ["console=ttyS0 microfaas.worker=vm-0"]
        );
        c.machine = Machine::Pc;
        let pc = strings(build(&c, &files, Accel::Tcg, Some(2_299_966), Start::Run));
        assert_eq!(
            after(&pc, "-append"),
            ["console=ttyS0 microfaas.worker=vm-0"]
        );
    }
}
