//! microfaas: a declarative testbed-as-code reconciler for FaaS clusters of BeagleBone boards
//! and QEMU VMs. The agent (worker side) and the controller share `protocol` and `functions`;
//! everything else is controller-only and sits behind the `controller` feature so the static
//! agent links none of it.

pub mod functions;
pub mod protocol;

#[cfg(feature = "agent")]
pub mod agent;

#[cfg(feature = "controller")]
pub mod cli;
#[cfg(feature = "controller")]
pub mod daemon;
#[cfg(any(feature = "controller", feature = "gpio"))]
pub mod drivers;
#[cfg(feature = "controller")]
pub mod energy;
#[cfg(feature = "controller")]
pub mod engine;
#[cfg(feature = "controller")]
pub mod gateway;
#[cfg(feature = "controller")]
pub mod image;
#[cfg(any(feature = "controller", feature = "gpio"))]
pub mod manifest;
#[cfg(feature = "controller")]
pub mod orchestrator;
#[cfg(feature = "controller")]
pub mod store;
#[cfg(feature = "controller")]
pub mod ui;
#[cfg(feature = "controller")]
pub mod workload;
