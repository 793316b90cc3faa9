//! Three-way merge of a status write with what was stored meanwhile. A status is rewritten
//! whole by whoever edits it (a reconcile, an operator's `uncordon`, a meter's sampler), each
//! starting from the status it read; a plain overwrite would drop whatever another writer
//! stored after that read. Per top-level field (and per condition type): a field this writer
//! left as it read it takes the stored value; one it changed is its own; one both changed is
//! this writer's, the last one.

use serde_json::{Map, Value};

/// `ours`, written from `base`, merged into `theirs`, the status stored now.
pub fn three_way(base: &Value, ours: &Value, theirs: &Value) -> Value {
    if theirs == base {
        return ours.clone();
    }
    let (Some(b), Some(o), Some(t)) = (base.as_object(), ours.as_object(), theirs.as_object())
    else {
        return ours.clone();
    };
    let mut out = o.clone();
    for key in b.keys().chain(t.keys()) {
        let (bv, ov, tv) = (b.get(key), o.get(key), t.get(key));
        if tv == bv {
            continue;
        }
        if ov == bv {
            put(&mut out, key, tv.cloned());
        } else if key == "conditions" {
            put(&mut out, key, Some(conditions(bv, ov, tv)));
        }
    }
    Value::Object(out)
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    match v {
        Some(v) => m.insert(key.to_string(), v),
        None => m.remove(key),
    };
}

/// Conditions changed on both sides, merged per `type` by the same rule.
fn conditions(base: Option<&Value>, ours: Option<&Value>, theirs: Option<&Value>) -> Value {
    let list = |v: Option<&Value>| -> Vec<Value> {
        v.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let kind = |c: &Value| c.get("type").and_then(Value::as_str).map(str::to_string);
    let find = |l: &[Value], k: &str| l.iter().find(|c| kind(c).as_deref() == Some(k)).cloned();
    let (b, o, t) = (list(base), list(ours), list(theirs));
    let mut types: Vec<String> = Vec::new();
    for c in o.iter().chain(&t).chain(&b) {
        if let Some(k) = kind(c)
            && !types.contains(&k)
        {
            types.push(k);
        }
    }
    let merged = types.iter().filter_map(|k| {
        let (bc, oc, tc) = (find(&b, k), find(&o, k), find(&t, k));
        if tc != bc && oc == bc { tc } else { oc }
    });
    Value::Array(merged.collect())
}

#[cfg(test)]
mod tests {
    use super::three_way;
    use serde_json::json;

    fn cond(kind: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": kind, "status": status, "reason": reason})
    }

    #[test]
    fn unchanged_since_read_is_a_plain_write() {
        let base = json!({"phase": "Booting", "health": "Good"});
        let ours = json!({"phase": "Ready"});
        assert_eq!(three_way(&base, &ours, &base), ours);
    }

    #[test]
    fn a_field_only_the_other_writer_changed_is_kept() {
        // A reconcile read health Bad, an operator uncordoned, the reconcile writes its phase.
        let base = json!({"phase": "Failed", "health": "Bad", "failedBoots": 2});
        let theirs = json!({"phase": "Failed", "health": "Good"});
        let ours = json!({"phase": "Off", "health": "Bad", "failedBoots": 2});
        assert_eq!(
            three_way(&base, &ours, &theirs),
            json!({"phase": "Off", "health": "Good"})
        );
        // And a field only they added (a power request) stays.
        let theirs = json!({"phase": "Failed", "health": "Bad", "failedBoots": 2, "powerRequest": {"id": "x"}});
        assert_eq!(
            three_way(&base, &ours, &theirs)["powerRequest"],
            json!({"id": "x"})
        );
    }

    #[test]
    fn a_field_both_changed_is_ours_and_ours_removals_stand() {
        let base = json!({"phase": "Booting", "request": {"id": "a"}});
        let theirs = json!({"phase": "Off", "request": {"id": "a"}});
        let ours = json!({"phase": "Ready"});
        assert_eq!(three_way(&base, &ours, &theirs), json!({"phase": "Ready"}));
    }

    #[test]
    fn conditions_merge_per_type() {
        let base = json!({"conditions": [cond("Ready", "False", "Quarantined"), cond("Healthy", "False", "AgentFaults")]});
        let theirs = json!({"conditions": [cond("Ready", "False", "Quarantined"), cond("Healthy", "True", "Uncordoned")]});
        let ours = json!({"conditions": [cond("Ready", "False", "PoweredOff"), cond("Healthy", "False", "AgentFaults"), cond("PoweredOn", "False", "PoweredOff")]});
        assert_eq!(
            three_way(&base, &ours, &theirs)["conditions"],
            json!([
                cond("Ready", "False", "PoweredOff"),
                cond("Healthy", "True", "Uncordoned"),
                cond("PoweredOn", "False", "PoweredOff")
            ])
        );
    }

    #[test]
    fn a_status_that_is_no_object_is_overwritten() {
        let ours = json!({"phase": "Ready"});
        assert_eq!(three_way(&json!({}), &ours, &json!("garbage")), ours);
    }
}
