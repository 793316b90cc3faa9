//! The kinds, and a parsed resource of any kind with where it came from.

use super::node::{Node, Pos};
use super::types::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Switch,
    PowerMeter,
    Worker,
    WorkerSet,
    Function,
    Workload,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Cluster,
        Kind::Switch,
        Kind::PowerMeter,
        Kind::Worker,
        Kind::WorkerSet,
        Kind::Function,
        Kind::Workload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Switch => "Switch",
            Kind::PowerMeter => "PowerMeter",
            Kind::Worker => "Worker",
            Kind::WorkerSet => "WorkerSet",
            Kind::Function => "Function",
            Kind::Workload => "Workload",
        }
    }

    /// Lowercase singular, as in `worker/vm-0`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Switch => "switch",
            Kind::PowerMeter => "powermeter",
            Kind::Worker => "worker",
            Kind::WorkerSet => "workerset",
            Kind::Function => "function",
            Kind::Workload => "workload",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Cluster => "clusters",
            Kind::Switch => "switches",
            Kind::PowerMeter => "powermeters",
            Kind::Worker => "workers",
            Kind::WorkerSet => "workersets",
            Kind::Function => "functions",
            Kind::Workload => "workloads",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::Cluster => "cl",
            Kind::Switch => "sw",
            Kind::PowerMeter => "pm",
            Kind::Worker => "wk",
            Kind::WorkerSet => "ws",
            Kind::Function => "fn",
            Kind::Workload => "wl",
        }
    }

    /// Every spelling the CLI accepts for this kind.
    pub fn spellings(self) -> [&'static str; 4] {
        [self.as_str(), self.singular(), self.plural(), self.short()]
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses any spelling: `Worker`, `worker`, `workers`, `wk`.
impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| {
                k.spellings()
                    .iter()
                    .any(|sp| sp.to_ascii_lowercase() == lower)
            })
            .ok_or_else(|| {
                let all: Vec<&str> = Kind::ALL.iter().flat_map(|k| k.spellings()).collect();
                match super::diag::did_you_mean(s, all) {
                    Some(m) => format!("unknown kind `{s}`; did you mean `{m}`?"),
                    None => format!(
                        "unknown kind `{s}`; known kinds: {}",
                        Kind::ALL.map(|k| k.plural()).join(", ")
                    ),
                }
            })
    }
}

/// The typed spec of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Cluster(ClusterSpec),
    Switch(SwitchSpec),
    PowerMeter(PowerMeterSpec),
    Worker(WorkerSpec),
    WorkerSet(WorkerSetSpec),
    Function(FunctionSpec),
    Workload(WorkloadSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Cluster(_) => Kind::Cluster,
            Spec::Switch(_) => Kind::Switch,
            Spec::PowerMeter(_) => Kind::PowerMeter,
            Spec::Worker(_) => Kind::Worker,
            Spec::WorkerSet(_) => Kind::WorkerSet,
            Spec::Function(_) => Kind::Function,
            Spec::Workload(_) => Kind::Workload,
        }
    }

    /// Canonical JSON of the spec with every default filled in: two manifests that mean the
    /// same thing give the same value, so generations only move on real changes.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a spec back from its stored JSON.
    pub fn from_json(kind: Kind, v: serde_json::Value) -> Result<Spec, serde_json::Error> {
        Ok(match kind {
            Kind::Cluster => Spec::Cluster(serde_json::from_value(v)?),
            Kind::Switch => Spec::Switch(serde_json::from_value(v)?),
            Kind::PowerMeter => Spec::PowerMeter(serde_json::from_value(v)?),
            Kind::Worker => Spec::Worker(serde_json::from_value(v)?),
            Kind::WorkerSet => Spec::WorkerSet(serde_json::from_value(v)?),
            Kind::Function => Spec::Function(serde_json::from_value(v)?),
            Kind::Workload => Spec::Workload(serde_json::from_value(v)?),
        })
    }
}

/// Where a resource was declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub file: Arc<str>,
    pub pos: Pos,
}

/// A resource as parsed from a manifest, with its syntax tree for positions.
#[derive(Debug, Clone)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Spec,
    pub origin: Origin,
    pub node: Node,
    /// Set on workers expanded from a WorkerSet: the set's name.
    pub owner: Option<String>,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `worker/vm-0`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind().singular(), self.metadata.name)
    }
}
