//! Power meters: what one reading is, and the three ways to get one — a WattsUp Pro speaking
//! its serial protocol on a tty ([`wattsup`]), a command printing watts ([`command`]), and a
//! power model per worker kind and phase ([`model`]). Storing readings and running meters on a
//! schedule is the engine host's job (`crate::energy::sampler`).

pub mod command;
pub mod model;
pub mod wattsup;

/// One reading. Volts, amps and watt-hours only where the meter reports them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    pub watts: f64,
    pub volts: Option<f64>,
    pub amps: Option<f64>,
    pub watt_hours: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("cannot open {device}: {source}")]
    Open {
        device: String,
        source: std::io::Error,
    },
    #[error("cannot configure {device} as a serial port: {source}")]
    Configure {
        device: String,
        source: std::io::Error,
    },
    #[error("{device} disconnected: {why}")]
    Disconnected { device: String, why: String },
    #[error("no reading within {0:?}")]
    Timeout(std::time::Duration),
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("`{program}` printed no number of watts: {output:?}")]
    NoWatts { program: String, output: String },
}
