//! Runtime dispatch: runs one invocation with the runtime it names (only `builtin` today, with
//! the services the orchestrator bound to it) on its own thread, waits at most its deadline,
//! and turns what happened into a result.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::functions::{self, FunctionError, clients::Ctx};
use crate::protocol::{ErrorKind, Invoke, InvokeError, InvokeResult, Outcome, RUNTIME_BUILTIN};

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

pub fn dispatch(inv: &Invoke) -> Dispatched {
    if inv.runtime != RUNTIME_BUILTIN {
        let msg = format!("runtime {:?} is not supported by this agent", inv.runtime);
        return failure(&inv.id, ErrorKind::UnsupportedRuntime, msg, 0);
    }
    if !functions::all_names().contains(&inv.handler.as_str()) {
        let msg = format!("no builtin function {:?}", inv.handler);
        return failure(&inv.id, ErrorKind::UnknownFunction, msg, 0);
    }

    let (tx, rx) = mpsc::channel();
    let handler = inv.handler.clone();
    let input = inv.input.clone();
    let services = inv.services.clone();
    let started = Instant::now();
    let io_deadline = io_deadline(started, inv.deadline_ms);
    let spawned = thread::Builder::new()
        .name(format!("fn:{handler}"))
        .spawn(move || {
            // Timed here, around the call only: not thread start-up, not the channel.
            let t = Instant::now();
            let ctx = Ctx {
                services: &services,
                deadline: io_deadline,
            };
            let out = functions::run_with(&handler, &input, &ctx);
            let us = t.elapsed().as_micros() as u64;
            let _ = tx.send((out, us));
        });
    if let Err(e) = spawned {
        let msg = format!("cannot start a thread for the function: {e}");
        return failure(&inv.id, ErrorKind::Error, msg, 0);
    }

    let waited = if inv.deadline_ms == 0 {
        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
    } else {
        rx.recv_timeout(Duration::from_millis(inv.deadline_ms))
    };
    match waited {
        Ok((Ok(output), us)) => Dispatched {
            result: InvokeResult {
                id: inv.id.clone(),
                outcome: Outcome::Output(output),
                exec_us: us,
            },
            overran: false,
        },
        Ok((Err(e), us)) => {
            let kind = match e {
                FunctionError::UnknownFunction(_) => ErrorKind::UnknownFunction,
                FunctionError::BadInput(_) => ErrorKind::BadInput,
                FunctionError::Failed(_) => ErrorKind::Error,
            };
            failure(&inv.id, kind, e.to_string(), us)
        }
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
