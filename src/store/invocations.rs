//! Workload runs and invocation attempts: the durable record every report is made from.
//!
//! A run is one execution of a Workload generation (a Job); runs of a workload are numbered
//! 1, 2, ... Each attempt of each invocation is one row, written by [`super::Store::record_attempt`] in
//! its own committed transaction, or with others queued at the same time by
//! [`super::Store::record_attempts`] (group commit); the store runs WAL with `synchronous=FULL`, so an
//! attempt recorded before a crash is on disk after it. Times are unix milliseconds; durations carry
//! their unit in the name.

use super::{Result, SqliteStore, StoreError, clock};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunPhase {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptStatus {
    Succeeded,
    Failed,
    Timeout,
    /// The worker died or dropped the connection before answering.
    Lost,
}

// One table of (variant, text) per enum drives as_str, FromStr and Display.
macro_rules! text_enum {
    ($ty:ident { $($v:ident = $s:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
        }

        impl FromStr for $ty {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($ty::$v),)*
                    _ => Err(StoreError::Corrupt {
                        what: stringify!($ty).to_string(),
                        detail: format!("unknown value {s:?}"),
                    }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(RunPhase {
    Running = "Running",
    Succeeded = "Succeeded",
    Failed = "Failed",
    Cancelled = "Cancelled",
});

text_enum!(AttemptStatus {
    Succeeded = "succeeded",
    Failed = "failed",
    Timeout = "timeout",
    Lost = "lost",
});

/// Invocation counts of a run, as the scheduler reports them (`total` = planned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Invocations that needed more than one attempt.
    pub retried: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub workload: String,
    /// 1-based, per workload.
    pub run: i64,
    pub generation: i64,
    pub phase: RunPhase,
    pub counts: RunCounts,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub message: String,
}

/// One attempt of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The same for every attempt of an invocation.
    pub invocation_id: String,
    pub workload: String,
    pub run: i64,
    pub generation: i64,
    /// The invocation's position in the plan ([`crate::workload::Planned::seq`]).
    pub seq: u64,
    pub function: String,
    /// `None` when the attempt never reached a worker.
    pub worker: Option<String>,
    /// 1-based.
    pub attempt: u32,
    pub queued_ms: i64,
    pub dispatched_ms: Option<i64>,
    pub finished_ms: i64,
    /// Time inside the function, measured by the agent.
    pub exec_us: Option<i64>,
    /// Dispatch to result, measured by the orchestrator.
    pub rtt_us: Option<i64>,
    /// How long the invocation waited for its worker to boot; `None` when it did not wait.
    pub cold_start_ms: Option<i64>,
    pub status: AttemptStatus,
    pub error: Option<String>,
    pub output_size: Option<u64>,
    /// Lower-case hex SHA-256 of the output bytes.
    pub output_sha256: Option<String>,
}

/// Size and lower-case hex SHA-256 of an output, for [`Attempt::output_size`] and
/// [`Attempt::output_sha256`].
pub fn output_digest(output: &[u8]) -> (u64, String) {
    (
        output.len() as u64,
        crate::functions::hex(&Sha256::digest(output)),
    )
}

const ATTEMPT_COLUMNS: &str = "invocation_id, workload, run, generation, seq, function, worker, attempt, queued_at, dispatched_at, finished_at, exec_us, rtt_us, cold_start_ms, status, error, output_size, output_sha256";

const RUN_COLUMNS: &str = "workload, run, generation, phase, total, succeeded, failed, retried, started_at, finished_at, message";

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Run, String)> {
    let phase: String = r.get(3)?;
    Ok((
        Run {
            workload: r.get(0)?,
            run: r.get(1)?,
            generation: r.get(2)?,
            phase: RunPhase::Running, // replaced by the caller once `phase` is checked
            counts: RunCounts {
                total: r.get(4)?,
                succeeded: r.get(5)?,
                failed: r.get(6)?,
                retried: r.get(7)?,
            },
            started_ms: r.get(8)?,
            finished_ms: r.get(9)?,
            message: r.get(10)?,
        },
        phase,
    ))
}

fn checked_run((mut run, phase): (Run, String)) -> Result<Run> {
    run.phase = phase.parse()?;
    Ok(run)
}

impl SqliteStore {
    /// Starts the next run of `workload` (1 for the first) as `Running` and returns its number.
    pub fn start_run(&mut self, workload: &str, generation: i64) -> Result<i64> {
        // IMMEDIATE: two engines racing for the same workload cannot both read the same MAX.
        let (tx, sq) = self.immediate()?;
        let run: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(run), 0) + 1 FROM runs WHERE workload = ?1",
                params![workload],
                |r| r.get(0),
            )
            .map_err(&sq)?;
        tx.execute(
            "INSERT INTO runs (workload, run, generation, phase, started_at)
             VALUES (?1, ?2, ?3, 'Running', ?4)",
            params![workload, run, generation, clock::now_millis()],
        )
        .map_err(&sq)?;
        tx.commit().map_err(&sq)?;
        Ok(run)
    }

    /// Updates a running run's counts (progress). A finished run keeps its final counts: a
    /// progress write that lost the race with `finish_run` must not take them back.
    pub fn set_run_counts(&mut self, workload: &str, run: i64, counts: &RunCounts) -> Result<()> {
        let n = self
            .conn
            .execute(
                "UPDATE runs SET total = ?3, succeeded = ?4, failed = ?5, retried = ?6
                 WHERE workload = ?1 AND run = ?2 AND phase = 'Running'",
                params![
                    workload,
                    run,
                    counts.total,
                    counts.succeeded,
                    counts.failed,
                    counts.retried
                ],
            )
            .map_err(self.sq())?;
        if n == 0 && self.run(workload, run)?.is_some() {
            return Ok(());
        }
        found(n, workload, run)
    }

    /// Ends a run: its final phase (not `Running`), counts and a message for the status.
    pub fn finish_run(
        &mut self,
        workload: &str,
        run: i64,
        phase: RunPhase,
        counts: &RunCounts,
        message: &str,
    ) -> Result<()> {
        final_phase(workload, run, phase)?;
        let n = self
            .conn
            .execute(
                "UPDATE runs SET phase = ?3, total = ?4, succeeded = ?5, failed = ?6,
                        retried = ?7, finished_at = ?8, message = ?9
                 WHERE workload = ?1 AND run = ?2",
                params![
                    workload,
                    run,
                    phase.as_str(),
                    counts.total,
                    counts.succeeded,
                    counts.failed,
                    counts.retried,
                    clock::now_millis(),
                    message
                ],
            )
            .map_err(self.sq())?;
        found(n, workload, run)
    }

    /// Run `run` of `workload`.
    pub fn run(&self, workload: &str, run: i64) -> Result<Option<Run>> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE workload = ?1 AND run = ?2"),
                params![workload, run],
                row_to_run,
            )
            .optional()
            .map_err(self.sq())?
            .map(checked_run)
            .transpose()
    }

    /// The highest-numbered run of `workload`.
    pub fn latest_run(&self, workload: &str) -> Result<Option<Run>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE workload = ?1 ORDER BY run DESC LIMIT 1"
                ),
                params![workload],
                row_to_run,
            )
            .optional()
            .map_err(self.sq())?
            .map(checked_run)
            .transpose()
    }

    /// Records one attempt in its own committed transaction. The run must exist; recording
    /// the same (invocation, attempt) twice is an error.
    pub fn record_attempt(&mut self, a: &Attempt) -> Result<()> {
        insert_attempt(&self.conn, a).map_err(self.sq())
    }

    /// Records attempts in one IMMEDIATE transaction (one fsync): the group commit of
    /// [`super::committer`]. Each record gets its own outcome (a duplicate or one naming no run
    /// fails alone: SQLite undoes only that statement); an error of the transaction itself —
    /// nothing was committed — is the outer error.
    pub fn record_attempts(&mut self, attempts: &[&Attempt]) -> Result<Vec<Result<()>>> {
        // IMMEDIATE: take the write lock up front (waiting out other connections within the
        // busy timeout) rather than fail on upgrading a read to a write mid-batch.
        let (tx, sq) = self.immediate()?;
        let rows = attempts
            .iter()
            .map(|a| insert_attempt(&tx, a).map_err(&sq))
            .collect();
        tx.commit().map_err(&sq)?;
        Ok(rows)
    }

    /// Every attempt of a run, by plan position then attempt number.
    pub fn attempts(&self, workload: &str, run: i64) -> Result<Vec<Attempt>> {
        Ok(self
            .select_attempts(
                "workload = ?1 AND run = ?2 ORDER BY seq, invocation_id, attempt, id",
                params![workload, run],
            )?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// The attempts of a run recorded after row `after_row` (0: all), in recording order,
    /// each with its row number: a reader that keeps the last row reads only what is new.
    pub fn attempts_since(
        &self,
        workload: &str,
        run: i64,
        after_row: i64,
    ) -> Result<Vec<(i64, Attempt)>> {
        // `+` keeps SQLite off the (workload, run) index, which would scan the whole run:
        // walking the rowids after `after_row` costs only the new rows.
        self.select_attempts(
            "id > ?3 AND +workload = ?1 AND +run = ?2 ORDER BY id",
            params![workload, run, after_row],
        )
    }

    fn select_attempts(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<(i64, Attempt)>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ATTEMPT_COLUMNS}, id FROM invocations WHERE {filter}"
            ))
            .map_err(self.sq())?;
        let rows = stmt
            .query_map(args, |r| {
                let status: String = r.get(14)?;
                Ok((
                    r.get::<_, i64>(18)?,
                    Attempt {
                        invocation_id: r.get(0)?,
                        workload: r.get(1)?,
                        run: r.get(2)?,
                        generation: r.get(3)?,
                        seq: r.get(4)?,
                        function: r.get(5)?,
                        worker: r.get(6)?,
                        attempt: r.get(7)?,
                        queued_ms: r.get(8)?,
                        dispatched_ms: r.get(9)?,
                        finished_ms: r.get(10)?,
                        exec_us: r.get(11)?,
                        rtt_us: r.get(12)?,
                        cold_start_ms: r.get(13)?,
                        status: AttemptStatus::Succeeded, // replaced below once checked
                        error: r.get(15)?,
                        output_size: r.get(16)?,
                        output_sha256: r.get(17)?,
                    },
                    status,
                ))
            })
            .map_err(self.sq())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, mut a, status) = row.map_err(self.sq())?;
            a.status = status.parse()?;
            out.push((id, a));
        }
        Ok(out)
    }
}

fn insert_attempt(conn: &rusqlite::Connection, a: &Attempt) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO invocations ({ATTEMPT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?
    .execute(params![
        a.invocation_id,
        a.workload,
        a.run,
        a.generation,
        a.seq,
        a.function,
        a.worker,
        a.attempt,
        a.queued_ms,
        a.dispatched_ms,
        a.finished_ms,
        a.exec_us,
        a.rtt_us,
        a.cold_start_ms,
        a.status.as_str(),
        a.error,
        a.output_size,
        a.output_sha256,
    ])?;
    Ok(())
}

/// A run ends in any phase but `Running` (both backends check it before writing).
pub(crate) fn final_phase(workload: &str, run: i64, phase: RunPhase) -> Result<()> {
    if phase == RunPhase::Running {
        return Err(StoreError::Corrupt {
            what: format!("run {workload}#{run}"),
            detail: "a run cannot finish in phase Running".into(),
        });
    }
    Ok(())
}

fn found(updated: usize, workload: &str, run: i64) -> Result<()> {
    if updated == 0 {
        return Err(StoreError::NotFound(format!(
            "run {run} of workload {workload}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, n: u32, status: AttemptStatus) -> Attempt {
        Attempt {
            invocation_id: id.into(),
            workload: "wl".into(),
            run: 1,
            generation: 3,
            seq: 7,
            function: "matmul".into(),
            worker: Some("vm-0".into()),
            attempt: n,
            queued_ms: 1_000,
            dispatched_ms: Some(1_100),
            finished_ms: 1_500,
            exec_us: Some(250_000),
            rtt_us: Some(400_000),
            cold_start_ms: None,
            status,
            error: None,
            output_size: Some(3),
            output_sha256: Some(output_digest(b"abc").1),
        }
    }

    #[test]
    fn runs_are_numbered_per_workload_and_finish() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(dir.path()).expect("open");
        assert_eq!(s.latest_run("wl").expect("latest"), None);
        assert_eq!(s.start_run("wl", 3).expect("start"), 1);
        assert_eq!(s.start_run("wl", 4).expect("start"), 2);
        assert_eq!(s.start_run("other", 1).expect("start"), 1);
        let counts = RunCounts {
            total: 4,
            succeeded: 3,
            failed: 1,
            retried: 2,
        };
        s.set_run_counts("wl", 2, &RunCounts::default())
            .expect("progress");
        s.finish_run("wl", 2, RunPhase::Failed, &counts, "1 failed")
            .expect("finish");
        let latest = s.latest_run("wl").expect("latest").expect("some");
        assert_eq!(
            (latest.run, latest.generation, latest.phase, latest.counts),
            (2, 4, RunPhase::Failed, counts)
        );
        assert_eq!(latest.message, "1 failed");
        assert!(latest.finished_ms.is_some_and(|f| f >= latest.started_ms));
        let first = s.run("wl", 1).expect("run").expect("some");
        assert_eq!((first.phase, first.finished_ms), (RunPhase::Running, None));
        assert!(matches!(
            s.finish_run("wl", 9, RunPhase::Succeeded, &counts, ""),
            Err(StoreError::NotFound(_))
        ));
        assert!(
            s.finish_run("wl", 1, RunPhase::Running, &counts, "")
                .is_err()
        );
    }

    #[test]
    fn attempts_survive_reopening_and_keep_every_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = attempt("inv-1", 1, AttemptStatus::Lost);
        let mut second = attempt("inv-1", 2, AttemptStatus::Succeeded);
        second.worker = None;
        second.dispatched_ms = None;
        second.cold_start_ms = Some(1234);
        second.error = Some("worker vm-0 went away".into());
        {
            let mut s = SqliteStore::open(dir.path()).expect("open");
            s.start_run("wl", 3).expect("start");
            s.record_attempt(&second).expect("record");
            s.record_attempt(&first).expect("record");
            // the same attempt twice is refused
            assert!(s.record_attempt(&first).is_err());
            // an attempt of a run that does not exist is refused
            let mut orphan = attempt("x", 1, AttemptStatus::Failed);
            orphan.run = 5;
            assert!(s.record_attempt(&orphan).is_err());
        }
        let s = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(s.attempts("wl", 1).expect("attempts"), vec![first, second]);
        assert!(s.attempts("wl", 2).expect("attempts").is_empty());
    }

    /// A batch commits together; a bad record in it fails alone and the rest stay.
    #[test]
    fn a_batch_commits_its_good_records_and_refuses_its_bad_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(dir.path()).expect("open");
        s.start_run("wl", 3).expect("start");
        let a = attempt("a", 1, AttemptStatus::Succeeded);
        let mut orphan = attempt("b", 1, AttemptStatus::Failed);
        orphan.run = 5;
        let c = attempt("c", 1, AttemptStatus::Lost);
        let rows = s
            .record_attempts(&[&a, &orphan, &c, &a])
            .expect("transaction");
        let ok: Vec<bool> = rows.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, false]);
        drop(s);
        let s = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(s.attempts("wl", 1).expect("attempts"), vec![a, c]);
    }

    #[test]
    fn digest_is_sha256_hex() {
        // printf abc | sha256sum
        assert_eq!(
            output_digest(b"abc"),
            (
                3,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string()
            )
        );
    }

    #[test]
    fn text_enums_round_trip() {
        for s in AttemptStatus::ALL {
            assert_eq!(s.as_str().parse::<AttemptStatus>().expect("parse"), *s);
        }
        for p in RunPhase::ALL {
            assert_eq!(p.as_str().parse::<RunPhase>().expect("parse"), *p);
        }
        assert!("Done".parse::<RunPhase>().is_err());
    }
}
