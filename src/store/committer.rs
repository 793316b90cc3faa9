//! Group commit of invocation attempts. One thread takes every record queued since its last
//! commit, writes them in one IMMEDIATE transaction — one fsync under `synchronous=FULL` — and
//! answers each caller only then: an acknowledged record survives a crash, and N callers
//! recording together share one fsync instead of paying N. The engine gives it a connection of
//! its own (`Store::own_connection`): on the engine's, every reconcile and every call's
//! reads waited behind its fsyncs. Under WAL readers go on during a commit; writers (status,
//! events) wait for it in the store's short-sleep busy handler.

use super::{Attempt, Store};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the invocation recorder has stopped")]
    Stopped,
    /// The record was not committed because the store could not write (the message is the
    /// store's error): disk full, I/O. The same record may commit once the store can.
    #[error("{0}")]
    Store(String),
    /// The record itself was refused (a duplicate, a run that does not exist).
    #[error("{0}")]
    Refused(String),
}

impl CommitError {
    fn from_store(e: &super::StoreError) -> CommitError {
        if e.is_refusal() {
            CommitError::Refused(e.to_string())
        } else {
            CommitError::Store(e.to_string())
        }
    }
}

struct Request {
    attempt: Attempt,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// The sending side of the committer thread, which ends when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
    max_batch: Arc<AtomicUsize>,
}

/// No limit: a batch is whatever is queued when the previous commit ends.
pub const UNLIMITED: usize = usize::MAX;

impl Committer {
    /// Starts the committer writing through `store` (others may use it between batches).
    pub fn start(store: Arc<Mutex<Store>>) -> Committer {
        let (tx, rx) = mpsc::channel();
        let max_batch = Arc::new(AtomicUsize::new(UNLIMITED));
        let limit = max_batch.clone();
        std::thread::Builder::new()
            .name("microfaas-commit".into())
            .spawn(move || run(&store, &rx, &limit))
            .map_or_else(
                |e| tracing::error!("cannot start the invocation recorder: {e}"),
                drop,
            );
        Committer { tx, max_batch }
    }

    /// At most `n` records per transaction from now on (1: one fsync per record, the
    /// pre-group-commit behaviour, kept for benchmarks).
    pub fn set_max_batch(&self, n: usize) {
        self.max_batch.store(n.max(1), Ordering::Relaxed);
    }

    /// Records `attempt`; resolves once it is durably committed (or could not be).
    pub async fn record(&self, attempt: Attempt) -> Result<(), CommitError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { attempt, done })
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }
}

fn run(store: &Mutex<Store>, rx: &mpsc::Receiver<Request>, max_batch: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let max = max_batch.load(Ordering::Relaxed).max(1);
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let results = commit(store, &batch);
        for (req, r) in batch.into_iter().zip(results) {
            // A caller that gave up waiting does not make the record any less committed.
            let _ = req.done.send(r);
        }
    }
}

/// One transaction for the batch: each record's own outcome when it committed, the
/// transaction's error for all of them when it did not.
fn commit(store: &Mutex<Store>, batch: &[Request]) -> Vec<Result<(), CommitError>> {
    let attempts: Vec<&Attempt> = batch.iter().map(|r| &r.attempt).collect();
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    match s.record_attempts(&attempts) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| r.map_err(|e| CommitError::from_store(&e)))
            .collect(),
        Err(e) => vec![Err(CommitError::from_store(&e)); batch.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptStatus;

    fn attempt(id: &str, run: i64) -> Attempt {
        Attempt {
            invocation_id: id.into(),
            workload: "wl".into(),
            run,
            generation: 1,
            seq: 1,
            function: "f".into(),
            worker: Some("w".into()),
            attempt: 1,
            queued_ms: 1,
            dispatched_ms: Some(2),
            finished_ms: 3,
            exec_us: Some(1),
            rtt_us: Some(2),
            cold_start_ms: None,
            status: AttemptStatus::Succeeded,
            error: None,
            output_size: None,
            output_sha256: None,
        }
    }

    /// Concurrent callers all get their own answer: committed records are readable through
    /// another connection, and a bad record in a batch fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_commit_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut reader = Store::open(dir.path()).expect("open");
        reader.start_run("wl", 1).expect("run");
        let c = Committer::start(Arc::new(Mutex::new(Store::open(dir.path()).expect("open"))));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let c = c.clone();
            // every 8th names a run that does not exist (foreign key)
            let run = if i % 8 == 7 { 99 } else { 1 };
            tasks.push(tokio::spawn(async move {
                (i, c.record(attempt(&format!("inv-{i}"), run)).await)
            }));
        }
        let mut ok = Vec::new();
        for t in tasks {
            let (i, r) = t.await.expect("task");
            assert_eq!(r.is_ok(), i % 8 != 7, "inv-{i}: {r:?}");
            if r.is_ok() {
                ok.push(format!("inv-{i}"));
            }
        }
        let mut stored: Vec<String> = reader
            .attempts("wl", 1)
            .expect("attempts")
            .into_iter()
            .map(|a| a.invocation_id)
            .collect();
        stored.sort();
        ok.sort();
        assert_eq!(stored, ok);
        // a duplicate is refused (not a store fault: retrying cannot help), the next record
        // still commits
        assert!(matches!(
            c.record(attempt("inv-0", 1)).await,
            Err(CommitError::Refused(_))
        ));
        c.record(attempt("inv-late", 1)).await.expect("late");
        assert_eq!(reader.attempts("wl", 1).expect("attempts").len(), 57);
    }

    /// The energy sampler writes on its own connection while attempts are committed: neither
    /// side sees "database is locked" (both wait their turn within the busy timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_share_the_database_with_a_concurrent_sampler() {
        let dir = tempfile::tempdir().expect("tmp");
        Store::open(dir.path())
            .expect("open")
            .start_run("wl", 1)
            .expect("run");
        let c = Committer::start(Arc::new(Mutex::new(Store::open(dir.path()).expect("open"))));
        let sampler_dir = dir.path().to_path_buf();
        let sampler = std::thread::spawn(move || {
            let mut s = Store::open(&sampler_dir).expect("sampler store");
            for i in 0..200 {
                s.record_sample(&crate::store::energy::Sample {
                    meter: "m".into(),
                    at_ms: i,
                    watts: 1.0,
                    volts: None,
                    amps: None,
                    watt_hours: None,
                })
                .expect("sample");
            }
        });
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.record(attempt(&format!("inv-{i}"), 1)).await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("record");
        }
        sampler.join().expect("sampler");
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.attempts("wl", 1).expect("attempts").len(), 200);
        assert_eq!(s.samples("m", 0, 1_000).expect("samples").len(), 200);
    }

    /// The answer comes after the commit, not before: each acknowledged record is already
    /// visible to another connection (SQLite publishes a WAL commit only after its fsync).
    #[tokio::test]
    async fn an_acknowledged_record_is_already_committed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut reader = Store::open(dir.path()).expect("open");
        reader.start_run("wl", 1).expect("run");
        let c = Committer::start(Arc::new(Mutex::new(Store::open(dir.path()).expect("open"))));
        for i in 0..20 {
            c.record(attempt(&format!("inv-{i}"), 1))
                .await
                .expect("record");
            assert_eq!(reader.attempts("wl", 1).expect("attempts").len(), i + 1);
        }
    }
}
