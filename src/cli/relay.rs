//! `microfaasctl relay HOST:PORT` (hidden): copies stdin to a TCP connection and the connection
//! to stdout. QEMU runs it for each guest connection to the orchestrator address, so guests
//! always reach whichever engine listens now.

use super::{CmdResult, Failure};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    target: String,
}

pub fn run(args: Args) -> CmdResult {
    let stream = TcpStream::connect(&args.target)
        .map_err(|e| Failure::invalid(format!("relay: cannot connect to {}: {e}", args.target)))?;
    let _ = stream.set_nodelay(true);
    let mut up = stream
        .try_clone()
        .map_err(|e| Failure::invalid(format!("relay: {e}")))?;
    let mut down = stream;
    let to_host = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = copy(&mut stdin, &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    let _ = copy(&mut down, &mut stdout);
    // The engine closed: the guest sees its connection end and redials.
    drop(to_host);
    std::thread::sleep(Duration::from_millis(10));
    Ok(ExitCode::SUCCESS)
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
        w.flush()?;
    }
}
