//! A Function's runtime and code as they go on the wire: builtins travel by name, a wasm module
//! or a static executable (`exec` with `module`) is read (size-bounded, checked against its
//! pinned sha256, valid wasm / ELF), base64-encoded and sent with its limits, environment and
//! arguments in every invocation.

use base64::Engine as _;

use crate::manifest::module::{self, Format};
use crate::manifest::types::{FunctionSpec, Runtime};
use crate::protocol::{RUNTIME_BUILTIN, RUNTIME_EXEC, RUNTIME_WASM, UserCode};

/// What a Call carries to the agent besides its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    pub runtime: &'static str,
    /// builtin: the function's name in the agent's suite.
    pub handler: String,
    pub user: Option<UserCode>,
}

/// The code `spec` runs, ready to send; an error names what is wrong (a missing or changed
/// module, a runtime this build cannot run).
pub fn code_of(spec: &FunctionSpec) -> Result<Code, String> {
    let (runtime, format) = match spec.runtime {
        Runtime::Builtin => {
            return Ok(Code {
                runtime: RUNTIME_BUILTIN,
                handler: spec.handler.clone().unwrap_or_default(),
                user: None,
            });
        }
        Runtime::Wasm => (RUNTIME_WASM, Format::Wasm),
        Runtime::Exec => (RUNTIME_EXEC, Format::Elf),
    };
    let Some(path) = spec.module.as_deref() else {
        return Err(match spec.runtime {
            Runtime::Exec => "an exec function without `module` (a program already on the worker) cannot run in this build",
            _ => "a wasm function needs `module`",
        }
        .to_string());
    };
    let file = module::read(path, spec.sha256.as_deref(), format).map_err(|e| e.to_string())?;
    let memory_bytes = match &spec.memory {
        Some(m) => Some(m.parse().map_err(|e| format!("memory: {e}"))?),
        None => None,
    };
    Ok(Code {
        runtime,
        handler: String::new(),
        user: Some(UserCode {
            module: base64::engine::general_purpose::STANDARD.encode(&file.bytes),
            sha256: file.sha256,
            memory_bytes,
            fuel: spec.fuel,
            env: spec.env.clone(),
            // exec: `command` holds the arguments when the program is the module.
            args: spec.command.clone().unwrap_or_default(),
        }),
    })
}
