//! A Redis client speaking RESP2: commands as arrays of bulk strings, replies parsed into
//! [`Reply`]; `AUTH` when the binding carries a password.

use super::Conn;
use crate::protocol::ServiceBinding;

/// Largest bulk string or array accepted from the server.
const MAX_BULK: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

pub struct Redis {
    conn: Conn,
}

impl Redis {
    /// Connected and, when the binding has a password, authenticated.
    pub fn open(conn: Conn, b: &ServiceBinding) -> Result<Redis, String> {
        let mut r = Redis { conn };
        if let Some(pw) = &b.password {
            let reply = match &b.user {
                Some(user) => r.command(&[b"AUTH", user.as_bytes(), pw.as_bytes()])?,
                None => r.command(&[b"AUTH", pw.as_bytes()])?,
            };
            if let Reply::Error(e) = reply {
                return Err(format!("authentication failed: {e}"));
            }
        }
        Ok(r)
    }

    /// Sends one command and reads its reply (an error reply is a `Reply::Error`, not `Err`).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.conn.write_all(&out)?;
        self.reply()
    }

    fn reply(&mut self) -> Result<Reply, String> {
        let line = self.conn.read_line(64 * 1024)?;
        let line = line
            .strip_suffix(b"\r\n")
            .ok_or("reply line does not end in CRLF")?;
        let (&kind, rest) = line.split_first().ok_or("empty reply line")?;
        let text = String::from_utf8_lossy(rest).into_owned();
        let len = || -> Result<Option<usize>, String> {
            let n: i64 = text.parse().map_err(|_| format!("bad length {text:?}"))?;
            match n {
                -1 => Ok(None),
                n if n < 0 || n as usize > MAX_BULK => Err(format!("length {n} out of range")),
                n => Ok(Some(n as usize)),
            }
        };
        Ok(match kind {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(text.parse().map_err(|_| format!("bad integer {text:?}"))?),
            b'$' => match len()? {
                None => Reply::Bulk(None),
                Some(n) => {
                    let mut data = self.conn.read_vec(n + 2)?;
                    data.truncate(n);
                    Reply::Bulk(Some(data))
                }
            },
            b'*' => match len()? {
                None => Reply::Array(None),
                Some(n) => Reply::Array(Some(
                    (0..n).map(|_| self.reply()).collect::<Result<_, _>>()?,
                )),
            },
            other => return Err(format!("unknown reply type {:?}", other as char)),
        })
    }
}
