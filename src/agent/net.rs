//! Bringing the network up without busybox: loopback, then the NIC's address, netmask and
//! flags with the SIOCSIF* ioctls, a default route with SIOCADDRT, and the hostname; and
//! taking it down again before a power-off.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use super::cmdline::{IpConfig, IpSetting};
use super::log::log;

/// How long to wait for the NIC to appear: its driver may still be probing after its module
/// was loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Configure loopback and the interface the `ip=` setting names.
pub fn configure(setting: &IpSetting) -> io::Result<()> {
    let sock = socket()?;
    if let Err(e) = set_up(&sock, "lo") {
        log!("lo: cannot bring up: {e}");
    }
    let ip = match setting {
        IpSetting::Off => return Ok(()),
        IpSetting::Dhcp => {
            log!("ip=dhcp: no DHCP client in the agent; relying on the kernel's autoconfiguration");
            return Ok(());
        }
        IpSetting::Default => IpConfig::qemu_user(),
        IpSetting::Static(ip) => ip.clone(),
    };
    configure_interface(&sock, &ip)
}

fn configure_interface(sock: &OwnedFd, ip: &IpConfig) -> io::Result<()> {
    let dev = ip.device.as_str();
    let start = Instant::now();
    loop {
        match ioctl_addr(sock, dev, libc::SIOCSIFADDR as _, ip.client) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) && start.elapsed() < DEVICE_WAIT => {
                thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    }
    ioctl_addr(sock, dev, libc::SIOCSIFNETMASK as _, ip.netmask)?;
    set_up(sock, dev)?;
    if let Some(gw) = ip.gateway {
        match add_default_route(sock, gw) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }
    if let Some(host) = &ip.hostname {
        // SAFETY: pointer and length describe the string's bytes.
        if unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } != 0 {
            log!("sethostname({host}): {}", io::Error::last_os_error());
        }
    }
    log!(
        "{dev}: {}/{} gw {}",
        ip.client,
        ip.netmask,
        ip.gateway.map_or("none".into(), |g| g.to_string())
    );
    Ok(())
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the kernel reads it by family.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_addr(sock: &OwnedFd, dev: &str, request: libc::Ioctl, ip: Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq(dev)?;
    req.ifr_ifru.ifru_addr = sockaddr(ip);
    // SAFETY: the request is one of the SIOCSIF* address ioctls, which read an ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) })
}

fn set_up(sock: &OwnedFd, dev: &str) -> io::Result<()> {
    set_flags(sock, dev, |f| {
        f | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short
    })
}

fn set_flags(
    sock: &OwnedFd,
    dev: &str,
    change: impl Fn(libc::c_short) -> libc::c_short,
) -> io::Result<()> {
    let mut req = ifreq(dev)?;
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write the flags member of our ifreq.
    unsafe {
        check(libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut req,
        ))?;
        req.ifr_ifru.ifru_flags = change(req.ifr_ifru.ifru_flags);
        check(libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS as _,
            &mut req,
        ))
    }
}

/// Take every interface but loopback down before the machine powers off or reboots.
///
/// Why: with the interface up, the kernel's shutdown breaks the virtio device while the NIC's
/// NAPI poll may still run, and Linux 6.1.192's virtio-net then spins for ever in its TX
/// clean-up (the ring is broken, so nothing is reclaimed, yet buffers stay "used"): ksoftirqd
/// livelocks and the VM never powers off. Closing the interface first disables NAPI.
pub fn take_down_all() {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    let sock = match socket() {
        Ok(s) => s,
        Err(e) => return log!("cannot take the network down: {e}"),
    };
    for dev in entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        if dev == "lo" {
            continue;
        }
        if let Err(e) = set_flags(&sock, &dev, |f| f & !(libc::IFF_UP as libc::c_short)) {
            log!("{dev}: cannot take down: {e}");
        }
    }
}

fn add_default_route(sock: &OwnedFd, gateway: Ipv4Addr) -> io::Result<()> {
    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads an rtentry.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &mut rt) })
}
