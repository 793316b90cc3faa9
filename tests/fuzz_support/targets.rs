//! The fuzz targets: each feeds hostile bytes to one decoder the orchestrator exposes to a
//! peer or a user, with the properties it must keep (beyond not panicking) checked per input.

use super::Target;
use microfaas::drivers::meter::wattsup::{Packets, parse_record};
use microfaas::drivers::qmp::{self, Incoming, QmpEvent};
use microfaas::drivers::snmp;
use microfaas::manifest::{self, validate};
use microfaas::orchestrator::framing;
use microfaas::protocol::{self, FrameReader, ProtocolError};
use std::io::Read;

/// Every target, in the order reports list them.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Manifest),
        Box::new(AgentFrames::new()),
        Box::new(QmpMessages::new()),
        Box::new(SnmpReplies::new()),
        Box::new(WattsUpFrames),
        Box::new(Gateway::new()),
    ]
}

/// A cheap hash of the input, to derive read-chunk sizes that differ per input.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x1000_0000_01b3)
    })
}

// ---------------------------------------------------------------- manifests

/// YAML text → loaded, expanded and validated objects: diagnostics, never a panic.
pub struct Manifest;

impl Target for Manifest {
    fn name(&self) -> &'static str {
        "manifest"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        [
            include_str!("../../examples/reference.yaml"),
            include_str!("../../examples/quickstart.yaml"),
            include_str!("../../examples/ci-services.yaml"),
            include_str!("../../manifests/beaglebone-rack.yaml"),
            include_str!("../../manifests/vm-host.yaml"),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    fn max_len(&self) -> usize {
        64 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(input).into_owned();
        // YAML breaks lines at CR as well as LF (a bare CR is a line of its own there).
        let breaks = text.bytes().filter(|b| matches!(b, b'\n' | b'\r')).count();
        let lines = u32::try_from(breaks + 1).unwrap_or(u32::MAX);
        let loaded =
            manifest::validate_text("fuzz.yaml", text, validate::Options { fs_checks: false });
        for d in &loaded.diagnostics {
            if d.pos.line < 1 || d.pos.line > lines || d.message.is_empty() {
                return Err(format!("diagnostic without a usable position: {d:?}"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- agent protocol frames

/// Hands out its bytes in chunks of varying size, as a socket does.
struct Chunked<'a> {
    data: &'a [u8],
    state: u64,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let want = 1 + (self.state >> 33) as usize % 97;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The newline-delimited JSON frames agents send: the blocking [`FrameReader`] (agent side)
/// with a small cap, and the orchestrator's async reader, both against the same oracle (the
/// lines of the input); every frame then through [`protocol::decode`].
pub struct AgentFrames {
    rt: tokio::runtime::Runtime,
}

/// The cap the blocking reader gets here, so oversized frames are common in the inputs.
const FRAME_CAP: usize = 1024;

impl AgentFrames {
    pub fn new() -> Self {
        AgentFrames {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        }
    }
}

fn check_decoded(line: &[u8]) -> Result<(), String> {
    match protocol::decode(line) {
        Ok(msg) => {
            let frame = protocol::encode(&msg);
            if frame.iter().filter(|&&b| b == b'\n').count() != 1 || frame.last() != Some(&b'\n') {
                return Err(format!("re-encoded frame is not one line: {msg:?}"));
            }
            match protocol::decode(&frame) {
                Ok(again) if again.kind() == msg.kind() => Ok(()),
                other => Err(format!("{msg:?} re-encoded decodes as {other:?}")),
            }
        }
        Err(
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::Truncated(_)
            | ProtocolError::Io(_),
        ) => Err("decode of an in-memory line gave a stream error".into()),
        Err(_) => Ok(()),
    }
}

impl Target for AgentFrames {
    fn name(&self) -> &'static str {
        "agent-frames"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let session = concat!(
            r#"{"type":"hello","worker":"vm-0","agentVersion":"0.1.0","protocolVersion":1,"uptimeMs":812,"capabilities":{"runtimes":["builtin","wasm"],"functions":["float_operations","matmul"],"lifecycle":"warm"}}"#,
            "\n",
            r#"{"type":"challenge","nonce":"0f1e2d3c4b5a69788796a5b4c3d2e1f0"}"#,
            "\n",
            r#"{"type":"auth","proof":"9b3c7a1e2f4d5c6b8a9e0f1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a493"}"#,
            "\n",
            r#"{"type":"authOk","heartbeatMs":2000}"#,
            "\n",
            r#"{"type":"heartbeat","seq":7}"#,
            "\n",
        );
        let invoke = concat!(
            r#"{"type":"invoke","id":"r1-s3-a1","function":"fn","runtime":"wasm","handler":"","input":{"n":[1,2.5,"x",null,true]},"deadlineMs":30000,"services":{"redis":{"name":"accounts","protocol":"redis","address":"10.0.2.101:6379","password":"pw"}},"code":{"module":"AGFzbQEAAAA=","sha256":"93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476","memoryBytes":33554432,"fuel":1000,"env":{"A":"b"},"args":["-x"]}}"#,
            "\n",
            r#"{"type":"result","id":"r1-s3-a1","outcome":{"output":{"sum":3.5}},"execUs":1234}"#,
            "\n",
            r#"{"type":"result","id":"r1-s3-a2","outcome":{"error":{"kind":"timeout","message":"deadline"}},"execUs":0}"#,
            "\r\n",
            r#"{"type":"next"}"#,
            "\n",
            r#"{"type":"poweroff"}"#,
            "\n",
            r#"{"type":"denied","reason":"authentication failed"}"#,
            "\n",
            r#"{"type":"error","message":"bye"}"#,
        );
        vec![session.as_bytes().to_vec(), invoke.as_bytes().to_vec()]
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        // Oracle: the complete lines, then what is left after the last newline.
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let rest = lines.pop().unwrap_or_default();

        let mut r = FrameReader::with_max(
            Chunked {
                data: input,
                state: hash(input),
            },
            FRAME_CAP,
        );
        let mut stopped = false;
        for line in &lines {
            match r.read_frame() {
                Ok(Some(f)) if line.len() <= FRAME_CAP && f == *line => check_decoded(&f)?,
                Err(ProtocolError::FrameTooLarge { .. }) if line.len() > FRAME_CAP => {
                    stopped = true;
                    break;
                }
                other => {
                    return Err(format!(
                        "FrameReader: for a {}-byte line got {other:?}",
                        line.len()
                    ));
                }
            }
        }
        if !stopped {
            match (r.read_frame(), rest.len()) {
                (Ok(None), 0) => {}
                (Err(ProtocolError::Truncated(n)), len) if n == len && len <= FRAME_CAP => {}
                (Err(ProtocolError::FrameTooLarge { .. }), len) if len > FRAME_CAP => {}
                (other, len) => {
                    return Err(format!(
                        "FrameReader: {len} bytes after the last newline gave {other:?}"
                    ));
                }
            }
        }

        // The orchestrator's async reader, through a tiny buffer so lines straddle reads.
        let cap = 1 + (hash(input) % 13) as usize;
        self.rt.block_on(async {
            let mut r = tokio::io::BufReader::with_capacity(cap, input);
            for line in &lines {
                let got = framing::read_message(&mut r).await;
                let want = protocol::decode(line);
                let same = match (&got, &want) {
                    (Ok(Some(a)), Ok(b)) => a == b,
                    (Err(a), Err(b)) => a.to_string() == b.to_string(),
                    _ => false,
                };
                if !same {
                    return Err(format!("async reader gave {got:?}, decode gave {want:?}"));
                }
            }
            match framing::read_message(&mut r).await {
                Ok(None) if rest.is_empty() => Ok(()),
                Err(ProtocolError::Truncated(n)) if n == rest.len() && n > 0 => Ok(()),
                other => Err(format!("async reader at the end: {other:?}")),
            }
        })
    }
}

// ---------------------------------------------------------------- QMP

/// What QEMU sends on the monitor socket, through the client's line reader and classifier.
pub struct QmpMessages {
    rt: tokio::runtime::Runtime,
}

impl QmpMessages {
    pub fn new() -> Self {
        QmpMessages {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        }
    }
}

impl Target for QmpMessages {
    fn name(&self) -> &'static str {
        "qmp"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let s = concat!(
            r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-1~bpo12+1"}, "capabilities": ["oob"]}}"#,
            "\r\n",
            r#"{"return": {}, "id": 1}"#,
            "\r\n",
            r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 2}"#,
            "\r\n",
            r#"{"timestamp": {"seconds": 1733520000, "microseconds": 123456}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#,
            "\r\n",
            r#"{"timestamp": {"seconds": 1733520001, "microseconds": 1}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#,
            "\r\n",
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#,
            "\r\n",
            r#"{"error": {"class": "GenericError", "desc": "Invalid parameter 'x'"}, "id": 3}"#,
            "\r\n",
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "NIC_RX_FILTER_CHANGED", "data": {"name": "n0", "path": "/machine/peripheral/n0/virtio-backend"}}"#,
            "\r\n",
        );
        vec![s.as_bytes().to_vec()]
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let newlines = input.iter().filter(|&&b| b == b'\n').count();
        let cap = 1 + (hash(input) % 17) as usize;
        self.rt.block_on(async {
            let mut r = tokio::io::BufReader::with_capacity(cap, input);
            let mut n = 0;
            loop {
                let message = match qmp::read_message(&mut r).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    // Only a message over MAX_MESSAGE may end the stream with an error.
                    Err(e) => return Err(format!("read_message on a small input: {e}")),
                };
                n += 1;
                if n > newlines {
                    return Err(format!("{n} messages from {newlines} lines"));
                }
                match qmp::classify(&message) {
                    Incoming::Reply { id, .. } => {
                        if message.get("id").and_then(|v| v.as_u64()) != Some(id) {
                            return Err(format!("reply id {id} is not the message's: {message}"));
                        }
                    }
                    Incoming::Event(QmpEvent::Shutdown { .. }) => {
                        if message.get("event").and_then(|v| v.as_str()) != Some("SHUTDOWN") {
                            return Err(format!("not a SHUTDOWN: {message}"));
                        }
                    }
                    Incoming::Event(_) | Incoming::Ignored(_) => {}
                }
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- SNMP

/// SNMP response datagrams, through snmp2's parser and the session's conversion (v1/v2c),
/// and the SNMPv3 path with an authPriv user (HMAC check and decryption of hostile bytes).
pub struct SnmpReplies {
    security: snmp2::v3::Security,
}

impl SnmpReplies {
    pub fn new() -> Self {
        let security = snmp2::v3::Security::new(b"fuzz", b"auth-password")
            .with_auth_protocol(snmp2::v3::AuthProtocol::Sha1)
            .with_auth(snmp2::v3::Auth::AuthPriv {
                cipher: snmp2::v3::Cipher::Aes128,
                privacy_password: b"privacy-password".to_vec(),
            });
        SnmpReplies { security }
    }
}

/// BER: tag, definite length, content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 128 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn ber_int(tag: u8, n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(tag, &bytes[start..])
}

fn ber_oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut groups = vec![(a & 0x7f) as u8];
        let mut rest = a >> 7;
        while rest > 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        body.extend(groups.into_iter().rev());
    }
    tlv(0x06, &body)
}

/// A v2c GetResponse carrying one varbind of every type the driver reads.
fn snmp_response(req_id: i64, error_status: i64, error_index: i64) -> Vec<u8> {
    let ifc = |col: u64, index: u64| vec![1, 3, 6, 1, 2, 1, 2, 2, 1, col, index];
    let varbinds: Vec<(Vec<u64>, Vec<u8>)> = vec![
        (vec![1, 3, 6, 1, 2, 1, 1, 5, 0], tlv(0x04, b"tor-1")),
        (vec![1, 3, 6, 1, 2, 1, 1, 3, 0], ber_int(0x43, 123_456)),
        (ifc(7, 2), ber_int(0x02, 1)),
        (
            vec![1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15, 2],
            ber_int(0x42, 1000),
        ),
        (ifc(5, 2), ber_int(0x46, 10_000_000_000)),
        (ifc(2, 2), ber_oid(&[1, 3, 6, 1, 4, 1, 8072, 3, 2, 10])),
        (ifc(8, 2), tlv(0x05, b"")),
        (ifc(8, 3), tlv(0x81, b"")),
        (ifc(8, 4), tlv(0x82, b"")),
    ];
    let list: Vec<u8> = varbinds
        .iter()
        .flat_map(|(oid, v)| tlv(0x30, &[ber_oid(oid), v.clone()].concat()))
        .collect();
    let pdu = [
        ber_int(0x02, req_id),
        ber_int(0x02, error_status),
        ber_int(0x02, error_index),
        tlv(0x30, &list),
    ]
    .concat();
    tlv(
        0x30,
        &[ber_int(0x02, 1), tlv(0x04, b"public"), tlv(0xa2, &pdu)].concat(),
    )
}

impl Target for SnmpReplies {
    fn name(&self) -> &'static str {
        "snmp"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            snmp_response(0x1234_5678, 0, 0),
            snmp_response(1, 5, 2),
            snmp_response(-1, 1, 0),
        ]
    }

    fn max_len(&self) -> usize {
        // The largest UDP payload.
        65_507
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let check = |r: &snmp::Reply| -> Result<(), String> {
            if r.varbinds.len() > input.len() {
                return Err(format!(
                    "{} varbinds from {} bytes",
                    r.varbinds.len(),
                    input.len()
                ));
            }
            for (oid, v) in &r.varbinds {
                let _ = (snmp::dotted(oid), v.as_text(), v.as_u64());
            }
            Ok(())
        };
        if let Ok(r) = snmp::decode_reply(input) {
            check(&r)?;
        }
        if let Ok(r) = snmp::decode_reply_v3(input, &mut self.security) {
            check(&r)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- WattsUp

/// Bytes from a WattsUp's serial line: packet framing and record parsing.
pub struct WattsUpFrames;

impl Target for WattsUpFrames {
    fn name(&self) -> &'static str {
        "wattsup"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            b"#d,-,18,1234,1201,102,5678,0,0,0,2000,1210,150,1000,1190,90,95,100,0,600,1300;\r\n\
              #d,-,18,17,1199,_,_,_,_,_,_,_,_,_,_,_,_,_,_,_,_;\r\n"
                .to_vec(),
            b"noise#l,-,1,0;\r\n#d,-,18,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0;\r\n#s,-,3,1,2,3;"
                .to_vec(),
        ]
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let mut packets = Packets::default();
        let mut out = Vec::new();
        let step = 1 + (hash(input) % 64) as usize;
        for chunk in input.chunks(step) {
            out.extend(packets.push(chunk));
        }
        for p in &out {
            // MAX_PACKET (512) bytes and the `;`; invalid UTF-8 became one char per byte.
            if !p.starts_with('#') || !p.ends_with(';') || p.chars().count() > 513 {
                return Err(format!("bad packet boundaries: {p:?}"));
            }
            if let Ok(r) = parse_record(p)
                && !r.watts.is_finite()
            {
                return Err(format!("non-finite watts from {p:?}"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- gateway

mod gateway;
pub use gateway::Gateway;
