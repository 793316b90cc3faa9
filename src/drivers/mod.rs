//! Drivers: the parts of the engine that touch real hardware and services (switches over SNMP,
//! and later GPIO power buttons, QEMU, power meters). Each exposes a small async API the
//! reconcilers call; none of them knows about the store or the reconcile loop.

pub mod snmp;
