//! A PostgreSQL client: protocol 3.0 start-up, authentication (trust, cleartext, md5 and
//! SCRAM-SHA-256 without channel binding), and the simple query protocol with rows returned as
//! JSON objects (integer columns as numbers, NULL as null, everything else as text).

use hmac::{Hmac, Mac};
use md5::Md5;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Conn, base64, random_bytes};
use crate::functions::hex;
use crate::protocol::ServiceBinding;

/// Largest backend message accepted.
const MAX_MESSAGE: usize = 16 << 20;

type HmacSha256 = Hmac<Sha256>;

pub struct Postgres {
    conn: Conn,
}

/// Rows of one query, each a JSON object keyed by column name.
pub type Rows = Vec<Map<String, Value>>;

impl Postgres {
    /// Start-up and authentication as the binding's user (default `postgres`) on its database
    /// (`target`, default the user's name), until the server is ready for a query.
    pub fn open(conn: Conn, b: &ServiceBinding) -> Result<Postgres, String> {
        let mut pg = Postgres { conn };
        let user = b.user.as_deref().unwrap_or("postgres");
        let database = b.target.as_deref().unwrap_or(user);
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [
            ("user", user),
            ("database", database),
            ("application_name", "microfaas"),
        ] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        pg.conn.write_all(&msg)?;
        pg.authenticate(user, b.password.as_deref())?;
        loop {
            match pg.message()? {
                (b'Z', _) => return Ok(pg),
                (b'E', body) => return Err(error_text(&body)),
                _ => {}
            }
        }
    }

    fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), String> {
        let need_pw = || password.ok_or("the server asks for a password and none is configured");
        let mut scram: Option<Scram> = None;
        loop {
            let (kind, body) = self.message()?;
            if kind == b'E' {
                return Err(error_text(&body));
            }
            if kind != b'R' {
                return Err(format!("expected authentication, got {:?}", kind as char));
            }
            let code = be32(&body, 0)?;
            let data = &body[4..];
            match code {
                0 => return Ok(()),
                3 => self.send(b'p', &cstr_vec(need_pw()?))?,
                5 => {
                    let inner = hex(&Md5::digest(format!("{}{user}", need_pw()?)));
                    let mut h = Md5::new();
                    h.update(inner.as_bytes());
                    h.update(data.get(..4).ok_or("md5 request without salt")?);
                    self.send(b'p', &cstr_vec(&format!("md5{}", hex(&h.finalize()))))?;
                }
                10 => {
                    let mechs = String::from_utf8_lossy(data);
                    if !mechs.split('\0').any(|m| m == "SCRAM-SHA-256") {
                        return Err(format!("no supported SASL mechanism in {mechs:?}"));
                    }
                    let s = Scram::new(need_pw()?);
                    let first = s.client_first();
                    let mut out = cstr_vec("SCRAM-SHA-256");
                    out.extend_from_slice(&(first.len() as u32).to_be_bytes());
                    out.extend_from_slice(first.as_bytes());
                    self.send(b'p', &out)?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or("SASL continue before SASL start")?;
                    let reply = s.client_final(&String::from_utf8_lossy(data))?;
                    self.send(b'p', reply.as_bytes())?;
                }
                12 => {
                    let s = scram.as_ref().ok_or("SASL final before SASL start")?;
                    s.verify_server(&String::from_utf8_lossy(data))?;
                }
                other => return Err(format!("unsupported authentication method {other}")),
            }
        }
    }

    /// Runs `sql` with the simple query protocol and returns the rows of its last statement.
    pub fn query(&mut self, sql: &str) -> Result<Rows, String> {
        self.send(b'Q', &cstr_vec(sql))?;
        let mut columns: Vec<(String, u32)> = Vec::new();
        let mut rows = Rows::new();
        let mut failure = None;
        loop {
            let (kind, body) = self.message()?;
            match kind {
                b'T' => {
                    columns = row_description(&body)?;
                    rows.clear();
                }
                b'D' => rows.push(data_row(&body, &columns)?),
                b'E' => failure = Some(error_text(&body)),
                b'Z' => {
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Says goodbye (best effort).
    pub fn close(mut self) {
        let _ = self.send(b'X', &[]);
    }

    fn send(&mut self, kind: u8, body: &[u8]) -> Result<(), String> {
        let mut msg = vec![kind];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.conn.write_all(&msg)
    }

    /// The next backend message, type and body.
    fn message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let kind = self.conn.read_u8()?;
        let mut len = [0u8; 4];
        self.conn.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(format!("message length {len} out of range"));
        }
        let body = self.conn.read_vec(len - 4)?;
        Ok((kind, body))
    }
}

/// An ErrorResponse as `SEVERITY: message`.
fn error_text(body: &[u8]) -> String {
    let mut severity = "";
    let mut message = String::new();
    for field in body.split(|&b| b == 0) {
        if let Some((&code, text)) = field.split_first() {
            let text = std::str::from_utf8(text).unwrap_or("?");
            match code {
                b'S' => severity = if severity.is_empty() { text } else { severity },
                b'M' => message = text.to_string(),
                _ => {}
            }
        }
    }
    format!("{severity}: {message}")
}

fn row_description(body: &[u8]) -> Result<Vec<(String, u32)>, String> {
    let n = be16(body, 0)? as usize;
    let mut at = 2;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let end = body[at..]
            .iter()
            .position(|&b| b == 0)
            .ok_or("bad row description")?;
        let name = String::from_utf8_lossy(&body[at..at + end]).into_owned();
        at += end + 1;
        let oid = be32(body, at + 6)?;
        at += 18;
        cols.push((name, oid));
    }
    Ok(cols)
}

fn data_row(body: &[u8], columns: &[(String, u32)]) -> Result<Map<String, Value>, String> {
    let n = be16(body, 0)? as usize;
    let mut at = 2;
    let mut row = Map::new();
    for i in 0..n {
        let len = be32(body, at)? as i32;
        at += 4;
        let (name, oid) = columns.get(i).ok_or("more values than columns")?;
        let value = if len < 0 {
            Value::Null
        } else {
            let raw = body
                .get(at..at + len as usize)
                .ok_or("data row shorter than its lengths")?;
            at += len as usize;
            let text = String::from_utf8_lossy(raw).into_owned();
            match oid {
                // int2, int4, int8
                21 | 23 | 20 => text.parse::<i64>().map_or(Value::String(text), Value::from),
                _ => Value::String(text),
            }
        };
        row.insert(name.clone(), value);
    }
    Ok(row)
}

fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| "message too short".into())
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "message too short".into())
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn cstr_vec(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    cstr(&mut v, s);
    v
}

/// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it: the user name comes from the
/// start-up message, so the client sends an empty one; no channel binding (`n,,`).
struct Scram {
    password: String,
    nonce: String,
    /// client-first-bare, server-first and client-final-without-proof, once known.
    auth_message: String,
    salted: Vec<u8>,
}

impl Scram {
    fn new(password: &str) -> Scram {
        Scram {
            password: password.to_string(),
            nonce: base64::encode(&random_bytes(18)),
            auth_message: String::new(),
            salted: Vec::new(),
        }
    }

    fn client_first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let attr = |k: &str| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .ok_or_else(|| format!("SCRAM server-first lacks `{k}`"))
        };
        let nonce = attr("r")?;
        if !nonce.starts_with(&self.nonce) {
            return Err("SCRAM server nonce does not extend ours".into());
        }
        let salt = base64::decode(attr("s")?).ok_or("SCRAM salt is not base64")?;
        let iterations: u32 = attr("i")?
            .parse()
            .map_err(|_| "SCRAM iteration count is not a number")?;
        if iterations == 0 || iterations > 1_000_000 {
            return Err(format!("SCRAM iteration count {iterations} out of range"));
        }
        self.salted = pbkdf2_sha256(self.password.as_bytes(), &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("n=,r={},{server_first},{without_proof}", self.nonce);
        let client_key = hmac(&self.salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let signature = hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        Ok(format!("{without_proof},p={}", base64::encode(&proof)))
    }

    /// The server proves it knows the password too.
    fn verify_server(&self, server_final: &str) -> Result<(), String> {
        let v = server_final
            .strip_prefix("v=")
            .ok_or_else(|| format!("SCRAM server-final: {server_final}"))?;
        let server_key = hmac(&self.salted, b"Server Key");
        let expected = hmac(&server_key, self.auth_message.as_bytes());
        if base64::decode(v.trim_end_matches('\0')).as_deref() == Some(&expected[..]) {
            Ok(())
        } else {
            Err("SCRAM server signature does not match: not the server we trust".into())
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block (RFC 8018), all SCRAM-SHA-256 needs.
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(&u) {
            *o ^= x;
        }
    }
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_rfc7914_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, first 32 bytes.
        assert_eq!(
            hex(&pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn scram_matches_rfc7677_example() {
        // RFC 7677 §3, with the user name PostgreSQL leaves empty put back in the message.
        let mut s = Scram::new("pencil");
        s.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.client_final(server_first).unwrap();
        // Recompute with the RFC's client-first-bare (n=user) to compare against its proof.
        s.auth_message = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        );
        let client_key = hmac(&s.salted, b"Client Key");
        let sig = hmac(&Sha256::digest(client_key), s.auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        assert_eq!(
            base64::encode(&proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(fin.starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="));
        s.verify_server("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(s.verify_server("v=AAAA").is_err());
    }
}
