//! Drivers: the parts of the engine that touch real hardware and services. Each exposes a small
//! async API the reconcilers call; none of them knows about the store or the reconcile loop.
//!
//! - [`qemu`]: QEMU virtual machines (launch detached, adopt after a restart, power control).
//! - [`qmp`]: the tolerant QMP client the QEMU driver talks through.
//! - [`vms`]: the engine's `VmDriver` over QEMU.
//! - [`snmp`]: managed switches over SNMP (port state, bounce).

pub mod qemu;
pub mod qmp;
pub mod snmp;
pub mod vms;
