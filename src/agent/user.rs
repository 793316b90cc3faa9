//! User functions on the worker: checks the code an invocation carries (base64, sha256) and
//! turns it into a job for the runtime dispatcher; the output convention lives here too, so
//! every user runtime answers alike (stdout as JSON, or as a JSON string when it is not JSON).

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::exec::{self, ExecError};
use super::wasm::{self, WasmError};
use crate::protocol::{ErrorKind, Invoke, UserCode};

type Failure = (ErrorKind, String);

/// The module bytes of `inv`, checked against the digest that came with them.
fn module_of(inv: &Invoke) -> Result<(&UserCode, Vec<u8>), Failure> {
    let Some(code) = inv.code.as_ref() else {
        let msg = format!("a {} invocation carries no module", inv.runtime);
        return Err((ErrorKind::BadInput, msg));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(code.module.as_bytes())
        .map_err(|e| {
            (
                ErrorKind::BadInput,
                format!("module is not valid base64: {e}"),
            )
        })?;
    let got = crate::functions::hex(&Sha256::digest(&bytes));
    if !got.eq_ignore_ascii_case(&code.sha256) {
        let msg = format!(
            "module sha256 mismatch: expected {}, received {got}",
            code.sha256
        );
        return Err((ErrorKind::BadInput, msg));
    }
    Ok((code, bytes))
}

/// What a function printed, as its output.
pub fn output_of(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(stdout).into_owned()))
}

/// A wasm invocation as a job: compiled (or taken from this boot's cache) and run on the
/// function thread.
pub fn wasm_job(
    inv: &Invoke,
) -> Result<Box<dyn FnOnce() -> Result<Value, Failure> + Send>, Failure> {
    let (code, bytes) = module_of(inv)?;
    let sha = code.sha256.to_ascii_lowercase();
    let memory = code.memory_bytes.unwrap_or(wasm::DEFAULT_MEMORY);
    let fuel = code.fuel;
    let env: Vec<(String, String)> = code.env.clone().into_iter().collect();
    let args = vec![inv.function.clone()];
    let stdin = serde_json::to_vec(&inv.input).unwrap_or_default();
    let deadline_ms = inv.deadline_ms;
    let deadline = (deadline_ms > 0).then(|| Instant::now() + Duration::from_millis(deadline_ms));
    Ok(Box::new(move || {
        let module =
            wasm::compile(&sha, &bytes).map_err(|e| (ErrorKind::BadInput, e.to_string()))?;
        let call = wasm::Call {
            args: &args,
            env: &env,
            stdin,
            memory,
            fuel,
            deadline,
        };
        match wasm::run(&module, call) {
            Ok(stdout) => Ok(output_of(&stdout)),
            Err(WasmError::Timeout) => Err((
                ErrorKind::Timeout,
                format!("exceeded its deadline of {deadline_ms} ms"),
            )),
            Err(e) => Err((ErrorKind::Error, e.to_string())),
        }
    }))
}

/// An exec invocation as a job: the static executable stored for this boot and run.
pub fn exec_job(
    inv: &Invoke,
) -> Result<Box<dyn FnOnce() -> Result<Value, Failure> + Send>, Failure> {
    let (code, bytes) = module_of(inv)?;
    exec::check_elf(&bytes).map_err(|e| (ErrorKind::BadInput, e.to_string()))?;
    let sha = code.sha256.to_ascii_lowercase();
    let memory = code.memory_bytes.unwrap_or(wasm::DEFAULT_MEMORY);
    let env: Vec<(String, String)> = code.env.clone().into_iter().collect();
    let args: Vec<String> = std::iter::once(inv.function.clone())
        .chain(code.args.iter().cloned())
        .collect();
    let stdin = serde_json::to_vec(&inv.input).unwrap_or_default();
    let deadline_ms = inv.deadline_ms;
    let deadline = (deadline_ms > 0).then(|| Instant::now() + Duration::from_millis(deadline_ms));
    Ok(Box::new(move || {
        let call = exec::Call {
            args: &args,
            env: &env,
            stdin,
            memory,
            deadline,
        };
        match exec::run(&sha, &bytes, call) {
            Ok(stdout) => Ok(output_of(&stdout)),
            Err(ExecError::Timeout) => Err((
                ErrorKind::Timeout,
                format!("exceeded its deadline of {deadline_ms} ms"),
            )),
            Err(e) => Err((ErrorKind::Error, e.to_string())),
        }
    }))
}
