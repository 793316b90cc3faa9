//! Runtime dispatch: runs one invocation with the runtime it names (`builtin`, with the
//! services the orchestrator bound to it, or `wasm` and `exec` through [`super::user`]) on the
//! function thread, waits at most its deadline, and turns what happened into a result.

use std::cell::RefCell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::user;
use crate::functions::{self, FunctionError, clients::Ctx};
use crate::protocol::{
    ErrorKind, Invoke, InvokeError, InvokeResult, Outcome, RUNTIME_BUILTIN, RUNTIME_EXEC,
    RUNTIME_WASM,
};

/// What the function thread runs: the call itself, timed by the thread.
type Job = Box<dyn FnOnce() -> Result<Value, (ErrorKind, String)> + Send>;

/// What the function thread sends back: the call's result and how long it ran, in µs.
type Done = (Result<Value, (ErrorKind, String)>, u64);

/// The thread functions run on, kept from one call to the next: starting a thread per call
/// was a twentieth of a warm loopback call's CPU. It is given up (and the next call starts a
/// fresh one) when its call overran — the job may still be running — or when it died.
struct Runner {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

thread_local! {
    /// Per calling thread: one agent calls from one thread, and agents run as threads of
    /// one process in tests and benches must not take each other's.
    static RUNNER: RefCell<Option<Runner>> = const { RefCell::new(None) };
}

impl Runner {
    fn start() -> std::io::Result<Runner> {
        let (jobs, next) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        thread::Builder::new().name("fn".into()).spawn(move || {
            for job in next {
                // Timed here, around the call only: not the channels.
                let t = Instant::now();
                let out = job();
                let us = t.elapsed().as_micros() as u64;
                if finished.send((out, us)).is_err() {
                    break;
                }
            }
        })?;
        Ok(Runner { jobs, done })
    }

    /// The kept runner, or a new one.
    fn take() -> std::io::Result<Runner> {
        RUNNER
            .with_borrow_mut(Option::take)
            .map_or_else(Runner::start, Ok)
    }

    /// Keeps this runner for the next call.
    fn keep(self) {
        RUNNER.set(Some(self));
    }
}

/// A user function enforces its deadline itself (fuel slices) and reports a timeout as its
/// own result; this much later the agent gives up on it as overrun.
const USER_GRACE: Duration = Duration::from_secs(2);

/// The result to send, and whether the function is still running past its deadline (the
/// agent can no longer vouch for itself and must take the failsafe path).
#[derive(Debug)]
pub struct Dispatched {
    pub result: InvokeResult,
    pub overran: bool,
}

fn failure(id: &str, kind: ErrorKind, message: String, exec_us: u64) -> Dispatched {
    Dispatched {
        result: InvokeResult {
            id: id.to_string(),
            outcome: Outcome::Error(InvokeError { kind, message }),
            exec_us,
        },
        overran: false,
    }
}

/// When a service-backed function must give up waiting on its service: a little before the
/// invocation's deadline (a tenth of it, at most a second), so a silent service ends in a
/// failed call naming it rather than in an overrun that takes the worker down.
fn io_deadline(started: Instant, deadline_ms: u64) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let budget = Duration::from_millis(deadline_ms);
    let margin = (budget / 10).min(Duration::from_secs(1));
    Some(started + budget - margin)
}

/// The builtin named by `inv.handler`, as a job (with the services bound to the call).
fn builtin(inv: &Invoke) -> Result<Job, (ErrorKind, String)> {
    if !functions::all_names().contains(&inv.handler.as_str()) {
        let msg = format!("no builtin function {:?}", inv.handler);
        return Err((ErrorKind::UnknownFunction, msg));
    }
    let handler = inv.handler.clone();
    let input = inv.input.clone();
    let services = inv.services.clone();
    let io_deadline = io_deadline(Instant::now(), inv.deadline_ms);
    Ok(Box::new(move || {
        let ctx = Ctx {
            services: &services,
            deadline: io_deadline,
        };
        functions::run_with(&handler, &input, &ctx).map_err(|e| {
            let kind = match e {
                FunctionError::UnknownFunction(_) => ErrorKind::UnknownFunction,
                FunctionError::BadInput(_) => ErrorKind::BadInput,
                FunctionError::Failed(_) => ErrorKind::Error,
            };
            (kind, e.to_string())
        })
    }))
}

pub fn dispatch(inv: &Invoke) -> Dispatched {
    let (job, grace) = match inv.runtime.as_str() {
        RUNTIME_BUILTIN => (builtin(inv), Duration::ZERO),
        RUNTIME_WASM => (user::wasm_job(inv), USER_GRACE),
        RUNTIME_EXEC => (user::exec_job(inv), USER_GRACE),
        other => {
            let msg = format!("runtime {other:?} is not supported by this agent");
            return failure(&inv.id, ErrorKind::UnsupportedRuntime, msg, 0);
        }
    };
    let job = match job {
        Ok(j) => j,
        Err((kind, msg)) => return failure(&inv.id, kind, msg, 0),
    };

    let started = Instant::now();
    // A kept runner's thread is alive: it is kept only after its job answered, and then it
    // only waits for the next one.
    let runner = match Runner::take() {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("cannot start a thread for the function: {e}");
            return failure(&inv.id, ErrorKind::Error, msg, 0);
        }
    };
    if runner.jobs.send(job).is_err() {
        let msg = "the function thread has ended".to_string();
        return failure(&inv.id, ErrorKind::Error, msg, 0);
    }

    let waited = if inv.deadline_ms == 0 {
        runner
            .done
            .recv()
            .map_err(|_| RecvTimeoutError::Disconnected)
    } else {
        runner
            .done
            .recv_timeout(Duration::from_millis(inv.deadline_ms) + grace)
    };
    if waited.is_ok() {
        runner.keep();
    }
    match waited {
        Ok((Ok(output), us)) => Dispatched {
            result: InvokeResult {
                id: inv.id.clone(),
                outcome: Outcome::Output(output),
                exec_us: us,
            },
            overran: false,
        },
        Ok((Err((kind, msg)), us)) => failure(&inv.id, kind, msg, us),
        Err(RecvTimeoutError::Timeout) => {
            let us = started.elapsed().as_micros() as u64;
            let msg = format!("exceeded its deadline of {} ms", inv.deadline_ms);
            let mut d = failure(&inv.id, ErrorKind::Timeout, msg, us);
            d.overran = true;
            d
        }
        Err(RecvTimeoutError::Disconnected) => {
            let us = started.elapsed().as_micros() as u64;
            failure(
                &inv.id,
                ErrorKind::Error,
                "the function panicked".into(),
                us,
            )
        }
    }
}
