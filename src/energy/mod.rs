//! Energy as a measurement of every workload run: meters sampled while the engine runs
//! ([`sampler`]), power curves integrated with the trapezoidal rule ([`integrate`]), a meter's
//! energy shared among the workers it covers and charged to invocations ([`attribute`]), and
//! the figures the workload report shows ([`report`]), also step by step for live counters
//! ([`live`]).

pub mod attribute;
pub mod integrate;
pub mod live;
pub mod report;
pub mod sampler;

pub use integrate::Curve;
pub use report::EnergyReport;
