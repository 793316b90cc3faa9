//! Drivers: the real implementations behind the engine's observations and actions.
//!
//! - [`qemu`]: QEMU virtual machines (launch detached, adopt after a restart, power control).
//! - [`qmp`]: the tolerant QMP client the QEMU driver talks through.

pub mod qemu;
pub mod qmp;
