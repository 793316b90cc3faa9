//! BeagleBone power buttons on Linux GPIO lines, through the GPIO character device (uAPI v2,
//! crate `gpiocdev`).
//!
//! A board's PWR_BUT is wired to one orchestrator GPIO line. A short press (default 500 ms)
//! toggles the board on; a long press (default 8 s) cuts power even when the board is hung.
//! The line is requested once, as an output at the released level with consumer `microfaas`,
//! and held open for the driver's lifetime: closing a request hands the line back to the
//! kernel, which may change its level and press the button behind our back.
//!
//! Lines are found by chip (`/dev/gpiochipN`, `gpiochipN` or a chip label) + offset, by line
//! name, or by BeagleBone header pin through [`crate::manifest::pins`] (bank N → the chip
//! labelled like AM335x bank N, falling back to `gpiochipN`).
//!
//! Presses go through [`Button`], which serialises them per line with an async mutex so two
//! pulses never interleave. The hardware sits behind [`ButtonLine`] so that logic is unit-tested
//! with a fake; [`CdevLine`] is the real one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpiocdev::line::Value;

/// The consumer name our requests carry; `gpioinfo` and our own busy errors show it.
pub const CONSUMER: &str = "microfaas";
/// A press that switches a BeagleBone on (or asks a running one to shut down).
pub const DEFAULT_PULSE: Duration = Duration::from_millis(500);
/// A press long enough for the PMIC to cut power unconditionally.
pub const DEFAULT_FORCE_OFF: Duration = Duration::from_secs(8);

/// AM335x GPIO banks as Linux labels them: `gpio-omap` on older kernels names a chip after its
/// global number range, newer ones after the controller's device-tree node (base address from
/// the AM335x TRM memory map).
const AM335X_BANK_LABELS: [[&str; 2]; 4] = [
    ["gpio-0-31", "44e07000.gpio"],
    ["gpio-32-63", "4804c000.gpio"],
    ["gpio-64-95", "481ac000.gpio"],
    ["gpio-96-127", "481ae000.gpio"],
];

/// Which line a button is on, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSpec {
    /// A chip (`/dev/gpiochipN`, `gpiochipN` or its label) and a line offset on it.
    Chip { chip: String, line: u32 },
    /// A line name given by the device tree (`gpio-line-names`).
    Name(String),
    /// A BeagleBone header pin such as `P9_12`.
    HeaderPin(String),
}

impl fmt::Display for LineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSpec::Chip { chip, line } => write!(f, "{chip} line {line}"),
            LineSpec::Name(n) => write!(f, "line `{n}`"),
            LineSpec::HeaderPin(p) => write!(f, "pin {p}"),
        }
    }
}

/// What can go wrong finding, requesting or driving a line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("GPIO chip `{0}` not found: no /dev/gpiochipN has that name or label")]
    ChipNotFound(String),
    #[error("{pin}: no GPIO chip for AM335x bank {bank} (labelled {} or {}, else gpiochip{bank})", labels[0], labels[1])]
    BankNotFound {
        pin: String,
        bank: u8,
        labels: [&'static str; 2],
    },
    #[error("no GPIO line is named `{0}`")]
    LineNameNotFound(String),
    #[error("`{0}` is not a GPIO-capable BeagleBone header pin")]
    UnknownPin(String),
    #[error("{line}: the chip has only {num_lines} lines")]
    OffsetOutOfRange { line: String, num_lines: u32 },
    #[error("{line} is busy: already requested by `{consumer}`")]
    Busy { line: String, consumer: String },
    #[error("{line} is already driven for worker `{holder}`; two workers cannot share a line")]
    Shared { line: String, holder: String },
    #[error("{line}: {source}")]
    Gpio {
        line: String,
        #[source]
        source: gpiocdev::Error,
    },
}

/// A line a power button hangs on: set it pressed or released.
pub trait ButtonLine: Send + Sync {
    fn set(&self, pressed: bool) -> Result<(), GpioError>;
    /// For messages: which line this is.
    fn describe(&self) -> String;
}

/// A power button: presses on one line, never two at a time.
pub struct Button<L: ButtonLine> {
    line: L,
    /// Held for the whole of a press: a second press waits for the first to end instead of
    /// overlapping it (which would merge two short presses into one long one, or cut a
    /// force-off short).
    pressing: tokio::sync::Mutex<()>,
    pub pulse: Duration,
    pub force_off: Duration,
}

/// Releases the button when a press ends in any way, including the press future being dropped
/// mid-sleep (a cancelled reconcile): a button left pressed would force the board off.
struct ReleaseOnDrop<'a, L: ButtonLine>(&'a L);

impl<L: ButtonLine> Drop for ReleaseOnDrop<'_, L> {
    fn drop(&mut self) {
        // Nothing to report to on drop; the next press or the request's close will retry.
        let _ = self.0.set(false);
    }
}

impl<L: ButtonLine> Button<L> {
    pub fn new(line: L, pulse: Duration, force_off: Duration) -> Self {
        Button {
            line,
            pressing: tokio::sync::Mutex::new(()),
            pulse,
            force_off,
        }
    }

    pub fn line(&self) -> &L {
        &self.line
    }

    /// A short press of the configured length.
    pub async fn pulse(&self) -> Result<(), GpioError> {
        self.press(self.pulse).await
    }

    /// The long press that cuts power.
    pub async fn hold(&self) -> Result<(), GpioError> {
        self.press(self.force_off).await
    }

    /// Press for `length`, then release; waits for any press in progress on this line first.
    pub async fn press(&self, length: Duration) -> Result<(), GpioError> {
        let _exclusive = self.pressing.lock().await;
        self.line.set(true)?;
        // Declared after the lock guard, so dropped before it: a cancelled press is released
        // before the next press may start.
        let release = ReleaseOnDrop(&self.line);
        tokio::time::sleep(length).await;
        std::mem::forget(release);
        self.line.set(false)
    }
}

/// A requested line on a real GPIO chip, held until dropped.
pub struct CdevLine {
    request: gpiocdev::Request,
    offset: u32,
    label: String,
}

impl fmt::Debug for CdevLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl ButtonLine for CdevLine {
    fn set(&self, pressed: bool) -> Result<(), GpioError> {
        let value = if pressed {
            Value::Active
        } else {
            Value::Inactive
        };
        self.request
            .set_value(self.offset, value)
            .map_err(|source| GpioError::Gpio {
                line: self.label.clone(),
                source,
            })
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// A line found on a chip: where it is and how to name it in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub chip: PathBuf,
    pub offset: u32,
    pub label: String,
}

impl CdevLine {
    /// Requests the line as an output at the released level, active-low as declared.
    pub fn request(spec: &LineSpec, active_low: bool) -> Result<CdevLine, GpioError> {
        let at = locate(spec)?;
        Self::request_located(at, active_low)
    }

    /// As [`CdevLine::request`], for a line already located.
    pub fn request_located(at: Located, active_low: bool) -> Result<CdevLine, GpioError> {
        // Check first so the error names the holder; the kernel's EBUSY alone does not.
        if let Some(consumer) = holder(&at)? {
            return Err(GpioError::Busy {
                line: at.label,
                consumer,
            });
        }
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&at.chip)
            .with_consumer(CONSUMER)
            .with_line(at.offset);
        if active_low {
            builder.as_active_low();
        } else {
            builder.as_active_high();
        }
        // Inactive = released: with active-low set, the kernel drives the line high.
        builder.as_output(Value::Inactive);
        match builder.request() {
            Ok(request) => Ok(CdevLine {
                request,
                offset: at.offset,
                label: at.label,
            }),
            // Lost a race with another process between the check and the request: name the
            // winner. (gpiocdev does not re-export its errno type, so ask the kernel again.)
            Err(e) => match holder(&at)? {
                Some(consumer) => Err(GpioError::Busy {
                    line: at.label,
                    consumer,
                }),
                None => Err(GpioError::Gpio {
                    line: at.label,
                    source: e,
                }),
            },
        }
    }
}

/// Who holds the line now, if anyone (an unnamed consumer is reported as such).
fn holder(at: &Located) -> Result<Option<String>, GpioError> {
    let chip = gpiocdev::Chip::from_path(&at.chip).map_err(|source| GpioError::Gpio {
        line: at.label.clone(),
        source,
    })?;
    let info = chip
        .line_info(at.offset)
        .map_err(|source| GpioError::Gpio {
            line: at.label.clone(),
            source,
        })?;
    Ok(info.used.then(|| {
        if info.consumer.is_empty() {
            "an unnamed consumer".to_owned()
        } else {
            info.consumer
        }
    }))
}

/// Every GPIO chip: device path, name and label.
fn chips() -> Vec<(PathBuf, String, String)> {
    let Ok(paths) = gpiocdev::chip::chips() else {
        return Vec::new();
    };
    paths
        .into_iter()
        .filter_map(|p| {
            let info = gpiocdev::Chip::from_path(&p).ok()?.info().ok()?;
            Some((p, info.name, info.label))
        })
        .collect()
}

/// A chip by device path, `gpiochipN` name or label.
pub fn resolve_chip(chip: &str) -> Result<PathBuf, GpioError> {
    if chip.starts_with('/') {
        return gpiocdev::chip::is_chip(chip).map_err(|_| GpioError::ChipNotFound(chip.into()));
    }
    chips()
        .into_iter()
        .find(|(_, name, label)| name == chip || label == chip)
        .map(|(p, _, _)| p)
        .ok_or_else(|| GpioError::ChipNotFound(chip.into()))
}

/// The chip of AM335x GPIO bank `bank`: by label, else `gpiochip<bank>` (the usual order on a
/// BeagleBone, and the identity validation assumes).
fn bank_chip(bank: u8, all: &[(PathBuf, String, String)]) -> Option<PathBuf> {
    let labels = AM335X_BANK_LABELS.get(usize::from(bank))?;
    let by_label = all
        .iter()
        .find(|(_, _, label)| labels.contains(&label.as_str()));
    // The fallback must not pick a chip that is labelled as another bank.
    let other_bank = |label: &str| AM335X_BANK_LABELS.iter().flatten().any(|l| *l == label);
    let fallback = format!("gpiochip{bank}");
    by_label
        .or_else(|| {
            all.iter()
                .find(|(_, name, label)| *name == fallback && !other_bank(label))
        })
        .map(|(p, _, _)| p.clone())
}

/// Finds the chip and offset a spec names, checking the offset exists.
pub fn locate(spec: &LineSpec) -> Result<Located, GpioError> {
    let (chip, offset, label) = match spec {
        LineSpec::Chip { chip, line } => {
            let path = resolve_chip(chip)?;
            (path, *line, format!("{chip} line {line}"))
        }
        LineSpec::Name(name) => {
            let found = gpiocdev::find_named_line(name)
                .ok_or_else(|| GpioError::LineNameNotFound(name.clone()))?;
            let label = format!(
                "line `{name}` ({} line {})",
                chip_name(&found.chip),
                found.info.offset
            );
            (found.chip, found.info.offset, label)
        }
        LineSpec::HeaderPin(pin) => {
            let (bank, line) = crate::manifest::pins::lookup(pin)
                .ok_or_else(|| GpioError::UnknownPin(pin.clone()))?;
            let path = bank_chip(bank, &chips()).ok_or_else(|| GpioError::BankNotFound {
                pin: pin.clone(),
                bank,
                labels: AM335X_BANK_LABELS
                    .get(usize::from(bank))
                    .copied()
                    .unwrap_or(["?", "?"]),
            })?;
            let label = format!("pin {pin} ({} line {line})", chip_name(&path));
            (path, u32::from(line), label)
        }
    };
    let num_lines = gpiocdev::Chip::from_path(&chip)
        .and_then(|c| c.info())
        .map_err(|source| GpioError::Gpio {
            line: label.clone(),
            source,
        })?
        .num_lines;
    if offset >= num_lines {
        return Err(GpioError::OffsetOutOfRange {
            line: label,
            num_lines,
        });
    }
    Ok(Located {
        chip,
        offset,
        label,
    })
}

fn chip_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A line on a chip: (chip device path, offset).
type LineKey = (PathBuf, u32);
/// The worker a line belongs to and its button.
type Owned<L> = (String, Arc<Button<L>>);

/// The engine's buttons: one requested line per worker, held for its lifetime. Asserts what
/// validation already enforces, that no two workers share a line, because two owners would
/// interleave presses the per-line lock cannot see.
#[derive(Default)]
pub struct Buttons<L: ButtonLine> {
    by_line: Mutex<HashMap<LineKey, Owned<L>>>,
}

impl<L: ButtonLine> Buttons<L> {
    pub fn new() -> Self {
        Buttons {
            by_line: Mutex::new(HashMap::new()),
        }
    }

    /// The button of `worker` on `at`; `open` requests the line the first time only.
    pub fn claim(
        &self,
        worker: &str,
        at: &Located,
        open: impl FnOnce() -> Result<Button<L>, GpioError>,
    ) -> Result<Arc<Button<L>>, GpioError> {
        // A poisoned map still holds consistent entries: each insert is a single operation.
        let mut map = self.by_line.lock().unwrap_or_else(|p| p.into_inner());
        let key = (at.chip.clone(), at.offset);
        if let Some((holder, button)) = map.get(&key) {
            if holder != worker {
                return Err(GpioError::Shared {
                    line: at.label.clone(),
                    holder: holder.clone(),
                });
            }
            return Ok(Arc::clone(button));
        }
        let button = Arc::new(open()?);
        map.insert(key, (worker.to_owned(), Arc::clone(&button)));
        Ok(button)
    }

    /// Forgets a worker's line (deleted worker); the request closes when the last press ends.
    pub fn release(&self, worker: &str) {
        let mut map = self.by_line.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (holder, _)| holder != worker);
    }
}

impl Buttons<CdevLine> {
    /// Requests (once) and returns the button of `worker`.
    pub fn open(
        &self,
        worker: &str,
        config: &ButtonConfig,
    ) -> Result<Arc<Button<CdevLine>>, GpioError> {
        let at = locate(&config.spec)?;
        let for_open = at.clone();
        self.claim(worker, &at, move || {
            Ok(Button::new(
                CdevLine::request_located(for_open, config.active_low)?,
                config.pulse,
                config.force_off,
            ))
        })
    }
}

/// A worker's power button as the driver needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonConfig {
    pub spec: LineSpec,
    pub active_low: bool,
    pub pulse: Duration,
    pub force_off: Duration,
}

/// Why a manifest's power button cannot be used (validation normally catches these first).
#[cfg(feature = "controller")]
#[derive(Debug, thiserror::Error)]
pub enum ButtonConfigError {
    #[error("powerButton names no line: give pin, chip + line, or lineName")]
    NoLine,
    #[error("powerButton line {0} is not a valid offset")]
    BadOffset(i64),
    #[error("powerButton {field}: {source}")]
    Duration {
        field: &'static str,
        #[source]
        source: crate::manifest::quantity::QuantityError,
    },
}

#[cfg(feature = "controller")]
impl ButtonConfig {
    /// From a manifest: header pin first, then chip + line, then line name (the order of
    /// `manifest::validate::line_identity`, so collisions found there are the lines used here).
    pub fn from_manifest(
        pb: &crate::manifest::types::PowerButton,
    ) -> Result<ButtonConfig, ButtonConfigError> {
        let spec = if let Some(pin) = &pb.pin {
            LineSpec::HeaderPin(pin.clone())
        } else if let (Some(chip), Some(line)) = (&pb.chip, pb.line) {
            LineSpec::Chip {
                chip: chip.clone(),
                line: u32::try_from(line).map_err(|_| ButtonConfigError::BadOffset(line))?,
            }
        } else if let Some(name) = &pb.line_name {
            LineSpec::Name(name.clone())
        } else {
            return Err(ButtonConfigError::NoLine);
        };
        let duration = |field, d: &crate::manifest::quantity::Duration| {
            d.parse()
                .map_err(|source| ButtonConfigError::Duration { field, source })
        };
        Ok(ButtonConfig {
            spec,
            active_low: pb.active_low,
            pulse: duration("pulse", &pb.pulse)?,
            force_off: duration("forceOff", &pb.force_off)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Records every level change with its time.
    #[derive(Default)]
    struct FakeLine {
        log: Mutex<Vec<(Instant, bool)>>,
    }

    impl ButtonLine for FakeLine {
        fn set(&self, pressed: bool) -> Result<(), GpioError> {
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), pressed));
            Ok(())
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn log(b: &Button<FakeLine>) -> Vec<(Instant, bool)> {
        b.line()
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    // Real time, short presses: tokio's paused clock needs its test-util feature, which would
    // rebuild tokio for every test binary.
    const SHORT: Duration = Duration::from_millis(40);
    const LONG: Duration = Duration::from_millis(120);

    #[tokio::test]
    async fn pulses_on_one_line_never_interleave() {
        let b = Arc::new(Button::new(FakeLine::default(), SHORT, LONG));
        let (x, y, z) = tokio::join!(b.pulse(), b.hold(), b.pulse());
        assert!(x.is_ok() && y.is_ok() && z.is_ok());
        let events = log(&b);
        let levels: Vec<bool> = events.iter().map(|e| e.1).collect();
        assert_eq!(levels, [true, false, true, false, true, false]);
        let wanted = [SHORT, LONG, SHORT];
        for (pair, want) in events.chunks(2).zip(wanted) {
            let held = pair[1].0 - pair[0].0;
            // Never shorter (the sleep guarantees it); a loaded machine may make it longer.
            assert!(
                held >= want && held < want + Duration::from_millis(500),
                "{held:?} for {want:?}"
            );
        }
    }

    #[tokio::test]
    async fn separate_lines_press_independently() {
        let a = Button::new(FakeLine::default(), LONG, LONG);
        let b = Button::new(FakeLine::default(), LONG, LONG);
        let started = Instant::now();
        let (x, y) = tokio::join!(a.pulse(), b.pulse());
        assert!(x.is_ok() && y.is_ok());
        // Overlapping, not one after the other: the lock is per line.
        assert!(started.elapsed() < LONG * 2, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_cancelled_press_releases_the_button() {
        let b = Button::new(FakeLine::default(), SHORT, Duration::from_secs(30));
        let cut = tokio::time::timeout(SHORT, b.hold()).await;
        assert!(cut.is_err());
        let levels: Vec<bool> = log(&b).iter().map(|e| e.1).collect();
        assert_eq!(levels, [true, false]);
    }

    #[test]
    fn two_workers_cannot_share_a_line() {
        let buttons: Buttons<FakeLine> = Buttons::new();
        let at = Located {
            chip: "/dev/gpiochip1".into(),
            offset: 28,
            label: "pin P9_12 (gpiochip1 line 28)".into(),
        };
        let open = || {
            Ok(Button::new(
                FakeLine::default(),
                DEFAULT_PULSE,
                DEFAULT_FORCE_OFF,
            ))
        };
        let first = buttons.claim("bbb-3", &at, open);
        assert!(first.is_ok());
        let again = buttons.claim("bbb-3", &at, || panic!("requested twice"));
        assert!(again.is_ok());
        match buttons.claim("bbb-4", &at, open) {
            Err(GpioError::Shared { holder, line }) => {
                assert_eq!(holder, "bbb-3");
                assert!(line.contains("P9_12"));
            }
            other => panic!("expected Shared, got {:?}", other.map(|_| ())),
        }
        buttons.release("bbb-3");
        assert!(buttons.claim("bbb-4", &at, open).is_ok());
    }

    #[cfg(feature = "controller")]
    #[test]
    fn manifest_buttons() {
        let pb = |v: serde_json::Value| {
            serde_json::from_value::<crate::manifest::types::PowerButton>(v)
                .map_err(|e| e.to_string())
                .and_then(|pb| ButtonConfig::from_manifest(&pb).map_err(|e| e.to_string()))
        };
        let rack = pb(serde_json::json!({"pin": "P9_12"}));
        assert_eq!(
            rack.ok(),
            Some(ButtonConfig {
                spec: LineSpec::HeaderPin("P9_12".into()),
                active_low: true,
                pulse: DEFAULT_PULSE,
                force_off: DEFAULT_FORCE_OFF,
            })
        );
        let chip = pb(
            serde_json::json!({"chip": "gpiochip1", "line": 28, "activeLow": false, "pulse": "300ms"}),
        );
        let chip = chip.expect("chip + line");
        assert_eq!(
            chip.spec,
            LineSpec::Chip {
                chip: "gpiochip1".into(),
                line: 28
            }
        );
        assert!(!chip.active_low);
        assert_eq!(chip.pulse, Duration::from_millis(300));
        let named = pb(serde_json::json!({"lineName": "PWR_BUT_3"})).expect("by name");
        assert_eq!(named.spec, LineSpec::Name("PWR_BUT_3".into()));
        assert!(pb(serde_json::json!({"chip": "gpiochip1", "line": -1})).is_err());
        assert!(pb(serde_json::json!({})).is_err());
    }

    #[test]
    fn banks_resolve_by_label_then_by_number() {
        let chips = vec![
            (
                "/dev/gpiochip0".into(),
                "gpiochip0".into(),
                "44e07000.gpio".into(),
            ),
            (
                "/dev/gpiochip3".into(),
                "gpiochip3".into(),
                "4804c000.gpio".into(),
            ),
            (
                "/dev/gpiochip2".into(),
                "gpiochip2".into(),
                "gpio-64-95".into(),
            ),
            (
                "/dev/gpiochip1".into(),
                "gpiochip1".into(),
                "something".into(),
            ),
        ];
        assert_eq!(bank_chip(1, &chips), Some("/dev/gpiochip3".into()));
        assert_eq!(bank_chip(2, &chips), Some("/dev/gpiochip2".into()));
        assert_eq!(bank_chip(3, &chips), None);
        let unlabelled = vec![("/dev/gpiochip3".into(), "gpiochip3".into(), "x".into())];
        assert_eq!(bank_chip(3, &unlabelled), Some("/dev/gpiochip3".into()));
        assert_eq!(bank_chip(4, &unlabelled), None);
    }
}
