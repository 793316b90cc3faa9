//! `cargo bench --bench etcd_tls`: what TLS costs the etcd store, on a 1-member etcd on
//! loopback started for the run, once over plain HTTP and once over TLS with a client
//! certificate (certificates made by openssl): opening the store (connect, handshake, one
//! read), reads of one object and writes (apply of one object) on one kept-alive
//! connection. One run; figures are medians / rates of that run.

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use std::time::{Duration, Instant};

const OPENS: usize = 50;
const READS: usize = 2000;
const WRITES: usize = 300;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(cluster: &etcd::EtcdCluster, label: &str) {
    let loc = cluster.location("bench");
    let opens: Vec<Duration> = (0..OPENS)
        .map(|_| {
            let t = Instant::now();
            let s = Store::open_etcd(&loc).expect("open");
            let d = t.elapsed();
            drop(s);
            d
        })
        .collect();
    let mut s = Store::open_etcd(&loc).expect("open");
    let t = Instant::now();
    for i in 0..WRITES {
        let o = DesiredObject::new(
            Kind::Function,
            "f",
            serde_json::json!({"runtime": "exec", "command": [i.to_string()]}),
        );
        s.apply(&[o], None, false, false).expect("apply");
    }
    let writes = t.elapsed();
    let t = Instant::now();
    for _ in 0..READS {
        s.get(Kind::Function, "f").expect("get").expect("f");
    }
    let reads = t.elapsed();
    println!(
        "| {label} | {:.2} ms | {:.0} reads/s ({:.3} ms each) | {:.0} applies/s ({:.2} ms each) |",
        median(opens).as_secs_f64() * 1e3,
        READS as f64 / reads.as_secs_f64(),
        reads.as_secs_f64() * 1e3 / READS as f64,
        WRITES as f64 / writes.as_secs_f64(),
        writes.as_secs_f64() * 1e3 / WRITES as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    println!("| transport | open (median of {OPENS}) | {READS} reads | {WRITES} applies |");
    println!("|---|---|---|---|");
    run(&etcd::EtcdCluster::start(1), "plain HTTP");
    run(
        &etcd::EtcdCluster::start_tls(
            1,
            etcd::TlsOptions {
                client_cert_auth: true,
            },
        ),
        "TLS, client certificate",
    );
}
