//! The WattsUp Pro serial protocol on a tty, implemented from the manufacturer's public
//! description, "Watts up? .Net / Pro Communications Protocol" (Electronic Educational Devices,
//! 2009-08-24, <https://www.wattsupmeters.com/secure/downloads/CommunicationsProtocol090824.pdf>):
//!
//! - RS-232 at 115200 baud, 8 data bits, no parity, 1 stop bit; plain ASCII packets that start
//!   with `#` and end with `;` (the meter follows each with CR LF).
//! - `#L,W,3,E,<reserved>,<interval>;` puts the meter in external logging mode: it then sends a
//!   data record every `<interval>` seconds.
//! - A data record is `#d,<sub>,<n>,<n fields>;`. The fields in order: watts, volts, amps,
//!   watt-hours, cost, monthly kWh, monthly cost, max watts, max volts, max amps, min watts,
//!   min volts, min amps, power factor, duty cycle, power cycle, line frequency, volt-amps.
//!   Watts, volts and watt-hours are integers in tenths, amps in thousandths (mA); a field the
//!   meter does not record is `_`.
//!
//! Robustness beyond the document: bytes before a `#` and packets that fail the field count are
//! skipped (a line corrupted on the wire, or cut by a reconnect); an end of file or an I/O error
//! on the tty (a USB meter unplugged) ends the session and the caller reopens the device.

use super::{MeterError, Reading};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Longest packet kept while waiting for its `;` (a full record is about 100 bytes).
const MAX_PACKET: usize = 512;

/// The command that starts external logging every `interval` (whole seconds, at least 1).
pub fn logging_command(interval: Duration) -> String {
    format!("#L,W,3,E,,{};", interval.as_secs().max(1))
}

/// Why a packet is not a usable data record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a data record")]
    NotData,
    #[error("field count {declared} but {found} fields")]
    Count { declared: String, found: usize },
    #[error("field {index} is not a number: {value:?}")]
    Field { index: usize, value: String },
    #[error("no watts field")]
    NoWatts,
}

/// Parses one packet (`#d,...;`, with or without the `;`) into a reading.
pub fn parse_record(packet: &str) -> Result<Reading, RecordError> {
    let body = packet.trim().trim_end_matches(';');
    let fields: Vec<&str> = body.split(',').map(str::trim).collect();
    if fields.first() != Some(&"#d") {
        return Err(RecordError::NotData);
    }
    let declared = fields.get(2).copied().unwrap_or("");
    let found = fields.len().saturating_sub(3);
    if declared.parse::<usize>().ok() != Some(found) {
        return Err(RecordError::Count {
            declared: declared.to_string(),
            found,
        });
    }
    // Every field is an integer or `_`: anything else means the line was corrupted.
    let value = |index: usize, scale: f64| -> Result<Option<f64>, RecordError> {
        match fields.get(index).copied() {
            None | Some("_") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(|n| Some(n as f64 / scale))
                .map_err(|_| RecordError::Field {
                    index,
                    value: v.to_string(),
                }),
        }
    };
    for i in 3..fields.len() {
        value(i, 1.0)?;
    }
    Ok(Reading {
        watts: value(3, 10.0)?.ok_or(RecordError::NoWatts)?,
        volts: value(4, 10.0)?,
        amps: value(5, 1000.0)?,
        watt_hours: value(6, 10.0)?,
    })
}

/// Cuts a byte stream into `#...;` packets, whatever the read boundaries.
#[derive(Debug, Default)]
pub struct Packets {
    buf: Vec<u8>,
    /// Bytes thrown away because they were not inside a packet (or one that grew too long).
    pub discarded: usize,
}

impl Packets {
    /// Feeds bytes; returns the packets they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'#' => {
                    // A new packet starts: whatever was pending never got its `;`.
                    self.discarded += self.buf.len();
                    self.buf.clear();
                    self.buf.push(b);
                }
                b';' if !self.buf.is_empty() => {
                    self.buf.push(b);
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                    self.buf.clear();
                }
                _ if self.buf.is_empty() => {
                    if !b.is_ascii_whitespace() {
                        self.discarded += 1;
                    }
                }
                _ => {
                    self.buf.push(b);
                    if self.buf.len() > MAX_PACKET {
                        self.discarded += self.buf.len();
                        self.buf.clear();
                    }
                }
            }
        }
        out
    }
}

/// An open WattsUp in external logging mode.
pub struct WattsUp {
    device: String,
    fd: AsyncFd<std::fs::File>,
    packets: Packets,
    pending: std::collections::VecDeque<String>,
    /// Packets that were not valid data records.
    pub rejected: usize,
}

/// Raw mode, 115200 8N1, receiver on, modem lines ignored.
fn configure(file: &std::fs::File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it from a valid open descriptor.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the lifetime of `file`; `t` is a valid termios.
    unsafe {
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::cfsetispeed(&mut t, libc::B115200) != 0
            || libc::cfsetospeed(&mut t, libc::B115200) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        t.c_cflag &= !(libc::CSTOPB | libc::PARENB | libc::CSIZE | libc::CRTSCTS);
        t.c_cflag |= libc::CS8 | libc::CLOCAL | libc::CREAD;
        t.c_iflag |= libc::IGNPAR;
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Stale bytes from before we took over mean nothing.
        libc::tcflush(fd, libc::TCIFLUSH);
    }
    Ok(())
}

impl WattsUp {
    /// Opens `device`, configures the line and starts external logging every `interval`.
    pub async fn open(device: &str, interval: Duration) -> Result<WattsUp, MeterError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(device)
            .map_err(|source| MeterError::Open {
                device: device.to_string(),
                source,
            })?;
        configure(&file).map_err(|source| MeterError::Configure {
            device: device.to_string(),
            source,
        })?;
        // SAFETY: `file` owns its descriptor, which the AsyncFd keeps until it is dropped; it is
        // never closed or replaced behind the AsyncFd's back.
        let fd = unsafe { AsyncFd::register(file) }.map_err(|e| MeterError::Open {
            device: device.to_string(),
            source: e.into(),
        })?;
        let mut me = WattsUp {
            device: device.to_string(),
            fd,
            packets: Packets::default(),
            pending: Default::default(),
            rejected: 0,
        };
        me.write_all(logging_command(interval).as_bytes()).await?;
        Ok(me)
    }

    fn gone(&self, why: impl std::fmt::Display) -> MeterError {
        MeterError::Disconnected {
            device: self.device.clone(),
            why: why.to_string(),
        }
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), MeterError> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await.map_err(|e| self.gone(e))?;
            match guard.try_io(|f| f.get_ref().write(bytes)) {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(self.gone(e)),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// The next valid data record; corrupted packets are skipped (counted in `rejected`). An
    /// error means the device is gone: open it again.
    pub async fn next(&mut self) -> Result<Reading, MeterError> {
        loop {
            while let Some(p) = self.pending.pop_front() {
                match parse_record(&p) {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        self.rejected += 1;
                        tracing::debug!(device = %self.device, "skipped WattsUp packet {p:?}: {e}");
                    }
                }
            }
            let mut buf = [0u8; 256];
            let mut guard = self.fd.readable().await.map_err(|e| self.gone(e))?;
            match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                Ok(Ok(0)) => return Err(self.gone("end of file")),
                Ok(Ok(n)) => {
                    let got = self.packets.push(&buf[..n]);
                    self.pending.extend(got);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(self.gone(e)),
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str =
        "#d,-,18,1234,1201,105,56,0,0,0,1300,1210,110,1200,1190,100,97,0,0,600,1280;";

    #[test]
    fn a_full_record_in_protocol_units() {
        let r = parse_record(FULL).expect("record");
        assert_eq!(r.watts, 123.4);
        assert_eq!(r.volts, Some(120.1));
        assert_eq!(r.amps, Some(0.105));
        assert_eq!(r.watt_hours, Some(5.6));
    }

    #[test]
    fn unrecorded_fields_and_corruption() {
        let r = parse_record("#d,-,4,25,_,_,_;").expect("record");
        assert_eq!((r.watts, r.volts), (2.5, None));
        assert_eq!(parse_record("#d,-,4,_,1,2,3;"), Err(RecordError::NoWatts));
        assert!(matches!(
            parse_record("#d,-,18,1234,12"),
            Err(RecordError::Count { .. })
        ));
        assert!(matches!(
            parse_record("#d,-,4,12x4,1,2,3;"),
            Err(RecordError::Field { index: 3, .. })
        ));
        assert_eq!(parse_record("#h,-,3,a,b,c;"), Err(RecordError::NotData));
    }

    #[test]
    fn packets_survive_any_split_and_drop_garbage() {
        let stream = format!("xx\r\n{FULL}\r\n#d,-,18,99{FULL}\r\n");
        for chunk in 1..stream.len() {
            let mut p = Packets::default();
            let mut got = Vec::new();
            for c in stream.as_bytes().chunks(chunk) {
                got.extend(p.push(c));
            }
            assert_eq!(
                got,
                vec![FULL.to_string(), FULL.to_string()],
                "chunk {chunk}"
            );
            assert!(p.discarded >= 2 + "#d,-,18,99".len());
        }
    }

    #[test]
    fn logging_command_in_whole_seconds() {
        assert_eq!(logging_command(Duration::from_secs(1)), "#L,W,3,E,,1;");
        assert_eq!(logging_command(Duration::from_millis(200)), "#L,W,3,E,,1;");
        assert_eq!(logging_command(Duration::from_secs(5)), "#L,W,3,E,,5;");
    }
}
