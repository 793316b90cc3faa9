//! Drivers: the parts of the engine that touch real hardware and services. Each exposes a small
//! async API the reconcilers call; none of them knows about the store or the reconcile loop.
//!
//! - [`qemu`]: QEMU virtual machines (launch detached, adopt after a restart, power control).
//! - [`qmp`]: the tolerant QMP client the QEMU driver talks through.
//! - [`vms`]: the engine's `VmDriver` over QEMU.
//! - [`snmp`]: managed switches over SNMP (port state, bounce).
//! - [`meter`]: power meters (WattsUp Pro on a tty, a command printing watts, a power model).
//! - [`gpio`]: BeagleBone power buttons on Linux GPIO lines (also built alone, feature `gpio`,
//!   for its static real-kernel test program).

#[cfg(feature = "gpio")]
pub mod gpio;
#[cfg(feature = "controller")]
pub mod meter;
#[cfg(feature = "controller")]
pub mod qemu;
#[cfg(feature = "controller")]
pub mod qmp;
#[cfg(feature = "controller")]
pub mod snmp;
#[cfg(feature = "controller")]
pub mod vms;
