//! Drivers: the real implementations behind the engine's observations and actions.
//!
//! - [`qemu`]: QEMU virtual machines (launch detached, adopt after a restart, power control).
//! - [`qmp`]: the tolerant QMP client the QEMU driver talks through.
//! - [`vms`]: the engine's `VmDriver` over QEMU.

pub mod qemu;
pub mod qmp;
pub mod vms;
