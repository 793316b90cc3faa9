//! Workloads without the network: turning a `Workload` spec into a deterministic plan of
//! invocations ([`generate`]). The orchestrator feeds plans to its scheduler and records
//! attempts through [`crate::store::Store::record_attempt`]; nothing here talks to a worker.

pub mod generate;

pub use generate::{PlanError, Planned, generate, parse_trace};
