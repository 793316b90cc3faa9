//! OpenFaaS deployments ⇄ `Function` objects. A deploy body becomes the same `DesiredObject`
//! a manifest declaring that Function would (canonical spec, defaults filled in); a value
//! microfaas cannot honour is an error naming its field, never silently dropped.

use crate::manifest::Spec;
use crate::manifest::types::{FunctionSpec, Runtime};
use crate::store::{DesiredObject, StoredObject};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The namespace every function lives in.
pub const NAMESPACE: &str = "microfaas";

/// The body `faas-cli deploy` sends (faas-provider `FunctionDeployment`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionDeployment {
    pub service: String,
    pub image: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub env_process: Option<String>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub constraints: Option<Vec<String>>,
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub limits: Option<Resources>,
    #[serde(default)]
    pub requests: Option<Resources>,
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
}

/// A deploy that cannot be stored: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label_ok(s: &str, allow_slash: bool) -> bool {
    s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || (allow_slash && b == b'/'))
}

/// The Function object a deployment stands for.
pub fn to_desired(d: &FunctionDeployment) -> Result<DesiredObject, FieldError> {
    if !is_dns_label(&d.service) {
        return Err(bad(
            "service",
            format!(
                "`{}` is not a valid function name: lowercase letters, digits and `-`, at most 63",
                d.service
            ),
        ));
    }
    if let Some(ns) = d
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty() && *n != NAMESPACE)
    {
        return Err(bad(
            "namespace",
            format!("unknown namespace `{ns}`: the only one is `{NAMESPACE}`"),
        ));
    }
    let mut code = Code {
        runtime: Runtime::Builtin,
        handler: None,
        module: None,
        sha256: None,
    };
    match d.image.split_once(':') {
        Some(("builtin", h)) => {
            let names = crate::functions::names();
            if !names.contains(&h) {
                return Err(bad(
                    "image",
                    format!(
                        "unknown builtin function `{h}`; builtins: {}",
                        names.join(", ")
                    ),
                ));
            }
            code.handler = Some(h.to_string());
        }
        Some(("wasm", m)) => code = user_image(m, Runtime::Wasm)?,
        Some(("exec", m)) => code = user_image(m, Runtime::Exec)?,
        _ => {
            return Err(bad(
                "image",
                format!(
                    "`{}` is not a microfaas runtime payload: use `builtin:NAME` (e.g. `builtin:cascading_sha256`), `wasm:PATH[@sha256:HEX]` or `exec:PATH[@sha256:HEX]`",
                    d.image
                ),
            ));
        }
    }
    if d.env_process.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(bad(
            "envProcess",
            "functions are started by their runtime (a wasm module's `_start`); leave it empty",
        ));
    }
    if d.constraints.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(bad(
            "constraints",
            "placement constraints are not supported: every healthy worker can run every function",
        ));
    }
    if d.secrets.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            "secrets",
            "functions cannot mount secrets in this build",
        ));
    }
    if let Some(r) = &d.requests
        && (r.memory.is_some() || r.cpu.is_some())
    {
        return Err(bad(
            "requests",
            "workers run one function at a time, so there is nothing to reserve; use limits.memory",
        ));
    }
    let mut memory = None;
    if let Some(l) = &d.limits {
        if l.cpu.is_some() {
            return Err(bad(
                "limits.cpu",
                "CPU limits are not supported: a function has its worker's CPUs to itself",
            ));
        }
        if let Some(m) = &l.memory {
            let size = crate::manifest::quantity::Size(m.clone());
            size.parse()
                .map_err(|e| bad("limits.memory", e.to_string()))?;
            memory = Some(size);
        }
    }
    let labels = d.labels.clone().unwrap_or_default();
    for (k, v) in &labels {
        if k.is_empty() || !label_ok(k, true) || !label_ok(v, false) || v.len() > 63 {
            return Err(bad(
                &format!("labels.{k}"),
                "label keys and values are letters, digits, `-`, `_`, `.` (keys may have one `/` prefix)",
            ));
        }
    }
    let spec = FunctionSpec {
        runtime: code.runtime,
        handler: code.handler,
        module: code.module,
        sha256: code.sha256,
        fuel: None,
        command: None,
        timeout: None,
        memory,
        env: d.env_vars.clone().unwrap_or_default(),
        services: BTreeMap::new(),
    };
    Ok(DesiredObject {
        kind: crate::manifest::Kind::Function,
        name: d.service.clone(),
        labels,
        annotations: d.annotations.clone().unwrap_or_default(),
        spec: Spec::Function(spec).to_json(),
        owner: None,
        source: Some("gateway".to_string()),
    })
}

/// The runtime fields of a deployed Function.
struct Code {
    runtime: Runtime,
    handler: Option<String>,
    module: Option<String>,
    sha256: Option<String>,
}

/// `wasm:PATH[@sha256:HEX]` / `exec:PATH[@sha256:HEX]`: a module (or static executable) file
/// on the gateway's host (relative paths are relative to the daemon's working directory and
/// stored absolute), checked as a manifest's would be and pinned to the digest it has now, so
/// a later edit of the file is refused rather than run.
fn user_image(spec: &str, runtime: Runtime) -> Result<Code, FieldError> {
    use crate::manifest::module::{self, Format};
    let (path, pin) = match spec.rsplit_once("@sha256:") {
        Some((p, h)) => (p, Some(h)),
        None => (spec, None),
    };
    if path.is_empty() {
        return Err(bad(
            "image",
            "the module's path is missing: `wasm:PATH` or `exec:PATH`",
        ));
    }
    let abs = std::path::absolute(path)
        .map_err(|e| bad("image", format!("module path `{path}`: {e}")))?
        .display()
        .to_string();
    let format = match runtime {
        Runtime::Exec => Format::Elf,
        _ => Format::Wasm,
    };
    let file = module::read(&abs, pin, format).map_err(|e| bad("image", e.to_string()))?;
    Ok(Code {
        runtime,
        handler: None,
        module: Some(abs),
        sha256: Some(file.sha256),
    })
}

/// The OpenFaaS `image` of a stored function.
pub fn image_of(spec: &FunctionSpec) -> String {
    match spec.runtime {
        Runtime::Builtin => format!("builtin:{}", spec.handler.as_deref().unwrap_or("")),
        Runtime::Wasm | Runtime::Exec if spec.module.is_some() => {
            let scheme = if spec.runtime == Runtime::Wasm {
                "wasm"
            } else {
                "exec"
            };
            let path = spec.module.as_deref().unwrap_or("");
            match &spec.sha256 {
                Some(h) => format!("{scheme}:{path}@sha256:{h}"),
                None => format!("{scheme}:{path}"),
            }
        }
        Runtime::Wasm => "wasm:".to_string(),
        Runtime::Exec => format!(
            "exec:{}",
            spec.command.clone().unwrap_or_default().join(" ")
        ),
    }
}

/// The faas-provider `FunctionStatus` of a stored Function.
pub fn status_of(o: &StoredObject, replicas: u64, available: u64, invocations: u64) -> Value {
    let spec: Option<FunctionSpec> = serde_json::from_value(o.spec.clone()).ok();
    let mut limits = Value::Null;
    if let Some(m) = spec.as_ref().and_then(|s| s.memory.as_ref()) {
        limits = json!({"memory": m.0});
    }
    json!({
        "name": o.name,
        "image": spec.as_ref().map(image_of).unwrap_or_default(),
        "namespace": NAMESPACE,
        "envProcess": "",
        "envVars": spec.as_ref().map(|s| json!(s.env)).unwrap_or(json!({})),
        "constraints": [],
        "secrets": [],
        "labels": o.labels,
        "annotations": o.annotations,
        "limits": limits,
        "requests": null,
        "readOnlyRootFilesystem": false,
        "invocationCount": invocations,
        "replicas": replicas,
        "availableReplicas": available,
        "createdAt": o.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faas_cli_body() -> Value {
        // What `faas-cli deploy` sends for a stack.yml function with labels, env and a limit.
        json!({
            "service": "sha", "image": "builtin:cascading_sha256", "namespace": "",
            "envProcess": "", "envVars": {"MODE": "fast"}, "constraints": [], "secrets": [],
            "labels": {"team": "a"}, "annotations": {"note": "x"},
            "limits": {"memory": "128Mi"}, "requests": null, "readOnlyRootFilesystem": false
        })
    }

    #[test]
    fn a_faas_cli_deploy_becomes_the_function_a_manifest_would_declare() {
        let d: FunctionDeployment = serde_json::from_value(faas_cli_body()).expect("parse");
        let obj = to_desired(&d).expect("valid");
        let yaml = "apiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: sha, labels: {team: a}, annotations: {note: x}}\nspec: {runtime: builtin, handler: cascading_sha256, memory: 128Mi, env: {MODE: fast}}\n";
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f.yaml");
        std::fs::write(&f, yaml).expect("write");
        let loaded = crate::manifest::load_and_validate(
            &[f],
            crate::manifest::validate::Options { fs_checks: false },
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let r = &loaded.resources[0];
        assert_eq!(obj.spec, r.spec.to_json());
        assert_eq!(obj.labels, r.metadata.labels);
        assert_eq!(obj.annotations, r.metadata.annotations);
    }

    #[test]
    fn unsupported_values_name_their_field() {
        let cases = [
            (json!({"image": "functions/nodeinfo:latest"}), "image"),
            (json!({"image": "builtin:nope"}), "image"),
            (json!({"service": "Bad_Name"}), "service"),
            (json!({"limits": {"cpu": "100m"}}), "limits.cpu"),
            (json!({"limits": {"memory": "lots"}}), "limits.memory"),
            (json!({"constraints": ["node.role==worker"]}), "constraints"),
            (json!({"secrets": ["db"]}), "secrets"),
            (json!({"namespace": "openfaas-fn"}), "namespace"),
            (json!({"envProcess": "python index.py"}), "envProcess"),
        ];
        for (patch, field) in cases {
            let mut body = faas_cli_body();
            for (k, v) in patch.as_object().expect("object") {
                body[k] = v.clone();
            }
            let d: FunctionDeployment = serde_json::from_value(body).expect("parse");
            let e = to_desired(&d).expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }
}
