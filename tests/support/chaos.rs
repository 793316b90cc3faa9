//! What the chaos suite (tests/chaos.rs, `hack/chaos`) checks after an engine was killed:
//! the QEMU processes of a state dir against what its store knows (orphans, duplicates), and
//! a workload's recorded attempts against its plan (lost, double-counted invocations).

use super::qemu::{arg_after, qemu_processes, worker_of};
use microfaas::manifest::Kind;
use microfaas::store::Store;
use microfaas::store::invocations::{Attempt, AttemptStatus, RunPhase};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A live QEMU of the state dir: worker name (`-name`), PID and `-uuid`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Qemu {
    pub worker: String,
    pub pid: i32,
    pub uuid: String,
}

/// Every live QEMU whose command line carries `state`'s `vms/` directory (from /proc).
pub fn qemus(state: &Path) -> Vec<Qemu> {
    // SAFETY: getsid(0) only reads this process's session id.
    let own_session = unsafe { libc::getsid(0) };
    let found: Vec<(i32, Qemu)> = qemu_processes(state)
        .into_iter()
        // QEMU forks to run a guestfwd's relay (until the child execs, it has QEMU's command
        // line), and `-daemonize` forks twice, the first process waiting in our session until
        // the VM is set up: neither is a second VM. A daemonized QEMU has left our session.
        .map(|(pid, args)| (pid, parent_and_session(pid), args))
        .filter(|(_, (_, session), _)| *session != own_session)
        .map(|(pid, (ppid, _), args)| {
            (
                ppid,
                Qemu {
                    worker: worker_of(&args),
                    pid,
                    uuid: arg_after(&args, "-uuid"),
                },
            )
        })
        .collect();
    let pids: Vec<i32> = found.iter().map(|(_, q)| q.pid).collect();
    let mut vms: Vec<Qemu> = found
        .into_iter()
        .filter(|(ppid, _)| !pids.contains(ppid))
        .map(|(_, q)| q)
        .collect();
    vms.sort();
    vms
}

/// The parent PID and session id of `pid` (0, 0 when they cannot be read), from
/// /proc/PID/stat.
fn parent_and_session(pid: i32) -> (i32, i32) {
    let fields = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces and parentheses: fields follow the last `)`.
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<i32> = rest
                .split_whitespace()
                .skip(1)
                .take(3)
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            Some((f.first().copied()?, f.get(2).copied()?))
        });
    fields.unwrap_or((0, 0))
}

/// Workers with more than one QEMU in `scan`, with their PIDs.
pub fn duplicates(scan: &[Qemu]) -> BTreeMap<String, BTreeSet<i32>> {
    let mut by: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for q in scan {
        by.entry(q.worker.clone()).or_default().insert(q.pid);
    }
    by.retain(|_, pids| pids.len() > 1);
    by
}

/// QEMUs in `scan` that the store cannot lead an engine to: no such worker, or a `-uuid` other
/// than the one in the worker's status (the uuid is stored before QEMU starts, and adoption
/// matches on it).
pub fn unknown_to(store: &Store, scan: &[Qemu]) -> Vec<Qemu> {
    scan.iter()
        .filter(|q| {
            let stored = store
                .get(Kind::Worker, &q.worker)
                .ok()
                .flatten()
                .and_then(|o| o.status["vm"]["uuid"].as_str().map(str::to_string));
            stored.as_deref() != Some(q.uuid.as_str())
        })
        .cloned()
        .collect()
}

/// One workload's record, checked against its plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    pub runs: usize,
    pub cancelled: usize,
    /// Planned invocations of a finished run with no final record (or a retry never made).
    pub lost: usize,
    /// Invocations with more than one final record, or an attempt after a final one.
    pub double_counted: usize,
    /// Invocations of cancelled runs the killed engine never finished (redone by the next run).
    pub interrupted: usize,
    /// Succeeded invocations of the latest run, and its phase.
    pub final_succeeded: usize,
    pub final_phase: Option<RunPhase>,
    /// The latest run's own counts (`total`, `succeeded`) as stored with it.
    pub final_counts: (u64, u64),
    /// Every problem, in words, for the failure message.
    pub problems: Vec<String>,
}

/// A record that ends its invocation: an answer, or an attempt that may not be retried.
fn is_final(a: &Attempt, max_attempts: u32) -> bool {
    matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Failed)
        || a.attempt >= max_attempts
        || a.worker.is_none()
}

/// Checks every run of `workload`: each planned invocation (`declared` of them, `seq`
/// 0..declared) has attempts numbered 1, 2, ... with at most one final record and nothing
/// after it; a finished run has a final record for each.
pub fn audit(store: &Store, workload: &str, declared: usize, max_attempts: u32) -> Audit {
    let mut out = Audit::default();
    let latest = store.latest_run(workload).ok().flatten();
    let Some(latest) = latest else {
        out.problems.push("no run recorded".into());
        return out;
    };
    for n in 1..=latest.run {
        let Ok(Some(run)) = store.run(workload, n) else {
            out.problems.push(format!("run {n} missing"));
            continue;
        };
        out.runs += 1;
        let attempts = store.attempts(workload, n).unwrap_or_default();
        let mut by_seq: BTreeMap<u64, Vec<&Attempt>> = BTreeMap::new();
        for a in &attempts {
            by_seq.entry(a.seq).or_default().push(a);
        }
        let finished = run.phase != RunPhase::Running && run.phase != RunPhase::Cancelled;
        if run.phase == RunPhase::Cancelled {
            out.cancelled += 1;
        }
        let mut succeeded = 0;
        for seq in 0..declared as u64 {
            let list = by_seq.remove(&seq).unwrap_or_default();
            let numbers: Vec<u32> = list.iter().map(|a| a.attempt).collect();
            let expected: Vec<u32> = (1..=list.len() as u32).collect();
            if numbers != expected {
                out.double_counted += 1;
                out.problems
                    .push(format!("run {n} seq {seq}: attempts numbered {numbers:?}"));
                continue;
            }
            let finals = list.iter().filter(|a| is_final(a, max_attempts)).count();
            let last_final = list.last().is_some_and(|a| is_final(a, max_attempts));
            if finals > 1 || (finals == 1 && !last_final) {
                out.double_counted += 1;
                out.problems.push(format!(
                    "run {n} seq {seq}: {finals} final records: {:?}",
                    list.iter()
                        .map(|a| (a.attempt, a.status))
                        .collect::<Vec<_>>()
                ));
            } else if finals == 0 {
                if finished {
                    out.lost += 1;
                    out.problems.push(format!(
                        "run {n} ({}) seq {seq}: no final record ({} attempts)",
                        run.phase,
                        list.len()
                    ));
                } else {
                    out.interrupted += 1;
                }
            }
            if list
                .last()
                .is_some_and(|a| a.status == AttemptStatus::Succeeded)
            {
                succeeded += 1;
            }
        }
        for (seq, list) in by_seq {
            out.double_counted += list.len();
            out.problems
                .push(format!("run {n}: attempts of unplanned seq {seq}"));
        }
        if n == latest.run {
            out.final_succeeded = succeeded;
            out.final_phase = Some(run.phase);
            out.final_counts = (run.counts.total, run.counts.succeeded);
        }
    }
    out
}
