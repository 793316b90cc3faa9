//! Parking for a snapshot: with `microfaas.snapshot=park` on the kernel command line, PID 1
//! stops before it dials, says so on the console and waits there for the host's "go" line.
//! The host snapshots the guest while it waits, and every VM restored from that snapshot
//! wakes up in this same read. The go line carries fresh host entropy and the host's clock:
//! without them every restored guest would share one RNG state (same TCP ports and sequence
//! numbers, same "random" values in functions) and the wall clock of the snapshot's moment.
//!
//! Wire format (console, one line each way):
//! ```text
//! guest → host  microfaas-agent: parked for a snapshot   (crate::protocol::PARKED_MARKER)
//! host  → guest go <64 hex: 32 random bytes> <host unix time in ns> <restored|booted>
//! guest → host  microfaas-agent: left the park: ...       (crate::protocol::RELEASED_MARKER)
//! ```

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use super::log::log;
use crate::protocol::{PARKED_MARKER, ParkedStart, RELEASED_MARKER};

/// _IOW('R', 0x03, int[2]): add bytes to the input pool and credit their entropy.
const RNDADDENTROPY: u64 = 0x4008_5203;
/// _IO('R', 0x07): reseed the kernel's CRNG from the input pool now, not at its next timer.
const RNDRESEEDCRNG: u64 = 0x5207;
const ENTROPY_BYTES: usize = 32;
/// Longest go line read; anything longer is noise.
const MAX_LINE: usize = 256;

static START: OnceLock<ParkedStart> = OnceLock::new();

/// What the go line of this boot said, for the hello; `None` when the agent never parked.
pub fn start() -> Option<&'static ParkedStart> {
    START.get()
}

/// One parsed go line.
#[derive(Debug, PartialEq)]
pub struct Go {
    pub entropy: [u8; ENTROPY_BYTES],
    pub unix_ns: u128,
    pub restored: bool,
}

/// `go HEX NS restored|booted`; `None` for anything else (line noise on the console).
pub fn parse_go(line: &str) -> Option<Go> {
    let mut words = line.split_whitespace();
    if words.next()? != "go" {
        return None;
    }
    let hex = words.next()?;
    let unix_ns = words.next()?.parse().ok()?;
    let restored = match words.next()? {
        "restored" => true,
        "booted" => false,
        _ => return None,
    };
    if hex.len() != ENTROPY_BYTES * 2 || words.next().is_some() {
        return None;
    }
    let mut entropy = [0u8; ENTROPY_BYTES];
    for (i, b) in entropy.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Go {
        entropy,
        unix_ns,
        restored,
    })
}

/// Parks until the host's go line, then mixes its entropy into the kernel RNG, sets the
/// clock and draws this start's id. Never returns without a go line: the host either sends
/// one or kills the VM.
pub fn park() {
    let console = match File::options().read(true).write(true).open("/dev/console") {
        Ok(f) => f,
        Err(e) => {
            log!("cannot open the console to park: {e}; dialling without a snapshot");
            return;
        }
    };
    // No echo (the entropy must not land in the console log) and byte-wise reads.
    let fd = console.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr on a descriptor we own.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut raw = saved;
        raw.c_lflag &= !(libc::ECHO | libc::ICANON | libc::ECHONL);
        raw.c_iflag &= !(libc::ICRNL | libc::IXON);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: sets the attributes of our descriptor from a valid termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) };
    }
    log!("{PARKED_MARKER}");
    let go = read_go(&console);
    if have_tty {
        // SAFETY: restores what tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    let Some(go) = go else {
        log!("console closed while parked; dialling without fresh entropy");
        return;
    };
    let reseeded = match mix_entropy(&go.entropy) {
        Ok(()) => true,
        Err(e) => {
            log!("could not reseed the RNG: {e}");
            false
        }
    };
    set_clock(go.unix_ns);
    let id = random_id();
    let how = if go.restored {
        "resumed from a snapshot"
    } else {
        "released after a boot"
    };
    log!("{RELEASED_MARKER}: {how}, start {id}");
    let _ = START.set(ParkedStart {
        id,
        restored: go.restored,
        reseeded,
    });
}

fn read_go(mut console: &File) -> Option<Go> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match console.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' || byte[0] == b'\r' => {
                if let Some(go) = std::str::from_utf8(&line).ok().and_then(parse_go) {
                    return Some(go);
                }
                line.clear();
            }
            Ok(_) if line.len() < MAX_LINE => line.push(byte[0]),
            Ok(_) => line.clear(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Credits the bytes to the input pool, then forces the CRNG to reseed from it, so the very
/// next getrandom() already differs between two restores of one snapshot.
fn mix_entropy(bytes: &[u8; ENTROPY_BYTES]) -> std::io::Result<()> {
    #[repr(C)]
    struct PoolInfo {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; ENTROPY_BYTES],
    }
    let info = PoolInfo {
        entropy_count: (ENTROPY_BYTES * 8) as libc::c_int,
        buf_size: ENTROPY_BYTES as libc::c_int,
        buf: *bytes,
    };
    let rng = File::options().write(true).open("/dev/urandom")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info (two ints, then buf_size bytes) from the
    // pointer; PoolInfo is laid out that way and lives across the call.
    if unsafe { libc::ioctl(rng.as_raw_fd(), RNDADDENTROPY as _, &info) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(rng.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_clock(unix_ns: u128) {
    let ts = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as _,
        tv_nsec: (unix_ns % 1_000_000_000) as _,
    };
    // SAFETY: clock_settime reads the timespec we own.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log!(
            "could not set the clock: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// 8 bytes from the (just reseeded) kernel RNG, in hex: tells two starts of one snapshot apart.
fn random_id() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return "unknown".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_lines() {
        let hex = "ab".repeat(32);
        let go = parse_go(&format!("go {hex} 1700000000123456789 restored")).expect("go");
        assert_eq!(go.entropy, [0xab; 32]);
        assert_eq!(go.unix_ns, 1_700_000_000_123_456_789);
        assert!(go.restored);
        assert!(
            !parse_go(&format!("go {hex} 1 booted"))
                .expect("go")
                .restored
        );
        for bad in [
            "",
            "go",
            &format!("og {hex} 1 booted"),
            &format!("go {} 1 booted", "ab".repeat(31)),
            &format!("go {} 1 booted", "zz".repeat(32)),
            &format!("go {hex} x booted"),
            &format!("go {hex} 1 maybe"),
            &format!("go {hex} 1 booted extra"),
        ] {
            assert_eq!(parse_go(bad), None, "{bad}");
        }
    }
}
