//! Workloads without the network: turning a `Workload` spec into a deterministic plan of
//! invocations ([`generate`]) and turning recorded attempts into reports ([`report`]). The
//! orchestrator feeds plans to its scheduler and records attempts through
//! [`crate::store::Store::record_attempt`]; nothing here talks to a worker.

pub mod generate;
pub mod html;
pub mod report;

pub use generate::{PlanError, Planned, generate, parse_trace};
pub use html::to_html;
pub use report::{Group, Report, Stats, to_csv, to_csv_with_energy};
