//! An MQTT 3.1.1 client, enough for a work queue: CONNECT (with or without a persistent
//! session), PUBLISH and SUBSCRIBE at QoS 1, acknowledging what the broker delivers.
//!
//! A consumer is a persistent session (`cleanSession = 0`, client id = consumer id): the
//! broker keeps QoS 1 messages for it while it is disconnected, so consecutive invocations
//! drain the queue the way a Kafka consumer group's fetches do.

use std::time::Duration;

use super::Conn;
use crate::protocol::ServiceBinding;

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;

pub struct Mqtt {
    conn: Conn,
    next_id: u16,
}

/// A message the broker delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Mqtt {
    /// Connects as `client_id`; `persistent`: keep the session (and its queued messages)
    /// across connections.
    pub fn open(
        conn: Conn,
        b: &ServiceBinding,
        client_id: &str,
        persistent: bool,
    ) -> Result<Mqtt, String> {
        let mut m = Mqtt { conn, next_id: 1 };
        let mut flags = if persistent { 0 } else { 0x02 };
        let mut payload = Vec::new();
        string(&mut payload, client_id.as_bytes());
        if let Some(user) = &b.user {
            flags |= 0x80;
            string(&mut payload, user.as_bytes());
            if let Some(pw) = &b.password {
                flags |= 0x40;
                string(&mut payload, pw.as_bytes());
            }
        }
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, flags, 0, 60]);
        body.extend_from_slice(&payload);
        m.send(0x10, &body)?;
        let (kind, ack) = m.packet()?;
        if kind >> 4 != 2 || ack.len() < 2 {
            return Err("expected CONNACK".into());
        }
        match ack[1] {
            0 => Ok(m),
            4 | 5 => Err(format!(
                "connection refused: not authorised (code {})",
                ack[1]
            )),
            code => Err(format!("connection refused (code {code})")),
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let id = self.packet_id();
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        self.send(0x32, &body)?;
        loop {
            let (kind, ack) = self.packet()?;
            if kind >> 4 == 4 && ack.get(..2) == Some(&id.to_be_bytes()[..]) {
                return Ok(());
            }
        }
    }

    /// Subscribes to `topic` at QoS 1; messages delivered meanwhile go to `got`.
    pub fn subscribe(&mut self, topic: &str, got: &mut Vec<Delivery>) -> Result<(), String> {
        let id = self.packet_id();
        let mut body = id.to_be_bytes().to_vec();
        string(&mut body, topic.as_bytes());
        body.push(1);
        self.send(0x82, &body)?;
        loop {
            let (kind, data) = self.packet()?;
            match kind >> 4 {
                9 if data.get(..2) == Some(&id.to_be_bytes()[..]) => {
                    return match data.get(2) {
                        Some(0x80) | None => Err(format!("subscription to {topic:?} refused")),
                        Some(_) => Ok(()),
                    };
                }
                3 => got.push(self.delivered(kind, data)?),
                _ => {}
            }
        }
    }

    /// Collects deliveries until none arrives for `quiet` or `max` were collected.
    pub fn drain(
        &mut self,
        quiet: Duration,
        max: usize,
        got: &mut Vec<Delivery>,
    ) -> Result<(), String> {
        while got.len() < max {
            let Some(first) = self.conn.poll_u8(quiet)? else {
                return Ok(());
            };
            let (kind, data) = self.packet_after(first)?;
            if kind >> 4 == 3 {
                got.push(self.delivered(kind, data)?);
            }
        }
        Ok(())
    }

    /// Ends the session cleanly (the broker then forgets nothing it should keep).
    pub fn disconnect(mut self) {
        let _ = self.send(0xE0, &[]);
    }

    fn delivered(&mut self, kind: u8, data: Vec<u8>) -> Result<Delivery, String> {
        let qos = (kind >> 1) & 3;
        let tlen = usize::from(u16::from_be_bytes(
            data.get(..2)
                .ok_or("short PUBLISH")?
                .try_into()
                .map_err(|_| "short PUBLISH")?,
        ));
        let topic = data.get(2..2 + tlen).ok_or("short PUBLISH")?;
        let mut at = 2 + tlen;
        if qos > 0 {
            let id = data.get(at..at + 2).ok_or("short PUBLISH")?.to_vec();
            at += 2;
            // QoS 1 is acknowledged; the broker never sends us QoS 2 (we subscribe at 1).
            self.send(0x40, &id)?;
        }
        Ok(Delivery {
            topic: String::from_utf8_lossy(topic).into_owned(),
            payload: data[at..].to_vec(),
        })
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(&mut self, header: u8, body: &[u8]) -> Result<(), String> {
        let mut out = vec![header];
        let mut n = body.len();
        loop {
            let mut byte = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        self.conn.write_all(&out)
    }

    fn packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        let first = self.conn.read_u8()?;
        self.packet_after(first)
    }

    fn packet_after(&mut self, kind: u8) -> Result<(u8, Vec<u8>), String> {
        let mut len = 0usize;
        for shift in 0..4 {
            let b = self.conn.read_u8()?;
            len |= usize::from(b & 0x7f) << (7 * shift);
            if b & 0x80 == 0 {
                if len > MAX_PACKET {
                    return Err(format!("packet of {len} bytes is too large"));
                }
                return Ok((kind, self.conn.read_vec(len)?));
            }
        }
        Err("malformed packet length".into())
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}
