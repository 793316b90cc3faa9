//! The committed JSON Schemas match the Rust types, and every shipped manifest satisfies them.
//! Regenerate with `MICROFAAS_UPDATE_SCHEMAS=1 cargo test --test schemas`.

use microfaas::manifest::{Kind, schema};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expected_files() -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = Kind::ALL
        .iter()
        .map(|k| (schema::file_name(*k), schema::for_kind(*k)))
        .collect();
    files.push(("all.json".to_string(), schema::bundle()));
    files
}

#[test]
fn committed_schemas_are_current() {
    let dir = root().join("schemas");
    let update = std::env::var_os("MICROFAAS_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, value) in expected_files() {
        let text = format!("{}\n", serde_json::to_string_pretty(&value).expect("json"));
        let path = dir.join(&name);
        if update {
            std::fs::write(&path, &text).expect("write schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale for {stale:?}: run MICROFAAS_UPDATE_SCHEMAS=1 cargo test --test schemas"
    );
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    // YAML 1.2 booleans, as microfaas reads them: `power: On` is a string, not `true`.
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_multiple_with_options::<Value>(&text, options).expect("yaml")
}

fn validator(kind: &str) -> jsonschema::Validator {
    let kind: Kind = kind.parse().expect("known kind");
    jsonschema::validator_for(&schema::for_kind(kind)).expect("schema compiles")
}

#[test]
fn shipped_manifests_satisfy_the_schemas() {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    yaml_files(&root().join("manifests"), &mut files);
    assert!(files.len() >= 2, "no manifests found: {files:?}");
    let bundle = jsonschema::validator_for(&schema::bundle()).expect("bundle compiles");
    let mut checked = 0;
    for f in &files {
        for doc in documents(f) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            let v = validator(&kind);
            let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{} {kind}: {errors:?}", f.display());
            assert!(
                bundle.is_valid(&doc),
                "{} {kind}: rejected by all.json",
                f.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 9);
}

#[test]
fn schemas_reject_what_microfaas_rejects() {
    let doc: Value = serde_json::json!({
        "apiVersion": "microfaas.dev/v1alpha1",
        "kind": "Worker",
        "metadata": {"name": "w"},
        "spec": {"vm": {"kernel": "/k", "memroy": "1Gi"}}
    });
    assert!(
        !validator("Worker").is_valid(&doc),
        "unknown field accepted"
    );
    let mut ok = doc.clone();
    ok["spec"]["vm"]
        .as_object_mut()
        .expect("map")
        .remove("memroy");
    assert!(validator("Worker").is_valid(&ok));
    let mut bad_power = ok.clone();
    bad_power["spec"]["power"] = "on".into();
    assert!(
        !validator("Worker").is_valid(&bad_power),
        "bad enum value accepted"
    );
    let mut bad_duration = ok;
    bad_duration["spec"]["lifecycle"] =
        serde_json::json!({"mode": "Warm", "idleTimeout": "15 sec"});
    assert!(
        !validator("Worker").is_valid(&bad_duration),
        "bad duration accepted"
    );
}
