//! How stored objects are shown: kube-style JSON/YAML documents and tables.

use crate::manifest::Kind;
use crate::manifest::types::API_VERSION;
use crate::store::{StoredObject, clock};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Map, Value, json};

/// The object as `get -o json` prints it: apiVersion, kind, metadata, spec and a status that
/// always carries phase, observedGeneration and conditions.
pub fn to_document(o: &StoredObject) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(o.name));
    metadata.insert("labels".into(), json!(o.labels));
    if !o.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(o.annotations));
    }
    metadata.insert("generation".into(), json!(o.generation));
    metadata.insert("creationTimestamp".into(), json!(o.created_at));
    if let Some(owner) = &o.owner {
        metadata.insert(
            "ownerReferences".into(),
            json!([{"kind": "WorkerSet", "name": owner}]),
        );
    }
    let mut status = match &o.status {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    status.entry("phase").or_insert_with(|| json!("Pending"));
    status
        .entry("observedGeneration")
        .or_insert_with(|| json!(0));
    status.entry("conditions").or_insert_with(|| json!([]));
    json!({
        "apiVersion": API_VERSION,
        "kind": o.kind.as_str(),
        "metadata": metadata,
        "spec": o.spec,
        "status": status,
    })
}

pub fn list_document(objects: &[StoredObject]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects.iter().map(to_document).collect::<Vec<_>>(),
    })
}

pub fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p).unwrap_or(&Value::Null);
    }
    cur
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "<none>".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn phase(o: &StoredObject) -> String {
    match o.status.get("phase") {
        Some(Value::String(p)) => p.clone(),
        _ => "Pending".to_string(),
    }
}

fn labels(o: &StoredObject) -> String {
    if o.labels.is_empty() {
        return "<none>".to_string();
    }
    o.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Columns of `get KIND` (and more with `-o wide`).
pub fn table(kind: Kind, objects: &[StoredObject], wide: bool) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    let mut header: Vec<&str> = match kind {
        Kind::Worker => vec!["NAME", "TYPE", "POWER", "PHASE", "HEALTH", "AGE"],
        Kind::WorkerSet => vec!["NAME", "REPLICAS", "TYPE", "AGE"],
        Kind::Function => vec!["NAME", "RUNTIME", "HANDLER", "TIMEOUT", "AGE"],
        Kind::Workload => vec!["NAME", "INVOCATIONS", "ARRIVAL", "PHASE", "AGE"],
        Kind::Switch => vec!["NAME", "ADDRESS", "SNMP", "PHASE", "AGE"],
        Kind::PowerMeter => vec!["NAME", "TYPE", "PHASE", "WATTS", "LAST SAMPLE", "AGE"],
        Kind::Cluster => vec!["NAME", "LISTEN", "GATEWAY", "AGE"],
    };
    if wide {
        header.extend(["GENERATION", "LABELS"]);
        if kind == Kind::Worker {
            header.extend(["LIFECYCLE", "DETAIL"]);
        }
    }
    t.set_header(header);
    for o in objects {
        let sp = &o.spec;
        let mut row: Vec<String> = match kind {
            Kind::Worker => vec![
                o.name.clone(),
                worker_type(sp).to_string(),
                text(s(sp, &["power"])),
                phase(o),
                o.status
                    .get("health")
                    .map_or_else(|| "Good".to_string(), text),
                clock::age(&o.created_at),
            ],
            Kind::WorkerSet => vec![
                o.name.clone(),
                text(s(sp, &["replicas"])),
                worker_type(s(sp, &["template", "spec"])).to_string(),
                clock::age(&o.created_at),
            ],
            Kind::Function => vec![
                o.name.clone(),
                text(s(sp, &["runtime"])),
                text(s(sp, &["handler"])),
                text(s(sp, &["timeout"])),
                clock::age(&o.created_at),
            ],
            Kind::Workload => {
                let total: i64 = s(sp, &["functions"])
                    .as_array()
                    .map(|fs| fs.iter().filter_map(|f| f.get("count")?.as_i64()).sum())
                    .unwrap_or(0);
                vec![
                    o.name.clone(),
                    total.to_string(),
                    text(s(sp, &["arrival", "pattern"])),
                    phase(o),
                    clock::age(&o.created_at),
                ]
            }
            Kind::Switch => vec![
                o.name.clone(),
                text(s(sp, &["address"])),
                text(s(sp, &["snmp", "version"])),
                phase(o),
                clock::age(&o.created_at),
            ],
            Kind::PowerMeter => {
                let ty = ["wattsup", "command", "model"]
                    .into_iter()
                    .find(|k| !s(sp, &[k]).is_null())
                    .unwrap_or("<none>");
                let reading = s(&o.status, &["lastReading"]);
                vec![
                    o.name.clone(),
                    ty.to_string(),
                    phase(o),
                    reading
                        .get("watts")
                        .and_then(Value::as_f64)
                        .map_or_else(|| "<none>".to_string(), |w| format!("{w:.1}")),
                    reading.get("time").and_then(Value::as_str).map_or_else(
                        || "<none>".to_string(),
                        |t| format!("{} ago", clock::age(t)),
                    ),
                    clock::age(&o.created_at),
                ]
            }
            Kind::Cluster => vec![
                o.name.clone(),
                text(s(sp, &["orchestrator", "listen"])),
                text(s(sp, &["gateway", "listen"])),
                clock::age(&o.created_at),
            ],
        };
        if wide {
            row.push(o.generation.to_string());
            row.push(labels(o));
            if kind == Kind::Worker {
                row.push(text(s(sp, &["lifecycle", "mode"])));
                let detail = if sp.get("vm").is_some_and(|v| !v.is_null()) {
                    format!("kernel={}", text(s(sp, &["vm", "kernel"])))
                } else {
                    format!(
                        "pin={} port={}",
                        text(s(sp, &["board", "powerButton", "pin"])),
                        text(s(sp, &["board", "network", "port"]))
                    )
                };
                row.push(detail);
            }
        }
        t.add_row(row);
    }
    t.to_string()
}

fn worker_type(spec: &Value) -> &'static str {
    if spec.get("vm").is_some_and(|v| !v.is_null()) {
        "vm"
    } else if spec.get("board").is_some_and(|v| !v.is_null()) {
        "board"
    } else {
        "<none>"
    }
}
