//! The power model: watts of a worker by its kind and phase, from the manifest's overrides or
//! the documented defaults (see [`crate::manifest::types::ModelMeter`]). A `model` meter sums
//! it over the workers it covers; attribution uses it to share any meter's energy out.

use crate::manifest::types::{ModelMeter, PhaseWatts, WorkerSpec};

/// The phases the model distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Off,
    Booting,
    Idle,
    Busy,
}

impl Phase {
    /// The model phase of a stored worker phase. `Unknown` (a board without power control)
    /// counts as idle: a board in a rack is normally on. `Busy` is taken from the recorded
    /// invocations by attribution; a live model meter trusts the status.
    pub fn of_status(phase: &str) -> Phase {
        match phase {
            "PoweringOn" | "Booting" => Phase::Booting,
            "Ready" | "PoweringOff" | "Unknown" => Phase::Idle,
            "Busy" => Phase::Busy,
            _ => Phase::Off,
        }
    }
}

/// What the model needs to know about a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Board,
    Vm { cpus: i64 },
}

impl Kind {
    pub fn of(spec: &WorkerSpec) -> Kind {
        match &spec.vm {
            Some(vm) => Kind::Vm { cpus: vm.cpus },
            None => Kind::Board,
        }
    }
}

/// BeagleBone Black, System Reference Manual section 6.1.7 (current at 5 V): kernel booting
/// peak 460 mA, kernel idling 350 mA, loading a web page 430 mA. Off is not in the table; a
/// board whose PMIC has cut the rails draws next to nothing.
pub const BBB_OFF: f64 = 0.0;
pub const BBB_BOOTING: f64 = 0.460 * 5.0;
pub const BBB_IDLE: f64 = 0.350 * 5.0;
pub const BBB_BUSY: f64 = 0.430 * 5.0;

fn pick(o: &PhaseWatts, phase: Phase) -> Option<f64> {
    match phase {
        Phase::Off => o.off,
        Phase::Booting => o.booting,
        Phase::Idle => o.idle,
        Phase::Busy => o.busy,
    }
}

/// Watts of a worker of `kind` in `phase` under `model`.
pub fn watts(model: &ModelMeter, kind: Kind, phase: Phase) -> f64 {
    match kind {
        Kind::Board => pick(&model.board, phase).unwrap_or(match phase {
            Phase::Off => BBB_OFF,
            Phase::Booting => BBB_BOOTING,
            Phase::Idle => BBB_IDLE,
            Phase::Busy => BBB_BUSY,
        }),
        Kind::Vm { cpus } => pick(&model.vm, phase).unwrap_or_else(|| {
            let share = cpus.max(1) as f64 / model.host.cpus.max(1) as f64;
            match phase {
                Phase::Off => 0.0,
                Phase::Idle => share * model.host.idle_watts,
                Phase::Booting | Phase::Busy => share * model.host.busy_watts,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let m = ModelMeter::default();
        assert_eq!(watts(&m, Kind::Board, Phase::Idle), 1.75);
        assert!((watts(&m, Kind::Board, Phase::Booting) - 2.3).abs() < 1e-9);
        // One vCPU of the default 32-thread, 100/250 W host.
        assert_eq!(watts(&m, Kind::Vm { cpus: 1 }, Phase::Idle), 100.0 / 32.0);
        assert_eq!(
            watts(&m, Kind::Vm { cpus: 2 }, Phase::Busy),
            2.0 * 250.0 / 32.0
        );
        assert_eq!(watts(&m, Kind::Vm { cpus: 2 }, Phase::Off), 0.0);
        let mut o = ModelMeter::default();
        o.vm.busy = Some(9.0);
        o.board.off = Some(0.1);
        assert_eq!(watts(&o, Kind::Vm { cpus: 4 }, Phase::Busy), 9.0);
        assert_eq!(watts(&o, Kind::Board, Phase::Off), 0.1);
        assert_eq!(Phase::of_status("PoweringOn"), Phase::Booting);
        assert_eq!(Phase::of_status("Failed"), Phase::Off);
    }
}
