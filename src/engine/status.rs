//! Object status as the engine writes it: phase, observedGeneration, conditions whose
//! lastTransitionTime only moves when their status does, plus free-form fields.

use crate::manifest::Kind;
use crate::store::{EventNote, Store, StoreError, clock};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondStatus {
    True,
    False,
    Unknown,
}

impl CondStatus {
    fn as_str(self) -> &'static str {
        match self {
            CondStatus::True => "True",
            CondStatus::False => "False",
            CondStatus::Unknown => "Unknown",
        }
    }

    pub fn from_bool(b: bool) -> Self {
        if b {
            CondStatus::True
        } else {
            CondStatus::False
        }
    }
}

/// A status being edited; start from the stored one so unchanged conditions keep their times.
/// It remembers the status it started from (its base): a write sends both, so what another
/// writer stored meanwhile is merged in rather than overwritten (`Store::update_status`).
#[derive(Debug, Clone)]
pub struct Status(Map<String, Value>, Value);

impl Status {
    pub fn from_value(v: &Value) -> Self {
        Status(v.as_object().cloned().unwrap_or_default(), v.clone())
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// Whether it differs from its base.
    pub fn changed(&self) -> bool {
        self.1.as_object() != Some(&self.0)
    }

    /// Writes it with the events of the same transition, merged with what another writer
    /// stored since its base (`Store::update_status`), and carries on from what was stored.
    pub fn save(
        &mut self,
        store: &mut Store,
        kind: Kind,
        name: &str,
        events: &[EventNote],
    ) -> Result<(), StoreError> {
        let edited = Value::Object(self.0.clone());
        let stored = store.update_status(kind, name, Some(&self.1), &edited, events)?;
        self.0 = stored.as_object().cloned().unwrap_or_default();
        self.1 = stored;
        Ok(())
    }

    pub fn phase(&self) -> Option<&str> {
        self.0.get("phase").and_then(|p| p.as_str())
    }

    pub fn set_phase(&mut self, phase: &str) -> &mut Self {
        self.0.insert("phase".into(), json!(phase));
        self
    }

    pub fn observed(&mut self, generation: i64) -> &mut Self {
        self.0
            .insert("observedGeneration".into(), json!(generation));
        self
    }

    pub fn observed_generation(&self) -> i64 {
        self.0
            .get("observedGeneration")
            .and_then(|g| g.as_i64())
            .unwrap_or(0)
    }

    pub fn set(&mut self, key: &str, v: Value) -> &mut Self {
        if v.is_null() {
            self.0.remove(key);
        } else {
            self.0.insert(key.into(), v);
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn condition(
        &mut self,
        kind: &str,
        status: CondStatus,
        reason: &str,
        message: &str,
    ) -> &mut Self {
        let conds = self.0.entry("conditions").or_insert_with(|| json!([]));
        if !conds.is_array() {
            *conds = json!([]);
        }
        let Some(list) = conds.as_array_mut() else {
            return self;
        };
        let existing = list
            .iter_mut()
            .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(kind));
        match existing {
            Some(c) => {
                let same = c.get("status").and_then(|s| s.as_str()) == Some(status.as_str());
                let since = if same {
                    c.get("lastTransitionTime").cloned().unwrap_or_else(|| json!(clock::now()))
                } else {
                    json!(clock::now())
                };
                *c = json!({"type": kind, "status": status.as_str(), "reason": reason, "message": message, "lastTransitionTime": since});
            }
            None => list.push(json!({"type": kind, "status": status.as_str(), "reason": reason, "message": message, "lastTransitionTime": clock::now()})),
        }
        self
    }

    pub fn condition_status(&self, kind: &str) -> Option<&str> {
        self.0
            .get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(kind))?
            .get("status")?
            .as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut s = Status::from_value(&json!({}));
        s.condition("Ready", CondStatus::False, "Booting", "");
        let t0 = s.0["conditions"][0]["lastTransitionTime"].clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.condition("Ready", CondStatus::False, "StillBooting", "x");
        assert_eq!(s.0["conditions"][0]["lastTransitionTime"], t0);
        assert_eq!(s.0["conditions"][0]["reason"], "StillBooting");
        s.condition("Ready", CondStatus::True, "AgentConnected", "");
        assert_ne!(s.0["conditions"][0]["lastTransitionTime"], t0);
        assert_eq!(s.condition_status("Ready"), Some("True"));
    }
}
