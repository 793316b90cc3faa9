//! `microfaasctl logs worker NAME [-f]`: a VM worker's serial console, as QEMU recorded it.

use super::{CmdResult, Failure};
use crate::manifest::Kind;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: microfaasctl logs worker vm-0 -f")]
pub struct Args {
    /// Only `worker` has logs.
    kind: String,
    name: String,
    /// Keep printing what the console writes (Ctrl-C to stop).
    #[arg(short, long)]
    follow: bool,
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let kind: Kind = args.kind.parse().map_err(Failure::invalid)?;
    if kind != Kind::Worker {
        return Err(Failure::invalid(format!(
            "only workers have logs, not {}",
            kind.plural()
        )));
    }
    let path = state_dir.join("vms").join(&args.name).join("console.log");
    let mut file = std::fs::File::open(&path).map_err(|e| {
        Failure::invalid(format!(
            "no console log for worker/{} at {}: {e} (has the VM ever been started on this state dir?)",
            args.name,
            path.display()
        ))
    })?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf)
            .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(250));
        // A resumed standby's console is renamed over the log: follow the new file. A cold
        // relaunch truncates it: start again from its beginning.
        use std::os::unix::fs::MetadataExt;
        let current = std::fs::metadata(&path).ok();
        let replaced = current
            .as_ref()
            .zip(file.metadata().ok())
            .is_some_and(|(now, open)| now.ino() != open.ino() || now.dev() != open.dev());
        if replaced {
            if let Ok(f) = std::fs::File::open(&path) {
                file = f;
            }
            continue;
        }
        let pos = file.stream_position().unwrap_or(0);
        if current.map(|m| m.len()).unwrap_or(0) < pos {
            let _ = file.seek(SeekFrom::Start(0));
        }
    }
}
