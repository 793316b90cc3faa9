//! What the service-backed functions talk through: the call's services and deadline
//! ([`Ctx`]), a deadline-bounded TCP connection ([`Conn`]), and one small client per wire
//! protocol (RESP, PostgreSQL, MQTT 3.1.1, S3 REST with SigV4). They are std-only and
//! blocking so the agent stays small and static; every read and write is bounded by the time
//! left before the call's deadline, so a down or silent service fails the call, never hangs it.

pub mod base64;
pub mod http;
pub mod mqtt;
pub mod postgres;
pub mod resp;
pub mod s3;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::FunctionError;
use crate::protocol::ServiceBinding;

/// I/O bound for a call without a deadline.
const NO_DEADLINE_IO: Duration = Duration::from_secs(30);

/// The services one invocation may use and when it must be done.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub services: &'a BTreeMap<String, ServiceBinding>,
    /// Every service operation fails once this passes.
    pub deadline: Option<Instant>,
}

impl<'a> Ctx<'a> {
    /// The service bound to `role`, checked to speak `protocol`.
    pub fn service(&self, role: &str) -> Result<&'a ServiceBinding, FunctionError> {
        let protocol = super::role_protocol(role);
        match self.services.get(role) {
            Some(b) if b.protocol == protocol => Ok(b),
            Some(b) => Err(FunctionError::Failed(format!(
                "service `{}` bound as `{role}` speaks {}, not {protocol}",
                b.name, b.protocol
            ))),
            None => Err(FunctionError::Failed(format!(
                "no `{role}` service was given to this call (Function.spec.services.{role})"
            ))),
        }
    }

    /// A connection to `b` bounded by this call's deadline.
    pub fn connect(&self, b: &ServiceBinding) -> Result<Conn, FunctionError> {
        Conn::open(b, self.deadline).map_err(|e| fail(b, e))
    }
}

/// A failed call naming the service, its address, and what went wrong.
pub fn fail(b: &ServiceBinding, why: impl Display) -> FunctionError {
    FunctionError::Failed(format!("service `{}` at {}: {why}", b.name, b.address))
}

/// A TCP connection whose every operation is bounded by a deadline.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    deadline: Option<Instant>,
}

impl Conn {
    pub fn open(b: &ServiceBinding, deadline: Option<Instant>) -> Result<Conn, String> {
        let addrs = b
            .address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve: {e}"))?;
        let mut last = String::from("address resolves to nothing");
        for a in addrs {
            let left = left(deadline)?;
            match TcpStream::connect_timeout(&a, left) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let writer = s.try_clone().map_err(|e| e.to_string())?;
                    return Ok(Conn {
                        reader: BufReader::new(s),
                        writer,
                        deadline,
                    });
                }
                Err(e) => last = format!("cannot connect: {e}"),
            }
        }
        Err(last)
    }

    fn arm(&self) -> Result<(), String> {
        let left = left(self.deadline)?;
        self.writer
            .set_read_timeout(Some(left))
            .and_then(|_| self.writer.set_write_timeout(Some(left)))
            .map_err(|e| e.to_string())
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.arm()?;
        self.writer.write_all(bytes).map_err(io_err)
    }

    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.arm()?;
        self.reader.read_exact(buf).map_err(io_err)
    }

    pub fn read_vec(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; n];
        self.read_exact(&mut v)?;
        Ok(v)
    }

    pub fn read_u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// One line up to `\n` (kept), at most `max` bytes.
    pub fn read_line(&mut self, max: usize) -> Result<Vec<u8>, String> {
        self.arm()?;
        let mut line = Vec::new();
        (&mut self.reader)
            .take(max as u64)
            .read_until(b'\n', &mut line)
            .map_err(io_err)?;
        match line.last() {
            Some(b'\n') => Ok(line),
            None => Err("connection closed".into()),
            Some(_) if line.len() >= max => Err(format!("line longer than {max} bytes")),
            Some(_) => Err("connection closed in the middle of a line".into()),
        }
    }

    /// Everything until the peer closes, at most `max` bytes.
    pub fn read_to_end(&mut self, max: usize) -> Result<Vec<u8>, String> {
        self.arm()?;
        let mut v = Vec::new();
        (&mut self.reader)
            .take(max as u64 + 1)
            .read_to_end(&mut v)
            .map_err(io_err)?;
        if v.len() > max {
            return Err(format!("reply larger than {max} bytes"));
        }
        Ok(v)
    }

    /// Waits at most `wait` (and never past the deadline) for the next byte; `None` when none
    /// came. For protocols where the server pushes messages (MQTT).
    pub fn poll_u8(&mut self, wait: Duration) -> Result<Option<u8>, String> {
        let wait = wait.min(left(self.deadline)?).max(Duration::from_millis(1));
        self.writer
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(Some(b[0])),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }
}

fn left(deadline: Option<Instant>) -> Result<Duration, String> {
    match deadline {
        None => Ok(NO_DEADLINE_IO),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err("the call's deadline passed while waiting for the service".into())
            } else {
                Ok(left)
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn io_err(e: std::io::Error) -> String {
    if is_timeout(&e) {
        "no answer before the call's deadline".into()
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "connection closed".into()
    } else {
        e.to_string()
    }
}

/// `n` bytes from the kernel's random source (nonces for SCRAM and MQTT client ids).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `v`.
        let r = unsafe { libc::getrandom(v[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r <= 0 {
            // No entropy source at all: fall back to the clock, good enough for a nonce
            // that only has to be unique.
            let mut rng = super::rng::SplitMix64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            );
            for b in &mut v[filled..] {
                *b = rng.next_u64() as u8;
            }
            break;
        }
        filled += r as usize;
    }
    v
}
