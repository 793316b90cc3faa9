//! Power buttons as the engine presses them: the [`PowerButtons`] trait, and [`GpioButtons`]
//! over `drivers::gpio` whose lines come from a [`LineOpener`] ([`Cdev`] = the kernel's GPIO
//! character device; tests plug in simulated lines). Lines are requested on first use and held
//! until the worker is forgotten.

use crate::drivers::gpio::{
    Button, ButtonConfig, ButtonLine, Buttons, CdevLine, GpioError, LineSpec, Located,
};
use crate::engine::lock;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A short press (power on) or the long hold that cuts power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Pulse,
    Hold,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The engine's power buttons, one per board worker.
pub trait PowerButtons: Send + Sync + 'static {
    /// Requests the worker's line (first call only) so it idles released; the description of
    /// the line for messages.
    fn claim(&self, worker: &str, button: &ButtonConfig) -> Result<String, String>;
    /// Presses the worker's button; presses on one line never overlap.
    fn press<'a>(
        &'a self,
        worker: &'a str,
        button: &'a ButtonConfig,
        how: Press,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Closes the worker's line (deleted worker).
    fn forget(&self, worker: &str);
}

/// Finds and requests lines: the kernel's GPIO character device, or a test's fake.
pub trait LineOpener: Send + Sync + 'static {
    type Line: ButtonLine + 'static;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError>;
    fn open(&self, worker: &str, at: Located, active_low: bool) -> Result<Self::Line, GpioError>;
}

/// Lines on this machine's GPIO chips.
pub struct Cdev;

impl LineOpener for Cdev {
    type Line = CdevLine;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError> {
        crate::drivers::gpio::locate(spec)
    }
    fn open(&self, _worker: &str, at: Located, active_low: bool) -> Result<CdevLine, GpioError> {
        CdevLine::request_located(at, active_low)
    }
}

type Held<L> = (ButtonConfig, Arc<Button<L>>);

/// Buttons on GPIO lines, requested on first use and held until the worker is forgotten.
pub struct GpioButtons<O: LineOpener> {
    opener: O,
    registry: Buttons<O::Line>,
    held: Mutex<HashMap<String, Held<O::Line>>>,
}

impl<O: LineOpener> GpioButtons<O> {
    pub fn new(opener: O) -> Self {
        GpioButtons {
            opener,
            registry: Buttons::new(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn button(&self, worker: &str, cfg: &ButtonConfig) -> Result<Arc<Button<O::Line>>, String> {
        if let Some((held_cfg, b)) = lock(&self.held).get(worker)
            && held_cfg.spec == cfg.spec
            && held_cfg.active_low == cfg.active_low
        {
            return Ok(b.clone());
        }
        // A new line (or polarity) for this worker: let the old request go first.
        self.forget(worker);
        let at = self.opener.locate(&cfg.spec).map_err(|e| e.to_string())?;
        let for_open = at.clone();
        let b = self
            .registry
            .claim(worker, &at, || {
                Ok(Button::new(
                    self.opener.open(worker, for_open, cfg.active_low)?,
                    cfg.pulse,
                    cfg.force_off,
                ))
            })
            .map_err(|e| e.to_string())?;
        lock(&self.held).insert(worker.to_string(), (cfg.clone(), b.clone()));
        Ok(b)
    }
}

impl<O: LineOpener> PowerButtons for GpioButtons<O> {
    fn claim(&self, worker: &str, button: &ButtonConfig) -> Result<String, String> {
        let b = self.button(worker, button)?;
        let polarity = if button.active_low {
            "active-low"
        } else {
            "active-high"
        };
        Ok(format!("{} ({polarity})", b.line().describe()))
    }

    fn press<'a>(
        &'a self,
        worker: &'a str,
        button: &'a ButtonConfig,
        how: Press,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let b = self.button(worker, button)?;
            let length = match how {
                Press::Pulse => button.pulse,
                Press::Hold => button.force_off,
            };
            b.press(length).await.map_err(|e| e.to_string())
        })
    }

    fn forget(&self, worker: &str) {
        lock(&self.held).remove(worker);
        self.registry.release(worker);
    }
}
