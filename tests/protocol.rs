//! The wire protocol: round trips of every message, the pinned wire shape, hostile input
//! into the decoder and the frame reader, and the HMAC challenge/response.

use std::io::{self, Read};

use microfaas::protocol::{
    self, Auth, AuthOk, Capabilities, Challenge, Denied, ErrorKind, ErrorMessage, FrameReader,
    Heartbeat, Hello, Invoke, InvokeError, InvokeResult, Lifecycle, MAX_FRAME, Message, Outcome,
    ProtocolError, auth,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Dyadic fractions print and parse back exactly without serde_json's float_roundtrip.
        (any::<i32>(), 0u32..20)
            .prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::Error),
        Just(ErrorKind::Timeout),
        Just(ErrorKind::UnknownFunction),
        Just(ErrorKind::UnsupportedRuntime),
        Just(ErrorKind::BadInput),
        Just(ErrorKind::Unknown),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let s = ".*";
    prop_oneof![
        (
            s,
            s,
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(s, 0..4),
            prop::collection::vec(s, 0..12),
            any::<bool>()
        )
            .prop_map(
                |(
                    worker,
                    agent_version,
                    protocol_version,
                    uptime_ms,
                    runtimes,
                    functions,
                    warm,
                )| {
                    Message::Hello(Hello {
                        worker,
                        agent_version,
                        protocol_version,
                        uptime_ms,
                        capabilities: Capabilities {
                            runtimes,
                            functions,
                            lifecycle: if warm {
                                Lifecycle::Warm
                            } else {
                                Lifecycle::OneShot
                            },
                        },
                        start: None,
                    })
                }
            ),
        s.prop_map(|nonce| Message::Challenge(Challenge { nonce })),
        s.prop_map(|proof| Message::Auth(Auth { proof })),
        prop::option::of(any::<u64>())
            .prop_map(|heartbeat_ms| Message::AuthOk(AuthOk { heartbeat_ms })),
        s.prop_map(|reason| Message::Denied(Denied { reason })),
        (s, s, s, s, arb_value(), any::<u64>()).prop_map(
            |(id, function, runtime, handler, input, deadline_ms)| {
                Message::Invoke(Invoke {
                    id,
                    function,
                    runtime,
                    handler,
                    input,
                    deadline_ms,
                    services: Default::default(),
                    code: None,
                })
            }
        ),
        (s, arb_value(), any::<u64>()).prop_map(|(id, v, exec_us)| {
            Message::Result(InvokeResult {
                id,
                outcome: Outcome::Output(v),
                exec_us,
            })
        }),
        (s, arb_kind(), s, any::<u64>()).prop_map(|(id, kind, message, exec_us)| {
            Message::Result(InvokeResult {
                id,
                outcome: Outcome::Error(InvokeError { kind, message }),
                exec_us,
            })
        }),
        Just(Message::Next),
        Just(Message::Idle),
        Just(Message::Poweroff),
        Just(Message::Reboot),
        any::<u64>().prop_map(|seq| Message::Heartbeat(Heartbeat { seq })),
        s.prop_map(|message| Message::Error(ErrorMessage { message })),
    ]
}

/// Hands out the data in the given chunk sizes, to exercise frames split across reads.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips(msg in arb_message()) {
        let frame = protocol::encode(&msg);
        prop_assert_eq!(frame.last(), Some(&b'\n'));
        prop_assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(protocol::decode(&frame).unwrap(), msg.clone());
        let v: Value = serde_json::from_slice(&frame).unwrap();
        prop_assert_eq!(v["type"].as_str(), Some(msg.kind()));
    }

    #[test]
    fn frame_reader_reassembles_split_frames(
        msgs in prop::collection::vec(arb_message(), 1..8),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        let data: Vec<u8> = msgs.iter().flat_map(protocol::encode).collect();
        let mut r = FrameReader::new(Chunked { data, pos: 0, sizes, turn: 0 });
        for m in &msgs {
            prop_assert_eq!(r.read_message().unwrap(), Some(m.clone()));
        }
        prop_assert!(r.read_message().unwrap().is_none());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = protocol::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_json_shaped_garbage(
        kind in prop::sample::select(protocol::MESSAGE_TYPES.to_vec()),
        extra in prop::collection::btree_map("[a-zA-Z]{1,12}", arb_value(), 0..6),
    ) {
        let mut obj: serde_json::Map<String, Value> = extra.into_iter().collect();
        obj.insert("type".into(), json!(kind));
        let _ = protocol::decode(Value::Object(obj).to_string().as_bytes());
    }

    #[test]
    fn frame_reader_never_panics_and_stays_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        sizes in prop::collection::vec(1usize..300, 1..4),
    ) {
        let mut r = FrameReader::with_max(Chunked { data: bytes, pos: 0, sizes, turn: 0 }, 64);
        for _ in 0..2100 {
            match r.read_frame() {
                Ok(Some(line)) => prop_assert!(line.len() <= 64),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn wire_shape_is_pinned() {
    let invoke = Message::Invoke(Invoke {
        id: "a1b2c3".into(),
        function: "sha".into(),
        runtime: "builtin".into(),
        handler: "cascading_sha256".into(),
        input: json!({"rounds": 3}),
        deadline_ms: 500,
        services: Default::default(),
        code: None,
    });
    let v: Value = serde_json::from_slice(&protocol::encode(&invoke)).unwrap();
    assert_eq!(
        v,
        json!({"type": "invoke", "id": "a1b2c3", "function": "sha", "runtime": "builtin",
               "handler": "cascading_sha256", "input": {"rounds": 3}, "deadlineMs": 500})
    );
    let result = Message::Result(InvokeResult {
        id: "x".into(),
        outcome: Outcome::Error(InvokeError {
            kind: ErrorKind::UnknownFunction,
            message: "m".into(),
        }),
        exec_us: 0,
    });
    let v: Value = serde_json::from_slice(&protocol::encode(&result)).unwrap();
    assert_eq!(
        v,
        json!({"type": "result", "id": "x", "execUs": 0,
               "outcome": {"error": {"kind": "unknownFunction", "message": "m"}}})
    );
    assert_eq!(
        protocol::encode(&Message::AuthOk(AuthOk::default())),
        b"{\"type\":\"authOk\"}\n"
    );
    assert_eq!(
        protocol::encode(&Message::Poweroff),
        b"{\"type\":\"poweroff\"}\n"
    );
    let hello = protocol::decode(
        br#"{"type":"hello","worker":"w","agentVersion":"0","protocolVersion":1,"uptimeMs":5,
            "capabilities":{"runtimes":["builtin"],"functions":[],"lifecycle":"warm"},"future":1}"#,
    )
    .unwrap();
    assert!(matches!(hello, Message::Hello(h) if h.capabilities.lifecycle == Lifecycle::Warm));
}

#[test]
fn garbage_is_a_clean_error() {
    use ProtocolError::*;
    type Check = fn(&ProtocolError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"", |e| matches!(e, Malformed(_))),
        (b"hello", |e| matches!(e, Malformed(_))),
        (b"\xff\xfe{}", |e| matches!(e, Malformed(_))),
        (b"{\"type\":\"next\"} trailing", |e| {
            matches!(e, Malformed(_))
        }),
        (b"[1,2]", |e| matches!(e, MissingType)),
        (b"{\"type\":7}", |e| matches!(e, MissingType)),
        (b"{\"kind\":\"next\"}", |e| matches!(e, MissingType)),
        (
            b"{\"type\":\"launchMissiles\"}",
            |e| matches!(e, UnknownType(t) if t == "launchMissiles"),
        ),
        (
            b"{\"type\":\"invoke\",\"id\":1}",
            |e| matches!(e, Invalid { kind, .. } if kind == "invoke"),
        ),
        (b"{\"type\":\"heartbeat\",\"seq\":-1}", |e| {
            matches!(e, Invalid { .. })
        }),
    ];
    for (bytes, ok) in cases {
        let err = protocol::decode(bytes).expect_err("must not decode");
        assert!(
            ok(&err),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Deep nesting hits serde_json's recursion limit instead of the stack.
    let deep = format!("{{\"type\":\"error\",\"message\":{}}}", "[".repeat(100_000));
    assert!(protocol::decode(deep.as_bytes()).is_err());
    // Newline variants are accepted.
    assert_eq!(
        protocol::decode(b"{\"type\":\"idle\"}\r\n").unwrap(),
        Message::Idle
    );
}

/// An endless stream without a newline, counting what was read from it.
struct Endless {
    read: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(b'a');
        self.read += buf.len();
        Ok(buf.len())
    }
}

#[test]
fn oversized_frame_is_an_error_without_unbounded_reading() {
    let mut r = FrameReader::new(Endless { read: 0 });
    let err = r.read_frame().expect_err("too large");
    assert!(matches!(err, ProtocolError::FrameTooLarge { max } if max == MAX_FRAME));
    assert!(
        r.get_ref().read <= MAX_FRAME + 1,
        "read {} bytes",
        r.get_ref().read
    );

    // The limit is exact: max bytes pass, max + 1 do not (newline not counted).
    let mut data = vec![b'x'; 100];
    data.push(b'\n');
    data.extend(vec![b'y'; 101]);
    data.push(b'\n');
    let mut r = FrameReader::with_max(io::Cursor::new(data), 100);
    assert_eq!(r.read_frame().unwrap().unwrap().len(), 100);
    assert!(matches!(
        r.read_frame(),
        Err(ProtocolError::FrameTooLarge { max: 100 })
    ));

    // decode applies the same limit to a frame it is handed whole.
    let mut big = br#"{"type":"error","message":""#.to_vec();
    big.extend(vec![b'z'; MAX_FRAME]);
    big.extend(b"\"}");
    assert!(matches!(
        protocol::decode(&big),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}

#[test]
fn truncated_frame_at_end_of_stream_is_an_error() {
    let mut r = FrameReader::new(io::Cursor::new(b"{\"type\":\"next\"}\n{\"type\":".to_vec()));
    assert_eq!(r.read_message().unwrap(), Some(Message::Next));
    assert!(matches!(r.read_message(), Err(ProtocolError::Truncated(8))));
}

/// Times out once in the middle of a frame, like a socket with a read timeout.
struct Stalling {
    parts: Vec<io::Result<Vec<u8>>>,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.parts.is_empty() {
            return Ok(0);
        }
        let part = self.parts.remove(0)?;
        buf[..part.len()].copy_from_slice(&part);
        Ok(part.len())
    }
}

#[test]
fn a_read_timeout_keeps_the_partial_frame() {
    let mut r = FrameReader::new(Stalling {
        parts: vec![
            Ok(b"{\"type\":\"hea".to_vec()),
            Err(io::ErrorKind::WouldBlock.into()),
            Ok(b"rtbeat\",\"seq\":4}\n".to_vec()),
        ],
    });
    let err = r.read_message().expect_err("stalls");
    assert!(err.is_timeout());
    assert_eq!(
        r.read_message().unwrap(),
        Some(Message::Heartbeat(Heartbeat { seq: 4 }))
    );
    assert!(!ProtocolError::Truncated(1).is_timeout());
}

#[test]
fn auth_proofs() {
    // RFC 4231 test case 2.
    assert_eq!(
        auth::prove(b"Jefe", "what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let proof = auth::prove(b"cluster-token", "nonce-1");
    assert!(auth::verify(b"cluster-token", "nonce-1", &proof));
    assert!(auth::verify(
        b"cluster-token",
        "nonce-1",
        &proof.to_uppercase()
    ));
    assert!(!auth::verify(b"cluster-tokeN", "nonce-1", &proof));
    assert!(!auth::verify(b"cluster-token", "nonce-2", &proof));
    assert!(!auth::verify(b"cluster-token", "nonce-1", &proof[..62]));
    assert!(!auth::verify(b"cluster-token", "nonce-1", ""));
    assert!(!auth::verify(b"cluster-token", "nonce-1", &"zz".repeat(32)));
    let mut flipped = proof.into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    assert!(!auth::verify(
        b"cluster-token",
        "nonce-1",
        std::str::from_utf8(&flipped).unwrap()
    ));
}

#[test]
fn lifecycle_parses_from_the_command_line_forms() {
    assert_eq!("oneshot".parse::<Lifecycle>(), Ok(Lifecycle::OneShot));
    assert_eq!("OneShot".parse::<Lifecycle>(), Ok(Lifecycle::OneShot));
    assert_eq!("warm".parse::<Lifecycle>(), Ok(Lifecycle::Warm));
    assert!("tepid".parse::<Lifecycle>().is_err());
}

#[test]
fn service_bindings_travel_with_the_invoke() {
    use microfaas::protocol::ServiceBinding;
    let mut services = std::collections::BTreeMap::new();
    services.insert(
        "redis".to_string(),
        ServiceBinding {
            name: "accounts".into(),
            protocol: "redis".into(),
            address: "10.0.2.101:6379".into(),
            password: Some("pw".into()),
            ..Default::default()
        },
    );
    let invoke = Message::Invoke(Invoke {
        id: "a".into(),
        function: "f".into(),
        runtime: "builtin".into(),
        handler: "redis_insert".into(),
        input: json!({}),
        deadline_ms: 1,
        services,
        code: None,
    });
    let bytes = protocol::encode(&invoke);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["services"],
        json!({"redis": {"name": "accounts", "protocol": "redis", "address": "10.0.2.101:6379",
                         "password": "pw"}})
    );
    assert_eq!(protocol::decode(&bytes).unwrap(), invoke);
    // The Debug form (what a log line would show) never carries the credential.
    assert!(!format!("{invoke:?}").contains("\"pw\""));
}
