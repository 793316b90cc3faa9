//! JSON Schemas of every kind, generated from the Rust types, for editors and for checking
//! manifests outside microfaas. `schemas/*.json` is these, committed; a test keeps them current.

use super::resource::Kind;
use super::types::*;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// The full document schema of one kind: header fields, metadata and the typed spec.
pub fn for_kind(kind: Kind) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let spec = match kind {
        Kind::Cluster => generator.into_root_schema_for::<ClusterSpec>(),
        Kind::Switch => generator.into_root_schema_for::<SwitchSpec>(),
        Kind::PowerMeter => generator.into_root_schema_for::<PowerMeterSpec>(),
        Kind::Worker => generator.into_root_schema_for::<WorkerSpec>(),
        Kind::WorkerSet => generator.into_root_schema_for::<WorkerSetSpec>(),
        Kind::Function => generator.into_root_schema_for::<FunctionSpec>(),
        Kind::Workload => generator.into_root_schema_for::<WorkloadSpec>(),
    };
    let mut spec = spec.to_value();
    let defs = spec
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .unwrap_or_else(|| json!({}));
    if let Some(o) = spec.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    let mut defs = defs;
    let metadata = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Metadata>()
        .to_value();
    if let Some(d) = defs.as_object_mut() {
        let mut m = metadata;
        if let Some(o) = m.as_object_mut() {
            o.remove("$schema");
        }
        d.insert("Metadata".to_string(), m);
        d.insert("Spec".to_string(), spec);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://microfaas.dev/schemas/v1alpha1/{}.json", kind.singular()),
        "title": kind.as_str(),
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind.as_str()},
            "metadata": {"$ref": "#/$defs/Metadata"},
            "spec": {"$ref": "#/$defs/Spec"},
            "status": {"type": "object", "description": "Written by microfaas; ignored on apply."}
        },
        "$defs": defs,
    })
}

/// One self-contained schema accepting a document of any kind (each kind embedded under
/// `$defs` with its own `$id`), for editors that take a single schema per file.
pub fn bundle() -> Value {
    let mut defs = serde_json::Map::new();
    let mut one_of = Vec::new();
    for kind in Kind::ALL {
        let mut s = for_kind(kind);
        if let Some(o) = s.as_object_mut() {
            o.remove("$schema");
        }
        one_of.push(json!({"$ref": format!("#/$defs/{}", kind.as_str())}));
        defs.insert(kind.as_str().to_string(), s);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://microfaas.dev/schemas/v1alpha1/all.json",
        "title": "microfaas manifest document (any kind)",
        "oneOf": one_of,
        "$defs": defs,
    })
}

/// File name under `schemas/` for a kind.
pub fn file_name(kind: Kind) -> String {
    format!("{}.json", kind.singular())
}
