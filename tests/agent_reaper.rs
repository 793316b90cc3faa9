//! Zombie reaping, in a test binary of its own because the reaper waits for any child of the
//! process. This process becomes a child subreaper (as PID 1 is for a whole system), starts
//! a shell that orphans two sleeps, and expects the reaper to leave no children behind.

use std::process::Command;
use std::time::{Duration, Instant};

use microfaas::agent::init;

/// Our children, alive or zombie, from every process's `stat`.
fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<i32>().ok()) == Some(me) {
            out.push((pid, state));
        }
    }
    out
}

#[test]
#[allow(clippy::zombie_processes)] // reaping it is the reaper's job, which is under test
fn reaper_collects_orphans() {
    // SAFETY: prctl with an integer argument.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    // Not waited for by us: the reaper must collect the shell and the sleeps it orphans.
    let _shell = Command::new("sh")
        .args(["-c", "sleep 0.3 & sleep 0.3 & exit 0"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!children().is_empty(), "the orphans must be ours");
    init::spawn_reaper();
    let start = Instant::now();
    loop {
        let left = children();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not reaped: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
