//! The etcd store over TLS against a real etcd serving TLS on loopback (certificates made by
//! `openssl` in the test's temp dir): the lease calls and the watch work over it, and every
//! way TLS can go wrong is an error naming the endpoint and the reason, promptly, with
//! nothing written: a CA that did not sign the member's certificate, a member certificate
//! that does not name the host dialled, a client certificate missing or from another CA, a
//! plain-HTTP member dialled with TLS and a TLS member dialled without. (The conformance
//! suite over TLS is in tests/store_conformance.rs.)

mod support;

use microfaas::manifest::Kind;
use microfaas::store::etcd::lease::{Holder, Leases};
use microfaas::store::{ClientCert, Store, TlsFiles};
use std::time::{Duration, Instant};
use support::etcd::{EtcdCluster, TlsOptions};

fn open_err(loc: &microfaas::store::EtcdLocation) -> String {
    match Store::open_etcd(loc) {
        Ok(_) => panic!("{} opened", loc.url()),
        Err(e) => e.to_string(),
    }
}

/// Stores Function `f`: one write.
fn apply_function(s: &mut Store) {
    let f = microfaas::store::DesiredObject::new(
        Kind::Function,
        "f",
        serde_json::json!({"runtime": "exec"}),
    );
    s.apply(&[f], None, false, false).expect("apply");
}

#[track_caller]
fn says(err: &str, wants: &[&str]) {
    for w in wants {
        assert!(err.contains(w), "{w:?} missing in: {err}");
    }
}

#[test]
fn tls_failures_name_the_endpoint_and_the_reason_and_write_nothing() {
    let cluster = EtcdCluster::start_tls(
        1,
        TlsOptions {
            client_cert_auth: true,
        },
    );
    let pki = cluster.pki().expect("tls").clone();
    let good = cluster.location("t");
    let endpoint = good.endpoints[0].clone();
    let with = |files: TlsFiles| {
        let mut l = good.clone();
        l.tls = Some(files);
        l
    };
    let client = Some(ClientCert {
        cert: pki.client_cert.clone(),
        key: pki.client_key.clone(),
    });

    // a CA that did not sign the member's certificate
    let e = open_err(&with(TlsFiles {
        ca: pki.other_ca.clone(),
        client: client.clone(),
    }));
    says(
        &e,
        &[
            &endpoint,
            "not signed by the CA",
            &pki.other_ca.display().to_string(),
            "unknown CA",
        ],
    );

    // the member's certificate names 127.0.0.1, not localhost
    let port = endpoint.rsplit_once(':').expect("port").1;
    let mut by_name = good.clone();
    by_name.endpoints = vec![format!("localhost:{port}")];
    let e = open_err(&by_name);
    says(
        &e,
        &[&format!("localhost:{port}"), "not valid for `localhost`"],
    );

    // the members want a client certificate
    let e = open_err(&with(TlsFiles {
        ca: pki.ca.clone(),
        client: None,
    }));
    says(&e, &[&endpoint, "requires a client certificate"]);

    // a client certificate of a CA the members do not trust
    let e = open_err(&with(TlsFiles {
        ca: pki.ca.clone(),
        client: Some(ClientCert {
            cert: pki.other_client_cert.clone(),
            key: pki.other_client_key.clone(),
        }),
    }));
    says(
        &e,
        &[
            &endpoint,
            "refused the client certificate",
            &pki.other_client_cert.display().to_string(),
        ],
    );

    // plain HTTP to the TLS member
    let mut plain = good.clone();
    plain.tls = None;
    let e = open_err(&plain);
    says(
        &e,
        &[&endpoint, "serves TLS but the store speaks plain HTTP"],
    );

    // a key that is not the certificate's: refused before any connection
    let e = open_err(&with(TlsFiles {
        ca: pki.ca.clone(),
        client: Some(ClientCert {
            cert: pki.client_cert.clone(),
            key: pki.other_client_key.clone(),
        }),
    }));
    says(
        &e,
        &["key file", "is not the private key of the certificate"],
    );

    // none of the above wrote anything
    assert_eq!(cluster.keys_under("t/"), 0);
    // and the right files work
    apply_function(&mut Store::open_etcd(&good).expect("open over TLS"));
    assert!(cluster.keys_under("t/") > 0);
}

#[test]
fn a_plain_http_member_dialled_with_tls_is_named_as_such() {
    let plain = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tmp");
    let pki = support::etcd::Pki::make(dir.path(), false);
    let mut loc = plain.location("p");
    loc.tls = Some(pki.files());
    let e = open_err(&loc);
    says(&e, &[&loc.endpoints[0], "speaks plain HTTP, not TLS"]);
    assert_eq!(plain.keys_under("p/"), 0);
}

/// The lease keeper's calls (its own connection) and the change feed (the watch thread's)
/// work over TLS with a client certificate.
#[test]
fn leases_and_the_change_feed_work_over_tls() {
    let cluster = EtcdCluster::start_tls(
        1,
        TlsOptions {
            client_cert_auth: true,
        },
    );
    let loc = cluster.location("l");
    let leases = Leases::new(&loc);
    let lease = leases.grant(30).expect("grant over TLS");
    assert!(leases.keep_alive(lease).expect("keep-alive over TLS"));
    let me = Holder {
        orchestrator: "o-1".into(),
        lease,
    };
    assert_eq!(leases.claim(Kind::Worker, "w", &me).expect("claim"), me);
    let held = leases.holders(Kind::Worker).expect("holders");
    assert_eq!(held.get("w"), Some(&me));
    leases.revoke(lease).expect("revoke");
    assert!(leases.holders(Kind::Worker).expect("holders").is_empty());

    let s = Store::open_etcd(&loc).expect("open");
    let mut feed = s.changes();
    feed.borrow_and_update();
    // a write from another connection is announced on this one's feed
    apply_function(&mut Store::open_etcd(&loc).expect("open"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !feed.has_changed().expect("feed open") {
        assert!(Instant::now() < deadline, "the write was not announced");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.get(Kind::Function, "f").expect("get").is_some());
}

/// A member that accepts the connection and never answers the handshake: the store gives up
/// after its I/O timeout, saying so, instead of hanging.
#[test]
fn a_silent_endpoint_times_out_the_handshake() {
    // Never accepted: the kernel completes the TCP handshake into the backlog, and nobody
    // ever says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    let pki = support::etcd::Pki::make(dir.path(), false);
    let loc = microfaas::store::EtcdLocation {
        endpoints: vec![addr.to_string()],
        prefix: "p".into(),
        tls: Some(pki.files()),
    };
    let e = open_err(&loc);
    says(&e, &[&addr.to_string(), "no TLS handshake within 10s"]);
    drop(listener);
}
